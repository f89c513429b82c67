"""Download a user's dataset archive to a local file, bounded in size, time and memory.

Sources: http(s)://, file://, a plain local path, s3://bucket/key. The body is streamed in chunks into a temporary
file next to the destination and renamed into place only when complete, so a failed fetch leaves nothing behind.
Every user-facing failure is a `RequestError.field(field, ...)` naming the URL (userinfo and query string redacted,
so presigned-URL signatures do not end up in logs or result files).

With `limits.allow_private_addresses=False` (the HTTP service), hosts resolving to any non-global address
(loopback, private, link-local, CGNAT, reserved, multicast, unspecified) are refused. The check runs on the
addresses actually connected to (DNS is resolved once, inside the connection), for every redirect hop too, and
environment proxies are not used in that mode, so neither DNS rebinding nor a redirect can reach an internal host.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import os
import socket
import ssl
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import BinaryIO, Callable

from ..api.errors import RequestError
from . import url_policy
from .limits import IntakeLimits, format_bytes

CHUNK = 1 << 20  # bytes per read for local files and HTTP
S3_CHUNK = 8 << 20  # bytes per read for S3 (each read is a ranged GET)
MAX_REDIRECTS = 5
USER_AGENT = "ltxtrain-intake/1"


class _RefusedAddress(OSError):
    """The host resolved to an address the limits forbid (raised from inside the connection)."""

    def __init__(self, host: str, address: str):
        super().__init__(f"{host} resolves to the non-public address {address}")
        self.host = host
        self.address = address


class _Abort(Exception):
    """A failure whose message is ready for the user (wrapped into RequestError by `fetch`)."""


# ------------------------------------------------------------------------------------------------ public entry point


def fetch(url: str, dest_path: str, limits: IntakeLimits = IntakeLimits(), field: str = "training_data_url") -> str:
    """Fetch `url` into `dest_path` (created or replaced atomically) and return `dest_path`.

    Raises RequestError.field(field, ...) for anything wrong with the URL or what it points at; nothing is left at
    `dest_path` (nor any temporary file, nor a parent directory this call created) when it raises.
    """
    if not isinstance(url, str) or not url.strip():
        raise RequestError.field(field, "a URL or path is required")
    url = url.strip()
    shown = redact_url(url)
    opener = _pick_source(url, shown, limits, field)

    dest_path = os.path.abspath(dest_path)
    parent = os.path.dirname(dest_path)
    created = _missing_ancestors(parent)
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest_path)}.", suffix=".part", dir=parent)
    ok = False
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                opener(out)
            except RequestError:
                raise
            except _Abort as e:
                raise RequestError.field(field, f"{shown}: {e}") from None
            except _RefusedAddress as e:
                raise RequestError.field(field, f"{shown}: refused: {e}") from None
            except (TimeoutError, socket.timeout):
                raise RequestError.field(field, f"{shown}: timed out (no data for {limits.timeout_s:g} s)") from None
        os.replace(tmp, dest_path)
        ok = True
        return dest_path
    finally:
        if not ok:
            _unlink_quietly(tmp)
            for d in reversed(created):
                try:
                    os.rmdir(d)
                except OSError:
                    break


def redact_url(url: str) -> str:
    """The URL as shown in messages: no password in the userinfo, no query string or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0]
    if not parts.scheme or len(parts.scheme) == 1:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}" if ":" in userinfo else f"{userinfo}@{hostport}"
    suffix = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + suffix


# ----------------------------------------------------------------------------------------------------- source choice


def _pick_source(url: str, shown: str, limits: IntakeLimits, field: str) -> Callable[[BinaryIO], None]:
    """Validate the URL up front (the shared policy, `url_policy`) and return a function that streams its bytes
    into an open file. Host names are not resolved here: the connection vets the addresses it dials."""
    try:
        checked = url_policy.check(url, allow_private=limits.allow_private_addresses,
                                   allow_local=limits.local_paths_allowed)
    except url_policy.AddressRefused as e:
        raise RequestError.field(field, f"{shown}: refused: {e}") from None
    except url_policy.UrlRefused as e:
        raise RequestError.field(field, f"{shown}: {e}") from None
    if checked.scheme in ("", "file"):
        return functools.partial(_copy_local, checked.path, limits)
    if checked.scheme in ("http", "https"):
        return functools.partial(_copy_http, url, limits)
    bucket, _, key = url.split("://", 1)[1].partition("/")
    return functools.partial(_copy_s3, bucket, key, limits)


