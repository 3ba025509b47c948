"""Call audio: the engine interface the switchboard uses, and its aiortc implementations."""
