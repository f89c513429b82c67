"""One job = intake → preprocess (Ray Data) → train (Ray Train) → export. Used by the CLI, jobs/train.py and Serve."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .api.errors import Diagnostics, RequestError
from .api.result import OutputFile, TrainingResult, billing_units
from .export.quality_gate import QualityGateError
from .intake.archive import extract_archive, require_nonempty
from .intake.dataset import SampleSpec, build_samples, resolve_audio
from .intake.fetch import fetch
from .intake.limits import IntakeLimits
from .products import get_recipe
from .conditioning.kinds import ConditionSet
from .products.base import Recipe
from .encode.stream import StreamSettings
from .storage import StorageError, download_dir, exists, forwarded_env, is_remote, join, node_local_copy, remove, \
    upload_dir

log = logging.getLogger("ltxtrain")


def default_home() -> Path:
    return Path(os.environ.get("LTXTRAIN_HOME", Path.home() / ".cache" / "ltxtrain"))


@dataclass
class Intake:
    recipe: Recipe
    request: object
    samples: list[SampleSpec]
    diag: Diagnostics
    data_dir: str
    audio: bool = False  # the clips' audio is trained (resolved from the recipe's audio role and the clips)
    init_lora: str | None = None  # init_lora_url fetched, checked and normalised (peft keys, float32)

    @property
    def conditions(self) -> ConditionSet:
        """The recipe bound to this request: what preprocessing, the workers and the sampler receive."""
        return self.recipe.bind(self.request, self.audio)


def intake(endpoint: str, payload: dict, work_dir: str, limits: IntakeLimits = IntakeLimits()) -> Intake:
    """Validate the request, fetch and extract the archive, match files to samples. Raises RequestError (422)."""
    recipe = get_recipe(endpoint)
    request = recipe.parse(payload)
    os.makedirs(work_dir, exist_ok=True)
    # a re-run of the same job (resume) re-extracts: the scratch copy of the archive is ours to replace
    shutil.rmtree(os.path.join(work_dir, "data"), ignore_errors=True)
    archive = fetch(request.training_data_url, os.path.join(work_dir, "dataset.zip"), limits)
    data_dir = os.path.join(work_dir, "data")
    files = extract_archive(archive, data_dir, limits)
    require_nonempty(files)
    diag = Diagnostics()
    samples = build_samples(recipe, request, files, diag)
    audio = resolve_audio(recipe, request, samples, diag)
    init_lora = _fetch_init_lora(recipe, request, audio, work_dir, limits) if request.init_lora_url else None
    return Intake(recipe, request, samples, diag, data_dir, audio, init_lora)


INIT_LORA_DIR = "init_lora"


def _fetch_init_lora(recipe: Recipe, request, audio: bool, work_dir: str, limits: IntakeLimits) -> str:
    """init_lora_url -> `work_dir/init_lora/<sha1 of the file>.safetensors` (peft keys, float32, alpha baked), or a
    422 naming the field: unreadable file, unknown keys, a rank other than the request's, modules the job does not
    train. The name follows the content, so a job re-run with another LoRA never meets a stale shared copy."""
    from .export.lora_file import LoraFileError, read_lora_file
    from .intake.fetch import redact_url
    from .models.lora import check_lora_targets

    field_ = "init_lora_url"
    if request.training_mode != "lora":
        raise RequestError.field(field_, "continuing from a LoRA needs training_mode 'lora'")
    folder = os.path.join(work_dir, INIT_LORA_DIR)
    shutil.rmtree(folder, ignore_errors=True)
    raw = fetch(request.init_lora_url, os.path.join(folder, "download.safetensors"), limits, field=field_)
    try:
        peft_sd, _ = read_lora_file(raw)
        check_lora_targets(peft_sd, request.rank, recipe.lora_targets(request, audio))
    except (LoraFileError, ValueError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise RequestError.field(field_, f"{redact_url(request.init_lora_url)}: {exc}") from None
    from safetensors.torch import save_file

    sha = hashlib.sha1()
    with open(raw, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    digest = sha.hexdigest()[:16]
    os.unlink(raw)
    path = os.path.join(folder, f"{digest}.safetensors")
    save_file({k: v.contiguous() for k, v in peft_sd.items()}, path)
    return path


def _check_init_lora_fits(job: Intake, model_dir: str) -> None:
    """422 unless the LoRA's layers and sizes are the model's (built on the meta device: no weights are read)."""
    import torch
    from safetensors.torch import load_file

    from .intake.fetch import redact_url
    from .models.bundle import empty_component
    from .models.lora import check_lora_fits

    try:
        check_lora_fits(empty_component(model_dir, "transformer", torch.bfloat16), load_file(job.init_lora))
    except ValueError as exc:
        raise RequestError.field("init_lora_url", f"{redact_url(job.request.init_lora_url)}: {exc}") from None


def check(endpoint: str, payload: dict, limits: IntakeLimits = IntakeLimits()) -> dict:
    """Everything `train` checks before spending compute; the work directory is removed afterwards."""
    work = tempfile.mkdtemp(prefix="ltxtrain-check-")
    try:
        result = intake(endpoint, payload, work, limits)
        return {
            "accepted": True,
            "endpoint": result.recipe.endpoint,
            "request": result.request.model_dump(),
            "with_audio": result.audio,
            "samples": [s.to_json() for s in result.samples],
            "skipped": [s.to_json() for s in result.diag.skipped],
            "warnings": result.diag.warnings,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class JobOptions:
    model: str = "tiny"
    text_encoder: str | None = None
    address: str | None = None
    num_workers: int | None = None
    use_gpu: bool | None = None
    home: Path = field(default_factory=default_home)
    limits: IntakeLimits = field(default_factory=IntakeLimits)
    seed: int = 42
    keep_work: bool = False
    checkpoint_every: int | None = None  # default: every 10% of the run (at least 100 steps)
    max_failures: int = 2  # worker-group restarts from the latest checkpoint
    fail_at_step: int | None = None  # test hook (see TrainConfig)
    max_shard_bytes: int = 5 * 1024**3  # full fine-tunes: larger transformers are written as several files
    encoder_actors: int = 1  # video/text encoder actors (one GPU, or a GPU share when streaming, each)
    stream: StreamSettings = field(default_factory=StreamSettings)  # cache-then-train or streaming (encode/stream.py)
    # Shared storage for multi-node runs (s3://bucket/prefix, gs://...; default $LTXTRAIN_STORAGE): see JobStorage
    storage: str | None = field(default_factory=lambda: os.environ.get("LTXTRAIN_STORAGE") or None)

    @property
    def uses_storage(self) -> bool:
        return any(s and is_remote(s) for s in (self.storage, self.model, self.text_encoder))


def _init_ray(address: str | None, env_vars: dict[str, str] | None = None) -> None:
    """Start or join Ray. `env_vars` go to every task and actor of the job (runtime_env) when this call starts the
    job; a process already connected to Ray (tests, Serve) keeps its job's settings, and workers then see only
    their nodes' environment."""
    import ray

    if ray.is_initialized():
        return
    runtime_env = {}
    if os.environ.get("LTXTRAIN_SHIP_PACKAGE") == "1":
        # Under `ray job submit` the library sits in the shipped working dir, not on the workers' path:
        # ship the package itself so Ray Data tasks and Train workers on every node can import it.
        runtime_env["py_modules"] = [str(Path(__file__).resolve().parent)]
    if env_vars:
        runtime_env["env_vars"] = env_vars
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=True, runtime_env=runtime_env or None)


