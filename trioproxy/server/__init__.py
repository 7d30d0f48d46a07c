"""The HTTP server: the ASGI app, client auth, graceful drain and operator views."""
