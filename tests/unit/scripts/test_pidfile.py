"""scripts/lib/pidfile.sh: a PID file counts only while its PID still names the daemon.

A PID file left by a daemon that died (or by the machine before a reboot) may hold the PID of
any process once the kernel's PIDs wrap; the scripts must then start the daemon again, and never
signal the stranger."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[3] / "scripts" / "lib" / "pidfile.sh"


def pid_of(pidfile: Path, needle: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", f'. "{LIB}"; pid_of "$1" "$2"', "pid_of", str(pidfile), needle],
                          capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_live_pid_whose_command_line_holds_the_needle_is_the_daemon(tmp_path: Path,
                                                                       stranger: subprocess.Popen[bytes]) -> None:
    pidfile = tmp_path / "d.pid"
    pidfile.write_text(f"{stranger.pid}\n")
    got = pid_of(pidfile, "sleep 300")
    assert got.returncode == 0 and got.stdout.strip() == str(stranger.pid)


def test_a_reused_pid_is_not_the_daemon(tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    pidfile = tmp_path / "sshd.pid"
    pidfile.write_text(f"{stranger.pid}\n")  # alive, but another program: kill -0 would say yes
    got = pid_of(pidfile, str(tmp_path / "sshd_config"))
    assert got.returncode == 1 and got.stdout == ""


def test_a_dead_or_zombie_pid_is_not_the_daemon(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "0"])
    while Path(f"/proc/{child.pid}/status").read_text().find("State:\tZ") < 0:
        pass  # exited but not reaped: a zombie still answers kill -0
    pidfile = tmp_path / "d.pid"
    pidfile.write_text(f"{child.pid}\n")
    assert pid_of(pidfile, "sleep").returncode == 1
    child.wait()
    assert pid_of(pidfile, "sleep").returncode == 1


@pytest.mark.parametrize("content", ["", "not-a-pid\n"])
def test_an_empty_or_garbled_file_is_not_the_daemon(tmp_path: Path, content: str) -> None:
    pidfile = tmp_path / "d.pid"
    pidfile.write_text(content)
    assert pid_of(pidfile, "x").returncode == 1
    assert pid_of(tmp_path / "missing.pid", "x").returncode == 1
