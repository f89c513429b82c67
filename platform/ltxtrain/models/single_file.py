"""Official single-file LTX-2 / LTX-2.3 checkpoints (e.g. ``ltx-2.3-22b-dev.safetensors``) <-> diffusers folders.

The official unified file holds

    model.diffusion_model.*                                  transformer
    model.diffusion_model.{video,audio}_embeddings_connector.*   text connectors
    text_embedding_projection.*   (top level, sometimes under model.diffusion_model.)   connector input projections
    vae.*            video VAE (with vae.per_channel_statistics.*)
    audio_vae.*      audio VAE
    vocoder.*        vocoder (LTX-2.3: vocoder.vocoder.*, vocoder.bwe_generator.*, vocoder.mel_stft.*)

and no text encoder (Gemma 3 comes separately; pass ``text_encoder=``).

Loading follows the diffusers-tiny REPORT section 7:

* every component is built from a config we hold (never a hub guess, which would be an LTX-Video v1 repo): the
  architecture the checkpoint's ``config`` metadata describes, as ltx-core builds it (``official_config``), else the
  family's packaged config; the converted tensors are then assigned to the empty model;
* transformer: diffusers' ``convert_ltx2_transformer_to_diffusers`` after renaming the LTX-2.3
  ``prompt_adaln_single`` keys, which diffusers 0.42.1 does not map (it would silently keep random weights);
* video VAE: diffusers 0.42.1's converter only knows the LTX-2.0 block layout, so the keys are mapped here with the
  general rule of diffusers' conversion script (``up_blocks.7/8`` of LTX-2.3, ``last_time_embedder``...). A test
  checks that it agrees with diffusers' converter on the 2.0 layout;
* audio VAE: ``convert_ltx2_audio_vae_to_diffusers``;
* connectors / vocoder: the rename tables of diffusers' ``scripts/convert_ltx2_to_diffusers.py``.

Before anything is materialised, the converted key set is compared with the model's: a missing tensor raises
``MissingWeightsError`` naming the original checkpoint key and the config used (nothing can silently stay random), and
keys the model does not have raise as well (``strict=False`` turns that into a warning). After loading, no parameter
may be on ``meta``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from typing import Iterable

import torch

from .official_config import ComponentConfig, component_config, read_metadata_config

logger = logging.getLogger(__name__)

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

TRANSFORMER_PREFIX = "model.diffusion_model."
VAE_PREFIX = "vae."
AUDIO_VAE_PREFIX = "audio_vae."
VOCODER_PREFIX = "vocoder."
CONNECTOR_HEADS = ("video_embeddings_connector.", "audio_embeddings_connector.", "text_embedding_projection.")

# keys the official files carry but diffusers does not model
_VAE_DROPPED = ("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds")


class MissingWeightsError(KeyError):
    """A checkpoint lacks tensors the model needs (they would otherwise stay randomly initialised)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnexpectedWeightsError(ValueError):
    """A checkpoint has tensors the configured model does not have (wrong family/config?)."""


# =====================================================================================================================
# diffusers -> original key names (used to write official-layout test checkpoints and LTX-format LoRA files)
# =====================================================================================================================
# applied in order with str.replace on the key without any prefix
_TRANSFORMER_D2O = [
    ("proj_in", "patchify_proj"),  # also audio_proj_in -> audio_patchify_proj
    ("av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single"),
    ("av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single"),
    ("av_cross_attn_audio_scale_shift", "av_ca_audio_scale_shift_adaln_single"),
    ("av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single"),
    ("video_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_video"),
    ("audio_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_audio"),
    ("norm_q", "q_norm"),
    ("norm_k", "k_norm"),
    ("prompt_adaln", "prompt_adaln_single"),  # LTX-2.3 (also audio_prompt_adaln)
]


