"""`POST /inference/{endpoint}`: one sample with a trained LoRA (a finished job's, or one by URL) → video/mp4, or
audio/wav for products whose video is not generated."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ltxtrain.api.errors import RequestError
from ltxtrain.products import get_recipe

from ..inference import parse_inference
from ..service import Service
from ..store import COMPLETED
from ..web import problem, read_json


def router(svc: Service) -> APIRouter:
    r = APIRouter()

    @r.post("/inference/{endpoint:path}")
    async def infer(endpoint: str, request: Request):
        user = svc.auth.user(request)
        try:
            recipe = get_recipe(endpoint)
        except RequestError as exc:
            return problem(404, ["path", "endpoint"], exc.errors[0].msg if exc.errors else "unknown endpoint")
        endpoint = endpoint.strip("/")
        params = await read_json(request, svc.config.max_json_depth)
        req = parse_inference(recipe, params)
        if req.request_id is not None:
            job = svc.store.get(req.request_id)
            if job is None or job.owner != user:
                raise HTTPException(404, detail=[{"loc": ["body", "request_id"],
                                                  "msg": f"no request '{req.request_id}'"}])
            lora = (job.result or {}).get("lora_file")
            if job.status != COMPLETED or not lora:
                return problem(409, ["body", "request_id"], f"request '{job.id}' is {job.status}; only a "
                                                            f"COMPLETED training has a LoRA")
            if job.endpoint != endpoint:
                return problem(422, ["body", "request_id"],
                               f"request '{job.id}' trained a {job.endpoint} LoRA, not {endpoint}")
            source = {"path": str(Path(job.out_dir) / lora["file_name"])}
        else:
            source = {"url": req.lora_url}
        # the LoRA and every condition input under the one URL policy, before the replica fetches them
        errors = await run_in_threadpool(svc.check_urls, {k: v for k, v in req.model_dump().items()
                                                          if k.endswith("_url") and v})
        if errors:
            raise RequestError(errors)
        result = await svc.inference(endpoint, params, source)
        if "errors" in result:
            return JSONResponse({"detail": result["errors"]}, status_code=422)
        name = "sample.wav" if result["media_type"] == "audio/wav" else "sample.mp4"
        return Response(result["data"], media_type=result["media_type"],
                        headers={"Content-Disposition": f'inline; filename="{name}"'})

    return r
