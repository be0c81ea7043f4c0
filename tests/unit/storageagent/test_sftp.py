"""The SFTP fetcher of the image cache, on a stand-in store client (no processes, no network)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import pytest

import sftpbackup.client
from agentcore.task import detached_context
from sftpbackup.client import FetchResult
from storageagent import sftp
from storageagent.models import SftpSource

COMPUTED = "c" * 64


class FakeStoreClient:
    """Records what fetch was asked; answers with the digest it 'computed' from the bytes."""

    calls: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, *args: Any) -> None:
        pass

    def __enter__(self) -> FakeStoreClient:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass

    def fetch(self, image_id: str, dest: Path, ctx: Any = None, seeds: Any = (),
              expected_digest: str | None = None) -> FetchResult:
        self.calls.append({"image_id": image_id, "expected_digest": expected_digest})
        dest.write_bytes(b"x")
        return FetchResult(COMPUTED, 1)


class Cfg:
    sftp_key_file = Path("/k")
    sftp_known_hosts = Path("/kh")


SOURCE = SftpSource(host="store", user="kvmcloud", store_root="/s", image_id="img")


def test_fetch_passes_the_commands_digest_and_reports_the_computed_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setattr(sftpbackup.client, "StoreClient", FakeStoreClient)
    FakeStoreClient.calls = []
    fetch = sftp.fetcher(Cfg(), SOURCE, "sha256:" + "a" * 64)  # type: ignore[arg-type]
    got = fetch(detached_context(), tmp_path / "img")
    assert FakeStoreClient.calls == [{"image_id": "img", "expected_digest": "a" * 64}]
    assert got.digest == "sha256:" + COMPUTED and got.size == 1
