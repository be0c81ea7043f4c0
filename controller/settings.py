"""The controller's settings."""

from __future__ import annotations

import ipaddress
from typing import Self

from pydantic import BaseModel, Field, field_validator, model_validator


def is_loopback(listen: str) -> bool:
    """Whether ``HOST:PORT`` binds only a loopback address (``localhost``, 127.0.0.0/8, ``[::1]``)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseModel):
    """What ``kvmcloud serve`` and :func:`controller.server.create_app` take."""

    db_url: str = Field(default="sqlite:///kvmcloud.db", description="SQLAlchemy database URL")
    listen: str = Field(default="127.0.0.1:8080", description="HOST:PORT of the API")
    public_url: str | None = Field(
        default=None, description="base URL agents call back (default: http://<listen>)")
    agent_controller_urls: list[str] = Field(
        default_factory=list, max_length=32, description=(
            "more controller URLs every deployed agent admits callbacks to, besides this node's "
            "and the nodes up in the cluster at deploy time (a load balancer's, nodes to come)"))
    api_tokens: list[str] = Field(
        default_factory=list, description="bootstrap bearer tokens, each an admin (besides the "
        "accounts kept in the database)")
    insecure_no_auth: bool = Field(
        default=False, description="a call without a token is an admin (development only; "
        "refused unless listen is a loopback address)")
    agent_token: str = Field(default="", description="bearer token of the agents (both directions)")
    job_workers: int = Field(default=64, ge=1, le=1024, description="threads running jobs")
    command_timeout: float = Field(default=600.0, gt=0, description="default agent command deadline")
    recovery_wait: float = Field(default=120.0, ge=0, le=3600, description=(
        "after a restart, seconds to wait for the agents to stop the dead jobs' tasks before cleaning up"))
    poll_after: float = Field(default=30.0, gt=0, description="poll GET /tasks after this long")
    ping_interval: float = Field(default=30.0, gt=0, description="seconds between host pings")
    ping_jitter: float = Field(default=0.2, ge=0, le=1, description="fraction of random jitter")
    sync_interval: float = Field(default=300.0, gt=0, description="seconds between full VM syncs")
    host_dead_after: float = Field(default=30.0, gt=0, le=86400, description=(
        "seconds a host's agent stays unreachable (from its first missed ping) before the host "
        "is declared Dead and its VMs with haLevel restart are started on other hosts"))
    tracker: bool = Field(default=True, description="run the host tracker (ping, reconnect, sync)")
    threads: int = Field(default=64, ge=1, le=1024, description="HTTP threads")
    db_backup_dir: str | None = Field(
        default=None, description="directory of the scheduled database backups (unset: none are taken)")
    db_backup_interval: float = Field(default=3600.0, ge=60, description="seconds between database backups")
    db_backup_keep: int = Field(default=24, ge=1, le=10000, description="database backups kept (oldest go)")
    backup_schedule: bool = Field(default=True, description="run the backup policies' scheduler")
    backup_schedule_period: float = Field(
        default=60.0, ge=1, description="seconds between the backup scheduler's ticks")
    backup_schedule_max_jobs: int = Field(
        default=4, ge=1, le=1024, description="scheduled backup jobs in flight at most")
    node_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description=(
            "this controller node's id, to run several nodes on one PostgreSQL or MariaDB "
            "database (unset: a single node, as on SQLite)"))
    heartbeat_interval: float = Field(
        default=2.0, gt=0, le=60, description="seconds between a node's lease renewals")
    node_lease: float = Field(
        default=8.0, gt=0, le=600, description="seconds a node stays in the ring without renewing")
    ceph_key_dir: str | None = Field(
        default=None, description="directory of bare cephx key files, named by a Ceph primary "
        "storage's keyRef (the controller sets them as libvirt secrets on the hosts)")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("listen must be HOST:PORT")
        return v

    @model_validator(mode="after")
    def _no_auth_only_on_loopback(self) -> Self:
        if self.insecure_no_auth and not is_loopback(self.listen):
            raise ValueError(f"insecure_no_auth (--insecure-no-auth) needs a loopback listen "
                             f"address (127.0.0.1:PORT, [::1]:PORT), not {self.listen}")
        return self

    @field_validator("agent_controller_urls")
    @classmethod
    def _agent_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")) or len(url) > 255:
                raise ValueError(f"a controller URL is http(s)://HOST[:PORT][/PATH]: {url!r}")
        return [u.rstrip("/") for u in v]

    @model_validator(mode="after")
    def _cluster_needs_a_server_database(self) -> Self:
        if self.node_id is not None and self.db_url.startswith("sqlite"):
            raise ValueError("node_id (--node-id) needs a PostgreSQL or MariaDB database: "
                             "SQLite runs one controller node")
        if self.node_lease <= self.heartbeat_interval:
            raise ValueError("node_lease must be longer than heartbeat_interval")
        return self

    @property
    def callback_base(self) -> str:
        return (self.public_url or f"http://{self.listen}").rstrip("/")
