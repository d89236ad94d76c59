"""``python -m wasmforge``: see ``wasmforge/cli.py``."""
import sys

from wasmforge.cli import main

sys.exit(main())
