"""One job = intake → preprocess (Ray Data) → train (Ray Train) → export. Used by the CLI, jobs/train.py and Serve."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .api.errors import Diagnostics, RequestError
from .api.result import OutputFile, TrainingResult, billing_units
from .intake.archive import extract_archive, require_nonempty
from .intake.dataset import SampleSpec, build_samples, resolve_audio
from .intake.fetch import fetch
from .intake.limits import IntakeLimits
from .products import get_recipe
from .products.base import AudioReference, Recipe

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
    audio: bool = False  # joint audio training resolved from the request and the clips


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
    return Intake(recipe, request, samples, diag, data_dir, audio)


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


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    runtime_env = None
    if os.environ.get("LTXTRAIN_SHIP_PACKAGE") == "1":
        # Under `ray job submit` the library sits in the shipped working dir, not on the workers' path:
        # ship the package itself so Ray Data tasks and Train workers on every node can import it.
        runtime_env = {"py_modules": [str(Path(__file__).resolve().parent)]}
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=True, runtime_env=runtime_env)


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


def _run(endpoint: str, payload: dict, out: Path, opts: JobOptions) -> TrainingResult:
    import ray

    from .encode.pipeline import PreprocessConfig, audio_sample_rate, preprocess
    from .export.config_file import write_config
    from .export.lora_file import save_lora
    from .models.bundle import load_model_info, resolve_model
    from .train.config import TrainConfig
    from .train.run import run_training

    work = out / "work"
    job = intake(endpoint, payload, str(work), opts.limits)  # cheap, fails fast with 422 before Ray starts
    request, recipe = job.request, job.recipe
    _init_ray(opts.address)
    resources = ray.cluster_resources()
    use_gpu = resources.get("GPU", 0) > 0 if opts.use_gpu is None else opts.use_gpu
    workers = opts.num_workers or (int(resources.get("GPU", 1)) if use_gpu else max(1, min(2, int(resources.get("CPU", 1)))))

    model_dir = resolve_model(opts.model, str(opts.home / "models"), text_encoder=opts.text_encoder)
    info = load_model_info(model_dir)
    width, height = request.size
    spatial, temporal = recipe.reference_factors(request) or (1, 1)
    pre = PreprocessConfig(
        model_dir=model_dir, cache_dir=str(work / "cache"), width=width, height=height,
        num_frames=request.number_of_frames, frame_rate=request.frame_rate, auto_scale=request.auto_scale_input,
        split_scenes=request.split_input_into_scenes, split_threshold=request.split_input_duration_threshold,
        reference_spatial=spatial, reference_temporal=temporal, gpus_per_actor=1.0 if use_gpu else 0.0,
        audio=job.audio, audio_sample_rate=audio_sample_rate(model_dir) if job.audio else 16000,
        audio_normalize=getattr(request, "audio_normalize", True),
        audio_preserve_pitch=getattr(request, "audio_preserve_pitch", True),
        reference_audio=recipe.has(AudioReference),
    )
    from .sample.validation import plan_validation

    validation = plan_validation(recipe, request, job.audio, model_dir, pre.cache_dir, str(work), opts.limits,
                                 use_gpu=use_gpu)
    manifest = preprocess(job.samples, pre, job.diag, extra_texts=validation.texts)
    log.info("preprocessed %d samples (%d skipped)", len(manifest.samples), len(job.diag.skipped))

    targets = recipe.lora_targets(request, job.audio)
    cfg = TrainConfig(
        model_dir=model_dir, cache_dir=pre.cache_dir, steps=request.number_of_steps,
        learning_rate=request.learning_rate, rank=request.rank, lora_targets=targets,
        first_frame_p=recipe.first_frame_p(request), seed=opts.seed, metrics_path=str(out / "metrics.jsonl"),
        validation=[it.to_dict() for it in validation.items], training_mode=request.training_mode,
        checkpoint_every=opts.checkpoint_every if opts.checkpoint_every is not None else max(100, request.number_of_steps // 10),
        preview_dir=str(work / "previews"), fail_at_step=opts.fail_at_step,
    )
    (out / "metrics.jsonl").unlink(missing_ok=True)
    outcome = run_training(cfg, str(work / "train"), workers, use_gpu, storage_path=str(work / "ray_results"),
                           name=f"ltxtrain-{recipe.endpoint.replace('/', '-')}", max_failures=opts.max_failures)

    from safetensors.torch import load_file

    slug = recipe.endpoint.replace("/", "_")
    lora_path = out / f"{slug}_lora.safetensors"
    config_path = out / f"{slug}_config.json"
    metadata = {"ltxtrain_endpoint": recipe.endpoint, "ltxtrain_rank": str(request.rank),
                "training_type": recipe.training_type}
    if recipe.reference_factors(request):
        # Always written (even for 1) so inference mirrors the training-time reference scaling; the names are the
        # ones LTX-2's IC-LoRA pipeline reads, plus the explicit spatial name.
        metadata.update(reference_downscale_factor=str(spatial), reference_spatial_scale_factor=str(spatial),
                        reference_temporal_scale_factor=str(temporal))
    model_file = None
    if outcome.model_path:  # full fine-tune: the whole transformer, diffusers key names
        model_path = out / f"{slug}_transformer.safetensors"
        shutil.move(outcome.model_path, model_path)
        model_file = OutputFile.from_path(model_path)
    else:
        save_lora(str(lora_path), load_file(outcome.adapter_path), rank=request.rank, alpha=float(request.rank),
                  metadata=metadata)
    write_config(config_path, endpoint=recipe.endpoint,
                 training_type=recipe.training_type if request.training_mode == "lora" else "full",
                 trigger_phrase=request.trigger_phrase, rank=request.rank, alpha=float(request.rank),
                 base_model=opts.model, model_family=info.family, lora_targets=targets,
                 request=request.model_dump(),
                 extra={"reference_downscale_factor": spatial, "reference_temporal_scale_factor": temporal}
                 if recipe.reference_factors(request) else None)
    video = None
    if outcome.reel_path:
        reel = out / f"{slug}_validation.mp4"
        shutil.move(outcome.reel_path, reel)
        video = OutputFile.from_path(reel)
    debug = None
    if request.debug_dataset:
        from .encode.pipeline import debug_samples
        from .export.debug_archive import write_debug_archive

        archive = out / f"{slug}_debug_dataset.zip"
        write_debug_archive(str(archive), debug_samples(manifest, pre))
        debug = OutputFile.from_path(archive)
    from .export.plots import loss_curve_png

    curve = out / "loss_curve.png"
    loss_curve_png(str(out / "metrics.jsonl"), str(curve))
    result = TrainingResult(
        lora_file=OutputFile.from_path(lora_path) if model_file is None else None,
        model_file=model_file,
        config_file=OutputFile.from_path(config_path),
        video=video,
        debug_dataset=debug,
        loss_curve=OutputFile.from_path(curve),
        metrics_file=OutputFile.from_path(out / "metrics.jsonl"),
        billing_units=billing_units(request.number_of_steps, True),
        endpoint=recipe.endpoint,
        number_of_steps=request.number_of_steps,
        samples=len(manifest.samples),
        with_audio=job.audio,
        skipped=[s.to_json() for s in job.diag.skipped],
        warnings=job.diag.warnings,
        metrics=outcome.metrics,
    )
    (out / "result.json").write_text(result.model_dump_json(indent=2))
    # A finished job drops its restart state (checkpoints, stored previews), so running it again starts afresh;
    # a crashed one keeps them and a re-run resumes. The latent cache stays: re-runs skip preprocessing.
    shutil.rmtree(work / "ray_results", ignore_errors=True)
    shutil.rmtree(work / "previews", ignore_errors=True)
    shutil.rmtree(work / "train", ignore_errors=True)
    if not opts.keep_work:
        shutil.rmtree(work / "data", ignore_errors=True)
        (work / "dataset.zip").unlink(missing_ok=True)
    return result
