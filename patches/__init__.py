"""The patches, one module each. The registry discovers them; see ``registry.py``."""
