"""Continuing from a LoRA (`init_lora_url`): reading LTX/ComfyUI and diffusers files, the intake-time 422s, and
training that starts exactly where the file left off (single process and FSDP2 rank 0 → broadcast)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltxtrain.api.errors import RequestError
from ltxtrain.export.lora_file import LoraFileError, read_lora_file, save_lora, save_lora_diffusers, to_ltx_keys
from ltxtrain.train.loop import measure_lora_effect as lora_effect
from ltxtrain.intake.limits import IntakeLimits
from ltxtrain.jobs import intake, run_job
from ltxtrain.models.bundle import empty_component, load_components
from ltxtrain.models.lora import (AUDIO_TARGETS, CROSS_MODAL_TARGETS, VIDEO_TARGETS, attach_lora, check_lora_fits,
                                  check_lora_targets, load_init_lora, lora_parameters, lora_state_dict)
from ltxtrain.sampledata import make_dataset_zip
from ltxtrain.train.config import TrainConfig
from test_sharding import _init, _spawn, config, synthetic_cache

torch.set_num_threads(2)
RANK = 4


def lora_model(model_dir, targets=VIDEO_TARGETS, rank=RANK, alpha=None, seed=0, scale=0.1):
    tr = load_components(model_dir, ["transformer"])["transformer"]
    attach_lora(tr, rank, targets, alpha=alpha)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(tr):
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return tr


def out_of(tr):
    """A deterministic forward pass (video + audio streams)."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        v, a = tr(hidden_states=torch.randn(1, 12, 8, generator=g),
                  audio_hidden_states=torch.randn(1, 5, 8, generator=g),
                  encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
                  audio_encoder_hidden_states=torch.randn(1, 8, 16, generator=g), timestep=torch.tensor([400.0]),
                  audio_timestep=torch.tensor([400.0]), sigma=torch.tensor([400.0]), audio_sigma=torch.tensor([400.0]),
                  num_frames=1, height=3, width=4, audio_num_frames=5, use_cross_timestep=True, return_dict=False)
    return torch.cat([v.flatten(), a.flatten()])


def normalised(path: str, dest: Path) -> str:
    sd, _ = read_lora_file(path)
    save_file(sd, str(dest))
    return str(dest)


def test_ltx_and_diffusers_files_load_into_adapters_with_the_same_effect(tiny_model, tmp_path):
    alpha = 2.0 * RANK  # scale 2: baked into lora_B, an .alpha key, or diffusers metadata
    tr = lora_model(tiny_model, VIDEO_TARGETS + AUDIO_TARGETS + CROSS_MODAL_TARGETS, alpha=alpha)
    want = out_of(tr)
    peft_sd = lora_state_dict(tr)
    files = {"ltx": str(tmp_path / "ltx.safetensors"), "ltx_alpha": str(tmp_path / "ltx_alpha.safetensors"),
             "diffusers": str(tmp_path / "d" / "pytorch_lora_weights.safetensors")}
    save_lora(files["ltx"], peft_sd, RANK, alpha, dtype=torch.float32)
    raw = to_ltx_keys(peft_sd, RANK, RANK)  # B as trained, scale given by "<module>.alpha" keys instead
    raw.update({k.replace(".lora_A.weight", ".alpha"): torch.tensor(alpha) for k in raw if ".lora_A." in k})
    save_file(raw, files["ltx_alpha"])
    save_lora_diffusers(str(tmp_path / "d"), peft_sd, RANK, alpha, VIDEO_TARGETS)
    for name, path in files.items():
        sd, rank = read_lora_file(path)
        assert rank == RANK and set(sd) == set(peft_sd), name
        for k, v in peft_sd.items():
            assert torch.allclose(sd[k], v * (2.0 if ".lora_B." in k else 1.0)), (name, k)
        fresh = load_components(tiny_model, ["transformer"])["transformer"]
        attach_lora(fresh, RANK, VIDEO_TARGETS + AUDIO_TARGETS + CROSS_MODAL_TARGETS)  # ours: alpha == rank
        assert load_init_lora(fresh, normalised(path, tmp_path / f"{name}.norm.safetensors")) == len(peft_sd)
        assert torch.allclose(out_of(fresh), want, atol=1e-5), name


