"""Intake: complaints and deputy suggestions as the operator records them; accounts and tokens."""