def storage_key(out: Path) -> str:
    """A job's folder on shared storage: `<out dir name>-<8 hex of sha1(absolute out path)>`. The same --out gives
    the same key (a re-run, even from a fresh head node using the same path, finds its cache and checkpoints); two
    jobs whose out dirs merely share a name do not (cached samples are keyed by their names in the archive)."""
    out = Path(out).resolve()
    return f"{out.name}-{hashlib.sha1(str(out).encode()).hexdigest()[:8]}"


@dataclass
class JobStorage:
    """Where a job keeps what the training workers must reach.

    Without `JobOptions.storage` (one node, today's layout) it is all under `out/work`. With it, for the job's
    `key` (see `storage_key`): `<storage>/<key>/ray_results` is Ray Train's run storage (checkpoints, so a crashed
    job resumes from any head node), `<storage>/<key>/cache` mirrors the latent cache `out/work/cache` (preprocessing
    always runs on the local copy), and models the workers cannot otherwise reach go to `<storage>/models/<folder>`.
    """

    work: Path
    root: str | None = None  # <storage>/<key>
    models: str | None = None  # <storage>/models

    @classmethod
    def for_job(cls, out: Path, storage: str | None) -> "JobStorage":
        if not storage:
            return cls(out / "work")
        return cls(out / "work", join(storage, storage_key(out)), join(storage, "models"))

    @property
    def local_cache(self) -> str:
        return str(self.work / "cache")

    @property
    def ray_results(self) -> str:
        return join(self.root, "ray_results") if self.root else str(self.work / "ray_results")

    def pull_cache(self) -> None:
        """Before preprocessing: fetch what an earlier run of this job already encoded (a fresh head node)."""
        if self.root and exists(join(self.root, "cache")):
            copied = download_dir(join(self.root, "cache"), self.local_cache)
            log.info("fetched %d cached file(s) from %s", len(copied), join(self.root, "cache"))

    def push_cache(self) -> str:
        """After preprocessing: publish the cache (manifest last); returns the `cache_dir` the workers get."""
        if not self.root:
            return self.local_cache
        uri = join(self.root, "cache")
        copied = upload_dir(self.local_cache, uri)
        log.info("uploaded %d cache file(s) to %s", len(copied), uri)
        return uri

    def model_for_workers(self, model_dir: str, source: str | None = None) -> str:
        """The `model_dir` the workers get: the driver's folder without storage; `source` when the folder is a
        node-local copy of that remote diffusers folder; else the folder uploaded once to
        `<storage>/models/<folder name>` (files there with the same size are skipped: repeats cost a listing)."""
        if not self.models:
            return model_dir
        if source:
            return source
        uri = join(self.models, os.path.basename(model_dir))
        copied = upload_dir(model_dir, uri, last=("model_index.json",))
        if copied:
            log.info("uploaded %d model file(s) to %s", len(copied), uri)
        return uri

    def share_file(self, path: str) -> str:
        """A file the workers must read (the initial LoRA): itself without storage, else uploaded once to
        `<storage>/<key>/<its folder>/<its name>` (names follow the content, so a changed file gets a new URI)."""
        if not self.root:
            return path
        folder = Path(path).parent
        uri = join(self.root, folder.name)
        upload_dir(str(folder), uri, last=())
        return join(uri, Path(path).name)

    def drop_restart_state(self) -> None:
        shutil.rmtree(self.work / "ray_results", ignore_errors=True)
        if self.root:
            try:
                remove(self.ray_results)
            except StorageError as exc:  # the job itself succeeded: a leftover only costs storage
                log.warning("could not delete the finished job's checkpoints: %s", exc)


