"""bin/dev's supervisor (server.py), its stand-ins for the outside world (peers.py) and
development tokens (tokens.py, bin/token)."""
