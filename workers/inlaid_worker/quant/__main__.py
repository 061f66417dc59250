"""Entry point: python -m inlaid_worker.quant (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
