"""The OpenSSH sftp command line: strict host keys, our key only, quoted batch paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftpbackup.sftpcli import SftpTarget, quote, sftp_argv


def test_argv_checks_host_keys_and_uses_only_the_configured_key() -> None:
    argv = sftp_argv(SftpTarget("10.0.0.2", 2222, "bs", "/store"), Path("/k/id"), Path("/k/known"), Path("/b"))
    joined = " ".join(argv)
    assert argv[0] == "sftp"
    assert "StrictHostKeyChecking=yes" in joined
    assert "StrictHostKeyChecking=no" not in joined
    assert "UserKnownHostsFile=/k/known" in joined
    assert "IdentityFile=/k/id" in joined and "IdentitiesOnly=yes" in joined
    assert "BatchMode=yes" in joined
    assert argv[-1] == "bs@10.0.0.2"
    assert argv[argv.index("-P") + 1] == "2222"


def test_target_paths() -> None:
    assert SftpTarget("h", 22, "u", "/").path("chunks/ab/x") == "/chunks/ab/x"
    assert SftpTarget("h", 22, "u", "/bs/").path("manifests/a.json") == "/bs/manifests/a.json"


def test_quote() -> None:
    assert quote("/a b/c") == '"/a b/c"'
    for bad in ('/a"b', "/a\\b", "/a\nb", ""):
        with pytest.raises(ValueError):
            quote(bad)


def test_argv_offers_aes_gcm_first_with_fallbacks() -> None:
    argv = sftp_argv(SftpTarget("h", 22, "u", "/"), Path("/k/id"), Path("/k/known"), Path("/b"))
    ciphers = next(a for a in argv if a.startswith("Ciphers=")).removeprefix("Ciphers=").split(",")
    assert ciphers[0] == "aes128-gcm@openssh.com"
    assert "chacha20-poly1305@openssh.com" in ciphers
