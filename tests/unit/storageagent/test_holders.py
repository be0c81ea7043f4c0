"""Finding QEMU processes that hold a file, on a fake /proc tree."""

from __future__ import annotations

import os
from pathlib import Path

from storageagent.holders import holders


def fake_process(proc: Path, pid: int, comm: str, opened: list[Path]) -> None:
    d = proc / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    for i, f in enumerate(opened):
        os.symlink(f, d / "fd" / str(i + 3))


def test_only_qemu_processes_holding_the_same_inode_count(tmp_path: Path) -> None:
    vol = tmp_path / "vol.qcow2"
    vol.write_bytes(b"x")
    alias = tmp_path / "alias.qcow2"
    os.link(vol, alias)
    other = tmp_path / "other.qcow2"
    other.write_bytes(b"y")
    proc = tmp_path / "proc"
    fake_process(proc, 100, "qemu-system-x86", [other, alias])
    fake_process(proc, 101, "ganesha.nfsd", [vol])
    fake_process(proc, 102, "qemu-img", [other])
    (proc / "self").mkdir()
    found = holders(vol, proc)
    assert [(h.pid, h.comm) for h in found] == [(100, "qemu-system-x86")]
    assert holders(tmp_path / "missing", proc) == []
    assert {h.pid for h in holders(vol, proc, prefixes=())} == {100, 101}


def test_writers_only_skips_a_holder_that_only_reads(tmp_path: Path) -> None:
    """A live snapshot's backing file: QEMU keeps it open read-only, so a copy may read it."""
    vol = tmp_path / "vol.qcow2"
    vol.write_bytes(b"x")
    proc = tmp_path / "proc"
    fake_process(proc, 200, "qemu-system-x86", [vol])
    fake_process(proc, 201, "qemu-system-x86", [vol])
    fake_process(proc, 202, "qemu-system-x86", [vol])
    for pid, flags in ((200, "0100000"), (201, "02100002")):  # read-only; read-write
        (proc / str(pid) / "fdinfo").mkdir()
        (proc / str(pid) / "fdinfo" / "3").write_text(f"pos:\t0\nflags:\t{flags}\nmnt_id:\t30\n")
    # 202 has no fdinfo: whether it writes is unknown, so it counts as a writer
    assert [(h.pid, h.writes) for h in sorted(holders(vol, proc), key=lambda h: h.pid)] == [
        (200, False), (201, True), (202, True)]
    assert sorted(h.pid for h in holders(vol, proc, writers_only=True)) == [201, 202]
