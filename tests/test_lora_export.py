"""peft LoRA on the tiny transformer -> LTX/ComfyUI and diffusers LoRA files -> reload through LTX2Pipeline."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "platform"))

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from ltxtrain.export.lora_file import (load_lora_into_pipeline, read_lora_metadata, save_lora,  # noqa: E402
                                       save_lora_diffusers, to_ltx_keys)
from ltxtrain.models.bundle import build_pipeline, load_components, resolve_model  # noqa: E402
from ltxtrain.models.lora import (AUDIO_TARGETS, CROSS_MODAL_TARGETS, VIDEO_TARGETS, attach_lora,  # noqa: E402
                                  load_lora_state_dict, lora_parameters, lora_state_dict)

torch.set_num_threads(2)
ALL_TARGETS = VIDEO_TARGETS + AUDIO_TARGETS + CROSS_MODAL_TARGETS
RANK, ALPHA = 4, 8.0  # alpha != rank on purpose


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("model-cache"))
    return {"ltx-2.3": resolve_model("tiny", cache), "ltx-2.0": resolve_model("tiny-2.0", cache)}


def probe(tr):
    """Deterministic forward pass of the transformer (video + audio velocity)."""
    cfg = tr.config
    g = torch.Generator().manual_seed(7)
    F, H, W, L, T = 2, 2, 3, 5, 8
    v2 = not cfg.use_prompt_embeddings
    x = torch.randn(1, F * H * W, cfg.in_channels, generator=g)
    a = torch.randn(1, L, cfg.audio_in_channels, generator=g)
    ctx = torch.randn(1, T, cfg.cross_attention_dim if v2 else cfg.caption_channels, generator=g)
    actx = torch.randn(1, T, cfg.audio_cross_attention_dim if v2 else cfg.caption_channels, generator=g)
    t = torch.tensor([600.0])
    dtype = next(tr.parameters()).dtype
    with torch.no_grad():
        v, av = tr(hidden_states=x.to(dtype), audio_hidden_states=a.to(dtype), encoder_hidden_states=ctx.to(dtype),
                   audio_encoder_hidden_states=actx.to(dtype), timestep=t, audio_timestep=t, sigma=t, audio_sigma=t,
                   encoder_attention_mask=torch.ones(1, T), audio_encoder_attention_mask=torch.ones(1, T),
                   num_frames=F, height=H, width=W, audio_num_frames=L, fps=24.0, use_cross_timestep=v2,
                   return_dict=False)
    return torch.cat([v.flatten(), av.flatten()]).float()


def trained_lora(model_dir, targets=ALL_TARGETS, rank=RANK, alpha=ALPHA, seed=0):
    tr = load_components(model_dir, ["transformer"])["transformer"]
    attach_lora(tr, rank=rank, targets=targets, alpha=alpha)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(tr):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return tr


def test_attach_lora_targets_and_freezing(tiny_dirs):
    tr = load_components(tiny_dirs["ltx-2.3"], ["transformer"])["transformer"]
    base = probe(tr)
    attach_lora(tr, rank=RANK, targets=VIDEO_TARGETS)  # alpha defaults to rank
    assert tr.peft_config["default"].lora_alpha == RANK
    wrapped = sorted({n.rsplit(".lora_A", 1)[0] for n, _ in tr.named_parameters() if ".lora_A." in n})
    assert len(wrapped) == 2 * len(VIDEO_TARGETS)  # 2 blocks
    assert all(".audio_" not in n and "_to_" not in n for n in wrapped)  # attn1 != audio_attn1, ff != audio_ff
    assert all(".lora_" in n for n, p in tr.named_parameters() if p.requires_grad)
    assert torch.allclose(probe(tr), base)  # B = 0 at init
    # a few training steps: gradients only reach LoRA weights, and the output moves
    opt = torch.optim.AdamW(lora_parameters(tr), lr=1e-2)
    for _ in range(3):
        cfg = tr.config
        out = tr(hidden_states=torch.randn(1, 4, cfg.in_channels), audio_hidden_states=torch.randn(1, 3, 8),
                 encoder_hidden_states=torch.randn(1, 8, 32), audio_encoder_hidden_states=torch.randn(1, 8, 16),
                 timestep=torch.tensor([500.0]), sigma=torch.tensor([500.0]), num_frames=1, height=2, width=2,
                 audio_num_frames=3, use_cross_timestep=True, return_dict=False)
        loss = out[0].pow(2).mean() + out[1].pow(2).mean()
        loss.backward()
        assert all(p.grad is None for n, p in tr.named_parameters() if ".lora_" not in n)
        opt.step()
        opt.zero_grad()
    assert not torch.allclose(probe(tr), base)
    sd = lora_state_dict(tr)
    assert len(sd) == 2 * len(wrapped)
    assert "transformer_blocks.0.attn1.to_q.lora_A.weight" in sd
    # resume: a fresh transformer with the same adapter reproduces the trained outputs
    tr2 = load_components(tiny_dirs["ltx-2.3"], ["transformer"])["transformer"]
    attach_lora(tr2, rank=RANK, targets=VIDEO_TARGETS)
    load_lora_state_dict(tr2, sd)
    assert torch.allclose(probe(tr2), probe(tr))
    with pytest.raises(KeyError):
        load_lora_state_dict(tr2, {k: v for k, v in sd.items() if "attn2" not in k})
    with pytest.raises(ValueError, match="match no Linear"):
        attach_lora(load_components(tiny_dirs["ltx-2.3"], ["transformer"])["transformer"], 4, ["attn9.to_q"])


@pytest.mark.parametrize("family", ["ltx-2.0", "ltx-2.3"])
def test_ltx_lora_file_round_trip(tmp_path, tiny_dirs, family):
    d = tiny_dirs[family]
    tr = trained_lora(d)
    want = probe(tr)
    peft_sd = lora_state_dict(tr)
    path = str(tmp_path / "lora.safetensors")
    save_lora(path, peft_sd, RANK, ALPHA, metadata={"reference_downscale_factor": "2", "rank": 4},
              dtype=torch.float32)

    sd = load_file(path)
    assert len(sd) == len(peft_sd) == 2 * 2 * len(ALL_TARGETS)
    for k in sd:
        assert k.startswith("diffusion_model.transformer_blocks.") and k.endswith((".lora_A.weight", ".lora_B.weight"))
    assert not any(".alpha" in k for k in sd)
    for k, v in peft_sd.items():  # alpha / rank baked into lora_B only
        scale = ALPHA / RANK if ".lora_B." in k else 1.0
        assert torch.allclose(sd["diffusion_model." + k], v * scale)
    assert read_lora_metadata(path) == {"reference_downscale_factor": "2", "rank": "4"}  # non-str JSON-encoded

    pipe = build_pipeline(d)
    base = probe(pipe.transformer)
    load_lora_into_pipeline(pipe, path)
    got = probe(pipe.transformer)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()
    assert (got - base).abs().max() > 1e-2
    pipe.set_adapters("ltxtrain", 0.0)
    assert torch.allclose(probe(pipe.transformer), base, atol=1e-6)


def test_ltx_lora_bf16_and_diffusers_format(tmp_path, tiny_dirs):
    d = tiny_dirs["ltx-2.3"]
    tr = trained_lora(d, seed=1)
    want = probe(tr)
    peft_sd = lora_state_dict(tr)

    # default user-facing file: bf16
    path = str(tmp_path / "lora_bf16.safetensors")
    save_lora(path, peft_sd, RANK, ALPHA)
    assert {v.dtype for v in load_file(path).values()} == {torch.bfloat16}
    pipe = build_pipeline(d)
    load_lora_into_pipeline(pipe, path, adapter_name="bf16")
    assert torch.allclose(probe(pipe.transformer), want, atol=0.05, rtol=0.05)

    # diffusers layout keeps alpha in the metadata
    ddir = str(tmp_path / "diffusers_lora")
    save_lora_diffusers(ddir, peft_sd, RANK, ALPHA, ALL_TARGETS)
    dsd = load_file(os.path.join(ddir, "pytorch_lora_weights.safetensors"))
    assert all(k.startswith("transformer.transformer_blocks.") for k in dsd)
    assert torch.equal(dsd["transformer.transformer_blocks.0.attn1.to_q.lora_B.weight"],
                       peft_sd["transformer_blocks.0.attn1.to_q.lora_B.weight"])
    pipe = build_pipeline(d)
    load_lora_into_pipeline(pipe, ddir)
    assert torch.allclose(probe(pipe.transformer), want, atol=1e-5, rtol=1e-4)


def test_to_ltx_keys_general_and_validation():
    a, b = torch.randn(2, 5), torch.randn(7, 2)
    peft_sd = {"transformer_blocks.3.audio_attn2.norm_q.lora_A.weight": a,
               "transformer_blocks.3.audio_attn2.norm_q.lora_B.weight": b,
               "time_embed.linear.lora_A.weight": a, "time_embed.linear.lora_B.weight": b,
               "proj_in.lora_A.weight": a, "proj_in.lora_B.weight": b,
               "prompt_adaln.linear.lora_A.weight": a, "prompt_adaln.linear.lora_B.weight": b}
    out = to_ltx_keys(peft_sd, rank=2, alpha=2)
    assert set(out) == {"diffusion_model.transformer_blocks.3.audio_attn2.q_norm.lora_A.weight",
                        "diffusion_model.transformer_blocks.3.audio_attn2.q_norm.lora_B.weight",
                        "diffusion_model.adaln_single.linear.lora_A.weight",
                        "diffusion_model.adaln_single.linear.lora_B.weight",
                        "diffusion_model.patchify_proj.lora_A.weight", "diffusion_model.patchify_proj.lora_B.weight",
                        "diffusion_model.prompt_adaln_single.linear.lora_A.weight",
                        "diffusion_model.prompt_adaln_single.linear.lora_B.weight"}
    # diffusers' own LTX-2 LoRA converter maps them back exactly
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_ltx2_lora_to_diffusers

    back = _convert_non_diffusers_ltx2_lora_to_diffusers(dict(out))
    assert set(back) == {"transformer." + k for k in peft_sd}
    assert torch.equal(out["diffusion_model.patchify_proj.lora_B.weight"], b)  # alpha == rank: untouched
    with pytest.raises(ValueError, match="rank"):
        to_ltx_keys(peft_sd, rank=3, alpha=3)
    with pytest.raises(ValueError, match="unsupported"):
        to_ltx_keys({"x.alpha": torch.tensor(1.0)}, rank=2, alpha=2)
