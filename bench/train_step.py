"""Seconds per training step, peak memory, tokens, trainable parameters and (on GPU) MFU for one LTX-2 transformer.

The step is the library's own: `draw_step` (sigmas, noise) -> `flow_loss` (`video_tokens` / `audio_tokens` ->
`predict` -> masked MSE) -> backward -> grad-norm clip -> AdamW, with bf16 autocast on GPU. Only the batch is
synthetic (random latents and text embeddings of the right shapes), so no VAE, text encoder or cache is involved.

Models:
  tiny                the tiny preset (built once under $LTXTRAIN_HOME/models, loaded through load_components)
  full-2.3 / full-2.0 LTX2VideoTransformer3DModel.from_config(<the packaged real config>) built on the meta device,
                      cast to --dtype, then `to_empty(device)` + a cheap init (normal std 0.02, norms 1, biases 0):
                      no download and no CPU copy of the ~19B parameters. `--layers N` keeps only N blocks.
  PATH                a diffusers folder or a single-file checkpoint (resolve_model + load_components)

FLOPs (for MFU) are counted, not guessed from "6*N*T" (wrong for LoRA: frozen weights get no weight gradients).
One forward with autograd on (no backward) runs with hooks on every nn.Linear and every attention call, so each
layer is charged for the tokens it really sees (video, reference, audio or text tokens; the per-token AdaLN
timestep embeddings too):
  nn.Linear   forward 2*in*out*T; backward + 2*in*out*T if its input requires grad (input gradient)
                                           + 2*in*out*T if its weight is trainable (weight gradient)
              -> frozen layers behind a LoRA cost 4*N*T, trainable ones 6*N*T, layers before the first trainable
                 one (proj_in, timestep embeddings) 2*N*T; a full fine-tune comes out at ~6*N*T
  attention   forward 4*B*Sq*Skv*inner (QK^T and PV); backward 2x that where q/k/v require grad
Recomputation under --grad-ckpt is not counted (model FLOPs, not hardware FLOPs); elementwise work is ignored.
MFU = step FLOPs / median step time / --peak-tflops (default 989 = H100 SXM dense bf16; H200 is the same).

Examples (CPU):
  PYTHONPATH=platform python bench/train_step.py --model tiny
  PYTHONPATH=platform python bench/train_step.py --model full-2.3 --layers 1 --width 256 --height 256 --frames 9 \\
      --text-tokens 128 --steps 3 --warmup 1
No GPU needed, the FLOPs of the full-size step and the MFU a target step time means:
  PYTHONPATH=platform python bench/train_step.py --model full-2.3 --flops-only [--ic-lora]
GPU (one H100), the issue-8 figures:
  python bench/train_step.py --model full-2.3 --grad-ckpt                 # t2v LoRA r32 768x448x89
  python bench/train_step.py --model full-2.3 --grad-ckpt --ic-lora       # + same-size reference
  python bench/train_step.py --model full-2.3 --grad-ckpt --compare-ray   # + the same steps through Ray Train
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time

PLATFORM = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "platform"))
sys.path.insert(0, PLATFORM)  # run from a checkout without `pip install -e`

import torch  # noqa: E402

CONFIGS = os.path.join(PLATFORM, "ltxtrain", "models", "configs")
REAL_MODELS = {"full-2.3": "ltx-2.3", "full-2.0": "ltx-2.0"}


# ---------------------------------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny",
                    help="tiny | full-2.3 | full-2.0 | PATH (diffusers folder or .safetensors)")
    ap.add_argument("--layers", type=int, default=None, help="override num_layers (full-* only)")
    ap.add_argument("--mode", choices=("lora", "full"), default="lora")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--targets", choices=("video", "av"), default="video",
                    help="LoRA targets: video only, or video + audio + cross-modal")
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--height", type=int, default=448)
    ap.add_argument("--frames", type=int, default=89)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--ic-lora", action="store_true", help="append a reference video (IC-LoRA)")
    ap.add_argument("--ref-downscale", type=int, default=1, help="reference downscale factor (2 = half size)")
    ap.add_argument("--audio", action="store_true", help="train on audio tokens too (25 per second of video)")
    ap.add_argument("--text-tokens", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing on every transformer block")
    ap.add_argument("--ckpt-every", type=int, default=0,
                    help="checkpoint every k-th block instead (train/optim.py apply_checkpointing; 1 = all)")
    ap.add_argument("--compile", action="store_true", help="torch.compile each transformer block (after the FLOP count)")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager: no codegen)")
    ap.add_argument("--optimizer", choices=("adamw", "adamw_fused", "adamw8bit"), default="adamw")
    ap.add_argument("--lora-dtype", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: adapters stored in bf16, AdamW on fp32 masters (train/optim.py MasterAdamW)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                    help="transformer weights; auto = fp32 for tiny (like the library), bf16 otherwise")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator peak dense bf16 TFLOP/s (MFU)")
    ap.add_argument("--compare-ray", action="store_true",
                    help="also run the same steps through Ray Train (TorchTrainer, 1 worker) and print the overhead")
    ap.add_argument("--flops-only", action="store_true",
                    help="no training: count the step's FLOPs (full-*: on the meta device, no memory, no GPU) and "
                         "print the MFU that --target-step-s would mean")
    ap.add_argument("--target-step-s", type=float, default=1.5, help="with --flops-only (issue 8: 1.5 s on one H100)")
    ap.add_argument("--json", action="store_true", help="print only one JSON object")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.layers is not None and args.model not in REAL_MODELS:
        ap.error("--layers only applies to --model full-2.3 / full-2.0")
    d = 32 * args.ref_downscale if args.ic_lora else 32
    if args.width % d or args.height % d:
        ap.error(f"--width/--height must be multiples of {d} (32 px latent cells x reference downscale)")
    if (args.frames - 1) % 8:
        ap.error("--frames must be 8k+1 (causal video VAE: 1 + 8 frames per latent frame)")
    return args


# ---------------------------------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------------------------------
def resolve_dtype(opts: dict) -> torch.dtype:
    if opts["dtype"] == "auto":
        return torch.float32 if opts["model"].startswith("tiny") else torch.bfloat16
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[opts["dtype"]]


@torch.no_grad()
def cheap_init(model: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Cheap stand-in for real weights: normal(0, std) matrices and tables, unit norm weights, zero biases."""
    devices = {p.device for p in model.parameters()}
    gens = {d: torch.Generator(device=d).manual_seed(seed) for d in devices}
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm)) and name == "weight":
                p.fill_(1.0)
            elif name == "bias":
                p.zero_()
            else:
                p.normal_(0.0, std, generator=gens[p.device])


