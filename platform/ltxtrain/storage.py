"""Shared storage for multi-node runs: S3 (or any other pyarrow filesystem URI) next to plain local paths.

A multi-node job keeps on shared storage what GPU worker nodes must reach but cannot read from the driver's disk:
Ray Train's run storage (checkpoints), the latent cache and the model folder. Everything goes through
``pyarrow.fs`` (no boto3), so ``s3://bucket/prefix`` is the main case and ``gs://bucket/prefix`` works the same way.

* :func:`is_remote` tells a URI (``s3://``, ``gs://``, ...) from a local path (``/data``, ``file:///data``).
* :func:`resolve` turns either into ``(pyarrow FileSystem, path on it)``.
* :func:`upload_dir` / :func:`download_dir` mirror a folder one way; files already at the destination with the same
  size are skipped (the cache and model files are named by content or never rewritten), and the ``last`` files (the
  cache's ``manifest.json``) are written after everything else, so a reader who sees the manifest sees a complete
  folder. ``last`` files are small markers: they are compared byte for byte, not by size.
* :func:`node_local_copy` is what a worker calls: a local path comes back unchanged; a URI (a folder or one file) is
  downloaded once per node into ``$LTXTRAIN_HOME/storage/<hash of the URI>/<its last name>`` under an ``flock``, so
  the workers sharing a node download it once and later calls fetch only what changed.

S3 settings are the standard AWS ones, read from the environment of the process that opens the storage (driver or
worker): credentials through the AWS default chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and ``~/.aws``, or the instance / container role); ``AWS_REGION`` (or
``AWS_DEFAULT_REGION``; else the bucket's region is looked up); ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for
an S3-compatible store (MinIO, R2, Ceph, ...), e.g. ``http://10.0.0.5:9000``. A URI with a query string
(``s3://b/p?endpoint_override=host:9000&scheme=http``) is handed to pyarrow as is, with pyarrow's URI options.

Errors are ``FileNotFoundError`` (nothing at the URI) or :class:`StorageError`, and their messages name the URI.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import posixpath
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from pyarrow import fs as pafs

log = logging.getLogger("ltxtrain")

# Storage settings a driver passes on to the Ray workers of a job it starts (see ltxtrain.jobs._init_ray), so a
# driver configured by its environment works against nodes that were not. Static credentials set in the driver's
# environment are included: they then sit in the job's runtime_env, readable by whoever can read the Ray dashboard.
# On clusters whose nodes have their own credentials (an instance role), leave them unset on the driver.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_EC2_METADATA_DISABLED", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
COPY_THREADS = 8  # files copied at once
CHUNK = 8 << 20


class StorageError(OSError):
    """A storage operation failed; the message names the URI."""


def is_remote(path: str | os.PathLike) -> bool:
    """True for a URI with a scheme other than ``file://`` (``s3://``, ``gs://``, ...); False for local paths."""
    scheme = urlsplit(str(path)).scheme
    return len(scheme) > 1 and scheme.lower() != "file"


def join(base: str, *parts: str) -> str:
    """``os.path.join`` for local paths; for URIs, parts are appended to the path (a query string stays at the end)."""
    if not is_remote(base):
        return os.path.join(base, *parts)
    u = urlsplit(base)
    path = posixpath.join(u.path or "/", *(p.strip("/") for p in parts))
    return urlunsplit((u.scheme, u.netloc, path, u.query, u.fragment))


def forwarded_env() -> dict[str, str]:
    """The storage settings set in this process, to hand to Ray workers (``FORWARDED_ENV``)."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


def runtime_env_for(uri: str | None) -> dict | None:
    """The Ray `runtime_env` for tasks and actors that read `uri`: this process's storage settings when it is
    remote (the cluster's nodes may have been started without them), else None."""
    return {"env_vars": forwarded_env()} if uri and is_remote(uri) else None


def s3_options(bucket: str | None = None) -> dict:
    """``pyarrow.fs.S3FileSystem`` keyword arguments from the AWS environment variables (module docstring).

    pyarrow's ``FileSystem.from_uri`` honours ``AWS_ENDPOINT_URL(_S3)`` but its ``S3FileSystem()`` constructor does
    not, so both are read here and passed explicitly; the filesystem then carries them when pickled to workers."""
    kwargs: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        u = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = u.netloc + u.path.rstrip("/")
        kwargs["scheme"] = u.scheme
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region and not endpoint and bucket:
        region = _bucket_region(bucket)
    if region:
        kwargs["region"] = region
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        # static keys set here go into the filesystem object itself, so a pickled copy (Ray Train's controller,
        # which runs with its node's environment, not this process's) still signs its requests; without them
        # pyarrow's default chain (instance role, profile) applies wherever the filesystem is used
        kwargs.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                      session_token=os.environ.get("AWS_SESSION_TOKEN") or None)
    return kwargs


