"""Routing: which inspection team verifies each matter, by rules a supervisor edits, under hard recusal."""