def build_real_transformer(family: str, layers: int | None, dtype: torch.dtype, device: torch.device, seed: int):
    from diffusers import LTX2VideoTransformer3DModel

    with open(os.path.join(CONFIGS, family, "transformer", "config.json")) as fh:
        cfg = {k: v for k, v in json.load(fh).items() if not k.startswith("_")}
    if layers is not None:
        cfg["num_layers"] = layers
    with torch.device("meta"):
        model = LTX2VideoTransformer3DModel.from_config(cfg)
    model = model.to(dtype)  # still meta: free; to_empty then allocates directly in `dtype` on `device`
    if device.type != "meta":  # meta: shapes only (--flops-only)
        model.to_empty(device=device)
        cheap_init(model, seed)
    return model


def load_transformer(opts: dict, device: torch.device):
    dtype = resolve_dtype(opts)
    if opts["model"] in REAL_MODELS:
        return build_real_transformer(REAL_MODELS[opts["model"]], opts["layers"], dtype, device, opts["seed"])
    from ltxtrain.jobs import default_home
    from ltxtrain.models.bundle import load_components, resolve_model

    model_dir = resolve_model(opts["model"], str(default_home() / "models"))
    # straight to the device in the final dtype (run_worker loads on the CPU, then moves it)
    return load_components(model_dir, ["transformer"], dtype=dtype, device=device)["transformer"]


