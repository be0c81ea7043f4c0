"""Membership of controller nodes in the shared database, and takeover of the dead ones.

Each node holds a row in ``controller_nodes`` and renews its lease every
``interval`` seconds; the ring is built from the rows whose lease is still
ahead, so a node that stops renewing drops out of every peer's ring within
``lease + interval`` seconds. A peer then takes the dead node over: in one
transaction it locks the node's row (``SELECT ... FOR UPDATE SKIP LOCKED``:
of several peers sweeping at once exactly one gets it, the others skip it),
marks it ``lost``, ends its unfinished jobs ``CONTROLLER_LOST`` and runs
``recover`` on what they worked on (a VM being created becomes Error...).
Commit or nothing: a job is ended once, by one node, with its resources. The database's locks are the only
arbiter; nodes never vote.

A node that finds its own row ``lost`` (it stalled past its lease and a peer
ended its jobs) is fenced: its jobs may not go on, so it must stop.

A node sweeps only once it has renewed its own lease without a failure for
``settle`` seconds (a lease, by default): after the database was out of
reach for longer than a lease, every lease looks run out, and a node sweeping
at once would take over peers that are alive and about to renew.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controller.background import Background
from controller.cluster.ring import HashRing
from controller.db.base import Database, utcnow
from controller.db.cluster import ControllerNode
from controller.db.jobs import Job

log = logging.getLogger(__name__)
UNFINISHED = ("queued", "running")


@dataclass
class Takeover:
    """What one sweep took from dead peers: their ids, their ended jobs, those jobs'
    resources, and what the recovery of those resources left to do (backups to delete)."""

    nodes: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NodeView:
    """A row of ``controller_nodes`` as ``GET /v1/cluster`` shows it."""

    node_id: str
    url: str
    state: str
    live: bool
    heartbeat: str
    lease_expiry: str
    taken_over_by: str | None


class Membership(Background):
    """This node's lease, the ring of live nodes, and the takeover of lost ones."""

    thread_name = "cluster-membership"
    join_timeout = 5.0

    def __init__(self, db: Database, node_id: str, url: str, *, lease: float = 8.0,
                 interval: float = 2.0, settle: float | None = None,
                 recover: Callable[[Session, list[str]], list[str]] = lambda s, r: [],
                 on_takeover: Callable[[Takeover], None] = lambda t: None,
                 on_fenced: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.db = db
        self.node_id = node_id
        self.url = url.rstrip("/")
        self.lease = timedelta(seconds=lease)
        self.interval = interval
        self.settle = lease if settle is None else settle
        #: since when (monotonic) every renewal succeeded; None after a failure
        self._steady_since: float | None = None
        self._recover = recover
        self._on_takeover = on_takeover
        self._on_fenced = on_fenced
        self._mu = threading.Lock()
        self.ring = HashRing([node_id])
        self.urls: dict[str, str] = {node_id: self.url}

    # -- this node's row ------------------------------------------------------

    def join(self) -> None:
        """Take (or take back, after a restart) this node's row, with a fresh lease."""
        def body(s: Session) -> None:
            now = utcnow()
            row = s.scalars(select(ControllerNode).where(ControllerNode.node_id == self.node_id)
                            .with_for_update()).one_or_none()
            if row is None:
                s.add(ControllerNode(node_id=self.node_id, url=self.url, state="up", heartbeat=now,
                                     lease_expiry=now + self.lease, joined=now))
                return
            row.url, row.state, row.heartbeat = self.url, "up", now
            row.lease_expiry, row.joined, row.taken_over_by = now + self.lease, now, None
        self.db.transaction(body)
        self.refresh()

    def renew(self) -> bool:
        """Push this node's lease ahead; False if a peer declared it lost meanwhile."""
        def body(s: Session) -> int:
            now = utcnow()
            res = s.execute(update(ControllerNode)
                            .where(ControllerNode.node_id == self.node_id, ControllerNode.state == "up")
                            .values(heartbeat=now, lease_expiry=now + self.lease))
            return int(res.rowcount)  # type: ignore[attr-defined]
        return self.db.transaction(body) == 1

    def leave(self) -> None:
        """End this node's lease now (a clean stop): its share moves at the peers' next refresh."""
        self.db.transaction(lambda s: s.execute(
            update(ControllerNode).where(ControllerNode.node_id == self.node_id,
                                         ControllerNode.state == "up")
            .values(lease_expiry=utcnow())))

    # -- the ring -------------------------------------------------------------

    def refresh(self) -> HashRing:
        """Rebuild the ring from the nodes whose lease is ahead (this one always in it)."""
        with self.db.read() as s:
            rows = s.execute(select(ControllerNode.node_id, ControllerNode.url).where(
                ControllerNode.state == "up", ControllerNode.lease_expiry > utcnow())).all()
        urls = {n: u for n, u in rows}
        urls[self.node_id] = self.url
        with self._mu:
            if set(urls) != set(self.ring.nodes):
                log.info("controller ring: %s", ", ".join(sorted(urls)))
                self.ring = HashRing(urls)
            self.urls = urls
        return self.ring

    def owner(self, key: str) -> tuple[str, str]:
        """The node owning ``key`` in this node's current ring, and its URL."""
        with self._mu:
            node = self.ring.owner(key)
            return node, self.urls[node]

    def owns(self, key: str) -> bool:
        return self.owner(key)[0] == self.node_id

    def nodes(self) -> list[NodeView]:
        """Every node the database knows, live or not."""
        now = utcnow()
        with self.db.read() as s:
            rows = s.scalars(select(ControllerNode).order_by(ControllerNode.node_id)).all()
        return [NodeView(r.node_id, r.url, r.state, r.state == "up" and r.lease_expiry > now,
                         r.heartbeat.isoformat(), r.lease_expiry.isoformat(), r.taken_over_by)
                for r in rows]

    # -- takeover -------------------------------------------------------------

    def sweep(self) -> Takeover:
        """Take over every node whose lease ran out and that no peer is taking over now."""
        def body(s: Session) -> Takeover:
            now = utcnow()
            dead = list(s.scalars(
                select(ControllerNode.node_id)
                .where(ControllerNode.state == "up", ControllerNode.lease_expiry < now,
                       ControllerNode.node_id != self.node_id)
                .with_for_update(skip_locked=True)))
            if not dead:
                return Takeover()
            s.execute(update(ControllerNode).where(ControllerNode.node_id.in_(dead))
                      .values(state="lost", taken_over_by=self.node_id))
            jobs = s.execute(select(Job.uuid, Job.resource_uuid).where(
                Job.node_id.in_(dead), Job.state.in_(UNFINISHED))).all()
            if jobs:
                s.execute(update(Job).where(Job.node_id.in_(dead), Job.state.in_(UNFINISHED)).values(
                    state="failed", last_op_date=now,
                    error={"code": "CONTROLLER_LOST",
                           "message": "the controller node running the job stopped heartbeating",
                           "details": {"nodes": dead, "takenOverBy": self.node_id}}))
            resources = sorted({r for _, r in jobs if r})
            # in the same transaction: a job never ends with its resource left Creating
            # (a sweeper dying after the commit would leave it so for good)
            backups = self._recover(s, resources) if resources else []
            return Takeover(dead, [u for u, _ in jobs], resources, backups)
        taken = self.db.transaction(body)
        if taken.nodes:
            log.warning("took over lost controller node(s) %s: %d unfinished job(s) ended",
                        ", ".join(taken.nodes), len(taken.jobs))
        return taken

    def tick(self) -> None:
        """One heartbeat: renew (or find this node fenced), refresh the ring, take over the dead."""
        if not self.renew():
            log.critical("controller node %s was declared lost by a peer: its jobs were ended; "
                         "stopping", self.node_id)
            self._stop.set()
            self._on_fenced()
            return
        now = time.monotonic()
        if self._steady_since is None:
            self._steady_since = now
        self.refresh()
        if now - self._steady_since < self.settle:
            return
        taken = self.sweep()
        if taken.nodes:
            self.refresh()
            self._on_takeover(taken)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                self._steady_since = None  # sweep again only a settle period after recovering
                log.exception("controller membership tick failed")
