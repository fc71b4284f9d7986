"""Temporal language grounding and highlight detection (READ-PVLA's first task): model, data, metrics, training."""
