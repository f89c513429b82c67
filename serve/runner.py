"""Ray job submission, the queue, and progress read back from each job's output directory.

Queue design: a job is only *recorded* on submission (IN_QUEUE). A small scheduler thread per app instance calls
`pump()` every `scheduler_interval_s` seconds and whenever something frees or fills a slot (a submission, a
cancel). `pump()` first reconciles IN_PROGRESS records with Ray (finished/failed/stopped jobs leave the running
set), then claims queued jobs oldest first while fewer than `max_running` are in progress, and submits each one as a
Ray job. Claims are compare-and-set transactions in SQLite, so several replicas (or a restarted app) sharing the
database never start a job twice. Reads of a job's status also reconcile that job, so answers are fresh even
between scheduler ticks; with `scheduler_interval_s = 0` there is no thread and reads pump the queue instead.

Each job's Ray submission id is `ltxtrain-<request id>` (`ltxtrain-<request id>-r<n>` for its n-th resumption): a
restarted app finds its jobs again without any state beyond the database.

Resuming: a job's output directory is its restart state (Ray Train's run snapshot and checkpoints under
`work/ray_results`, the latent cache under `work/cache`), so a new Ray job running the same entrypoint on the same
`--out` carries on from the latest checkpoint without preprocessing again. When Ray answers that a submitted job does
not exist — its Jobs table went with a restarted head node — the record goes back to the queue as the next attempt,
at most `auto_resume_attempts` times in a row; after that it is FAILED, and its owner can resume it by hand
(`resume`, `POST /requests/{id}/resume`), as any FAILED or stopped CANCELLED job.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import threading
import time
from pathlib import Path

from ltxtrain import metrics_file

from .config import ServeConfig
from .store import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, JobRecord, JobStore

log = logging.getLogger("ltxtrain.serve")

CLAIM_GRACE_S = 120.0  # a claim older than this with no recorded submission is considered lost and re-queued
ENTRYPOINT = "jobs/train.py"  # the library CLI's `train`; --strict-urls keeps user URLs public


def ray_job_id_for(job_id: str, attempt: int = 0) -> str:
    """The Ray submission id of a job's attempt (attempt 0 keeps the original `ltxtrain-<id>`)."""
    return f"ltxtrain-{job_id}" if attempt == 0 else f"ltxtrain-{job_id}-r{attempt}"


class RayUnavailable(Exception):
    """The Ray dashboard cannot be reached (transient: the job record is left as it is)."""


