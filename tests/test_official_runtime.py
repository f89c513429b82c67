"""Parity with Lightricks' own runtime: ltx-core (installed by scripts/setup.sh, --no-deps) is the reference.

Tiny official models are built with ltx-core's configurators from a small config dict and saved as official single
files (``model.diffusion_model.*`` keys, the ``config`` metadata ltx-core builds from). We check that they load
through the CLI path (``resolve_model``), that our forward (``conditioning.tokens.predict``) equals ltx-core's
``LTXModel`` forward at fp32 for both families, video-only and audio+video, and that a LoRA we export fuses through
ltx-core's loader into the model our PEFT-attached transformer computes.
"""

import json
import os
import sys
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "platform"))

import pytest  # noqa: E402
import torch  # noqa: E402
from ltx_core.guidance.perturbations import BatchedPerturbationConfig  # noqa: E402
from ltx_core.model.transformer import LTXModelConfigurator, Modality  # noqa: E402
from ltx_core.model.transformer import transformer_args as ltx_args  # noqa: E402
from ltx_core.text_encoders.gemma.embeddings_connector import (  # noqa: E402
    AudioEmbeddings1DConnectorConfigurator, Embeddings1DConnectorConfigurator)
from safetensors.torch import save_file  # noqa: E402

from ltxtrain.conditioning.tokens import (AudioTokens, TextContext, audio_tokens, first_frame_mask,  # noqa: E402
                                          predict, video_tokens)
from ltxtrain.models import cross_modal  # noqa: E402
from ltxtrain.models.bundle import load_components, load_model_info, resolve_model  # noqa: E402
from ltxtrain.models.single_file import MissingWeightsError, original_keys_from_diffusers  # noqa: E402
from ltxtrain.models.tiny import build_tiny_components  # noqa: E402

torch.set_num_threads(2)
FAMILIES = ("ltx-2.0", "ltx-2.3")
PREFIX = "model.diffusion_model."
TEXT_HIDDEN, TEXT_STATES = 32, 3  # the tiny Gemma: 32 wide, embeddings + 2 layers

# the keys ltx-core's configurator insists on (check_config_value), as in the published metadata
_FIXED = dict(dropout=0.0, attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
              use_linear_projection=False, only_cross_attention=False, cross_attention_norm=True,
              double_self_attention=False, upcast_attention=False, standardization_norm="rms_norm",
              norm_elementwise_affine=False, qk_norm="rms_norm", positional_embedding_type="rope",
              use_audio_video_cross_attention=True, share_ff=False, av_cross_ada_norm=True,
              use_middle_indices_grid=True)


def official_transformer_section(family: str) -> dict:
    """A tiny ``transformer`` metadata section (sizes of our tiny preset; everything else as published)."""
    t = dict(_FIXED, num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=8, num_layers=2,
             cross_attention_dim=32, norm_eps=1e-6, positional_embedding_theta=10000.0,
             positional_embedding_max_pos=[20, 2048, 2048], timestep_scale_multiplier=1000,
             audio_num_attention_heads=2, audio_attention_head_dim=8, audio_in_channels=8, audio_out_channels=8,
             audio_cross_attention_dim=16, audio_positional_embedding_max_pos=[20], rope_type="split",
             frequencies_precision="float32", caption_channels=TEXT_HIDDEN,
             connector_positional_embedding_max_pos=[32], connector_num_layers=1)
    if family == "ltx-2.3":
        # the av gate multiplier differs from the timestep one, so a mix-up of the two shows
        t.update(apply_gated_attention=True, cross_attention_adaln=True, caption_proj_before_connector=True,
                 caption_projection_first_linear=False, caption_proj_input_norm=False,
                 caption_projection_second_linear=False, connector_apply_gated_attention=True,
                 connector_num_attention_heads=2, connector_attention_head_dim=16,
                 audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=8,
                 av_ca_timestep_scale_multiplier=1000)
    else:  # LTX-2.0: captions projected inside the transformer; connectors as wide as the text encoder
        t.update(connector_num_attention_heads=2, connector_attention_head_dim=TEXT_HIDDEN // 2,
                 av_ca_timestep_scale_multiplier=1)
    return t


