"""An official single file's ``config`` metadata -> diffusers component configs.

Official LTX-2 / LTX-2.3 checkpoints carry their architecture as JSON in the safetensors metadata ``config``
(sections ``transformer``, ``vae``, ``audio_vae``, ``vocoder``); Lightricks' ltx-core builds every model from it
(``LTXModelConfigurator.from_config`` and friends), with its own defaults for keys that are absent. We read the same
keys with the same defaults and write them into the diffusers config of the family's packaged config
(``models/configs/<family>``), which supplies what ltx-core hard-codes (VAE scale factors, audio hop length,
STG support...). A component whose section is absent keeps the packaged config; :class:`ComponentConfig` records
which it was, so a size mismatch can say where the config came from.

Mapped today: the transformer and the text connectors (both from the ``transformer`` section, as in ltx-core).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# ltx-core's LTXModel / Embeddings1DConnector defaults, used when a key is absent (as ltx-core does)
_TRANSFORMER_SAME_NAME = {  # diffusers field == official key
    "num_attention_heads": 32, "attention_head_dim": 128, "in_channels": 128, "out_channels": 128,
    "num_layers": 48, "cross_attention_dim": 4096, "norm_eps": 1e-6, "timestep_scale_multiplier": 1000,
    "audio_num_attention_heads": 32, "audio_attention_head_dim": 64, "audio_in_channels": 128,
    "audio_out_channels": 128, "audio_cross_attention_dim": 2048,
}


@dataclass
class ComponentConfig:
    config: dict  # diffusers config (with _class_name)
    source: str  # where the architecture came from, for error messages

    def describe(self, name: str) -> str:
        return f"{name} config from {self.source}"


def read_metadata_config(metadata: dict[str, str] | None) -> dict:
    """The parsed ``config`` metadata (``{}`` when absent or not JSON)."""
    raw = (metadata or {}).get("config")
    if not raw:
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def transformer_config(meta: dict, packaged: dict) -> dict:
    """diffusers ``LTX2VideoTransformer3DModel`` config from the official ``transformer`` section."""
    t = meta["transformer"]
    if not t.get("use_middle_indices_grid", True):
        raise ValueError("checkpoint metadata: use_middle_indices_grid=False is not supported (diffusers' RoPE "
                         "uses the middle of each patch)")
    cfg = dict(packaged)
    cfg.update({k: t.get(k, default) for k, default in _TRANSFORMER_SAME_NAME.items()})
    video_max_pos = list(t.get("positional_embedding_max_pos", [20, 2048, 2048]))
    cfg.update(
        pos_embed_max_pos=video_max_pos[0], base_height=video_max_pos[1], base_width=video_max_pos[2],
        audio_pos_embed_max_pos=list(t.get("audio_positional_embedding_max_pos", [20]))[0],
        rope_theta=float(t.get("positional_embedding_theta", 10000.0)),
        rope_type=t.get("rope_type", "interleaved"),
        rope_double_precision=t.get("frequencies_precision", False) == "float64",
        # ltx-core's av_ca_timestep_scale_multiplier (default 1) is diffusers' cross_attn_timestep_scale_multiplier
        cross_attn_timestep_scale_multiplier=t.get("av_ca_timestep_scale_multiplier", 1),
    )
    gated = bool(t.get("apply_gated_attention", False))
    adaln = bool(t.get("cross_attention_adaln", False))
    cfg.update(gated_attn=gated, audio_gated_attn=gated, cross_attn_mod=adaln, audio_cross_attn_mod=adaln,
               use_prompt_adaln_single=adaln)
    # LTX-2.3 projects captions before the connectors; LTX-2.0 inside the transformer, from caption_channels
    before = bool(t.get("caption_proj_before_connector", False))
    cfg["use_prompt_embeddings"] = not before
    if not before:
        cfg["caption_channels"] = t.get("caption_channels", cfg.get("caption_channels", 3840))
    return cfg


def connectors_config(meta: dict, packaged: dict, projection_in_features: int | None) -> dict:
    """diffusers ``LTX2TextConnectors`` config from the official ``transformer`` section (ltx-core's
    ``Embeddings1DConnectorConfigurator`` / ``AudioEmbeddings1DConnectorConfigurator`` read the same keys).

    ltx-core fixes the text encoder (Gemma 3 12B: 3840 wide, 49 hidden states); we keep the packaged values unless
    ``caption_channels`` says otherwise, and take the number of stacked hidden states from the width of the
    checkpoint's input projection (``projection_in_features``)."""
    t = meta["transformer"]
    cfg = dict(packaged)
    heads = t.get("connector_num_attention_heads", 30)
    head_dim = t.get("connector_attention_head_dim", 128)
    layers = t.get("connector_num_layers", 2)
    registers = t.get("connector_num_learnable_registers", 128)
    gated = bool(t.get("connector_apply_gated_attention", False))
    before = bool(t.get("caption_proj_before_connector", False))
    caption_channels = t.get("caption_channels", cfg.get("caption_channels", 3840))
    cfg.update(
        caption_channels=caption_channels,
        video_connector_num_attention_heads=heads, video_connector_attention_head_dim=head_dim,
        video_connector_num_layers=layers, video_connector_num_learnable_registers=registers,
        audio_connector_num_attention_heads=t.get("audio_connector_num_attention_heads", heads),
        audio_connector_attention_head_dim=t.get("audio_connector_attention_head_dim", head_dim),
        audio_connector_num_layers=t.get("audio_connector_num_layers", layers),
        audio_connector_num_learnable_registers=registers,
        video_gated_attn=gated, audio_gated_attn=gated,
        connector_rope_base_seq_len=list(t.get("connector_positional_embedding_max_pos", [1]))[0],
        rope_theta=10000.0,  # ltx-core's connector default; the configurator passes no theta
        rope_type=t.get("rope_type", "interleaved"),
        rope_double_precision=t.get("frequencies_precision", False) == "float64",
        causal_temporal_positioning=False,
        per_modality_projections=before, proj_bias=before,
        video_hidden_dim=t.get("num_attention_heads", 32) * t.get("attention_head_dim", 128),
        audio_hidden_dim=t.get("audio_num_attention_heads", 32) * t.get("audio_attention_head_dim", 64),
    )
    if projection_in_features is not None and projection_in_features % caption_channels == 0:
        cfg["text_proj_in_factor"] = projection_in_features // caption_channels
    return cfg


def component_config(name: str, meta: dict, packaged: dict, packaged_source: str,
                     projection_in_features: int | None = None) -> ComponentConfig:
    """The diffusers config of component ``name``: from the metadata when it describes it, else the packaged one."""
    if name in ("transformer", "connectors") and isinstance(meta.get("transformer"), dict) and meta["transformer"]:
        cfg = (transformer_config(meta, packaged) if name == "transformer"
               else connectors_config(meta, packaged, projection_in_features))
        return ComponentConfig(cfg, "the checkpoint's config metadata (section 'transformer')")
    return ComponentConfig(dict(packaged), f"the packaged fallback {packaged_source}")
