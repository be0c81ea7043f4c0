"""Where an agent may download an image from.

Image URLs come from API users, and the agents run as root on hosts that reach
the host's own loopback services (agent APIs, a Ceph mgr) and, on cloud-hosted
underlays, the instance metadata service. A download therefore goes only to an
``http``/``https`` URL whose every address lies outside loopback, link-local
(169.254.0.0/16 with the metadata service, fe80::/10), "this network"
(0.0.0.0/8), multicast and reserved ranges and the known metadata addresses.
The check runs after DNS resolution and again on every redirect, and the caller
connects to an address it checked (no second resolution to rebind).

``allow_local`` (the agents' ``download_allow_local`` option, off by default)
lifts the address rule for single-host labs and tests whose image server runs
on 127.0.0.1. Private (RFC 1918) networks stay reachable: a private cloud's
image mirror usually lives on one.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass

from agentcore.errors import InvalidRequest

SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
#: metadata services outside link-local (AWS over IPv6, Alibaba Cloud)
_METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(InvalidRequest):
    """The URL (or a redirect) leads where an agent must not download from."""

    code = "URL_REFUSED"
    default_message = "the URL is not an allowed download source"


@dataclass(frozen=True)
class Destination:
    """A checked URL: its scheme, host (as written, without brackets), port and
    the addresses the host resolved to, every one of them allowed."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def is_local(addr: IPAddress) -> bool:
    """Whether ``addr`` is the host itself, its link or otherwise not a remote server."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return (addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast
            or addr.is_reserved or addr in _METADATA
            or (isinstance(addr, ipaddress.IPv4Address) and addr in _THIS_NETWORK))


def check_url(url: str, allow_local: bool) -> Destination:
    """``url`` resolved and checked; raises :class:`UrlRefused` (``OSError`` when
    the host name does not resolve)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UrlRefused("only http and https URLs are allowed", scheme=scheme)
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("credentials in the URL are not allowed")
    host = parts.hostname
    if not host:
        raise UrlRefused("the URL has no host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise UrlRefused("the URL's port is not valid") from None
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    for a in addresses:
        check_address(a, allow_local, host)
    return Destination(url, scheme, host, port, addresses)


def check_address(address: str, allow_local: bool, host: str = "") -> None:
    """Raises :class:`UrlRefused` unless an agent may connect to ``address``."""
    if allow_local:
        return
    addr = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if is_local(addr):
        raise UrlRefused("the URL leads to a loopback, link-local or metadata address",
                         host=host or address)
