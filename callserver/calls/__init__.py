"""Calls: their states, their records, how operators are rung and how a call is answered."""
