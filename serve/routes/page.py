"""The HTML job list at `/` (cookie or header auth; a key form otherwise)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from ltxtrain import metrics_file

from .. import page
from ..service import Service
from ..store import COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE


def router(svc: Service) -> APIRouter:
    r = APIRouter()

    @r.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request):
        try:
            user = svc.auth.user(request, allow_cookie=True)
        except HTTPException:
            return HTMLResponse(page.login_page(), status_code=401)
        base = svc.base(request)
        jobs = []
        for job in svc.store.list_for(user, limit=50):
            job = svc.fresh(job)
            detail = ""
            if job.status == IN_PROGRESS:
                p = svc.runner.progress(job)
                detail = f"{p['phase']} {p['step']}/{p['total']}"
            elif job.status == IN_QUEUE:
                detail = f"position {svc.store.queue_position(job)}"
            elif job.status == FAILED:
                detail = (job.error or {}).get("msg", "")[:300]
            outs = svc.outputs(base, job) if job.status == COMPLETED else {}
            jobs.append({
                "request_id": job.id, "endpoint": job.endpoint, "status": job.status, "created": job.created,
                "detail": detail, "outputs": [(f["file_name"], f["url"]) for f in outs.values() if f],
                "video": (outs.get("video") or {}).get("url"), "resumed": job.attempt,
                "resume_url": svc.resume_url(base, job),
                "metrics": metrics_file.read_rows(Path(job.out_dir) / "metrics.jsonl", limit=2000),
            })
        return HTMLResponse(page.jobs_page(user, jobs))

    return r
