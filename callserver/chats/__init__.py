"""Text chat: live conversations, the waiting queue, left messages and canned replies (no web imports)."""
