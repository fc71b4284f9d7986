"""Summarization metrics: ``evaluate`` modules and the scorer math they share."""
