"""Inference with a trained LoRA for every product, through the validation previews' sampler (one path: see
`ltxtrain.sample.inference`), as an mp4 (or a .wav for products whose video is not generated).

`InferenceEngine` holds the base model (built once, as are the VAEs that encode condition media) and runs one
request at a time: load the LoRA onto the transformer under a fresh adapter name, sample, delete the adapter, so the
base weights are never changed. It runs
in-process for tests (`LocalInference`) or inside the `InferenceDeployment` Serve replica (with `num_gpus` on GPU
clusters), which the API reaches through a handle (`HandleInference`). User errors come back as data
(`{"errors": [...]}`), not as exceptions, so they cross the Serve boundary intact.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import uuid

from ltxtrain.sample.inference import parse_inference

from .config import ServeConfig


class InferenceEngine:
    def __init__(self, model: str, home: str, text_encoder: str | None = None, allow_private_urls: bool = False,
                 max_lora_bytes: int = 4 * 2**30, max_media_bytes: int = 2 * 2**30, device: str | None = None):
        import torch

        from ltxtrain.models.bundle import build_pipeline, load_model_info, resolve_model

        self.model_dir = resolve_model(model, os.path.join(home, "models"), text_encoder=text_encoder)
        self.info = load_model_info(self.model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.pipe = build_pipeline(self.model_dir, dtype=dtype, device=self.device)  # its parts; never called
        self._media_encoders: dict | None = None
        self.allow_private_urls = allow_private_urls
        self.max_lora_bytes = max_lora_bytes
        self.max_media_bytes = max_media_bytes
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: ServeConfig) -> "InferenceEngine":
        return cls(config.model, config.home, text_encoder=config.text_encoder,
                   allow_private_urls=config.allow_private_urls, max_lora_bytes=config.max_lora_bytes)

    def _limits(self, max_bytes: int):
        from ltxtrain.intake.limits import IntakeLimits

        return IntakeLimits(max_download_bytes=max_bytes, allow_private_addresses=self.allow_private_urls,
                            timeout_s=60.0)

    def generate(self, endpoint: str, params: dict, lora: dict) -> dict:
        """→ {"data": file bytes, "media_type": ...} or {"errors": [{loc, msg}]} (the request's fault)."""
        from ltxtrain.api.errors import RequestError
        from ltxtrain.intake.fetch import fetch
        from ltxtrain.products import get_recipe
        from ltxtrain.sample.inference import media_urls

        try:
            recipe = get_recipe(endpoint)
            req = parse_inference(recipe, params)
            with tempfile.TemporaryDirectory(prefix="ltxtrain-infer-") as tmp:
                media = {}
                for name, url in media_urls(recipe, req).items():
                    suffix = os.path.splitext(url.split("?")[0])[1][:8] or ".bin"
                    media[name] = fetch(url, os.path.join(tmp, name + suffix), self._limits(self.max_media_bytes),
                                        field=name)
                path = self._lora_path(lora, tmp)
                data, media_type = self._sample(recipe, req, media, path)
                return {"data": data, "media_type": media_type}
        except RequestError as exc:
            return {"errors": [e.to_json() for e in exc.errors]}

    def _lora_path(self, lora: dict, tmp: str) -> str:
        from ltxtrain.api.errors import RequestError
        from ltxtrain.intake.fetch import fetch

        if lora.get("path"):
            return lora["path"]
        path = fetch(lora["url"], os.path.join(tmp, "lora.safetensors"), self._limits(self.max_lora_bytes),
                     field="lora_url")
        try:
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                f.keys()
        except Exception:  # noqa: BLE001 - anything that is not a readable safetensors file
            raise RequestError.field("lora_url", "the file is not a .safetensors LoRA") from None
        return path

    def _encoders(self) -> dict:
        """The VAEs that encode condition media (images, clips, masks, audio), loaded once, in float32 as the
        training cache encodes them: the pipeline's own where it is float32 (CPU), else float32 copies on the device
        beside the bf16 decoders."""
        if self._media_encoders is None:
            import torch

            from ltxtrain.models.bundle import load_components

            p = self.pipe
            if p.vae.dtype == torch.float32:
                self._media_encoders = {"vae": p.vae, "audio_vae": p.audio_vae}
            else:
                self._media_encoders = load_components(self.model_dir, ["vae", "audio_vae"], device=self.device)
        return self._media_encoders

    def _text(self, prompt: str):
        from ltxtrain.conditioning.tokens import TextContext
        from ltxtrain.encode.encoders import encode_text

        p = self.pipe
        video, audio, mask = encode_text(p.tokenizer, p.text_encoder, p.connectors, [prompt],
                                         self.info.max_sequence_length)
        return TextContext(video.to(self.device), audio.to(self.device), mask.to(self.device))

    def _sample(self, recipe, req, media: dict[str, str], lora_path: str) -> tuple[bytes, str]:
        from ltxtrain.api.errors import RequestError
        from ltxtrain.export.lora_file import load_lora_into_pipeline, read_lora_metadata
        from ltxtrain.sample.inference import sample_one

        field = "lora_url" if req.lora_url else "request_id"
        metadata = read_lora_metadata(lora_path)  # how the LoRA was trained (e.g. its reference scaling)
        p = self.pipe
        decoders = {"vae": p.vae, "audio_vae": p.audio_vae, "vocoder": p.vocoder}
        with self._lock:
            name = f"lora_{uuid.uuid4().hex[:12]}"
            try:
                load_lora_into_pipeline(p, lora_path, adapter_name=name)
            except Exception as exc:  # noqa: BLE001 - keys that match no module of this model, bad shapes
                raise RequestError.field(field, f"the LoRA does not fit this model: {exc}") from None
            try:
                p.set_adapters([name], [req.lora_scale])
                text, negative = self._text(req.prompt), self._text(req.negative_prompt)
                encoders = self._encoders() if media else None
                return sample_one(recipe, req, media, metadata, model_dir=self.model_dir, transformer=p.transformer,
                                  text=text, negative=negative, decoders=decoders, encoders=encoders)
            finally:
                p.delete_adapters(name)


# ------------------------------------------------------------------------------------------------------ backends
class LocalInference:
    """The engine in this process, built on first use (tests, single-process runs)."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self._engine: InferenceEngine | None = None
        self._lock = threading.Lock()

    def _get(self) -> InferenceEngine:
        with self._lock:
            if self._engine is None:
                self._engine = InferenceEngine.from_config(self.config)
            return self._engine

    async def __call__(self, endpoint: str, params: dict, lora: dict) -> dict:
        return await asyncio.to_thread(lambda: self._get().generate(endpoint, params, lora))


class HandleInference:
    """The InferenceDeployment replica, through a Serve handle."""

    def __init__(self, handle):
        self.handle = handle

    async def __call__(self, endpoint: str, params: dict, lora: dict) -> dict:
        return await self.handle.generate.remote(endpoint, params, lora)


class InferenceDeployment:
    """Serve deployment body (wrapped with `serve.deployment` in serve/app.py): holds the base model."""

    def __init__(self, config: dict):
        cfg = ServeConfig(**config)
        os.environ.setdefault("LTXTRAIN_HOME", cfg.home)
        self.engine = InferenceEngine.from_config(cfg)

    def generate(self, endpoint: str, params: dict, lora: dict) -> dict:
        return self.engine.generate(endpoint, params, lora)