@functools.lru_cache(maxsize=64)
def _bucket_region(bucket: str) -> str | None:
    try:
        return pafs.resolve_s3_region(bucket)
    except (OSError, ValueError):  # no such bucket, no network: the first real request reports it
        return None


def resolve(uri: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path on it)`` for a URI or a local path (local paths come back absolute)."""
    uri = str(uri)
    if not is_remote(uri):
        return pafs.LocalFileSystem(), os.path.abspath(_local_path(uri))
    u = urlsplit(uri)
    try:
        if u.scheme == "s3" and not u.query and "@" not in u.netloc:
            if not u.netloc:
                raise ValueError("no bucket")
            return pafs.S3FileSystem(**s3_options(u.netloc)), (u.netloc + unquote(u.path)).rstrip("/")
        filesystem, path = pafs.FileSystem.from_uri(uri)
        return filesystem, path.rstrip("/")
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError, its IO errors OSErrors
        raise StorageError(f"{uri}: cannot open the storage ({_short(exc)})") from exc


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return _info(fs, path, uri).type != pafs.FileType.NotFound


def remove(uri: str) -> None:
    """Delete a folder (recursively) or a file; nothing there is fine."""
    if not is_remote(uri):
        path = _local_path(uri)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)
        return
    fs, path = resolve(uri)
    kind = _info(fs, path, uri).type
    try:
        if kind == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif kind == pafs.FileType.File:
            fs.delete_file(path)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot delete ({_short(exc)})") from exc


def write_bytes(uri: str, data: bytes) -> None:
    """One file at `uri` (a local path or a storage URI); a local one appears only once complete (temp + rename), an
    object only when its upload completes. Streaming encoders persist each latent file this way."""
    fs, path = resolve(uri)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.part")
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        else:
            with fs.open_output_stream(path) as fh:
                fh.write(data)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot write ({_short(exc)})") from exc


def upload_dir(local_dir: str | os.PathLike, uri: str, last: tuple[str, ...] = ("manifest.json",)) -> list[str]:
    """Copy `local_dir` to `uri`: every file missing there or of another size; the files whose relative paths are in
    `last` are compared byte for byte and written after all others. Returns the relative paths copied."""
    if not os.path.isdir(local_dir):
        raise FileNotFoundError(f"{local_dir}: no such folder to upload to {uri}")
    fs, root = resolve(uri)
    source = _local_files(str(local_dir))
    present = _remote_files(fs, root, uri)
    local = pafs.LocalFileSystem()
    return _mirror(source, present, last, (local, os.path.abspath(local_dir)), (fs, root), uri)


def download_dir(uri: str, local_dir: str | os.PathLike, last: tuple[str, ...] = ("manifest.json",)) -> list[str]:
    """Copy the folder at `uri` into `local_dir`, with :func:`upload_dir`'s rules; each file is written under a
    temporary name and renamed, so a file that exists is complete. Local files not at `uri` are left alone."""
    fs, root = resolve(uri)
    kind = _info(fs, root, uri).type
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri}: no such folder")
    if kind != pafs.FileType.Directory:
        raise StorageError(f"{uri}: is a file, not a folder")
    source = _remote_files(fs, root, uri)
    os.makedirs(local_dir, exist_ok=True)
    present = _local_files(str(local_dir))
    local = pafs.LocalFileSystem()
    return _mirror(source, present, last, (fs, root), (local, os.path.abspath(local_dir)), uri)


def default_root() -> Path:
    """Where node-local copies live: ``$LTXTRAIN_HOME/storage`` (default ``~/.cache/ltxtrain/storage``)."""
    return Path(os.environ.get("LTXTRAIN_HOME", Path.home() / ".cache" / "ltxtrain")) / "storage"


def node_local_copy(uri_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """A local path for `uri_or_path`: local paths are returned unchanged; a URI (a folder or one file) is copied to
    ``root/<16 hex of sha1(uri)>/<last name of the uri>`` (so a model keeps its folder or file name), once per node:
    concurrent callers on a node wait on an ``flock`` for the first one's download, and later calls copy only files
    whose size changed (plus the ``manifest.json`` marker when its bytes changed)."""
    uri = str(uri_or_path)
    if not is_remote(uri):
        return uri
    root = Path(root) if root is not None else default_root()
    u = urlsplit(uri)
    u = u._replace(path=u.path.rstrip("/"))  # s3://b/p/ and s3://b/p are one copy
    digest = hashlib.sha1(urlunsplit(u).encode()).hexdigest()[:16]
    dest = root / digest / (posixpath.basename(u.path) or u.netloc)
    with file_lock(root / f".{digest}.lock"):
        fs, path = resolve(uri)
        info = _info(fs, path, uri)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{uri}: no such file or folder")
        if info.type == pafs.FileType.Directory:
            copied = download_dir(uri, dest)
        else:
            copied = [] if dest.is_file() and dest.stat().st_size == info.size else [dest.name]
            if copied:
                dest.parent.mkdir(parents=True, exist_ok=True)
                _copy(fs, path, pafs.LocalFileSystem(), str(dest), uri)
    if copied:
        log.info("copied %d file(s) of %s to %s", len(copied), uri, dest)
    return str(dest)


# ------------------------------------------------------------------------------------------------------- internals


def _local_path(path: str) -> str:
    return unquote(urlsplit(path).path) if str(path).startswith("file://") else os.path.expanduser(str(path))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:300] + "…"


def _info(fs: pafs.FileSystem, path: str, uri: str) -> pafs.FileInfo:
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({_short(exc)})") from exc


def _is_temp(name: str) -> bool:
    """Half-written files (ours and the latent cache's ``.NAME.PID.tmp``) are never copied."""
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".part"))


