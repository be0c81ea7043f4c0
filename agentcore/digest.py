"""Image digests: one type in two wire forms, converted in this one place.

The storageagent's commands carry ``sha256:<hex>`` (:data:`PrefixedDigest`);
the sftpbackup and ceph agents and the store's manifests speak bare hex
(:data:`HexDigest`). The wire forms stay as the agents have always spoken
them; every model that carries a digest uses one of these two types, and
every conversion between them goes through :func:`normalise` (to the
prefixed form, which the controller stores) or :func:`bare`.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

PREFIX = "sha256:"
_HEX = re.compile(r"^[0-9a-f]{64}$")

#: a sha256 as 64 lower-case hex digits (sftpbackup, cephagent)
HexDigest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
#: a sha256 as ``sha256:<hex>`` (storageagent, the controller's records)
PrefixedDigest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256:<hex>")]


def normalise(digest: str) -> str:
    """``sha256:<hex>`` from ``sha256:<hex>`` or bare ``<hex>`` (any case); ValueError otherwise."""
    hexpart = digest.strip().lower().removeprefix(PREFIX)
    if not _HEX.fullmatch(hexpart):
        raise ValueError("must be a sha256 digest: 64 hex digits, optionally prefixed 'sha256:'")
    return PREFIX + hexpart


def bare(digest: str) -> str:
    """The 64 hex digits of a digest in either form."""
    return normalise(digest).removeprefix(PREFIX)
