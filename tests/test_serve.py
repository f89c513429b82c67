"""The HTTP service (serve/) against the session's local Ray head node and the tiny model.

Most tests drive the FastAPI app in-process (TestClient); trainings still run as real Ray jobs through the Jobs
API. One test deploys the Serve application and talks HTTP to it. Trainings are the slow part: the t2v, ic-lora and
bad-dataset jobs are submitted together by one module fixture and shared.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from serve.app import create_app  # noqa: E402
from serve.config import ServeConfig  # noqa: E402
from serve.store import JobStore  # noqa: E402

from types import SimpleNamespace  # noqa: E402

TOKENS = {"key-alice": "alice", "key-bob": "bob"}
ALICE = {"Authorization": "Key key-alice"}
BOB = {"Authorization": "Key key-bob"}
SMALL = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "number_of_steps": 100, "rank": 8,
         "trigger_phrase": "tinystyle"}
IC_SMALL = {**SMALL, "frame_rate": 25, "validation_resolution": "low", "validation_aspect_ratio": "16:9",
            "validation_number_of_frames": 9}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def poll(fetch, done, limit_s: float, what: str, interval: float = 1.0):
    """Call fetch() until done(value); a bounded loop (fails with the last value seen)."""
    end = time.monotonic() + limit_s
    value = fetch()
    while not done(value):
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not reached; last seen {value}")
        time.sleep(interval)
        value = fetch()
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from ltxtrain.sampledata import make_dataset_zip, write_video

    d = tmp_path_factory.mktemp("serve_data")
    t2v = make_dataset_zip(str(d / "clips.zip"), kind="video", n=2, seconds=0.5, fps=25, width=160, height=96)
    pairs = d / "pairs.zip"
    with zipfile.ZipFile(pairs, "w") as zf:
        for i, base in enumerate(("a", "b")):
            for suffix, seed in (("_start", 100 + i), ("_end", 200 + i)):
                p = d / f"{base}{suffix}.mp4"
                write_video(str(p), 0.5, 25, 160, 96, seed=seed)
                zf.write(p, p.name)
            zf.writestr(f"{base}.txt", "a red square turns blue")
    empty = d / "no_media.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no clips in here")
    return {"t2v": t2v, "ic": str(pairs), "empty": str(empty)}


def make_config(ray_cluster, root: Path, **overrides) -> ServeConfig:
    home = os.environ["LTXTRAIN_HOME"]
    values = dict(db_path=str(root / "jobs.db"), out_root=str(root / "jobs"), tokens=TOKENS,
                  dashboard=ray_cluster["dashboard"], model="tiny", workers=1, cpu=True, max_running=2,
                  allow_private_urls=True,  # datasets are local files in these tests
                  scheduler_interval_s=0.5, home=home, python=sys.executable,
                  job_env={"LTXTRAIN_HOME": home, "HF_HUB_OFFLINE": "1"})
    values.update(overrides)
    return ServeConfig(**values)


@pytest.fixture(scope="module")
def config(ray_cluster, tiny_model, tmp_path_factory):
    return make_config(ray_cluster, tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(config):
    with TestClient(create_app(config)) as c:
        yield c


@pytest.fixture(scope="module")
def submitted(client, datasets):
    """t2v, a dataset that fails intake, and ic-lora/v2v, submitted together (max_running=2)."""
    ids = {}
    for name, endpoint, payload in (("t2v", "t2v", {"training_data_url": datasets["t2v"], **SMALL}),
                                    ("bad", "t2v", {"training_data_url": datasets["empty"], **SMALL}),
                                    ("ic", "ic-lora/v2v", {"training_data_url": datasets["ic"], **IC_SMALL})):
        r = client.post(f"/{endpoint}", json=payload, headers=ALICE)
        assert r.status_code == 202, r.text
        ids[name] = r.json()
    return ids


def wait_terminal(client, request_id: str, limit_s: float = 420) -> dict:
    return poll(lambda: client.get(f"/requests/{request_id}/status", headers=ALICE).json(),
                lambda s: s["status"] in TERMINAL, limit_s, f"request {request_id} finishing")


@pytest.fixture(scope="module")
def finished_t2v(client, submitted):
    status = wait_terminal(client, submitted["t2v"]["request_id"])
    assert status["status"] == "COMPLETED", status
    return submitted["t2v"]["request_id"]


# ------------------------------------------------------------------------------------------------ requests
def test_bad_request_is_422_naming_the_field_and_records_nothing(client, config):
    store = JobStore(config.db_path)
    before = store.count()
    listed = client.get("/requests", headers=ALICE).json()
    r = client.post("/t2v", json={"training_data_url": "x.zip", "rank": 7, "number_of_stepz": 100}, headers=ALICE)
    assert r.status_code == 422
    locs = {tuple(e["loc"]) for e in r.json()["detail"]}
    assert locs == {("body", "rank"), ("body", "number_of_stepz")}, r.json()
    assert all(e["msg"] for e in r.json()["detail"])
    r = client.post("/t2v", content=b"{not json", headers=ALICE)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
    # ic-lora cross-field rule, named by its field
    r = client.post("/ic-lora/v2v", json={"training_data_url": "x.zip", "reference_temporal_scale_factor": 2},
                    headers=ALICE)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "reference_temporal_scale_factor"]
    r = client.post("/t2v-nope", json={"training_data_url": "x.zip"}, headers=ALICE)
    assert r.status_code == 404 and "t2v-nope" in r.json()["detail"][0]["msg"]
    assert store.count() == before
    assert client.get("/requests", headers=ALICE).json() == listed


def test_keys_are_required_and_checked(client):
    assert client.post("/t2v", json={"training_data_url": "x.zip"}).status_code == 401
    r = client.get("/requests", headers={"Authorization": "Key nope"})
    assert r.status_code == 401 and r.json()["detail"][0]["loc"] == ["header", "Authorization"]
    assert client.get("/requests", headers={"Authorization": "Bearer key-alice"}).status_code == 401
    assert client.get("/requests", headers=ALICE).status_code == 200


def test_service_refuses_local_and_private_dataset_urls_unless_allowed(ray_cluster, tmp_path, datasets):
    cfg = make_config(ray_cluster, tmp_path, allow_private_urls=False, scheduler_interval_s=0)
    with TestClient(create_app(cfg)) as c:
        for url in (datasets["t2v"], "file://" + datasets["t2v"], "http://127.0.0.1:9/x.zip",
                    "http://[::1]/x.zip", "http://169.254.169.254/latest", "http://localhost/x.zip"):
            r = c.post("/t2v", json={"training_data_url": url, **SMALL}, headers=ALICE)
            assert r.status_code == 422, (url, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "training_data_url"]
        assert JobStore(cfg.db_path).count() == 0
        # the job itself is told to refuse them too (hosts that only *resolve* to private addresses)
        from serve.runner import Runner

        runner = Runner(cfg, JobStore(cfg.db_path))
        job = runner.submit("alice", "t2v", {"training_data_url": "https://example.com/x.zip", **SMALL})
        assert "--strict-urls" in runner.entrypoint(job)
        assert "--strict-urls" not in Runner(make_config(ray_cluster, tmp_path / "b"), runner.store).entrypoint(job)


@pytest.mark.parametrize("url", ["LOCAL", "http://localhost:9/clips.zip"])
def test_strict_job_entrypoint_refuses_local_and_loopback_urls(datasets, tmp_path, url):
    url = datasets["t2v"] if url == "LOCAL" else url
    req = tmp_path / "request.json"
    req.write_text(json.dumps({"training_data_url": url, **SMALL}))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "jobs/train.py", "t2v", str(req), "--out", str(out), "--cpu",
                           "--strict-urls"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["accepted"] is False and result["billing_units"] == 0
    assert result["errors"][0]["loc"] == ["body", "training_data_url"]
    assert "local paths are not accepted" in result["errors"][0]["msg"] or "refused" in result["errors"][0]["msg"]


# ------------------------------------------------------------------------------------------------ round trips
def test_submit_answers_202_with_urls(submitted):
    s = submitted["t2v"]
    rid = s["request_id"]
    assert s["status_url"].endswith(f"/requests/{rid}/status")
    assert s["response_url"].endswith(f"/requests/{rid}")
    assert s["cancel_url"].endswith(f"/requests/{rid}/cancel")


def test_t2v_round_trip_outputs_download(client, finished_t2v):
    rid = finished_t2v
    status = client.get(f"/requests/{rid}/status", headers=ALICE).json()
    assert status["status"] == "COMPLETED" and status["billing_units"] == 100
    r = client.get(f"/requests/{rid}", headers=ALICE)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["billing_units"] == 100 and out["number_of_steps"] == 100 and out["samples"] == 2
    assert out["video"] is None and out["debug_dataset"] is None
    lora = out["lora_file"]
    assert lora["url"] == f"http://testserver/requests/{rid}/files/{lora['file_name']}"
    got = client.get(lora["url"], headers=ALICE)
    assert got.status_code == 200 and len(got.content) == lora["file_size"] > 0
    from safetensors.torch import load

    tensors = load(got.content)
    assert tensors and all(k.startswith("diffusion_model.") for k in tensors)
    cfg = client.get(out["config_file"]["url"], headers=ALICE)
    assert cfg.status_code == 200 and cfg.json()["trigger_phrase"] == "tinystyle" and cfg.json()["rank"] == 8
    metrics = client.get(f"/requests/{rid}/files/metrics.jsonl", headers=ALICE)
    rows = [json.loads(line) for line in metrics.text.splitlines()]
    assert rows[-1]["step"] == 100 and all(row["loss"] > 0 for row in rows)
    # only the outputs are served: no other file of the job's directory
    assert client.get(f"/requests/{rid}/files/request.json", headers=ALICE).status_code == 404
    assert client.get(f"/requests/{rid}/files/..%2F..%2Fjobs.db", headers=ALICE).status_code in (404, 405)


def test_status_logs_come_from_the_ray_job(client, finished_t2v):
    body = client.get(f"/requests/{finished_t2v}/status", params={"logs": 1}, headers=ALICE).json()
    assert any("preprocessed 2 samples" in e["message"] for e in body["logs"]), body["logs"][-20:]
    assert all(set(e) == {"message", "level", "source", "timestamp"} for e in body["logs"])
    assert client.get(f"/requests/{finished_t2v}/status", headers=ALICE).json()["logs"] == []  # not asked for


def test_dataset_error_fails_the_job_with_the_422_shape_and_bills_nothing(client, submitted):
    rid = submitted["bad"]["request_id"]
    status = wait_terminal(client, rid)
    assert status["status"] == "FAILED" and status["billing_units"] == 0, status
    assert status["detail"] and status["detail"][0]["loc"][:2] == ["body", "training_data_url"], status
    r = client.get(f"/requests/{rid}", headers=ALICE)
    assert r.status_code == 422 and r.json()["billing_units"] == 0
    assert r.json()["detail"][0]["loc"][:2] == ["body", "training_data_url"]


def test_ic_lora_round_trip(client, submitted):
    rid = submitted["ic"]["request_id"]
    status = wait_terminal(client, rid)
    assert status["status"] == "COMPLETED", status
    out = client.get(f"/requests/{rid}", headers=ALICE).json()
    assert out["endpoint"] == "ic-lora/v2v" and out["billing_units"] == 100
    got = client.get(out["lora_file"]["url"], headers=ALICE)
    from safetensors import safe_open

    path = Path(client.app.state.config.out_root) / rid / "downloaded.safetensors"
    path.write_bytes(got.content)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["ltxtrain_endpoint"] == "ic-lora/v2v"
        assert f.metadata()["reference_downscale_factor"] == "1"


# ------------------------------------------------------------------------------------------------ resume
# The first schema of the jobs table, as databases made before resumable jobs have it.
OLD_SCHEMA = """
CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,
    endpoint TEXT NOT NULL, request TEXT NOT NULL, status TEXT NOT NULL, ray_job_id TEXT, submitted_at REAL,
    out_dir TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL, billing_units INTEGER NOT NULL DEFAULT 0,
    error TEXT, result TEXT, stop_pending INTEGER NOT NULL DEFAULT 0);
