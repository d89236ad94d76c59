"""``python -m wasmforge.bench <module.wasm> ...``: see ``wasmforge.bench.main``."""
import sys

from wasmforge.bench import main

sys.exit(main(sys.argv[1:]))
