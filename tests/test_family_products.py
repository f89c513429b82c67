"""The fal ltx23-trainer-v2 video family, product by product: intake (roles, named errors, every error rule of the
spec as a named 422) and an in-process overfit through the shared loop and sampler (no Ray): the generated region
approaches the clip and the given region is untouched."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltxtrain.api.errors import RequestError
from ltxtrain.jobs import check
from ltxtrain.products import get_recipe
from ltxtrain.sampledata import write_video

SMALL = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "frame_rate": 25, "rank": 8,
         "number_of_steps": 100, "validation_resolution": "low", "validation_aspect_ratio": "16:9",
         "validation_number_of_frames": 9}


def make_zip(tmp: Path, files: dict[str, object], name: str = "d.zip") -> str:
    """{archive name: seconds (video) | "image" | "mask" | "audio:<s>" | str caption} -> zip path."""
    z = tmp / name
    with zipfile.ZipFile(z, "w") as f:
        for i, (arc, spec) in enumerate(files.items()):
            p = tmp / arc.replace("/", "_")
            if arc.endswith(".txt"):
                f.writestr(arc, spec)
                continue
            if spec in ("image", "mask"):
                img = np.zeros((96, 160, 3), np.uint8)
                img[20:60, 40:100] = 255
                Image.fromarray(img).save(p)
            elif isinstance(spec, str) and spec.startswith("audio:"):
                write_video(str(p), float(spec[6:]), 25, 160, 96, seed=i, audio="stereo48k")
            else:
                write_video(str(p), float(spec), 25, 160, 96, seed=i)
            f.write(p, arc)
    return str(z)


def errors(endpoint: str, payload: dict) -> list[dict]:
    with pytest.raises(RequestError) as info:
        check(endpoint, payload)
    return info.value.to_json()["errors"]


def locs(errs: list[dict]) -> list[tuple]:
    return [tuple(e["loc"]) for e in errs]


# ------------------------------------------------------------------------------------------------------ intake
def test_every_family_endpoint_is_registered_and_v2v_masked_is_the_ic_lora_recipe():
    for name in ("ltx23/t2v", "i2v", "inpaint", "outpaint", "extend-prefix", "extend-suffix", "v2v-masked"):
        assert get_recipe(name).endpoint == name
    a, b = get_recipe("v2v-masked"), get_recipe("ic-lora/v2v-masked")
    assert (a.conditions, a.request_model, a.roles) == (b.conditions, b.request_model, b.roles)


@pytest.mark.parametrize("endpoint", ["ltx23/t2v", "i2v"])
def test_text_and_image_products_take_plain_clips_or_images_never_mixed(tmp_path, endpoint):
    ok = check(endpoint, {"training_data_url": make_zip(tmp_path, {"a.mp4": 0.5, "a.txt": "cap", "b.mp4": 0.5}),
                          **SMALL})
    assert [s["files"] for s in ok["samples"]] == [{"target": "a.mp4"}, {"target": "b.mp4"}]
    assert ok["request"]["frame_rate"] == 25 and get_recipe(endpoint).parse({"training_data_url": "x"}).frame_rate == 24
    errs = errors(endpoint, {"training_data_url": make_zip(tmp_path, {"a.mp4": 0.5, "b.png": "image"}, "m.zip"),
                             **SMALL})
    assert locs(errs) == [("body", "training_data_url")] and "only videos or only images" in errs[0]["msg"]
    errs = errors(endpoint, {"training_data_url": make_zip(tmp_path, {"a.mp4": 0.5}, "n.zip"), **SMALL,
                             "with_audio": True})
    assert locs(errs) == [("body", "training_data_url", "a.mp4")] and "no audio track" in errs[0]["msg"]


def test_i2v_validation_entries_need_an_image():
    recipe = get_recipe("i2v")
    with pytest.raises(RequestError) as info:
        recipe.parse({"training_data_url": "x", "validation": [{"prompt": "a"}]})
    assert locs(info.value.to_json()["errors"]) == [("body", "validation", 0, "image_url")]
    assert recipe.parse({"training_data_url": "x", "validation": [{"prompt": "a", "image_url": "u"}]})


def test_inpaint_matches_clip_and_mask_and_names_missing_and_stray_files(tmp_path):
    ok = check("inpaint", {"training_data_url": make_zip(tmp_path, {"a.mp4": 0.5, "a_mask.png": "mask"}), **SMALL})
    assert ok["samples"][0]["files"] == {"target": "a.mp4", "mask": "a_mask.png"}
    errs = errors("inpaint", {"training_data_url": make_zip(tmp_path, {"a.mp4": 0.5, "a_mask.png": "mask",
                                                                        "b.mp4": 0.5, "c_mask.png": "mask"}, "e.zip"),
                              **SMALL})
    assert sorted(locs(errs)) == [("body", "training_data_url", "b.mp4"), ("body", "training_data_url", "c_mask.png")]
    assert all("has no matching" in e["msg"] for e in errs)
    errs = errors("inpaint", {"training_data_url": make_zip(tmp_path, {"a.png": "image", "a_mask.png": "mask"},
                                                            "i.zip"), **SMALL})
    assert locs(errs) == [("body", "training_data_url", "a.png")]
    errs = errors("inpaint", {"training_data_url": "x", "split_input_into_scenes": True})
    assert locs(errs) == [("body", "split_input_into_scenes")]
    with pytest.raises(RequestError) as info:
        get_recipe("inpaint").parse({"training_data_url": "x", "validation": [{"prompt": "a", "video_url": "v"}]})
    assert locs(info.value.to_json()["errors"]) == [("body", "validation", 0, "mask_url")]


def test_v2v_masked_names_each_missing_member_of_a_triplet(tmp_path):
    z = make_zip(tmp_path, {"a_start.mp4": 0.5, "a_end.mp4": 0.5, "a_mask.png": "mask", "b_end.mp4": 0.5,
                            "b_mask.png": "mask"})
    errs = errors("v2v-masked", {"training_data_url": z, **SMALL})
    assert locs(errs) == [("body", "training_data_url", "b_end.mp4")] and "_start" in errs[0]["msg"]


VIDEO_ONLY = ["outpaint", "extend-prefix", "extend-suffix"]


@pytest.mark.parametrize("endpoint", VIDEO_ONLY)
def test_video_only_products_reject_images_by_name(tmp_path, endpoint):
    video_only_rejects_images(tmp_path, endpoint)


def video_only_rejects_images(tmp_path, endpoint):
    frames = {"extend-prefix": {"conditioning_frames": 1}, "extend-suffix": {"conditioning_frames": 8}}.get(endpoint, {})
    ok = check(endpoint, {"training_data_url": make_zip(tmp_path, {"a.mp4": 0.5, "a.txt": "x"}), **SMALL, **frames})
    assert ok["samples"][0]["files"] == {"target": "a.mp4"}
    errs = errors(endpoint, {"training_data_url": make_zip(tmp_path, {"a.mp4": 0.5, "b.jpg": "image"}, "i.zip"),
                             **SMALL, **frames})
    assert ("body", "training_data_url", "b.jpg") in locs(errs)


@pytest.mark.parametrize("corners,field", [
    ({"crop_top_left": [0, 0], "crop_bottom_right": [768, 768]}, "crop_bottom_right"),  # whole frame
    ({"crop_top_left": [10, 10], "crop_bottom_right": [40, 40]}, "crop_bottom_right"),  # no whole cell inside
    ({"crop_top_left": [500, 10], "crop_bottom_right": [100, 400]}, "crop_top_left"),  # inverted
    ({"crop_top_left": [0, 0], "crop_bottom_right": [900, 100]}, "crop_top_left"),  # outside the frame
    ({"crop_top_left": [10, 10]}, "crop_bottom_right"),  # one corner alone
])
def test_outpaint_rectangle_rules_are_named_422s(corners, field):
    with pytest.raises(RequestError) as info:
        get_recipe("outpaint").parse({"training_data_url": "x", **corners})
    assert locs(info.value.to_json()["errors"]) == [("body", field)]


def test_outpaint_default_rectangle_is_the_centred_three_quarters_snapped_inward():
    recipe = get_recipe("outpaint")
    keep = recipe.bind(recipe.parse({"training_data_url": "x"}), False).items[0]
    assert keep.rect == (96, 96, 672, 672) and keep.cells(24, 24) == (3, 3, 21, 21)
    keep = recipe.bind(recipe.parse({"training_data_url": "x", "crop_top_left": [40, 10],
                                     "crop_bottom_right": [200, 100]}), False).items[0]
    assert keep.cells(24, 24) == (2, 1, 6, 3)  # 40 -> 64, 10 -> 32, 200 -> 192, 100 -> 96


@pytest.mark.parametrize("endpoint,bad,good", [
    ("extend-prefix", [56, 58, 89, 0], [1, 57, 81]),  # 8k+1, at most number_of_frames - 8
    ("extend-suffix", [7, 9, 0, 96], [8, 64, 88]),  # 8k, 8 .. number_of_frames - 1
])
def test_extend_conditioning_frames_rule(endpoint, bad, good):
    recipe = get_recipe(endpoint)
    for n in bad:
        with pytest.raises(RequestError) as info:
            recipe.parse({"training_data_url": "x", "conditioning_frames": n})
        assert locs(info.value.to_json()["errors"]) == [("body", "conditioning_frames")], n
    for n in good:
        recipe.parse({"training_data_url": "x", "conditioning_frames": n})
    bound = recipe.bind(recipe.parse({"training_data_url": "x"}), False).items[0]
    assert bound.latent_frames == 8 and bound.audio is False  # the spec's defaults: 57 -> 8, 64 -> 8 latent frames
    with pytest.raises(RequestError) as info:
        recipe.parse({"training_data_url": "x", "validation": [{"prompt": "a"}]})
    assert locs(info.value.to_json()["errors"]) == [("body", "validation", 0, "video_url")]


@pytest.mark.parametrize("endpoint", ["extend-prefix", "extend-suffix"])
def test_extend_with_audio_needs_a_track_on_every_clip(tmp_path, endpoint):
    frames = {"conditioning_frames": 1 if endpoint == "extend-prefix" else 8}
    z = make_zip(tmp_path, {"a.mp4": "audio:0.5", "b.mp4": 0.5})
    errs = errors(endpoint, {"training_data_url": z, **SMALL, **frames, "with_audio": True})
    assert locs(errs) == [("body", "training_data_url", "b.mp4")]
    assert check(endpoint, {"training_data_url": z, **SMALL, **frames})["with_audio"] is False
    recipe = get_recipe(endpoint)
    bound = recipe.bind(recipe.parse({"training_data_url": "x", "with_audio": True}), True)
    assert bound.audio == "generated" and bound.items[0].audio is True


# ------------------------------------------------------------------------------------------------------ overfit
def _cache(tmp_path, tiny_model, conditions, cols: dict, caption: str = "a moving square"):
    """A one-sample latent cache written directly (the encoders are tested elsewhere)."""
    from ltxtrain.encode.cache import CachedSample, LatentCache, Manifest
    from ltxtrain.encode.encoders import encode_text
    from ltxtrain.models.bundle import load_components

    cache = LatentCache(tmp_path / "cache")
    parts = load_components(tiny_model, ["tokenizer", "text_encoder", "connectors"])
    video, audio, mask = encode_text(parts["tokenizer"], parts["text_encoder"], parts["connectors"], [caption], 32)
    cache.write_text("t", video[0], audio[0], mask[0])
    cache.write_video("s", **cols)
    c, f, h, w = cols["latents"].shape
    cache.write_manifest(Manifest(tiny_model, w * 32, h * 32, 8 * (f - 1) + 1, 24.0,
                                  conditions=[x.to_json() for x in conditions.items],
                                  samples=[CachedSample("s", "s", caption, "t", [c, f, h, w], 8 * (f - 1) + 1, 24.0)]))
    from ltxtrain.conditioning.tokens import TextContext

    return str(cache.root), TextContext(video, audio, mask)


def _clip(c: int, f: int, h: int, w: int) -> torch.Tensor:
    """Smooth, structured latents (a learnable 'clip'), not white noise."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(c, 1, h, w, generator=g)
    drift = torch.randn(c, 1, h, w, generator=g)
    return base + 0.3 * torch.arange(f).view(1, f, 1, 1) * drift


