"""What the routers share: the store, the runner, auth, and the answers built from a job record — our own status and
result bodies, and the fal queue's (`fal_status`, `fal_result`), which differ only in how a job that did not
succeed is told (fal's client knows IN_QUEUE, IN_PROGRESS and COMPLETED only)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ltxtrain.api.errors import ErrorItem, RequestError
from ltxtrain.intake import url_policy
from ltxtrain.intake.fetch import redact_url
from ltxtrain.products import get_recipe

from .auth import Auth
from .config import ServeConfig
from .runner import Runner
from .store import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, JobRecord, JobStore
from .web import problem, read_json
from .webhooks import Webhooks

OUTPUT_KEYS = ("lora_file", "config_file", "video", "debug_dataset")
RESULT_KEYS = ("endpoint", "number_of_steps", "samples", "with_audio", "skipped", "warnings", "metrics")
_LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?)")
_LOG_LEVEL = re.compile(r"\b(CRITICAL|ERROR|WARNING|WARN|DEBUG|Traceback)\b")


class Service:
    def __init__(self, config: ServeConfig, store: JobStore, inference):
        self.config = config
        self.store = store
        self.runner = Runner(config, store)
        self.auth = Auth(config.tokens)
        self.inference = inference
        self.webhooks = Webhooks(config, store, self.webhook_payload)
        self.runner.after_pump.append(self.webhooks.pump)

    # ----------------------------------------------------------------------------------------------- URLs, jobs
    def base(self, request: Request) -> str:
        return (self.config.public_url or str(request.base_url)).rstrip("/")

    @staticmethod
    def urls(base: str, job_id: str, prefix: str = "") -> dict:
        """The job's URLs; `prefix` is "/{owner}/{alias}" for requests that came in through a fal app id."""
        b = f"{base}{prefix}/requests/{job_id}"
        return {"status_url": f"{b}/status", "response_url": b, "cancel_url": f"{b}/cancel"}

    def resume_url(self, base: str, job: JobRecord) -> str | None:
        """Where the owner resumes the job, while it can be resumed."""
        if job.status == FAILED or (job.status == CANCELLED and not job.stop_pending):
            return f"{base}/requests/{job.id}/resume"
        return None

    def own_job(self, request_id: str, user: str, loc: tuple = ("path", "request_id")) -> JobRecord:
        job = self.store.get(request_id)
        if job is None or job.owner != user:  # someone else's job does not exist for this user
            raise HTTPException(404, detail=[{"loc": list(loc), "msg": f"no request '{request_id}'"}])
        return job

    def fresh(self, job: JobRecord) -> JobRecord:
        return self.runner.refresh(job) if job.status in (IN_QUEUE, IN_PROGRESS) else job

    # ----------------------------------------------------------------------------------------------- answers
    def log_entries(self, job: JobRecord, wanted: bool) -> list[dict]:
        """The current attempt's Ray job log as fal log objects ({message, level, source, timestamp}); [] unless
        asked for (reading them costs a call to Ray)."""
        if not wanted:
            return []
        default = _iso(job.submitted_at or job.updated)
        entries = []
        for line in self.runner.logs(job):
            word = m.group(1) if (m := _LOG_LEVEL.search(line)) else "INFO"
            stamp = _LOG_TIME.search(line[:40])
            entries.append({"message": line, "source": "ray-job",
                            "level": {"Traceback": "ERROR", "CRITICAL": "ERROR", "WARNING": "WARN"}.get(word, word),
                            "timestamp": stamp.group(1).replace(" ", "T").replace(",", ".") if stamp else default})
        return entries

    def status_body(self, base: str, job: JobRecord, logs: bool = False) -> dict:
        body = {"request_id": job.id, "endpoint": job.endpoint, "status": job.status, "created": job.created,
                "updated": job.updated, "attempt": job.attempt + 1, "resumed": job.attempt,
                "logs": self.log_entries(job, logs)}
        if job.status == IN_QUEUE:
            body["queue_position"] = self.store.queue_position(job)
        elif job.status == IN_PROGRESS:
            body.update(self.runner.progress(job))
        elif job.status == COMPLETED:
            body["billing_units"] = job.billing_units
        elif job.status == FAILED:
            err = job.error or {}
            body.update(error=err.get("msg", "failed"), billing_units=0)
            if err.get("detail"):
                body["detail"] = err["detail"]
        if url := self.resume_url(base, job):
            body["resume_url"] = url
        if job.webhook:
            body["webhook"] = {"url": redact_url(job.webhook["url"]),
                               **{k: job.webhook.get(k) for k in ("state", "attempts", "last", "delivered_at")}}
        return body

    def fal_status(self, base: str, job: JobRecord, logs: bool, prefix: str) -> dict:
        """fal's status: a job that ended in any way is COMPLETED; `error`/`error_type` say when it did not succeed
        (and `outcome` is our own status)."""
        body = self.status_body(base, job, logs)
        body.update(self.urls(base, job.id, prefix))
        body.pop("resume_url", None)
        body["outcome"] = job.status
        if job.status in (FAILED, CANCELLED, COMPLETED):
            body["status"] = COMPLETED
            body["metrics"] = {}
            error = self.error_of(job)
            if error:
                body["error"], body["error_type"] = error
        return body

    def error_of(self, job: JobRecord) -> tuple[str, str] | None:
        if job.status == FAILED:
            err = job.error or {}
            return err.get("msg", "the job failed"), "validation_error" if err.get("status") == 422 else "job_failed"
        if job.status == CANCELLED:
            return f"request '{job.id}' was cancelled", "cancelled"
        return None

    def outputs(self, base: str, job: JobRecord) -> dict:
        result = job.result or {}
        out = {}
        for key in OUTPUT_KEYS:
            f = result.get(key)
            if f:
                f = dict(f)
                f["url"] = f"{base}/requests/{job.id}/files/{f['file_name']}"
            out[key] = f
        return out

    def result_body(self, base: str, job: JobRecord) -> tuple[int, dict]:
        """(HTTP status, body) of a finished job's result: 200 with the outputs, or the error with its 422 details
        (422 for a rejected dataset, 500 for any other failure, 410 for a cancelled job)."""
        if job.status == COMPLETED:
            result = job.result or {}
            return 200, {"request_id": job.id, "status": job.status, **self.outputs(base, job),
                         "billing_units": job.billing_units, **{k: result.get(k) for k in RESULT_KEYS}}
        if job.status == FAILED:
            err = job.error or {}
            detail = err.get("detail") or [{"loc": [], "msg": err.get("msg", "the job failed")}]
            return (422 if err.get("status") == 422 else 500), {"detail": detail, "request_id": job.id,
                                                                 "status": job.status, "billing_units": 0}
        return 410, {"detail": [{"loc": ["path", "request_id"], "msg": f"request '{job.id}' was cancelled"}],
                     "request_id": job.id, "status": job.status, "billing_units": 0}

    def webhook_payload(self, job: JobRecord, base: str) -> tuple[bool, dict, str | None]:
        code, body = self.result_body(base, job)
        error = self.error_of(job)
        return code == 200, body, error[0] if error else None

    # ----------------------------------------------------------------------------------------------- submission
    def check_urls(self, payload: dict) -> list[ErrorItem]:
        """Every `*_url` field of a parsed request (validation entries included), under the one URL policy, names
        resolved: a request that the job would refuse is refused now, before it is recorded."""
        strict = not self.config.allow_private_urls
        errors = []
        for loc, url in _url_fields(payload):
            try:
                url_policy.check(url, allow_private=not strict, resolve=strict)
            except url_policy.UrlRefused as exc:
                errors.append(ErrorItem(("body", *loc), f"{redact_url(url)}: {exc}"))
        return errors

    def check_webhook(self, url: str) -> list[ErrorItem]:
        strict = not self.config.allow_private_urls
        try:
            checked = url_policy.check(url, allow_private=not strict, allow_local=False, resolve=strict)
            if checked.scheme not in ("http", "https"):
                raise url_policy.UrlRefused("a webhook must be an http(s):// URL")
        except url_policy.UrlRefused as exc:
            return [ErrorItem(("query", "fal_webhook"), f"{redact_url(url)}: {exc}")]
        return []

    async def submit(self, request: Request, user: str, endpoint: str, prefix: str = "") -> JSONResponse:
        """Validate everything (fields, URLs, webhook), then record the job: a rejected request leaves nothing."""
        try:
            recipe = get_recipe(endpoint)
        except RequestError as exc:
            msg = exc.errors[0].msg if exc.errors else f"unknown endpoint '{endpoint}'"
            return problem(404, ["path", "endpoint"], msg)
        payload = await read_json(request, self.config.max_json_depth)
        recipe.parse(payload)  # RequestError → 422, nothing recorded
        webhook = request.query_params.get("fal_webhook")
        base = self.base(request)

        def checked_submit() -> JobRecord:  # resolving names blocks: off the event loop
            errors = self.check_urls(payload) + (self.check_webhook(webhook) if webhook is not None else [])
            if errors:
                raise RequestError(errors)
            return self.runner.submit(user, recipe.endpoint, payload,
                                      webhook={"url": webhook, "base": base} if webhook else None)

        job = await run_in_threadpool(checked_submit)
        return JSONResponse({"request_id": job.id, **self.urls(base, job.id, prefix), "status": job.status,
                             "queue_position": self.store.queue_position(job)}, status_code=202)


def _url_fields(value, loc: tuple = ()):
    """(location, url) of every string field named `*_url` in a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and str(k).endswith("_url"):
                yield (*loc, k), v
            elif isinstance(v, (dict, list)):
                yield from _url_fields(v, (*loc, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _url_fields(v, (*loc, i))


def _iso(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts or 0, dt.timezone.utc).isoformat()
