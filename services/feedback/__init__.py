"""Feedback: answers to complainants, follow-up ratings, the deputies' view and the public query."""
