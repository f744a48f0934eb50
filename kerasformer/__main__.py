"""``python -m kerasformer``: the command line (see kerasformer.cli)."""
import sys

from kerasformer.cli import main

sys.exit(main())
