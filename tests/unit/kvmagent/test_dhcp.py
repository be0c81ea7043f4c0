"""dnsmasq configuration and lease files of the flat-network DHCP."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcore.errors import NotFound
from kvmagent.dhcp import DhcpNames, DhcpServers, RunAs, dnsmasq_conf, hosts_file, parse_hosts_file
from kvmagent.models import DhcpAddCmd, DhcpApplyCmd, DhcpLease

L3 = "7a1c2e3f-4b5d-4e6f-8a9b-0c1d2e3f4a5b"


def apply_cmd(**extra: object) -> DhcpApplyCmd:
    return DhcpApplyCmd.model_validate({
        "l3NetworkUuid": L3, "bridgeName": "br_flat", "serverIp": "10.20.0.2", "prefixLength": 24,
        "gateway": "10.20.0.1", "dnsDomain": "cloud.local",
        "leases": [{"mac": "52:54:00:00:00:02", "ip": "10.20.0.11", "hostname": "vm2"},
                   {"mac": "52:54:00:00:00:01", "ip": "10.20.0.10"}],
        **extra,
    })


def test_names_fit_linux_interface_names() -> None:
    n = DhcpNames.of(L3)
    assert len(n.outer) <= 15 and len(n.inner) <= 15 and n.outer != n.inner
    assert n.namespace == "kvmcloud-dhcp-7a1c2e3f4b5d"
    tagged = DhcpNames.of(L3, "b2")  # a second agent on the same kernel
    assert tagged.namespace == "kvmcloud-dhcp-b27a1c2e3f4b5d" and len(tagged.outer) == len(n.outer)
    assert {tagged.outer, tagged.inner}.isdisjoint({n.outer, n.inner})


def test_hosts_file_is_sorted_and_round_trips() -> None:
    leases = apply_cmd().leases
    text = hosts_file(leases)
    assert text == "52:54:00:00:00:01,10.20.0.10\n52:54:00:00:00:02,10.20.0.11,vm2\n"
    assert sorted(parse_hosts_file(text), key=lambda x: x.mac) == sorted(leases, key=lambda x: x.mac)


RUN_AS = RunAs(user="dnsmasq", group="nogroup", gid=65534)


def conf_lines(tmp_path: Path) -> list[str]:
    return dnsmasq_conf(apply_cmd(), DhcpNames.of(L3), tmp_path, hosts=tmp_path / "h" / "n.hosts",
                        run_as=RUN_AS).splitlines()


def test_conf_serves_only_static_leases_in_the_namespace_interface(tmp_path: Path) -> None:
    conf = conf_lines(tmp_path)
    assert f"interface={DhcpNames.of(L3).inner}" in conf
    assert "dhcp-range=set:7a1c2e3f,10.20.0.0,static,255.255.255.0,3600" in conf
    assert "dhcp-ignore=tag:!known" in conf
    assert "dhcp-option=option:router,10.20.0.1" in conf
    assert "dhcp-option=option:dns-server,10.20.0.2" in conf
    assert f"dhcp-hostsfile={tmp_path / 'h' / 'n.hosts'}" in conf
    assert f"pid-file={tmp_path / 'dnsmasq.pid'}" in conf


def test_dnsmasq_drops_root_and_does_not_log_every_dhcp_packet(tmp_path: Path) -> None:
    conf = conf_lines(tmp_path)
    assert "user=dnsmasq" in conf and "group=nogroup" in conf
    assert not [line for line in conf if line.startswith("user=root")]
    # a guest sending DHCP requests in a loop would grow the log without bound
    assert "quiet-dhcp" in conf and "log-dhcp" not in conf


def test_a_missing_user_falls_back_to_nobody() -> None:
    assert RunAs.of("no-such-user-kvmcloud").user == "nobody"


def test_a_lease_outside_the_network_is_refused() -> None:
    with pytest.raises(ValueError, match=r"leases\[0\]"):
        apply_cmd(leases=[{"mac": "52:54:00:00:00:01", "ip": "10.30.0.10"}])


def test_the_network_check_holds_at_its_edges_and_again_for_a_seen_address() -> None:
    edges = [{"mac": "52:54:00:00:00:01", "ip": "10.20.0.0"},
             {"mac": "52:54:00:00:00:02", "ip": "10.20.0.255"}]
    assert [lease.ip for lease in apply_cmd(leases=edges).leases] == ["10.20.0.0", "10.20.0.255"]
    for _ in range(2):  # the address checks are cached: a refusal is not
        with pytest.raises(ValueError, match=r"leases\[0\]"):
            apply_cmd(leases=[{"mac": "52:54:00:00:00:01", "ip": "10.20.1.0"}])
        with pytest.raises(ValueError, match="ip"):
            apply_cmd(leases=[{"mac": "52:54:00:00:00:01", "ip": "10.20.0.256"}])


def test_a_mac_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        apply_cmd(leases=[{"mac": "52:54:00:00:00:01", "ip": "10.20.0.10"},
                          {"mac": "52:54:00:00:00:01", "ip": "10.20.0.11"}])


def test_lease_macs_are_normalised_to_lower_case() -> None:
    assert DhcpLease(mac="52:54:00:AB:CD:EF", ip="10.0.0.1").mac == "52:54:00:ab:cd:ef"


def add_cmd(*leases: tuple[str, str]) -> DhcpAddCmd:
    return DhcpAddCmd.model_validate({"l3NetworkUuid": L3, "leases": [
        {"mac": mac, "ip": ip} for mac, ip in leases]})


@pytest.mark.parametrize("leases", [
    [("52:54:00:00:00:01", "10.20.0.10"), ("52:54:00:00:00:01", "10.20.0.11")],
    [("52:54:00:00:00:01", "10.20.0.10"), ("52:54:00:00:00:02", "10.20.0.10")],
    [],
])
def test_an_add_refuses_a_mac_or_address_twice_and_nothing(leases: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match=r"twice|at least 1"):
        add_cmd(*leases)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[DhcpServers, Path]]:
    """A DHCP server's files with a stand-in for dnsmasq (a process running its config,
    which notes each SIGHUP in a file)."""
    servers = DhcpServers(tmp_path / "state", "dnsmasq", lambda argv: None,
                          hosts_dir=tmp_path / "hosts")
    names = servers.names(L3)
    wd = servers.workdir(names)
    wd.mkdir(parents=True)
    hosts_dir = tmp_path / "hosts"
    hosts_dir.mkdir()
    servers.hosts(names).write_text(hosts_file(apply_cmd().leases))
    hups = tmp_path / "hups"
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGHUP, lambda *a: open(sys.argv[1], 'a').write('hup\\n'))\n"
            "open(sys.argv[1], 'w').close()\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(hups), f"--conf-file={wd / 'dnsmasq.conf'}"])
    (wd / "dnsmasq.pid").write_text(f"{proc.pid}\n")
    for _ in range(500):  # until it runs the interpreter (and has its SIGHUP handler)
        if f"--conf-file={wd}".encode() in Path(f"/proc/{proc.pid}/cmdline").read_bytes() and \
                hups.exists():
            break
        time.sleep(0.01)
    yield servers, hups
    proc.kill()
    proc.wait()


def _hups(hups: Path) -> int:
    for _ in range(500):  # the signal is delivered asynchronously
        if hups.read_text():
            break
        time.sleep(0.01)
    return len(hups.read_text().splitlines())


def test_an_add_appends_to_the_hosts_file_and_rereads_it(served: tuple[DhcpServers, Path]) -> None:
    servers, hups = served
    path = servers.hosts(servers.names(L3))
    before = path.read_text()
    assert servers.add(L3, add_cmd(("52:54:00:00:00:03", "10.20.0.12")).leases) == 3
    assert path.read_text() == before + "52:54:00:00:00:03,10.20.0.12\n"
    assert _hups(hups) == 1


def test_an_add_replaces_a_lease_of_the_same_mac_or_address(served: tuple[DhcpServers, Path]) -> None:
    servers, _ = served
    # 00:01 had 10.20.0.10, 00:02 had 10.20.0.11 (vm2)
    left = servers.add(L3, add_cmd(("52:54:00:00:00:01", "10.20.0.20"),
                                   ("52:54:00:00:00:09", "10.20.0.11")).leases)
    text = servers.hosts(servers.names(L3)).read_text()
    assert left == 2
    assert text == "52:54:00:00:00:01,10.20.0.20\n52:54:00:00:00:09,10.20.0.11\n"


def test_an_add_without_a_running_server_is_not_found(tmp_path: Path) -> None:
    servers = DhcpServers(tmp_path / "state", "dnsmasq", lambda argv: None,
                          hosts_dir=tmp_path / "hosts")
    with pytest.raises(NotFound):
        servers.add(L3, add_cmd(("52:54:00:00:00:03", "10.20.0.12")).leases)