OVERFIT = {  # endpoint -> (request fields, latent grid, cache columns beside the clip, columns a preview adds)
    "i2v": ({}, (3, 2, 4), None, lambda lat: {"first_frame": lat[:, :1]}),
    "inpaint": ({}, (3, 2, 4), lambda lat: {"mask": _band(lat)}, None),
    # a coarser grid than the 512x288 bucket: the rectangle scales onto it (cells x 1..3, y 1..2), as in previews
    "outpaint": ({"crop_top_left": [128, 72], "crop_bottom_right": [384, 216]}, (2, 3, 4), None, None),
    "extend-prefix": ({"number_of_frames": 25, "conditioning_frames": 9}, (4, 2, 4), None, None),
    "extend-suffix": ({"number_of_frames": 25, "conditioning_frames": 8}, (4, 2, 4), None, None),
}


def _band(lat: torch.Tensor) -> torch.Tensor:
    regen = torch.zeros(lat.shape[1:], dtype=torch.uint8)
    regen[:, :, 1:3] = 1  # WHITE (regenerate) band in the middle columns
    return regen


@pytest.mark.parametrize("endpoint", list(OVERFIT))
def test_overfit_one_clip_then_the_sampler_regenerates_it_around_the_given_region(tiny_model, tmp_path, endpoint):
    overfit(tiny_model, tmp_path, endpoint, *OVERFIT[endpoint])


