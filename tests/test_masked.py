"""ic-lora/v2v-masked and av2av-masked: triplet intake, mask geometry, kept region untouched, end to end."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltxtrain.api.errors import Diagnostics, RequestError
from ltxtrain.encode.cache import LatentCache
from ltxtrain.encode.pipeline import PreprocessConfig, preprocess
from ltxtrain.jobs import JobOptions, check, intake, run_job
from ltxtrain.media.fit import crop_box
from ltxtrain.products import get_recipe
from ltxtrain.sampledata import write_frames, write_video

SMALL = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "frame_rate": 25,
         "validation_resolution": "low", "validation_aspect_ratio": "16:9", "validation_number_of_frames": 9,
         "rank": 8, "number_of_steps": 100, "learning_rate": 2e-3}
CLIP_W, CLIP_H = 320, 240  # 4:3 source into a 2:1 bucket below, so the crop matters
RECT = (96, 96, 224, 176)  # x0, y0, x1, y1 in source pixels: WHITE = regenerate


def image_mask(path: Path, size=(CLIP_W, CLIP_H), rect=RECT) -> None:
    m = np.zeros((size[1], size[0], 3), np.uint8)
    sx, sy = size[0] / CLIP_W, size[1] / CLIP_H
    m[int(rect[1] * sy):int(rect[3] * sy), int(rect[0] * sx):int(rect[2] * sx)] = 255
    Image.fromarray(m).save(path)


def video_mask(path: Path, n_frames: int, fps: float = 25) -> None:
    """The rectangle moves right by 32 px per frame; a short mask holds its last frame."""
    frames = []
    for i in range(n_frames):
        m = np.zeros((CLIP_H, CLIP_W, 3), np.uint8)
        x0 = 32 + 32 * i
        m[96:176, x0:x0 + 64] = 255
        frames.append(m)
    write_frames(path, frames, fps)


def make_triplets(tmp: Path, names: dict[str, dict], captions: bool = True) -> str:
    """{base: {"mask": "image"|"video:N"|None, "start": sec|None, "end": sec, "audio": kind|None}} -> zip."""
    z = tmp / "triplets.zip"
    with zipfile.ZipFile(z, "w") as f:
        for i, (base, spec) in enumerate(names.items()):
            for role in ("start", "end"):
                sec = spec.get(role, 0.5)
                if sec is None:
                    continue
                p = tmp / f"{base}_{role}.mp4"
                audio = spec.get("audio") if role == "end" else spec.get("ref_audio", spec.get("audio"))
                write_video(str(p), sec, 25, CLIP_W, CLIP_H, seed=10 * i + (role == "end"), audio=audio)
                f.write(p, p.name)
            kind = spec.get("mask", "image")
            if kind == "image":
                p = tmp / f"{base}_mask.png"
                image_mask(p)
                f.write(p, p.name)
            elif kind and kind.startswith("video"):
                p = tmp / f"{base}_mask.mp4"
                video_mask(p, int(kind.split(":")[1]))
                f.write(p, p.name)
            elif kind == "black":
                p = tmp / f"{base}_mask.png"
                Image.fromarray(np.zeros((CLIP_H, CLIP_W, 3), np.uint8)).save(p)
                f.write(p, p.name)
            if captions:
                f.writestr(f"{base}.txt", "replace the square")
    return str(z)


# ---------------------------------------------------------------------------------------------- request + intake rules
@pytest.mark.parametrize("endpoint", ["ic-lora/v2v-masked", "av2av-masked"])
def test_defaults_and_validation_entries(endpoint):
    recipe = get_recipe(endpoint)
    r = recipe.parse({"training_data_url": "x.zip"})
    assert r.split_input_into_scenes is False and r.frame_rate == 24
    assert r.number_of_steps == (3000 if endpoint == "ic-lora/v2v-masked" else 2000)
    for missing in ("video_url", "mask_url", "reference_video_url"):
        entry = {"prompt": "p", "video_url": "a.mp4", "mask_url": "m.png", "reference_video_url": "r.mp4"}
        del entry[missing]
        with pytest.raises(RequestError) as info:
            recipe.parse({"training_data_url": "x.zip", "validation": [entry]})
        assert missing in json.dumps(info.value.to_json())
    with pytest.raises(RequestError) as info:
        recipe.parse({"training_data_url": "x.zip", "split_input_into_scenes": True})
    assert info.value.to_json()["errors"][0]["loc"] == ["body", "split_input_into_scenes"]
    with pytest.raises(RequestError):  # not a field of the masked products
        recipe.parse({"training_data_url": "x.zip", "first_frame_conditioning_p": 0.5})


def test_triplets_with_image_and_video_masks_are_accepted(tmp_path):
    z = make_triplets(tmp_path, {"a": {"mask": "image"}, "b": {"mask": "video:3"}})
    out = check("ic-lora/v2v-masked", {"training_data_url": z, **SMALL})
    assert [s["files"] for s in out["samples"]] == [
        {"reference": "a_start.mp4", "target": "a_end.mp4", "mask": "a_mask.png"},
        {"reference": "b_start.mp4", "target": "b_end.mp4", "mask": "b_mask.mp4"}]


@pytest.mark.parametrize("missing,named", [({"mask": None}, "t_end.mp4"), ({"start": None}, "t_end.mp4")])
def test_missing_piece_is_named(tmp_path, missing, named):
    z = make_triplets(tmp_path, {"t": missing})
    with pytest.raises(RequestError) as info:
        check("ic-lora/v2v-masked", {"training_data_url": z, **SMALL})
    text = json.dumps(info.value.to_json())
    assert named in text and ("_mask" in text or "_start" in text)


def test_av2av_requires_audible_audio_on_both_clips(tmp_path):
    ok = make_triplets(tmp_path, {"a": {"audio": "stereo48k"}})
    assert check("av2av-masked", {"training_data_url": ok, **SMALL})["with_audio"] is True
    for spec, bad in (({"audio": "stereo48k", "ref_audio": None}, "s_start.mp4"),
                      ({"audio": "silent", "ref_audio": "stereo48k"}, "s_end.mp4")):
        d = tmp_path / bad.replace(".", "_")
        d.mkdir()
        z = make_triplets(d, {"s": spec})
        with pytest.raises(RequestError) as info:
            check("av2av-masked", {"training_data_url": z, **SMALL})
        errs = info.value.to_json()["errors"]
        assert errs[0]["loc"] == ["body", "training_data_url", bad], errs


# ---------------------------------------------------------------------------------------------- mask geometry
def expected_cells(rect, width=256, height=128) -> np.ndarray:
    """Independent of the mask code: map the source rectangle through the fill+crop and onto the 32 px grid."""
    sw, sh, x0, y0 = crop_box(CLIP_W, CLIP_H, width, height)
    sx, sy = sw / CLIP_W, sh / CLIP_H
    rx0, rx1 = rect[0] * sx - x0, rect[2] * sx - x0
    ry0, ry1 = rect[1] * sy - y0, rect[3] * sy - y0
    cells = np.zeros((height // 32, width // 32), bool)
    for cy in range(height // 32):
        for cx in range(width // 32):
            cells[cy, cx] = rx0 < (cx + 1) * 32 and rx1 > cx * 32 and ry0 < (cy + 1) * 32 and ry1 > cy * 32
    return cells


def test_cached_masks_mark_exactly_the_covered_tokens(ray_cluster, tiny_model, tmp_path):
    z = make_triplets(tmp_path, {"img": {"mask": "image"}, "short": {"mask": "video:3"},
                                 "long": {"mask": "video:40"}, "blank": {"mask": "black"}})
    job = intake("ic-lora/v2v-masked", {"training_data_url": z, **SMALL}, str(tmp_path / "work"))
    cfg = PreprocessConfig(model_dir=tiny_model, cache_dir=str(tmp_path / "cache"), width=256, height=128,
                           num_frames=9, frame_rate=25, split_scenes=False, conditions=job.conditions.items)
    diag = Diagnostics()
    manifest = preprocess(job.samples, cfg, diag)
    assert [s.name for s in diag.skipped] == ["blank_end.mp4"] and "all black" in diag.skipped[0].reason
    cache = LatentCache(cfg.cache_dir)
    masks = {s.name: cache.load_video(s.id)["mask"].numpy().astype(bool) for s in manifest.samples}
    assert masks["img_end.mp4"].shape == (2, 4, 8)
    assert np.array_equal(masks["img_end.mp4"][0], expected_cells(RECT))
    assert np.array_equal(masks["img_end.mp4"][1], expected_cells(RECT))
    # video masks: latent frame 0 = pixel frame 0; latent frame 1 = union of pixel frames 1..8 (held when short)
    rect = lambda i: (32 + 32 * i, 96, 96 + 32 * i, 176)  # noqa: E731
    for name, last in (("short_end.mp4", 2), ("long_end.mp4", 8)):
        m = masks[name]
        assert np.array_equal(m[0], expected_cells(rect(0)))
        union = np.zeros_like(m[1])
        for i in range(1, 9):
            union |= expected_cells(rect(min(i, last)))
        assert np.array_equal(m[1], union), name


# ---------------------------------------------------------------------------------------------- kept region
def test_sampling_keeps_every_kept_token_equal_to_the_source(tiny_model):
    from ltxtrain.conditioning.kinds import MaskKeep, ReferenceVideo
    from ltxtrain.conditioning.tokens import TextContext
    from ltxtrain.encode.encoders import encode_text
    from ltxtrain.models.bundle import load_components
    from ltxtrain.sample.sampler import sample_video_latents

    parts = load_components(tiny_model, ["transformer", "tokenizer", "text_encoder", "connectors"])
    tr = parts["transformer"].eval()
    text = TextContext(*encode_text(parts["tokenizer"], parts["text_encoder"], parts["connectors"], ["a cat"], 32))
    g = torch.Generator().manual_seed(0)
    source = torch.randn(1, tr.config.in_channels, 2, 4, 8, generator=g)
    regenerate = torch.zeros(1, 2, 4, 8)
    regenerate[:, :, 1:3, 2:6] = 1
    reference = torch.randn(1, tr.config.in_channels, 2, 4, 8, generator=g)
    out = sample_video_latents(tr, text, (2, 4, 8), 25.0, steps=6, conditions=(ReferenceVideo(), MaskKeep()),
                               cols={"latents": source, "mask": regenerate, "reference": reference}, generator=g)
    keep = regenerate[0] == 0
    assert torch.equal(out[0][:, keep], source[0][:, keep])  # bit-exact
    assert (out[0][:, ~keep] - source[0][:, ~keep]).abs().min() > 0


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("endpoint,audio", [("ic-lora/v2v-masked", None), ("av2av-masked", "stereo48k")])
def test_masked_products_train_end_to_end(ray_cluster, tmp_path, endpoint, audio):
    from safetensors.torch import load_file

    z = make_triplets(tmp_path, {"a": {"audio": audio}, "b": {"mask": "video:4", "audio": audio}})
    out = tmp_path / "out"
    validation = [{"prompt": "repl4ce the square", "video_url": str(tmp_path / "a_end.mp4"),
                   "mask_url": str(tmp_path / "a_mask.png"), "reference_video_url": str(tmp_path / "a_start.mp4")}]
    req = {"training_data_url": z, **SMALL, "trigger_phrase": "repl4ce", "validation": validation,
           "debug_dataset": True}
    result = run_job(endpoint, req, str(out), JobOptions(model="tiny", num_workers=2, use_gpu=False))
    data = json.loads((out / "result.json").read_text())
    assert data["billing_units"] == 100 and data["samples"] == 2 and data["with_audio"] is (audio is not None)
    assert result.metrics["world_size"] == 2
    keys = load_file(str(out / data["lora_file"]["file_name"])).keys()
    assert any(".audio_attn1." in k for k in keys) is (audio is not None)
    if audio:
        assert "probe_audio_end" in result.metrics
    from ltxtrain.export.reel import read_reel

    reel = read_reel(str(out / data["video"]["file_name"]))
    assert reel["frames"].shape[0] == 4 * 9 and (reel["audio"] is not None) is (audio is not None)
    with zipfile.ZipFile(out / data["debug_dataset"]["file_name"]) as zf:
        index = json.loads(zf.read("index.json"))
        assert index["count"] == 2 and all("mask.mp4" in e["files"] for e in index["samples"])
        info = json.loads(zf.read(f"{index['samples'][0]['folder']}/info.json"))
        assert 0 < info["mask"]["regenerate_fraction"] < 1