def test_bad_files_are_refused_with_the_reason(tmp_path, tiny_model):
    good = to_ltx_keys(lora_state_dict(lora_model(tiny_model)), RANK, RANK)
    cases = {
        "not safetensors": (b"PK\x03\x04 not a lora", "not a readable .safetensors"),
        "kohya keys": ({"lora_unet_blocks_0.lora_down.weight": torch.zeros(4, 32)}, "unknown key layout"),
        "lone A": ({k: v for k, v in good.items() if "attn1.to_q.lora_B" not in k}, "attn1.to_q has lora_A but not"),
        "odd tensor": ({**good, "diffusion_model.transformer_blocks.0.attn1.to_q.dora_scale": torch.ones(1)},
                       "unsupported tensor"),
        "foreign key": ({**good, "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight.x": torch.ones(1)},
                        "unsupported tensor|unknown key"),
        "nan": ({**good, "diffusion_model.transformer_blocks.1.ff.net.2.lora_B.weight":
                 torch.full_like(good["diffusion_model.transformer_blocks.1.ff.net.2.lora_B.weight"], float("nan"))},
                r"transformer_blocks\.1\.ff\.net\.2\.lora_B\.weight holds NaN"),
        "mixed ranks": ({**good, "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 32),
                         "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 2)},
                        r"mixes ranks \[2, 4\]"),
    }
    for name, (content, msg) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            save_file(content, str(path))
        with pytest.raises(LoraFileError, match=msg):
            read_lora_file(str(path))


def test_rank_targets_and_shapes_are_checked(tiny_model):
    sd = lora_state_dict(lora_model(tiny_model))
    check_lora_targets(sd, RANK, VIDEO_TARGETS)
    with pytest.raises(ValueError, match="the LoRA has rank 4 but the request's rank is 8"):
        check_lora_targets(sd, 8, VIDEO_TARGETS)
    with pytest.raises(ValueError, match=r"modules this job does not train: transformer_blocks\.0\.ff\.net\.0\.proj"):
        check_lora_targets(sd, RANK, [t for t in VIDEO_TARGETS if not t.startswith("ff.")])
    joint = lora_state_dict(lora_model(tiny_model, VIDEO_TARGETS + AUDIO_TARGETS))
    with pytest.raises(ValueError, match=r"transformer_blocks\.0\.audio_attn1\.to_k"):
        check_lora_targets(joint, RANK, VIDEO_TARGETS)  # an audio LoRA for a video-only job
    meta = empty_component(tiny_model, "transformer")
    check_lora_fits(meta, sd)
    wrong = dict(sd, **{"transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(RANK, 64)})
    with pytest.raises(ValueError, match=r"attn1\.to_q: the LoRA is 64 -> 32 features, the model's layer 32 -> 32"):
        check_lora_fits(meta, wrong)
    deeper = {k.replace("blocks.1.", "blocks.7."): v for k, v in sd.items()}
    with pytest.raises(ValueError, match=r"the model has no layer transformer_blocks\.7\."):
        check_lora_fits(meta, deeper)


def _final_adapter(cfg: TrainConfig, dest: Path) -> dict:
    from ltxtrain.train.loop import WorkerContext, run_worker

    def report(metrics, directory):
        if directory and not metrics.get("checkpoint"):
            shutil.copytree(directory, dest, dirs_exist_ok=True)

    return run_worker(cfg, WorkerContext(), report)


def test_a_second_run_starts_where_the_exported_lora_left_off(tiny_model, dataset, tmp_path):
    import dataclasses

    from ltxtrain.export.lora_outputs import write_lora_outputs
    from ltxtrain.train.loop import WorkerContext, load_transformer

    cache = synthetic_cache(tmp_path / "cache", tiny_model)
    first = _final_adapter(config(tiny_model, cache, steps=12, checkpoint_every=0, rank=8), tmp_path / "first")
    assert first["lora_effect"]["video"] > 1e-3 and first["lora_effect"]["sigma"] == 0.5  # measured on the worker
    adapter = load_file(str(tmp_path / "first" / "adapter.safetensors"))

    # float32 file: at step 0 the adapters hold exactly the file's weights ...
    path = str(tmp_path / "lora_fp32.safetensors")
    save_lora(path, adapter, 8, 8, dtype=torch.float32)
    cfg = config(tiny_model, cache, steps=4, checkpoint_every=0, rank=8,
                 init_lora=normalised(path, tmp_path / "init_fp32.safetensors"))
    model = load_transformer(cfg, WorkerContext(), torch.device("cpu"), torch.float32, bf16=False, grad_ckpt=False)
    file_sd, got = load_file(cfg.init_lora), lora_state_dict(model)
    assert got.keys() == file_sd.keys() and all(torch.equal(got[k], file_sd[k]) for k in got)
    assert got.keys() == adapter.keys() and all(torch.equal(got[k], adapter[k]) for k in got)  # = the first run's
    # ... so the second run's starting probe loss is the first run's final one
    second = _final_adapter(cfg, tmp_path / "second")
    assert second["probe_loss_start"] == pytest.approx(first["probe_loss_end"], rel=1e-6)
    assert second["probe_loss_start"] < 0.99 * first["probe_loss_start"]  # not where a fresh adapter starts

    # the shipped file (the job's export, bf16) given as init_lora_url goes through intake like any request
    shipped = write_lora_outputs(tmp_path / "t2v_lora.safetensors", adapter, 8, 8.0, {}, audio_trained=False)
    job = intake("t2v", {"training_data_url": dataset, **SMALL, "init_lora_url": str(shipped.lora)},
                 str(tmp_path / "work"))
    third = _final_adapter(dataclasses.replace(cfg, init_lora=job.init_lora, steps=1), tmp_path / "third")
    assert third["probe_loss_start"] == pytest.approx(first["probe_loss_end"], rel=2e-2)


def _sharded_load(rank, world, port, cfg_dict, out):
    import ltxtrain.storage as storage
    from ltxtrain.train.loop import WorkerContext, load_transformer
    from ltxtrain.train.parallel import iter_full_state

    _init(rank, world, port)
    reads = []
    real = storage.node_local_copy
    storage.node_local_copy = lambda p, *a, **k: (reads.append(p), real(p, *a, **k))[1]
    model = load_transformer(TrainConfig.from_dict(cfg_dict), WorkerContext(rank, world, rank), torch.device("cpu"),
                             torch.float32, bf16=False, grad_ckpt=False)
    full = {k: v for k, v in iter_full_state(model) if ".lora_" in k}  # collective
    effect = lora_effect(model, effect_batch(), torch.device("cpu"), seed=1)  # collective too (sharded forwards)
    torch.save({"reads": reads, "full": full if rank == 0 else None, "effect": effect}, f"{out}.{rank}")


def effect_batch():
    from ltxtrain.train.data import Batch

    g = torch.Generator().manual_seed(2)
    return Batch({"latents": torch.randn(1, 8, 2, 4, 6, generator=g)}, torch.randn(1, 32, 32, generator=g),
                 torch.randn(1, 32, 16, generator=g), text_mask=torch.ones(1, 32), fps=25.0, names=["x"])


def test_sharded_ranks_receive_the_initial_lora_from_rank_0(tiny_model, tmp_path):
    tr = lora_model(tiny_model, seed=3)
    path = str(tmp_path / "init.safetensors")
    save_file({k: v.contiguous() for k, v in lora_state_dict(tr).items()}, path)
    cfg = config(tiny_model, "", init_lora=path)
    _spawn(_sharded_load, cfg.to_dict(), str(tmp_path / "r"))
    r0, r1 = (torch.load(tmp_path / f"r.{i}") for i in (0, 1))
    assert r0["reads"] == [path] and r1["reads"] == []  # only rank 0 opened the file
    want = load_file(path)
    got = {k.replace(".default.", "."): v for k, v in r0["full"].items()}
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    # the measured effect of the sharded model is every rank's, and the single-process model's
    from ltxtrain.train.loop import WorkerContext, load_transformer

    single = load_transformer(cfg, WorkerContext(), torch.device("cpu"), torch.float32, bf16=False, grad_ckpt=False)
    want_effect = lora_effect(single, effect_batch(), torch.device("cpu"), seed=1)
    assert want_effect["video"] > 1e-3
    for r in (r0, r1):
        assert r["effect"]["video"] == pytest.approx(want_effect["video"], rel=1e-4)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    return make_dataset_zip(str(d / "clips.zip"), kind="video", n=1, seconds=0.5, fps=25, width=96, height=64)


SMALL = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "rank": 8, "number_of_steps": 100}


def _error(exc: RequestError) -> tuple[list, str]:
    (item,) = exc.errors
    return list(item.loc), item.msg


def test_a_bad_init_lora_is_a_422_at_intake_naming_the_field(tiny_model, dataset, tmp_path):
    rank4 = str(tmp_path / "rank4.safetensors")
    save_lora(rank4, lora_state_dict(lora_model(tiny_model)), RANK, RANK)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    joint = str(tmp_path / "joint.safetensors")
    save_lora(joint, lora_state_dict(lora_model(tiny_model, VIDEO_TARGETS + AUDIO_TARGETS, rank=8)), 8, 8)
    cases = [({"init_lora_url": rank4}, "the LoRA has rank 4 but the request's rank is 8"),
             ({"init_lora_url": str(garbage)}, "not a readable .safetensors file"),
             ({"init_lora_url": str(tmp_path / "missing.safetensors")}, "missing.safetensors"),
             ({"init_lora_url": joint}, "modules this job does not train: transformer_blocks.0.audio_attn1"),
             ({"init_lora_url": rank4, "training_mode": "full"}, "needs training_mode 'lora'")]
    for extra, msg in cases:
        with pytest.raises(RequestError) as e:
            intake("t2v", {"training_data_url": dataset, **SMALL, **extra}, str(tmp_path / "work"))
        loc, got = _error(e.value)
        assert loc == ["body", "init_lora_url"] and msg in got, (extra, got)
    # --strict-urls applies to it as to the data: no loopback hosts (local paths are allowed here for the archive)
    strict = IntakeLimits(allow_private_addresses=False, allow_local_paths=True)
    with pytest.raises(RequestError) as e:
        intake("t2v", {"training_data_url": dataset, **SMALL, "init_lora_url": "http://127.0.0.1:9/l.safetensors"},
               str(tmp_path / "work"), strict)
    loc, got = _error(e.value)
    assert loc == ["body", "init_lora_url"] and "non-public address" in got
    # a good one is normalised into the work dir
    rank8 = str(tmp_path / "rank8.safetensors")
    save_lora(rank8, lora_state_dict(lora_model(tiny_model, rank=8)), 8, 8)
    job = intake("t2v", {"training_data_url": dataset, **SMALL, "init_lora_url": rank8}, str(tmp_path / "work"))
    assert Path(job.init_lora).parent == tmp_path / "work" / "init_lora" and len(load_file(job.init_lora)) == 40


def test_run_job_answers_422_before_any_work_and_leaves_nothing(tiny_model, dataset, tmp_path):
    rank4 = str(tmp_path / "rank4.safetensors")
    save_lora(rank4, lora_state_dict(lora_model(tiny_model)), RANK, RANK)
    out = tmp_path / "job"
    with pytest.raises(RequestError):
        run_job("t2v", {"training_data_url": dataset, **SMALL, "init_lora_url": rank4}, str(out))
    data = json.loads((out / "result.json").read_text())
    assert data["status"] == 422 and data["billing_units"] == 0
    assert data["errors"][0]["loc"] == ["body", "init_lora_url"]
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]