def overfit(tiny_model, tmp_path, endpoint, extra, grid, train_cols, sample_cols):
    """Train a LoRA on one synthetic clip with the product's conditions (the real loop, in-process), then sample
    with the same conditions: the given tokens come back bit-exact and the generated ones approach the clip."""
    from ltxtrain.conditioning.tokens import assemble
    from ltxtrain.models.bundle import load_components
    from ltxtrain.models.lora import VIDEO_TARGETS, attach_lora, load_lora_state_dict
    from ltxtrain.sample.sampler import sample_video_latents
    from ltxtrain.train.config import TrainConfig
    from ltxtrain.train.loop import LORA_FILE, WorkerContext, run_worker
    from safetensors.torch import load_file

    f, h, w = grid
    recipe = get_recipe(endpoint)
    conditions = recipe.bind(recipe.parse({"training_data_url": "x", "resolution": "low", "aspect_ratio": "16:9",
                                           **extra}), False)
    base = load_components(tiny_model, ["transformer"])["transformer"].eval()
    lat = _clip(base.config.in_channels, f, h, w)
    cols = {"latents": lat, **(train_cols(lat) if train_cols else {})}
    cache_dir, text = _cache(tmp_path, tiny_model, conditions, cols)
    cfg = TrainConfig(model_dir=tiny_model, cache_dir=cache_dir, steps=120, learning_rate=1e-2, rank=16,
                      lora_targets=list(VIDEO_TARGETS), conditions=conditions.to_json(), seed=0, progress=False,
                      log_every=40)
    saved = {}
    run_worker(cfg, WorkerContext(), lambda m, d: saved.update(lora=load_file(str(Path(d) / LORA_FILE))) if d else None)

    given = {k: v[None] for k, v in cols.items()}
    given.update({k: v[None] for k, v in (sample_cols(lat) if sample_cols else {}).items()})
    probe, _ = assemble(conditions.items, base.rope, base.audio_rope, {k: v.float() for k, v in given.items()},
                        torch.tensor([0.5]), 24.0, noisy=torch.zeros(1, f * h * w, base.config.in_channels))
    kept = probe.cond[0, : f * h * w].bool().reshape(f, h, w)
    assert 0 < kept.sum() < kept.numel()

    def generate(transformer) -> float:
        out = sample_video_latents(transformer, text, (f, h, w), 24.0, steps=10, conditions=conditions.items,
                                   cols=given, generator=torch.Generator().manual_seed(0))[0]
        assert torch.equal(out[:, kept], lat[:, kept])  # the given region is untouched, bit for bit
        return torch.mean((out[:, ~kept] - lat[:, ~kept]) ** 2).item()

    before = generate(base)
    attach_lora(base, 16, list(VIDEO_TARGETS))
    load_lora_state_dict(base, saved["lora"])
    after = generate(base.eval())
    assert after < 0.6 * before, (before, after)
