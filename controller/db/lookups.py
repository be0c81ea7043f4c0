"""Network rows the create-VM path reads for every VM, cached per controller.

Only what never changes once written is kept: an L3 network's L2 network (its
type, interface and VLAN, from which the bridge is named) and an L3 network
once its DHCP server address is set (the API changes neither; only names and
descriptions can be patched, and no command reads those). Entries are
detached copies, safe to share between threads; UUIDs are never reused, so a
deleted network's entry is merely never asked for again.
"""

from __future__ import annotations

import threading

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from controller.db.base import detached
from controller.db.models import L2Network, L3Network

L2S: Table = L2Network.__table__  # type: ignore[assignment]
L3S: Table = L3Network.__table__  # type: ignore[assignment]


class NetworkLookups:
    """Immutable network rows by L3 network UUID."""

    def __init__(self) -> None:
        self._l2_of_l3: dict[str, L2Network] = {}
        self._l3: dict[str, L3Network] = {}
        self._mu = threading.Lock()

    def l2s(self, s: Session, l3_uuids: list[str]) -> dict[str, L2Network]:
        """L3 UUID → its L2 network, for those of ``l3_uuids`` that exist."""
        with self._mu:
            out = {u: self._l2_of_l3[u] for u in l3_uuids if u in self._l2_of_l3}
        missing = [u for u in l3_uuids if u not in out]
        if missing:
            rows = s.execute(select(L3S.c.uuid.label("l3_uuid"), *L2S.c).join(
                L2S, L2S.c.uuid == L3S.c.l2_network_uuid).where(L3S.c.uuid.in_(missing)))
            found = {r.l3_uuid: detached(L2Network, L2S, r) for r in rows}
            with self._mu:
                self._l2_of_l3.update(found)
            out.update(found)
        return out

    def l3(self, s: Session, l3_uuid: str) -> L3Network | None:
        """The L3 network; cached once its DHCP server address is set (it then never changes)."""
        with self._mu:
            l3 = self._l3.get(l3_uuid)
        if l3 is not None:
            return l3
        row = s.execute(select(*L3S.c).where(L3S.c.uuid == l3_uuid)).first()
        if row is None:
            return None
        l3 = detached(L3Network, L3S, row)
        if l3.dhcp_server_ip is not None:
            with self._mu:
                self._l3[l3_uuid] = l3
        return l3