def official_other_sections(family: str) -> dict:
    """``vae`` / ``audio_vae`` / ``vocoder`` metadata sections (ltx-core's format) describing our tiny preset; a
    test checks with ltx-core's own configurators that they fit the tensors."""
    res = {"num_layers": 1}
    if family == "ltx-2.3":
        enc = [["res_x", res], ["compress_space_res", {"multiplier": 1}], ["res_x", res],
               ["compress_time_res", {"multiplier": 2}], ["res_x", res], ["compress_all_res", {"multiplier": 2}],
               ["res_x", res], ["compress_all_res", {"multiplier": 1}], ["res_x", res]]
        dec = [["res_x", res], ["compress_space", {"multiplier": 2}], ["res_x", res],
               ["compress_time", {"multiplier": 2}], ["res_x", res], ["compress_all", {"multiplier": 1}],
               ["res_x", res], ["compress_all", {"multiplier": 2}], ["res_x", res]]
        gen = dict(resblock="AMP1", stereo=True, activation="snakebeta", resblock_kernel_sizes=[3],
                   resblock_dilation_sizes=[[1, 3, 5]], use_bias_at_final=False)
        vocoder = {"vocoder": dict(gen, upsample_initial_channel=32, upsample_rates=[5, 4, 8],
                                   upsample_kernel_sizes=[11, 8, 16], use_tanh_at_final=False),
                   "bwe": dict(gen, upsample_initial_channel=16, upsample_rates=[6, 5, 8],
                               upsample_kernel_sizes=[12, 15, 16], input_sampling_rate=16000,
                               output_sampling_rate=48000, n_fft=128, hop_length=80, num_mels=16)}
    else:
        enc = [["res_x", res], ["compress_space_res", {"multiplier": 1}], ["res_x", res],
               ["compress_time_res", {"multiplier": 2}], ["res_x", res], ["compress_all_res", {"multiplier": 2}],
               ["res_x", res], ["compress_all_res", {"multiplier": 2}], ["res_x", res]]
        up = {"multiplier": 2, "residual": True}
        dec = [["res_x", res], ["compress_all", up], ["res_x", res], ["compress_all", up], ["res_x", res],
               ["compress_all", up], ["res_x", res]]
        vocoder = dict(resblock="1", stereo=True, upsample_initial_channel=32, upsample_rates=[6, 5, 8],
                       upsample_kernel_sizes=[12, 15, 16], resblock_kernel_sizes=[3],
                       resblock_dilation_sizes=[[1, 3, 5]], output_sampling_rate=24000, use_tanh_at_final=True,
                       use_bias_at_final=True)
    vae = dict(dims=3, in_channels=3, out_channels=3, latent_channels=8, patch_size=4, norm_layer="pixel_norm",
               latent_log_var="uniform", spatial_padding_mode="zeros", causal_decoder=False,
               timestep_conditioning=False, decoder_base_channels=4, encoder_blocks=enc, decoder_blocks=dec)
    ddconfig = dict(ch=8, out_ch=2, ch_mult=[1, 1, 1], num_res_blocks=1, attn_resolutions=[], resolution=32,
                    z_channels=2, double_z=True, norm_type="pixel", causality_axis="height", dropout=0.0,
                    mid_block_add_attention=False, in_channels=2, mel_bins=16)
    audio_vae = {"model": {"params": {"ddconfig": ddconfig, "sampling_rate": 16000}},
                 "preprocessing": {"stft": {"hop_length": 160, "causal": True}}}
    return {"vae": vae, "audio_vae": audio_vae, "vocoder": vocoder}


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Materialise meta parameters (ltx-core builds LTX-2.0 caption projections on meta) and give every parameter a
    random non-trivial value (zero-initialised gates and tables would hide routing and mapping errors)."""
    for m in module.modules():
        if any(p.is_meta for p in m.parameters(recurse=False)):
            m.to_empty(device="cpu", recurse=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if name.endswith(("norm.weight", "q_norm.weight", "k_norm.weight")) else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))


def build_official_transformer(family: str, seed: int = 0):
    cfg = {"transformer": official_transformer_section(family)}
    model = LTXModelConfigurator.from_config(cfg)
    _randomise(model, seed)
    return model.eval(), cfg


def official_state_dict(family: str, seed: int = 0) -> tuple[dict, dict, torch.nn.Module]:
    """(tensors, config metadata, ltx-core transformer) of a complete tiny official checkpoint: transformer and
    connectors built by ltx-core; text projection, VAEs and vocoder from our tiny preset in the official layout."""
    model, cfg = build_official_transformer(family, seed)
    cfg = dict(cfg, **official_other_sections(family))
    sd = {PREFIX + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for conf, head in ((Embeddings1DConnectorConfigurator, "video_embeddings_connector."),
                       (AudioEmbeddings1DConnectorConfigurator, "audio_embeddings_connector.")):
        conn = conf.from_config(cfg)
        _randomise(conn, seed + 1)
        sd.update({PREFIX + head + k: v.detach().clone().contiguous() for k, v in conn.state_dict().items()})
    comps = build_tiny_components(family, seed=seed)
    rest = original_keys_from_diffusers({n: comps[n] for n in ("connectors", "vae", "audio_vae", "vocoder")})
    sd.update({k: v for k, v in rest.items() if k.startswith("text_embedding_projection.")
               or not k.startswith(PREFIX)})
    return sd, cfg, model


def write_official_file(path: str, family: str, seed: int = 0, dtype=torch.float32, sections=None):
    sd, cfg, model = official_state_dict(family, seed)
    cfg = dict(cfg, **(sections or {}))
    save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}, path,
              metadata={"config": json.dumps(cfg)})
    return model


# ---------------------------------------------------------------------------------------------------- forward
def _inputs(family: str, transformer, with_audio: bool, seed: int = 1):
    """Tokens as training builds them: 2 samples, 3x2x3 latent video whose first frame is clean in sample 0,
    5 audio tokens, left-padded text, independent video and audio sigmas."""
    g = torch.Generator().manual_seed(seed)
    b, grid = 2, (3, 2, 3)
    clean = torch.randn(b, 8, *grid, generator=g)
    sigma = torch.tensor([0.7373, 0.2113])
    cond = first_frame_mask(torch.tensor([True, False]), grid)
    vt = video_tokens(transformer.rope, clean, sigma, fps=24.0, cond=cond,
                      noise=torch.randn(b, grid[0] * grid[1] * grid[2], 8, generator=g))
    at = None
    if with_audio:
        at = audio_tokens(transformer.audio_rope, torch.randn(b, 5, 8, generator=g), torch.tensor([0.1234, 0.9021]),
                          noise=torch.randn(b, 5, 8, generator=g))
    dv = transformer.config.caption_channels if transformer.config.use_prompt_embeddings else 32
    da = transformer.config.caption_channels if transformer.config.use_prompt_embeddings else 16
    mask = torch.ones(b, 6, dtype=torch.long)
    mask[1, :2] = 0  # left padding
    text = TextContext(torch.randn(b, 6, dv, generator=g), torch.randn(b, 6, da, generator=g), mask)
    return vt, at, text


def ltx_core_positions(vt, at: AudioTokens | None):
    """RoPE positions as ltx-core's pipelines make them (its latent tools), for the token grids of ``vt`` / ``at``."""
    from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
    from ltx_core.tools import AudioLatentTools, VideoLatentTools
    from ltx_core.types import AudioLatentShape, VideoLatentShape

    b, c = vt.hidden.shape[0], vt.hidden.shape[-1]
    video = VideoLatentTools(VideoLatentPatchifier(1), VideoLatentShape(b, c, *vt.grid), vt.fps)
    audio = None
    if at is not None:  # tokens of 2 latent channels x 4 mel bins
        audio = AudioLatentTools(AudioPatchifier(1), AudioLatentShape(b, 2, at.hidden.shape[1], 4))
        audio = audio.create_initial_state("cpu", torch.float32).positions
    return video.create_initial_state("cpu", torch.float32).positions, audio


