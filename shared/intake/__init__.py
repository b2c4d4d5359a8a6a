"""intake: see the map in shared/__init__.py."""
