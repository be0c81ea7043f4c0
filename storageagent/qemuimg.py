"""The qemu-img backend: the one place that runs qemu-img.

:class:`ImageTool` is the narrow interface the plugins use; :class:`QemuImg`
is the real implementation (always through the task's runner, always with a
timeout). Unit tests substitute an in-process fake.

Every call names the format of the file it opens (``-f``), taken from what the
caller knows (the controller's record, the command, the cache's metadata):
qemu-img never probes. Probing a raw volume whose first bytes the guest wrote
as a qcow2 header would make a root qemu-img follow the backing file that
header names. A file of a chain that keeps its data in an external data file
is refused outright: kvmcloud never makes one, and the name could be any file
of the host.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agentcore.errors import InvalidRequest, ProcessFailed
from agentcore.task import TaskContext

QUICK_TIMEOUT = 120.0


@dataclass(frozen=True)
class ImageInfo:
    """What qemu-img info says about one file of a chain."""

    filename: str
    format: str
    virtual_size: int
    actual_size: int
    backing_filename: str | None = None
    backing_format: str | None = None
    #: a qcow2 external data file (``data-file``); never set on what info_chain returns
    data_file: str | None = None


class ImageTool(Protocol):
    """What the storage agent needs from an image tool."""

    def info_chain(self, ctx: TaskContext, path: Path, fmt: str) -> list[ImageInfo]:
        """The file (of format ``fmt``) and its backing files, the file first.
        Refuses a chain in which a file has an external data file."""
        ...

    def create(
        self, ctx: TaskContext, path: Path, fmt: str, size: int,
        backing: str | None = None, backing_fmt: str | None = None,
    ) -> None:
        """A new image; with ``backing`` (a name relative to ``path``'s final directory)
        the backing file is recorded but not opened (``size`` must be given)."""
        ...

    def convert(
        self, ctx: TaskContext, src: Path, dst: Path, fmt: str, *, src_fmt: str,
        compress: bool = False, timeout: float, on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Copy ``src`` (of format ``src_fmt``, flattening its chain) into a new ``dst`` of ``fmt``."""
        ...

    def resize(self, ctx: TaskContext, path: Path, fmt: str, size: int, shrink: bool) -> None: ...

    def rebase(self, ctx: TaskContext, path: Path, backing: str | None, backing_fmt: str | None,
               timeout: float, unsafe: bool = False) -> None:
        """Safe rebase: copy what differs so the guest-visible data stays the same.
        ``unsafe``: only rewrite the backing file name (the same file under a new name)."""
        ...

    def check(self, ctx: TaskContext, path: Path, fmt: str) -> dict[str, Any]: ...


class QemuImg:
    """:class:`ImageTool` on the real ``qemu-img``."""

    def __init__(self, binary: str = "qemu-img") -> None:
        self.binary = binary

    def _run(self, ctx: TaskContext, args: list[str], timeout: float = QUICK_TIMEOUT) -> str:
        return ctx.run([self.binary, *args], timeout=timeout).stdout

    def info_chain(self, ctx: TaskContext, path: Path, fmt: str) -> list[ImageInfo]:
        out = self._run(ctx, ["info", "-U", "-f", fmt, "--backing-chain", "--output=json", str(path)])
        data = json.loads(out)
        chain = [parse_info(d) for d in (data if isinstance(data, list) else [data])]
        refuse_data_files(chain)
        return chain

    def create(
        self, ctx: TaskContext, path: Path, fmt: str, size: int,
        backing: str | None = None, backing_fmt: str | None = None,
    ) -> None:
        args = ["create", "-q", "-f", fmt]
        if backing is not None:
            args += ["-u", "-b", backing, "-F", backing_fmt or "qcow2"]
        self._run(ctx, [*args, str(path), str(size)])

    def convert(
        self, ctx: TaskContext, src: Path, dst: Path, fmt: str, *, src_fmt: str,
        compress: bool = False, timeout: float, on_progress: Callable[[int], None] | None = None,
    ) -> None:
        args = ["convert", "-U", "-f", src_fmt, "-O", fmt]
        if compress and fmt == "qcow2":
            args.append("-c")
        done = threading.Event()
        watcher = None
        if on_progress is not None:
            # qemu-img -p draws progress with '\r', which the line reader never
            # sees; the growth of the output file is a steadier measure anyway
            watcher = threading.Thread(target=_watch, args=(dst, done, on_progress), daemon=True)
            watcher.start()
        try:
            self._run(ctx, [*args, str(src), str(dst)], timeout=timeout)
        finally:
            done.set()
            if watcher is not None:
                watcher.join(2)

    def resize(self, ctx: TaskContext, path: Path, fmt: str, size: int, shrink: bool) -> None:
        args = ["resize", "-q", "-f", fmt]
        if shrink:
            args.append("--shrink")
        self._run(ctx, [*args, str(path), str(size)])

    def rebase(self, ctx: TaskContext, path: Path, backing: str | None, backing_fmt: str | None,
               timeout: float, unsafe: bool = False) -> None:
        args = ["rebase", "-q", "-f", "qcow2", *(["-u"] if unsafe else []), "-b", backing or ""]
        if backing is not None:
            args += ["-F", backing_fmt or "qcow2"]
        self._run(ctx, [*args, str(path)], timeout=timeout)

    def check(self, ctx: TaskContext, path: Path, fmt: str) -> dict[str, Any]:
        res = ctx.run([self.binary, "check", "-U", "-f", fmt, "--output=json", str(path)],
                      timeout=QUICK_TIMEOUT, check=False)
        # exit 2 and 3 report corruption or leaks in the JSON; 1 means it could not check
        if res.returncode == 1 or not res.stdout.strip():
            raise ProcessFailed("qemu-img check failed", stderr=res.stderr[-2000:])
        result: dict[str, Any] = json.loads(res.stdout)
        return result


def parse_info(d: dict[str, Any]) -> ImageInfo:
    """One file of ``qemu-img info --output=json``."""
    specific = d.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    data_file = data.get("data-file") if isinstance(data, dict) else None
    return ImageInfo(
        filename=d["filename"],
        format=d["format"],
        virtual_size=int(d["virtual-size"]),
        actual_size=int(d.get("actual-size", 0)),
        backing_filename=d.get("full-backing-filename") or d.get("backing-filename"),
        backing_format=d.get("backing-filename-format"),
        data_file=str(data_file) if data_file else None,
    )


def refuse_data_files(chain: list[ImageInfo]) -> None:
    """INVALID_REQUEST when a file of ``chain`` keeps its data in an external file:
    qemu-img and QEMU would read whatever file of the host the header names."""
    for info in chain:
        if info.data_file:
            raise InvalidRequest("an image with an external data file is refused",
                                 image=os.path.basename(info.filename), dataFile=info.data_file)


def _watch(path: Path, done: threading.Event, report: Callable[[int], None]) -> None:
    while not done.wait(0.5):
        try:
            report(os.stat(path).st_blocks * 512)
        except OSError:
            continue
