"""The ``kvmcloud`` command line."""

from __future__ import annotations

import sys


def main() -> int:
    print("kvmcloud: the controller is not built yet", file=sys.stderr)
    return 2