CREATE INDEX jobs_owner ON jobs (owner, seq);
CREATE INDEX jobs_status ON jobs (status, seq);
"""


class FakeJobs:
    """The part of Ray's JobSubmissionClient the Runner uses, answering as Ray does; `restart()` forgets every job,
    as a restarted head node does (its Jobs table is gone)."""

    def __init__(self):
        self.jobs: dict[str, str] = {}  # submission id -> status
        self.submitted: list[tuple[str, str]] = []  # (submission id, entrypoint)

    def submit_job(self, *, entrypoint, submission_id, runtime_env, metadata):
        if submission_id in self.jobs:
            raise RuntimeError(f"Request failed with status code 400: Job with submission_id {submission_id} "
                               f"already exists. Please use a different submission_id.")
        self.jobs[submission_id] = "RUNNING"
        self.submitted.append((submission_id, entrypoint))
        return submission_id

    def _known(self, sid):
        if sid not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {sid} does not exist.")

    def get_job_info(self, sid):
        from ray.job_submission import JobStatus

        self._known(sid)
        return SimpleNamespace(status=JobStatus(self.jobs[sid]), message="the job failed")

    def stop_job(self, sid):
        self._known(sid)
        return True

    def get_job_logs(self, sid):
        self._known(sid)
        return ""

    def restart(self):
        self.jobs.clear()


def fake_config(tmp_path, **overrides) -> ServeConfig:
    return ServeConfig(**{"db_path": str(tmp_path / "jobs.db"), "out_root": str(tmp_path / "jobs"), "tokens": TOKENS,
                          "scheduler_interval_s": 0, "max_running": 1, "allow_private_urls": True, **overrides})


def test_store_migrates_an_old_database_and_resume_is_compare_and_set(tmp_path):
    from serve.runner import ray_job_id_for

    db = tmp_path / "jobs.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(OLD_SCHEMA)
        for i, status in enumerate(("FAILED", "COMPLETED", "CANCELLED", "IN_QUEUE")):
            conn.execute("INSERT INTO jobs (id, owner, endpoint, request, status, ray_job_id, submitted_at, out_dir, "
                         "created, updated, error, stop_pending) VALUES (?, 'alice', 't2v', '{}', ?, ?, 1.0, ?, ?, ?, "
                         "?, ?)", (f"old{i}", status, f"ltxtrain-old{i}", str(tmp_path / f"old{i}"), i, i,
                                   json.dumps({"msg": "boom"}) if status == "FAILED" else None,
                                   int(status == "CANCELLED")))
    store = JobStore(str(db))
    JobStore(str(db))  # opening it again (another replica) finds nothing left to migrate
    failed = store.get("old0")
    assert (failed.status, failed.attempt, failed.auto_resumes, failed.error) == ("FAILED", 0, 0, {"msg": "boom"})
    assert [store.queue_position(store.get("old3"))] == [0]  # the old queue order is kept (positions from 0)

    assert store.resume("old0") and not store.resume("old0")  # FAILED → IN_QUEUE once; now it is queued
    job = store.get("old0")
    assert (job.status, job.attempt, job.error, job.submitted_at, job.ray_job_id) == ("IN_QUEUE", 1, None, None, None)
    assert store.queue_position(job) == 1  # behind the job that was already waiting
    assert not store.resume("old1") and store.get("old1").status == "COMPLETED"
    assert not store.resume("old2")  # cancelled, but Ray has not confirmed the stop: it still holds its workers
    store.stopped("old2")
    assert store.resume("old2") and store.get("old2").attempt == 1
    assert not store.resume("nope")

    # claims: oldest queue place first; a resumed attempt gets its own Ray job id, attempt 0 keeps the old one
    claimed = [store.claim_next(10, ray_job_id_for) for _ in range(4)]
    assert [(j.id, j.ray_job_id) for j in claimed[:3]] == [("old3", "ltxtrain-old3"), ("old0", "ltxtrain-old0-r1"),
                                                           ("old2", "ltxtrain-old2-r1")]
    assert claimed[3] is None
    # news about an older attempt's Ray job does not end the current attempt
    assert store.mark_submitted("old0", "ltxtrain-old0-r1")
    assert not store.finish("old0", "FAILED", ray_job_id="ltxtrain-old0")
    assert not store.requeue_lost("old0", "ltxtrain-old0")
    assert store.requeue_lost("old0", "ltxtrain-old0-r1") and not store.requeue_lost("old0", "ltxtrain-old0-r1")
    job = store.get("old0")
    assert (job.status, job.attempt, job.auto_resumes) == ("IN_QUEUE", 2, 1)
    later = store.create("alice", "t2v", {}, lambda i: tmp_path / i)
    assert store.queue_position(job) == 0 and store.queue_position(later) == 1  # it was running: it goes first


def test_a_job_whose_ray_job_vanished_is_resubmitted_as_its_next_attempt(tmp_path, caplog):
    """After a cluster restart Ray answers "does not exist" for a submitted job: the job is queued again and
    submitted under a new id with the same entrypoint (the same --out: its checkpoints and cache), a bounded number
    of times in a row; then it fails with a message that says how to resume it by hand, which resets the bound."""
    from serve.runner import Runner

    fake = FakeJobs()
    runner = Runner(fake_config(tmp_path, auto_resume_attempts=2), JobStore(str(tmp_path / "jobs.db")), client=fake)
    store = runner.store
    job = runner.submit("alice", "t2v", {"training_data_url": "clips.zip", **SMALL})
    other = runner.submit("alice", "t2v", {"training_data_url": "clips.zip", **SMALL})
    runner.pump()
    assert [sid for sid, _ in fake.submitted] == [f"ltxtrain-{job.id}"]
    entrypoint = fake.submitted[0][1]
    assert f"--out {job.out_dir}" in entrypoint
    (Path(job.out_dir) / "result.json").write_text('{"accepted": false}')  # left by an earlier attempt

    with caplog.at_level(logging.WARNING, logger="ltxtrain.serve"):
        for attempt in (1, 2):
            fake.restart()
            runner.pump()  # reconciles: gone → queued again (first in line: it was running) → submitted again
            assert fake.submitted[-1] == (f"ltxtrain-{job.id}-r{attempt}", entrypoint)
            rec = store.get(job.id)
            assert (rec.status, rec.attempt, rec.auto_resumes, rec.error) == ("IN_PROGRESS", attempt, attempt, None)
            assert store.get(other.id).status == "IN_QUEUE"
            assert not (Path(job.out_dir) / "result.json").exists()  # not mistaken for this attempt's result
    assert "no longer exists" in caplog.text and "automatic resumption 2 of 2" in caplog.text

    fake.restart()
    runner.pump()  # the third loss in a row: FAILED, and the queue moves on
    rec = store.get(job.id)
    assert rec.status == "FAILED" and rec.attempt == 2
    assert f"POST /requests/{job.id}/resume" in rec.error["msg"] and "no longer exists" in rec.error["msg"]
    assert fake.submitted[-1][0] == f"ltxtrain-{other.id}"

    fake.jobs[f"ltxtrain-{other.id}"] = "SUCCEEDED"  # (no result.json: it fails, and frees the slot)
    assert runner.resume(store.get(job.id)) and not runner.resume(store.get(job.id))
    runner.pump()
    assert fake.submitted[-1] == (f"ltxtrain-{job.id}-r3", entrypoint)
    rec = store.get(job.id)
    assert (rec.status, rec.attempt, rec.auto_resumes) == ("IN_PROGRESS", 3, 0)  # the bound starts over
    fake.restart()
    runner.pump()
    assert fake.submitted[-1][0] == f"ltxtrain-{job.id}-r4"
    # with automatic resumption off, a lost job fails at once
    off = Runner(fake_config(tmp_path, auto_resume_attempts=0), store, client=fake)
    fake.restart()
    off.pump()
    assert store.get(job.id).status == "FAILED" and len(fake.submitted) == 6


def test_resume_route_answers_202_for_failed_and_cancelled_jobs_and_409_or_404_otherwise(tmp_path):
    fake = FakeJobs()
    payload = {"training_data_url": "https://example.com/clips.zip", **SMALL}
    with TestClient(create_app(fake_config(tmp_path, max_running=1))) as c:
        c.app.state.runner._client = fake
        a, b, d = [c.post("/t2v", json=payload, headers=ALICE).json()["request_id"] for _ in range(3)]

        def status(rid):
            return c.get(f"/requests/{rid}/status", headers=ALICE).json()

        def resume(rid, path="requests", headers=ALICE, **kw):
            return c.post(f"/{path}/{rid}/resume", headers=headers, **kw)

        first = {rid: status(rid) for rid in (a, b, d)}  # the queue moves on reads here (no scheduler thread)
        assert [first[rid]["status"] for rid in (a, b, d)] == ["IN_PROGRESS", "IN_QUEUE", "IN_QUEUE"]
        assert all(s["attempt"] == 1 and s["resumed"] == 0 and "resume_url" not in s for s in first.values())
        for rid in (a, b):
            r = resume(rid)
            assert r.status_code == 409 and "only FAILED or CANCELLED" in r.json()["detail"][0]["msg"], r.text
            assert r.json()["status"] == first[rid]["status"]
        # another user's job, an unknown one, no key, a cookie (state-changing routes need the header)
        assert resume(b, headers=BOB).status_code == 404 and resume("nope").status_code == 404
        assert resume(b, headers={}).status_code == 401
        assert resume(b, headers={"Cookie": "ltxtrain_key=key-alice"}).status_code == 401

        fake.jobs[f"ltxtrain-{a}"] = "FAILED"
        failed = status(a)
        assert failed["status"] == "FAILED" and failed["resume_url"].endswith(f"/requests/{a}/resume")
        page = c.get("/", headers=ALICE).text
        assert page.count('class="resume"') == 1 and f'data-url="{failed["resume_url"]}"' in page
        r = resume(a)
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "IN_QUEUE" and body["queue_position"] == 1  # behind the job already waiting
        assert body["status_url"].endswith(f"/requests/{a}/status") and body["cancel_url"].endswith(f"{a}/cancel")
        assert body["attempt"] == 2 and body["resumed"] == 1
        assert status(a)["status"] == "IN_QUEUE"

        out = Path(c.app.state.config.out_root)
        (out / b / "result.json").write_text(json.dumps({"billing_units": 100}))
        fake.jobs[f"ltxtrain-{b}"] = "SUCCEEDED"
        r = resume(b)
        assert r.status_code == 409 and "COMPLETED" in r.json()["detail"][0]["msg"]
        assert status(d)["status"] == "IN_PROGRESS" and status(a)["queue_position"] == 0

        # cancelled while running: resumable once Ray has stopped its job (here by the alias /jobs/{id}/resume)
        assert c.put(f"/requests/{d}/cancel", headers=ALICE).json()["status"] == "CANCELLED"
        r = resume(d, path="jobs")
        assert r.status_code == 409 and "not stopped yet" in r.json()["detail"][0]["msg"]
        fake.jobs[f"ltxtrain-{d}"] = "STOPPED"
        r = resume(d, path="jobs")
        assert r.status_code == 202 and r.json()["resumed"] == 1 and r.json()["queue_position"] == 1, r.text

        resumed = status(a)  # the slot is free: the resumed job starts, as its second attempt
        assert resumed["status"] == "IN_PROGRESS" and resumed["attempt"] == 2 and resumed["resumed"] == 1
        assert fake.submitted[-1][0] == f"ltxtrain-{a}-r1"
        assert {h["request_id"]: h["resumed"] for h in c.get("/requests", headers=ALICE).json()["requests"]} == {
            a: 1, b: 0, d: 1}
        assert "post" in c.get("/openapi.json").json()["paths"]["/requests/{request_id}/resume"]


def test_resumed_jobs_run_again_as_new_ray_jobs(client, config, submitted, finished_t2v):
    """Against Ray: the owner resumes the FAILED dataset-error job by hand, and then its record claims a Ray job
    that Ray does not know (what Ray answers once a restart lost its Jobs table), so the scheduler resumes it on its
    own. Each time a new Ray job with the same entrypoint runs, and the job ends as before (the archive still has
    no clips)."""
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(config.dashboard)
    rid = submitted["bad"]["request_id"]
    first = wait_terminal(client, rid)
    assert first["status"] == "FAILED" and first["resume_url"].endswith(f"/requests/{rid}/resume")
    assert client.post(f"/requests/{finished_t2v}/resume", headers=ALICE).status_code == 409
    assert client.post(f"/requests/{rid}/resume", headers=BOB).status_code == 404

    r = client.post(f"/requests/{rid}/resume", headers=ALICE)
    assert r.status_code == 202 and r.json()["resumed"] == 1, r.text
    again = wait_terminal(client, rid, limit_s=240)
    assert again["status"] == "FAILED" and again["resumed"] == 1 and again["detail"] == first["detail"], again
    info = jobs.get_job_info(f"ltxtrain-{rid}-r1")
    assert info.status.value == "FAILED" and info.entrypoint == jobs.get_job_info(f"ltxtrain-{rid}").entrypoint

    store = JobStore(config.db_path)
    with sqlite3.connect(config.db_path) as db:  # as if attempt 1 had been running when the cluster restarted
        db.execute("UPDATE jobs SET status = 'IN_PROGRESS', ray_job_id = ?, submitted_at = ?, error = NULL "
                   "WHERE id = ?", (f"ltxtrain-{rid}-lost", time.time(), rid))
    again = poll(lambda: client.get(f"/requests/{rid}/status", headers=ALICE).json(),
                 lambda s: s["status"] in TERMINAL and s["resumed"] == 2, 240, "the automatic resumption")
    assert again["status"] == "FAILED" and again["detail"] == first["detail"], again
    assert store.get(rid).auto_resumes == 1
    assert jobs.get_job_info(f"ltxtrain-{rid}-r2").status.value == "FAILED"


# ------------------------------------------------------------------------------------------------ ownership
def test_another_user_cannot_see_list_cancel_or_download(client, finished_t2v):
    rid = finished_t2v
    lora = client.get(f"/requests/{rid}", headers=ALICE).json()["lora_file"]
    for method, url in (("get", f"/requests/{rid}/status"), ("get", f"/requests/{rid}"),
                        ("get", f"/requests/{rid}/files/{lora['file_name']}"), ("put", f"/requests/{rid}/cancel")):
        r = getattr(client, method)(url, headers=BOB)
        assert r.status_code == 404, (url, r.status_code)
        assert rid in r.json()["detail"][0]["msg"]
    assert rid not in [j["request_id"] for j in client.get("/requests", headers=BOB).json()["requests"]]
    assert rid not in client.get("/", headers=BOB).text
    r = client.post("/inference/t2v", json={"request_id": rid, "prompt": "x"}, headers=BOB)
    assert r.status_code == 404 and r.json()["detail"][0]["loc"] == ["body", "request_id"]
    # and the owner still sees it, in the API and on the page (cookie auth for the browser)
    assert client.get(f"/requests/{rid}/status", headers=ALICE).json()["status"] == "COMPLETED"
    page = client.get("/", cookies={"ltxtrain_key": "key-alice"})
    assert page.status_code == 200 and rid in page.text and "<svg" in page.text
    assert client.get("/").status_code == 401  # the key form


def test_history_survives_a_new_app_instance(config, finished_t2v, submitted):
    with TestClient(create_app(config)) as fresh:
        history = fresh.get("/requests", headers=ALICE).json()["requests"]
        ids = [h["request_id"] for h in history]
        assert ids[:3] == [submitted[k]["request_id"] for k in ("ic", "bad", "t2v")]  # newest first
        assert history[2]["status"] == "COMPLETED" and history[2]["billing_units"] == 100
        out = fresh.get(f"/requests/{finished_t2v}", headers=ALICE).json()
        assert fresh.get(out["lora_file"]["url"], headers=ALICE).status_code == 200


# ------------------------------------------------------------------------------------------------ inference
def test_inference_with_a_finished_jobs_lora_returns_a_decodable_mp4(client, finished_t2v):
    import av

    body = {"request_id": finished_t2v, "prompt": "tinystyle a red square", "width": 96, "height": 64,
            "number_of_frames": 9, "num_inference_steps": 2, "guidance_scale": 1.0}
    r = client.post("/inference/t2v", json=body, headers=ALICE)
    assert r.status_code == 200, r.text[:2000]
    assert r.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(r.content)) as container:
        kinds = {s.type for s in container.streams}
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert kinds == {"video", "audio"}
    assert len(frames) == 9 and frames[0].shape == (64, 96, 3)
    # named errors: a size the model cannot take, a LoRA for another product, no LoRA at all
    bad = client.post("/inference/t2v", json={**body, "width": 100}, headers=ALICE)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "width"]
    none = client.post("/inference/t2v", json={k: v for k, v in body.items() if k != "request_id"}, headers=ALICE)
    assert none.status_code == 422 and none.json()["detail"][0]["loc"] == ["body", "request_id"]
    # every product is served, with its own condition fields: IC-LoRA needs its reference video
    ic = client.post("/inference/ic-lora/v2v", json=body, headers=ALICE)
    assert ic.status_code == 422 and ic.json()["detail"][0]["loc"] == ["body", "reference_video_url"]


# ------------------------------------------------------------------------------------------------ cancel
def test_cancel_stops_a_running_job_and_releases_its_workers(client, config, datasets, submitted, finished_t2v):
    import ray
    from ray.job_submission import JobStatus, JobSubmissionClient

    for name in ("ic", "bad"):  # the cluster to itself: the CPU check below counts every CPU
        wait_terminal(client, submitted[name]["request_id"])
    r = client.post("/t2v", json={"training_data_url": datasets["t2v"], **SMALL, "number_of_steps": 20000},
                    headers=ALICE)
    rid = r.json()["request_id"]
    status = poll(lambda: client.get(f"/requests/{rid}/status", headers=ALICE).json(),
                  lambda s: s["status"] != "IN_QUEUE" and (s["status"] in TERMINAL or s.get("step", 0) >= 10),
                  300, "training progress")
    assert status["status"] == "IN_PROGRESS" and status["phase"] == "training", status
    assert status["total"] == 20000 and status["loss"] > 0
    jobs = JobSubmissionClient(config.dashboard)
    ray_id = JobStore(config.db_path).get(rid).ray_job_id
    assert jobs.get_job_status(ray_id) == JobStatus.RUNNING

    r = client.put(f"/requests/{rid}/cancel", headers=ALICE)
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    assert client.get(f"/requests/{rid}/status", headers=ALICE).json()["status"] == "CANCELLED"
    poll(lambda: jobs.get_job_status(ray_id), lambda s: s.is_terminal(), 120, "Ray job stopping")
    assert jobs.get_job_status(ray_id) == JobStatus.STOPPED
    total = ray.cluster_resources()["CPU"]
    poll(lambda: ray.available_resources().get("CPU", 0), lambda cpu: cpu == total, 120, "workers released")
    assert client.put(f"/requests/{rid}/cancel", headers=ALICE).status_code == 409  # already cancelled
    assert client.get(f"/requests/{rid}", headers=ALICE).status_code == 410  # gone: cancelled


def test_twenty_concurrent_submissions_queue_and_cancel_cleanly(ray_cluster, tmp_path, datasets):
    from ray.job_submission import JobSubmissionClient

    cfg = make_config(ray_cluster, tmp_path, max_running=1)
    payload = {"training_data_url": datasets["t2v"], **SMALL}
    with TestClient(create_app(cfg)) as c, ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: c.post("/t2v", json=payload, headers=ALICE), range(20)))
        assert [a.status_code for a in answers] == [202] * 20
        ids = [a.json()["request_id"] for a in answers]
        assert len(set(ids)) == 20
        # one starts (its Ray job submitted), the other 19 wait their turn
        poll(lambda: [c.get(f"/requests/{i}/status", headers=ALICE).json() for i in ids],
             lambda st: any(s["status"] == "IN_PROGRESS" and s["phase"] != "starting" for s in st), 180, "a start")
        statuses = [c.get(f"/requests/{i}/status", headers=ALICE).json() for i in ids]
        assert [s["status"] for s in statuses].count("IN_PROGRESS") == 1, statuses
        position = {s["request_id"]: s["queue_position"] for s in statuses if s["status"] == "IN_QUEUE"}
        oldest_first = [j["request_id"] for j in reversed(c.get("/requests", headers=ALICE).json()["requests"])]
        assert [position[i] for i in oldest_first if i in position] == list(range(19))  # FIFO from 0, no gaps

        cancels = list(pool.map(lambda i: c.put(f"/requests/{i}/cancel", headers=ALICE), ids))
        assert [x.status_code for x in cancels] == [200] * 20
        listed = c.get("/requests", headers=ALICE).json()["requests"]
        assert sorted(j["request_id"] for j in listed) == sorted(ids)
        assert {j["status"] for j in listed} == {"CANCELLED"}
        store = JobStore(cfg.db_path)
        assert store.count() == 20 and store.count("CANCELLED") == 20
        # whatever reached Ray was stopped, and never two at once (max_running=1 holds until Ray confirms a stop)
        jobs = JobSubmissionClient(cfg.dashboard)
        poll(lambda: store.stopping(), lambda pending: not pending, 120, "stops confirmed by Ray")
        ours = sorted((j for j in jobs.list_jobs() if (j.metadata or {}).get("ltxtrain_request_id") in set(ids)),
                      key=lambda j: j.start_time)
        assert {j.status.value for j in ours} <= {"STOPPED"}, [(j.submission_id, j.status) for j in ours]
        assert ours, "the job that started never reached Ray"
        for earlier, later in zip(ours, ours[1:]):
            assert earlier.end_time <= later.start_time


# ------------------------------------------------------------------------------------------------ Ray Serve
def test_serve_deployment_over_http(ray_cluster, config, finished_t2v, tmp_path):
    import av
    import requests
    from ray import serve

    port = _free_port()
    cfg_file = tmp_path / "serve.json"
    cfg_file.write_text(json.dumps(config.to_dict()))
    deploy = subprocess.run([sys.executable, "-m", "serve.deploy", "--address", ray_cluster["address"],
                             "--host", "127.0.0.1", "--port", str(port), "--config", str(cfg_file)],
                            cwd=ROOT, env=ray_cluster["env"], capture_output=True, text=True, timeout=300)
    try:
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        base = f"http://127.0.0.1:{port}"
        spec = requests.get(f"{base}/openapi.json", timeout=30).json()
        assert "/requests/{request_id}/status" in spec["paths"] and "/inference/{endpoint}" in spec["paths"]
        assert requests.post(f"{base}/t2v", json={"rank": 3}, headers=ALICE, timeout=30).status_code == 422
        # the same database: the history and the files are there
        history = requests.get(f"{base}/requests", headers=ALICE, timeout=30).json()["requests"]
        assert finished_t2v in [h["request_id"] for h in history]
        out = requests.get(f"{base}/requests/{finished_t2v}", headers=ALICE, timeout=30).json()
        assert out["lora_file"]["url"].startswith(f"{base}/requests/{finished_t2v}/files/")
        got = requests.get(out["lora_file"]["url"], headers=ALICE, timeout=30)
        assert got.status_code == 200 and len(got.content) == out["lora_file"]["file_size"]
        assert requests.get(out["lora_file"]["url"], headers=BOB, timeout=30).status_code == 404
        # inference through the deployment that holds the base model
        body = {"request_id": finished_t2v, "prompt": "tinystyle", "width": 64, "height": 64, "number_of_frames": 9,
                "num_inference_steps": 1, "guidance_scale": 1.0, "with_audio": False}
        r = requests.post(f"{base}/inference/t2v", json=body, headers=ALICE, timeout=300)
        assert r.status_code == 200, r.text[:2000]
        with av.open(io.BytesIO(r.content)) as container:
            assert {s.type for s in container.streams} == {"video"}
            assert len(list(container.decode(video=0))) == 9
    finally:
        serve.shutdown()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_page_renders_in_headless_chromium(client, finished_t2v, tmp_path):
    page = tmp_path / "jobs.html"
    page.write_text(client.get("/", headers=ALICE).text)
    shot = tmp_path / "jobs.png"
    flags = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,600", page.as_uri()], check=True,
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 1000
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 5  # something was drawn, not a blank page
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    assert finished_t2v in dom and "COMPLETED" in dom  # the rendered list shows the finished job


# ------------------------------------------------------------------------------------------------ hardening (no Ray)
def _fake_client(tmp_path, **overrides):
    fake = FakeJobs()
    c = TestClient(create_app(fake_config(tmp_path, **overrides)))
    c.app.state.runner._client = fake
    return c, fake


def test_oversized_deep_or_odd_bodies_are_refused_before_anything_is_recorded(tmp_path):
    c, fake = _fake_client(tmp_path, max_body_bytes=64 * 1024)
    store = c.app.state.store
    with c:
        ok = {"training_data_url": "https://example.com/clips.zip", **SMALL}
        r = c.post("/t2v", json={**ok, "trigger_phrase": "x" * 100_000}, headers=ALICE)
        assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["body"], r.text

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(100):
                yield b" " * 4096

        r = c.post("/t2v", content=chunks(), headers={**ALICE, "Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        for body in (b"[" * 30_000 + b"]" * 30_000, b'{"a":' * 50 + b"1" + b"}" * 50, b'{"rank": NaN}',
                     b'{"rank": ' + b"9" * 5000 + b"}", b"\xff\xfe", b'{"training_data_url": "x"'):
            r = c.post("/t2v", content=body, headers=ALICE)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"], (body[:30], r.text)
        r = c.post("/t2v", content=b'{"training_data_url": "\\ud800"}', headers=ALICE)  # a lone surrogate
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "training_data_url"], r.text
        for field, value in (("trigger_phrase", "x" * 300), ("validation_negative_prompt", "x" * 3000)):
            r = c.post("/t2v", json={**ok, field: value}, headers=ALICE)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field], r.text
        r = c.post("/t2v", json={**ok, "validation": [{"prompt": "p" * 3000}]}, headers=ALICE)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "validation", 0, "prompt"]
        assert store.count() == 0 and not fake.submitted and not any(Path(c.app.state.config.out_root).glob("*"))


def test_unknown_routes_answer_404_in_the_error_shape(tmp_path):
    c, _ = _fake_client(tmp_path)
    with c:
        for method, path in (("get", "/nope"), ("get", "/t2v"), ("delete", "/requests"), ("post", "/t2v-nope"),
                             ("get", "/a/b/c/d/e/f"), ("patch", "/requests/x/cancel"), ("post", "/a/b/t2v-nope")):
            r = c.request(method, path, headers=ALICE, json={})
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, list) and detail[0]["loc"][0] == "path" and detail[0]["msg"], r.text
        r = c.get("/requests", params={"limit": "lots"}, headers=ALICE)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]
        assert set(r.json()["detail"][0]) == {"loc", "msg"}


def test_every_url_field_is_checked_at_submission_and_names_that_resolve_privately_are_refused(tmp_path,
                                                                                               monkeypatch):
    import ipaddress

    from ltxtrain.intake import url_policy

    monkeypatch.setattr(url_policy, "resolve", lambda host, port: [ipaddress.ip_address(
        "10.0.0.5" if host == "files.corp" else "93.184.216.34")])
    c, fake = _fake_client(tmp_path, allow_private_urls=False, max_running=1)
    with c:
        base = {"training_data_url": "https://cdn.example/clips.zip", **IC_SMALL}
        for endpoint, payload, loc in (
                ("t2v", {**SMALL, "training_data_url": "http://0x7f000001/a.zip"}, ["body", "training_data_url"]),
                ("t2v", {**SMALL, "training_data_url": "http://127.1/a.zip"}, ["body", "training_data_url"]),
                ("t2v", {**SMALL, "training_data_url": "https://files.corp/a.zip"}, ["body", "training_data_url"]),
                ("t2v", {**SMALL, "training_data_url": "https://u:p@cdn.example/a.zip"}, ["body", "training_data_url"]),
                ("t2v", {**SMALL, "training_data_url": "http:/etc/passwd"}, ["body", "training_data_url"]),
                ("t2v", {**SMALL, "training_data_url": "https://cdn.example/a.zip",
                         "validation": [{"prompt": "p", "image_url": "http://localhost./i.png"}]},
                 ["body", "validation", 0, "image_url"]),
                ("ic-lora/v2v", {**base, "validation": [{"prompt": "p", "reference_video_url": "http://0177.0.0.1/v"}]},
                 ["body", "validation", 0, "reference_video_url"])):
            r = c.post(f"/{endpoint}", json=payload, headers=ALICE)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (payload, r.text)
        r = c.post("/t2v", json={**SMALL, "training_data_url": "https://cdn.example/a.zip"}, headers=ALICE,
                   params={"fal_webhook": "http://169.254.169.254/hook"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "fal_webhook"]
        assert c.app.state.store.count() == 0 and not fake.submitted  # a doomed request never takes a slot
        r = c.post("/t2v", json={**SMALL, "training_data_url": "https://cdn.example/a.zip"}, headers=ALICE)
        assert r.status_code == 202 and r.json()["queue_position"] == 0


def test_hashed_api_keys(tmp_path):
    import hashlib

    digest = hashlib.sha256(b"key-carol").hexdigest()
    c, _ = _fake_client(tmp_path, tokens={f"sha256:{digest}": "carol"})
    with c:
        assert c.get("/requests", headers={"Authorization": "Key key-carol"}).status_code == 200
        for wrong in (digest, f"sha256:{digest}", "key-caro"):
            assert c.get("/requests", headers={"Authorization": f"Key {wrong}"}).status_code == 401


# ------------------------------------------------------------------------------------------------ fal queue (no Ray)
class _Hooks:
    """A webhook receiver on 127.0.0.1: records every POST; answers 500 to the first `fail_first` of them."""

    def __init__(self, fail_first: int = 0):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        hooks = self
        self.received: list[dict] = []
        self.fail_first = fail_first

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hooks.received.append(body)
                code = 500 if len(hooks.received) <= hooks.fail_first else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_fal_app_id_routes_speak_the_fal_queue_protocol(tmp_path):
    c, fake = _fake_client(tmp_path, max_running=1, webhook_retry_s=0.05)
    hooks = _Hooks(fail_first=1)
    out = Path(c.app.state.config.out_root)
    payload = {"training_data_url": "https://example.com/clips.zip", **SMALL}
    try:
        with c:
            app = "/fal-ai/ltx23-trainer-v2"
            a = c.post(f"{app}/t2v", json=payload, headers=ALICE, params={"fal_webhook": hooks.url}).json()
            b = c.post("/ltxtrain/trainer/ic-lora/v2v", json={**payload, **IC_SMALL}, headers=ALICE).json()
            d = c.post(f"{app}/t2v", json=payload, headers=ALICE).json()
            assert a["status_url"] == f"http://testserver{app}/requests/{a['request_id']}/status"
            assert a["response_url"] == f"http://testserver{app}/requests/{a['request_id']}"
            assert a["queue_position"] == 0 and b["queue_position"] == 1
            assert c.app.state.store.get(b["request_id"]).endpoint == "ic-lora/v2v"
            r = c.post(f"{app}/nope", json=payload, headers=ALICE)
            assert r.status_code == 404 and r.json()["detail"][0]["loc"] == ["path", "endpoint"]

            def st(x, logs="false"):
                return c.get(x["status_url"], params={"logs": logs}, headers=ALICE).json()

            assert st(a)["status"] == "IN_PROGRESS" and st(a)["logs"] == []
            assert st(b) | {"logs": None} == st(b) | {"status": "IN_QUEUE", "queue_position": 0, "logs": None}
            # a result that cannot be had yet, a cancel of a finished job: 400 (fal-client retries 409)
            assert c.get(a["response_url"], headers=ALICE).status_code == 400

            (out / a["request_id"] / "result.json").write_text(json.dumps({
                "billing_units": 100, "lora_file": {"file_name": "l.safetensors", "content_type": "x",
                                                    "file_size": 1}}))
            fake.jobs[f"ltxtrain-{a['request_id']}"] = "SUCCEEDED"
            done = st(a, "true")
            assert done["status"] == "COMPLETED" and "error" not in done and done["outcome"] == "COMPLETED"
            assert isinstance(done["logs"], list) and done["metrics"] == {}
            res = c.get(a["response_url"], headers=ALICE)
            assert res.status_code == 200 and res.json()["lora_file"]["url"].endswith(
                f"/requests/{a['request_id']}/files/l.safetensors")
            r = c.put(a["cancel_url"], headers=ALICE)
            assert r.status_code == 400 and r.json()["status"] == "ALREADY_COMPLETED"

            # b fails with a dataset error: COMPLETED with the error, and the result carries the 422 details
            st(b)
            (out / b["request_id"] / "result.json").write_text(json.dumps({
                "accepted": False, "billing_units": 0,
                "errors": [{"loc": ["body", "training_data_url"], "msg": "no clips"}]}))
            fake.jobs[f"ltxtrain-{b['request_id']}"] = "FAILED"
            failed = st(b)
            assert (failed["status"], failed["outcome"], failed["error_type"]) == ("COMPLETED", "FAILED",
                                                                                   "validation_error")
            assert "no clips" in failed["error"]
            res = c.get(b["response_url"], headers=ALICE)
            assert res.status_code == 422 and res.json()["detail"] == [{"loc": ["body", "training_data_url"],
                                                                        "msg": "no clips"}]
            # d: cancelled while queued → 202, then COMPLETED with error_type "cancelled" and a 410 result
            r = c.put(d["cancel_url"], headers=ALICE)
            assert r.status_code == 202 and r.json()["status"] == "CANCELLATION_REQUESTED"
            assert st(d)["error_type"] == "cancelled" and c.get(d["response_url"], headers=ALICE).status_code == 410
            assert c.get(a["status_url"], headers=BOB).status_code == 404
            # by app id, as fal_client.status(app, id) builds it (only owner/alias of the app id)
            assert c.get(f"/x/y/requests/{a['request_id']}/status", headers=ALICE).json()["status"] == "COMPLETED"

            # the webhook: refused once (500), delivered on the second try, recorded on the job
            c.app.state.service.webhooks.join(10)
            assert [h["request_id"] for h in hooks.received] == [a["request_id"]] * 2
            assert hooks.received[-1]["status"] == "OK"
            assert hooks.received[-1]["payload"]["lora_file"]["file_name"] == "l.safetensors"
            hook = c.get(f"/requests/{a['request_id']}/status", headers=ALICE).json()["webhook"]
            assert hook["state"] == "delivered" and hook["attempts"] == 2 and hook["last"] == "HTTP 200"
            assert "token" not in hook["url"]  # query strings may be secrets: shown redacted
    finally:
        hooks.close()


def test_webhook_of_a_failed_job_and_bounded_retries(tmp_path):
    c, fake = _fake_client(tmp_path, webhook_retry_s=0.05, webhook_attempts=2)
    hooks = _Hooks(fail_first=5)
    try:
        with c:
            r = c.post("/t2v", json={"training_data_url": "https://example.com/clips.zip", **SMALL}, headers=ALICE,
                       params={"fal_webhook": hooks.url})
            rid = r.json()["request_id"]
            c.get(f"/requests/{rid}/status", headers=ALICE)
            fake.jobs[f"ltxtrain-{rid}"] = "FAILED"
            assert c.get(f"/requests/{rid}/status", headers=ALICE).json()["status"] == "FAILED"
            c.app.state.service.webhooks.join(10)
            assert len(hooks.received) == 2 and hooks.received[0]["status"] == "ERROR"
            assert hooks.received[0]["error"] == "the job failed"
            hook = c.get(f"/requests/{rid}/status", headers=ALICE).json()["webhook"]
            assert (hook["state"], hook["attempts"], hook["last"]) == ("failed", 2, "HTTP 500")
    finally:
        hooks.close()
