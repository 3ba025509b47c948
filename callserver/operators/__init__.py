"""Operators as the live server sees them: presence, open softphones and load (`roster.py`)."""
