"""The qemu-img backend: the one place that runs qemu-img.

:class:`ImageTool` is the narrow interface the plugins use; :class:`QemuImg`
is the real implementation (always through the task's runner, always with a
timeout). Unit tests substitute an in-process fake.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agentcore.errors import ProcessFailed
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


class ImageTool(Protocol):
    """What the storage agent needs from an image tool."""

    def info_chain(self, ctx: TaskContext, path: Path) -> list[ImageInfo]:
        """The file and its backing files, the file first."""
        ...

    def create(
        self, ctx: TaskContext, path: Path, fmt: str, size: int,
        backing: str | None = None, backing_fmt: str | None = None,
    ) -> None:
        """A new image; with ``backing`` (a name relative to ``path``'s final directory)
        the backing file is recorded but not opened (``size`` must be given)."""
        ...

    def convert(
        self, ctx: TaskContext, src: Path, dst: Path, fmt: str, *,
        compress: bool = False, timeout: float, on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Copy ``src`` (flattening its chain) into a new ``dst`` of ``fmt``."""
        ...

    def resize(self, ctx: TaskContext, path: Path, fmt: str, size: int, shrink: bool) -> None: ...

    def rebase(self, ctx: TaskContext, path: Path, backing: str | None, backing_fmt: str | None,
               timeout: float, unsafe: bool = False) -> None:
        """Safe rebase: copy what differs so the guest-visible data stays the same.
        ``unsafe``: only rewrite the backing file name (the same file under a new name)."""
        ...

    def check(self, ctx: TaskContext, path: Path) -> dict[str, Any]: ...


class QemuImg:
    """:class:`ImageTool` on the real ``qemu-img``."""

    def __init__(self, binary: str = "qemu-img") -> None:
        self.binary = binary

    def _run(self, ctx: TaskContext, args: list[str], timeout: float = QUICK_TIMEOUT) -> str:
        return ctx.run([self.binary, *args], timeout=timeout).stdout

    def info_chain(self, ctx: TaskContext, path: Path) -> list[ImageInfo]:
        out = self._run(ctx, ["info", "-U", "--backing-chain", "--output=json", str(path)])
        data = json.loads(out)
        if isinstance(data, dict):
            data = [data]
        return [
            ImageInfo(
                filename=d["filename"],
                format=d["format"],
                virtual_size=int(d["virtual-size"]),
                actual_size=int(d.get("actual-size", 0)),
                backing_filename=d.get("full-backing-filename") or d.get("backing-filename"),
                backing_format=d.get("backing-filename-format"),
            )
            for d in data
        ]

    def create(
        self, ctx: TaskContext, path: Path, fmt: str, size: int,
        backing: str | None = None, backing_fmt: str | None = None,
    ) -> None:
        args = ["create", "-q", "-f", fmt]
        if backing is not None:
            args += ["-u", "-b", backing, "-F", backing_fmt or "qcow2"]
        self._run(ctx, [*args, str(path), str(size)])

    def convert(
        self, ctx: TaskContext, src: Path, dst: Path, fmt: str, *,
        compress: bool = False, timeout: float, on_progress: Callable[[int], None] | None = None,
    ) -> None:
        args = ["convert", "-U", "-O", fmt]
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

    def check(self, ctx: TaskContext, path: Path) -> dict[str, Any]:
        res = ctx.run([self.binary, "check", "-U", "--output=json", str(path)],
                      timeout=QUICK_TIMEOUT, check=False)
        # exit 2 and 3 report corruption or leaks in the JSON; 1 means it could not check
        if res.returncode == 1 or not res.stdout.strip():
            raise ProcessFailed("qemu-img check failed", stderr=res.stderr[-2000:])
        result: dict[str, Any] = json.loads(res.stdout)
        return result


def _watch(path: Path, done: threading.Event, report: Callable[[int], None]) -> None:
    while not done.wait(0.5):
        try:
            report(os.stat(path).st_blocks * 512)
        except OSError:
            continue
