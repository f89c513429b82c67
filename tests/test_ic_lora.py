"""ic-lora/v2v: intake rules, reference scaling, token accounting, train/inference parity, end to end."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from ltxtrain.api.errors import Diagnostics, RequestError
from ltxtrain.conditioning.tokens import Reference, pack_video, video_tokens
from ltxtrain.conditioning.kinds import ConditionSet, ReferenceVideo
from ltxtrain.encode.pipeline import PreprocessConfig, media_of, plan_sample, preprocess
from ltxtrain.jobs import JobOptions, check, intake, run_job
from ltxtrain.media.reference import reference_frame_indices, scale_reference
from ltxtrain.products import get_recipe
from ltxtrain.sampledata import write_video

IC = get_recipe("ic-lora/v2v")
SMALL = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "frame_rate": 25,
         "validation_resolution": "low", "validation_aspect_ratio": "16:9", "validation_number_of_frames": 9,
         "rank": 8, "number_of_steps": 100, "learning_rate": 2e-3}


def make_pairs(tmp: Path, pairs: dict[str, tuple[float, float]], captions: bool = True, fps: float = 25,
               size=(160, 96), extra: dict[str, bytes] | None = None, cuts=()) -> str:
    """{base: (start_seconds, end_seconds)} -> a zip of base_start.mp4 / base_end.mp4 (+ base.txt)."""
    z = tmp / "pairs.zip"
    with zipfile.ZipFile(z, "w") as f:
        for i, (base, (s_sec, e_sec)) in enumerate(pairs.items()):
            for suffix, sec, seed in (("_start", s_sec, 100 + i), ("_end", e_sec, 200 + i)):
                if sec is None:
                    continue
                p = tmp / f"{base}{suffix}.mp4"
                write_video(str(p), sec, fps, *size, seed=seed, cuts=cuts)
                f.write(p, p.name)
            if captions:
                f.writestr(f"{base}.txt", "a red square turns blue")
        for name, data in (extra or {}).items():
            f.writestr(name, data)
    return str(z)


def errors(payload) -> list[dict]:
    with pytest.raises(RequestError) as info:
        check("ic-lora/v2v", payload)
    return info.value.to_json()["errors"]


# ---------------------------------------------------------------------------------------------- request rules
def test_defaults_follow_the_spec():
    r = IC.parse({"training_data_url": "x.zip"})
    assert (r.number_of_steps, r.first_frame_conditioning_p, r.frame_rate, r.validation_frame_rate) == (3000, 0.1, 24, 24)
    assert (r.reference_downscale_factor, r.reference_temporal_scale_factor, r.rank) == (1, 1, 32)


@pytest.mark.parametrize("fields,loc,needle", [
    ({"reference_downscale_factor": 3, "resolution": "low", "aspect_ratio": "16:9"}, "reference_downscale_factor", "resolution 512x288"),
    # 960x544 / 2 = 480x272: 272 is not a multiple of 32 -> the validation geometry fails even though training fits
    ({"reference_downscale_factor": 2, "resolution": "medium", "aspect_ratio": "1:1",
      "validation_resolution": "high", "validation_aspect_ratio": "16:9"}, "reference_downscale_factor", "validation_resolution 960x544"),
    ({"reference_temporal_scale_factor": 2}, "reference_temporal_scale_factor", "number_of_frames 89"),
    ({"reference_temporal_scale_factor": 2, "number_of_frames": 17}, "reference_temporal_scale_factor",
     "validation_number_of_frames 89"),
    ({"reference_downscale_factor": 9}, "reference_downscale_factor", "reference_downscale_factor"),
    ({"reference_temporal_scale_factor": 0}, "reference_temporal_scale_factor", "reference_temporal_scale_factor"),
    ({"validation": [{"prompt": "p"}]}, "validation", "reference_video_url"),
])
def test_scale_factor_and_validation_rules_are_named(fields, loc, needle):
    with pytest.raises(RequestError) as info:
        IC.parse({"training_data_url": "x.zip", **fields})
    errs = info.value.to_json()["errors"]
    assert errs[0]["loc"][:2] == ["body", loc] and needle in json.dumps(errs)


def test_compatible_factors_pass():
    r = IC.parse({"training_data_url": "x.zip", "reference_downscale_factor": 2, "reference_temporal_scale_factor": 2,
                  "number_of_frames": 17, "validation_number_of_frames": 33, "resolution": "medium",
                  "validation_resolution": "medium"})
    assert r.reference_downscale_factor == 2


# ---------------------------------------------------------------------------------------------- intake rules
def test_good_pairs_are_accepted(tmp_path):
    z = make_pairs(tmp_path, {"a": (0.5, 0.5), "b": (0.5, 0.5)})
    out = check("ic-lora/v2v", {"training_data_url": z, **SMALL})
    assert [s["name"] for s in out["samples"]] == ["a_end.mp4", "b_end.mp4"]
    assert out["samples"][0]["files"] == {"reference": "a_start.mp4", "target": "a_end.mp4"}


def test_unpaired_files_are_named(tmp_path):
    z = make_pairs(tmp_path, {"a": (0.5, 0.5), "lonely": (0.5, None), "orphan": (None, 0.5)})
    msgs = json.dumps(errors({"training_data_url": z, **SMALL}))
    assert "lonely_start.mp4" in msgs and "orphan_end.mp4" in msgs


def test_captions_required_unless_trigger_phrase(tmp_path):
    z = make_pairs(tmp_path, {"a": (0.5, 0.5)}, captions=False)
    errs = errors({"training_data_url": z, **SMALL})
    assert errs[0]["loc"] == ["body", "training_data_url", "a.txt"]
    out = check("ic-lora/v2v", {"training_data_url": z, **SMALL, "trigger_phrase": "ctrl"})
    assert out["samples"][0]["caption"] == "ctrl"


def test_mismatched_pair_rejects_the_request(tmp_path):
    z = make_pairs(tmp_path, {"good": (0.5, 0.5), "bad": (0.5, 0.8)})
    msgs = json.dumps(errors({"training_data_url": z, **SMALL}))
    assert "bad_start.mp4" in msgs and "bad_end.mp4" in msgs and "frame counts" in msgs


def test_short_pairs_skipped_by_name_and_auto_scale_fits_them(tmp_path):
    z = make_pairs(tmp_path, {"long": (0.8, 0.8), "short": (0.2, 0.2)})
    req = {"training_data_url": z, **SMALL, "number_of_frames": 17, "validation_number_of_frames": 17}
    out = check("ic-lora/v2v", req)
    assert [s["name"] for s in out["samples"]] == ["long_end.mp4"]
    assert out["skipped"][0]["name"].startswith("short_") and "too short" in out["skipped"][0]["reason"]
    assert len(check("ic-lora/v2v", {**req, "auto_scale_input": True})["samples"]) == 2


def test_no_qualifying_pair_is_422(tmp_path):
    z = make_pairs(tmp_path, {"short": (0.2, 0.2)})
    with pytest.raises(RequestError) as info:
        check("ic-lora/v2v", {"training_data_url": z, **SMALL, "number_of_frames": 17})
    assert info.value.skipped and info.value.skipped[0].name.startswith("short_")


def test_images_and_bare_names_are_rejected(tmp_path):
    z = make_pairs(tmp_path, {"a": (0.5, 0.5)}, extra={"b_start.png": b"x", "loose.mp4": b"y"})
    msgs = json.dumps(errors({"training_data_url": z, **SMALL}))
    assert "b_start.png" in msgs and "loose.mp4" in msgs


# ---------------------------------------------------------------------------------------------- reference geometry
def test_reference_frames_and_downscale():
    assert reference_frame_indices(17, 2) == [0, 1, 3, 5, 7, 9, 11, 13, 15]
    assert reference_frame_indices(9, 1) == list(range(9))
    frames = torch.randint(0, 255, (17, 64, 96, 3), dtype=torch.uint8).numpy()
    small = scale_reference(frames, spatial=2, temporal=2)
    assert small.shape == (9, 32, 48, 3)


def _rope(tiny_model):
    from ltxtrain.models.bundle import load_components

    return load_components(tiny_model, ["transformer"])["transformer"].rope


def test_half_size_reference_is_a_quarter_of_the_tokens_on_the_target_extent(tiny_model):
    rope = _rope(tiny_model)
    c, f, h, w = 8, 3, 4, 6
    target = torch.randn(1, c, f, h, w)
    ref = Reference(torch.randn(1, c, f, h // 2, w // 2), spatial=2)
    tok = video_tokens(rope, target, torch.tensor([0.5]), 25.0, noise=torch.randn(1, f * h * w, c), reference=ref)
    n_t = f * h * w
    assert tok.num_target == n_t and tok.hidden.shape[1] == n_t + n_t // 4
    assert torch.equal(tok.hidden[0, n_t:], pack_video(ref.latents)[0])  # clean
    assert torch.all(tok.timesteps[0, n_t:] == 0) and torch.all(tok.loss_mask[0, n_t:] == 0)
    tgt, rc = tok.coords[0, :, :n_t], tok.coords[0, :, n_t:]
    for axis in (1, 2):  # the reference spans exactly the target's pixel extent
        assert rc[axis, :, 0].min() == tgt[axis, :, 0].min() and rc[axis, :, 1].max() == tgt[axis, :, 1].max()
    assert torch.equal(rc[0], tgt[0].reshape(f, h, w, 2)[:, ::2, ::2].reshape(-1, 2))  # same times


def test_temporal_reference_coordinates_line_up_with_the_target(tiny_model):
    rope = _rope(tiny_model)
    fps, f_t = 25.0, 5  # 33 target pixel frames; S=2 keeps 17 reference frames = 3 latent frames
    target = torch.randn(1, 8, f_t, 1, 1)
    ref = Reference(torch.randn(1, 8, 3, 1, 1), temporal=2)
    tok = video_tokens(rope, target, torch.tensor([0.5]), fps, noise=torch.randn(1, f_t, 8), reference=ref)
    t = tok.coords[0, 0, :, :] * fps  # in target pixel frames
    tgt_end, ref_end = t[:f_t, 1], t[f_t:, 1]
    # reference latent frame k ends where target latent frame 2k ends (patch ends aligned)
    assert torch.allclose(ref_end, tgt_end[[0, 2, 4]], atol=1e-4)
    assert t[f_t:, 0].min() >= 0


# ---------------------------------------------------------------------------------------------- scene sync
def test_scene_cuts_split_both_clips_at_the_same_boundaries(ray_cluster, tiny_model, tmp_path):
    z = make_pairs(tmp_path, {"long": (12.0, 12.0)}, cuts=(4.0, 8.0), size=(128, 96))
    req = {"training_data_url": z, **SMALL, "split_input_duration_threshold": 10.0}
    job = intake("ic-lora/v2v", req, str(tmp_path / "work"))
    cfg = PreprocessConfig(model_dir=tiny_model, cache_dir=str(tmp_path / "cache"), width=256, height=128,
                           num_frames=9, frame_rate=25, split_threshold=10.0, conditions=(ReferenceVideo(spatial=2),))
    sample = job.samples[0]
    rows = plan_sample({"name": sample.name, "path": sample.media["target"],
                        "media": json.dumps({"reference": sample.media["reference"]}),
                        "kind": "video", "caption": sample.caption, "text_id": "t"}, cfg)
    assert len(rows) == 3 and all(media_of(r)["reference"] == sample.media["reference"] for r in rows)
    manifest = preprocess(job.samples, cfg, Diagnostics())
    assert len(manifest.samples) == 3 and manifest.reference_spatial == 2
    assert all(s.reference_shape == [8, 2, 2, 4] and s.latent_shape == [8, 2, 4, 8] for s in manifest.samples)


# ---------------------------------------------------------------------------------------------- parity (overfit)
def test_overfit_one_pair_then_sampling_from_its_reference_lands_near_its_target(ray_cluster, tiny_model, tmp_path):
    from ltxtrain.encode.encoders import encode_text
    from ltxtrain.models.bundle import load_components
    from ltxtrain.models.lora import VIDEO_TARGETS, attach_lora, load_lora_state_dict
    from ltxtrain.conditioning.tokens import TextContext
    from ltxtrain.sample.sampler import sample_video_latents
    from ltxtrain.train.config import TrainConfig
    from ltxtrain.train.loop import LORA_FILE, WorkerContext, run_worker
    from safetensors.torch import load_file

    z = make_pairs(tmp_path, {"one": (0.5, 0.5)})
    job = intake("ic-lora/v2v", {"training_data_url": z, **SMALL}, str(tmp_path / "work"))
    conditions = ConditionSet(items=(ReferenceVideo(spatial=2),))
    cfg = PreprocessConfig(model_dir=tiny_model, cache_dir=str(tmp_path / "cache"), width=256, height=128,
                           num_frames=9, frame_rate=25, conditions=conditions.items)
    manifest = preprocess(job.samples, cfg, Diagnostics())
    train_cfg = TrainConfig(model_dir=tiny_model, cache_dir=cfg.cache_dir, steps=300, learning_rate=5e-3, rank=16,
                            lora_targets=list(VIDEO_TARGETS), conditions=conditions.to_json(), seed=0)
    saved = {}

    def report(metrics, directory):
        saved["metrics"] = metrics
        saved["lora"] = load_file(str(Path(directory) / LORA_FILE))

    final = run_worker(train_cfg, WorkerContext(), report)
    assert final["probe_loss_end"] < 0.5 * final["probe_loss_start"], final

    from ltxtrain.encode.cache import LatentCache

    cache = LatentCache(cfg.cache_dir)
    s = manifest.samples[0]
    tensors = cache.load_video(s.id)
    target, reference = tensors["latents"][None], tensors["reference"][None]
    parts = load_components(tiny_model, ["tokenizer", "text_encoder", "connectors"])
    text = TextContext(*encode_text(parts["tokenizer"], parts["text_encoder"], parts["connectors"], [s.caption], 32))

    def distance(transformer) -> float:
        errs = []
        for seed in range(3):
            x = sample_video_latents(transformer, text, tuple(target.shape[2:]), 25.0, steps=12,
                                     conditions=conditions.items, cols={"reference": reference},
                                     generator=torch.Generator().manual_seed(seed))
            errs.append(torch.mean((x - target) ** 2).item())
        return sum(errs) / len(errs)

    base = load_components(tiny_model, ["transformer"])["transformer"].eval()
    before = distance(base)
    attach_lora(base, 16, list(VIDEO_TARGETS))
    load_lora_state_dict(base, saved["lora"])
    after = distance(base.eval())
    assert after < 0.5 * before, (before, after)


# ---------------------------------------------------------------------------------------------- end to end
def test_ic_lora_job_end_to_end_with_two_workers(ray_cluster, tmp_path):
    from ltxtrain.export.lora_file import read_lora_metadata

    z = make_pairs(tmp_path, {"a": (0.5, 0.5), "b": (0.5, 0.5)})
    ref_video = tmp_path / "a_start.mp4"  # written by make_pairs
    req = {"training_data_url": z, **SMALL, "reference_downscale_factor": 2, "trigger_phrase": "ctrl",
           "aspect_ratio": "1:1", "validation_aspect_ratio": "1:1",
           "validation": [{"prompt": "ctrl a square", "reference_video_url": str(ref_video)}]}
    out = tmp_path / "out"
    result = run_job("ic-lora/v2v", req, str(out), JobOptions(model="tiny", num_workers=2, use_gpu=False))
    data = json.loads((out / "result.json").read_text())
    assert data["billing_units"] == 100 and data["samples"] == 2 and result.metrics["world_size"] == 2
    lora = out / data["lora_file"]["file_name"]
    meta = read_lora_metadata(str(lora))
    assert meta["reference_downscale_factor"] == "2" and meta["reference_temporal_scale_factor"] == "1"
    cfg = json.loads((out / data["config_file"]["file_name"]).read_text())
    assert cfg["training_type"] == "ic-lora" and cfg["reference_downscale_factor"] == 2
    # the reel shows each preview beside its (half-size) reference: wider than the 512 px preview
    from ltxtrain.export.reel import read_reel

    reel = read_reel(str(out / data["video"]["file_name"]))
    assert reel["frames"].shape[0] == 4 * 9 and reel["frames"].shape[2] > 512
