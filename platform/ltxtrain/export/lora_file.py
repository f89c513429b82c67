"""LoRA files.

* LTX / ComfyUI layout (the user-facing file, what ltx-trainer writes and ComfyUI / ltx-core / diffusers load):
  ``diffusion_model.<official module name>.lora_A.weight`` ``[r, in]`` and ``...lora_B.weight`` ``[out, r]``, no
  ``.alpha`` keys, no rank/alpha metadata. Every consumer assumes ``alpha == rank`` (ltx-core fuses ``W += B @ A``),
  so ``alpha / rank`` is baked into ``lora_B``; ``.alpha`` keys would even make diffusers refuse the file.
  Safetensors metadata (string values only) can carry extra information such as reference scale factors.
* diffusers layout (``pytorch_lora_weights.safetensors`` with ``transformer.`` keys and the LoRA config, alpha
  included, in the ``lora_adapter_metadata`` header).

Per-modality files (`split_by_stream`): every LoRA key belongs to the stream its module writes into. Video: video
self/text attention and FF, and ``audio_to_video_attn`` (queries are video tokens; its output is added to the video
stream) with the video-side cross-attention modulation (``av_cross_attn_video_*``). Audio: ``audio_*`` modules and
``video_to_audio_attn`` (queries are audio tokens) with ``av_cross_attn_audio_*``. So the video file alone changes
only what the video stream computes, the audio file only the audio stream; in video-only (or audio-only) inference
the cross-attention keys are simply unused, and the two files together are exactly the joint LoRA.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import torch

from ..models.single_file import transformer_key_to_original

LTX_PREFIX = "diffusion_model."
DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def _clean_peft_key(k: str) -> str:
    for p in ("base_model.model.", "transformer."):
        k = k.removeprefix(p)
    return k


# what a LoRA key adapts, by module name (diffusers names; the official av_ca_* names too)
VIDEO, AUDIO, AUDIO_TO_VIDEO, VIDEO_TO_AUDIO = "video", "audio", "audio_to_video", "video_to_audio"
_WRITES_INTO = {VIDEO: VIDEO, AUDIO_TO_VIDEO: VIDEO, AUDIO: AUDIO, VIDEO_TO_AUDIO: AUDIO}


def lora_stream(key: str) -> str:
    """VIDEO, AUDIO, or the cross-modal AUDIO_TO_VIDEO (a2v: video queries audio) / VIDEO_TO_AUDIO (v2a)."""
    for part in _clean_peft_key(key.removeprefix(LTX_PREFIX)).split("."):
        if part == "audio_to_video_attn" or part.startswith(("av_cross_attn_video", "av_ca_video", "av_ca_a2v")):
            return AUDIO_TO_VIDEO
        if part == "video_to_audio_attn" or part.startswith(("av_cross_attn_audio", "av_ca_audio", "av_ca_v2a")):
            return VIDEO_TO_AUDIO
        if part.startswith("audio_"):
            return AUDIO
    return VIDEO


def split_by_stream(peft_sd: dict) -> dict[str, dict]:
    """{"video": ..., "audio": ...}: each key in the file of the stream its module writes into (see the module doc)."""
    out: dict[str, dict] = {VIDEO: {}, AUDIO: {}}
    for k, v in peft_sd.items():
        out[_WRITES_INTO[lora_stream(k)]][k] = v
    return out


def _check_peft_sd(peft_sd: dict, rank: int) -> dict[str, torch.Tensor]:
    if not peft_sd:
        raise ValueError("empty LoRA state dict")
    out = {}
    for key, v in peft_sd.items():
        k = _clean_peft_key(key)
        if not (k.endswith(".lora_A.weight") or k.endswith(".lora_B.weight")):
            raise ValueError(f"unsupported LoRA tensor {key!r} (only lora_A / lora_B weights can be exported)")
        r = v.shape[0] if ".lora_A." in k else v.shape[1]
        if r != rank:
            raise ValueError(f"{key} has rank {r}, expected {rank}")
        out[k] = v
    return out


def to_ltx_keys(peft_sd: dict, rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """peft state dict -> LTX/ComfyUI keys, with the LoRA scale alpha/rank baked into lora_B (so alpha == rank holds
    for the file). No ``.alpha`` keys are written."""
    scale = float(alpha) / float(rank)
    out = {}
    for k, v in _check_peft_sd(peft_sd, rank).items():
        v = v.detach()
        if ".lora_B." in k and scale != 1.0:
            v = (v.float() * scale).to(v.dtype)
        out[transformer_key_to_original(k, prefix=LTX_PREFIX)] = v
    return out


def _str_metadata(metadata: dict | None) -> dict[str, str] | None:
    if not metadata:
        return None
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def _atomic_save(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None) -> None:
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_lora(path: str, peft_sd: dict, rank: int, alpha: float, metadata: dict[str, str] | None = None,
              dtype: torch.dtype = torch.bfloat16) -> None:
    """Write the user-facing LTX/ComfyUI LoRA file. Metadata values must be strings (non-strings are JSON-encoded)."""
    sd = {k: v.to(dtype).contiguous().cpu() for k, v in to_ltx_keys(peft_sd, rank, alpha).items()}
    _atomic_save(sd, path, _str_metadata(metadata))


def save_lora_diffusers(dir: str, peft_sd: dict, rank: int, alpha: float, targets: Iterable[str]) -> None:
    """diffusers layout: <dir>/pytorch_lora_weights.safetensors with r / lora_alpha / target_modules metadata."""
    from diffusers import LTX2Pipeline

    sd = {k: v.detach().contiguous().cpu() for k, v in _check_peft_sd(peft_sd, rank).items()}
    LTX2Pipeline.save_lora_weights(dir, transformer_lora_layers=sd, weight_name=DIFFUSERS_WEIGHT_NAME,
                                   transformer_lora_adapter_metadata={"r": int(rank), "lora_alpha": float(alpha),
                                                                      "target_modules": sorted(targets)})


class LoraFileError(ValueError):
    """A LoRA file that cannot be used (unreadable, unknown keys, incomplete pairs, ranks that disagree)."""


def read_lora_file(path: str) -> tuple[dict[str, torch.Tensor], int]:
    """An existing LoRA file -> (peft state dict in float32 with its scale baked into lora_B, rank).

    Accepted: the LTX/ComfyUI layout (``diffusion_model.<official module>.lora_A/B.weight``; alpha baked in, or
    ``<module>.alpha`` keys giving the scale alpha/rank), and the diffusers/PEFT layout (``transformer.<module>...``,
    alpha in the ``lora_adapter_metadata`` header, else alpha == rank). The result loads into adapters whose
    alpha equals their rank (ours), so it reproduces the file's effect exactly."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            header = dict(f.metadata() or {})
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for a damaged or foreign file
        raise LoraFileError(f"not a readable .safetensors file ({type(exc).__name__}: {exc})") from None
    if not raw:
        raise LoraFileError("the file holds no tensors")
    if all(k.startswith(LTX_PREFIX) for k in raw):
        alphas = {k.removesuffix(".alpha"): v for k, v in raw.items() if k.endswith(".alpha")}
        weights = {k: v for k, v in raw.items() if not k.endswith(".alpha")}
        sd = _from_ltx_keys(weights)
        # "<module>.alpha" sits beside "<module>.lora_A.weight": map the latter to find the module's peft name
        alphas = {next(iter(_from_ltx_keys({m + ".lora_A.weight": v}))).removesuffix(".lora_A.weight"): float(v)
                  for m, v in alphas.items()}
        default_alpha = None
    elif all(k.startswith(("transformer.", "base_model.model.")) for k in raw):
        sd = {_clean_peft_key(k): v for k, v in raw.items()}
        alphas, default_alpha = {}, _diffusers_alpha(header)
    else:
        odd = sorted(k for k in raw if not k.startswith((LTX_PREFIX, "transformer.", "base_model.model.")))
        raise LoraFileError(f"unknown key layout: keys must all start with 'diffusion_model.' (LTX/ComfyUI) or "
                            f"'transformer.' (diffusers), found e.g. {odd[:3]}")
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        for part in ("lora_A", "lora_B"):
            if k.endswith(f".{part}.weight"):
                modules.setdefault(k.removesuffix(f".{part}.weight"), {})[part] = v
                break
        else:
            raise LoraFileError(f"unsupported tensor {k!r} (only <module>.lora_A.weight / lora_B.weight "
                                f"and <module>.alpha)")
    ranks = set()
    out = {}
    for m, pair in sorted(modules.items()):
        if set(pair) != {"lora_A", "lora_B"}:
            raise LoraFileError(f"{m} has {next(iter(pair))} but not its pair")
        a, b = pair["lora_A"], pair["lora_B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise LoraFileError(f"{m}: lora_A {list(a.shape)} and lora_B {list(b.shape)} are not a LoRA pair")
        for part, t in pair.items():
            if not torch.isfinite(t).all():
                raise LoraFileError(f"{m}.{part}.weight holds NaN or Inf values")
        rank = a.shape[0]
        ranks.add(rank)
        alpha = alphas.get(m, default_alpha)
        scale = 1.0 if alpha is None else alpha / rank
        out[f"{m}.lora_A.weight"] = a.float()
        out[f"{m}.lora_B.weight"] = b.float() * scale
    if len(ranks) != 1:
        raise LoraFileError(f"the file mixes ranks {sorted(ranks)}")
    return out, ranks.pop()


def _from_ltx_keys(sd: dict) -> dict:
    """LTX/ComfyUI keys -> peft keys through diffusers' own LTX-2 LoRA converter (what diffusers does when it loads
    our files); a key that does not map back to itself through `to_ltx_keys`' rule is not one we understand."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_ltx2_lora_to_diffusers

    out = {}
    for k, v in sd.items():
        (new,) = _convert_non_diffusers_ltx2_lora_to_diffusers({k: v})
        peft_key = _clean_peft_key(new)
        if transformer_key_to_original(peft_key, prefix=LTX_PREFIX) != k:
            raise LoraFileError(f"unknown key {k!r}")
        out[peft_key] = v
    return out


def _diffusers_alpha(header: dict) -> float | None:
    """lora_alpha from diffusers' ``lora_adapter_metadata`` header (None: not given, so alpha == rank)."""
    try:
        alpha = json.loads(header.get("lora_adapter_metadata", "{}")).get("transformer.lora_alpha")
        return None if alpha is None else float(alpha)
    except (ValueError, TypeError, AttributeError):
        return None


def read_lora_metadata(path: str) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return dict(f.metadata() or {})


def load_lora_into_pipeline(pipe, path: str, adapter_name: str = "ltxtrain") -> None:
    """Load an LTX/ComfyUI LoRA file (or a diffusers LoRA folder) into an LTX2Pipeline via ``load_lora_weights``."""
    if os.path.isdir(path):
        pipe.load_lora_weights(path, adapter_name=adapter_name, local_files_only=True)
    elif os.path.isfile(path):
        pipe.load_lora_weights(os.path.dirname(os.path.abspath(path)), weight_name=os.path.basename(path),
                               adapter_name=adapter_name, local_files_only=True)
    else:
        raise FileNotFoundError(path)
