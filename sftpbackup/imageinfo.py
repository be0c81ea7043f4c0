"""Image format detection with ``qemu-img info``: format, virtual size, and refusal of
images that would read other files (a qcow2 backing file or external data file)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcore import runner
from agentcore.task import TaskContext
from sftpbackup.errors import BadImage

QEMU_IMG_TIMEOUT = 120.0
KNOWN_FORMATS = ("raw", "qcow2")


@dataclass(frozen=True)
class DetectedImage:
    """What ``qemu-img info`` says about a local file."""

    format: str
    virtual_size: int
    actual_size: int


def run_tool(ctx: TaskContext | None, argv: list[str], timeout: float) -> runner.ProcessResult:
    """Run a tool as part of a task when there is one (so cancel kills it)."""
    if ctx is not None:
        return ctx.run(argv, timeout=timeout)
    return runner.run(argv, timeout=timeout)


def detect(path: Path, ctx: TaskContext | None = None, expected: str | None = None) -> DetectedImage:
    """Detect the format of ``path``; refuse backing files and unknown formats.

    An ISO is stored as ``iso`` when the caller says so and qemu-img sees raw.
    """
    out = run_tool(ctx, ["qemu-img", "info", "--output=json", "--force-share", str(path)],
                   QEMU_IMG_TIMEOUT)
    info: dict[str, Any] = json.loads(out.stdout)
    fmt = str(info.get("format", ""))
    if "backing-filename" in info or "full-backing-filename" in info:
        raise BadImage("the image has a backing file; upload a flattened image",
                       backing_file=info.get("backing-filename"))
    data = info.get("format-specific", {}).get("data", {})
    if isinstance(data, dict) and data.get("data-file"):
        raise BadImage("the image uses an external data file", data_file=data.get("data-file"))
    if fmt not in KNOWN_FORMATS:
        raise BadImage(f"unsupported image format {fmt!r}", format=fmt)
    if expected == "iso" and fmt == "raw":
        fmt = "iso"
    elif expected is not None and expected != fmt:
        raise BadImage(f"the image is {fmt}, not {expected}", format=fmt, expected=expected)
    return DetectedImage(fmt, int(info["virtual-size"]), int(info.get("actual-size", 0)))
