"""`python -m chaos --events 2000 [--seed S] [--crash]`: see chaos.runner."""

import sys

from chaos.runner import main

sys.exit(main())
