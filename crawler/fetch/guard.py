"""Which network addresses the crawler may connect to (no SSRF by default).

Pages and images are written by strangers; a link to ``http://169.254.169.254/``
or ``http://10.0.0.1/admin`` must not make our machines fetch it. The check is
made on the address actually connected to, after DNS resolution, for every
connection — so it holds on every redirect too.

By default public addresses are allowed, and a non-public *kind* of address
(loopback, private, ...) only when a seed URL itself resolves to that kind: a
crawl of ``http://127.0.0.1:8000/`` may fetch loopback images, a crawl of a
public site may not. An explicit list of networks replaces that default.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import NamedTuple
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services: refused unless a network the user listed contains them.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254",
))


class BlockedAddress(Exception):
    """A URL resolved to an address this crawl may not connect to."""

    def __init__(self, host: str, address: str, kind: str) -> None:
        super().__init__(f"refused to connect to {host} ({address}): {kind} address not allowed "
                         "(see security.allow_networks)")
        self.host = host
        self.address = address
        self.kind = kind


# RFC 6052's NAT64 prefix: an IPv6-only host's DNS64 gives every IPv4-only site one of
# these, and its gateway connects to the IPv4 address in the last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _carried_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one leads to (mapped, 6to4, NAT64), else itself.

    A 6to4 relay delivers ``2002:a9fe:a9fe::1`` to 169.254.169.254: judged by its
    IPv6 prefix alone it passed for public.
    """
    if isinstance(address, ipaddress.IPv6Address):
        carried = address.ipv4_mapped or address.sixtofour
        if carried is not None:
            return carried
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def kind_of(address: IPAddress) -> str:
    address = _carried_ipv4(address)
    if address in METADATA_ADDRESSES:
        return "metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    # 100.64.0.0/10 (carrier-grade NAT) is neither private nor global in ipaddress.
    if address.is_private or address in ipaddress.ip_network("100.64.0.0/10"):
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return "public"


class AddressPolicy(NamedTuple):
    """Allowed address kinds, or (when ``networks`` is set) exactly the listed networks + public."""

    kinds: frozenset[str] = frozenset({"public"})
    networks: tuple[str, ...] = ()

    @classmethod
    def from_seeds(cls, seeds: Iterable[str], networks: Sequence[str] = ()) -> AddressPolicy:
        if networks:
            return cls(frozenset({"public"}), tuple(networks))
        kinds = {"public"}
        for seed in seeds:
            host = urlsplit(seed).hostname
            if host:
                kinds.update(kind_of(a) for a in _resolve_quietly(host))
        kinds.discard("metadata")  # a seed on a metadata address must be listed explicitly
        return cls(frozenset(kinds))

    def refusal(self, address: IPAddress) -> str | None:
        """The kind of ``address`` if it is refused, else None."""
        kind = kind_of(address)
        if self.networks:
            # The address, or the IPv4 one it leads to (as kind_of judges it): a listed
            # 10.0.0.0/8 lets 64:ff9b::a00:1 through, as README says.
            carried = _carried_ipv4(address)
            if any(candidate in ipaddress.ip_network(n, strict=False)
                   for n in self.networks for candidate in {address, carried}):
                return None
            return None if kind == "public" else kind
        return None if kind in self.kinds else kind

    def to_wire(self) -> dict[str, list[str]]:
        return {"kinds": sorted(self.kinds), "networks": list(self.networks)}

    @classmethod
    def from_wire(cls, data: dict[str, list[str]]) -> AddressPolicy:
        return cls(frozenset(data["kinds"]), tuple(data["networks"]))


# What libcurl answers "localhost" and any "*.localhost" with, fully qualified or not,
# without asking the resolver (RFC 6761): the C library knows the first alone, from its
# hosts file, and a seed on "app.localhost" found no address, so its loopback images and
# pages were refused as if no seed were there.
_LOCALHOST = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


def _resolve_quietly(host: str) -> list[IPAddress]:
    bare = host.rstrip(".").lower()
    if bare == "localhost" or bare.endswith(".localhost"):
        return list(_LOCALHOST)
    # An ASCII name as bytes: as text, Python first imports its IDNA codec (2-3 ms of
    # a master's start), which a URL's host name, in punycode already, does not need.
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return []
    # An IPv4 or IPv6 sockaddr starts with the address as text (typeshed allows others).
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
