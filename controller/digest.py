"""Image digests, converted in this one place.

The controller stores and sends the storageagent ``sha256:<hex>``; the
sftpbackup and ceph agents (and the store's manifests) speak bare hex. Every
digest that enters the controller (a request, an agent's reply) goes through
:func:`normalise`; every digest sent to a bare-hex agent goes through
:func:`bare`.
"""

from __future__ import annotations

import re

PREFIX = "sha256:"
_HEX = re.compile(r"^[0-9a-f]{64}$")


def normalise(digest: str) -> str:
    """``sha256:<hex>`` from ``sha256:<hex>`` or bare ``<hex>`` (any case); ValueError otherwise."""
    hexpart = digest.strip().lower().removeprefix(PREFIX)
    if not _HEX.fullmatch(hexpart):
        raise ValueError("must be a sha256 digest: 64 hex digits, optionally prefixed 'sha256:'")
    return PREFIX + hexpart


def bare(digest: str) -> str:
    """The 64 hex digits of a digest in either form."""
    return normalise(digest).removeprefix(PREFIX)
