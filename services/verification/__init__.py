"""Verification: the inspection teams' tasks, findings and cross-check reviews."""
