"""The one policy for user-supplied URLs: what the service accepts at submission and what the job's fetcher
(`intake/fetch.py`) accepts before it connects.

`check(url, allow_private=...)` parses the URL exactly as the fetcher does (`urllib.parse.urlsplit`) and refuses:
  - anything but http(s)://, s3:// and (only where local reads are allowed) a local path or file:// URL;
  - malformed forms that parsers disagree on: whitespace or control characters, backslashes, `http:/x` or
    `http:x` (no `//`), no host, a bad or zero port, and credentials (`user:pass@host`) in any URL;
  - with `allow_private=False`, hosts that are non-public addresses in *any* spelling the C resolver accepts
    (`0x7f000001`, `2130706433`, `127.1`, `0177.0.0.1`, `0`, IPv4-mapped IPv6, ...), `localhost` names (with or
    without the trailing dot), and, with `resolve=True` (the service, at submission), names that resolve to any
    non-public address or do not resolve at all.
The fetcher still vets the addresses it actually connects to (DNS may change between submission and fetch).
Failures raise `UrlRefused` with a message ready for the user; callers add the field name and the shown URL.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import re
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 8192  # long enough for presigned URLs
RESOLVE_TIMEOUT_S = 5.0
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f\\]")  # whitespace, control characters, backslash
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UrlRefused(ValueError):
    """The URL breaks the policy; str(exc) is the user-facing reason."""


class AddressRefused(UrlRefused):
    """The host is, or resolves to, a non-public address."""


@dataclass(frozen=True)
class CheckedUrl:
    url: str
    scheme: str  # "http", "https", "s3", "file", or "" for a local path
    host: str | None = None  # normalised: lowercase, no trailing dot; an IP literal in its canonical form
    ip: IPAddress | None = None  # the host as an address, whatever its spelling
    port: int | None = None
    path: str | None = None  # the local path (scheme "" or "file")


def is_public(ip: IPAddress) -> bool:
    """A global unicast address; IPv6 forms that embed an IPv4 address are judged by that address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return is_public(ip.sixtofour)
        if ip.teredo is not None:
            return is_public(ip.teredo[1])
        if ip in _NAT64:  # the NAT64 well-known prefix embeds an IPv4 address in the low 32 bits
            return is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return ip.is_global and not ip.is_multicast


def parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """The address `inet_aton` (and so getaddrinfo, and so the fetcher) reads from `host`: one to four parts, each
    decimal, octal (leading 0) or hex (0x); the last part fills the remaining bytes. None if it is not one."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for p in parts:
        try:
            if p[:2].lower() == "0x":
                values.append(int(p[2:], 16) if p[2:] else 0)
            elif len(p) > 1 and p[0] == "0":
                values.append(int(p[1:], 8))
            elif p.isdigit():
                values.append(int(p))
            else:
                return None
        except ValueError:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    n = last
    for i, v in enumerate(head):
        n |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(n)


def host_address(host: str) -> IPAddress | None:
    """`host` (as urlsplit gives it: lowercase, no brackets) as an address, in any spelling; else None."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # IPv6 zone ids ("fe80::1%eth0") do not matter here
    except ValueError:
        return parse_ipv4_loose(host)


def resolve(host: str, port: int | None) -> list[IPAddress]:
    """Every address `host` resolves to (tests replace this). Raises OSError when it does not resolve."""
    infos = socket.getaddrinfo(host, port or 443, 0, socket.SOCK_STREAM)
    return [ipaddress.ip_address(sockaddr[0].split("%", 1)[0]) for *_, sockaddr in infos]


def _resolve_bounded(host: str, port: int | None) -> list[IPAddress]:
    # getaddrinfo has no timeout of its own; a slow resolver must not hold a request thread for long
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(resolve, host, port).result(timeout=RESOLVE_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        raise UrlRefused(f"{host} could not be resolved in {RESOLVE_TIMEOUT_S:g} s") from None
    except (OSError, UnicodeError) as e:
        raise UrlRefused(f"{host} could not be resolved ({getattr(e, 'strerror', None) or e})") from None
    finally:
        pool.shutdown(wait=False)


def parse(url: str, allow_local: bool) -> CheckedUrl:
    """Syntax and scheme rules (no address rules). Raises UrlRefused."""
    if not isinstance(url, str) or not url.strip():
        raise UrlRefused("a URL or path is required")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as e:
        raise UrlRefused(f"not a valid URL ({e})") from None
    scheme = parts.scheme.lower()

    if scheme in ("", "file") or len(scheme) == 1:  # len 1: a Windows drive letter, i.e. a path
        if not allow_local:
            raise UrlRefused("local paths are not accepted here; give an http(s):// or s3:// URL")
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise UrlRefused("file:// URLs must name a local file (no host)")
            return CheckedUrl(url, "file", path=urllib.request.url2pathname(parts.path))
        return CheckedUrl(url, "", path=url)

    if scheme not in ("http", "https", "s3"):
        raise UrlRefused(f"unsupported URL scheme '{parts.scheme}'; use http(s)://, s3:// or a local path")
    if _BAD_CHARS.search(url):
        raise UrlRefused("the URL contains whitespace, control characters or a backslash")
    if not url[len(scheme) + 1:].startswith("//"):
        raise UrlRefused(f"malformed URL: '{parts.scheme}:' must be followed by '//' and a host")
    if "@" in parts.netloc:
        raise UrlRefused("credentials in URLs are not accepted (user:password@...)")

    if scheme == "s3":
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not bucket or not key or key.endswith("/"):
            raise UrlRefused("an s3 URL must be s3://bucket/key (the key of one object)")
        return CheckedUrl(url, "s3", host=bucket)

    host = parts.hostname
    if not host:
        raise UrlRefused("the URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise UrlRefused("the URL has an invalid port") from None
    if port == 0:
        raise UrlRefused("the URL has an invalid port")
    host = host[:-1] if host.endswith(".") else host  # "localhost." is localhost
    ip = host_address(host)
    return CheckedUrl(url, scheme, host=str(ip) if ip is not None else host, ip=ip, port=port)


def check(url: str, allow_private: bool, allow_local: bool | None = None, resolve: bool = False) -> CheckedUrl:
    """`parse` plus the address rules. `allow_local` defaults to `allow_private` (a service that refuses private
    hosts must not read its own disk either); `resolve` also resolves host names (at submission)."""
    checked = parse(url, allow_private if allow_local is None else allow_local)
    if allow_private or checked.scheme not in ("http", "https"):
        return checked
    host = checked.host
    if checked.ip is not None:
        if not is_public(checked.ip):
            raise AddressRefused(f"{host} is a non-public address")
        return checked
    if host == "localhost" or host.endswith(".localhost"):
        raise AddressRefused(f"{host} is not a public host")
    if resolve:
        for ip in _resolve_bounded(host, checked.port):
            if not is_public(ip):
                raise AddressRefused(f"{host} resolves to the non-public address {ip}")
    return checked
