"""One module per HTTP surface; each exposes `routes`, a list the app factory mounts."""