def resolve_job_model(opts: JobOptions, shared: JobStorage) -> tuple[str, str]:
    """(the driver's local diffusers folder, the `model_dir` for the workers). Remote specs (a diffusers folder or a
    single-file checkpoint, and a remote text encoder) are first copied to this node under `opts.home/storage`."""
    from .models.bundle import resolve_model

    root = opts.home / "storage"
    local = node_local_copy(opts.model, root) if is_remote(opts.model) else opts.model
    text_encoder = opts.text_encoder
    if text_encoder and is_remote(text_encoder):
        text_encoder = node_local_copy(text_encoder, root)
    model_dir = resolve_model(local, str(opts.home / "models"), text_encoder=text_encoder)
    remote_folder = opts.model if is_remote(opts.model) and os.path.isdir(local) else None
    return model_dir, shared.model_for_workers(model_dir, source=remote_folder)


def run_job(endpoint: str, payload: dict, out_dir: str, opts: JobOptions = JobOptions()) -> TrainingResult:
    """Run a whole training job and write `out_dir/result.json`. RequestError propagates (after result.json)."""
    out = Path(out_dir).resolve()  # workers may run elsewhere (other cwd, other node): pass absolute paths
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(endpoint, payload, out, opts)
    except RequestError as exc:
        shutil.rmtree(out / "work", ignore_errors=True)  # nothing half-written stays behind
        (out / "result.json").write_text(json.dumps({**exc.to_json(), "billing_units": 0}, indent=2))
        raise
    except QualityGateError as exc:  # the LoRA failed its export checks: no LoRA file was written, nothing billed
        (out / "result.json").write_text(json.dumps({"accepted": True, "status": "failed", "error": str(exc),
                                                     "quality": exc.report, "billing_units": 0}, indent=2))
        raise


def _place_audio_reel(folder: Path, out: Path, slug: str) -> dict:
    """The audio previews' files as `<slug>_validation*.{wav,json,png}` outputs (the labels name the PNGs)."""
    labels = json.loads((folder / "validation.json").read_text())
    pngs = []
    for seg in labels["segments"]:
        png = out / f"{slug}_{seg['spectrogram']}"
        shutil.move(str(folder / seg["spectrogram"]), png)
        seg["spectrogram"] = png.name
        pngs.append(OutputFile.from_path(png))
    (out / f"{slug}_validation.json").write_text(json.dumps(labels, indent=1))
    shutil.move(str(folder / "validation.wav"), out / f"{slug}_validation.wav")
    shutil.rmtree(folder, ignore_errors=True)
    return {"audio": OutputFile.from_path(out / f"{slug}_validation.wav"),
            "audio_labels": OutputFile.from_path(out / f"{slug}_validation.json"), "spectrograms": pngs}


