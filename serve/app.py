"""HTTP API (FastAPI) and its Ray Serve deployments.

    POST /{endpoint}                    submit a training (t2v, ic-lora/v2v, ...)    → 202 {request_id, *_url}
    GET  /requests/{id}/status[?logs=1] IN_QUEUE | IN_PROGRESS | COMPLETED | FAILED | CANCELLED
    GET  /requests/{id}                 the outputs, with download URLs             (409 while not finished)
    GET  /requests/{id}/files/{name}    one output file (or metrics.jsonl)
    PUT  /requests/{id}/cancel
    POST /requests/{id}/resume          a FAILED or CANCELLED training, again as its next attempt → 202
                                        (409 otherwise; alias POST /jobs/{id}/resume)
    GET  /requests                      this user's trainings, newest first
    POST /inference/{endpoint}          one sample with a LoRA (request_id or lora_url) → video/mp4 (audio/wav
                                        for products whose video is not generated)
    GET  /                              HTML list of the user's jobs
    /{owner}/{alias}/...                the fal queue API (serve/routes/fal.py), for the public fal-client
Every error body is {"detail": [{"loc": [...], "msg": "..."}]} (unknown routes: 404); another user's job answers 404.

`create_app(config)` builds the FastAPI app from its routers (serve/routes/: jobs, files, inference, page, fal), with
the body size cap in front; tests use it directly. `build_app(config)` is the Serve application: the API deployment
plus the inference deployment that holds the base model.
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI

from .config import ServeConfig
from .inference import LocalInference
from .routes import fal, files, inference as inference_routes, jobs, page
from .service import Service
from .store import JobStore
from .web import BodyLimit, install_error_handlers


def create_app(config: ServeConfig, inference=None, store: JobStore | None = None) -> FastAPI:
    svc = Service(config, store or JobStore(config.db_path), inference or LocalInference(config))

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        svc.runner.start()
        try:
            yield
        finally:
            svc.runner.stop()

    app = FastAPI(title="ltxtrain", version="0.1.0", lifespan=lifespan,
                  description="Train LTX-2 LoRAs: submit, poll, fetch outputs, try a LoRA.")
    app.state.config, app.state.store, app.state.runner, app.state.service = config, svc.store, svc.runner, svc
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    # order matters: the fal app-id routes are patterns that would also match our own paths
    for module in (page, jobs, files, inference_routes, fal):
        app.include_router(module.router(svc))
    return app


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
