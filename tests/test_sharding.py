"""Loading, checkpointing and exporting a sharded transformer, without Ray: two gloo ranks spawned in-process.

What is checked: ranks other than 0 never read the weights file yet end up with exactly the single-process
model; every rank writes only its own checkpoint shards, and the merged folder restores a run that then follows
the uninterrupted trajectory; full weights stream out in several files that diffusers loads.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ltxtrain.encode.cache import CachedSample, LatentCache, Manifest
from ltxtrain.models.lora import VIDEO_TARGETS
from ltxtrain.train.config import TrainConfig


def synthetic_cache(root: Path, model_dir: str, n: int = 2) -> str:
    """Random latents and text embeddings with the tiny model's shapes (no Ray Data, no VAE)."""
    cache = LatentCache(root)
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(n):
        cache.write_video(f"s{i}", torch.randn(8, 2, 4, 6, generator=g))
        cache.write_text(f"t{i}", torch.randn(32, 32, generator=g), torch.randn(32, 16, generator=g), torch.ones(32))
        samples.append(CachedSample(id=f"s{i}", name=f"clip_{i}.mp4", caption="c", text_id=f"t{i}",
                                    latent_shape=[8, 2, 4, 6], num_frames=9, fps=25.0))
    cache.write_manifest(Manifest(model_dir=model_dir, width=192, height=128, num_frames=9, frame_rate=25.0,
                                  samples=samples))
    return str(root)


def config(model_dir: str, cache_dir: str, **kw) -> TrainConfig:
    base = dict(model_dir=model_dir, cache_dir=cache_dir, steps=16, learning_rate=2e-3, rank=4,
                lora_targets=list(VIDEO_TARGETS), log_every=4, progress=False, checkpoint_every=8,
                probe_sigmas=[0.5])
    return TrainConfig(**{**base, **kw})


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args, world: int = 2) -> None:
    mp.spawn(fn, args=(world, _port(), *args), nprocs=world, join=True)


def _init(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)


def _load_worker(rank, world, port, cfg_dict, out):
    import ltxtrain.models.bundle as bundle
    from ltxtrain.train.loop import WorkerContext, load_transformer
    from ltxtrain.train.parallel import iter_full_state

    _init(rank, world, port)
    reads = []
    real = bundle.load_components
    bundle.load_components = lambda *a, **k: (reads.append(a[1]), real(*a, **k))[1]
    model = load_transformer(TrainConfig.from_dict(cfg_dict), WorkerContext(rank, world, rank), torch.device("cpu"),
                             torch.float32, bf16=False, grad_ckpt=False)
    full = dict(iter_full_state(model))  # collective
    torch.save({"reads": reads, "full": full if rank == 0 else None,
                "local_numel": sum(p.to_local().numel() for p in model.parameters())}, f"{out}.{rank}")


def test_ranks_other_than_0_build_on_meta_and_receive_exactly_the_single_process_weights(tiny_model, tmp_path):
    from ltxtrain.train.loop import WorkerContext, load_transformer

    cfg = config(tiny_model, "")
    _spawn(_load_worker, cfg.to_dict(), str(tmp_path / "r"))
    r0, r1 = (torch.load(tmp_path / f"r.{i}") for i in (0, 1))
    assert r0["reads"] == [["transformer"]] and r1["reads"] == []  # only rank 0 touched the weights file
    single = load_transformer(cfg, WorkerContext(), torch.device("cpu"), torch.float32, bf16=False,
                              grad_ckpt=False).state_dict()
    assert r0["full"].keys() == single.keys()
    assert all(torch.equal(r0["full"][k], v) for k, v in single.items())  # base weights and seeded LoRA init
    total = sum(v.numel() for v in single.values())
    assert r0["local_numel"] + r1["local_numel"] == total and r1["local_numel"] < 0.6 * total  # really sharded


def _train_worker(rank, world, port, cfg_dict, out, resume_from):
    from ltxtrain.train.loop import WorkerContext, run_worker

    _init(rank, world, port)
    ckpt_root = Path(out) / "checkpoints"

    def report(metrics, directory):
        if directory is None:
            return
        if metrics.get("checkpoint"):  # what Ray Train does: every rank's files into one folder per report
            shutil.copytree(directory, ckpt_root / f"step{metrics['step']:04d}", dirs_exist_ok=True)
        else:
            shutil.copytree(directory, Path(out) / "final", dirs_exist_ok=True)

    rows = []
    run_worker(TrainConfig.from_dict(cfg_dict), WorkerContext(rank, world, rank), report, resume_from=resume_from,
               log=rows.append)
    if rank == 0:
        (Path(out) / "rows.json").write_text(json.dumps(rows))


