"""Real parts for tests: a PostgreSQL, the service as a subprocess, WebSocket and SSE clients."""
