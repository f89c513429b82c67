"""The fal queue API under an app id, so the public `fal-client` works with FAL_KEY and FAL_QUEUE_RUN_HOST set:

    POST /{owner}/{alias}/{endpoint}[?fal_webhook=URL]   submit (endpoint: t2v, ic-lora/v2v, ...) → 202
    GET  /{owner}/{alias}/requests/{id}/status[?logs=1]  IN_QUEUE (queue_position from 0) | IN_PROGRESS | COMPLETED
    GET  /{owner}/{alias}/requests/{id}                  the result
    PUT  /{owner}/{alias}/requests/{id}/cancel

Any owner/alias works (`ltxtrain/trainer`, `fal-ai/ltx23-trainer-v2`); the same jobs as our own routes. Differences
from those, because of what the client accepts: a job that failed or was cancelled is COMPLETED with `error`,
`error_type` and `outcome` (FAILED / CANCELLED), and its result answers with the error (422 with the dataset's
`detail`, 500 for other failures, 410 when cancelled), codes the client does not retry; a cancel or a result that
cannot be had answers 400, not 409 (which the client retries for tens of seconds)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..service import Service
from ..store import ACTIVE, CANCELLED
from ..web import problem


def router(svc: Service) -> APIRouter:
    r = APIRouter(tags=["fal queue"])

    @r.get("/{owner}/{alias}/requests/{request_id}/status")
    def fal_status(owner: str, alias: str, request_id: str, request: Request, logs: bool = False):
        job = svc.runner.refresh(svc.own_job(request_id, svc.auth.user(request, allow_cookie=True)))
        return svc.fal_status(svc.base(request), job, logs, prefix=f"/{owner}/{alias}")

    @r.get("/{owner}/{alias}/requests/{request_id}")
    def fal_result(owner: str, alias: str, request_id: str, request: Request):
        job = svc.fresh(svc.own_job(request_id, svc.auth.user(request, allow_cookie=True)))
        if job.status in ACTIVE:
            return problem(400, ["path", "request_id"], f"request '{job.id}' is still {job.status}",
                           request_id=job.id, status=job.status)
        code, body = svc.result_body(svc.base(request), job)
        return JSONResponse(body, status_code=code)

    @r.put("/{owner}/{alias}/requests/{request_id}/cancel")
    def fal_cancel(owner: str, alias: str, request_id: str, request: Request):
        job = svc.own_job(request_id, svc.auth.user(request))
        if job.status in ACTIVE and svc.runner.cancel(job).status == CANCELLED:
            return JSONResponse({"request_id": job.id, "status": "CANCELLATION_REQUESTED"}, status_code=202)
        job = svc.store.get(job.id)
        return problem(400, ["path", "request_id"], f"request '{job.id}' is already {job.status}",
                       request_id=job.id, status="ALREADY_COMPLETED", outcome=job.status)

    @r.post("/{owner}/{alias}/{endpoint:path}", status_code=202)
    async def fal_submit(owner: str, alias: str, endpoint: str, request: Request):
        return await svc.submit(request, svc.auth.user(request), endpoint, prefix=f"/{owner}/{alias}")

    return r
