"""Bulk transfer with OpenSSH's own ``sftp`` client in batch mode.

paramiko is CPU-bound near 100 MiB/s here; OpenSSH's client moves several
hundred. Bulk chunk data therefore goes through ``sftp -b``; metadata
(manifests, stats) goes through paramiko. Host keys are checked against the
known_hosts file of the agent's config; the key is a host-side file.
"""

from __future__ import annotations

import os
import select
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentcore.errors import AgentError, Cancelled
from agentcore.task import TaskContext
from sftpbackup.errors import TransferFailed

#: bytes per SFTP read/write request and requests in flight (OpenSSH: 32 KiB x 64)
BUFFER_SIZE = 131072
REQUESTS = 64
#: AES-GCM first: with AES-NI it costs both ends about a third less CPU than
#: OpenSSH's default chacha20-poly1305 (see docs/sftpbackup.md); the rest stay
#: as fallbacks for servers without it
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr"


@dataclass(frozen=True)
class SftpTarget:
    """A store reachable over SFTP: ``store_root`` is the path the server shows."""

    host: str
    port: int
    user: str
    store_root: str

    def path(self, rel: str) -> str:
        root = self.store_root.rstrip("/")
        return f"{root}/{rel}"


def ssh_options(key_file: Path, known_hosts: Path) -> list[str]:
    """Options that make OpenSSH use only our key and check the host key strictly."""
    return [
        "-F", "/dev/null",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", f"IdentityFile={key_file}",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"Ciphers={CIPHERS}",
        "-o", "ConnectTimeout=20",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
    ]


def quote(path: str | os.PathLike[str]) -> str:
    """A path as one argument of an sftp batch line."""
    s = os.fspath(path)
    if any(c in s for c in "\"\\\n\r") or not s:
        raise ValueError(f"path cannot go into an sftp batch: {s!r}")
    return f'"{s}"'


def sftp_argv(target: SftpTarget, key_file: Path, known_hosts: Path, batch: Path) -> list[str]:
    return [
        "sftp", "-q", "-b", str(batch), "-B", str(BUFFER_SIZE), "-R", str(REQUESTS),
        "-P", str(target.port), *ssh_options(key_file, known_hosts),
        f"{target.user}@{target.host}",
    ]


def child_context(parent: TaskContext | None, name: str) -> TaskContext:
    """A context for a helper job: stopped with its parent, stoppable on its own."""
    ctx = TaskContext(
        f"{parent.task_uuid if parent else 'client'}/{name}", "",
        deadline=parent.deadline if parent else None,
    )
    if parent is not None:
        parent.on_stop(lambda: ctx.stop(parent.stop_reason() or Cancelled()))
    return ctx


class BatchJob:
    """An ``sftp -b`` run on a helper thread; :meth:`join` re-raises its failure."""

    def __init__(self, argv: list[str], batch: Path, ctx: TaskContext, timeout: float,
                 on_line: Callable[[str], None] | None = None) -> None:
        self._on_line = on_line
        self._argv = argv
        self._batch = batch
        self.ctx = ctx
        self._timeout = timeout
        self.error: AgentError | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sftp-batch", daemon=True)

    def start(self) -> BatchJob:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.ctx.run(self._argv, timeout=self._timeout, on_line=self._on_line)
        except AgentError as e:
            self.error = e
        except Exception as e:  # surfaced through join()
            self.error = TransferFailed(str(e))
        finally:
            self._batch.unlink(missing_ok=True)
            self.done.set()

    def stop(self) -> None:
        self.ctx.cancel()
        self._thread.join(timeout=30)

    def join(self) -> None:
        self._thread.join()
        if self.error is not None:
            err = self.error
            if err.code == "PROCESS_FAILED":
                raise TransferFailed(f"sftp failed: {err.message}", **err.details)
            raise err


class BatchStream:
    """An ``sftp -b`` run fed line by line while it runs (its batch file is a FIFO).

    Lines sent are run in order as they arrive; :meth:`close` ends the batch
    and waits for the run (re-raising its failure). If the run ends early
    (a failed command aborts a batch), :meth:`send` raises its failure.
    """

    def __init__(self, argv_for: Callable[[Path], list[str]], ctx: TaskContext | None,
                 timeout: float, workdir: Path, on_line: Callable[[str], None] | None = None) -> None:
        path = workdir / f".sftp-stream-{uuid.uuid4().hex}"
        os.mkfifo(path, 0o600)
        # read-write: never blocks on open, and sftp sees EOF once we close it
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._mu = threading.Lock()
        self._ended = False
        self.job = BatchJob(argv_for(path), path, child_context(ctx, "sftp"), timeout, on_line).start()

    def check(self) -> None:
        """Raise the run's failure if it has ended before its batch did."""
        if self.job.done.is_set():
            self.job.join()
            raise TransferFailed("sftp ended before its batch")

    def send(self, lines: list[str]) -> None:
        data = memoryview(("\n".join(lines) + "\n").encode())
        while data:
            self.check()
            with self._mu:  # another thread may end or stop the batch meanwhile
                if self._fd < 0:
                    raise TransferFailed("the sftp batch was stopped")
                try:
                    data = data[os.write(self._fd, data):]
                except BlockingIOError:
                    select.select([], [self._fd], [], 0.05)

    def end(self) -> None:
        """End the batch: sftp runs the lines sent so far, then exits.

        The end is a ``bye`` line, not EOF: the FIFO stays open until the run
        is over, since closing it before sftp has opened it would drop the
        lines already written and leave sftp waiting for a writer forever.
        """
        if not self._ended:
            self._ended = True
            self.send(["bye"])

    def close(self) -> None:
        """End the batch and wait for it to finish."""
        try:
            self.end()
        except TransferFailed:
            pass  # the run ended early: join() says why
        try:
            self.job.join()
        finally:
            self._close_fifo()

    def stop(self) -> None:
        self._close_fifo()
        self.job.stop()

    def _close_fifo(self) -> None:
        with self._mu:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class SftpCli:
    """Runs batches of sftp commands against one target."""

    def __init__(self, target: SftpTarget, key_file: Path, known_hosts: Path) -> None:
        self.target = target
        self.key_file = key_file
        self.known_hosts = known_hosts

    def start(self, lines: list[str], ctx: TaskContext | None, timeout: float, workdir: Path) -> BatchJob:
        """Start a batch in the background."""
        fd, name = tempfile.mkstemp(prefix=".sftp-batch-", dir=workdir)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        batch = Path(name)
        argv = sftp_argv(self.target, self.key_file, self.known_hosts, batch)
        return BatchJob(argv, batch, child_context(ctx, "sftp"), timeout).start()

    def stream(self, ctx: TaskContext | None, timeout: float, workdir: Path,
               on_line: Callable[[str], None] | None = None) -> BatchStream:
        """Start a batch whose lines are sent while it runs (see :class:`BatchStream`).

        ``on_line`` gets each line sftp prints: it echoes each batch command
        (``sftp> ...``, line-buffered) as it starts it, so a command's echo
        says the one before it has finished.
        """
        return BatchStream(lambda batch: sftp_argv(self.target, self.key_file, self.known_hosts, batch),
                           ctx, timeout, workdir, on_line)

    def run(self, lines: list[str], ctx: TaskContext | None, timeout: float, workdir: Path) -> None:
        """Run a batch to its end."""
        self.start(lines, ctx, timeout, workdir).join()
        if ctx is not None:
            ctx.check()
