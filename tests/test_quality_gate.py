"""The export quality gate (NaN/Inf, near-zero lora_B, audio keys of a video-only job, the measured effect) and the
per-modality files of a joint audio+video LoRA. In-process, tiny model, no Ray."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ltxtrain.export.lora_file import (AUDIO, AUDIO_TO_VIDEO, VIDEO, VIDEO_TO_AUDIO, load_lora_into_pipeline,
                                       lora_stream, read_lora_metadata)
from ltxtrain.export.lora_outputs import write_lora_outputs
from ltxtrain.conditioning.kinds import ConditionSet, MaskKeep, ReferenceVideo
from ltxtrain.export.quality_gate import QualityGateError, adapters_disabled, check_lora
from ltxtrain.models.bundle import build_pipeline, load_components
from ltxtrain.models.lora import (AUDIO_TARGETS, CROSS_MODAL_TARGETS, VIDEO_TARGETS, attach_lora, lora_parameters,
                                  lora_state_dict)
from ltxtrain.train.data import Batch
from ltxtrain.train.loop import measure_lora_effect

torch.set_num_threads(2)
ALL = VIDEO_TARGETS + AUDIO_TARGETS + CROSS_MODAL_TARGETS
RANK = 4


def lora_model(model_dir, targets, seed=0, scale=0.3):
    tr = load_components(model_dir, ["transformer"])["transformer"]
    attach_lora(tr, RANK, targets)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(tr):
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return tr


def tiny_batch(audio: bool = False) -> Batch:
    g = torch.Generator().manual_seed(3)
    cols = {"latents": torch.randn(1, 8, 2, 4, 6, generator=g)}
    text = (torch.randn(1, 32, 32, generator=g), torch.randn(1, 32, 16, generator=g))
    if audio:
        cols["audio"] = torch.randn(1, 5, 8, generator=g)
    return Batch(cols, text[0], text[1], text_mask=torch.ones(1, 32), fps=25.0, names=["x"])


def lora_effect(transformer, batch, device, seed, conditions=ConditionSet()):
    return measure_lora_effect(transformer, batch, device, seed, conditions)


def test_every_module_of_the_transformer_belongs_to_one_stream(tiny_model):
    tr = load_components(tiny_model, ["transformer"])["transformer"]
    linears = [n for n, m in tr.named_modules() if isinstance(m, torch.nn.Linear)]
    streams = {n: lora_stream(n + ".lora_A.weight") for n in linears}
    assert streams["transformer_blocks.0.attn1.to_q"] == VIDEO
    assert streams["transformer_blocks.1.ff.net.2"] == VIDEO
    assert streams["proj_in"] == streams["time_embed.linear"] == VIDEO
    assert streams["transformer_blocks.0.audio_attn2.to_v"] == streams["transformer_blocks.0.audio_ff.net.0.proj"] \
        == streams["audio_proj_in"] == streams["audio_time_embed.linear"] == AUDIO
    assert streams["transformer_blocks.1.audio_to_video_attn.to_out.0"] == AUDIO_TO_VIDEO
    assert streams["av_cross_attn_video_a2v_gate.linear"] == AUDIO_TO_VIDEO
    assert streams["transformer_blocks.1.video_to_audio_attn.to_q"] == VIDEO_TO_AUDIO
    assert streams["av_cross_attn_audio_v2a_gate.linear"] == VIDEO_TO_AUDIO
    # the same in the LTX/ComfyUI names of a LoRA file
    assert lora_stream("diffusion_model.av_ca_a2v_gate_adaln_single.linear.lora_A.weight") == AUDIO_TO_VIDEO
    assert lora_stream("diffusion_model.av_ca_audio_scale_shift_adaln_single.linear.lora_B.weight") == VIDEO_TO_AUDIO
    assert lora_stream("diffusion_model.audio_patchify_proj.lora_A.weight") == AUDIO
    # the recipes' target lists agree: what a video-only job trains is all video
    for n, s in streams.items():
        if any(n.endswith("." + t) for t in VIDEO_TARGETS):
            assert s == VIDEO, n
        if any(n.endswith("." + t) for t in AUDIO_TARGETS + CROSS_MODAL_TARGETS):
            assert s != VIDEO, n


def test_nan_fails_naming_the_tensor_and_zero_lora_b_warns(tiny_model):
    sd = lora_state_dict(lora_model(tiny_model, VIDEO_TARGETS))
    report = check_lora(sd, audio_trained=False, effect={"video": 0.2, "sigma": 0.5})
    assert report["passed"] and report["warnings"] == [] and report["lora_B_count"] == len(sd) // 2

    zero = dict(sd)
    zero["transformer_blocks.1.attn2.to_k.lora_B.weight"] = torch.zeros_like(zero[
        "transformer_blocks.1.attn2.to_k.lora_B.weight"])
    zero["transformer_blocks.0.ff.net.2.lora_B.weight"] = torch.full_like(zero[
        "transformer_blocks.0.ff.net.2.lora_B.weight"], 1e-8)
    report = check_lora(zero, audio_trained=False)
    assert report["passed"] and report["near_zero_lora_B_count"] == 2
    assert report["near_zero_lora_B"] == ["transformer_blocks.0.ff.net.2.lora_B.weight",
                                          "transformer_blocks.1.attn2.to_k.lora_B.weight"]
    assert len(report["warnings"]) == 1 and "2 of 20 lora_B" in report["warnings"][0]

    bad = dict(sd)
    bad["transformer_blocks.1.attn1.to_v.lora_A.weight"] = bad["transformer_blocks.1.attn1.to_v.lora_A.weight"].clone()
    bad["transformer_blocks.1.attn1.to_v.lora_A.weight"][0, 0] = float("nan")
    bad["transformer_blocks.0.ff.net.0.proj.lora_B.weight"] = torch.full_like(
        bad["transformer_blocks.0.ff.net.0.proj.lora_B.weight"], float("inf"))
    with pytest.raises(QualityGateError, match=r"NaN/Inf .* transformer_blocks\.0\.ff\.net\.0\.proj\.lora_B\.weight, "
                                               r"transformer_blocks\.1\.attn1\.to_v\.lora_A\.weight") as e:
        check_lora(bad, audio_trained=True)
    assert not e.value.report["passed"] and e.value.report["nonfinite_count"] == 2


def test_audio_and_cross_modal_keys_fail_a_video_only_job(tiny_model):
    sd = lora_state_dict(lora_model(tiny_model, ALL))
    assert check_lora(sd, audio_trained=True)["passed"]  # a joint job may have them
    with pytest.raises(QualityGateError, match="although audio was not trained") as e:
        check_lora(sd, audio_trained=False)
    assert e.value.report["unexpected_audio_key_count"] == 2 * 2 * len(AUDIO_TARGETS + CROSS_MODAL_TARGETS)
    only_cross = {k: v for k, v in sd.items() if "video_to_audio_attn.to_q" in k or "attn1.to_q" in k}
    with pytest.raises(QualityGateError, match=r"video_to_audio_attn\.to_q"):
        check_lora(only_cross, audio_trained=False)


def test_effect_is_zero_for_an_untrained_adapter_and_measures_the_lora(tiny_model):
    batch = tiny_batch()
    fresh = load_components(tiny_model, ["transformer"])["transformer"]
    tr = load_components(tiny_model, ["transformer"])["transformer"]
    attach_lora(tr, RANK, VIDEO_TARGETS)  # B = 0: the adapter changes nothing yet
    untrained = lora_effect(tr, batch, torch.device("cpu"), seed=1)
    assert untrained == {"video": 0.0, "sigma": 0.5}
    report = check_lora(lora_state_dict(tr), audio_trained=False, effect=untrained)
    assert any("changes the video prediction" in w for w in report["warnings"])

    tr = lora_model(tiny_model, VIDEO_TARGETS, scale=0.05)
    before = {n: p.requires_grad for n, p in tr.named_parameters()}
    effect = lora_effect(tr, batch, torch.device("cpu"), seed=1)
    assert 1e-3 < effect["video"] < 10 and effect == lora_effect(tr, batch, torch.device("cpu"), seed=1)
    assert {n: p.requires_grad for n, p in tr.named_parameters()} == before  # the export still finds the adapter
    # "without the LoRA" is exactly the base model, and the adapter is back afterwards
    from ltxtrain.conditioning.tokens import TextContext, predict, video_tokens

    tokens = video_tokens(fresh.rope, batch.latents, torch.tensor([0.5]), 25.0, noise=torch.randn(1, 48, 8))
    text = TextContext(batch.text_video, batch.text_audio, batch.text_mask)
    with torch.no_grad():
        tuned = predict(tr, tokens, text)
        with adapters_disabled(tr):
            assert torch.equal(predict(tr, tokens, text), predict(fresh, tokens, text))
        assert torch.equal(predict(tr, tokens, text), tuned)
        rel = (tuned - predict(fresh, tokens, text)).norm() / predict(fresh, tokens, text).norm()
    assert rel > 1e-3  # the same order as the measured effect on its own seeded input
    joint = lora_effect(lora_model(tiny_model, ALL, scale=0.05), tiny_batch(audio=True), torch.device("cpu"), seed=1)
    assert set(joint) == {"video", "audio", "sigma"} and joint["audio"] > 1e-3
    # IC-LoRA / masked samples: the reference and the mask take part, the change is measured where it generates
    ic = tiny_batch()
    ic.cols["reference"] = torch.randn(1, 8, 2, 2, 3)
    ic.cols["mask"] = torch.zeros(1, 2, 4, 6)
    ic.cols["mask"][:, :, :2] = 1.0  # regenerate the top half only
    masked_ic = ConditionSet(items=(MaskKeep(), ReferenceVideo(spatial=2, temporal=1)))
    with_ref = lora_effect(tr, ic, torch.device("cpu"), 1, masked_ic)["video"]
    assert with_ref > 1e-3 and with_ref != effect["video"]
    ic.cols["mask"][:] = 0.0  # nothing regenerated: nothing to measure
    assert lora_effect(tr, ic, torch.device("cpu"), 1, masked_ic)["video"] == 0.0


def _isolated(tr):
    """Video-only / audio-only inference: the two streams do not see each other (no a2v / v2a)."""
    from ltxtrain.conditioning.tokens import TextContext, audio_tokens, video_tokens

    b = tiny_batch(audio=True)
    g = torch.Generator().manual_seed(0)
    v = video_tokens(tr.rope, b.latents, torch.tensor([0.5]), 25.0, noise=torch.randn(1, 48, 8, generator=g))
    a = audio_tokens(tr.audio_rope, b.audio, torch.tensor([0.5]), noise=torch.randn(1, 5, 8, generator=g))
    text = TextContext(b.text_video, b.text_audio, b.text_mask)
    with torch.no_grad():  # predict() isolates only when there is no audio, so call the transformer directly
        out = tr(hidden_states=v.hidden, audio_hidden_states=a.hidden, encoder_hidden_states=text.video,
                 audio_encoder_hidden_states=text.audio, timestep=v.timesteps, audio_timestep=a.timesteps,
                 sigma=v.sigma * 1000, audio_sigma=a.sigma * 1000, encoder_attention_mask=text.mask,
                 audio_encoder_attention_mask=text.mask, video_coords=v.coords, audio_coords=a.coords,
                 isolate_modalities=True, use_cross_timestep=True, fps=25.0, return_dict=False)
    return out[0].float(), out[1].float()


def test_joint_lora_ships_video_and_audio_files_that_each_drive_their_stream(tiny_model, tmp_path):
    tr = lora_model(tiny_model, ALL, scale=0.1)
    sd = lora_state_dict(tr)
    meta = {"ltxtrain_endpoint": "t2v"}
    out = write_lora_outputs(tmp_path / "t2v_lora.safetensors", sd, RANK, float(RANK), meta, audio_trained=True)
    assert out.quality["passed"]
    assert {m: p.name for m, p in out.per_modality.items()} == {"video": "t2v_lora_video.safetensors",
                                                                "audio": "t2v_lora_audio.safetensors"}
    full, video, audio = (load_file(str(p)) for p in (out.lora, out.per_modality["video"], out.per_modality["audio"]))
    assert set(video).isdisjoint(audio) and set(video) | set(audio) == set(full)
    assert all(torch.equal(full[k], v) for part in (video, audio) for k, v in part.items())
    assert any(".audio_to_video_attn." in k for k in video) and not any(
        ".audio_attn" in k or ".audio_ff." in k or "video_to_audio" in k for k in video)
    assert any(".video_to_audio_attn." in k for k in audio) and all(
        ".audio_" in k or "video_to_audio" in k for k in audio)
    assert read_lora_metadata(str(out.per_modality["audio"]))["ltxtrain_modality"] == "audio"

    base_v, base_a = _isolated(load_components(tiny_model, ["transformer"])["transformer"])
    want_v, want_a = _isolated(tr)
    loaded = {}
    for name, path in (("full", out.lora), ("video", out.per_modality["video"]), ("audio", out.per_modality["audio"])):
        pipe = build_pipeline(tiny_model)
        load_lora_into_pipeline(pipe, str(path))
        loaded[name] = _isolated(pipe.transformer)
    tol = dict(atol=0.05, rtol=0.05)  # bf16 file
    assert torch.allclose(loaded["full"][0], want_v, **tol) and torch.allclose(loaded["full"][1], want_a, **tol)
    # video-only inference with the video file = with the whole LoRA; the audio stream stays the base model's
    assert torch.allclose(loaded["video"][0], loaded["full"][0], atol=1e-5)
    assert torch.equal(loaded["video"][1], base_a) and not torch.allclose(loaded["video"][0], base_v, atol=1e-3)
    # and the other way round for the audio file
    assert torch.allclose(loaded["audio"][1], loaded["full"][1], atol=1e-5)
    assert torch.equal(loaded["audio"][0], base_v) and not torch.allclose(loaded["audio"][1], base_a, atol=1e-3)


def test_a_lora_failing_the_gate_writes_nothing(tiny_model, tmp_path):
    sd = lora_state_dict(lora_model(tiny_model, ALL))
    with pytest.raises(QualityGateError):
        write_lora_outputs(tmp_path / "v2v_lora.safetensors", sd, RANK, float(RANK), {}, audio_trained=False)
    sd["transformer_blocks.0.audio_ff.net.2.lora_B.weight"][0, 0] = float("nan")
    with pytest.raises(QualityGateError, match=r"audio_ff\.net\.2\.lora_B"):
        write_lora_outputs(tmp_path / "t2v_lora.safetensors", sd, RANK, float(RANK), {}, audio_trained=True)
    assert list(tmp_path.iterdir()) == []
    video_only = {k: v for k, v in sd.items() if lora_stream(k) == VIDEO}
    out = write_lora_outputs(tmp_path / "v2v_lora.safetensors", video_only, RANK, float(RANK), {}, False)
    assert out.per_modality == {} and [p.name for p in tmp_path.iterdir()] == ["v2v_lora.safetensors"]


@pytest.mark.ray
def test_joint_job_from_an_init_lora_ships_gated_per_modality_files(joint_validation_job):
    """One Ray job: joint audio+video t2v continuing from a LoRA on every target (conftest.write_init_lora; the
    session's joint job, see conftest); result.json and the config carry the gate."""
    import json

    out, result, init = joint_validation_job
    res = json.loads((out / "result.json").read_text())
    assert res["with_audio"] and res["billing_units"] == 100
    names = {k: res[k]["file_name"] for k in ("lora_file", "lora_video_file", "lora_audio_file")}
    assert names == {"lora_file": "t2v_lora.safetensors", "lora_video_file": "t2v_lora_video.safetensors",
                     "lora_audio_file": "t2v_lora_audio.safetensors"}
    full, video, audio = (load_file(str(out / n)) for n in names.values())
    assert set(video) | set(audio) == set(full) and set(video).isdisjoint(audio)
    q = res["quality"]
    assert q["passed"] and q["nonfinite_count"] == 0 and q["near_zero_lora_B_count"] == 0
    assert q["effect"]["video"] > 1e-3 and q["effect"]["audio"] > 1e-3 and q["effect"]["sigma"] == 0.5
    assert result.metrics["lora_effect"] == q["effect"]
    cfg = json.loads((out / res["config_file"]["file_name"]).read_text())
    assert cfg["quality"] == q and cfg["per_modality_files"] == {"video": names["lora_video_file"],
                                                                 "audio": names["lora_audio_file"]}
    assert cfg["init_lora_url"] == init and "init_lora_url" not in cfg["training"]
    assert not (out / "work" / "init_lora").exists()
