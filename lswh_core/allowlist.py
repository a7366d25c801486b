"""The syntax of LSWH_S3_ALLOWED_HOSTS: `[scheme://]host-glob[:port]` entries, parsed once.

Settings parse it at start (a mistake stops `lswh ingress`/`lswh worker` with exit 2) and the
workers match presigned URLs against the very rules this returns, so what start-up accepts is
exactly what the worker enforces.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

SCHEMES = ("http", "https")
# DNS labels plus the two glob characters fnmatch gives meaning to that a hostname cannot hold.
# `[` is left out: fnmatch would read it as a character class, and IPv6 literals use brackets.
_HOST_GLOB = re.compile(r"[a-z0-9*?_-]+(\.[a-z0-9*?_-]+)*\.?")


class AllowListError(ValueError):
    """An entry that cannot be an allowed host; the text names the entry."""


@dataclass(frozen=True)
class HostRule:
    scheme: str  # "https" unless the entry names http://
    host: str  # lower-case, may hold * and ? globs; IPv6 without brackets
    port: int | None

    @property
    def exact(self) -> bool:
        return "*" not in self.host and "?" not in self.host


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65_536:
        raise AllowListError(f"{entry!r}: port must be a number from 1 to 65535, got {text!r}")
    return int(text)


def parse_rule(entry: str) -> HostRule:
    rest = entry.strip().lower()
    scheme = "https"
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme not in SCHEMES:
            raise AllowListError(f"{entry!r}: scheme must be http:// or https://, got {scheme}://")
    rest = rest.rstrip("/")
    if any(c in rest for c in "/@?#"):
        raise AllowListError(f"{entry!r}: only [scheme://]host[:port], no path, user or query")
    port: int | None = None
    if rest.startswith("["):  # [::1]:9000
        host, closed, tail = rest[1:].partition("]")
        if not closed or (tail and not tail.startswith(":")):
            raise AllowListError(f"{entry!r}: an IPv6 address is written [address] or [address]:port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AllowListError(f"{entry!r}: {host!r} is not an IPv6 address") from None
        if tail:
            port = _port(tail[1:], entry)
        return HostRule(scheme=scheme, host=host, port=port)
    host = rest
    if rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = _port(port_text, entry)
    elif ":" in rest:
        raise AllowListError(f"{entry!r}: write an IPv6 address in brackets, e.g. [::1]:9000")
    if not _HOST_GLOB.fullmatch(host):
        raise AllowListError(f"{entry!r}: {host!r} is not a host name, address or *-glob")
    return HostRule(scheme=scheme, host=host.rstrip("."), port=port)


def parse_rules(entries: tuple[str, ...]) -> tuple[HostRule, ...]:
    """Every entry parsed, or AllowListError naming the first bad one."""
    return tuple(parse_rule(entry) for entry in entries)
