"""Trainings: submit (one route per product), status, result, cancel, resume, history."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from ltxtrain.products import _registry as products

from ..service import Service
from ..store import ACTIVE, CANCELLED, COMPLETED
from ..web import problem


def router(svc: Service) -> APIRouter:
    r = APIRouter()
    store, runner, auth = svc.store, svc.runner, svc.auth

    @r.get("/requests")
    def history(request: Request, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)):
        user = auth.user(request, allow_cookie=True)
        base = svc.base(request)
        items = [{"request_id": job.id, "endpoint": job.endpoint, "status": job.status, "created": job.created,
                  "updated": job.updated, "billing_units": job.billing_units, "resumed": job.attempt,
                  **svc.urls(base, job.id)} for job in store.list_for(user, limit=limit, offset=offset)]
        return {"requests": items}

    @r.get("/requests/{request_id}/status")
    def status(request_id: str, request: Request, logs: bool = False):
        job = runner.refresh(svc.own_job(request_id, auth.user(request, allow_cookie=True)))
        return svc.status_body(svc.base(request), job, logs)

    @r.get("/requests/{request_id}")
    def response(request_id: str, request: Request):
        job = svc.fresh(svc.own_job(request_id, auth.user(request, allow_cookie=True)))
        if job.status in ACTIVE:
            return problem(409, ["path", "request_id"], f"request '{job.id}' is {job.status}; it has no outputs",
                           request_id=job.id, status=job.status)
        code, body = svc.result_body(svc.base(request), job)
        return JSONResponse(body, status_code=code)

    @r.put("/requests/{request_id}/cancel")
    def cancel(request_id: str, request: Request):
        job = svc.own_job(request_id, auth.user(request))
        previous = job.status
        if previous in ACTIVE:
            job = runner.cancel(job)
        if previous not in ACTIVE or job.status != CANCELLED:  # it had finished (maybe in the meantime)
            return problem(409, ["path", "request_id"], f"request '{job.id}' is already {job.status}",
                           request_id=job.id, status=job.status)
        return {"request_id": job.id, "status": job.status}

    @r.post("/requests/{request_id}/resume", status_code=202)
    @r.post("/jobs/{request_id}/resume", status_code=202, include_in_schema=False)  # alias
    def resume(request_id: str, request: Request):
        """Queue a FAILED or CANCELLED training again. It runs as a new Ray job on the same output directory, so it
        carries on from its latest checkpoint, without preprocessing again."""
        job = svc.fresh(svc.own_job(request_id, auth.user(request)))
        if not runner.resume(job):
            job = store.get(job.id)
            if job.status == COMPLETED:
                msg = f"request '{job.id}' is COMPLETED; there is nothing to resume"
            elif job.status == CANCELLED:
                msg = f"request '{job.id}' was cancelled and its Ray job has not stopped yet; try again shortly"
            else:
                msg = f"request '{job.id}' is {job.status}; only FAILED or CANCELLED requests can be resumed"
            return problem(409, ["path", "request_id"], msg, request_id=job.id, status=job.status)
        job = store.get(job.id)
        return JSONResponse({"request_id": job.id, **svc.urls(svc.base(request), job.id), "status": job.status,
                             "queue_position": store.queue_position(job), "attempt": job.attempt + 1,
                             "resumed": job.attempt}, status_code=202)

    for endpoint in sorted(products()):
        r.add_api_route(f"/{endpoint}", _submitter(svc, endpoint), methods=["POST"], status_code=202,
                        name=f"submit {endpoint}", summary=f"Submit a {endpoint} training",
                        description="The JSON body is the product's request (see the specs); `?fal_webhook=URL` "
                                    "is POSTed the outcome when the job ends.")
    return r


def _submitter(svc: Service, endpoint: str):
    async def submit(request: Request):
        return await svc.submit(request, svc.auth.user(request), endpoint)

    return submit
