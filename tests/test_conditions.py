"""Per condition kind, in-process: exactly which tokens `assemble` pins clean or appends, their timesteps and loss
mask, and that the sampler (the same function) leaves them bit-exact to the end of sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltxtrain.conditioning.kinds import (ConditionSet, FirstFrame, Keyframe, MaskKeep, Prefix, ReferenceAudio,
                                         ReferenceVideo, SpatialKeep, Suffix)
from ltxtrain.conditioning.tokens import assemble
from ltxtrain.media.masks import mask_to_latent

F, H, W = 4, 2, 3  # latent grid: 4 latent frames = 25 pixel frames
FPS = 24.0
C = 8


@pytest.fixture(scope="module")
def tr(tiny_model):
    from ltxtrain.models.bundle import load_components

    return load_components(tiny_model, ["transformer"])["transformer"].eval()


@pytest.fixture(scope="module")
def text(tiny_model):
    from ltxtrain.conditioning.tokens import TextContext
    from ltxtrain.encode.encoders import encode_text
    from ltxtrain.models.bundle import load_components

    parts = load_components(tiny_model, ["tokenizer", "text_encoder", "connectors"])
    return TextContext(*encode_text(parts["tokenizer"], parts["text_encoder"], parts["connectors"], ["a cat"], 32))


def latents(tr, f=F, h=H, w=W, seed=0):
    return torch.randn(1, tr.config.in_channels, f, h, w, generator=torch.Generator().manual_seed(seed))


def train_tokens(tr, conditions, cols, flags=None, audio=False):
    g = torch.Generator().manual_seed(1)
    n = int(np.prod(cols["latents"].shape[2:]))
    kw = {}
    if audio:
        kw = {"audio_sigma": torch.tensor([0.7]), "audio_noise": torch.randn(cols["audio"].shape, generator=g)}
    return assemble(conditions, tr.rope, tr.audio_rope, cols, torch.tensor([0.7]), FPS, flags=flags,
                    noise=torch.randn(1, n, tr.config.in_channels, generator=g), **kw)


def frame_index(coords: torch.Tensor) -> torch.Tensor:
    """RoPE [start, end) time (seconds) -> pixel-frame [start, end) per token."""
    return torch.round(coords[0, 0] * FPS).long()


def assert_clean(tok, mask: torch.Tensor):
    """The tokens in `mask` (bool over the whole sequence) are clean: timestep 0, no loss, input = clean latents."""
    assert torch.equal(tok.cond[0].bool(), mask)
    assert torch.all(tok.timesteps[0][mask] == 0) and torch.all(tok.timesteps[0][~mask] > 0)
    assert torch.all(tok.loss_mask[0][mask] == 0) and torch.all(tok.loss_mask[0][~mask] == 1)
    assert torch.equal(tok.hidden[0][mask], tok.clean[0][mask])


def per_frame(mask_fhw: torch.Tensor) -> torch.Tensor:
    return mask_fhw.flatten().bool()


# ----------------------------------------------------------------------------------------------- temporal
@pytest.mark.parametrize("k", [1, 2, 3])
def test_prefix_pins_the_first_k_latent_frames_pixel_frames_0_to_8k_minus_8(tr, k):
    vt, _ = train_tokens(tr, (Prefix(latent_frames=k),), {"latents": latents(tr)})
    expected = torch.zeros(F, H, W)
    expected[:k] = 1
    assert_clean(vt, per_frame(expected))
    frames = frame_index(vt.coords)[vt.cond[0].bool()]
    assert frames[:, 0].min() == 0 and frames[:, 1].max() == 8 * (k - 1) + 1  # pixel frames 0 .. 8(k-1)


@pytest.mark.parametrize("k", [1, 2])
def test_suffix_pins_the_last_k_latent_frames_the_last_8k_pixel_frames(tr, k):
    vt, _ = train_tokens(tr, (Suffix(latent_frames=k),), {"latents": latents(tr)})
    expected = torch.zeros(F, H, W)
    expected[F - k:] = 1
    assert_clean(vt, per_frame(expected))
    frames = frame_index(vt.coords)[vt.cond[0].bool()]
    last = 8 * (F - 1) + 1
    assert frames[:, 1].max() == last and frames[:, 0].min() == last - 8 * k


def test_prefix_and_suffix_with_audio_pin_the_same_time_window_of_audio(tr):
    cols = {"latents": latents(tr), "audio": torch.randn(1, 50, tr.config.audio_in_channels)}
    _, at = train_tokens(tr, (Prefix(latent_frames=2, audio=True),), cols, audio=True)
    assert at.cond[0].sum() == 50 * 9 // 25 and torch.all(at.cond[0, : 50 * 9 // 25] == 1)  # 9 of 25 pixel frames
    assert torch.all(at.timesteps[0][at.cond[0].bool()] == 0) and torch.all(at.loss_mask[0][:18] == 0)
    _, at = train_tokens(tr, (Suffix(latent_frames=1, audio=True),), cols, audio=True)
    assert at.cond[0].sum() == 50 * 8 // 25 and torch.all(at.cond[0, -(50 * 8 // 25):] == 1)
    _, at = train_tokens(tr, (Prefix(latent_frames=2, audio=False),), cols, audio=True)
    assert at.cond.sum() == 0  # video-only prefix: all audio generated


def test_first_frame_pins_latent_frame_0_only_for_drawn_samples_and_never_a_single_frame(tr):
    ff = FirstFrame(p=0.5)
    lat = torch.cat([latents(tr), latents(tr, seed=1)])
    g = torch.Generator().manual_seed(1)
    vt, _ = assemble((ff,), tr.rope, tr.audio_rope, {"latents": lat}, torch.tensor([0.7, 0.7]), FPS,
                     flags={ff: torch.tensor([True, False])}, noise=torch.randn(2, F * H * W, C, generator=g))
    assert torch.equal(vt.cond[0], per_frame(torch.arange(F)[:, None, None].expand(F, H, W) == 0).float())
    assert vt.cond[1].sum() == 0
    one, _ = train_tokens(tr, (ff,), {"latents": latents(tr, f=1)}, flags={ff: torch.tensor([True])})
    assert one.cond.sum() == 0  # a 1-frame sample conditioned on its only frame would have nothing to learn


# ----------------------------------------------------------------------------------------------- spatial
def test_spatial_keep_pins_the_inward_snapped_rectangle_on_every_frame(tr):
    keep = SpatialKeep(rect=(40, 10, 200, 100), size=(256, 128))  # cells x 2..6 (40 -> 64, 200 -> 192), y 1..3
    vt, _ = train_tokens(tr, (keep,), {"latents": latents(tr, h=4, w=8)})
    expected = torch.zeros(F, 4, 8)
    expected[:, 1:3, 2:6] = 1
    assert_clean(vt, per_frame(expected))
    # a preview at twice the size scales the rectangle: the same cells, doubled
    assert keep.cells(8, 16) == (3, 1, 12, 6)


def test_mask_keep_pins_black_cells_on_the_causal_latent_grid(tr):
    pixels = np.zeros((9, 64, 96), bool)  # 9 pixel frames -> latent frame 0 = pixel 0, latent 1 = pixels 1..8
    pixels[8, :32, :32] = True  # WHITE (regenerate) only in the last pixel frame, top-left cell
    latent = mask_to_latent(pixels)
    assert latent.shape == (2, 2, 3) and latent[1, 0, 0] and latent.sum() == 1 and not latent[0].any()
    vt, _ = train_tokens(tr, (MaskKeep(),), {"latents": latents(tr, f=2), "mask": torch.from_numpy(latent)[None]})
    assert_clean(vt, ~per_frame(torch.from_numpy(latent)))


# ----------------------------------------------------------------------------------------------- appended
def test_keyframe_is_appended_clean_at_its_pixel_frames_rope_time(tr):
    key = latents(tr, f=1, seed=3)
    for kf, index in ((Keyframe("last"), 8 * (F - 1)), (Keyframe("middle"), 12), (Keyframe(5), 5)):
        vt, _ = train_tokens(tr, (kf,), {"latents": latents(tr), kf.name: key})
        n = F * H * W
        assert vt.hidden.shape[1] == n + H * W and vt.num_target == n
        assert torch.equal(vt.hidden[0, n:], key[0].reshape(key.shape[1], -1).T)
        frames = frame_index(vt.coords)[n:]
        assert torch.all(frames[:, 0] == index) and torch.all(frames[:, 1] == index + 1)
        assert_clean(vt, torch.arange(n + H * W) >= n)
        assert torch.all(vt.target[0, n:] == 0)


def test_reference_video_and_audio_are_appended_clean(tr):
    ref = latents(tr, f=2, h=1, w=2, seed=4)
    cols = {"latents": latents(tr), "reference": ref, "audio": torch.randn(1, 10, tr.config.audio_in_channels),
            "ref_audio": torch.randn(1, 7, tr.config.audio_in_channels)}
    vt, at = train_tokens(tr, (ReferenceVideo(spatial=2, temporal=1), ReferenceAudio()), cols, audio=True)
    n = F * H * W
    assert vt.hidden.shape[1] == n + 4 and torch.equal(vt.hidden[0, n:], ref[0].reshape(ref.shape[1], -1).T)
    assert_clean(vt, torch.arange(n + 4) >= n)
    assert at.hidden.shape[1] == 17 and torch.equal(at.cond[0], (torch.arange(17) >= 10).float())
    assert torch.all(at.timesteps[0, 10:] == 0) and torch.all(at.loss_mask[0, 10:] == 0)


def test_frozen_audio_is_clean_everywhere(tr):
    cols = {"latents": latents(tr), "audio": torch.randn(1, 10, tr.config.audio_in_channels)}
    g = torch.Generator().manual_seed(0)
    _, at = assemble((), tr.rope, tr.audio_rope, cols, torch.tensor([0.5]), FPS,
                     noise=torch.randn(1, F * H * W, C, generator=g), audio_sigma=torch.tensor([0.5]),
                     audio_noise=torch.randn(1, 10, tr.config.audio_in_channels, generator=g), audio_role="frozen")
    assert torch.all(at.cond == 1) and torch.all(at.timesteps == 0) and torch.equal(at.hidden, at.clean)


def test_condition_set_travels_as_json():
    cs = ConditionSet(audio="generated", items=(FirstFrame(p=0.1, image_field=None), ReferenceVideo(2, 1),
                                                SpatialKeep((96, 96, 672, 672), (768, 768)), Prefix(8, True),
                                                Keyframe("middle", "middle_image_url"), MaskKeep(), ReferenceAudio()))
    assert ConditionSet.from_json(cs.to_json()) == cs
    assert cs.metadata()["reference_downscale_factor"] == "2"


# ----------------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("conditions,cols,kept", [
    ((Prefix(latent_frames=2),), {}, lambda: torch.arange(F)[:, None, None].expand(F, H, W) < 2),
    ((Suffix(latent_frames=1),), {}, lambda: torch.arange(F)[:, None, None].expand(F, H, W) == F - 1),
    ((SpatialKeep((32, 0, 96, 32), (96, 64)),), {}, lambda: _cells(slice(0, 1), slice(1, 3))),
    ((FirstFrame(p=0.3),), {"first_frame": "given"}, lambda: torch.arange(F)[:, None, None].expand(F, H, W) == 0),
    ((Keyframe("last"), Prefix(1)), {"keyframe_last": "key"}, lambda: torch.arange(F)[:, None, None].expand(F, H, W) == 0),
])
def test_the_sampler_keeps_pinned_tokens_bit_exact_to_the_end(tr, text, conditions, cols, kept):
    from ltxtrain.sample.sampler import sample_latents

    source = latents(tr, seed=7)
    given = {"latents": source}
    if "first_frame" in cols:
        given["first_frame"] = latents(tr, f=1, seed=8)
        source = source.clone()
        source[:, :, :1] = given["first_frame"]
    if "keyframe_last" in cols:
        given["keyframe_last"] = latents(tr, f=1, seed=9)
    out, _ = sample_latents(tr, text, (F, H, W), FPS, steps=4, conditions=conditions, cols=given,
                            generator=torch.Generator().manual_seed(0))
    keep = kept()
    assert torch.equal(out[0][:, keep], source[0][:, keep])  # bit-exact
    assert (out[0][:, ~keep] - source[0][:, ~keep]).abs().min() > 0


def _cells(ys: slice, xs: slice) -> torch.Tensor:
    m = torch.zeros(F, H, W, dtype=torch.bool)
    m[:, ys, xs] = True
    return m