def test_sharded_checkpoint_holds_each_ranks_shards_and_resumes_onto_the_same_trajectory(tiny_model, tmp_path):
    from safetensors.torch import load_file

    cache = synthetic_cache(tmp_path / "cache", tiny_model)
    cfg = config(tiny_model, cache).to_dict()
    _spawn(_train_worker, cfg, str(tmp_path / "clean"), None)
    ckpt = tmp_path / "clean" / "checkpoints" / "step0008"
    names = sorted(os.listdir(ckpt))
    assert names == [".metadata", "__0_0.distcp", "__1_0.distcp", "previews", "trainer_state.json"], names
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 8

    _spawn(_train_worker, cfg, str(tmp_path / "resumed"), str(ckpt))
    clean = {r["step"]: r["loss"] for r in json.loads((tmp_path / "clean" / "rows.json").read_text())}
    resumed = {r["step"]: r["loss"] for r in json.loads((tmp_path / "resumed" / "rows.json").read_text())}
    assert sorted(resumed) == [12, 16]  # it carried on from step 8
    for step in resumed:  # same data, noise, weights and AdamW moments as the uninterrupted run
        assert resumed[step] == pytest.approx(clean[step], rel=1e-5, abs=1e-7)
    a = load_file(str(tmp_path / "clean" / "final" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(k.endswith("lora_B.weight") and a[k].abs().sum() > 0 for k in a)  # the adapter did train
    meta = json.loads((tmp_path / "resumed" / "final" / "final_metrics.json").read_text())
    assert meta["resumed_from_step"] == 8 and meta["step"] == 16


def test_a_checkpoint_from_another_lora_config_is_refused(tiny_model, tmp_path):
    from ltxtrain.train.loop import WorkerContext, run_worker

    cache = synthetic_cache(tmp_path / "cache", tiny_model)
    saved = {}

    def report(metrics, directory):
        if metrics.get("checkpoint") and "dir" not in saved:
            saved["dir"] = str(tmp_path / "ckpt")
            shutil.copytree(directory, saved["dir"])

    run_worker(config(tiny_model, cache, steps=10, checkpoint_every=5), WorkerContext(), report)
    with pytest.raises(ValueError, match="LoRA rank"):  # rank 8 adapters cannot take rank 4 shards silently
        run_worker(config(tiny_model, cache, steps=10, rank=8), WorkerContext(), lambda m, d: None,
                   resume_from=saved["dir"])


def _timestep_worker(rank, world, port, cfg_dict, out):
    from ltxtrain.conditioning.tokens import TextContext, predict, video_tokens
    from ltxtrain.train.loop import WorkerContext, load_transformer

    _init(rank, world, port)
    model = load_transformer(TrainConfig.from_dict(cfg_dict), WorkerContext(rank, world, rank), torch.device("cpu"),
                             torch.float32, bf16=True, grad_ckpt=False)
    seen = {}
    model.time_embed.register_forward_pre_hook(lambda m, args: seen.setdefault("timestep", args[0].detach()))
    g = torch.Generator().manual_seed(0)
    tokens = video_tokens(model.rope, torch.randn(1, 8, 2, 4, 6, generator=g), torch.tensor([0.7373]), 25.0,
                          noise=torch.randn(1, 48, 8, generator=g))
    text = TextContext(torch.randn(1, 32, 32, generator=g), torch.randn(1, 32, 16, generator=g), torch.ones(1, 32))
    with torch.no_grad():  # no autocast, as the probe loss and previews run: fp32 masters, bf16 compute
        out_video = predict(model, tokens, text)
    torch.save({"timestep": seen["timestep"], "finite": bool(torch.isfinite(out_video).all())}, f"{out}.{rank}")


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_sharded_bf16_transformer_receives_fp32_timesteps(tiny_model, tmp_path, mode):
    """FSDP2 casts a module's floating inputs to its param dtype by default; the root must not, or the timesteps
    reach the sharded transformer rounded to bf16 (737.3 -> 736) unlike in one process and in Lightricks' runtime."""
    cfg = config(tiny_model, str(tmp_path), training_mode=mode)
    _spawn(_timestep_worker, cfg.to_dict(), str(tmp_path / "t"))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"t.{rank}")
        assert got["finite"]
        assert got["timestep"].dtype == torch.float32
        assert torch.allclose(got["timestep"], torch.full_like(got["timestep"], 737.3), rtol=0, atol=1e-3)