def transformer_key_to_original(key: str, prefix: str = TRANSFORMER_PREFIX) -> str:
    """diffusers transformer key -> official key. ``prefix``: "model.diffusion_model." for full checkpoints,
    "diffusion_model." for LoRA files."""
    k = key.removeprefix("transformer.")
    if k.startswith("time_embed."):
        k = "adaln_single." + k[len("time_embed."):]
    elif k.startswith("audio_time_embed."):
        k = "audio_adaln_single." + k[len("audio_time_embed."):]
    for a, b in _TRANSFORMER_D2O:
        k = k.replace(a, b)
    return prefix + k


def video_vae_key_to_original(key: str, num_down_blocks: int) -> str:
    """Inverse of the video VAE mapping below (any number of encoder / decoder blocks)."""
    k = key.replace("latents_mean", "per_channel_statistics.mean-of-means")
    k = k.replace("latents_std", "per_channel_statistics.std-of-means")
    k = k.replace("resnets", "res_blocks")
    if k.startswith("encoder."):
        k = k.replace("encoder.mid_block.", f"encoder.down_blocks.{2 * num_down_blocks}#")
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", lambda m: f"encoder.down_blocks.{2 * int(m[1]) + 1}#", k)
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.", lambda m: f"encoder.down_blocks.{2 * int(m[1])}#", k)
    elif k.startswith("decoder."):
        k = re.sub(r"^decoder\.(time_embedder|scale_shift_table)", r"decoder.last_\1", k)
        k = k.replace("decoder.mid_block.", "decoder.up_blocks.0#")
        k = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up_blocks.{2 * int(m[1]) + 1}#", k)
        k = re.sub(r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up_blocks.{2 * int(m[1]) + 2}#", k)
    return VAE_PREFIX + k.replace("#", ".")


def audio_vae_key_to_original(key: str) -> str:
    k = key.replace("latents_mean", "per_channel_statistics.mean-of-means")
    k = k.replace("latents_std", "per_channel_statistics.std-of-means")
    return AUDIO_VAE_PREFIX + k


def vocoder_key_to_original(key: str) -> str:
    k = re.sub(r"(^|\.)upsamplers\.", r"\1ups.", key)
    k = k.replace("resnets", "resblocks").replace("conv_in", "conv_pre").replace("conv_out", "conv_post")
    k = k.replace("act_out", "act_post").replace(".downsample.", ".downsample.lowpass.")
    return VOCODER_PREFIX + k


def connectors_key_to_original(key: str) -> str:
    for d, o in (("video_text_proj_in.", "text_embedding_projection.video_aggregate_embed."),
                 ("audio_text_proj_in.", "text_embedding_projection.audio_aggregate_embed."),
                 ("text_proj_in.", "text_embedding_projection.aggregate_embed.")):
        if key.startswith(d):
            return o + key[len(d):]
    k = key.replace("video_connector.", "video_embeddings_connector.", 1)
    k = k.replace("audio_connector.", "audio_embeddings_connector.", 1)
    k = k.replace("transformer_blocks", "transformer_1d_blocks").replace("norm_q", "q_norm").replace("norm_k", "k_norm")
    return TRANSFORMER_PREFIX + k


def original_keys_from_diffusers(components: dict) -> dict[str, torch.Tensor]:
    """Write diffusers components into the ORIGINAL unified checkpoint layout (what ``ltx-2.x-*.safetensors`` files
    contain). Uses ``transformer``, ``vae``, ``audio_vae``, ``connectors`` and ``vocoder`` when present; the text
    encoder is not part of official checkpoints. Tensors are cloned and made contiguous."""
    out: dict[str, torch.Tensor] = {}

    def put(k: str, v: torch.Tensor) -> None:
        if k in out:
            raise RuntimeError(f"two tensors map to the same original key {k}")
        out[k] = v.detach().clone().contiguous()

    if components.get("transformer") is not None:
        for k, v in components["transformer"].state_dict().items():
            put(transformer_key_to_original(k), v)
    if components.get("connectors") is not None:
        for k, v in components["connectors"].state_dict().items():
            put(connectors_key_to_original(k), v)
    if components.get("vae") is not None:
        vae = components["vae"]
        n_down = len(vae.config.block_out_channels)
        for k, v in vae.state_dict().items():
            put(video_vae_key_to_original(k, n_down), v)
        c = vae.config.latent_channels
        put(VAE_PREFIX + "per_channel_statistics.channel", torch.arange(c, dtype=torch.float32))
        put(VAE_PREFIX + "per_channel_statistics.mean-of-stds", torch.ones(c))
    if components.get("audio_vae") is not None:
        for k, v in components["audio_vae"].state_dict().items():
            put(audio_vae_key_to_original(k), v)
    if components.get("vocoder") is not None:
        for k, v in components["vocoder"].state_dict().items():
            put(vocoder_key_to_original(k), v)
    return out


# =====================================================================================================================
# original -> diffusers
# =====================================================================================================================
def _transformer_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd``: keys with the model.diffusion_model. prefix (connector keys already removed)."""
    from diffusers.loaders.single_file_utils import convert_ltx2_transformer_to_diffusers

    # diffusers 0.42.1 does not map the LTX-2.3 prompt AdaLN modules (also covers audio_prompt_adaln_single)
    renamed = {k.replace("prompt_adaln_single", "prompt_adaln"): v for k, v in sd.items()}
    return convert_ltx2_transformer_to_diffusers(renamed)  # pops from `renamed`, not from `sd`


def _video_vae_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """General form of the rename table of diffusers' conversion script: encoder ``down_blocks.{2i}`` -> block i,
    ``{2i+1}`` -> block i's downsampler, the last one -> mid block; decoder ``up_blocks.0`` -> mid block,
    ``{2i+1}`` -> up block i's upsampler, ``{2i+2}`` -> up block i (LTX-2.0: 7 decoder entries, LTX-2.3: 9)."""
    enc_ids = [int(m[1]) for k in sd if (m := re.match(r"vae\.encoder\.down_blocks\.(\d+)\.", k))]
    enc_last = max(enc_ids) if enc_ids else -1
    out = {}
    for key, v in sd.items():
        k = key.removeprefix(VAE_PREFIX)
        if any(d in k for d in _VAE_DROPPED):
            continue
        k = k.replace("per_channel_statistics.mean-of-means", "latents_mean")
        k = k.replace("per_channel_statistics.std-of-means", "latents_std")
        k = k.replace("res_blocks", "resnets")
        m = re.match(r"^(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(.*)$", k)
        if m:
            part, _, idx, rest = m[1], m[2], int(m[3]), m[4]
            if part == "encoder":
                if idx == enc_last and idx % 2 == 0:
                    k = f"encoder.mid_block.{rest}"
                elif idx % 2 == 0:
                    k = f"encoder.down_blocks.{idx // 2}.{rest}"
                else:
                    k = f"encoder.down_blocks.{idx // 2}.downsamplers.0.{rest}"
            else:
                if idx == 0:
                    k = f"decoder.mid_block.{rest}"
                elif idx % 2 == 1:
                    k = f"decoder.up_blocks.{(idx - 1) // 2}.upsamplers.0.{rest}"
                else:
                    k = f"decoder.up_blocks.{(idx - 2) // 2}.{rest}"
        k = re.sub(r"^decoder\.last_(time_embedder|scale_shift_table)", r"decoder.\1", k)
        out[k] = v
    return out


def _audio_vae_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_ltx2_audio_vae_to_diffusers

    kept = {k: v for k, v in sd.items() if not any(d in k for d in _VAE_DROPPED)}
    return convert_ltx2_audio_vae_to_diffusers(kept)


_CONNECTORS_O2D = [
    ("video_embeddings_connector", "video_connector"),
    ("audio_embeddings_connector", "audio_connector"),
    ("transformer_1d_blocks", "transformer_blocks"),
    ("text_embedding_projection.video_aggregate_embed", "video_text_proj_in"),  # LTX-2.3
    ("text_embedding_projection.audio_aggregate_embed", "audio_text_proj_in"),  # LTX-2.3
    ("text_embedding_projection.aggregate_embed", "text_proj_in"),  # LTX-2.0
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
]


def _connectors_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, v in sd.items():
        k = key.removeprefix(TRANSFORMER_PREFIX)
        for a, b in _CONNECTORS_O2D:
            k = k.replace(a, b)
        out[k] = v
    return out


def _vocoder_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, v in sd.items():
        k = key.removeprefix(VOCODER_PREFIX)
        k = re.sub(r"(^|\.)ups\.", r"\1upsamplers.", k)  # not str.replace: "upsample" must stay
        k = k.replace("resblocks", "resnets").replace("conv_pre", "conv_in").replace("conv_post", "conv_out")
        k = k.replace("act_post", "act_out").replace("downsample.lowpass", "downsample")
        out[k] = v
    return out


# =====================================================================================================================
# checkpoint inspection
# =====================================================================================================================
class _Checkpoint:
    """Lazy view of a .safetensors file: tensors are only read for the component being converted."""

    def __init__(self, path: str):
        from safetensors import safe_open

        self.path = path
        self._f = safe_open(path, framework="pt", device="cpu")
        self.keys = list(self._f.keys())
        self.metadata = self._f.metadata() or {}

    def get(self, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        return {k: self._f.get_tensor(k) for k in keys}

    def shape(self, key: str) -> list[int]:
        return list(self._f.get_slice(key).get_shape())

    def close(self) -> None:
        self._f = None


def _split_keys(keys: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"transformer": [], "connectors": [], "vae": [], "audio_vae": [], "vocoder": [],
                                    "other": []}
    for k in keys:
        if k.startswith(TRANSFORMER_PREFIX):
            groups["connectors" if k[len(TRANSFORMER_PREFIX):].startswith(CONNECTOR_HEADS) else "transformer"].append(k)
        elif k.startswith("text_embedding_projection."):
            groups["connectors"].append(k)
        elif k.startswith(VAE_PREFIX):
            groups["vae"].append(k)
        elif k.startswith(AUDIO_VAE_PREFIX):
            groups["audio_vae"].append(k)
        elif k.startswith(VOCODER_PREFIX):
            groups["vocoder"].append(k)
        else:
            groups["other"].append(k)
    return groups


def detect_family(keys: Iterable[str], metadata: dict[str, str] | None = None) -> str:
    """"ltx-2.0" or "ltx-2.3", from the safetensors "config" metadata if present, else from key names."""
    keys = list(keys)
    if any("keyframes_abs_pos" in k for k in keys):
        raise ValueError("this looks like an LTX-2.5 checkpoint, which is not supported (only LTX-2.0 / LTX-2.3)")
    cfg_raw = (metadata or {}).get("config")
    if cfg_raw:
        try:
            cfg = json.loads(cfg_raw)
        except json.JSONDecodeError:
            cfg = None
        t = cfg.get("transformer") if isinstance(cfg, dict) else None
        if isinstance(t, dict) and t:
            if t.get("ff_bias") is False or t.get("use_keyframes_abs_pos_embedding"):
                raise ValueError("checkpoint metadata describes an LTX-2.5 model, which is not supported")
            v2 = ("apply_gated_attention", "cross_attention_adaln", "caption_proj_before_connector")
            return "ltx-2.3" if any(t.get(n) for n in v2) else "ltx-2.0"
    v2_markers = ("prompt_adaln_single", ".to_gate_logits.", "video_aggregate_embed")
    return "ltx-2.3" if any(any(m in k for m in v2_markers) for k in keys) else "ltx-2.0"


# =====================================================================================================================
# conversion
# =====================================================================================================================
def _expected_shapes(cls, config: dict) -> dict[str, tuple]:
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls.from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_keys(name: str, converted: dict, expected: dict[str, tuple], to_original, strict: bool,
                where: str = "") -> None:
    """``where``: which config the model was built with and where it came from, for the error messages."""
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    built = f" (model built with the {where})" if where else ""
    if missing:
        shown = [f"{to_original(k)} (diffusers: {name}.{k})" for k in missing[:20]]
        more = f" ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise MissingWeightsError(
            f"{name}: the checkpoint lacks {len(missing)} tensor(s) the model needs (they would stay randomly "
            f"initialised){built}: " + ", ".join(shown) + more)
    if unexpected:
        msg = (f"{name}: {len(unexpected)} checkpoint tensor(s) have no place in the configured model (wrong family or "
               f"config?){built}: " + ", ".join(unexpected[:20]) + (" ..." if len(unexpected) > 20 else ""))
        if strict:
            raise UnexpectedWeightsError(msg)
        logger.warning(msg)
        for k in unexpected:
            converted.pop(k)
    wrong = [f"{to_original(k)}: checkpoint {tuple(v.shape)} vs model {expected[k]}"
             for k, v in converted.items() if tuple(v.shape) != expected[k]]
    if wrong:
        raise ValueError(f"{name}: {len(wrong)} tensor shape(s) do not match the config (wrong config?){built}: "
                         + "; ".join(wrong[:10]))


def _assert_materialised(name: str, model: torch.nn.Module) -> None:
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]
    if meta:
        raise RuntimeError(f"{name}: parameters left on the meta device (never loaded): {meta[:10]}")


