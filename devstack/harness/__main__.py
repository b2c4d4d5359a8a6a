"""`python -m devstack.harness`: run the function app against the devstack."""

from devstack.harness.cli import main

main()
