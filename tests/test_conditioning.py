"""Token assembly, timesteps and the forward call on the tiny transformer."""

from __future__ import annotations

import torch

from ltxtrain.conditioning.timesteps import inference_sigmas, sample_sigmas, shift_mu
from ltxtrain.conditioning.tokens import (
    TextContext,
    first_frame_mask,
    masked_mse,
    pack_video,
    predict,
    unpack_video,
    video_tokens,
)


def _transformer(tiny_model):
    from ltxtrain.models.bundle import load_components

    return load_components(tiny_model, ["transformer"])["transformer"].eval()


def test_shift_mu_matches_reference_points():
    assert abs(shift_mu(1024) - 0.95) < 1e-9 and abs(shift_mu(4096) - 2.05) < 1e-9
    assert abs(shift_mu(6120) - 2.775) < 1e-3


def test_sigma_sampler_shifts_with_token_count():
    g = torch.Generator().manual_seed(0)
    small = sample_sigmas(20000, 93, generator=g)
    large = sample_sigmas(20000, 6120, generator=g)
    assert small.min() >= 0 and large.max() <= 1
    # medians from ltx-trainer-notes §1.2 (0.61 at N=93, 0.86 at N=6120)
    assert abs(small.median().item() - 0.61) < 0.03 and abs(large.median().item() - 0.86) < 0.03


def test_inference_schedule_uses_same_shift():
    s = inference_sigmas(30, 4032)
    assert s.shape == (31,) and s[0] == 1.0 and s[-1] == 0.0 and abs(s[-2].item() - 0.1) < 1e-6
    assert torch.all(s[1:] < s[:-1])
    # more tokens -> the schedule spends longer at high noise
    assert inference_sigmas(30, 6000)[15] > inference_sigmas(30, 1000)[15]


def test_pack_roundtrip_and_order():
    x = torch.arange(2 * 3 * 2 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 2, 4)
    tokens = pack_video(x)
    assert tokens.shape == (2, 16, 3)
    # token index = f*H*W + h*W + w
    assert torch.equal(tokens[1, 1 * 8 + 1 * 4 + 3], x[1, :, 1, 1, 3])
    assert torch.equal(unpack_video(tokens, 2, 2, 4), x)


def test_first_frame_tokens_are_clean_with_zero_timestep(tiny_model):
    tr = _transformer(tiny_model)
    b, c, f, h, w = 2, tr.config.in_channels, 3, 2, 4
    clean = torch.randn(b, c, f, h, w)
    noise = torch.randn(b, f * h * w, c)
    sigma = torch.tensor([0.7, 0.4])
    cond = first_frame_mask(torch.tensor([True, False]), (f, h, w))
    tok = video_tokens(tr.rope, clean, sigma, fps=25.0, cond=cond, noise=noise)
    hw = h * w
    assert tok.hidden.shape == (b, f * hw, c) and tok.coords.shape == (b, 3, f * hw, 2)
    # sample 0: first latent frame pinned to the clean latents, timestep 0, excluded from the loss
    assert torch.equal(tok.hidden[0, :hw], tok.clean[0, :hw])
    assert torch.all(tok.timesteps[0, :hw] == 0) and torch.all(tok.loss_mask[0, :hw] == 0)
    assert torch.allclose(tok.timesteps[0, hw:], torch.full((f * hw - hw,), 700.0))
    # sample 1: no conditioning, x_t = (1-s) x0 + s n everywhere
    expect = 0.6 * tok.clean[1] + 0.4 * noise[1]
    assert torch.allclose(tok.hidden[1], expect, atol=1e-6) and torch.all(tok.loss_mask[1] == 1)
    assert torch.allclose(tok.target, noise - tok.clean)
    # RoPE time axis in seconds with the causal first frame: frame 0 spans [0, 1) px-frames, frame k [8k-7, 8k+1)
    t_start = tok.coords[0, 0, :, 0].reshape(f, hw)[:, 0]
    assert torch.allclose(t_start, torch.tensor([0.0, 1 / 25, 9 / 25]), atol=1e-5)
    # spatial coordinates in pixels of the 32x32 VAE grid
    assert tok.coords[0, 2, :, 0].max().item() == (w - 1) * 32


