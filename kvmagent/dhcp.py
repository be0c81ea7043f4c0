"""Flat-network DHCP and DNS: one dnsmasq per L3 network per host.

As ZStack's flat network provider does, dnsmasq runs in a network namespace
of its own, plugged into the L3 network's bridge with a veth pair, and hands
out only static leases (``dhcp-host``) from the controller's IP allocation, so
a VM gets exactly the address the controller chose. The lease set is a
hosts file dnsmasq rereads on SIGHUP: the controller sends the full set once, then
adds each VM's lease alone (appended). dnsmasq is a daemon of its own, so an
agent restart neither stops it nor forgets it.

dnsmasq faces guest traffic, so it drops root for an unprivileged user
(``dnsmasq``, else ``nobody``) once it has opened its config, pid, lease and
log files, which stay in the agent's private state directory. It rereads the
hosts file as that user, so the hosts files live apart, in a directory only
dnsmasq's group may read (``/run/kvmcloud/dhcp`` by default).
"""

from __future__ import annotations

import grp
import ipaddress
import logging
import os
import pwd
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, netns

from agentcore.errors import AgentError, NotFound
from kvmagent.models import DhcpApplyCmd, DhcpLease

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[str]], object]  # runs an argv with a timeout, raises on failure
NETNS_DIR = Path("/run/netns")


class DhcpFailed(AgentError):
    code = "DHCP_FAILED"
    default_message = "the DHCP server could not be set up"


@dataclass(frozen=True)
class DhcpNames:
    """Names of one L3 network's DHCP plumbing (interface names <= 15 chars)."""

    key: str
    namespace: str
    outer: str
    inner: str

    @classmethod
    def of(cls, l3_uuid: str, tag: str = "") -> DhcpNames:
        key = l3_uuid.replace("-", "").lower()
        short = tag + key[:9 - len(tag)]
        return cls(key=key, namespace=f"kvmcloud-dhcp-{tag}{key[:12]}", outer=f"kd{short}o",
                   inner=f"kd{short}i")


def hosts_file(leases: list[DhcpLease]) -> str:
    """dnsmasq ``dhcp-hostsfile`` lines: ``mac,ip[,hostname]``, sorted by MAC."""
    lines = []
    for lease in sorted(leases, key=lambda x: x.mac):
        lines.append(",".join([lease.mac, lease.ip, *([lease.hostname] if lease.hostname else [])]))
    return "\n".join(lines) + ("\n" if lines else "")


def parse_hosts_file(text: str) -> list[DhcpLease]:
    out = []
    for line in text.splitlines():
        parts = line.strip().split(",")
        if len(parts) >= 2:
            out.append(DhcpLease(mac=parts[0], ip=parts[1], hostname=parts[2] if len(parts) > 2 else None))
    return out


@dataclass(frozen=True)
class RunAs:
    """The user and group dnsmasq drops to."""

    user: str
    group: str
    gid: int

    @classmethod
    def of(cls, user: str) -> RunAs:
        """``user`` with its primary group, or ``nobody`` when there is no such user."""
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            log.warning("no user %r for dnsmasq: it runs as nobody", user)
            pw = pwd.getpwnam("nobody")
        return cls(user=pw.pw_name, group=grp.getgrgid(pw.pw_gid).gr_name, gid=pw.pw_gid)


def dnsmasq_conf(cmd: DhcpApplyCmd, names: DhcpNames, workdir: Path, *, hosts: Path, run_as: RunAs) -> str:
    """The dnsmasq config of one L3 network (everything but the leases, which are in ``hosts``)."""
    net = ipaddress.IPv4Interface(f"{cmd.server_ip}/{cmd.prefix_length}").network
    dns = cmd.dns_servers or [cmd.server_ip]
    lines = [
        f"interface={names.inner}",
        "bind-interfaces",
        "except-interface=lo",
        f"user={run_as.user}",
        f"group={run_as.group}",
        "no-resolv",
        "no-hosts",
        "no-ping",
        "dhcp-authoritative",
        "dhcp-ignore=tag:!known",  # only the controller's static leases
        f"dhcp-range=set:{names.key[:8]},{net.network_address},static,{net.netmask},{cmd.lease_time}",
        f"dhcp-hostsfile={hosts}",
        f"dhcp-leasefile={workdir / 'leases'}",
        f"pid-file={workdir / 'dnsmasq.pid'}",
        f"log-facility={workdir / 'dnsmasq.log'}",
        "quiet-dhcp",  # no line per DHCP packet: a guest sending DHCP in a loop cannot grow the log
        f"dhcp-option=option:dns-server,{','.join(dns)}",
    ]
    if cmd.gateway:
        lines.append(f"dhcp-option=option:router,{cmd.gateway}")
    else:
        lines.append("dhcp-option=option:router")  # no default route
    if cmd.dns_domain:
        lines += [f"domain={cmd.dns_domain}", f"dhcp-option=option:domain-name,{cmd.dns_domain}"]
    return "\n".join(lines) + "\n"


