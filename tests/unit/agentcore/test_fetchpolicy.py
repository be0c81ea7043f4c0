"""Where downloads may go: schemes, addresses, the local opt-in (no network: IP
literals and ``localhost`` resolve without a DNS server)."""

from __future__ import annotations

import pytest

from agentcore.fetchpolicy import UrlRefused, check_url


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://127.1.2.3:8080/x", "http://localhost/x", "http://[::1]/x",
    "http://[::ffff:127.0.0.1]/x", "http://169.254.169.254/latest/meta-data", "http://[fe80::1]/x",
    "http://0.0.0.0/x", "http://0.1.2.3/x", "http://[::]/x", "http://224.0.0.1/x",
    "http://[fd00:ec2::254]/x", "http://100.100.100.200/x",
])
def test_the_host_itself_link_local_and_metadata_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url, allow_local=False)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://10.0.0.1/x", "ftp://10.0.0.1/x",
                                 "http://user:pw@10.0.0.1/x", "http:///x", "http://10.0.0.1:99999/x"])
def test_other_schemes_credentials_and_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url, allow_local=True)


def test_remote_and_private_networks_are_allowed() -> None:
    d = check_url("https://10.1.2.3/img.qcow2", allow_local=False)
    assert (d.scheme, d.host, d.port, d.addresses) == ("https", "10.1.2.3", 443, ("10.1.2.3",))
    assert check_url("http://[2001:db8::5]:8080/x", allow_local=False).port == 8080
    assert check_url("HTTP://192.0.2.7/x", allow_local=False).scheme == "http"


def test_allow_local_lets_a_lab_use_its_own_host() -> None:
    assert check_url("http://127.0.0.1:8000/x", allow_local=True).addresses == ("127.0.0.1",)
