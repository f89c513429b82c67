"""Which timesteps modulate the audio<->video cross-attention (the "cross-modal AdaLN routing") of each family.

Each transformer block modulates its audio->video and video->audio cross-attention with AdaLN tables fed by
timesteps: a scale/shift table per side and a gate per direction. Three rules exist:

* ``official`` — Lightricks' current code (LTX-2 repository after commit 203d484, 2026-05-28; ComfyUI PR #14097):
  scale/shift from the modality's OWN per-token timesteps (x the timestep scale multiplier), the gate from the OTHER
  modality's sigma (x ``av_ca_timestep_scale_multiplier``, diffusers' ``cross_attn_timestep_scale_multiplier``).
* ``cross`` — ltx-core 1.0.0 on PyPI and diffusers 0.42.1 ``use_cross_timestep=True``: both from the other sigma.
* ``own`` — diffusers 0.42.1 ``use_cross_timestep=False``: both from the own timesteps.

Both families run ``official`` (:data:`FAMILY_ROUTING`): Lightricks' current code applies that one rule to the
LTX-2.0 and the LTX-2.3 checkpoints alike (one ``transformer_args`` for both), and ComfyUI follows it, so a LoRA
trained here sees the modulation it will get there. (Before, LTX-2.0 ran ``own`` and LTX-2.3 ``cross``, after
diffusers' ``cross_attn_mod``: audio+video outputs differed from the official ones, by 1e-2 relative on the tiny
models of tests/test_official_runtime.py and 0.14-0.30 in the first measurement.)

diffusers offers only ``own``/``cross``, and computes the gate input inline in ``LTX2VideoTransformer3DModel.forward``.
:func:`install` therefore runs that forward with ``use_cross_timestep=False`` (own scale/shift) and replaces only the
input of the two gate AdaLN modules (``av_cross_attn_video_a2v_gate``, ``av_cross_attn_audio_v2a_gate``) with the other
modality's sigma times the same factor diffusers applies — forward pre-hooks on the transformer and on the two gates,
no copy of diffusers' code, no new module and no change to the state dict or the saved class. Video-only passes (``isolate_modalities``) skip the
cross-attention, so the routing does not matter there.
"""

from __future__ import annotations

import inspect

ROUTINGS = ("official", "cross", "own")
FAMILY_ROUTING = {"ltx-2.0": "official", "ltx-2.3": "official"}

_GATES = {"av_cross_attn_video_a2v_gate": "audio_sigma", "av_cross_attn_audio_v2a_gate": "sigma"}
_ATTR = "_ltxtrain_cross_modal_adaln"  # the routing installed on a transformer
_GATE_INPUT = "_ltxtrain_gate_timestep"  # one forward's gate input, consumed by the gate's pre-hook


def _base(transformer):
    return getattr(transformer, "_orig_mod", transformer)  # torch.compile wrapper


def routing_of(transformer) -> str | None:
    return getattr(_base(transformer), _ATTR, None)


class _RouteForward:
    """Transformer forward pre-hook: force own-timestep scale/shift, stage the other modality's sigma for the gates.
    A module-level class (not a closure) so the model stays picklable."""

    def __init__(self, routing: str):
        self.routing = routing

    def __call__(self, module, args, kwargs):
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments
        if self.routing != "official":
            kwargs = {**kwargs, "use_cross_timestep": self.routing == "cross"}
            return args, kwargs
        sigma = bound.get("sigma")
        audio_sigma = bound.get("audio_sigma")
        if sigma is None:
            raise ValueError("the official cross-modal AdaLN routing needs the per-sample `sigma` (scaled like the "
                             "timesteps); pass sigma= (and audio_sigma= when audio has its own noise level)")
        audio_sigma = sigma if audio_sigma is None else audio_sigma
        cfg = module.config
        factor = cfg.cross_attn_timestep_scale_multiplier / cfg.timestep_scale_multiplier  # as diffusers' gate
        given = {"sigma": sigma, "audio_sigma": audio_sigma}
        for gate, other in _GATES.items():
            getattr(module, gate).__dict__[_GATE_INPUT] = given[other].flatten() * factor
        return args, {**kwargs, "use_cross_timestep": False}


class _GateInput:
    """Gate AdaLN forward pre-hook: take the staged other-modality sigma instead of what forward computed."""

    def __call__(self, module, args, kwargs):
        staged = module.__dict__.pop(_GATE_INPUT, None)
        if staged is None:
            return None
        if args:
            return (staged, *args[1:]), kwargs
        return args, {**kwargs, "timestep": staged}


def install(transformer, routing: str = "official") -> None:
    """Make ``transformer`` (an ``LTX2VideoTransformer3DModel``) run ``routing``; installing again is a no-op."""
    if routing not in ROUTINGS:
        raise ValueError(f"unknown cross-modal AdaLN routing {routing!r}; expected one of {ROUTINGS}")
    model = _base(transformer)
    current = getattr(model, _ATTR, None)
    if current == routing:
        return
    if current is not None:
        raise ValueError(f"transformer already runs the {current!r} cross-modal AdaLN routing")
    model.register_forward_pre_hook(_RouteForward(routing), with_kwargs=True)
    if routing == "official":
        for gate in _GATES:
            getattr(model, gate).register_forward_pre_hook(_GateInput(), with_kwargs=True)
    model.__dict__[_ATTR] = routing


def install_for_family(transformer, family: str) -> None:
    if family not in FAMILY_ROUTING:
        raise ValueError(f"unknown model family {family!r}; expected one of {tuple(FAMILY_ROUTING)}")
    install(transformer, FAMILY_ROUTING[family])


def ensure(transformer) -> None:
    """Install the family's routing on a transformer that was built outside ``models/`` (its family read from its
    config)."""
    if routing_of(transformer) is None:
        from .bundle import family_of_transformer_config

        install_for_family(transformer, family_of_transformer_config(dict(_base(transformer).config)))

