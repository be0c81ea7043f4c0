"""Host facts parsing and the KVM/TCG choice."""

from __future__ import annotations

from pathlib import Path

from kvmagent.facts import choose_domain_type, cpu_info, hardware_virtualization, meminfo, version_string


def test_cpu_info_reads_model_flags_count_and_sockets(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: Test CPU\nphysical id\t: 0\nflags\t\t: fpu vmx sse2\n\n"
        "processor\t: 1\nmodel name\t: Test CPU\nphysical id\t: 1\nflags\t\t: fpu vmx sse2\n")
    assert cpu_info(tmp_path) == ("Test CPU", ["fpu", "vmx", "sse2"], 2, 2)


def test_meminfo_is_in_bytes(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal:       1024 kB\nMemAvailable:    512 kB\nHugePages_Total: 0\n")
    assert meminfo(tmp_path) == {"MemTotal": 1 << 20, "MemAvailable": 512 << 10, "HugePages_Total": 0}


def test_kvm_needs_vmx_or_svm_and_a_usable_dev_kvm(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    assert not hardware_virtualization(["vmx"], dev)  # no /dev/kvm
    dev.write_text("")
    assert hardware_virtualization(["vmx"], dev)
    assert not hardware_virtualization(["hypervisor"], dev)  # a /dev/kvm without VT-x (PVM) does not count


def test_a_configured_domain_type_wins_over_the_probe() -> None:
    assert choose_domain_type("qemu", ["vmx"]) == "qemu"
    assert choose_domain_type("kvm", []) == "kvm"
    assert choose_domain_type("auto", ["sse2"]) == "qemu"


def test_version_string_unpacks_libvirt_versions() -> None:
    assert version_string(9000000) == "9.0.0"
    assert version_string(7002011) == "7.2.11"
