"""Shared storage (ltxtrain.storage and a job with --storage) against a real S3 protocol server: moto on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyarrow import fs as pafs

from ltxtrain import storage
from ltxtrain.jobs import JobOptions, JobStorage, resolve_job_model, run_job, storage_key
from ltxtrain.sampledata import make_dataset_zip


BUCKET = "bucket"
AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_EC2_METADATA_DISABLED")


@pytest.fixture(scope="module")
def s3():
    """An S3 server on 127.0.0.1 with one bucket; the standard AWS variables point this process at it."""
    from moto import server as moto_server  # in the test extras: a missing install fails, it does not skip
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
            mp.delenv(key, raising=False)
        for key, value in zip(AWS_ENV, (f"http://{host}:{port}", "testing", "testing", "us-east-1", "true")):
            mp.setenv(key, value)
        admin = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", access_key="testing",
                                  secret_key="testing", region="us-east-1", allow_bucket_creation=True)
        admin.create_dir(BUCKET)
        yield SimpleNamespace(fs=admin, endpoint=f"http://{host}:{port}")
    server.stop()


def _objects(fs, prefix: str) -> dict[str, pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return {os.path.relpath(i.path, prefix): i for i in infos if i.type == pafs.FileType.File}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def folder(tmp_path) -> Path:
    """A small latent-cache-like folder: nested files, a manifest, a half-written temp file and a symlink."""
    root = tmp_path / "src"
    (root / "video").mkdir(parents=True)
    (root / "text").mkdir()
    for i in range(5):
        (root / "video" / f"s{i}.safetensors").write_bytes(os.urandom(1000 + i))
    (root / "text" / "t0.safetensors").write_bytes(os.urandom(300))
    (root / "manifest.json").write_text(json.dumps({"samples": 5}))
    (root / "video" / ".s9.safetensors.123.tmp").write_bytes(b"half")  # never copied
    (tmp_path / "elsewhere.bin").write_bytes(b"linked")
    (root / "linked.bin").symlink_to(tmp_path / "elsewhere.bin")  # copied as a file
    return root


@pytest.fixture
def copies(monkeypatch):
    """Every file copy storage makes, in order (source, destination)."""
    done, lock, real = [], threading.Lock(), storage._copy

    def record(src_fs, src, dst_fs, dst, uri):
        real(src_fs, src, dst_fs, dst, uri)
        with lock:
            done.append((src, dst))

    monkeypatch.setattr(storage, "_copy", record)
    return done


def test_uris_and_local_paths():
    assert storage.is_remote("s3://b/p") and storage.is_remote("gs://b/p")
    assert not any(storage.is_remote(p) for p in ("/data/x", "rel/x", "file:///data/x", "C:\\data"))
    assert storage.join("s3://b/p/", "cache", "x") == "s3://b/p/cache/x"
    assert storage.join("s3://b", "models") == "s3://b/models"
    assert storage.join("s3://b/p?scheme=http", "c") == "s3://b/p/c?scheme=http"
    assert storage.join("/a/b", "c") == "/a/b/c"
    assert storage.node_local_copy("/some/local/folder") == "/some/local/folder"  # unchanged, nothing fetched
    fs, path = storage.resolve("file:///tmp/x")
    assert isinstance(fs, pafs.LocalFileSystem) and path == "/tmp/x"


def test_upload_download_round_trip(s3, folder, tmp_path):
    uri = f"s3://{BUCKET}/round/cache"
    copied = storage.upload_dir(folder, uri)
    assert sorted(copied) == sorted(_tree(folder).keys() - {"video/.s9.safetensors.123.tmp"})
    assert set(_objects(s3.fs, f"{BUCKET}/round/cache")) == set(copied)
    back = tmp_path / "back"
    assert sorted(storage.download_dir(uri, back)) == sorted(copied)
    expected = {k: v for k, v in _tree(folder).items() if not k.endswith(".tmp")}
    assert _tree(back) == expected
    assert not [p for p in back.rglob("*") if p.name.endswith(".part")]  # temporary names were renamed away


def test_second_upload_copies_nothing_then_only_what_changed(s3, folder):
    uri = f"s3://{BUCKET}/skip/cache"
    storage.upload_dir(folder, uri)
    before = {k: i.mtime for k, i in _objects(s3.fs, f"{BUCKET}/skip/cache").items()}
    time.sleep(1.1)  # S3 modification times have 1 s resolution
    assert storage.upload_dir(folder, uri) == []
    assert {k: i.mtime for k, i in _objects(s3.fs, f"{BUCKET}/skip/cache").items()} == before
    (folder / "video" / "s0.safetensors").write_bytes(os.urandom(2000))  # new size: copied
    (folder / "video" / "s1.safetensors").write_bytes(os.urandom(1001))  # same size: a data file is trusted
    (folder / "manifest.json").write_text(json.dumps({"samples": 6}))  # same size, new bytes: the marker is copied
    assert storage.upload_dir(folder, uri) == ["video/s0.safetensors", "manifest.json"]


def test_manifest_is_written_after_everything_else(s3, folder, tmp_path, copies):
    storage.upload_dir(folder, f"s3://{BUCKET}/order/cache")
    assert len(copies) == 8 and copies[-1][1].endswith("/manifest.json")
    copies.clear()
    storage.download_dir(f"s3://{BUCKET}/order/cache", tmp_path / "down")
    assert len(copies) == 8 and copies[-1][1].endswith(os.sep + "manifest.json")


def test_node_local_copy_downloads_once_for_concurrent_callers(s3, folder, tmp_path, copies, monkeypatch):
    uri = f"s3://{BUCKET}/shared/cache"
    storage.upload_dir(folder, uri)
    copies.clear()
    real = storage._copy

    def slow(*args):  # keep the first caller busy while the second one arrives
        time.sleep(0.05)
        real(*args)

    monkeypatch.setattr(storage, "_copy", slow)
    results, errors = [], []

    def worker():
        try:
            results.append(storage.node_local_copy(uri, root=tmp_path / "node"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(set(results)) == 1
    local = Path(results[0])
    assert local.name == "cache" and local.parent.parent == tmp_path / "node"
    assert len(copies) == 8  # every file once, whichever caller came first
    assert _tree(local) == {k: v for k, v in _tree(folder).items() if not k.endswith(".tmp")}
    # a later call fetches only what changed at the URI
    (folder / "text" / "t1.safetensors").write_bytes(b"new caption")
    storage.upload_dir(folder, uri)
    copies.clear()
    assert storage.node_local_copy(uri, root=tmp_path / "node") == str(local)
    assert [os.path.basename(dst) for _, dst in copies] == ["t1.safetensors"]
    # a single file keeps its name (a single-file checkpoint's stem names its converted model)
    one = storage.node_local_copy(f"{uri}/video/s2.safetensors", root=tmp_path / "node")
    assert one.endswith("/s2.safetensors") and Path(one).read_bytes() == (folder / "video" / "s2.safetensors").read_bytes()


def test_write_bytes_publishes_whole_files_that_a_node_copy_then_picks_up(s3, tmp_path):
    """Streaming encoders persist each window with write_bytes; a worker's later node_local_copy fetches them."""
    uri = f"s3://{BUCKET}/streamed/cache"
    storage.write_bytes(storage.join(uri, "video/a.safetensors"), b"first")
    local = Path(storage.node_local_copy(uri, tmp_path / "copies"))
    assert _tree(local) == {"video/a.safetensors": b"first"}
    storage.write_bytes(storage.join(uri, "video/b.safetensors"), b"second")  # written while training runs
    assert storage.node_local_copy(uri, tmp_path / "copies") == str(local)
    assert _tree(local) == {"video/a.safetensors": b"first", "video/b.safetensors": b"second"}
    plain = tmp_path / "plain"
    storage.write_bytes(str(plain / "video" / "c.safetensors"), b"third")  # a local cache: temp name, then rename
    assert _tree(plain) == {"video/c.safetensors": b"third"}
    with pytest.raises(storage.StorageError, match="s3://no-such-bucket/x"):
        storage.write_bytes("s3://no-such-bucket/x", b"")


