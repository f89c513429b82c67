"""`interpolate` as a page: intake, its error rules, and the overfit through the shared sampler (helpers shared with
the rest of the family in test_family_products.py)."""

from __future__ import annotations

import pytest

from ltxtrain.api.errors import RequestError
from ltxtrain.products import get_recipe
from test_family_products import locs, overfit, video_only_rejects_images


def test_interpolate_takes_plain_clips_and_rejects_images_by_name(tmp_path):
    assert get_recipe("interpolate").endpoint == "interpolate"
    video_only_rejects_images(tmp_path, "interpolate")


def test_interpolate_entries_need_start_and_end_images_and_the_middle_one_when_asked():
    recipe = get_recipe("interpolate")
    with pytest.raises(RequestError) as info:
        recipe.parse({"training_data_url": "x", "validation": [{"prompt": "a", "start_image_url": "s"}]})
    assert locs(info.value.to_json()["errors"]) == [("body", "validation", 0, "end_image_url")]
    entry = {"prompt": "a", "start_image_url": "s", "end_image_url": "e"}
    assert recipe.parse({"training_data_url": "x", "validation": [entry]})
    with pytest.raises(RequestError) as info:
        recipe.parse({"training_data_url": "x", "use_middle_keyframe": True, "validation": [entry]})
    assert locs(info.value.to_json()["errors"]) == [("body", "validation", 0, "middle_image_url")]
    bound = recipe.bind(recipe.parse({"training_data_url": "x", "use_middle_keyframe": True}), False)
    assert [c.kind for c in bound.items] == ["first_frame", "keyframe", "keyframe"]
    assert [getattr(c, "position", None) for c in bound.items] == [None, "last", "middle"]
    assert len(recipe.bind(recipe.parse({"training_data_url": "x"}), False).items) == 2


def test_interpolate_overfit_keeps_first_and_last_frames(tiny_model, tmp_path):
    # training: frame 0 from the clip, the last pixel frame encoded alone; previews give both as images
    overfit(tiny_model, tmp_path, "interpolate", {}, (3, 2, 4), lambda lat: {"keyframe_last": lat[:, -1:].clone()},
            lambda lat: {"first_frame": lat[:, :1]})


@pytest.mark.ray
def test_interpolate_job_end_to_end_with_keyframe_previews(ray_cluster, tmp_path):
    """The keyframe family through Ray: the last frame fitted from each clip and cached as its own latent, image
    keyframes for the previews encoded by the same code, and the conditions written into the outputs."""
    import json

    from ltxtrain.encode.cache import LatentCache
    from ltxtrain.export.lora_file import read_lora_metadata
    from ltxtrain.export.reel import read_reel
    from ltxtrain.jobs import JobOptions, run_job
    from test_family_products import SMALL, make_zip

    make_zip(tmp_path, {"s.png": "image", "e.png": "image"}, "images.zip")  # writes the preview keyframes
    entry = {"prompt": "a square moves", "start_image_url": str(tmp_path / "s.png"),
             "end_image_url": str(tmp_path / "e.png")}
    out = tmp_path / "out"
    z = make_zip(tmp_path, {"a.mp4": 0.5, "a.txt": "a square moves", "b.mp4": 0.5}, "clips.zip")
    result = run_job("interpolate", {"training_data_url": z, **SMALL, "validation": [entry]}, str(out),
                     JobOptions(model="tiny", num_workers=1, use_gpu=False, keep_work=True))
    data = json.loads((out / "result.json").read_text())
    assert data["samples"] == 2 and data["billing_units"] == 100
    cache = LatentCache(out / "work" / "cache")
    manifest = cache.read_manifest()
    assert [c["kind"] for c in manifest.conditions] == ["first_frame", "keyframe"]
    for s in manifest.samples:
        tensors = cache.load_video(s.id)
        assert set(tensors) == {"latents", "keyframe_last"} and tensors["keyframe_last"].shape[1] == 1
    meta = read_lora_metadata(str(out / data["lora_file"]["file_name"]))
    assert meta["keyframe_last"] == "appended"
    config = json.loads((out / data["config_file"]["file_name"]).read_text())
    assert [c["kind"] for c in config["conditions"]["items"]] == ["first_frame", "keyframe"]
    reel = read_reel(str(out / data["video"]["file_name"]))
    assert reel["frames"].shape[0] == 4 * 9
    assert result.metrics["world_size"] == 1 and "probe_loss_end" in result.metrics