class Runner:
    def __init__(self, config: ServeConfig, store: JobStore, client=None):
        self.config = config
        self.store = store
        self._client = client
        self._client_lock = threading.Lock()
        self._pump_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.after_pump: list = []  # callables run after each pump (webhook deliveries)

    # ------------------------------------------------------------------------------------------------ Ray client
    @property
    def client(self):
        with self._client_lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                try:
                    self._client = JobSubmissionClient(self.config.dashboard)
                except Exception as exc:  # noqa: BLE001 - connection refused, bad address, version probe failure
                    raise RayUnavailable(f"cannot reach the Ray dashboard at {self.config.dashboard}: {exc}") from exc
            return self._client

    def _ray_call(self, fn, *args):
        """Call the Jobs API; returns None for 'no such job', raises RayUnavailable for anything transient."""
        try:
            return fn(*args)
        except RuntimeError as exc:
            if "status code 404" in str(exc) or "does not exist" in str(exc):
                return None
            raise RayUnavailable(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - requests' connection errors
            raise RayUnavailable(str(exc)) from exc

    # ------------------------------------------------------------------------------------------------ submission
    def submit(self, owner: str, endpoint: str, request: dict, webhook: dict | None = None) -> JobRecord:
        """Record a validated request (IN_QUEUE) and write its request.json; the scheduler starts it."""
        root = Path(self.config.out_root)

        def out_dir_for(job_id: str) -> Path:
            d = (root / job_id).resolve()
            d.mkdir(parents=True, exist_ok=True)
            (d / "request.json").write_text(json.dumps(request, indent=2))
            return d

        job = self.store.create(owner, endpoint, request, out_dir_for, webhook=webhook)
        self.wake()
        return job

    def entrypoint(self, job: JobRecord) -> str:
        c = self.config
        parts = [c.python, ENTRYPOINT, job.endpoint, str(Path(job.out_dir) / "request.json"), "--out", job.out_dir,
                 "--model", c.model]
        if c.text_encoder:
            parts += ["--text-encoder", c.text_encoder]
        if c.workers:
            parts += ["--workers", str(c.workers)]
        if c.cpu:
            parts.append("--cpu")
        if not c.allow_private_urls:
            parts.append("--strict-urls")
        return " ".join(shlex.quote(p) for p in parts)

    def _start(self, job: JobRecord) -> None:
        if job.attempt > 0:
            # A resumption: the result.json of an earlier attempt (a rejected dataset) must not be read as this
            # attempt's. The earlier Ray job is over (failed, stopped or gone), so nothing else writes here now.
            (Path(job.out_dir) / "result.json").unlink(missing_ok=True)
        env = {"HF_HUB_OFFLINE": "1", **self.config.job_env}
        runtime_env = {"working_dir": self.config.repo_root, "env_vars": env}
        try:
            self.client.submit_job(entrypoint=self.entrypoint(job), submission_id=job.ray_job_id,
                                   runtime_env=runtime_env,
                                   metadata={"ltxtrain_request_id": job.id, "owner": job.owner,
                                             "endpoint": job.endpoint})
        except RuntimeError as exc:  # the Jobs API answered with an error
            if "already exists" in str(exc):  # an earlier try got through after all
                self.store.mark_submitted(job.id, job.ray_job_id)
                return
            if not re.search(r"status code 4\d\d", str(exc)):  # 5xx, e.g. "No available agent": try again later
                log.warning("cannot submit %s now (will retry): %s", job.id, exc)
                self.store.requeue(job.id)
                return
            log.exception("submission of %s failed", job.id)
            self.store.finish(job.id, FAILED, error={"msg": f"the job could not be submitted to Ray: {exc}"},
                              ray_job_id=job.ray_job_id)
            return
        except Exception as exc:  # noqa: BLE001 - RayUnavailable, connection errors: nothing was submitted
            log.warning("cannot submit %s now (will retry): %s", job.id, exc)
            self.store.requeue(job.id)
            return
        if not self.store.mark_submitted(job.id, job.ray_job_id):
            # Cancelled between the claim and the submission: stop what was just started.
            self._stop_ray_job(job)

    # ------------------------------------------------------------------------------------------------ the queue
    def pump(self) -> None:
        try:
            self._pump_queue()
        finally:
            for hook in self.after_pump:
                hook()

    def _pump_queue(self) -> None:
        with self._pump_lock:  # one pump per process at a time; across processes the SQLite claims arbitrate
            for job in self.store.stopping():
                try:
                    self.confirm_stopped(job)
                except RayUnavailable as exc:
                    log.warning("Ray unavailable while confirming a stop: %s", exc)
                    return
            for job in self.store.with_status(IN_PROGRESS):
                try:
                    self.reconcile(job)
                except RayUnavailable as exc:
                    log.warning("Ray unavailable while reconciling: %s", exc)
                    return
            while True:
                job = self.store.claim_next(self.config.max_running, ray_job_id_for)
                if job is None:
                    return
                self._start(job)
                if self.store.get(job.id).status == IN_QUEUE:  # requeued: Ray is unavailable, try later
                    return

    def reconcile(self, job: JobRecord) -> JobRecord:
        """Bring an IN_PROGRESS record up to date with its Ray job."""
        if job.status != IN_PROGRESS:
            return job
        if job.submitted_at is None:
            if time.time() - job.updated > CLAIM_GRACE_S:
                self.store.requeue(job.id)
            return self.store.get(job.id)
        info = self._ray_call(self.client.get_job_info, job.ray_job_id)
        if info is None:
            self._lost(job)
            self.wake()  # a slot is free (and the job may be queued again)
            return self.store.get(job.id)
        status = str(getattr(info.status, "value", info.status))
        if status in ("PENDING", "RUNNING"):
            return job
        ray_id = job.ray_job_id  # only this attempt's record is ended by news about this Ray job
        if status == "STOPPED":
            self.store.finish(job.id, CANCELLED, ray_job_id=ray_id)
        elif status == "SUCCEEDED":
            result = read_json(Path(job.out_dir) / "result.json")
            if result is None or result.get("accepted") is False:
                self.store.finish(job.id, FAILED, error={"msg": "the job ended without a result.json"},
                                  ray_job_id=ray_id)
            else:
                self.store.finish(job.id, COMPLETED, billing_units=int(result.get("billing_units", 0)),
                                  result=result, ray_job_id=ray_id)
        else:  # FAILED
            self.store.finish(job.id, FAILED, error=failure_from(job, info.message), ray_job_id=ray_id)
        self.wake()  # a slot is free
        return self.store.get(job.id)

    def _lost(self, job: JobRecord) -> None:
        """Ray has no job `job.ray_job_id` although it was submitted: the cluster was restarted (or the job was
        deleted). Queue the job again to resume from its output directory, up to `auto_resume_attempts` times in
        a row; past that it fails, and its owner can resume it by hand."""
        limit = self.config.auto_resume_attempts
        if job.auto_resumes < limit:
            if self.store.requeue_lost(job.id, job.ray_job_id):
                log.warning("the Ray job %s of request %s no longer exists (was the Ray cluster restarted?); "
                            "queued again to resume from %s (automatic resumption %d of %d)", job.ray_job_id,
                            job.id, job.out_dir, job.auto_resumes + 1, limit)
            return
        msg = (f"the Ray job {job.ray_job_id} no longer exists (was the Ray cluster restarted?)"
               + (f" and {job.auto_resumes} automatic resumption(s) did not finish it" if job.auto_resumes else "")
               + f"; resume it with POST /requests/{job.id}/resume")
        if self.store.finish(job.id, FAILED, error={"msg": msg}, ray_job_id=job.ray_job_id):
            log.warning("request %s failed: %s", job.id, msg)

    def confirm_stopped(self, job: JobRecord) -> None:
        """A cancelled job frees its slot once Ray reports its job over (stop again if it is still running)."""
        info = self._ray_call(self.client.get_job_info, job.ray_job_id) if job.ray_job_id else None
        if info is None or info.status.is_terminal():
            self.store.stopped(job.id)
            self.wake()
        else:  # idempotent; repeats a stop that an outage swallowed
            self._ray_call(self.client.stop_job, job.ray_job_id)

    def refresh(self, job: JobRecord) -> JobRecord:
        """The record, brought up to date (used by every read)."""
        if self._thread is None:
            try:
                self.pump()
            except RayUnavailable as exc:
                log.warning("Ray unavailable: %s", exc)
            return self.store.get(job.id)
        try:
            return self.reconcile(job)
        except RayUnavailable as exc:
            log.warning("Ray unavailable: %s", exc)
            return job

    def resume(self, job: JobRecord) -> bool:
        """Queue a FAILED or CANCELLED job again as its next attempt (it carries on from its checkpoints and latent
        cache). False when the job is not resumable: active, COMPLETED, or cancelled and Ray has not yet confirmed
        that its job stopped."""
        if job.stop_pending:
            try:
                self.confirm_stopped(job)  # a stop Ray has already carried out frees the job at once
            except RayUnavailable as exc:
                log.warning("Ray unavailable while confirming a stop: %s", exc)
        if not self.store.resume(job.id):
            return False
        log.info("request %s queued again as attempt %d", job.id, self.store.get(job.id).attempt)
        self.wake()
        return True

    def cancel(self, job: JobRecord) -> JobRecord:
        previous = self.store.cancel(job.id)
        if previous == IN_PROGRESS:
            self._stop_ray_job(self.store.get(job.id))  # fresh: it may have been claimed since `job` was read
        self.wake()
        return self.store.get(job.id)

    def _stop_ray_job(self, job: JobRecord) -> None:
        if not job.ray_job_id:
            return
        try:
            self._ray_call(self.client.stop_job, job.ray_job_id)  # None: never submitted, nothing to stop
        except RayUnavailable as exc:
            log.warning("could not stop %s: %s", job.ray_job_id, exc)

    # ------------------------------------------------------------------------------------------------ progress
    def progress(self, job: JobRecord) -> dict:
        """step / total / loss / phase for an IN_PROGRESS job, from the files the job writes."""
        out = Path(job.out_dir)
        total = job.request.get("number_of_steps")
        if total is None:
            from ltxtrain.products import get_recipe

            total = get_recipe(job.endpoint).parse(job.request).number_of_steps
        last = metrics_file.last_row(out / "metrics.jsonl")
        info = {"step": 0, "total": int(total), "loss": None}
        if job.submitted_at is None:
            phase = "starting"
        elif last is None:
            phase = "preprocessing"
        else:
            info.update(step=int(last.get("step", 0)), loss=last.get("loss"))
            phase = "training" if info["step"] < info["total"] else "exporting"
        info["phase"] = phase
        return info

    def logs(self, job: JobRecord) -> list[str]:
        if not job.ray_job_id or job.submitted_at is None:
            return []
        try:
            text = self._ray_call(self.client.get_job_logs, job.ray_job_id) or ""
        except RayUnavailable:
            return []
        return text.splitlines()[-self.config.max_log_lines:]

    # ------------------------------------------------------------------------------------------------ thread
    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self.config.scheduler_interval_s <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ltxtrain-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.pump()
            except Exception:  # noqa: BLE001 - keep scheduling whatever one pump hit
                log.exception("scheduler pump failed")
            self._wake.wait(self.config.scheduler_interval_s)


# ---------------------------------------------------------------------------------------------------- helpers
def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def failure_from(job: JobRecord, ray_message: str | None) -> dict:
    """The error of a failed job: the 422 the job wrote (dataset errors, billed 0) or Ray's message."""
    result = read_json(Path(job.out_dir) / "result.json")
    if result and result.get("accepted") is False:
        detail = result.get("errors") or []
        msg = "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in detail)
        return {"msg": msg or "the request was rejected", "status": 422, "detail": detail,
                "skipped": result.get("skipped", [])}
    text = " ".join((ray_message or "the Ray job failed").split())
    return {"msg": text[:2000] + ("…" if len(text) > 2000 else "")}
