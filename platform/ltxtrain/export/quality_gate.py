"""Checks a trained LoRA must pass before it is shipped (what users otherwise find out at inference time).

* a NaN/Inf weight fails the job, naming the tensor (such files render black video);
* a `lora_B` that is all zero or near zero is a warning: that module learned nothing, and if all are, the LoRA
  has no effect at all;
* keys adapting the audio stream or the audio<->video cross-attention, when audio was not trained, fail the job:
  they would change audio generation for a LoRA sold as video-only;
* the LoRA's measured effect: the relative change of one fixed denoising step (a cached training sample with
  seeded noise at σ = EFFECT_SIGMA) with and without the adapters, computed on the training workers, which hold
  the model at the end of the run (`lora_effect`). A vanishing effect is a warning too.

The report is a plain dict, recorded in result.json (`quality`) and the config JSON.
"""

from __future__ import annotations

import logging
import math

import torch

from .lora_file import VIDEO, lora_stream

log = logging.getLogger("ltxtrain")

NEAR_ZERO_RMS = 1e-6  # a lora_B whose RMS is below this never moved from its zero init in any real sense
EFFECT_SIGMA = 0.5  # noise level of the measured step: mid-schedule, where both layout and detail are decided
NO_EFFECT_BELOW = 1e-3  # relative change of the step's velocity under which the LoRA is called ineffective
LISTED = 20  # tensor names listed in the report (a 48-block LoRA has hundreds)


class QualityGateError(RuntimeError):
    """The trained LoRA must not be shipped. `report` is the gate's findings (written to result.json)."""

    def __init__(self, msg: str, report: dict):
        super().__init__(msg)
        self.report = report


def check_lora(peft_sd: dict[str, torch.Tensor], audio_trained: bool, effect: dict | None = None) -> dict:
    """Audit the adapter weights (peft keys, before any file is written). Raises QualityGateError on NaN/Inf or on
    audio/cross-modal keys of a job that did not train audio; returns the report with its warnings."""
    nonfinite = sorted(k for k, v in peft_sd.items() if not torch.isfinite(v).all())
    audio_keys = [] if audio_trained else sorted(k for k in peft_sd if lora_stream(k) != VIDEO)
    b_keys = sorted(k for k in peft_sd if k.endswith(".lora_B.weight"))
    zero_b = [k for k in b_keys if k not in nonfinite and _rms(peft_sd[k]) < NEAR_ZERO_RMS]
    report = {
        "passed": not nonfinite and not audio_keys,
        "tensors": len(peft_sd),
        "nonfinite": nonfinite[:LISTED],
        "nonfinite_count": len(nonfinite),
        "unexpected_audio_keys": audio_keys[:LISTED],
        "unexpected_audio_key_count": len(audio_keys),
        "near_zero_lora_B": zero_b[:LISTED],
        "near_zero_lora_B_count": len(zero_b),
        "lora_B_count": len(b_keys),
        "effect": effect,
        "warnings": [],
    }
    if zero_b:
        report["warnings"].append(
            f"{len(zero_b)} of {len(b_keys)} lora_B tensors are all zero or near zero (RMS < {NEAR_ZERO_RMS:g}): "
            f"those modules learned nothing, e.g. {_names(zero_b)}")
    for modality, change in (effect or {}).items():
        if modality != "sigma" and isinstance(change, float) and math.isfinite(change) and change < NO_EFFECT_BELOW:
            report["warnings"].append(
                f"the LoRA changes the {modality} prediction of a denoising step by only {change:.2e} "
                f"(relative, at sigma {effect.get('sigma')}): it will have almost no visible effect")
    for w in report["warnings"]:
        log.warning("quality gate: %s", w)
    if nonfinite:
        raise QualityGateError(f"the trained LoRA holds NaN/Inf values in {len(nonfinite)} tensor(s): "
                               f"{_names(nonfinite)}", report)
    if audio_keys:
        raise QualityGateError(f"the LoRA has {len(audio_keys)} audio or audio/video cross-attention tensor(s) "
                               f"although audio was not trained: {_names(audio_keys)}", report)
    return report


def _rms(t: torch.Tensor) -> float:
    return float(t.float().pow(2).mean().sqrt()) if t.numel() else 0.0


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" (and {len(keys) - 5} more)" if len(keys) > 5 else "")


@torch.no_grad()
def lora_effect(transformer, step, sigma: float = EFFECT_SIGMA) -> dict:
    """{"video": r, ["audio": r,] "sigma": σ}: r = ||v_lora - v_base|| / ||v_base|| over the generated tokens of one
    fixed denoising step. `step()` runs it and returns {modality: (velocity [B, S, C], loss mask [B, S])} for the
    generated modalities; the training loop builds it (its token assembly, conditions included) at σ = `sigma`.
    Runs the transformer twice; with FSDP every rank must call it (the forward passes gather shards), and all get
    the same numbers."""
    with torch.no_grad():
        tuned = step()
        with adapters_disabled(transformer):
            base = step()
    result = {}
    for m, (v, mask) in tuned.items():
        weight = mask[..., None].to(v.dtype)
        diff = ((v - base[m][0]) * weight).norm()
        result[m] = float(diff / (base[m][0] * weight).norm().clamp(min=1e-12))
    result["sigma"] = sigma
    return result


class adapters_disabled:
    """Run the base model: every peft LoRA layer bypassed, then restored with each parameter's requires_grad
    (peft's own toggle changes those, and the export picks the trainable weights by that flag)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.grad = {n: p.requires_grad for n, p in self.model.named_parameters()}
        self.layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        if not self.layers:
            raise ValueError("the model has no LoRA adapters")
        for m in self.layers:
            m.enable_adapters(False)
        return self.model

    def __exit__(self, *exc):
        for m in self.layers:
            m.enable_adapters(True)
        for n, p in self.model.named_parameters():
            p.requires_grad_(self.grad[n])
        return False
