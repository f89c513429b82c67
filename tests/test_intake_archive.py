"""Intake: fetching a dataset archive and unpacking it safely (ltxtrain.intake)."""

from __future__ import annotations

import io
import os
import stat
import struct
import threading
import time
import tracemalloc
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ltxtrain.api.errors import RequestError
from ltxtrain.intake import archive as archive_mod
from ltxtrain.intake.archive import ExtractedFile, extract_archive, require_nonempty
from ltxtrain.intake.fetch import _is_public, fetch, redact_url
from ltxtrain.intake.limits import IntakeLimits

MiB = 2**20
BIG = 200 * MiB  # a zero-filled entry this big deflates to ~200 KB


# ------------------------------------------------------------------------------------------------------------ helpers


def make_zip(path: Path, entries: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name) if name.endswith("/") else name, data)
    return path


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def listing(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def error_locs(exc: RequestError) -> list[tuple]:
    return [e.loc for e in exc.errors]


@pytest.fixture(scope="module")
def big_zero_zip(tmp_path_factory) -> Path:
    """One 200 MB zero-filled deflated entry (written in chunks; the file itself is ~200 KB)."""
    path = tmp_path_factory.mktemp("bomb") / "zeros.zip"
    chunk = bytes(4 * MiB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("clips/zeros.bin", "w", force_zip64=False) as out:
            for _ in range(BIG // len(chunk)):
                out.write(chunk)
    assert path.stat().st_size < 2 * MiB
    return path


# ---------------------------------------------------------------------------------------------------------- archives


def test_good_archive_with_subfolders(tmp_path):
    z = make_zip(
        tmp_path / "data.zip",
        {"clips/": b"", "clips/a.mp4": b"AAAA", "clips/a.txt": b"a cat", "clips/sub/b.mp4": b"BB", "top.txt": b"t"},
    )
    dest = tmp_path / "out"
    files = extract_archive(str(z), str(dest))
    assert [f.archive_path for f in files] == ["clips/a.mp4", "clips/a.txt", "clips/sub/b.mp4", "top.txt"]
    for f in files:
        assert isinstance(f, ExtractedFile)
        assert os.path.isabs(f.local_path) and f.local_path.startswith(str(dest) + os.sep)
        assert Path(f.local_path).stat().st_size == f.size
    assert Path(files[0].local_path).read_bytes() == b"AAAA"
    assert Path(files[2].local_path) == dest / "clips" / "sub" / "b.mp4"
    # no temporary sibling left behind
    assert sorted(os.listdir(tmp_path)) == ["data.zip", "out"]


def test_junk_is_ignored(tmp_path):
    z = make_zip(
        tmp_path / "data.zip",
        {
            "clips/a.mp4": b"A",
            "__MACOSX/clips/._a.mp4": b"junk",
            "clips/._a.mp4": b"appledouble",
            ".DS_Store": b"x",
            "clips/.hidden/x.mp4": b"x",
            ".git/config": b"x",
            "clips/Thumbs.db": b"x",
            "emptydir/": b"",
        },
    )
    files = extract_archive(str(z), str(tmp_path / "out"))
    assert [f.archive_path for f in files] == ["clips/a.mp4"]
    assert listing(tmp_path / "out") == {"clips", "clips/a.mp4"}


def test_nested_zip_expanded_in_place(tmp_path):
    deeper = zip_bytes({"d.txt": b"deep"})
    inner = zip_bytes({"b/c.mp4": b"CC", "__MACOSX/b/._c.mp4": b"junk", "deeper.zip": deeper})
    z = make_zip(tmp_path / "data.zip", {"clips/a.mp4": b"A", "more/inner.zip": inner})
    dest = tmp_path / "out"
    files = extract_archive(str(z), str(dest))
    assert [f.archive_path for f in files] == [
        "clips/a.mp4",
        "more/inner.zip/b/c.mp4",
        "more/inner.zip/deeper.zip/d.txt",
    ]
    assert Path(files[1].local_path).read_bytes() == b"CC"
    assert Path(files[2].local_path) == dest / "more" / "inner.zip" / "deeper.zip" / "d.txt"
    assert (dest / "more" / "inner.zip").is_dir()  # the zip itself is replaced by its contents
    assert not [p for p in dest.rglob(".*")]  # no temporary nested copies left


def test_nesting_too_deep(tmp_path):
    level3 = zip_bytes({"x.txt": b"x"})
    level2 = zip_bytes({"l3.zip": level3})
    z = make_zip(tmp_path / "data.zip", {"l2.zip": level2})
    with pytest.raises(RequestError) as ei:
        extract_archive(str(z), str(tmp_path / "out"), IntakeLimits(max_nesting=1))
    assert error_locs(ei.value) == [("body", "training_data_url", "l2.zip/l3.zip")]
    assert "nested" in str(ei.value)
    assert not (tmp_path / "out").exists()
    assert extract_archive(str(z), str(tmp_path / "ok"), IntakeLimits(max_nesting=2))[0].archive_path == "l2.zip/l3.zip/x.txt"


def test_nested_entry_that_is_not_a_zip(tmp_path):
    z = make_zip(tmp_path / "data.zip", {"a.txt": b"a", "fake.zip": b"not a zip at all"})
    with pytest.raises(RequestError) as ei:
        extract_archive(str(z), str(tmp_path / "out"))
    assert error_locs(ei.value) == [("body", "training_data_url", "fake.zip")]
    assert not (tmp_path / "out").exists()


def test_not_a_zip(tmp_path):
    p = tmp_path / "data.zip"
    p.write_bytes(b"<html>404 Not Found</html>" * 10)
    with pytest.raises(RequestError) as ei:
        extract_archive(str(p), str(tmp_path / "out"))
    assert error_locs(ei.value) == [("body", "training_data_url")]
    assert "is not a zip archive" in ei.value.errors[0].msg
    assert not (tmp_path / "out").exists()


def test_empty_archive(tmp_path):
    z = make_zip(tmp_path / "empty.zip", {})
    files = extract_archive(str(z), str(tmp_path / "out"))
    assert files == []
    assert (tmp_path / "out").is_dir()
    with pytest.raises(RequestError) as ei:
        require_nonempty(files)
    assert error_locs(ei.value) == [("body", "training_data_url")]
    assert "no files" in str(ei.value)
    junk_only = make_zip(tmp_path / "junk.zip", {"__MACOSX/._a": b"x", "dir/": b""})
    assert extract_archive(str(junk_only), str(tmp_path / "out2")) == []
    require_nonempty([ExtractedFile("a", "/x/a", 1)])  # no error


@pytest.mark.parametrize(
    "evil",
    ["../evil.txt", "clips/../../evil.txt", "..\\evil.txt", "/tmp/ltxtrain-evil-{uid}.txt", "C:/evil.txt"],
)
def test_path_escapes_are_refused_before_writing(tmp_path, evil):
    evil = evil.format(uid=uuid.uuid4().hex)
    work = tmp_path / "work"
    work.mkdir()
    z = tmp_path / "data.zip"
    # a good entry first: nothing at all may be written before the bad name is seen
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("clips/a.mp4", b"A")
        zf.writestr(zipfile.ZipInfo(evil), b"pwned")  # ZipInfo keeps the raw name ("/tmp/..." included)
    with pytest.raises(RequestError) as ei:
        extract_archive(str(z), str(work / "out"))
    assert error_locs(ei.value) == [("body", "training_data_url", evil)]
    assert "path escapes" in ei.value.errors[0].msg
    assert os.listdir(work) == []  # no dest, no temp dir, no evil.txt beside them
    assert sorted(os.listdir(tmp_path)) == ["data.zip", "work"]
    if evil.startswith("/"):
        assert not os.path.exists(evil)


def test_symlink_entry_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    z = tmp_path / "data.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("clips/a.mp4", b"A")
        link = zipfile.ZipInfo("clips/link.mp4")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../../../../etc/passwd")
    with pytest.raises(RequestError) as ei:
        extract_archive(str(z), str(work / "out"))
    assert error_locs(ei.value) == [("body", "training_data_url", "clips/link.mp4")]
    assert "symbolic link" in ei.value.errors[0].msg
    assert os.listdir(work) == []


def test_duplicate_and_clashing_names(tmp_path):
    z = tmp_path / "dup.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.txt", b"1")
        with pytest.warns(UserWarning):
            zf.writestr("a.txt", b"2")
    with pytest.raises(RequestError) as ei:
        extract_archive(str(z), str(tmp_path / "out"))
    assert error_locs(ei.value) == [("body", "training_data_url", "a.txt")]
    z2 = make_zip(tmp_path / "clash.zip", {"a": b"file", "a/b.txt": b"x"})
    with pytest.raises(RequestError):
        extract_archive(str(z2), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_unsupported_compression_refused(tmp_path):
    z = make_zip(tmp_path / "bz.zip", {"a.txt": b"x" * 100}, method=zipfile.ZIP_BZIP2)
    with pytest.raises(RequestError) as ei:
        extract_archive(str(z), str(tmp_path / "out"))
    assert error_locs(ei.value) == [("body", "training_data_url", "a.txt")]
    assert "bzip2" in ei.value.errors[0].msg


def test_dest_must_be_absent_or_empty(tmp_path):
    z = make_zip(tmp_path / "data.zip", {"a.txt": b"a"})
    (tmp_path / "empty").mkdir()
    assert len(extract_archive(str(z), str(tmp_path / "empty"))) == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    with pytest.raises(FileExistsError):
        extract_archive(str(z), str(tmp_path / "full"))
    assert (tmp_path / "full" / "keep").exists()


def _measure(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(RequestError) as ei:
            fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return ei.value, peak, time.perf_counter() - t0


def test_size_cap_declared(tmp_path, big_zero_zip):
    err, peak, secs = _measure(
        lambda: extract_archive(str(big_zero_zip), str(tmp_path / "out"), IntakeLimits(max_extracted_bytes=10 * MiB))
    )
    assert error_locs(err) == [("body", "training_data_url")]
    assert "10 MiB" in str(err)
    assert peak < 16 * MiB and secs < 5
    assert sorted(os.listdir(tmp_path)) == []


def test_size_cap_streaming_with_bounded_memory(tmp_path, big_zero_zip, monkeypatch):
    # Disable the up-front check on declared sizes: the real-byte count alone must stop the copy at the cap.
    monkeypatch.setattr(archive_mod, "_check_declared", lambda *a, **k: None)
    err, peak, secs = _measure(
        lambda: extract_archive(str(big_zero_zip), str(tmp_path / "out"), IntakeLimits(max_extracted_bytes=10 * MiB))
    )
    assert error_locs(err) == [("body", "training_data_url")]
    assert "clips/zeros.bin" in str(err) and "10 MiB" in str(err)
    assert peak < 16 * MiB, peak
    assert secs < 5, secs  # stopped after ~10 MB, not 200 MB
    assert sorted(os.listdir(tmp_path)) == []


def test_lying_header_is_stopped(tmp_path, big_zero_zip):
    """Declared size 1000 bytes in both headers, 200 MB of real data: stops after the declared bytes."""
    raw = bytearray(big_zero_zip.read_bytes())
    lfh = raw.find(b"PK\x03\x04")
    cdh = raw.find(b"PK\x01\x02")
    assert lfh >= 0 and cdh >= 0
    assert struct.unpack_from("<I", raw, cdh + 24)[0] == BIG  # not zip64: plain 32-bit size fields
    struct.pack_into("<I", raw, lfh + 22, 1000)
    struct.pack_into("<I", raw, cdh + 24, 1000)
    liar = tmp_path / "liar.zip"
    liar.write_bytes(bytes(raw))
    with zipfile.ZipFile(liar) as zf:
        assert zf.infolist()[0].file_size == 1000
    out = tmp_path / "out"
    err, peak, secs = _measure(lambda: extract_archive(str(liar), str(out), IntakeLimits(max_extracted_bytes=10 * MiB)))
    assert error_locs(err) == [("body", "training_data_url", "clips/zeros.bin")]
    assert "corrupt" in str(err)
    assert peak < 16 * MiB and secs < 5
    assert sorted(os.listdir(tmp_path)) == ["liar.zip"]


def test_file_count_cap(tmp_path):
    z = make_zip(tmp_path / "many.zip", {f"clips/{i}.txt": b"x" for i in range(12)})
    with pytest.raises(RequestError) as ei:
        extract_archive(str(z), str(tmp_path / "out"), IntakeLimits(max_files=10))
    assert "10 files" in str(ei.value)
    assert not (tmp_path / "out").exists()
    # nested entries count too
    inner = zip_bytes({f"{i}.txt": b"x" for i in range(8)})
    z2 = make_zip(tmp_path / "nested.zip", {"a.txt": b"a", "b.txt": b"b", "in.zip": inner})
    with pytest.raises(RequestError):
        extract_archive(str(z2), str(tmp_path / "out"), IntakeLimits(max_files=10))
    assert not (tmp_path / "out").exists()
    assert len(extract_archive(str(z2), str(tmp_path / "out"), IntakeLimits(max_files=11))) == 10


def test_entry_count_precheck(tmp_path):
    """Central directories with far more entries than allowed are refused before being parsed into memory."""
    z = make_zip(tmp_path / "dirs.zip", {f"d{i}/": b"" for i in range(1100)})
    with pytest.raises(RequestError) as ei:
        extract_archive(str(z), str(tmp_path / "out"), IntakeLimits(max_files=10))
    assert "1100 entries" in str(ei.value)


# ------------------------------------------------------------------------------------------------------------- fetch


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    payloads: dict[str, bytes] = {}
    hits: list[str] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self.hits.append(self.path)
        path = self.path.split("?", 1)[0]
        if path == "/slow":
            time.sleep(1.5)
            return self._send(200, b"late")
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/data.zip")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/nolength":  # streamed without Content-Length: only the running count can stop it
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(bytes(64 * 1024))
            except OSError:
                pass
            return
        if path in self.payloads:
            return self._send(200, self.payloads[path])
        self._send(404, b"not found")

    def _send(self, code, body):
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass


@pytest.fixture(scope="module")
def server():
    _Handler.payloads = {"/data.zip": zip_bytes({"a.txt": b"hello"}), "/big.zip": bytes(3 * MiB)}
    _Handler.hits = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}", srv.server_port
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_fetch_file_url_and_plain_path(tmp_path):
    src = make_zip(tmp_path / "src.zip", {"a.txt": b"hello"})
    dest = tmp_path / "dl" / "archive.zip"
    assert fetch(src.as_uri(), str(dest)) == str(dest)
    assert dest.read_bytes() == src.read_bytes()
    dest2 = tmp_path / "dl" / "archive2.zip"
    assert fetch(str(src), str(dest2)) == str(dest2)
    assert dest2.read_bytes() == src.read_bytes()
    assert sorted(os.listdir(tmp_path / "dl")) == ["archive.zip", "archive2.zip"]  # no .part files


def test_fetch_local_errors(tmp_path):
    dest = tmp_path / "dl" / "a.zip"
    with pytest.raises(RequestError) as ei:
        fetch(str(tmp_path / "missing.zip"), str(dest))
    assert error_locs(ei.value) == [("body", "training_data_url")]
    assert "missing.zip" in str(ei.value) and "not found" in str(ei.value)
    with pytest.raises(RequestError) as ei:
        fetch(str(tmp_path), str(dest), field="reference_url")
    assert error_locs(ei.value) == [("body", "reference_url")]
    big = tmp_path / "big.zip"
    big.write_bytes(bytes(2 * MiB))
    with pytest.raises(RequestError) as ei:
        fetch(str(big), str(dest), IntakeLimits(max_download_bytes=MiB))
    assert "1 MiB" in str(ei.value)
    assert not (tmp_path / "dl").exists()  # the parent this call created is removed again


def test_fetch_http(tmp_path, server):
    base, _ = server
    dest = tmp_path / "a.zip"
    fetch(f"{base}/data.zip", str(dest))
    assert dest.read_bytes() == _Handler.payloads["/data.zip"]
    files = extract_archive(str(dest), str(tmp_path / "out"))
    assert [f.archive_path for f in files] == ["a.txt"]
    dest2 = tmp_path / "b.zip"
    fetch(f"{base}/redirect", str(dest2))
    assert dest2.read_bytes() == _Handler.payloads["/data.zip"]


def test_fetch_http_404(tmp_path, server):
    base, _ = server
    with pytest.raises(RequestError) as ei:
        fetch(f"{base}/nope.zip?X-Amz-Signature=secret", str(tmp_path / "a.zip"))
    msg = ei.value.errors[0].msg
    assert "404" in msg and f"{base}/nope.zip" in msg and "secret" not in msg
    assert os.listdir(tmp_path) == []


def test_fetch_http_oversize(tmp_path, server):
    base, _ = server
    limits = IntakeLimits(max_download_bytes=MiB)
    with pytest.raises(RequestError) as ei:  # refused from Content-Length
        fetch(f"{base}/big.zip", str(tmp_path / "a.zip"), limits)
    assert "1 MiB" in str(ei.value)
    with pytest.raises(RequestError) as ei:  # no Content-Length: stopped by the running count
        fetch(f"{base}/nolength", str(tmp_path / "a.zip"), limits)
    assert "1 MiB" in str(ei.value)
    assert os.listdir(tmp_path) == []


def test_fetch_http_timeout(tmp_path, server):
    base, _ = server
    t0 = time.perf_counter()
    with pytest.raises(RequestError) as ei:
        fetch(f"{base}/slow", str(tmp_path / "a.zip"), IntakeLimits(timeout_s=0.3))
    assert "timed out" in str(ei.value)
    assert time.perf_counter() - t0 < 1.4
    assert os.listdir(tmp_path) == []


def test_fetch_refuses_private_addresses(tmp_path, server):
    base, port = server
    strict = IntakeLimits(allow_private_addresses=False)
    before = len(_Handler.hits)
    for url in (f"{base}/data.zip", f"http://localhost:{port}/data.zip", f"http://[::1]:{port}/x"):
        with pytest.raises(RequestError) as ei:
            fetch(url, str(tmp_path / "a.zip"), strict)
        assert error_locs(ei.value) == [("body", "training_data_url")]
        assert "refused" in str(ei.value)
    assert len(_Handler.hits) == before  # no request reached the server
    src = make_zip(tmp_path / "src.zip", {"a.txt": b"x"})
    for url in (str(src), src.as_uri()):  # and no reading of the service's own disk
        with pytest.raises(RequestError) as ei:
            fetch(url, str(tmp_path / "a.zip"), strict)
        assert "local paths" in str(ei.value)
    assert sorted(os.listdir(tmp_path)) == ["src.zip"]


def test_is_public():
    import ipaddress

    for a in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
              "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "224.0.0.1"):
        assert not _is_public(ipaddress.ip_address(a)), a
    for a in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert _is_public(ipaddress.ip_address(a)), a


def test_fetch_unsupported_scheme(tmp_path):
    for url in ("ftp://example.com/data.zip", "gopher://x/y", "s3://bucket-only"):
        with pytest.raises(RequestError) as ei:
            fetch(url, str(tmp_path / "a.zip"))
        assert error_locs(ei.value) == [("body", "training_data_url")]
        assert url in str(ei.value)
    with pytest.raises(RequestError) as ei:
        fetch("", str(tmp_path / "a.zip"))
    assert os.listdir(tmp_path) == []


def test_redact_url():
    assert redact_url("https://user:pw@h.example/a.zip?sig=1#f") == "https://user:***@h.example/a.zip?…"
    assert redact_url("/data/a.zip") == "/data/a.zip"


class _S3Handler(BaseHTTPRequestHandler):
    """Just enough of S3 for pyarrow: HeadObject, ranged GetObject, an empty ListObjectsV2."""

    protocol_version = "HTTP/1.1"
    objects: dict[str, bytes] = {}

    def log_message(self, *args):
        pass

    def _key(self):
        return self.path.split("?", 1)[0]

    def do_HEAD(self):
        data = self.objects.get(self._key())
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data)) if data is not None else "0")
        self.send_header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
        self.end_headers()

    def do_GET(self):
        data = self.objects.get(self._key())
        if data is None:
            body = (b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><IsTruncated>false</IsTruncated>'
                    b"<KeyCount>0</KeyCount></ListBucketResult>")
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range")
        if rng:
            a, b = rng.split("=", 1)[1].split("-")
            start, end = int(a), min(int(b), len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start : end + 1]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_fetch_s3_against_local_endpoint(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow.fs")
    payload = zip_bytes({"a.txt": os.urandom(100_000)})
    _S3Handler.objects = {"/bucket/data/set.zip": payload}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _S3Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{srv.server_port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        dest = tmp_path / "a.zip"
        fetch("s3://bucket/data/set.zip", str(dest), IntakeLimits(timeout_s=5))
        assert dest.read_bytes() == payload
        with pytest.raises(RequestError) as ei:
            fetch("s3://bucket/data/set.zip", str(tmp_path / "b.zip"), IntakeLimits(max_download_bytes=1000))
        assert "1000 bytes" in str(ei.value)
        with pytest.raises(RequestError) as ei:
            fetch("s3://bucket/missing.zip", str(tmp_path / "c.zip"), IntakeLimits(timeout_s=5))
        assert "s3://bucket/missing.zip" in str(ei.value)
        assert os.listdir(tmp_path) == ["a.zip"]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