def test_sampling_path_pins_the_same_tokens(tiny_model):
    tr = _transformer(tiny_model)
    clean = torch.randn(1, tr.config.in_channels, 2, 2, 2)
    state = torch.randn(1, 8, tr.config.in_channels)
    cond = first_frame_mask(torch.tensor([True]), (2, 2, 2))
    tok = video_tokens(tr.rope, clean, torch.tensor([0.5]), fps=24.0, cond=cond, noisy=state)
    assert tok.target is None
    assert torch.equal(tok.hidden[0, :4], tok.clean[0, :4]) and torch.equal(tok.hidden[0, 4:], state[0, 4:])


def test_masked_mse_ignores_conditioning_tokens():
    pred, target = torch.zeros(2, 4, 3), torch.ones(2, 4, 3)
    pred[0, :2] = 100.0  # wrong only where masked out
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.float32)
    assert torch.allclose(masked_mse(pred, target, mask), torch.tensor([1.0, 1.0]))
    assert masked_mse(pred, target, torch.zeros(2, 4)).eq(0).all()


def test_video_only_forward_reacts_to_first_frame(tiny_model):
    from ltxtrain.models.bundle import load_components
    from ltxtrain.encode.encoders import encode_text

    parts = load_components(tiny_model, ["tokenizer", "text_encoder", "connectors"])
    v, a, m = encode_text(parts["tokenizer"], parts["text_encoder"], parts["connectors"], ["a red cat"], 16)
    text = TextContext(v, a, m)
    tr = _transformer(tiny_model)
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(1, tr.config.in_channels, 3, 2, 2, generator=g)
    noise = torch.randn(1, 12, tr.config.in_channels, generator=g)
    with torch.no_grad():
        plain = predict(tr, video_tokens(tr.rope, clean, torch.tensor([0.6]), 24.0, noise=noise), text)
        again = predict(tr, video_tokens(tr.rope, clean, torch.tensor([0.6]), 24.0, noise=noise), text)
        cond = first_frame_mask(torch.tensor([True]), (3, 2, 2))
        ff = predict(tr, video_tokens(tr.rope, clean, torch.tensor([0.6]), 24.0, cond=cond, noise=noise), text)
    assert plain.shape == (1, 12, tr.config.out_channels)
    assert torch.equal(plain, again)
    assert not torch.allclose(plain, ff)


def test_isolated_modalities_keep_audio_out_of_video(tiny_model):
    """`predict` relies on this: with isolate_modalities the audio stream cannot change the video output."""
    tr = _transformer(tiny_model)
    cfg = tr.config
    g = torch.Generator().manual_seed(1)
    b, s, t = 1, 8, 6
    ctx_v = torch.randn(b, t, cfg.cross_attention_dim if cfg.cross_attn_mod else cfg.caption_channels, generator=g)
    ctx_a = torch.randn(b, t, cfg.audio_cross_attention_dim if cfg.cross_attn_mod else cfg.caption_channels, generator=g)
    hidden = torch.randn(b, s, cfg.in_channels, generator=g)
    outs = []
    for seed in (1, 2):
        audio = torch.randn(b, 5, cfg.audio_in_channels, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            v, _ = tr(hidden_states=hidden, audio_hidden_states=audio, encoder_hidden_states=ctx_v,
                      audio_encoder_hidden_states=ctx_a, timestep=torch.full((b,), 500.0),
                      sigma=torch.full((b,), 500.0), num_frames=2, height=2, width=2, audio_num_frames=5,
                      isolate_modalities=True, use_cross_timestep=bool(cfg.cross_attn_mod), return_dict=False)
        outs.append(v)
    assert torch.equal(outs[0], outs[1])
