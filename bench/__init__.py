"""`make bench`: performance figures (docs/performance.md); not part of `make test`."""