def _load_config(config_dir: str, sub: str) -> dict:
    path = os.path.join(config_dir, sub, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config for component {sub!r}: {path}")
    with open(path) as f:
        return json.load(f)


def _class_for(config: dict):
    import diffusers
    from diffusers.pipelines import ltx2

    name = config.get("_class_name")
    cls = getattr(diffusers, name, None) or getattr(ltx2, name, None)
    if cls is None:
        raise ValueError(f"unknown component class {name!r}")
    return cls


def _dominant_dtype(sd: dict[str, torch.Tensor]) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for v in sd.values():
        if v.is_floating_point():
            counts[v.dtype] = counts.get(v.dtype, 0) + v.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def _convert_component(name: str, ckpt: _Checkpoint, keys: list[str], cc: ComponentConfig, strict: bool,
                       dtype: torch.dtype | None = None) -> torch.nn.Module:
    config = cc.config
    cls = _class_for(config)
    if not keys:
        raise MissingWeightsError(f"{name}: the checkpoint has no tensors for this component")
    raw = ckpt.get(keys)
    if name == "transformer":
        converted, to_orig = _transformer_to_diffusers(raw), transformer_key_to_original
    elif name == "vae":
        converted = _video_vae_to_diffusers(raw)
        n_down = len(config["block_out_channels"])
        to_orig = lambda k: video_vae_key_to_original(k, n_down)  # noqa: E731
    elif name == "audio_vae":
        converted, to_orig = _audio_vae_to_diffusers(raw), audio_vae_key_to_original
    elif name == "connectors":
        converted, to_orig = _connectors_to_diffusers(raw), connectors_key_to_original
    elif name == "vocoder":
        converted, to_orig = _vocoder_to_diffusers(raw), vocoder_key_to_original
    else:
        raise ValueError(name)
    del raw
    _check_keys(name, converted, _expected_shapes(cls, config), to_orig, strict, cc.describe(name))

    # keys and shapes now match the model exactly: build it empty from the config and assign the tensors, keeping
    # the checkpoint's precision unless asked otherwise
    from accelerate import init_empty_weights

    dtype = dtype or _dominant_dtype(converted)
    with init_empty_weights():
        model = cls.from_config(config)
    model.load_state_dict(converted, strict=True, assign=True)
    if any(p.is_floating_point() and p.dtype != dtype for p in model.parameters()):
        model.to(dtype)
    model.eval()
    _assert_materialised(name, model)
    return model


def _projection_in_features(ckpt: _Checkpoint, keys: list[str]) -> int | None:
    """Input width of the connectors' text projection (= text encoder width x stacked hidden states)."""
    for k in keys:
        if k.endswith("aggregate_embed.weight"):
            return ckpt.shape(k)[1]
    return None


def component_configs(ckpt: _Checkpoint, family: str, config_dir: str | None,
                      groups: dict[str, list[str]]) -> dict[str, ComponentConfig]:
    """Each component's diffusers config: a caller's ``config_dir`` first, then the checkpoint's ``config``
    metadata (what ltx-core builds from), then the family's packaged configs."""
    meta = read_metadata_config(ckpt.metadata)
    packaged_dir = os.path.join(CONFIGS_DIR, family)
    out = {}
    for name in ("transformer", "connectors", "vae", "audio_vae", "vocoder"):
        if config_dir:
            out[name] = ComponentConfig(_load_config(config_dir, name), f"the config folder {config_dir}")
            continue
        proj = _projection_in_features(ckpt, groups["connectors"]) if name == "connectors" else None
        out[name] = component_config(name, meta, _load_config(packaged_dir, name), f"{packaged_dir}/{name}", proj)
    # the decoder's timestep conditioning is visible in the keys (diffusers' conversion script does the same)
    tc = any(k.startswith(("vae.decoder.last_time_embedder.", "vae.decoder.timestep_scale_multiplier"))
             for k in groups["vae"])
    vae = out["vae"]
    if tc != bool(vae.config.get("timestep_conditioning", False)):
        vae.config = dict(vae.config, timestep_conditioning=tc)
    return out


def _link_text_encoder(text_encoder: str, out_dir: str) -> None:
    """Make out_dir/text_encoder and out_dir/tokenizer point at a local Gemma 3 model (symlinks, no copy).

    ``text_encoder`` is either a transformers model folder that also holds the tokenizer files (a hub snapshot of
    e.g. google/gemma-3-12b-it-qat-q4_0-unquantized), or a diffusers pipeline folder with text_encoder/ and
    tokenizer/ subfolders."""
    src = os.path.abspath(text_encoder)
    if os.path.isfile(os.path.join(src, "text_encoder", "config.json")):
        te, tok = os.path.join(src, "text_encoder"), os.path.join(src, "tokenizer")
    elif os.path.isfile(os.path.join(src, "config.json")):
        te = tok = src
    else:
        raise FileNotFoundError(f"text_encoder {text_encoder!r} is neither a transformers model folder nor a diffusers "
                                f"pipeline folder with a text_encoder/ subfolder")
    if not any(os.path.exists(os.path.join(tok, f)) for f in ("tokenizer.json", "tokenizer.model",
                                                               "tokenizer_config.json")):
        raise FileNotFoundError(f"no tokenizer files in {tok}")
    for name, target in (("text_encoder", te), ("tokenizer", tok)):
        link = os.path.join(out_dir, name)
        if os.path.lexists(link):
            if os.path.islink(link):
                os.unlink(link)
            else:
                shutil.rmtree(link)
        os.symlink(os.path.realpath(target), link)


def _text_encoder_classes(out_dir: str) -> tuple[list, list]:
    te, tok = [None, None], [None, None]
    cfg_path = os.path.join(out_dir, "text_encoder", "config.json")
    if os.path.isfile(cfg_path):
        with open(cfg_path) as f:
            archs = json.load(f).get("architectures") or ["Gemma3ForConditionalGeneration"]
        te = ["transformers", archs[0]]
        tok_cfg = os.path.join(out_dir, "tokenizer", "tokenizer_config.json")
        cls = "AutoTokenizer"
        if os.path.isfile(tok_cfg):
            with open(tok_cfg) as f:
                cls = json.load(f).get("tokenizer_class") or cls
        tok = ["transformers", cls]
    return te, tok


def write_model_index(out_dir: str, classes: dict[str, list]) -> None:
    """model_index.json so that ``LTX2Pipeline.from_pretrained(out_dir)`` works too."""
    import diffusers

    te, tok = _text_encoder_classes(out_dir)
    index = {"_class_name": "LTX2Pipeline", "_diffusers_version": diffusers.__version__,
             "duration_head": [None, None], "processor": [None, None], "prompt_enhancer": [None, None],
             "text_encoder": te, "tokenizer": tok, **classes}
    with open(os.path.join(out_dir, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)


def convert_single_file(ckpt_path: str, out_dir: str, family: str | None = None, config_dir: str | None = None,
                        text_encoder: str | None = None, strict: bool = True, dtype: torch.dtype | None = None) -> str:
    """Convert an official single-file checkpoint into a diffusers pipeline folder at ``out_dir`` (written to a
    temporary sibling first and renamed at the end, so ``out_dir`` is either absent or complete).

    family: "ltx-2.0" / "ltx-2.3"; detected from the file when None.
    config_dir: folder with <component>/config.json (a diffusers pipeline folder works) that overrides everything;
        by default each component's architecture comes from the checkpoint's ``config`` metadata
        (``official_config``), else from the packaged real configs of the family.
    text_encoder: local Gemma 3 folder (see ``_link_text_encoder``); linked as text_encoder/ and tokenizer/.
    strict: raise on checkpoint tensors the model does not have (missing tensors always raise).
    dtype: cast weights before saving (default: keep the checkpoint's dtype).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    from .bundle import MODEL_INFO_FILE, REAL_MAX_SEQUENCE_LENGTH, ModelInfo, load_model_info, write_model_info
    from .tiny import scheduler_config

    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir} already exists")
    ckpt = _Checkpoint(ckpt_path)
    try:
        detected = detect_family(ckpt.keys, ckpt.metadata)
        if family is None:
            family = detected
        family = {"2.0": "ltx-2.0", "2.3": "ltx-2.3"}.get(family, family)
        if family != detected:
            logger.warning("family %s requested but the checkpoint looks like %s", family, detected)
        groups = _split_keys(ckpt.keys)
        if groups["other"]:
            logger.info("ignoring %d checkpoint tensors outside the known components, e.g. %s",
                        len(groups["other"]), groups["other"][:3])

        parent = os.path.dirname(out_dir)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
        try:
            classes = {}
            configs = component_configs(ckpt, family, config_dir, groups)
            for name, cc in configs.items():
                model = _convert_component(name, ckpt, groups[name], cc, strict, dtype)
                model.save_pretrained(os.path.join(tmp, name), safe_serialization=True, max_shard_size="10GB")
                lib = "diffusers" if name in ("transformer", "vae", "audio_vae") else "ltx2"
                classes[name] = [lib, type(model).__name__]
                del model
            sched_dir = os.path.join(config_dir or os.path.join(CONFIGS_DIR, family), "scheduler")
            if os.path.isfile(os.path.join(sched_dir, "scheduler_config.json")):
                sched = FlowMatchEulerDiscreteScheduler.from_pretrained(sched_dir, local_files_only=True)
            else:
                sched = FlowMatchEulerDiscreteScheduler(**scheduler_config())
            if "distilled" in os.path.basename(ckpt_path):
                # distilled checkpoints use their sigmas as they are (diffusers' conversion script)
                sched = FlowMatchEulerDiscreteScheduler.from_config(sched.config, use_dynamic_shifting=False,
                                                                     shift_terminal=None)
            sched.save_pretrained(os.path.join(tmp, "scheduler"))
            classes["scheduler"] = ["diffusers", type(sched).__name__]
            if text_encoder:
                _link_text_encoder(text_encoder, tmp)
            write_model_index(tmp, classes)
            max_len = REAL_MAX_SEQUENCE_LENGTH
            # e.g. the tiny preset used as config_dir
            if config_dir and os.path.isfile(os.path.join(config_dir, MODEL_INFO_FILE)):
                max_len = load_model_info(config_dir).max_sequence_length
            write_model_info(tmp, ModelInfo(family=family, max_sequence_length=max_len, source="single_file"),
                             extra={"checkpoint": os.path.abspath(ckpt_path),
                                    "text_encoder": os.path.abspath(text_encoder) if text_encoder else None})
            os.rename(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        ckpt.close()
    return out_dir


def component_keys(ckpt_keys: Iterable[str]) -> dict[str, list[str]]:
    """Group official checkpoint keys by component (transformer / connectors / vae / audio_vae / vocoder / other)."""
    return _split_keys(ckpt_keys)


__all__ = [
    "MissingWeightsError", "UnexpectedWeightsError", "original_keys_from_diffusers", "convert_single_file",
    "detect_family", "transformer_key_to_original", "component_keys", "CONFIGS_DIR",
]
