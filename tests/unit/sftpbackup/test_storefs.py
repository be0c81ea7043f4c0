"""Walking a store without following links, and the pinned private work directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sftpbackup.storefs import LinkRefused, StoreFs


@pytest.fixture
def fs(tmp_path: Path) -> StoreFs:
    (tmp_path / "s" / "tmp").mkdir(parents=True)
    return StoreFs(tmp_path / "s")


def test_the_root_may_be_reached_through_a_link_but_nothing_below_it(fs: StoreFs, tmp_path: Path) -> None:
    (tmp_path / "via").symlink_to(fs.root)
    linked_root = StoreFs(tmp_path / "via")
    with linked_root.dir("tmp"):
        pass
    (tmp_path / "elsewhere").mkdir()
    (fs.root / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LinkRefused), fs.dir("sub"):
        pass
    with pytest.raises(LinkRefused):
        fs.makedirs("sub/deeper")
    assert not (tmp_path / "elsewhere" / "deeper").exists()


def test_special_files_are_refused(fs: StoreFs) -> None:
    os.mkfifo(fs.root / "tmp" / "fifo")  # opening it for reading would block the agent
    with pytest.raises(LinkRefused):
        fs.read("tmp/fifo")
    with pytest.raises(LinkRefused):
        fs.touch("tmp/fifo")


def test_the_private_dir_stays_pinned_when_its_name_is_swapped_for_a_link(
    fs: StoreFs, tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with fs.private_dir("tmp", "work.tok") as work:
        name = fs.root / "tmp" / "work.tok"
        assert oct(name.stat().st_mode & 0o777) == "0o700"
        name.rename(fs.root / "tmp" / "moved")  # the store user renames it away ...
        name.symlink_to(outside)  # ... and links its name elsewhere
        (work / "download").write_bytes(b"image")
        assert (fs.root / "tmp" / "moved" / "download").read_bytes() == b"image"
        assert list(outside.iterdir()) == []
    assert list((fs.root / "tmp" / "moved").iterdir()) == []  # emptied on exit
    assert list(outside.iterdir()) == []


def test_a_private_dir_someone_else_made_first_is_refused(fs: StoreFs) -> None:
    (fs.root / "tmp" / "work.tok").mkdir()
    with pytest.raises(FileExistsError), fs.private_dir("tmp", "work.tok"):
        pass


def test_link_out_links_the_inode_never_a_link_target(fs: StoreFs, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s")
    (fs.root / "tmp" / "chunk").symlink_to(secret)
    with fs.private_dir("tmp", "work.x") as work:
        with pytest.raises(LinkRefused):
            fs.link_out("tmp/chunk", work / "c")
        assert not (work / "c").exists()