# ----------------------------------------------------------------------------------------------------------- copying


def _stream(read: Callable[[], bytes], out: BinaryIO, limits: IntakeLimits, expected: int | None = None,
            what: str = "download failed") -> int:
    """Copy chunks from `read` (returns b"" at the end) into `out`, aborting as soon as the size cap is passed.

    Errors from `read` are the source's fault and become user-facing (`what: reason`); errors from writing `out`
    (a full disk) are ours and propagate unchanged.
    """
    cap = limits.max_download_bytes
    total = 0
    while True:
        try:
            chunk = read()
        except (TimeoutError, socket.timeout, _RefusedAddress):
            raise
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise _Abort(f"{what}: {_describe(e)}") from None
        if not chunk:
            break
        total += len(chunk)
        if total > cap:
            raise _Abort(_too_big(cap))
        out.write(chunk)
    if expected is not None and total != expected:
        raise _Abort(f"the transfer was cut short ({total} of {expected} bytes received)")
    return total


def _too_big(cap: int) -> str:
    return f"the archive is larger than the download limit of {format_bytes(cap)} ({cap} bytes)"


def _copy_local(path: str, limits: IntakeLimits, out: BinaryIO) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _Abort("not found") from None
    except NotADirectoryError:
        raise _Abort("not found") from None
    except PermissionError:
        raise _Abort("permission denied") from None
    except OSError as e:
        raise _Abort(f"cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _Abort("is a directory, not an archive file")
    if not stat.S_ISREG(st.st_mode):
        raise _Abort("is not a regular file")
    if st.st_size > limits.max_download_bytes:
        raise _Abort(_too_big(limits.max_download_bytes))
    try:
        with open(path, "rb") as src:
            _stream(functools.partial(src.read, CHUNK), out, limits, what="reading failed")
    except PermissionError:
        raise _Abort("permission denied") from None
    except IsADirectoryError:
        raise _Abort("is a directory, not an archive file") from None


def _copy_http(url: str, limits: IntakeLimits, out: BinaryIO) -> None:
    opener = guarded_opener(limits.allow_private_addresses)
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    try:
        resp = opener.open(req, timeout=limits.timeout_s)
    except urllib.error.HTTPError as e:
        e.close()
        raise _Abort(f"the server answered HTTP {e.code} {e.reason}".rstrip()) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (_RefusedAddress, TimeoutError, socket.timeout)):
            raise reason from None  # mapped in fetch()
        raise _Abort(f"download failed: {_describe(reason)}") from None
    except (OSError, http.client.HTTPException) as e:
        if isinstance(e, (_RefusedAddress, TimeoutError, socket.timeout)):
            raise
        raise _Abort(f"download failed: {_describe(e)}") from None
    with resp:
        length = resp.headers.get("Content-Length")
        expected = None
        if length is not None and length.strip().isdigit():
            expected = int(length)
            if expected > limits.max_download_bytes:
                raise _Abort(_too_big(limits.max_download_bytes))
        if (resp.headers.get("Content-Encoding") or "identity").lower() not in ("identity", ""):
            expected = None  # compressed on the wire: the length is not the file's
        _stream(functools.partial(resp.read, CHUNK), out, limits, expected, what="download failed")


