"""LTX-2 / LTX-2.3 model folders (tiny preset, diffusers folders, official single-file checkpoints) and LoRA.

Every transformer built here runs the family's cross-modal AdaLN routing (``cross_modal``); official single files
are built from their own ``config`` metadata (``official_config``)."""

from .bundle import (COMPONENTS, ModelInfo, build_pipeline, load_components, load_model_info, resolve_model,
                     write_model_info)
from .lora import (ATTENTION_TARGETS, AUDIO_TARGETS, CROSS_MODAL_TARGETS, VIDEO_TARGETS, attach_lora,
                   lora_parameters, lora_state_dict)
from .single_file import MissingWeightsError, convert_single_file, original_keys_from_diffusers
from .tiny import build_tiny_components

__all__ = [
    "COMPONENTS", "ModelInfo", "build_pipeline", "load_components", "load_model_info", "resolve_model",
    "write_model_info", "ATTENTION_TARGETS", "AUDIO_TARGETS", "CROSS_MODAL_TARGETS", "VIDEO_TARGETS", "attach_lora",
    "lora_parameters", "lora_state_dict", "MissingWeightsError", "convert_single_file",
    "original_keys_from_diffusers", "build_tiny_components",
]
