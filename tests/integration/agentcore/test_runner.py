"""The argv-only process runner, with real child processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agentcore import runner
from agentcore.errors import Cancelled, ProcessFailed, ProcessTimeout
from agentcore.task import TaskContext


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, OSError):
        return False


def test_shell_strings_are_refused() -> None:
    with pytest.raises(TypeError):
        runner.run("echo hi", timeout=5)  # type: ignore[arg-type]


def test_output_and_failures_are_structured() -> None:
    assert runner.run(["echo", "hi"], timeout=5).stdout == "hi\n"
    with pytest.raises(ProcessFailed) as e:
        runner.run(["sh", "-c", "echo boom >&2; exit 3"], timeout=5, redact=["boom"])
    assert e.value.details["returncode"] == 3
    assert "boom" not in e.value.details["stderr"] and "***" in e.value.details["stderr"]
    assert runner.run(["false"], timeout=5, check=False).returncode == 1


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    t0 = time.monotonic()
    with pytest.raises(ProcessTimeout):
        runner.run(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert not alive(int(pid_file.read_text()))


def test_lines_are_streamed_and_input_fed() -> None:
    lines: list[str] = []
    runner.run(["cat"], timeout=5, input="a\nb\n", on_line=lines.append)
    assert lines == ["a", "b"]


def test_cancel_through_the_owning_task(tmp_path: Path) -> None:
    import threading

    ctx = TaskContext("t", "/x")
    threading.Timer(0.3, ctx.cancel).start()
    with pytest.raises(Cancelled):
        ctx.run(["sleep", "30"], timeout=60)
    assert ctx.owned_pgids() == set()