def ltx_core_forward(model, vt, at: AudioTokens | None, text: TextContext):
    """ltx-core's forward on the same tokens, with ltx-core's own RoPE positions: Modality timesteps and sigma are
    in [0, 1] (ltx-core scales them), the text mask is the 0/1 keep mask."""
    video_pos, audio_pos = ltx_core_positions(vt, at)
    video = Modality(latent=vt.hidden, sigma=vt.sigma, timesteps=vt.sigma_tok, positions=video_pos,
                     context=text.video, context_mask=text.mask)
    audio = None
    if at is not None:
        audio = Modality(latent=at.hidden, sigma=at.sigma, timesteps=at.sigma_tok, positions=audio_pos,
                         context=text.audio, context_mask=text.mask)
    with torch.no_grad():
        vx, ax = model(video, audio, BatchedPerturbationConfig.empty(vt.hidden.shape[0]))
    return vx, ax


def _official_routing(self, modality, cross_modality=None):
    """ltx-core's preprocessor with the rule of Lightricks' current code (LTX-2 after 203d484): cross-attention
    scale/shift from the modality's own per-token timesteps, gate from the other modality's sigma."""
    args = self.simple_preprocessor.prepare(modality)
    if cross_modality is None:
        return args
    from dataclasses import replace

    b = args.x.shape[0]
    tsm = self.simple_preprocessor.timestep_scale_multiplier
    dtype = modality.latent.dtype
    ss, _ = self.cross_scale_shift_adaln((modality.timesteps * tsm).flatten(), hidden_dtype=dtype)
    gate, _ = self.cross_gate_adaln((cross_modality.sigma * self.av_ca_timestep_scale_multiplier).flatten(),
                                    hidden_dtype=dtype)
    cross_pe = self.simple_preprocessor._prepare_positional_embeddings(
        positions=modality.positions[:, 0:1, :], inner_dim=self.audio_cross_attention_dim,
        max_pos=[self.cross_pe_max_pos], use_middle_indices_grid=True,
        num_attention_heads=self.simple_preprocessor.num_attention_heads, x_dtype=dtype)
    return replace(args, cross_positional_embeddings=cross_pe,
                   cross_scale_shift_timestep=ss.view(b, -1, ss.shape[-1]),
                   cross_gate_timestep=gate.view(b, -1, gate.shape[-1]))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Per family: the official file, its ltx-core transformer, and our model folder resolved from it (fp32)."""
    root = tmp_path_factory.mktemp("official")
    out = {}
    for family in FAMILIES:
        path = str(root / f"{family}-tiny-official.safetensors")
        model = write_official_file(path, family)
        out[family] = SimpleNamespace(path=path, model=model, dir=resolve_model(path, str(root / "cache")))
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("with_audio", [False, True], ids=["video", "audio+video"])
def test_forward_matches_ltx_core(converted, family, with_audio, monkeypatch):
    monkeypatch.setattr(ltx_args.MultiModalTransformerArgsPreprocessor, "prepare", _official_routing)
    ref = converted[family].model
    ours = load_components(converted[family].dir, ["transformer"])["transformer"]
    assert cross_modal.routing_of(ours) == cross_modal.FAMILY_ROUTING[family] == "official"
    vt, at, text = _inputs(family, ours, with_audio)
    video_pos, audio_pos = ltx_core_positions(vt, at)
    assert torch.equal(vt.coords, video_pos) and (at is None or torch.equal(at.coords, audio_pos))
    with torch.no_grad():
        got = predict(ours, vt, text, at)
    vx, ax = ltx_core_forward(ref, vt, at, text)
    if with_audio:
        assert rel(got[0], vx) <= 1e-4 and rel(got[1], ax) <= 1e-4, (rel(got[0], vx), rel(got[1], ax))
        # the routing is visible here: ltx-core 1.0.0's own rule (both from the other sigma) gives another result
        monkeypatch.undo()
        vx1, ax1 = ltx_core_forward(ref, vt, at, text)
        assert rel(got[0], vx1) > 1e-3 and rel(got[1], ax1) > 1e-3
    else:
        # ltx-core's video-only pass (audio=None) skips the cross-attention, as ours isolates the modalities
        assert rel(got, vx) <= 1e-4, rel(got, vx)


@pytest.mark.parametrize("family", FAMILIES)
def test_other_sections_fit_the_tensors_for_ltx_core(family, monkeypatch):
    """The vae / audio_vae sections of the tiny files are truthful: ltx-core's own configurators build models from
    them into which the tensors load exactly (ltx-core's vocoder is fixed at 128 mel channels, so only its key
    mapping is checked, by our converter)."""
    import types

    # ltx-core's audio package imports torchaudio for its waveform preprocessing, which building the VAE never
    # calls; torchaudio would pin another torch, so it is not installed
    monkeypatch.setitem(sys.modules, "torchaudio", sys.modules.get("torchaudio") or types.ModuleType("torchaudio"))
    from ltx_core.model.audio_vae.model_configurator import AudioDecoderConfigurator, AudioEncoderConfigurator
    from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator, VideoEncoderConfigurator

    sd, cfg, _ = official_state_dict(family)
    for conf, prefix in ((VideoEncoderConfigurator, "vae.encoder."), (VideoDecoderConfigurator, "vae.decoder."),
                         (AudioEncoderConfigurator, "audio_vae.encoder."),
                         (AudioDecoderConfigurator, "audio_vae.decoder.")):
        model = conf.from_config(cfg)
        stats = prefix.split(".")[0] + ".per_channel_statistics."
        part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        part.update({"per_channel_statistics." + k[len(stats):]: v for k, v in sd.items() if k.startswith(stats)})
        own = model.state_dict()
        part = {k: v for k, v in part.items() if k in own or not k.startswith("per_channel_statistics.")}
        assert set(part) == set(own), (conf.__name__, sorted(set(part) ^ set(own))[:6])
        bad = [k for k in own if tuple(own[k].shape) != tuple(part[k].shape)]
        assert not bad, (conf.__name__, bad[:5])


@pytest.mark.parametrize("family", FAMILIES)
def test_official_file_loads_through_the_cli_path(converted, family):
    """``ltxtrain train --model file.safetensors`` resolves the file with resolve_model: every component is built at
    the file's own sizes (from its metadata) and holds exactly the file's tensors."""
    c = converted[family]
    assert load_model_info(c.dir).family == family
    comps = load_components(c.dir, ["transformer", "connectors", "vae", "audio_vae", "vocoder"])
    tr = comps["transformer"]
    assert (tr.config.num_layers, tr.config.num_attention_heads, tr.config.attention_head_dim) == (2, 2, 16)
    # the metadata sections describe the tiny preset, and the configs mapped from them are the preset's
    preset = build_tiny_components(family)
    plain = lambda m: {k: json.loads(json.dumps(v)) for k, v in m.config.items() if not k.startswith("_")}  # noqa
    for name in ("vae", "audio_vae", "vocoder"):
        got, want = plain(comps[name]), plain(preset[name])
        if name == "vocoder" and family == "ltx-2.3":  # ltx-core clamps the first stage (use_tanh_at_final off)
            assert (got.pop("final_act_fn"), want.pop("final_act_fn")) == ("clamp", None)
        assert got == want, name
    ours = original_keys_from_diffusers(comps)
    from safetensors import safe_open

    with safe_open(c.path, "pt") as f:
        theirs = {k: f.get_tensor(k) for k in f.keys()}
    dropped = {k for k in theirs if k.startswith(("vae.per_channel_statistics.channel",
                                                  "vae.per_channel_statistics.mean-of-stds"))}
    missing = sorted(set(theirs) - set(ours) - dropped)
    assert not missing, missing[:5]
    bad = [k for k in theirs if k in ours and not torch.equal(ours[k], theirs[k])]
    assert not bad, bad[:5]


def test_packaged_config_is_only_a_fallback_and_named(tmp_path):
    """Without metadata the packaged (full-size) configs are used, and the error says so; with metadata the same
    tensors load."""
    sd, cfg, _ = official_state_dict("ltx-2.3")
    path = str(tmp_path / "no-metadata.safetensors")
    save_file(sd, path)
    with pytest.raises(MissingWeightsError, match=r"packaged fallback .*ltx-2\.3/transformer"):
        resolve_model(path, str(tmp_path / "cache"))
    broken = dict(sd)
    broken.pop(PREFIX + "transformer_blocks.1.attn2.to_k.weight")
    path = str(tmp_path / "metadata-missing-tensor.safetensors")
    save_file(broken, path, metadata={"config": json.dumps(cfg)})
    with pytest.raises(MissingWeightsError) as err:
        resolve_model(path, str(tmp_path / "cache"))
    assert "lacks 1 tensor" in str(err.value) and "transformer_blocks.1.attn2.to_k.weight" in str(err.value)
    assert "config metadata (section 'transformer')" in str(err.value)


@pytest.fixture(scope="module")
def bf16_bases(tmp_path_factory):
    """Per family: a bf16 official file (ltx-core fuses LoRAs into bf16 bases only) and our folder resolved from it."""
    root = tmp_path_factory.mktemp("official-bf16")
    out = {}
    for family in FAMILIES:
        path = str(root / f"{family}-bf16.safetensors")
        write_official_file(path, family, dtype=torch.bfloat16)
        out[family] = (path, resolve_model(path, str(root / "cache")))
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("lora_dtype", [torch.float32, torch.bfloat16], ids=["fp32-file", "bf16-file"])
def test_exported_lora_fuses_in_ltx_core_like_peft(tmp_path, bf16_bases, family, lora_dtype, monkeypatch):
    """A trained LoRA (random, non-zero, alpha != rank) exported by export/lora_file.py and fused by ltx-core's
    loader the way ltx-pipelines passes LoRAs gives the output of our PEFT-attached transformer."""
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, SingleGPUModelBuilder
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP

    from ltxtrain.export.lora_file import save_lora
    from ltxtrain.models.lora import (ATTENTION_TARGETS, AUDIO_TARGETS, VIDEO_TARGETS, attach_lora,
                                      lora_parameters, lora_state_dict)

    monkeypatch.setattr(ltx_args.MultiModalTransformerArgsPreprocessor, "prepare", _official_routing)
    base_path, base_dir = bf16_bases[family]
    ours = load_components(base_dir, ["transformer"])["transformer"]
    vt, at, text = _inputs(family, ours, with_audio=True)
    with torch.no_grad():
        base_v, base_a = predict(ours, vt, text, at)
    rank, alpha = 4, 8.0
    attach_lora(ours, rank, sorted(set(ATTENTION_TARGETS + VIDEO_TARGETS + AUDIO_TARGETS)), alpha=alpha)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in lora_parameters(ours):
            # a file rounds the weights to its dtype; start from representable values so both sides use the same
            p.copy_((0.05 * torch.randn(p.shape, generator=g)).to(lora_dtype).float())
    lora_path = str(tmp_path / "lora.safetensors")
    save_lora(lora_path, lora_state_dict(ours), rank, alpha, dtype=lora_dtype)
    with torch.no_grad():
        got_v, got_a = predict(ours, vt, text, at)

    fused = (SingleGPUModelBuilder(LTXModelConfigurator, base_path, model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP)
             .lora(lora_path, 1.0, LTXV_LORA_COMFY_RENAMING_MAP)
             .build(device=torch.device("cpu"), dtype=torch.float32).float().eval())
    vx, ax = ltx_core_forward(fused, vt, at, text)
    effect = min(rel(got_v, base_v), rel(got_a, base_a))
    assert effect > 1e-2, effect  # the LoRA changes the output markedly
    if lora_dtype == torch.float32:
        assert rel(got_v, vx) <= 1e-4 and rel(got_a, ax) <= 1e-4, (rel(got_v, vx), rel(got_a, ax))
    else:  # ltx-core multiplies B @ A in the file's dtype: bf16 rounding of the LoRA's product, nothing more
        err_v = ((got_v - vx).norm() / (got_v - base_v).norm()).item()
        err_a = ((got_a - ax).norm() / (got_a - base_a).norm()).item()
        assert err_v <= 1e-2 and err_a <= 1e-2, (err_v, err_a)


def _spy_inputs(module: torch.nn.Module, store: list):
    return module.register_forward_pre_hook(lambda m, args, kwargs: store.append(
        (args[0] if args else kwargs["timestep"]).detach().clone()), with_kwargs=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_cross_modal_adaln_inputs_are_the_official_ones(family):
    """What each AdaLN of the audio<->video cross-attention is fed, computed by hand: scale/shift tables get the
    modality's own per-token timesteps, the gates the other modality's sigma x av_ca multiplier."""
    tr = build_tiny_components(family)["transformer"]
    vt, at, text = _inputs(family, tr, with_audio=True)
    seen = {n: [] for n in ("av_cross_attn_video_scale_shift", "av_cross_attn_video_a2v_gate",
                            "av_cross_attn_audio_scale_shift", "av_cross_attn_audio_v2a_gate")}
    hooks = [_spy_inputs(getattr(tr, n), seen[n]) for n in seen]
    with torch.no_grad():
        predict(tr, vt, text, at)
    for h in hooks:
        h.remove()
    factor = tr.config.cross_attn_timestep_scale_multiplier / tr.config.timestep_scale_multiplier
    torch.testing.assert_close(seen["av_cross_attn_video_scale_shift"][0], vt.timesteps.flatten())
    torch.testing.assert_close(seen["av_cross_attn_audio_scale_shift"][0], at.timesteps.flatten())
    torch.testing.assert_close(seen["av_cross_attn_video_a2v_gate"][0], at.sigma * 1000 * factor)
    torch.testing.assert_close(seen["av_cross_attn_audio_v2a_gate"][0], vt.sigma * 1000 * factor)
    # the clean first frame of sample 0 is at timestep 0 in its scale/shift, not at the sample's sigma
    assert seen["av_cross_attn_video_scale_shift"][0][0] == 0


def test_timesteps_and_sigmas_reach_a_bf16_transformer_in_fp32():
    """737.3 stays 737.3 (bf16 would make it 736); a bf16 model runs with them on CPU, also under autocast."""
    tr = build_tiny_components("ltx-2.3")["transformer"].to(torch.bfloat16)
    vt, at, text = _inputs("ltx-2.3", tr, with_audio=True)
    seen = {n: [] for n in ("time_embed", "audio_time_embed", "prompt_adaln", "audio_prompt_adaln",
                            "av_cross_attn_video_a2v_gate")}
    hooks = [_spy_inputs(getattr(tr, n), seen[n]) for n in seen]
    with torch.no_grad():
        v, a = predict(tr, vt, text, at)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v2, a2 = predict(tr, vt, text, at)
    for h in hooks:
        h.remove()
    assert all(x.dtype == torch.float32 for xs in seen.values() for x in xs), {k: [x.dtype for x in xs]
                                                                                for k, xs in seen.items()}
    assert seen["prompt_adaln"][0][0].item() == pytest.approx(737.3, abs=1e-3)
    assert seen["time_embed"][0].max().item() == pytest.approx(737.3, abs=1e-3)
    assert all(torch.isfinite(x).all() for x in (v, a, v2, a2))
    assert rel(v2, v) < 5e-2  # autocast computes in bf16 too: the same result up to bf16 rounding
