"""``python -m controller.cli``: the ``kvmcloud`` command."""

import sys

from controller.cli import main

sys.exit(main())
