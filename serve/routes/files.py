"""Output downloads: a COMPLETED job's files, and metrics.jsonl while it runs."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ..service import OUTPUT_KEYS, Service
from ..store import COMPLETED
from ..web import problem


def router(svc: Service) -> APIRouter:
    r = APIRouter()

    @r.get("/requests/{request_id}/files/{name}")
    def download(request_id: str, name: str, request: Request):
        job = svc.own_job(request_id, svc.auth.user(request, allow_cookie=True))
        files = {f["file_name"]: f for k in OUTPUT_KEYS if (f := (job.result or {}).get(k))}
        path = Path(job.out_dir) / name
        if name in files and job.status == COMPLETED:
            return FileResponse(path, media_type=files[name]["content_type"], filename=name)
        if name == "metrics.jsonl" and path.is_file():
            return FileResponse(path, media_type="application/jsonl", filename=name)
        return problem(404, ["path", "name"], f"request '{request_id}' has no file '{name}'")

    return r
