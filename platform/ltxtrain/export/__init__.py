"""Exported artifacts (LoRA files)."""

from .lora_file import load_lora_into_pipeline, save_lora, save_lora_diffusers, to_ltx_keys

__all__ = ["load_lora_into_pipeline", "save_lora", "save_lora_diffusers", "to_ltx_keys"]
