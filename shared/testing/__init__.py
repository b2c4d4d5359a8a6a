"""testing: in-memory twins of the app's stores, for tests, the bench and single-process tools.

Production modules never import this package (a layering contract in pyproject.toml says so); each twin
passes the same contract suite as the real implementation (tests/contract/).
"""
