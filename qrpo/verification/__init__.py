"""Checks of the mathematics against exact answers (not part of a pipeline run)."""
