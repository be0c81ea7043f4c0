"""Bounded calls, error mapping and the credential policy, without a cluster."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest
import rados
import rbd

from agentcore.errors import Cancelled, InUse
from agentcore.task import TaskContext
from cephagent.connection import CallRunner, Credentials, Limits, map_error
from cephagent.errors import (
    CephError,
    CephPermissionDenied,
    CephTimeout,
    CephUnreachable,
    CredentialRefused,
    HasSnapshots,
    ImageExists,
    ImageNotFound,
    PoolNotFound,
)
from cephagent.models import ClusterRef


@pytest.fixture
def runner() -> CallRunner:
    r = CallRunner(Limits(op_timeout=0.3, connect_timeout=0.3), max_threads=4)
    yield r
    r.shutdown()


def test_a_stuck_call_becomes_ceph_timeout(runner: CallRunner) -> None:
    release = threading.Event()
    timed_out: list[bool] = []
    with pytest.raises(CephTimeout) as e:
        runner.call(None, lambda: release.wait(10), timeout=0.2, what="stuck op",
                    on_timeout=lambda: timed_out.append(True))
    release.set()
    assert e.value.details["operation"] == "stuck op" and timed_out == [True]


def test_the_bound_stays_short_of_the_task_deadline(runner: CallRunner) -> None:
    ctx = TaskContext("t", "/x", deadline=time.monotonic() + 1.0)
    bound = runner.bound(ctx, 30.0)
    assert 0.5 <= bound < 1.0
    assert runner.bound(None, 30.0) == 30.0
    assert runner.bound(TaskContext("t", "/x"), 30.0) == 30.0


def test_cancel_stops_the_wait(runner: CallRunner) -> None:
    ctx = TaskContext("t", "/x")
    release = threading.Event()
    threading.Timer(0.1, ctx.cancel).start()
    with pytest.raises(Cancelled):
        runner.call(ctx, lambda: release.wait(10), timeout=5, what="op")
    release.set()


def test_results_and_exceptions_pass_through(runner: CallRunner) -> None:
    assert runner.call(None, lambda: 42, timeout=1, what="op") == 42
    with pytest.raises(rbd.ImageNotFound):
        runner.call(None, _raise(rbd.ImageNotFound("gone", errno=errno.ENOENT)), timeout=1, what="op")


def _raise(e: Exception):  # type: ignore[no-untyped-def]
    def f() -> None:
        raise e
    return f


@pytest.mark.parametrize(("exc", "expected"), [
    (rados.PermissionError("no", errno=errno.EPERM), CephPermissionDenied),
    (rbd.PermissionError("no", errno=errno.EACCES), CephPermissionDenied),
    (rados.TimedOut("late", errno=errno.ETIMEDOUT), CephTimeout),
    (rbd.ImageNotFound("gone", errno=errno.ENOENT), ImageNotFound),
    (rbd.ImageExists("there", errno=errno.EEXIST), ImageExists),
    (rbd.ImageBusy("busy", errno=errno.EBUSY), InUse),
    (rbd.ImageHasSnapshots("snaps", errno=errno.ENOTEMPTY), HasSnapshots),
    (rbd.OperationCanceled("stop", errno=errno.ECANCELED), Cancelled),
    (rados.ConnectionShutdown("down"), CephUnreachable),
    (rbd.InvalidArgument("bad", errno=errno.EINVAL), CephError),
])
def test_map_error(exc: Exception, expected: type) -> None:
    assert type(map_error(exc)) is expected


def test_map_error_not_found_is_contextual() -> None:
    err = map_error(rados.ObjectNotFound("x", errno=errno.ENOENT), not_found=PoolNotFound(pool="p"))
    assert isinstance(err, PoolNotFound)


def ref(**kw: object) -> ClusterRef:
    return ClusterRef.model_validate({"monitors": ["127.0.0.1"], "user": "agent", **kw})


def test_credentials_policy(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "client.agent.keyring").write_text("[client.agent]\n key = AQ==\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "agent").write_text("AQBsecret==\n")
    (secrets / "empty").write_text("")
    outside = tmp_path / "outside.keyring"
    outside.write_text("x")
    os.symlink(outside, keys / "link.keyring")
    creds = Credentials([keys], secrets, allow_admin=False)

    assert creds.conf(ref(keyring=str(keys / "client.agent.keyring"))) == {
        "keyring": str(keys / "client.agent.keyring")}
    assert creds.conf(ref(keyRef="agent")) == {"key": "AQBsecret=="}
    for bad in (ref(keyring=str(outside)), ref(keyring=str(keys / "link.keyring")),
                ref(keyring=str(keys / ".." / "outside.keyring")), ref(keyring=str(keys / "missing")),
                ref(keyRef="empty"), ref(keyRef="missing"),
                ref(user="client.admin", keyring=str(keys / "client.agent.keyring"))):
        with pytest.raises(CredentialRefused):
            creds.conf(bad)
    admin_ok = Credentials([keys], None, allow_admin=True)
    assert admin_ok.conf(ref(user="admin", keyring=str(keys / "client.agent.keyring")))
    with pytest.raises(CredentialRefused):
        admin_ok.conf(ref(keyRef="agent"))  # no secrets_dir configured