def _alive(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process is a dnsmasq running ``marker``."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if marker.encode() in cmdline else None


def _strays(marker: str, keep: int | None) -> list[int]:
    """dnsmasq processes running ``marker`` (the network's config file) other than ``keep``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == keep:
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"dnsmasq") and f"--conf-file={marker}".encode() in argv:
            found.append(int(proc.name))
    return found


class DhcpServers:
    """The dnsmasq instances of this host, one per L3 network."""

    def __init__(self, state_dir: Path, dnsmasq: str, run: Runner, tag: str = "", *,
                 user: str = "dnsmasq", hosts_dir: Path = Path("/run/kvmcloud/dhcp")) -> None:
        self.root = state_dir / "dhcp"
        self.dnsmasq = dnsmasq
        self.run = run
        self.tag = tag
        self.run_as = RunAs.of(user)
        self.hosts_dir = hosts_dir

    def names(self, l3_uuid: str) -> DhcpNames:
        return DhcpNames.of(l3_uuid, self.tag)

    def workdir(self, names: DhcpNames) -> Path:
        return self.root / names.key

    def hosts(self, names: DhcpNames) -> Path:
        """The network's hosts file (named by its namespace, which carries the agent's tag)."""
        return self.hosts_dir / f"{names.namespace}.hosts"

    def _make_hosts_dir(self) -> None:
        # root:<dnsmasq's group> 0750: dnsmasq reads the lease sets, other users do not
        self.hosts_dir.parent.mkdir(parents=True, exist_ok=True)
        self.hosts_dir.mkdir(exist_ok=True)
        os.chown(self.hosts_dir, 0, self.run_as.gid)
        self.hosts_dir.chmod(0o750)

    def pid(self, l3_uuid: str) -> int | None:
        names = self.names(l3_uuid)
        wd = self.workdir(names)
        return _alive(wd / "dnsmasq.pid", str(wd / "dnsmasq.conf"))

    def apply(self, cmd: DhcpApplyCmd) -> tuple[DhcpNames, int]:
        """Make the network's DHCP server exist and serve exactly ``cmd.leases``."""
        names = self.names(cmd.l3_network_uuid)
        wd = self.workdir(names)
        wd.mkdir(parents=True, exist_ok=True)
        self._make_hosts_dir()
        self._plumb(cmd, names)
        conf = dnsmasq_conf(cmd, names, wd, hosts=self.hosts(names), run_as=self.run_as)
        conf_file = wd / "dnsmasq.conf"
        _write(self.hosts(names), hosts_file(cmd.leases))
        changed = not conf_file.exists() or conf_file.read_text() != conf
        if changed:
            _write(conf_file, conf)
        pid = _alive(wd / "dnsmasq.pid", str(conf_file))
        for stray in _strays(str(conf_file), keep=pid):  # serving a namespace that is gone
            log.warning("stopping dnsmasq %d of %s: it lost its pid file", stray, names.namespace)
            _stop(stray)
        if pid is not None and changed:
            _stop(pid)
            pid = None
        if pid is None:
            self.run(["ip", "netns", "exec", names.namespace, self.dnsmasq, f"--conf-file={conf_file}"])
            pid = _alive(wd / "dnsmasq.pid", str(conf_file))
            if pid is None:
                raise DhcpFailed("dnsmasq did not start", log=_tail(wd / "dnsmasq.log"))
        else:
            os.kill(pid, signal.SIGHUP)  # reread the hosts file
        return names, pid

    def release(self, l3_uuid: str, macs: list[str]) -> int:
        """Drop leases by MAC; returns how many leases remain."""
        names = self.names(l3_uuid)
        wd = self.workdir(names)
        hosts = self.hosts(names)
        if not hosts.exists():
            raise NotFound("no DHCP server for this L3 network on this host", l3_network_uuid=l3_uuid)
        gone = {m.lower() for m in macs}
        keep = [lease for lease in parse_hosts_file(hosts.read_text()) if lease.mac not in gone]
        _write(hosts, hosts_file(keep))
        pid = _alive(wd / "dnsmasq.pid", str(wd / "dnsmasq.conf"))
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
        return len(keep)

    def add(self, l3_uuid: str, leases: list[DhcpLease]) -> int:
        """Add leases to the running server (one of the same MAC or address is replaced);
        returns how many leases it serves. Appends to the hosts file when nothing is
        replaced, so a host's cost per VM does not grow with its VMs."""
        names = self.names(l3_uuid)
        wd = self.workdir(names)
        hosts = self.hosts(names)
        pid = _alive(wd / "dnsmasq.pid", str(wd / "dnsmasq.conf"))
        if pid is None or not hosts.exists():
            raise NotFound("no DHCP server for this L3 network on this host", l3_network_uuid=l3_uuid)
        have = parse_hosts_file(hosts.read_text())
        macs, ips = {lease.mac for lease in leases}, {lease.ip for lease in leases}
        keep = [lease for lease in have if lease.mac not in macs and lease.ip not in ips]
        if len(keep) == len(have):
            with open(hosts, "a") as f:
                f.write(hosts_file(leases))
        else:
            _write(hosts, hosts_file(keep + leases))
        os.kill(pid, signal.SIGHUP)  # reread the hosts file
        return len(keep) + len(leases)

    def delete(self, l3_uuid: str) -> None:
        """Stop the network's dnsmasq and remove its namespace, veth and files."""
        names = self.names(l3_uuid)
        wd = self.workdir(names)
        pid = _alive(wd / "dnsmasq.pid", str(wd / "dnsmasq.conf"))
        for each in ([pid] if pid is not None else []) + _strays(str(wd / "dnsmasq.conf"), keep=pid):
            _stop(each)
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=names.outer)
            if idx:
                ipr.link("del", index=idx[0])
        if (NETNS_DIR / names.namespace).exists():
            netns.remove(names.namespace)
        shutil.rmtree(wd, ignore_errors=True)
        self.hosts(names).unlink(missing_ok=True)

    def _plumb(self, cmd: DhcpApplyCmd, names: DhcpNames) -> None:
        """Namespace, veth into it, the server address, the outer end on the bridge."""
        if not (NETNS_DIR / names.namespace).exists():
            netns.create(names.namespace)
        with IPRoute() as ipr:
            bridge = ipr.link_lookup(ifname=cmd.bridge_name)
            if not bridge:
                raise NotFound("no such bridge", field="bridgeName", bridge_name=cmd.bridge_name)
            with IPRoute(netns=names.namespace) as inner:
                inside = inner.link_lookup(ifname=names.inner)
            outside = ipr.link_lookup(ifname=names.outer)
            if outside and not inside:
                # its peer is in another namespace of that name, removed from under a running
                # dnsmasq (a host's clean-up that missed the process): a new pair
                ipr.link("del", index=outside[0])
                outside = []
            if not outside:
                if inside:
                    with IPRoute(netns=names.namespace) as inner:
                        inner.link("del", index=inside[0])
                ipr.link("add", ifname=names.outer, kind="veth", peer=names.inner)
                ipr.link("set", index=ipr.link_lookup(ifname=names.inner)[0], net_ns_fd=names.namespace)
            outer = ipr.link_lookup(ifname=names.outer)[0]
            ipr.link("set", index=outer, master=bridge[0], state="up")
        with IPRoute(netns=names.namespace) as ipr:
            idx = ipr.link_lookup(ifname=names.inner)[0]
            want = (cmd.server_ip, cmd.prefix_length)
            have = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=2)]
            if have != [want]:
                for addr, plen in have:
                    ipr.addr("del", index=idx, address=addr, prefixlen=plen)
                ipr.addr("add", index=idx, address=cmd.server_ip, prefixlen=cmd.prefix_length)
            ipr.link("set", index=idx, state="up")
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)  # whatever the umask: dnsmasq reads the hosts file as its own user
    os.replace(tmp, path)


def _stop(pid: int, grace: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text()[-n:]
    except OSError:
        return ""
