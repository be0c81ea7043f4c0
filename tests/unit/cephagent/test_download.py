"""Format detection and the helpers of the RBD writer."""

from __future__ import annotations

import struct

import pytest

from agentcore.errors import InvalidRequest
from cephagent.download import detect_format
from cephagent.errors import UnsupportedImage
from cephagent.rbdio import BLOCK, is_zero
from cephagent.rbdstore import feature_bits, feature_names


def test_detect_format() -> None:
    assert detect_format(b"QFI\xfb\x00\x00\x00\x03" + bytes(100)) == "qcow2"
    assert detect_format(bytes(512)) == "raw"
    assert detect_format(b"\xeb\x63\x90" + bytes(509)) == "raw"  # a boot sector
    assert detect_format(b"") == "raw"
    for magic, name in ((b"KDMV", "vmdk"), (b"vhdxfile", "vhdx"), (b"QED\x00", "qed"), (b"conectix", "vpc")):
        with pytest.raises(UnsupportedImage) as e:
            detect_format(magic + bytes(100))
        assert e.value.details["format"] == name


def test_a_qcow2_with_an_external_data_file_is_refused() -> None:
    """qcow2 v3 incompatible feature bit 2 (offset 72): the data lives in a file the
    header names, which the root ``qemu-img convert`` would read."""
    v3 = b"QFI\xfb\x00\x00\x00\x03" + bytes(64)
    assert detect_format(v3 + struct.pack(">Q", 0) + bytes(32)) == "qcow2"
    with pytest.raises(UnsupportedImage):
        detect_format(v3 + struct.pack(">Q", 1 << 2) + bytes(32))
    with pytest.raises(UnsupportedImage):
        detect_format(v3[:40])  # a v3 header too short to say
    assert detect_format(b"QFI\xfb\x00\x00\x00\x02" + bytes(40)) == "qcow2"  # v2 has no data file


def test_is_zero() -> None:
    assert is_zero(bytes(BLOCK)) and is_zero(bytes(10)) and is_zero(b"")
    assert not is_zero(bytes(BLOCK - 1) + b"\x01")
    assert not is_zero(b"\x00\x01")


def test_features() -> None:
    bits = feature_bits(["layering", "exclusive-lock", "object-map", "fast-diff"])
    assert feature_names(bits) == ["layering", "exclusive-lock", "object-map", "fast-diff"]
    with pytest.raises(InvalidRequest):
        feature_bits(["layering", "object-map"])
    with pytest.raises(InvalidRequest):
        feature_bits(["exclusive-lock", "fast-diff"])