def _copy_s3(bucket: str, key: str, limits: IntakeLimits, out: BinaryIO) -> None:
    try:
        from pyarrow import fs as pafs
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise _Abort("s3:// URLs need pyarrow, which is not installed") from None

    kwargs: dict = {"connect_timeout": limits.timeout_s, "request_timeout": limits.timeout_s}
    # An S3-compatible store (MinIO, R2, ...) configured by the operator, the standard AWS variables.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        kwargs["region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    else:
        try:
            kwargs["region"] = pafs.resolve_s3_region(bucket)
        except Exception:  # noqa: BLE001 - unknown bucket or no network: let the open below report it
            pass

    path = f"{bucket}/{key}"
    first_error: Exception | None = None
    # The default credential chain first; public buckets also work without credentials (anonymous).
    for anonymous in (False, True):
        try:
            s3 = pafs.S3FileSystem(anonymous=anonymous, **kwargs)
            info = s3.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise _Abort("not found (no such object)")
            if info.type != pafs.FileType.File:
                raise _Abort("is not an object (a prefix/directory?)")
            if info.size is not None and info.size > limits.max_download_bytes:
                raise _Abort(_too_big(limits.max_download_bytes))
            stream = s3.open_input_stream(path)
            break
        except _Abort:
            if anonymous or first_error is None:
                raise
            raise _Abort(_s3_message(first_error)) from None
        except (OSError, ValueError) as e:  # ArrowIOError is an OSError
            first_error = first_error or e
            if anonymous:
                raise _Abort(_s3_message(first_error)) from None
    with stream:
        _stream(functools.partial(stream.read, S3_CHUNK), out, limits, info.size, what="download failed")


def _s3_message(e: Exception) -> str:
    text = " ".join(str(e).split())
    if len(text) > 300:
        text = text[:300] + "…"
    return f"cannot read the object ({text})"


# ------------------------------------------------------------------------------------------- HTTP with address guard


_is_public = url_policy.is_public  # the policy's address rule, also applied to every address dialled


def _guarded_create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, *,
                               allow_private: bool):
    """socket.create_connection, but every resolved address is vetted and only vetted addresses are dialled."""
    host, port = address
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    if not allow_private:
        for *_, sockaddr in infos:
            ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
            if not _is_public(ip):
                raise _RefusedAddress(host, str(ip))
    last: OSError | None = None
    for family, socktype, proto, _, sockaddr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            last = e
            sock.close()
    assert last is not None
    raise last


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, allow_private: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(_guarded_create_connection, allow_private=allow_private)


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, allow_private: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(_guarded_create_connection, allow_private=allow_private)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, allow_private: bool):
        super().__init__()
        self._allow_private = allow_private

    def http_open(self, req):
        return self.do_open(functools.partial(_GuardedHTTPConnection, allow_private=self._allow_private), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, allow_private: bool):
        super().__init__(context=ssl.create_default_context())
        self._allow_private = allow_private

    def https_open(self, req):
        return self.do_open(
            functools.partial(_GuardedHTTPSConnection, allow_private=self._allow_private), req, context=self._context
        )


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise _Abort(f"redirected to an unsupported URL scheme '{scheme}'")
        try:  # every hop obeys the same policy as the first URL (addresses are vetted when dialled)
            url_policy.parse(newurl, allow_local=False)
        except url_policy.UrlRefused as e:
            raise _Abort(f"redirected to a refused URL: {e}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def guarded_opener(allow_private: bool, follow_redirects: bool = True) -> urllib.request.OpenerDirector:
    """A urllib opener that dials only vetted addresses (also used by the service to send webhooks)."""
    opener = urllib.request.OpenerDirector()
    handlers = [
        # Environment proxies would dial the proxy rather than the vetted host: only honoured when private hosts
        # are allowed anyway.
        urllib.request.ProxyHandler() if allow_private else urllib.request.ProxyHandler({}),
        urllib.request.UnknownHandler(),
        _HTTPHandler(allow_private),
        _HTTPSHandler(allow_private),
        urllib.request.HTTPDefaultErrorHandler(),
        *([_RedirectHandler()] if follow_redirects else []),
        urllib.request.HTTPErrorProcessor(),
    ]
    for h in handlers:
        opener.add_handler(h)
    return opener


# ----------------------------------------------------------------------------------------------------------- helpers


def _describe(e: BaseException) -> str:
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host ({e.strerror or e})"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, http.client.IncompleteRead):
        return f"the transfer was cut short ({len(e.partial)} bytes received)"
    if isinstance(e, ssl.SSLError):
        return f"TLS error ({e.reason or e})"
    text = " ".join((str(e) or type(e).__name__).split())
    return text[:300] + "…" if len(text) > 300 else text


def _missing_ancestors(path: str) -> list[str]:
    """The directories of `path` (outermost first) that do not exist yet."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return list(reversed(missing))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
