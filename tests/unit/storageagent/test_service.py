"""Finding storages, the start-up sweep, clone/evict exclusion, and the ping probe."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agentcore.errors import InUse, InvalidRequest, NotFound
from storageagent.app import Config
from storageagent.layout import StorageNotReady
from storageagent.plugins.storage import PROBE_FILE, StoragePlugin, StorageUnreachable
from storageagent.service import StorageService


@pytest.fixture
def svc(tmp_path: Path) -> StorageService:
    cfg = Config(token="t" * 20, state_dir=tmp_path / "state", storage_base_dirs=[tmp_path / "ps"],
                 mount_base=tmp_path / "mnt", mount_helper="bind")
    (tmp_path / "state").mkdir()
    return StorageService(cfg)


def test_roots_must_lie_under_the_base_dirs(svc: StorageService, tmp_path: Path) -> None:
    assert svc.root("ps-1", str(tmp_path / "ps" / "a")).root == tmp_path / "ps" / "a"
    assert svc.root("ps-1", str(tmp_path / "mnt" / "ps-1")).root == tmp_path / "mnt" / "ps-1"
    with pytest.raises(InvalidRequest) as e:
        svc.root("ps-1", "/etc")
    assert e.value.details["field"] == "mountPath"
    (tmp_path / "ps").mkdir()
    os.symlink("/etc", tmp_path / "ps" / "evil")
    with pytest.raises(InvalidRequest):
        svc.root("ps-1", str(tmp_path / "ps" / "evil"))
    with pytest.raises(StorageNotReady):
        svc.open("ps-1", str(tmp_path / "ps" / "a"))


def test_sweep_cleans_the_storages_this_host_knows(svc: StorageService, tmp_path: Path) -> None:
    sr = svc.root("ps-1", str(tmp_path / "ps" / "a"))
    sr.root.mkdir(parents=True)
    sr.claim("local")
    svc.remember(sr)
    sr.tmp_file("x").write_bytes(b"half")
    assert svc.known() == {"ps-1": str(sr.root)}
    svc.sweep()
    assert list(sr.tmp.iterdir()) == []
    svc.forget("ps-1")
    assert svc.known() == {}


def test_evict_waits_for_clones_and_clones_wait_for_evict(svc: StorageService) -> None:
    with svc.using_image("ps-1", "img"), pytest.raises(InUse):
        with svc.evicting("ps-1", "img"):
            pass
    with svc.evicting("ps-1", "img"), pytest.raises(NotFound):
        with svc.using_image("ps-1", "img"):
            pass
    with svc.using_image("ps-1", "img"):  # both released
        pass


def test_a_hanging_storage_fails_the_probe_in_time(svc: StorageService, tmp_path: Path) -> None:
    sr = svc.root("ps-1", str(tmp_path / "ps" / "a"))
    sr.root.mkdir(parents=True)
    sr.claim("local")
    # opening a FIFO for writing blocks until a reader comes: a storage that never answers
    os.mkfifo(sr.root / PROBE_FILE)
    plugin = StoragePlugin(svc)
    with pytest.raises(StorageUnreachable):
        plugin._probe_file("ps-1", str(sr.root), 0.2)
    with pytest.raises(StorageUnreachable) as e:  # the stuck probe is not piled up
        plugin._probe_file("ps-1", str(sr.root), 0.2)
    assert "still hanging" in e.value.message
    # let the stuck probe go
    reader = threading.Thread(target=lambda: (sr.root / PROBE_FILE).read_bytes())
    reader.start()
    reader.join(5)
    os.unlink(sr.root / PROBE_FILE)
    plugin._probes["ps-1"].join(5)
    plugin._probe_file("ps-1", str(sr.root), 5)
    with pytest.raises(StorageNotReady):
        plugin._probe_file("ps-2", str(sr.root), 5)
