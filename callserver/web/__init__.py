"""HTTP: the app factory's pages, sockets and endpoints."""
