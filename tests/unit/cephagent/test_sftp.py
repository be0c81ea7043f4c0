"""Import from the SFTP store on a stand-in store client and RBD (no processes, no cluster)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from pydantic import ValidationError

from agentcore.task import detached_context
from cephagent import sftp
from cephagent.models import ImportFromSftpCmd
from sftpbackup.client import FetchResult, SftpTarget
from sftpbackup.errors import DigestMismatch

GENUINE = "a" * 64
CLUSTER = {"monitors": ["127.0.0.1:6789"], "user": "client.agent", "keyring": "/etc/ceph/k"}
TARGET = SftpTarget("store", 22, "kvmcloud", "/s")


class FakeStoreClient:
    """A store whose bytes hash to ``digest``; refuses like the real client does."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.asked: list[str | None] = []

    def __enter__(self) -> FakeStoreClient:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass

    def fetch(self, image_id: str, dest: Path, ctx: Any = None, seeds: Any = (),
              expected_digest: str | None = None) -> FetchResult:
        self.asked.append(expected_digest)
        if expected_digest is not None and expected_digest != self.digest:
            raise DigestMismatch(expected=expected_digest, actual=self.digest)
        dest.write_bytes(b"image")
        return FetchResult(self.digest, 5)


@pytest.fixture
def imported(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    done: list[Path] = []
    monkeypatch.setattr(sftp, "import_file", lambda ctx, store, path, pool, name: done.append(path) or 5)
    return done


def run(monkeypatch: pytest.MonkeyPatch, client: FakeStoreClient, work: Path) -> tuple[int, str]:
    monkeypatch.setattr(sftp, "_client", lambda target, key, known: client)
    return sftp.import_image(detached_context(), None, TARGET, "img", GENUINE,  # type: ignore[arg-type]
                             "pool", "name", work, Path("/k"), Path("/kh"))


def test_import_checks_the_fetched_bytes_against_the_commands_digest(
    monkeypatch: pytest.MonkeyPatch, imported: list[Path], tmp_path: Path,
) -> None:
    client = FakeStoreClient(GENUINE)
    assert run(monkeypatch, client, tmp_path) == (5, GENUINE)
    assert client.asked == [GENUINE] and len(imported) == 1


def test_import_of_other_bytes_fails_before_rbd_and_leaves_no_scratch(
    monkeypatch: pytest.MonkeyPatch, imported: list[Path], tmp_path: Path,
) -> None:
    with pytest.raises(DigestMismatch):
        run(monkeypatch, FakeStoreClient("e" * 64), tmp_path)
    assert imported == [] and list(tmp_path.iterdir()) == []


def test_import_from_sftp_requires_the_images_digest() -> None:
    body = {"cluster": CLUSTER, "pool": "p", "name": "v", "host": "store", "user": "kvmcloud",
            "storeRoot": "/s", "imageId": "img"}
    with pytest.raises(ValidationError) as e:
        ImportFromSftpCmd.model_validate(body)
    assert [err["loc"] for err in e.value.errors()] == [("sha256",)]
    with pytest.raises(ValidationError):
        ImportFromSftpCmd.model_validate({**body, "sha256": "sha256:" + GENUINE})
    assert ImportFromSftpCmd.model_validate({**body, "sha256": GENUINE}).sha256 == GENUINE
