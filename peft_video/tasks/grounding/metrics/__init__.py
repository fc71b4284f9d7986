"""Grounding and highlight-detection metrics: ``evaluate`` modules and the scorer math they share."""
