"""HTTP API (FastAPI) and its Ray Serve deployments.

    POST /{endpoint}                    submit a training (t2v, ic-lora/v2v)         → 202 {request_id, *_url}
    GET  /requests/{id}/status[?logs=1] IN_QUEUE | IN_PROGRESS | COMPLETED | FAILED | CANCELLED
    GET  /requests/{id}                 the outputs, with download URLs             (409 while not finished)
    GET  /requests/{id}/files/{name}    one output file (or metrics.jsonl)
    PUT  /requests/{id}/cancel
    POST /requests/{id}/resume          a FAILED or CANCELLED training, again as its next attempt → 202
                                        (409 otherwise; alias POST /jobs/{id}/resume)
    GET  /requests                      this user's trainings, newest first
    POST /inference/{endpoint}          one sample with a LoRA (request_id or lora_url) → video/mp4
    GET  /                              HTML list of the user's jobs
Every error body is {"detail": [{"loc": [...], "msg": "..."}]}; another user's job answers 404.

`create_app(config)` builds the FastAPI app (tests use it directly); `build_app(config)` the Serve application:
the API deployment plus the inference deployment that holds the base model.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from ltxtrain.api.errors import ErrorItem, RequestError
from ltxtrain.products import get_recipe

from . import page
from .auth import Auth
from .config import ServeConfig
from .inference import SUPPORTED as INFERENCE_ENDPOINTS
from .inference import LocalInference, parse_inference_request
from .runner import Runner, read_metrics
from .store import ACTIVE, CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, JobRecord, JobStore

OUTPUT_KEYS = ("lora_file", "config_file", "video", "debug_dataset")


def problem(code: int, loc: list, msg: str, **extra) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": msg}], **extra}, status_code=code)


def _endpoint_error(endpoint: str, exc: RequestError) -> JSONResponse:
    return problem(404, ["path", "endpoint"], exc.errors[0].msg if exc.errors else f"unknown endpoint '{endpoint}'")


def create_app(config: ServeConfig, inference=None, store: JobStore | None = None) -> FastAPI:
    store = store or JobStore(config.db_path)
    runner = Runner(config, store)
    auth = Auth(config.tokens)
    inference = inference or LocalInference(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        runner.start()
        try:
            yield
        finally:
            runner.stop()

    app = FastAPI(title="ltxtrain", version="0.1.0", lifespan=lifespan,
                  description="Train LTX-2 LoRAs: submit, poll, fetch outputs, try a LoRA.")
    app.state.config, app.state.store, app.state.runner = config, store, runner

    # --------------------------------------------------------------------------------------------- helpers
    def base(request: Request) -> str:
        return (config.public_url or str(request.base_url)).rstrip("/")

    def urls(request: Request, job_id: str) -> dict:
        b = f"{base(request)}/requests/{job_id}"
        return {"status_url": f"{b}/status", "response_url": b, "cancel_url": f"{b}/cancel"}

    def resume_url(request: Request, job: JobRecord) -> str | None:
        """Where the owner resumes the job, while it can be resumed."""
        if job.status == FAILED or (job.status == CANCELLED and not job.stop_pending):
            return f"{base(request)}/requests/{job.id}/resume"
        return None

    def own_job(request_id: str, user: str) -> JobRecord:
        job = store.get(request_id)
        if job is None or job.owner != user:  # someone else's job does not exist for this user
            raise HTTPException(404, detail=[{"loc": ["path", "request_id"], "msg": f"no request '{request_id}'"}])
        return job

    def status_body(request: Request, job: JobRecord, logs: bool = False) -> dict:
        body = {"request_id": job.id, "endpoint": job.endpoint, "status": job.status, "created": job.created,
                "updated": job.updated, "attempt": job.attempt + 1, "resumed": job.attempt}
        if job.status == IN_QUEUE:
            body["queue_position"] = store.queue_position(job)
        elif job.status == IN_PROGRESS:
            body.update(runner.progress(job))
        elif job.status == COMPLETED:
            body["billing_units"] = job.billing_units
        elif job.status == FAILED:
            err = job.error or {}
            body.update(error=err.get("msg", "failed"), billing_units=0)
            if err.get("detail"):
                body["detail"] = err["detail"]
        if url := resume_url(request, job):
            body["resume_url"] = url
        if logs:
            body["logs"] = runner.logs(job)
        return body

    def outputs(request: Request, job: JobRecord) -> dict:
        result = job.result or {}
        out = {}
        for key in OUTPUT_KEYS:
            f = result.get(key)
            if f:
                f = dict(f)
                f["url"] = f"{base(request)}/requests/{job.id}/files/{f['file_name']}"
            out[key] = f
        return out

    # --------------------------------------------------------------------------------------------- errors
    @app.exception_handler(RequestError)
    async def _request_error(_request: Request, exc: RequestError):
        return JSONResponse({"detail": [e.to_json() for e in exc.errors]}, status_code=422)

    # --------------------------------------------------------------------------------------------- reads
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request):
        try:
            user = auth.user(request, allow_cookie=True)
        except HTTPException:
            return HTMLResponse(page.login_page(), status_code=401)
        jobs = []
        for job in store.list_for(user, limit=50):
            job = runner.refresh(job) if job.status in ACTIVE else job
            detail = ""
            if job.status == IN_PROGRESS:
                p = runner.progress(job)
                detail = f"{p['phase']} {p['step']}/{p['total']}"
            elif job.status == IN_QUEUE:
                detail = f"position {store.queue_position(job)}"
            elif job.status == FAILED:
                detail = (job.error or {}).get("msg", "")[:300]
            outs = outputs(request, job) if job.status == COMPLETED else {}
            jobs.append({
                "request_id": job.id, "endpoint": job.endpoint, "status": job.status, "created": job.created,
                "detail": detail, "outputs": [(f["file_name"], f["url"]) for f in outs.values() if f],
                "video": (outs.get("video") or {}).get("url"), "resumed": job.attempt,
                "resume_url": resume_url(request, job),
                "metrics": read_metrics(Path(job.out_dir) / "metrics.jsonl", limit=2000),
            })
        return HTMLResponse(page.jobs_page(user, jobs))

    @app.get("/requests")
    def history(request: Request, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)):
        user = auth.user(request, allow_cookie=True)
        items = []
        for job in store.list_for(user, limit=limit, offset=offset):
            items.append({"request_id": job.id, "endpoint": job.endpoint, "status": job.status,
                          "created": job.created, "updated": job.updated, "billing_units": job.billing_units,
                          "resumed": job.attempt, **urls(request, job.id)})
        return {"requests": items}

    @app.get("/requests/{request_id}/status")
    def status(request_id: str, request: Request, logs: bool = False):
        job = runner.refresh(own_job(request_id, auth.user(request, allow_cookie=True)))
        return status_body(request, job, logs)

    @app.get("/requests/{request_id}")
    def response(request_id: str, request: Request):
        job = own_job(request_id, auth.user(request, allow_cookie=True))
        job = runner.refresh(job) if job.status in ACTIVE else job
        if job.status == COMPLETED:
            result = job.result or {}
            return {"request_id": job.id, "status": job.status, **outputs(request, job),
                    "billing_units": job.billing_units,
                    **{k: result.get(k) for k in ("endpoint", "number_of_steps", "samples", "with_audio",
                                                  "skipped", "warnings", "metrics")}}
        if job.status == FAILED:
            err = job.error or {}
            detail = err.get("detail") or [{"loc": [], "msg": err.get("msg", "the job failed")}]
            return JSONResponse({"detail": detail, "request_id": job.id, "status": job.status, "billing_units": 0},
                                status_code=422 if err.get("status") == 422 else 500)
        return problem(409, ["path", "request_id"], f"request '{job.id}' is {job.status}; it has no outputs",
                       request_id=job.id, status=job.status)

    @app.get("/requests/{request_id}/files/{name}")
    def download(request_id: str, name: str, request: Request):
        job = own_job(request_id, auth.user(request, allow_cookie=True))
        files = {f["file_name"]: f for k in OUTPUT_KEYS if (f := (job.result or {}).get(k))}
        path = Path(job.out_dir) / name
        if name in files and job.status == COMPLETED:
            return FileResponse(path, media_type=files[name]["content_type"], filename=name)
        if name == "metrics.jsonl" and path.is_file():
            return FileResponse(path, media_type="application/jsonl", filename=name)
        return problem(404, ["path", "name"], f"request '{request_id}' has no file '{name}'")

    # --------------------------------------------------------------------------------------------- writes
    @app.put("/requests/{request_id}/cancel")
    def cancel(request_id: str, request: Request):
        job = own_job(request_id, auth.user(request))
        if job.status not in ACTIVE:
            return problem(409, ["path", "request_id"], f"request '{job.id}' is already {job.status}",
                           request_id=job.id, status=job.status)
        job = runner.cancel(job)
        if job.status != CANCELLED:  # it finished in the meantime
            return problem(409, ["path", "request_id"], f"request '{job.id}' is already {job.status}",
                           request_id=job.id, status=job.status)
        return {"request_id": job.id, "status": job.status}

    @app.post("/requests/{request_id}/resume", status_code=202)
    @app.post("/jobs/{request_id}/resume", status_code=202, include_in_schema=False)  # alias
    def resume(request_id: str, request: Request):
        """Queue a FAILED or CANCELLED training again. It runs as a new Ray job on the same output directory, so it
        carries on from its latest checkpoint, without preprocessing again."""
        job = own_job(request_id, auth.user(request))
        job = runner.refresh(job) if job.status in ACTIVE else job
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
        return JSONResponse({"request_id": job.id, **urls(request, job.id), "status": job.status,
                             "queue_position": store.queue_position(job), "attempt": job.attempt + 1,
                             "resumed": job.attempt}, status_code=202)

    @app.post("/inference/{endpoint:path}")
    async def infer(endpoint: str, request: Request):
        user = auth.user(request)
        try:
            get_recipe(endpoint)
        except RequestError as exc:
            return _endpoint_error(endpoint, exc)
        endpoint = endpoint.strip("/")
        if endpoint not in INFERENCE_ENDPOINTS:
            return problem(422, ["path", "endpoint"], f"inference for '{endpoint}' is not available yet; "
                                                      f"available: {', '.join(INFERENCE_ENDPOINTS)}")
        params = await _json_body(request)
        req = parse_inference_request(params)
        if req.request_id is not None:
            job = own_job_body(req.request_id, user)
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
        result = await inference(endpoint, params, source)
        if "errors" in result:
            return JSONResponse({"detail": result["errors"]}, status_code=422)
        return Response(result["video"], media_type="video/mp4",
                        headers={"Content-Disposition": 'inline; filename="sample.mp4"'})

    def own_job_body(request_id: str, user: str) -> JobRecord:
        job = store.get(request_id)
        if job is None or job.owner != user:
            raise HTTPException(404, detail=[{"loc": ["body", "request_id"], "msg": f"no request '{request_id}'"}])
        return job

    @app.post("/{endpoint:path}", status_code=202)
    async def submit(endpoint: str, request: Request):
        user = auth.user(request)
        try:
            recipe = get_recipe(endpoint)
        except RequestError as exc:
            return _endpoint_error(endpoint, exc)
        payload = await _json_body(request)
        recipe.parse(payload)  # RequestError → 422, nothing recorded
        if not config.allow_private_urls:
            _refuse_local_url(payload.get("training_data_url"))
        job = runner.submit(user, recipe.endpoint, payload)
        return JSONResponse({"request_id": job.id, **urls(request, job.id), "status": job.status,
                             "queue_position": store.queue_position(job)}, status_code=202)

    return app


async def _json_body(request: Request):
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(ErrorItem(("body",), f"the body is not valid JSON: {exc}")) from None


def _refuse_local_url(url) -> None:
    """Early, cheap version of the job's strict URL check: local paths and literal non-public IPs get their 422
    here. (Hosts that *resolve* to private addresses are refused inside the job, where the fetch happens.)"""
    import ipaddress
    import urllib.parse

    if not isinstance(url, str):
        return
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "s3"):
        raise RequestError.field("training_data_url", "local paths and file:// URLs are not accepted here; give an "
                                                      "http(s):// or s3:// URL")
    host = (parts.hostname or "").strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            raise RequestError.field("training_data_url", f"{host} is not a public host") from None
        return
    if not ip.is_global or ip.is_multicast:
        raise RequestError.field("training_data_url", f"{host} is a non-public address")


# ------------------------------------------------------------------------------------------------- Ray Serve
def _deployments():
    from ray import serve

    from .inference import HandleInference, InferenceDeployment

    @serve.deployment(name="ltxtrain-api", ray_actor_options={"num_cpus": 0})
    @serve.ingress()
    class ApiServer:
        def __init__(self, config: dict, inference_handle):
            self._config = ServeConfig(**config)
            self._inference = HandleInference(inference_handle)

        def __serve_build_asgi_app__(self):
            return create_app(self._config, inference=self._inference)

    inference = serve.deployment(name="ltxtrain-inference", max_ongoing_requests=1)(InferenceDeployment)
    return ApiServer, inference


def build_app(config: ServeConfig | None = None):
    """The Serve application: `serve.run(build_app(cfg), route_prefix="/")` from a driver whose runtime_env has
    the repository as working_dir (see serve/deploy.py)."""
    import ray

    config = config or ServeConfig.from_env()
    gpus = config.inference_num_gpus
    if gpus is None:
        gpus = 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    # working_dir: inherited from the deploying driver's job (serve/deploy.py, or `serve run --working-dir .`);
    # Ray accepts local directories only at the job level.
    runtime_env = {"env_vars": {"LTXTRAIN_HOME": config.home, "HF_HUB_OFFLINE": "1"}}
    api, inference = _deployments()
    model = inference.options(ray_actor_options={"num_gpus": gpus, "num_cpus": 1 if gpus else 0,
                                                 "runtime_env": runtime_env}).bind(config.to_dict())
    return api.options(ray_actor_options={"num_cpus": 0, "runtime_env": runtime_env}).bind(config.to_dict(), model)


def app_builder(args: dict):
    """`serve run serve.app:app_builder` — configured from LTXTRAIN_SERVE_* environment variables."""
    return build_app(ServeConfig.from_env())
