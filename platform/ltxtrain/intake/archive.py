"""Unpack a user's dataset zip safely: no path escapes, bounded size/count/memory, nested zips expanded in place.

Everything is extracted into a hidden temporary sibling of `dest_dir`, which is renamed to `dest_dir` only when the
whole archive (nested zips included) is unpacked; on any error the temporary directory is removed and `dest_dir` is
left absent. All names of an archive are validated before any of its bytes are written.

Only the `stored` and `deflate` compression methods are accepted: CPython's zipfile decompresses bzip2 and LZMA
entries without an output bound (one 4 KiB read of bzip2 zeros can inflate to gigabytes in memory), so those would
defeat the memory cap. Encrypted entries are refused too.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass

from ..api.errors import RequestError
from .limits import IntakeLimits, format_bytes

FIELD = "training_data_url"
CHUNK = 1 << 20  # bytes per read while copying an entry out
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})  # plus any component starting with "."
SUPPORTED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma", 9: "deflate64", 93: "zstandard", 99: "AES"}
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ExtractedFile:
    archive_path: str  # POSIX path inside the archive, e.g. "clips/a.mp4"; for nested zips "inner.zip/b.mp4"
    local_path: str  # absolute path on disk under the destination dir
    size: int


def require_nonempty(files) -> None:
    if not files:
        raise RequestError.field(FIELD, "the archive contains no files")


def extract_archive(zip_path: str, dest_dir: str, limits: IntakeLimits = IntakeLimits()) -> list[ExtractedFile]:
    """Extract `zip_path` into `dest_dir` (which must be absent or an empty directory) and list what was written.

    Skips directories, `__MACOSX/`, hidden files and folders (any component starting with "."; AppleDouble "._x"
    included), Thumbs.db and desktop.ini. Returns the files sorted by archive path ([] when nothing is left: see
    `require_nonempty`). Raises RequestError for anything wrong with the archive; `dest_dir` is then left absent.
    """
    dest_dir = os.path.abspath(dest_dir)
    if os.path.lexists(dest_dir):
        if not os.path.isdir(dest_dir) or os.path.islink(dest_dir) or os.listdir(dest_dir):
            # A caller bug, not the user's: refuse rather than delete something we did not create.
            raise FileExistsError(f"extract_archive: {dest_dir} exists and is not an empty directory")
    parent = os.path.dirname(dest_dir)
    os.makedirs(parent, exist_ok=True)

    if not os.path.isfile(zip_path) or not zipfile.is_zipfile(zip_path):
        _remove_empty_dir(dest_dir)
        raise RequestError.field(FIELD, "the downloaded file is not a zip archive")

    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest_dir)}.", suffix=".partial", dir=parent)
    ok = False
    try:
        state = _State(limits, tmp)
        _extract_one(zip_path, prefix=(), depth=0, state=state)
        _remove_empty_dir(dest_dir)
        os.rename(tmp, dest_dir)
        ok = True
    finally:
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
            _remove_empty_dir(dest_dir)
    files = [
        ExtractedFile("/".join(parts), os.path.join(dest_dir, *parts), size) for parts, size in state.files.items()
    ]
    return sorted(files, key=lambda f: f.archive_path)


# ---------------------------------------------------------------------------------------------------------- internals


class _State:
    """Budget and bookkeeping shared by the outer archive and every nested one."""

    def __init__(self, limits: IntakeLimits, root: str):
        self.limits = limits
        self.root = root
        self.bytes_on_disk = 0  # everything written so far, nested zips included while they exist
        self.entries = 0  # entries extracted so far (nested zip containers count as one each)
        self.files: dict[tuple[str, ...], int] = {}  # final files: parts -> size
        self.dirs: set[tuple[str, ...]] = set()  # every directory prefix implied by a file
        self.nested_seq = 0

    def claim_path(self, parts: tuple[str, ...], shown: str) -> None:
        """Reserve `parts` as a file, refusing duplicates and file/folder clashes."""
        if parts in self.files or parts in self.dirs:
            raise RequestError.file(shown, "duplicate entry: this path occurs more than once in the archive")
        for i in range(1, len(parts)):
            if parts[:i] in self.files:
                raise RequestError.file(shown, f"conflicts with the file {'/'.join(parts[:i])} of the same name")
        self.files[parts] = 0
        self.dirs.update(parts[:i] for i in range(1, len(parts)))

    def too_many_files(self) -> RequestError:
        return RequestError.field(FIELD, f"the archive has more than {self.limits.max_files} files (the limit)")

    def too_big(self, where: str) -> RequestError:
        cap = self.limits.max_extracted_bytes
        return RequestError.field(
            FIELD,
            f"the archive's contents exceed the extracted-size limit of {format_bytes(cap)} ({cap} bytes); "
            f"stopped at {where}",
        )


@dataclass(frozen=True)
class _Plan:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]  # full path parts, prefix of the enclosing nested zips included
    shown: str  # "/".join(parts), the name used in messages
    nested: bool  # a .zip to expand in place


def _extract_one(zip_path: str, prefix: tuple[str, ...], depth: int, state: _State) -> None:
    shown_archive = "/".join(prefix)
    _check_entry_count(zip_path, shown_archive, state)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, struct.error, OverflowError,
            NotImplementedError, UnicodeDecodeError, IndexError, KeyError) as e:
        if not prefix:
            raise RequestError.field(FIELD, f"the downloaded file is not a valid zip archive ({_short(e)})") from None
        raise RequestError.file(shown_archive, f"is not a valid zip archive ({_short(e)})") from None
    with zf:
        plans = _plan(zf, prefix, depth, state)
        for plan in plans:
            _copy_entry(zf, plan, depth, state)


def _check_entry_count(zip_path: str, shown_archive: str, state: _State) -> None:
    """Refuse archives whose central directory alone would cost too much memory to parse (millions of entries).

    Junk (folders, __MACOSX) is listed too, hence the slack; the exact file count is checked after planning.
    """
    try:
        with open(zip_path, "rb") as f:
            endrec = zipfile._EndRecData(f)  # noqa: SLF001 - stable private helper; best effort only
        total = endrec[zipfile._ECD_ENTRIES_TOTAL] if endrec else None  # noqa: SLF001
    except Exception:  # noqa: BLE001 - the real open below reports damage
        return
    cap = 3 * state.limits.max_files + 1000
    if total is not None and total > cap:
        where = f" (in {shown_archive})" if shown_archive else ""
        raise RequestError.field(
            FIELD, f"the archive lists {total} entries{where}; at most {state.limits.max_files} files are allowed"
        )


def _plan(zf: zipfile.ZipFile, prefix: tuple[str, ...], depth: int, state: _State) -> list[_Plan]:
    """Validate every name of this archive and decide what to write, before writing anything."""
    plans: list[_Plan] = []
    declared = 0
    for info in zf.infolist():
        name = info.filename
        shown_raw = "/".join(prefix + (name,)) if prefix else name
        parts = _safe_parts(name, shown_raw)  # raises on escapes, for junk entries too
        if not parts or info.is_dir() or name.endswith(("/", "\\")):
            continue
        if any(p.startswith(".") or p in JUNK_NAMES for p in parts):
            continue
        full = prefix + parts
        shown = "/".join(full)
        mode = info.external_attr >> 16
        if mode and stat.S_ISLNK(mode):
            raise RequestError.file(shown, "path escapes the archive: symbolic links are not allowed")
        if info.flag_bits & 0x1:
            raise RequestError.file(shown, "is encrypted; give an archive without a password")
        if info.compress_type not in SUPPORTED_METHODS:
            method = METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
            raise RequestError.file(
                shown, f"uses the {method} compression method; only stored and deflate zips are supported"
            )
        nested = parts[-1].lower().endswith(".zip")
        if nested and depth + 1 > state.limits.max_nesting:
            raise RequestError.file(
                shown, f"zip archives nested more than {state.limits.max_nesting} levels deep are not allowed"
            )
        state.claim_path(full, shown)
        declared += info.file_size
        plans.append(_Plan(info, full, shown, nested))

    if state.entries + len(plans) > state.limits.max_files:
        raise state.too_many_files()
    _check_declared(state, declared, prefix)
    return plans


def _check_declared(state: _State, declared: int, prefix: tuple[str, ...]) -> None:
    """Refuse up front when the sizes the archive declares already pass the cap (the copy also counts real bytes)."""
    if state.bytes_on_disk + declared > state.limits.max_extracted_bytes:
        where = f"the declared sizes of the entries of {'/'.join(prefix)}" if prefix else "the declared sizes"
        raise state.too_big(where)


def _safe_parts(name: str, shown: str) -> tuple[str, ...]:
    """The path components of an entry name, refusing anything that could land outside the destination.

    Backslashes count as separators (zips made by some Windows tools use them), so "..\\x" is caught too.
    """
    if "\x00" in name:
        raise RequestError.file(shown, "path escapes the archive: NUL in the name")
    norm = name.replace("\\", "/")
    if norm.startswith("/"):
        raise RequestError.file(shown, "path escapes the archive: absolute paths are not allowed")
    if _DRIVE.match(norm):
        raise RequestError.file(shown, "path escapes the archive: drive letters are not allowed")
    parts = tuple(p for p in norm.split("/") if p not in ("", "."))
    if ".." in parts:
        raise RequestError.file(shown, "path escapes the archive: '..' components are not allowed")
    return parts


def _target(state: _State, parts: tuple[str, ...], shown: str) -> str:
    path = os.path.join(state.root, *parts)
    real = os.path.realpath(path)
    if os.path.commonpath([real, os.path.realpath(state.root)]) != os.path.realpath(state.root):
        raise RequestError.file(shown, "path escapes the archive destination")
    return path


def _copy_entry(zf: zipfile.ZipFile, plan: _Plan, depth: int, state: _State) -> None:
    state.entries += 1
    if state.entries > state.limits.max_files:
        raise state.too_many_files()
    if plan.nested:
        state.nested_seq += 1
        # Hidden name: user entries starting with "." are never extracted, so this cannot clash.
        path = os.path.join(state.root, f".nested-{state.nested_seq}.zip")
    else:
        path = _target(state, plan.parts, plan.shown)
        os.makedirs(os.path.dirname(path), exist_ok=True)

    written = _copy_bytes(zf, plan, path, state)

    if not plan.nested:
        state.files[plan.parts] = written
        return
    # Expand the nested zip into a folder named like it, then drop the zip itself (and refund its bytes).
    try:
        if not zipfile.is_zipfile(path):
            raise RequestError.file(plan.shown, "is not a valid zip archive")
        del state.files[plan.parts]
        state.dirs.add(plan.parts)
        _extract_one(path, prefix=plan.parts, depth=depth + 1, state=state)
    finally:
        _unlink_quietly(path)
    state.bytes_on_disk -= written


def _copy_bytes(zf: zipfile.ZipFile, plan: _Plan, path: str, state: _State) -> int:
    """Stream one entry to `path` in chunks, counting real bytes against the caps as they arrive."""
    cap = state.limits.max_extracted_bytes
    declared = plan.info.file_size
    written = 0
    try:
        with zf.open(plan.info) as src, open(path, "xb") as out:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                state.bytes_on_disk += len(chunk)
                if state.bytes_on_disk > cap:
                    raise state.too_big(plan.shown)
                if written > declared:
                    raise RequestError.file(plan.shown, f"holds more data than its declared size of {declared} bytes")
                out.write(chunk)
    except RequestError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError,
            struct.error) as e:
        raise RequestError.file(plan.shown, f"is corrupt or unreadable ({_short(e)})") from None
    except OSError as e:
        if e.errno in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
            raise RequestError.file(plan.shown, f"cannot be written: {e.strerror}") from None
        raise
    if written != declared:
        raise RequestError.file(plan.shown, f"is corrupt: {written} bytes instead of the declared {declared}")
    return written


def _short(e: BaseException) -> str:
    text = " ".join((str(e) or type(e).__name__).split())
    return text[:200] + "…" if len(text) > 200 else text


def _remove_empty_dir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
