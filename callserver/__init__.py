"""callserver: web calls and chat for online shops, bridged in the browser by aiortc."""

__version__ = "0.1.0"