def test_errors_name_the_uri(s3, tmp_path):
    missing = f"s3://{BUCKET}/no/such/thing"
    for call in (lambda: storage.node_local_copy(missing, root=tmp_path), lambda: storage.download_dir(missing, tmp_path)):
        with pytest.raises(FileNotFoundError, match=missing):
            call()
    with pytest.raises(OSError, match="s3://no-such-bucket-here/x"):
        storage.node_local_copy("s3://no-such-bucket-here/x", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="s3://bucket/up"):
        storage.upload_dir(tmp_path / "absent", "s3://bucket/up")


def test_job_storage_layout_and_fresh_head_node(s3, folder, tmp_path):
    """What a job does around preprocessing: publish the cache, and on a fresh head node fetch it back first."""
    out = tmp_path / "jobs" / "job-7"
    shared = JobStorage.for_job(out, f"s3://{BUCKET}/runs")
    key = storage_key(out)
    assert key.startswith("job-7-") and key == storage_key(tmp_path / "jobs" / ".." / "jobs" / "job-7")
    assert key != storage_key(tmp_path / "other" / "job-7")
    assert shared.ray_results == f"s3://{BUCKET}/runs/{key}/ray_results"
    os.makedirs(shared.work)
    os.symlink(folder, shared.local_cache)
    assert shared.push_cache() == f"s3://{BUCKET}/runs/{key}/cache"
    os.unlink(shared.local_cache)  # the next head node starts without it
    shared.pull_cache()
    assert _tree(Path(shared.local_cache)) == {k: v for k, v in _tree(folder).items() if not k.endswith(".tmp")}
    # models: a local folder is uploaded once under models/<name>; a remote folder is used where it is
    model = tmp_path / "tiny-x"
    (model / "transformer").mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    (model / "transformer" / "w.safetensors").write_bytes(os.urandom(64))
    assert shared.model_for_workers(str(model)) == f"s3://{BUCKET}/runs/models/tiny-x"
    assert set(_objects(s3.fs, f"{BUCKET}/runs/models/tiny-x")) == {"model_index.json", "transformer/w.safetensors"}
    # a remote model folder: the driver resolves a node-local copy, the workers get the URI itself
    storage.upload_dir(model, f"s3://{BUCKET}/zoo/ltx-x")
    opts = JobOptions(model=f"s3://{BUCKET}/zoo/ltx-x", home=tmp_path / "home")
    local, for_workers = resolve_job_model(opts, shared)
    assert for_workers == f"s3://{BUCKET}/zoo/ltx-x" and Path(local).name == "ltx-x"
    assert Path(local).is_relative_to(tmp_path / "home" / "storage") and (Path(local) / "model_index.json").is_file()
    assert JobStorage.for_job(out, None).ray_results == str(out / "work" / "ray_results")
    assert JobStorage.for_job(out, None).model_for_workers(str(model)) == str(model)


