"""Preprocessing on a cluster whose nodes do not share a disk: the tasks and encoders read no source file by its path
outside the driver's node, and only the driver writes the latent cache."""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ltxtrain.api.errors import Diagnostics
from ltxtrain.encode import cache as cache_module
from ltxtrain.encode.cache import LatentCache
from ltxtrain.encode.pipeline import PreprocessConfig, preprocess
from ltxtrain.intake.limits import IntakeLimits
from ltxtrain.jobs import intake
from ltxtrain.sample import validation
from ltxtrain.sampledata import write_video

SMALL = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "frame_rate": 25,
         "validation_resolution": "low", "validation_aspect_ratio": "16:9", "validation_number_of_frames": 9}


def _triplets(tmp: Path) -> str:
    """Two masked IC-LoRA samples: every role (target, reference, mask) is a file the tasks must read."""
    mask = np.zeros((120, 160, 3), np.uint8)
    mask[40:80, 40:120] = 255
    with zipfile.ZipFile(tmp / "d.zip", "w") as z:
        for i, base in enumerate(("a", "b")):
            for role in ("start", "end"):
                write_video(str(tmp / f"{base}_{role}.mp4"), 0.5, 25, 160, 120, seed=2 * i + (role == "end"))
                z.write(tmp / f"{base}_{role}.mp4", f"{base}_{role}.mp4")
            Image.fromarray(mask).save(tmp / f"{base}_mask.png")
            z.write(tmp / f"{base}_mask.png", f"{base}_mask.png")
            z.writestr(f"{base}.txt", "replace the square")
    return str(tmp / "d.zip")


def test_tasks_read_no_driver_path_and_only_the_driver_writes_the_cache(ray_cluster, tiny_model, tmp_path,
                                                                        monkeypatch):
    import ray

    validation_entry = {"prompt": "replace it", "video_url": str(tmp_path / "a_end.mp4"),
                        "mask_url": str(tmp_path / "a_mask.png"), "reference_video_url": str(tmp_path / "a_start.mp4")}
    job = intake("ic-lora/v2v-masked", {"training_data_url": _triplets(tmp_path), **SMALL,
                                        "validation": [validation_entry]}, str(tmp_path / "work"))

    # "Another node": Ray's workers keep the working dir they started in. The driver moves into tmp_path and names
    # every source file relative to it, so a task or actor that opened a path would not find the file.
    monkeypatch.chdir(tmp_path)
    samples = [dataclasses.replace(s, media={k: os.path.relpath(v) for k, v in s.media.items()}) for s in job.samples]
    fetch_media = validation._fetch_entry_media
    monkeypatch.setattr(validation, "_fetch_entry_media",
                        lambda *a: {k: os.path.relpath(v) for k, v in fetch_media(*a).items()})
    paths = [p for s in samples for p in s.media.values()]
    assert len(paths) == 6 and all(os.path.isfile(p) for p in paths)
    assert not any(ray.get(ray.remote(lambda ps: [os.path.exists(p) for p in ps]).remote(paths)))

    # Every cache file written in this process (the driver); workers import the module unpatched.
    written = []
    save = cache_module.atomic_save

    def recording_save(tensors, path, *args, **kwargs):
        written.append(Path(path))
        save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(cache_module, "atomic_save", recording_save)
    cfg = PreprocessConfig(model_dir=tiny_model, cache_dir=str(tmp_path / "cache"), width=256, height=128,
                           num_frames=9, frame_rate=25, split_scenes=False, conditions=job.conditions.items)
    plan = validation.plan_validation(job.recipe, job.request, False, tiny_model, cfg.cache_dir, "work",
                                      IntakeLimits())
    manifest = preprocess(samples, cfg, Diagnostics(), extra_texts=plan.texts)

    cache = LatentCache(cfg.cache_dir)
    assert len(manifest.samples) == 2
    for s in manifest.samples:
        assert set(cache.load_video(s.id)) == {"latents", "reference", "mask"}
        assert cache.has_text(s.text_id)
    assert set(cache.load_video(plan.items[0].conditions_id)) == {"latents", "mask", "reference"}
    files = sorted(p for p in Path(cfg.cache_dir).rglob("*.safetensors"))
    assert len(files) == 2 + 3 + 1  # samples, texts (caption, prompt, negative prompt), validation conditions
    assert sorted(written) == files  # each one written by the driver, once

    # resume: a re-run encodes only what is missing from the driver's cache
    written.clear()
    cache.video_path(manifest.samples[1].id).unlink()
    again = preprocess(samples, cfg, Diagnostics(), extra_texts=plan.texts)
    assert written == [cache.video_path(manifest.samples[1].id)]
    assert [s.id for s in again.samples] == [s.id for s in manifest.samples]
