"""``python -m ckptlens.cli``: the ``ckptlens`` command where its script is not on PATH."""

import sys

from . import main

sys.exit(main())
