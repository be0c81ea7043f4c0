"""Directory modes that ignore the umask (agentcore/fsmode.py)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcore.fsmode import PRIVATE, SHARED, TRAVERSE, ensure_mode, make_dirs, unsearchable_ancestor


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    yield
    os.umask(old)


@pytest.mark.usefixtures("strict_umask")
def test_made_directories_get_exact_modes_under_umask_077(tmp_path: Path) -> None:
    leaf = make_dirs(tmp_path / "a" / "b" / "c", SHARED)
    assert [mode(tmp_path / "a"), mode(tmp_path / "a" / "b"), mode(leaf)] == [SHARED] * 3


@pytest.mark.usefixtures("strict_umask")
def test_parents_get_their_own_mode(tmp_path: Path) -> None:
    state = make_dirs(tmp_path / "root" / "agent", PRIVATE, parents_mode=TRAVERSE)
    assert mode(tmp_path / "root") == TRAVERSE
    assert mode(state) == PRIVATE


def test_existing_directories_keep_their_mode(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir(mode=0o750)
    os.chmod(tmp_path / "a", 0o750)
    make_dirs(tmp_path / "a" / "b", SHARED)
    assert mode(tmp_path / "a") == 0o750
    assert mode(tmp_path / "a" / "b") == SHARED


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        make_dirs(tmp_path / "f", SHARED)


def test_ensure_mode_fixes_a_0700_state_root(tmp_path: Path) -> None:
    d = tmp_path / "kvmcloud"
    d.mkdir()
    os.chmod(d, 0o700)
    ensure_mode(d, TRAVERSE)
    assert mode(d) == TRAVERSE


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every ancestor of which others may search (pytest's own tmp is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="kvmcloud-fsmode-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


def test_unsearchable_ancestor_names_the_0700_directory(open_dir: Path) -> None:
    top = make_dirs(open_dir / "lib" / "storage" / "c1", SHARED)
    assert unsearchable_ancestor(top) is None
    os.chmod(open_dir / "lib", 0o700)
    assert unsearchable_ancestor(top) == open_dir / "lib"
    os.chmod(open_dir / "lib", 0o711)
    assert unsearchable_ancestor(top) is None