def prepare_training(transformer, opts: dict, device: torch.device) -> list[torch.nn.Parameter]:
    from ltxtrain.models.lora import AUDIO_TARGETS, CROSS_MODAL_TARGETS, VIDEO_TARGETS, attach_lora

    from ltxtrain.train.optim import apply_checkpointing, cast_trainable

    if opts["mode"] == "lora":
        targets = list(VIDEO_TARGETS)
        if opts["targets"] == "av":
            targets += AUDIO_TARGETS + CROSS_MODAL_TARGETS
        attach_lora(transformer, opts["rank"], targets)
        # LoRA weights in fp32 (or bf16 with fp32 masters in the optimizer), the frozen base in bf16
        cast_trainable(transformer, torch.bfloat16 if opts.get("lora_dtype") == "bf16" else torch.float32)
    else:
        transformer.requires_grad_(True)
    if opts.get("ckpt_every"):
        apply_checkpointing(transformer, opts["ckpt_every"])
    elif opts["grad_ckpt"]:
        transformer.enable_gradient_checkpointing()
    transformer.to(device).train()
    return [p for p in transformer.parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------------
def geometry(opts: dict, cfg) -> dict:
    f, h, w = (opts["frames"] - 1) // 8 + 1, opts["height"] // 32, opts["width"] // 32
    d = opts["ref_downscale"]
    ref = f * (h // d) * (w // d) if opts["ic_lora"] else 0
    per_s = cfg.audio_sampling_rate / cfg.audio_hop_length / cfg.audio_scale_factor  # 25 audio latents / s
    audio = int(round(opts["frames"] / opts["fps"] * per_s)) if opts["audio"] else 0
    return {"latent_grid": [f, h, w], "video_tokens": f * h * w, "reference_tokens": ref, "audio_tokens": audio,
            "text_tokens": opts["text_tokens"], "sequence_video": f * h * w + ref}


def make_batch(opts: dict, cfg, geo: dict):
    from ltxtrain.train.data import Batch

    g = torch.Generator().manual_seed(opts["seed"])
    b, c = opts["batch_size"], cfg.in_channels
    f, h, w = geo["latent_grid"]
    t = opts["text_tokens"]
    d = opts["ref_downscale"]
    # connector outputs: LTX-2.3 projects per modality in the connector; LTX-2.0 feeds caption_channels to the
    # transformer's own caption projections
    dv, da = ((cfg.caption_channels, cfg.caption_channels) if cfg.get("use_prompt_embeddings", True)
              else (cfg.cross_attention_dim, cfg.audio_cross_attention_dim))
    cols = {"latents": torch.randn(b, c, f, h, w, generator=g)}
    text = (torch.randn(b, t, dv, generator=g), torch.randn(b, t, da, generator=g))
    if opts["ic_lora"]:
        cols["reference"] = torch.randn(b, c, f, h // d, w // d, generator=g)
    if opts["audio"]:
        cols["audio"] = torch.randn(b, geo["audio_tokens"], cfg.audio_in_channels, generator=g)
    return Batch(cols, text[0], text[1], text_mask=torch.ones(b, t), fps=float(opts["fps"]), names=["bench"] * b)


def bench_conditions(opts: dict):
    """The recipe's conditions as the workers receive them: an IC-LoRA reference, joint audio."""
    from ltxtrain.conditioning.kinds import ABSENT, GENERATED, ConditionSet, ReferenceVideo

    items = (ReferenceVideo(spatial=opts["ref_downscale"], temporal=1),) if opts["ic_lora"] else ()
    return ConditionSet(audio=GENERATED if opts["audio"] else ABSENT, items=items)


# ---------------------------------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------------------------------
def count_flops(transformer, batch, device, autocast: bool, conditions) -> dict:
    """FLOPs of one training step, counted by hooks during one forward with autograd on (no backward).

    Linear: forward 2*in*out per token; backward adds 2*in*out per token for the input gradient if the input
    requires grad, and as much again for the weight gradient if the weight is trainable. Attention (QK^T and PV):
    forward 4*Sq*Skv*inner; its backward twice that if q/k/v require grad. So frozen layers cost "4*N*T" (2 forward
    + 2 input-gradient), trainable ones "6*N*T", and layers before the first trainable one only "2*N*T".
    """
    from diffusers.models.transformers.transformer_ltx2 import LTX2Attention

    from ltxtrain.train.loop import draw_step, flow_loss

    acc = {"fwd": 0, "bwd": 0, "fwd_linear_frozen": 0, "fwd_linear_train": 0, "fwd_attn": 0}
    handles = []

    def linear_hook(mod, inp, _out):
        x = inp[0]
        mm = 2 * (x.numel() // mod.in_features) * mod.in_features * mod.out_features
        acc["fwd"] += mm
        acc["fwd_linear_train" if mod.weight.requires_grad else "fwd_linear_frozen"] += mm
        acc["bwd"] += mm * (int(x.requires_grad) + int(mod.weight.requires_grad))

    def attn_hook(mod, args, kwargs, _out):
        q = kwargs.get("hidden_states", args[0] if args else None)
        kv = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        kv = q if kv is None else kv
        f = 4 * q.shape[0] * q.shape[1] * kv.shape[1] * mod.inner_dim
        acc["fwd"] += f
        acc["fwd_attn"] += f
        needs_grad = any(p.requires_grad for p in mod.parameters()) or q.requires_grad or kv.requires_grad
        acc["bwd"] += 2 * f if needs_grad else 0

    for m in transformer.modules():
        if isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, LTX2Attention):
            handles.append(m.register_forward_hook(attn_hook, with_kwargs=True))
    try:
        draw = draw_step(batch, torch.Generator().manual_seed(1), conditions)
        amp = device.type if device.type in ("cuda", "cpu") else "cpu"  # meta: shapes only, autocast off
        with torch.enable_grad(), torch.autocast(amp, dtype=torch.bfloat16, enabled=autocast):
            out = flow_loss(transformer, batch, draw, device, conditions)  # graph dropped unused: no backward
        del out
    finally:
        for h in handles:
            h.remove()
    acc["step"] = acc["fwd"] + acc["bwd"]
    return acc


# ---------------------------------------------------------------------------------------------------------------------
# the benchmark (shared by the plain loop and the Ray Train worker)
# ---------------------------------------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "ru_maxrss (process RSS high-water mark)"


def tensor_bytes(obj) -> int:
    """Bytes of every distinct tensor in a (nested) optimizer state."""
    seen, total, stack = set(), 0, [obj]
    while stack:
        x = stack.pop()
        if torch.is_tensor(x):
            if x.data_ptr() not in seen:
                seen.add(x.data_ptr())
                total += x.numel() * x.element_size()
        elif isinstance(x, dict):
            stack += list(x.values())
        elif isinstance(x, (list, tuple)):
            stack += list(x)
    return total


def saved_activation_bytes(step) -> int:
    """Run one step while counting the distinct tensors autograd keeps for the backward (checkpointed blocks keep
    only their inputs: their own saved tensors go through the checkpoint's hooks, not these)."""
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key not in seen and t.device.type != "meta":
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total


def run_bench(opts: dict, device: torch.device | None = None, flops: bool = True, wrap=None) -> dict:
    """Build the model, run warm-up + timed steps; `wrap` (e.g. shard_transformer) is applied after LoRA."""
    from ltxtrain.train.loop import draw_step, flow_loss

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(opts["seed"])
    t0 = time.perf_counter()
    transformer = load_transformer(opts, device)
    params = prepare_training(transformer, opts, device)
    if wrap is not None:
        transformer = wrap(transformer)
    _sync(device)
    build_s = time.perf_counter() - t0
    cfg = transformer.config
    weights_gib = (torch.cuda.memory_allocated(device) / 2**30) if device.type == "cuda" else None
    autocast = device.type == "cuda" or resolve_dtype(opts) == torch.bfloat16
    from ltxtrain.train.optim import make_optimizer

    optimizer = make_optimizer(params, opts.get("optimizer", "adamw"), opts["lr"], 0.01,
                               master_weights=opts.get("lora_dtype") == "bf16" and opts["mode"] == "lora")
    geo = geometry(opts, cfg)
    batch = make_batch(opts, cfg, geo)
    gen = torch.Generator().manual_seed(opts["seed"] + 1)

    fl = count_flops(transformer, batch, device, autocast, bench_conditions(opts)) if flops else None
    if opts.get("compile"):  # after the count: its hooks would break the graphs
        for block in transformer.transformer_blocks:
            block.compile(backend=opts.get("compile_backend", "inductor"))

    conditions = bench_conditions(opts)

    def step() -> float:
        draw = draw_step(batch, gen, conditions)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            parts = flow_loss(transformer, batch, draw, device, conditions)
            loss = sum(v.mean() for v in parts.values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    times, losses = [], []
    saved = saved_activation_bytes(step) if opts["warmup"] > 0 else None  # counts as the first warm-up step
    run_start = time.perf_counter()
    for i in range(int(saved is not None), opts["warmup"] + opts["steps"]):
        _sync(device)
        t = time.perf_counter()
        losses.append(step())
        _sync(device)
        if i >= opts["warmup"]:
            times.append(time.perf_counter() - t)
    run_s = time.perf_counter() - run_start
    peak, peak_kind = peak_memory_gib(device)
    n_params = sum(p.numel() for p in transformer.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    res = {
        "device": name,
        "model": opts["model"], "layers": cfg.num_layers, "dtype": str(resolve_dtype(opts)).removeprefix("torch."),
        "mode": opts["mode"], "rank": opts["rank"] if opts["mode"] == "lora" else None, "targets": opts["targets"],
        "geometry": f"{opts['width']}x{opts['height']}x{opts['frames']}@{opts['fps']:g}", **geo,
        "batch_size": opts["batch_size"], "grad_ckpt": opts["grad_ckpt"], "autocast_bf16": autocast,
        "params": n_params, "trainable_params": sum(p.numel() for p in params),
        "build_s": build_s, "run_s": run_s, "steps": opts["steps"], "warmup": opts["warmup"],
        "step_s_min": min(times), "step_s_median": statistics.median(times), "step_s_mean": statistics.fmean(times),
        "step_times": times, "loss_first": losses[0], "loss_last": losses[-1],
        "peak_mem_gib": peak, "peak_mem_kind": peak_kind, "weights_gib": weights_gib,
        "compile": bool(opts.get("compile")), "ckpt_every": opts.get("ckpt_every", 0),
        "optimizer": opts.get("optimizer", "adamw"), "lora_dtype": opts.get("lora_dtype", "fp32"),
        "saved_activations_gib": None if saved is None else saved / 2**30,
        "optimizer_state_mib": tensor_bytes(optimizer.state) / 2**20,
        "trainable_mib": sum(p.numel() * p.element_size() for p in params) / 2**20,
        "loadavg_1m": os.getloadavg()[0],
    }
    if fl is not None:
        res.update(flops=fl, step_tflop=fl["step"] / 1e12, achieved_tflops=fl["step"] / res["step_s_median"] / 1e12)
        if device.type == "cuda":
            res["mfu"] = res["achieved_tflops"] / opts["peak_tflops"]
            res["peak_tflops"] = opts["peak_tflops"]
    del transformer, optimizer, params, batch
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def flops_only(opts: dict) -> dict:
    """Tokens, parameters and step FLOPs without running a step: full-* models stay on the meta device."""
    device = torch.device("meta") if opts["model"] in REAL_MODELS else torch.device("cpu")
    transformer = load_transformer(opts, device)
    params = prepare_training(transformer, opts, device)
    cfg = transformer.config
    geo = geometry(opts, cfg)
    autocast = device.type == "cpu" and resolve_dtype(opts) == torch.bfloat16
    fl = count_flops(transformer, make_batch(opts, cfg, geo), device, autocast, bench_conditions(opts))
    # recomputed forward under gradient checkpointing: every block's forward runs twice
    return {"model": opts["model"], "layers": cfg.num_layers, "mode": opts["mode"], "grad_ckpt": opts["grad_ckpt"],
            "geometry": f"{opts['width']}x{opts['height']}x{opts['frames']}@{opts['fps']:g}", **geo,
            "params": sum(p.numel() for p in transformer.parameters()),
            "trainable_params": sum(p.numel() for p in params), "flops": fl, "step_tflop": fl["step"] / 1e12,
            "target_step_s": opts["target_step_s"], "peak_tflops": opts["peak_tflops"],
            "mfu_at_target": fl["step"] / opts["target_step_s"] / (opts["peak_tflops"] * 1e12),
            "hfu_at_target_with_ckpt": (fl["step"] + fl["fwd"]) / opts["target_step_s"] / (opts["peak_tflops"] * 1e12)}


# ---------------------------------------------------------------------------------------------------------------------
# Ray Train comparison
# ---------------------------------------------------------------------------------------------------------------------
def ray_train_worker(config: dict) -> None:
    """Ray Train entry: the same model, batch and steps as the plain loop, in a TorchTrainer worker."""
    import ray.train

    from ltxtrain.train.parallel import shard_transformer

    logging.getLogger("diffusers").setLevel(logging.ERROR)
    t = time.perf_counter()
    torch.set_num_threads(config["threads"])
    ctx = ray.train.get_context()
    device = torch.device("cuda", ctx.get_local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    bf16 = device.type == "cuda" or resolve_dtype(config) == torch.bfloat16
    res = run_bench(config, device, flops=False, wrap=lambda m: shard_transformer(m, bf16=bf16))
    res["worker_s"] = time.perf_counter() - t
    # Ray Train v2 keeps only metrics that come with a checkpoint: ship the figures as a one-file checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "bench.json"), "w") as fh:
            json.dump(res, fh)
        ray.train.report({"step_s_median": res["step_s_median"]}, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def run_ray(opts: dict) -> dict:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    # workers inherit the raylet's environment: let them import ltxtrain from this checkout
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLATFORM, os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    use_gpu = torch.cuda.is_available()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        # CPU: the worker gets every core and the driver's thread count, so the two loops compute alike
        config = {**opts, "threads": torch.get_num_threads()}
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as storage:
            trainer = TorchTrainer(
                ray_train_worker, train_loop_config=config,
                scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu,
                                             resources_per_worker=None if use_gpu else {"CPU": os.cpu_count()}),
                torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
                run_config=RunConfig(name="bench-train-step", storage_path=storage),
            )
            t = time.perf_counter()
            result = trainer.fit()
            fit_s = time.perf_counter() - t
            if result.error:
                raise result.error
            with result.checkpoint.as_directory() as ckpt, open(os.path.join(ckpt, "bench.json")) as fh:
                res = json.load(fh)
        res["fit_s"] = fit_s
        return res
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------------------------------
def _si(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} "


def report(res: dict, ray_res: dict | None) -> None:
    print(f"device          {res['device']}")
    print(f"model           {res['model']}  ({res['layers']} layers, {res['params'] / 1e9:.3f} B params, "
          f"{res['dtype']} weights, bf16 autocast {'on' if res['autocast_bf16'] else 'off'})")
    lora = f"LoRA rank {res['rank']} on {res['targets']} targets" if res["mode"] == "lora" else "full fine-tune"
    print(f"training        {lora}; trainable {res['trainable_params'] / 1e6:.2f} M params; "
          f"grad-ckpt {'on' if res['grad_ckpt'] else 'off'}; batch {res['batch_size']}")
    f, h, w = res["latent_grid"]
    print(f"geometry        {res['geometry']} -> latent {f}x{h}x{w}; tokens: video {res['video_tokens']}, "
          f"reference {res['reference_tokens']}, audio {res['audio_tokens']}, text {res['text_tokens']} "
          f"(video sequence {res['sequence_video']})")
    print(f"step time       min {res['step_s_min']:.4f} s, median {res['step_s_median']:.4f} s, "
          f"mean {res['step_s_mean']:.4f} s over {res['steps']} steps after {res['warmup']} warm-up "
          f"(model build {res['build_s']:.1f} s)")
    extra = f" (weights + LoRA after build: {res['weights_gib']:.2f} GiB)" if res["weights_gib"] is not None else ""
    print(f"peak memory     {res['peak_mem_gib']:.2f} GiB [{res['peak_mem_kind']}]{extra}")
    acts = "n/a" if res["saved_activations_gib"] is None else f"{res['saved_activations_gib']:.3f} GiB"
    ckpt = f"every {res['ckpt_every']} blocks" if res["ckpt_every"] else ("all blocks" if res["grad_ckpt"] else "off")
    print(f"memory levers   saved activations {acts} (checkpointing {ckpt}); optimizer {res['optimizer']} state "
          f"{res['optimizer_state_mib']:.2f} MiB; trainable weights {res['trainable_mib']:.2f} MiB "
          f"({res['lora_dtype']}); torch.compile blocks {'on' if res['compile'] else 'off'}")
    if "step_tflop" in res:
        fl = res["flops"]
        line = (f"FLOPs/step      {_si(fl['step'])}FLOP = fwd {_si(fl['fwd'])}(frozen linear "
                f"{_si(fl['fwd_linear_frozen'])}, trainable linear {_si(fl['fwd_linear_train'])}, attention "
                f"{_si(fl['fwd_attn'])}) + bwd {_si(fl['bwd'])}; "
                f"{_si(fl['step'] / res['step_s_median'])}FLOP/s")
        if "mfu" in res:
            line += f"; MFU {100 * res['mfu']:.1f}% of {res['peak_tflops']:g}"
        print(line)
    print(f"loss            first {res['loss_first']:.4f}, last {res['loss_last']:.4f}  "
          f"(1-min load average at the end {res['loadavg_1m']:.2f} on {os.cpu_count()} cores)")
    if res["device"].startswith("cpu") and res["loadavg_1m"] > os.cpu_count() + 1:  # our own threads count too
        print("note            the machine was busy with other processes: CPU timings are contended "
              "(see min vs median)")
    if ray_res:
        for stat in ("median", "min"):
            plain, via_ray = res[f"step_s_{stat}"], ray_res[f"step_s_{stat}"]
            print(f"ray train {stat:<6}{via_ray:.4f} s/step vs plain loop {plain:.4f}: "
                  f"{1e3 * (via_ray - plain):+.1f} ms/step ({100 * (via_ray / plain - 1):+.1f}%)")
        fixed = ray_res["fit_s"] - ray_res["worker_s"]
        print(f"ray fixed cost  trainer.fit {ray_res['fit_s']:.1f} s = worker {ray_res['worker_s']:.1f} s "
              f"(build {ray_res['build_s']:.1f} s + steps {ray_res['run_s']:.1f} s) + {fixed:.1f} s Ray "
              f"start-up/teardown; "
              f"plain loop: build {res['build_s']:.1f} s + steps {res['run_s']:.1f} s; "
              f"worker peak memory {ray_res['peak_mem_gib']:.2f} GiB")


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
    opts = vars(args)
    if args.flops_only:
        r = flops_only(opts)
        if not args.json:
            fl = r["flops"]
            print(f"{r['model']} ({r['layers']} layers, {r['params'] / 1e9:.3f} B params, trainable "
                  f"{r['trainable_params'] / 1e6:.2f} M) at {r['geometry']}: video sequence {r['sequence_video']} "
                  f"(reference {r['reference_tokens']}), audio {r['audio_tokens']}, text {r['text_tokens']} tokens")
            print(f"FLOPs/step {_si(fl['step'])}FLOP = fwd {_si(fl['fwd'])}(frozen linear "
                  f"{_si(fl['fwd_linear_frozen'])}, trainable linear {_si(fl['fwd_linear_train'])}, attention "
                  f"{_si(fl['fwd_attn'])}) + bwd {_si(fl['bwd'])}")
            print(f"at {r['target_step_s']:g} s/step: MFU {100 * r['mfu_at_target']:.1f}% of {r['peak_tflops']:g} "
                  f"TFLOP/s ({100 * r['hfu_at_target_with_ckpt']:.1f}% counting the forward recomputed under "
                  f"--grad-ckpt)")
        print(("" if args.json else "RESULT ") + json.dumps(r))
        return
    try:
        res = run_bench(opts)
    except torch.OutOfMemoryError as exc:
        print(json.dumps({"error": "out of memory", "detail": str(exc).splitlines()[0], **opts}))
        sys.exit(3)
    ray_res = run_ray(opts) if args.compare_ray else None
    if args.json:
        print(json.dumps({**res, "ray": ray_res}))
        return
    report(res, ray_res)
    summary = {k: v for k, v in res.items() if k != "step_times"}
    if ray_res:
        summary["ray"] = {k: ray_res[k] for k in ("step_s_min", "step_s_median", "fit_s", "worker_s", "build_s",
                                                  "run_s", "peak_mem_gib")}
    print("RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
