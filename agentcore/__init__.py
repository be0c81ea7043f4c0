"""The runtime every kvmcloud agent shares: the command protocol, the task
journal, callbacks, progress, cancel, deadlines, auth, config and the
argv-only process runner."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kvmcloud")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