def test_cli_and_environment_name_the_storage(monkeypatch, tmp_path):
    from ltxtrain import cli, jobs

    seen = []

    def fake_run_job(endpoint, payload, out, opts):
        seen.append(opts)
        raise SystemExit(0)

    monkeypatch.setattr(jobs, "run_job", fake_run_job)
    (tmp_path / "r.json").write_text("{}")
    args = ["train", "t2v", str(tmp_path / "r.json"), "--out", str(tmp_path / "o")]
    monkeypatch.delenv("LTXTRAIN_STORAGE", raising=False)
    for extra, env, expected in (([], None, None), (["--storage", "s3://b/p"], None, "s3://b/p"),
                                 ([], "s3://b/env", "s3://b/env"), (["--storage", "s3://b/p"], "s3://b/env", "s3://b/p")):
        if env:
            monkeypatch.setenv("LTXTRAIN_STORAGE", env)
        with pytest.raises(SystemExit):
            cli.main(args + extra)
        assert seen.pop().storage == expected


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("st")
    return make_dataset_zip(str(d / "clips.zip"), kind="video", n=2, seconds=0.6, fps=25, width=160, height=96)


def test_a_crashed_job_resumes_from_its_s3_checkpoint_when_run_again(ray_cluster, tiny_model, s3, dataset,
                                                                     tmp_path):
    """Resuming a job by id after the cluster went down: a run with --storage s3:// dies at step 60 with no restarts
    left; its checkpoints are in the bucket, not on the head's disk. Run again with the same --out after its local
    work dir is gone (a fresh head node), it fetches the latent cache, finds the run snapshot, carries on from the
    newest checkpoint and finishes; a finished job leaves no checkpoints behind. The driver is this process: the
    S3 settings reach the Train controller and workers through run_training (the shared head node was started
    before they were set)."""
    out = tmp_path / "job"
    prefix = f"{BUCKET}/e2e"
    key = storage_key(out)
    payload = {"training_data_url": dataset, "resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9,
               "rank": 8, "learning_rate": 2e-3, "number_of_steps": 100}
    opts = dict(model="tiny", num_workers=2, use_gpu=False, checkpoint_every=25, max_failures=0,
                storage=f"s3://{prefix}")
    with pytest.raises(Exception, match="Training failed"):
        run_job("t2v", payload, str(out), JobOptions(**opts, fail_at_step=60))
    assert any("checkpoint_" in k and k.endswith("trainer_state.json")
               for k in _objects(s3.fs, f"{prefix}/{key}/ray_results"))
    assert not (out / "work" / "ray_results").exists()  # run storage is the bucket, not the head's disk
    cache = _objects(s3.fs, f"{prefix}/{key}/cache")
    assert "manifest.json" in cache and sum(k.startswith("video/") for k in cache) == 2
    assert "model_index.json" in _objects(s3.fs, f"{prefix}/models/{Path(tiny_model).name}")

    shutil.rmtree(out / "work")
    result = run_job("t2v", payload, str(out), JobOptions(**opts))
    assert result.metrics["step"] == 100 and result.metrics["resumed_from_step"] in (25, 50)
    assert (out / result.lora_file.file_name).stat().st_size > 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 101, 10))  # the crashed run's rows up to its checkpoint, then the resumed ones
    assert not _objects(s3.fs, f"{prefix}/{key}/ray_results")  # a finished job drops its restart state