def _local_files(root: str) -> dict[str, int]:
    """Relative path (with /) -> size of every file under `root`; symlinks are followed."""
    out = {}
    for dirpath, _, names in os.walk(root, followlinks=True):
        for name in names:
            if _is_temp(name):
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            with contextlib.suppress(FileNotFoundError):  # removed while we looked
                out[rel] = os.stat(full).st_size
    return out


def _remote_files(fs: pafs.FileSystem, root: str, uri: str) -> dict[str, int]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise StorageError(f"{uri}: cannot list ({_short(exc)})") from exc
    return {posixpath.relpath(i.path, root): i.size for i in infos
            if i.type == pafs.FileType.File and not _is_temp(posixpath.basename(i.path))}


def _mirror(source: dict[str, int], present: dict[str, int], last: tuple[str, ...], src, dst, uri: str) -> list[str]:
    """Copy the `source` files (relative path -> size) from `src` to `dst` ((filesystem, root) pairs)."""
    (src_fs, src_root), (dst_fs, dst_root) = src, dst

    def copy(rel: str) -> None:
        _copy(src_fs, _under(src_fs, src_root, rel), dst_fs, _under(dst_fs, dst_root, rel), uri)

    def changed_marker(rel: str) -> bool:
        return present.get(rel) != source[rel] or (_read(src_fs, _under(src_fs, src_root, rel), uri)
                                                   != _read(dst_fs, _under(dst_fs, dst_root, rel), uri))

    bulk = sorted(r for r, size in source.items() if r not in last and present.get(r) != size)
    final = [r for r in last if r in source and changed_marker(r)]
    if bulk:
        with ThreadPoolExecutor(max_workers=min(COPY_THREADS, len(bulk))) as pool:
            list(pool.map(copy, bulk))  # re-raises the first failure
    for rel in final:
        copy(rel)
    return bulk + final


def _under(fs: pafs.FileSystem, root: str, rel: str) -> str:
    return os.path.join(root, *rel.split("/")) if isinstance(fs, pafs.LocalFileSystem) else posixpath.join(root, rel)


def _read(fs: pafs.FileSystem, path: str, uri: str) -> bytes:
    try:
        with fs.open_input_stream(path) as fh:
            return fh.read()
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read {path} ({_short(exc)})") from exc


def _copy(src_fs: pafs.FileSystem, src: str, dst_fs: pafs.FileSystem, dst: str, uri: str) -> None:
    """One file; a local destination is written under a temporary name and renamed (object stores publish an
    object only when its upload completes)."""
    try:
        if isinstance(dst_fs, pafs.LocalFileSystem):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            tmp = os.path.join(os.path.dirname(dst),
                               f".{os.path.basename(dst)}.{os.getpid()}.{threading.get_ident()}.part")
            try:
                with src_fs.open_input_stream(src) as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout, CHUNK)
                os.replace(tmp, dst)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        else:
            with src_fs.open_input_stream(src) as fin, dst_fs.open_output_stream(dst) as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot copy {src} to {dst} ({_short(exc)})") from exc


@contextlib.contextmanager
def file_lock(path: str | os.PathLike):
    """An exclusive flock on `path` (created if missing): one holder per file across processes on a node."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
