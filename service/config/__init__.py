"""Configuration: the loader (load.py) and one module of types per section."""
