"""Service configuration: one dataclass, built in code (tests) or from LTXTRAIN_SERVE_* environment variables.

| field | env | default |
|---|---|---|
| db_path | LTXTRAIN_SERVE_DB | $LTXTRAIN_HOME/serve/jobs.db |
| out_root | LTXTRAIN_SERVE_OUT | $LTXTRAIN_HOME/serve/jobs (must be shared storage on a multi-node cluster) |
| tokens | LTXTRAIN_SERVE_TOKENS | {} — JSON object `{"<token>": "<user>"}`, or `{"sha256:<hex of sha256(token)>": "<user>"}`
  so plain keys need not sit in the environment; no tokens means nobody gets in |
| dashboard | LTXTRAIN_SERVE_DASHBOARD / RAY_DASHBOARD_ADDRESS | http://127.0.0.1:8265 |
| model | LTXTRAIN_SERVE_MODEL | tiny |
| text_encoder | LTXTRAIN_SERVE_TEXT_ENCODER | none |
| workers | LTXTRAIN_SERVE_WORKERS | none (the job picks: GPUs, or 2 on CPU) |
| cpu | LTXTRAIN_SERVE_CPU | false (1/true: pass --cpu to every job) |
| max_running | LTXTRAIN_SERVE_MAX_RUNNING | 1 (0 holds the queue: nothing starts) |
| auto_resume_attempts | LTXTRAIN_SERVE_AUTO_RESUME | 2 — times in a row a job whose Ray job vanished (cluster restart) is
  queued again to resume; then it fails (0: fail at once); the owner can still resume it by hand |
| allow_private_urls | LTXTRAIN_SERVE_ALLOW_PRIVATE_URLS | false (true: loopback/private hosts and local paths allowed) |
| scheduler_interval_s | LTXTRAIN_SERVE_SCHEDULER_INTERVAL | 2.0 (0: no background thread; the queue moves on requests) |
| public_url | LTXTRAIN_SERVE_PUBLIC_URL | the request's own base URL |
| inference_num_gpus | LTXTRAIN_SERVE_INFERENCE_GPUS | 1 when the cluster has GPUs, else 0 |
| max_body_bytes | LTXTRAIN_SERVE_MAX_BODY_BYTES | 1048576 — larger request bodies answer 413 |
| max_json_depth | LTXTRAIN_SERVE_MAX_JSON_DEPTH | 32 — deeper JSON bodies answer 422 |
| webhook_attempts | LTXTRAIN_SERVE_WEBHOOK_ATTEMPTS | 3 — tries per `fal_webhook` delivery (retry_s × 2^n apart) |
| job_env | LTXTRAIN_SERVE_JOB_ENV | {} — JSON object of extra env vars for each job's driver (LTXTRAIN_HOME is
  forwarded when set) |
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _home() -> Path:
    return Path(os.environ.get("LTXTRAIN_HOME", Path.home() / ".cache" / "ltxtrain"))


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _json_object(name: str) -> dict:
    raw = os.environ.get(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{name} must be a JSON object of strings to strings")
    return value


@dataclass
class ServeConfig:
    db_path: str = field(default_factory=lambda: str(_home() / "serve" / "jobs.db"))
    out_root: str = field(default_factory=lambda: str(_home() / "serve" / "jobs"))
    tokens: dict[str, str] = field(default_factory=dict)  # token -> user name
    dashboard: str = "http://127.0.0.1:8265"
    model: str = "tiny"
    text_encoder: str | None = None
    workers: int | None = None
    cpu: bool = False
    max_running: int = 1
    auto_resume_attempts: int = 2  # requeues in a row of a job whose Ray job no longer exists (cluster restart)
    allow_private_urls: bool = False
    scheduler_interval_s: float = 2.0
    job_env: dict[str, str] = field(default_factory=dict)
    repo_root: str = str(REPO_ROOT)
    python: str = "python"  # the interpreter the job's entrypoint runs with on the cluster
    home: str = field(default_factory=lambda: str(_home()))  # LTXTRAIN_HOME: model cache for inference
    public_url: str | None = None  # base of the URLs handed out (default: the URL the request came in on)
    inference_num_gpus: float | None = None  # None: 1 when the cluster has GPUs, else 0
    # inference: the largest LoRA file fetched from a URL, and how many log lines `?logs=1` returns at most
    max_lora_bytes: int = 4 * 2**30
    max_log_lines: int = 2000
    # hardening: request body size and JSON nesting; fal_webhook delivery
    max_body_bytes: int = 2**20
    max_json_depth: int = 32
    webhook_attempts: int = 3
    webhook_retry_s: float = 2.0
    webhook_timeout_s: float = 10.0

    def __post_init__(self):
        if self.max_running < 0:
            raise ValueError(f"max_running must be >= 0, got {self.max_running}")
        if self.auto_resume_attempts < 0:
            raise ValueError(f"auto_resume_attempts must be >= 0, got {self.auto_resume_attempts}")
        if self.max_body_bytes < 1024 or self.max_json_depth < 2 or self.webhook_attempts < 1:
            raise ValueError("max_body_bytes must be >= 1024, max_json_depth >= 2 and webhook_attempts >= 1")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        self.dashboard = self.dashboard if "://" in self.dashboard else f"http://{self.dashboard}"

    @classmethod
    def from_env(cls, **overrides) -> "ServeConfig":
        env = os.environ
        values: dict = {}
        if env.get("LTXTRAIN_SERVE_DB"):
            values["db_path"] = env["LTXTRAIN_SERVE_DB"]
        if env.get("LTXTRAIN_SERVE_OUT"):
            values["out_root"] = env["LTXTRAIN_SERVE_OUT"]
        values["tokens"] = _json_object("LTXTRAIN_SERVE_TOKENS")
        values["job_env"] = _json_object("LTXTRAIN_SERVE_JOB_ENV")
        if env.get("LTXTRAIN_HOME"):
            values["job_env"].setdefault("LTXTRAIN_HOME", env["LTXTRAIN_HOME"])
        dash = env.get("LTXTRAIN_SERVE_DASHBOARD") or env.get("RAY_DASHBOARD_ADDRESS")
        if dash:
            values["dashboard"] = dash
        if env.get("LTXTRAIN_SERVE_MODEL"):
            values["model"] = env["LTXTRAIN_SERVE_MODEL"]
        if env.get("LTXTRAIN_SERVE_TEXT_ENCODER"):
            values["text_encoder"] = env["LTXTRAIN_SERVE_TEXT_ENCODER"]
        if env.get("LTXTRAIN_SERVE_WORKERS"):
            values["workers"] = int(env["LTXTRAIN_SERVE_WORKERS"])
        values["cpu"] = _bool(env.get("LTXTRAIN_SERVE_CPU"), False)
        if env.get("LTXTRAIN_SERVE_MAX_RUNNING"):
            values["max_running"] = int(env["LTXTRAIN_SERVE_MAX_RUNNING"])
        if env.get("LTXTRAIN_SERVE_AUTO_RESUME"):
            values["auto_resume_attempts"] = int(env["LTXTRAIN_SERVE_AUTO_RESUME"])
        values["allow_private_urls"] = _bool(env.get("LTXTRAIN_SERVE_ALLOW_PRIVATE_URLS"), False)
        if env.get("LTXTRAIN_SERVE_SCHEDULER_INTERVAL"):
            values["scheduler_interval_s"] = float(env["LTXTRAIN_SERVE_SCHEDULER_INTERVAL"])
        if env.get("LTXTRAIN_SERVE_PUBLIC_URL"):
            values["public_url"] = env["LTXTRAIN_SERVE_PUBLIC_URL"]
        for name, key, kind in (("LTXTRAIN_SERVE_MAX_BODY_BYTES", "max_body_bytes", int),
                                ("LTXTRAIN_SERVE_MAX_JSON_DEPTH", "max_json_depth", int),
                                ("LTXTRAIN_SERVE_WEBHOOK_ATTEMPTS", "webhook_attempts", int)):
            if env.get(name):
                values[key] = kind(env[name])
        if env.get("LTXTRAIN_SERVE_INFERENCE_GPUS"):
            values["inference_num_gpus"] = float(env["LTXTRAIN_SERVE_INFERENCE_GPUS"])
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain data, so a config can be passed to Serve deployments (`.bind(config.to_dict())`)."""
        return asdict(self)
