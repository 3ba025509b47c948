"""Orders the shops report and the conversations they are attributed to (no web framework here)."""
