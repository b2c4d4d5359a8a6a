"""The app's version: the one source that pyproject.toml, azure.yaml, the contracts and CHANGELOG.md follow
(tests/unit/test_version.py checks each). Semantic versioning; the contracts' major version is this major."""

VERSION = "1.0.0"