def _place_model_files(model_dir: Path, out: Path, slug: str) -> tuple[OutputFile, list[OutputFile]]:
    """A full fine-tune that fits one file becomes `<slug>_transformer.safetensors`; a sharded one the folder
    `<slug>_transformer/` (diffusers layout: shards + index, loadable with from_pretrained), whose index is
    the result's `model_file` and whose shards are `model_shards`."""
    from .export.model_file import INDEX_NAME, WEIGHTS_NAME

    if (model_dir / WEIGHTS_NAME).exists():
        single = out / f"{slug}_transformer.safetensors"
        shutil.move(str(model_dir / WEIGHTS_NAME), single)
        return OutputFile.from_path(single), []
    folder = out / f"{slug}_transformer"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.move(str(model_dir), folder)
    index = json.loads((folder / INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    return OutputFile.from_path(folder / INDEX_NAME), [OutputFile.from_path(folder / name) for name in shards]


def _run(endpoint: str, payload: dict, out: Path, opts: JobOptions) -> TrainingResult:
    import ray

    from .models.bundle import load_model_info
    from .train.config import TrainConfig
    from .train.run import run_training

    work = out / "work"
    job = intake(endpoint, payload, str(work), opts.limits)  # cheap, fails fast with 422 before Ray starts
    request, recipe = job.request, job.recipe
    _init_ray(opts.address, forwarded_env() if opts.uses_storage else None)
    resources = ray.cluster_resources()
    use_gpu = resources.get("GPU", 0) > 0 if opts.use_gpu is None else opts.use_gpu
    workers = opts.num_workers or (int(resources.get("GPU", 1)) if use_gpu else max(1, min(2, int(resources.get("CPU", 1)))))

    shared = JobStorage.for_job(out, opts.storage)
    model_dir, worker_model_dir = resolve_job_model(opts, shared)
    family = load_model_info(model_dir).family
    if job.init_lora:  # still before any preprocessing: a LoRA for another model costs nothing
        _check_init_lora_fits(job, model_dir)

    from .encode.pipeline import media_paths
    from .encode.shared_media import SharedMedia

    with SharedMedia(media_paths(job.samples)) as media:  # streaming decodes from it while training runs
        pre, validation, data = _preprocess(job, model_dir, worker_model_dir, shared, opts, use_gpu, media)
        if data.streams and not use_gpu:
            workers = _cpu_workers_beside_encoders(workers, opts, int(resources.get("CPU", 1)))
        targets = recipe.lora_targets(request, job.audio)
        cfg = TrainConfig(
            model_dir=worker_model_dir, cache_dir=shared.push_cache(), steps=request.number_of_steps,
            learning_rate=request.learning_rate, rank=request.rank, lora_targets=targets,
            conditions=job.conditions.to_json(), seed=opts.seed, metrics_path=str(out / "metrics.jsonl"),
            validation=[it.to_dict() for it in validation.items], training_mode=request.training_mode,
            checkpoint_every=opts.checkpoint_every if opts.checkpoint_every is not None else max(100, request.number_of_steps // 10),
            fail_at_step=opts.fail_at_step, max_shard_bytes=opts.max_shard_bytes,
            init_lora=shared.share_file(job.init_lora) if job.init_lora else None, stream=data.streams,
        )
        outcome = run_training(cfg, str(work / "train"), workers, use_gpu, storage_path=shared.ray_results,
                               name=f"ltxtrain-{recipe.endpoint.replace('/', '-')}", max_failures=opts.max_failures,
                               **data.train_options(pre, media, cfg.cache_dir, opts.stream, use_gpu))
    manifest = data.finish(pre, job.diag, shared)

    result = _export(job, outcome, manifest, pre, out, opts, family, targets)
    (out / "result.json").write_text(result.model_dump_json(indent=2))
    # A finished job drops its restart state (checkpoints, with the previews in them), so running it again starts
    # afresh; a crashed one keeps it and a re-run resumes. The latent cache stays: re-runs skip preprocessing.
    shared.drop_restart_state()
    shutil.rmtree(work / "train", ignore_errors=True)
    if not opts.keep_work:
        shutil.rmtree(work / "data", ignore_errors=True)
        shutil.rmtree(work / INIT_LORA_DIR, ignore_errors=True)
        (work / "dataset.zip").unlink(missing_ok=True)
    return result


def _cpu_workers_beside_encoders(workers: int, opts: JobOptions, cpus: int) -> int:
    """Streaming on CPUs: training workers and encoder actors hold a CPU each at the same time, and a stream whose
    encoders find no CPU never delivers. The default worker count shrinks to fit; an explicit one that cannot fit
    is refused by name."""
    data = opts.stream.data_cpus(opts.encoder_actors)
    free = int(cpus - data)
    if workers <= free:
        return workers
    if opts.num_workers is None and free >= 1:
        return free
    raise ValueError(f"streaming on CPUs: {workers} training worker(s) and the stream's {data:g} CPU(s) need more "
                     f"than the cluster's {cpus} (use fewer --workers or --encoder-actors, or --data-mode cache)")


def _preprocess(job: Intake, model_dir: str, worker_model_dir: str, shared: JobStorage, opts: JobOptions,
                use_gpu: bool, media):
    """Plan the windows and encode the captions (and the validation conditions) into the local latent cache,
    starting from the shared copy when there is one; then either encode every window (cache mode) or leave them to
    the stream (`opts.stream`). Encoder actors on other nodes load the model from
    `worker_model_dir`. Returns (PreprocessConfig, validation plan, PreparedData)."""
    from .encode.cache import LatentCache
    from .encode.pipeline import PreprocessConfig, audio_sample_rate, encode_captions, encode_clips, plan, \
        write_manifest
    from .sample.validation import plan_validation

    request, recipe = job.request, job.recipe
    width, height = request.size
    pre = PreprocessConfig(
        model_dir=model_dir, cache_dir=shared.local_cache, width=width, height=height,
        num_frames=request.number_of_frames, frame_rate=request.frame_rate, auto_scale=request.auto_scale_input,
        split_scenes=request.split_input_into_scenes, split_threshold=request.split_input_duration_threshold,
        conditions=job.conditions.items, gpus_per_actor=1.0 if use_gpu else 0.0, encoder_actors=opts.encoder_actors,
        audio=job.audio, audio_sample_rate=audio_sample_rate(model_dir) if job.audio else 16000,
        audio_normalize=getattr(request, "audio_normalize", True),
        audio_preserve_pitch=getattr(request, "audio_preserve_pitch", True),
        worker_model_dir=worker_model_dir,
    )
    shared.pull_cache()
    validation = plan_validation(recipe, request, job.audio, model_dir, pre.cache_dir, str(shared.work), opts.limits,
                                 use_gpu=use_gpu, worker_model_dir=worker_model_dir)
    keep = plan(job.samples, pre, job.diag, media)
    encode_captions(keep, pre, validation.texts)
    cache = LatentCache(pre.cache_dir)
    to_encode = sum(not cache.has_video(r["id"]) for r in keep)
    data = PreparedData(keep, opts.stream.streams(to_encode))
    if data.streams:  # no clip is encoded before the workers start: they train on the first as it comes
        cache.write_stream_plan(data.plan(pre))
        log.info("streaming %d of %d windows into training (%d skipped)", to_encode, len(keep), len(job.diag.skipped))
    else:
        encode_clips(keep, pre, media)
        data.manifest = write_manifest(keep, pre, job.diag)
        log.info("preprocessed %d samples (%d skipped)", len(keep), len(job.diag.skipped))
    return pre, validation, data


@dataclass
class PreparedData:
    """The kept windows and how they reach training: all in the cache before the workers start, or streamed into
    them (encode/stream.py)."""

    keep: list[dict]
    streams: bool
    manifest: object = None  # the complete cache's Manifest: at once in cache mode, after training when streaming

    def plan(self, pre) -> list[dict]:
        from .encode.pipeline import planned_sample

        return [planned_sample(r, pre) for r in self.keep]

    def train_options(self, pre, media, cache_dir: str, settings: StreamSettings, use_gpu: bool) -> dict:
        """run_training's streaming arguments: the stream, its ingest options and the GPU left to each worker."""
        if not self.streams:
            return {}
        from .encode.stream import STREAM_DATASET, ClipStream, data_config

        gpu_share, resources, gpu_per_worker = settings.placement(use_gpu)
        pre = dataclasses.replace(pre, gpus_per_actor=gpu_share, encoder_resources=resources,
                                  cpus_per_actor=settings.encoder_cpus)
        return {"datasets": {STREAM_DATASET: ClipStream(self.keep, pre, media, cache_dir)},
                "dataset_config": data_config(settings.object_store_bytes), "gpu_per_worker": gpu_per_worker}

    def finish(self, pre, diag: Diagnostics, shared: "JobStorage"):
        """The cache's manifest, written after a streaming run once the encoders have persisted every window (into
        storage on clusters: fetched here first, the manifest published last)."""
        from .encode.pipeline import write_manifest

        if self.manifest is None:
            shared.pull_cache()
            self.manifest = write_manifest(self.keep, pre, diag)
            shared.push_cache()
        return self.manifest


def _export(job: Intake, outcome, manifest, pre, out: Path, opts: JobOptions, model_family: str,
            targets: list[str]) -> TrainingResult:
    """Write the LoRA (or full weights), its config, the reel, the debug archive and the loss curve into `out`."""
    from safetensors.torch import load_file

    from .export.config_file import write_config
    from .export.lora_outputs import write_lora_outputs
    from .export.plots import loss_curve_png

    request, recipe = job.request, job.recipe
    slug = recipe.endpoint.replace("/", "_")
    lora_path = out / f"{slug}_lora.safetensors"
    config_path = out / f"{slug}_config.json"
    conditions = job.conditions
    metadata = recipe.lora_metadata(request, conditions)
    model_file, model_shards, lora = None, [], None
    if outcome.model_dir:  # full fine-tune: the whole transformer, diffusers layout
        model_file, model_shards = _place_model_files(Path(outcome.model_dir), out, slug)
    else:  # quality gate first (QualityGateError: nothing written), then the LoRA and its per-modality files
        lora = write_lora_outputs(lora_path, load_file(outcome.adapter_path), rank=request.rank,
                                  alpha=float(request.rank), metadata=metadata, audio_trained=job.audio,
                                  effect=outcome.metrics.get("lora_effect"))
    extra = {"conditions": conditions.to_json(), **conditions.config()}
    if lora:
        extra.update(quality=lora.quality, per_modality_files={m: p.name for m, p in lora.per_modality.items()})
    if request.init_lora_url:
        from .intake.fetch import redact_url

        extra["init_lora_url"] = redact_url(request.init_lora_url)
    write_config(config_path, endpoint=recipe.endpoint,
                 training_type=recipe.training_type if request.training_mode == "lora" else "full",
                 trigger_phrase=request.trigger_phrase, rank=request.rank, alpha=float(request.rank),
                 base_model=opts.model, model_family=model_family, lora_targets=targets,
                 request=request.model_dump(), extra=extra)
    video = None
    if outcome.reel_path:
        reel = out / f"{slug}_validation.mp4"
        shutil.move(outcome.reel_path, reel)
        video = OutputFile.from_path(reel)
    audio = _place_audio_reel(Path(outcome.audio_reel_dir), out, slug) if outcome.audio_reel_dir else {}
    debug = None
    if request.debug_dataset:
        from .encode.pipeline import debug_samples
        from .export.debug_archive import write_debug_archive

        archive = out / f"{slug}_debug_dataset.zip"
        write_debug_archive(str(archive), debug_samples(manifest, pre))
        debug = OutputFile.from_path(archive)
    curve = out / "loss_curve.png"
    loss_curve_png(str(out / "metrics.jsonl"), str(curve))
    return TrainingResult(
        lora_file=OutputFile.from_path(lora_path) if model_file is None else None,
        lora_video_file=OutputFile.from_path(lora.per_modality["video"]) if lora and lora.per_modality else None,
        lora_audio_file=OutputFile.from_path(lora.per_modality["audio"]) if lora and lora.per_modality else None,
        model_file=model_file,
        model_shards=model_shards,
        config_file=OutputFile.from_path(config_path),
        video=video,
        **audio,
        debug_dataset=debug,
        loss_curve=OutputFile.from_path(curve),
        metrics_file=OutputFile.from_path(out / "metrics.jsonl"),
        billing_units=billing_units(request.number_of_steps, True),
        endpoint=recipe.endpoint,
        number_of_steps=request.number_of_steps,
        samples=len(manifest.samples),
        with_audio=job.audio,
        skipped=[s.to_json() for s in job.diag.skipped],
        warnings=job.diag.warnings + [f"quality gate: {w}" for w in (lora.quality["warnings"] if lora else [])],
        quality=lora.quality if lora else {},
        metrics=outcome.metrics,
    )
