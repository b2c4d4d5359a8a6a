"""`python -m devstack up|down|status|env`."""

import sys

from devstack.stack import main

sys.exit(main())
