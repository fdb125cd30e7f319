"""``python -m layermod``: the ``layermod`` command."""

import sys

from layermod.cli import main

sys.exit(main())
