"""Model folders: resolve a model spec to a local diffusers pipeline folder and load components from it.

Every model the platform uses ends up as a diffusers-pipeline folder (one subfolder per component, plus
``model_index.json`` and ``ltxtrain_model.json``), and every component is loaded through the same code path
(``from_pretrained(model_dir, subfolder=name)``), whether it is the tiny CPU preset or a real LTX-2.3 checkpoint.

Specs understood by :func:`resolve_model`:

* ``"tiny"`` / ``"tiny-2.3"`` / ``"tiny-2.0"``: the tiny random preset (``tiny`` is LTX-2.3 style), built once into
  ``cache_dir/tiny-2.3`` (or ``tiny-2.0``);
* a diffusers pipeline folder: returned as is (nothing is written into it);
* an official single-file ``.safetensors`` checkpoint: converted once into ``cache_dir/<file stem>``.

Building / converting is safe under concurrency (several Ray workers on one or more nodes sharing ``cache_dir``):
an exclusive ``flock`` on ``cache_dir/.<name>.lock`` serialises the builders, the result is written into a temporary
sibling folder and renamed into place, so a folder that exists is always complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from . import cross_modal
from .tiny import MAX_SEQUENCE_LENGTH, build_tiny_components

logger = logging.getLogger(__name__)

COMPONENTS = ("transformer", "vae", "audio_vae", "connectors", "text_encoder", "tokenizer", "vocoder", "scheduler")
MODEL_INFO_FILE = "ltxtrain_model.json"
TINY_SPECS = {"tiny": "ltx-2.3", "tiny-2.3": "ltx-2.3", "tiny-2.0": "ltx-2.0"}
REAL_MAX_SEQUENCE_LENGTH = 1024
TINY_SEED = 0


@dataclass
class ModelInfo:
    """Written as <model_dir>/ltxtrain_model.json."""

    family: str  # "ltx-2.0" | "ltx-2.3"
    max_sequence_length: int  # text tokens (1024 for real models, 32 for the tiny preset)
    source: str  # "tiny" | "diffusers" | "single_file"


def write_model_info(model_dir: str, info: ModelInfo, extra: dict | None = None) -> None:
    data = dict(extra or {})
    data.update(dataclasses.asdict(info))
    with open(os.path.join(model_dir, MODEL_INFO_FILE), "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)


def load_model_info(model_dir: str) -> ModelInfo:
    """Read ltxtrain_model.json; for plain diffusers folders (no such file) infer it from the configs."""
    path = os.path.join(model_dir, MODEL_INFO_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            data = json.load(f)
        names = {f.name for f in dataclasses.fields(ModelInfo)}
        return ModelInfo(**{k: v for k, v in data.items() if k in names})
    with open(os.path.join(model_dir, "transformer", "config.json")) as f:
        tcfg = json.load(f)
    return ModelInfo(family=family_of_transformer_config(tcfg), max_sequence_length=REAL_MAX_SEQUENCE_LENGTH,
                     source="diffusers")


def family_of_transformer_config(tcfg: dict) -> str:
    """"ltx-2.3" if a diffusers transformer config has any LTX-2.3 feature, else "ltx-2.0"."""
    v2 = tcfg.get("gated_attn") or tcfg.get("cross_attn_mod") or tcfg.get("use_prompt_embeddings") is False
    return "ltx-2.3" if v2 else "ltx-2.0"


# ---------------------------------------------------------------------------------------------------------------------
# resolve
# ---------------------------------------------------------------------------------------------------------------------
def _is_pipeline_dir(path: str) -> bool:
    return os.path.isdir(path) and (os.path.isfile(os.path.join(path, "model_index.json"))
                                    or os.path.isfile(os.path.join(path, "transformer", "config.json")))


def _build_lock(cache_dir: str, name: str):
    from ..storage import file_lock

    return file_lock(os.path.join(cache_dir, f".{name}.lock"))


def _publish(tmp: str, final: str) -> None:
    """Atomically move a finished build into place; if another builder won the race, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        if _is_pipeline_dir(final):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise


def save_tiny_model(out_dir: str, family: str = "ltx-2.3", seed: int = TINY_SEED) -> str:
    """Build the tiny preset and save it as a diffusers pipeline folder at out_dir (non-atomic; see resolve_model)."""
    from diffusers import LTX2Pipeline

    components = build_tiny_components(family, seed=seed)
    LTX2Pipeline(**components).save_pretrained(out_dir)
    write_model_info(out_dir, ModelInfo(family=family, max_sequence_length=MAX_SEQUENCE_LENGTH, source="tiny"),
                     extra={"seed": seed})
    return out_dir


def _resolve_tiny(spec: str, cache_dir: str) -> str:
    family = TINY_SPECS[spec]
    name = "tiny-" + family.removeprefix("ltx-")
    final = os.path.join(os.path.abspath(cache_dir), name)
    if _is_pipeline_dir(final):
        return final
    with _build_lock(cache_dir, name):
        if _is_pipeline_dir(final):
            return final
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=os.path.dirname(final))
        try:
            save_tiny_model(tmp, family, seed=TINY_SEED)
            _publish(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("built tiny %s model in %s", family, final)
    return final


def _resolve_single_file(spec: str, cache_dir: str, text_encoder: str | None) -> str:
    from .single_file import _link_text_encoder, _text_encoder_classes, convert_single_file

    stem = os.path.basename(spec)
    for ext in (".safetensors", ".sft"):
        stem = stem.removesuffix(ext)
    final = os.path.join(os.path.abspath(cache_dir), stem)
    with _build_lock(cache_dir, stem):
        if not _is_pipeline_dir(final):
            convert_single_file(spec, final, text_encoder=text_encoder)
        elif text_encoder and not os.path.exists(os.path.join(final, "text_encoder")):
            # converted earlier without a text encoder: add the links now
            _link_text_encoder(text_encoder, final)
            index_path = os.path.join(final, "model_index.json")
            with open(index_path) as f:
                index = json.load(f)
            index["text_encoder"], index["tokenizer"] = _text_encoder_classes(final)
            with open(index_path, "w") as f:
                json.dump(index, f, indent=2, sort_keys=True)
    return final


def resolve_model(spec: str, cache_dir: str, text_encoder: str | None = None) -> str:
    """Turn a model spec into a local diffusers pipeline folder (see the module docstring)."""
    if spec in TINY_SPECS:
        return _resolve_tiny(spec, cache_dir)
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        if not _is_pipeline_dir(path):
            raise ValueError(f"{spec!r} is a folder but not a diffusers pipeline folder (no model_index.json or "
                             f"transformer/config.json)")
        if text_encoder:
            logger.warning("text_encoder=%s ignored for the diffusers folder %s", text_encoder, path)
        return os.path.abspath(path)
    if os.path.isfile(path) and path.endswith((".safetensors", ".sft")):
        return _resolve_single_file(path, cache_dir, text_encoder)
    raise ValueError(f"cannot resolve model {spec!r}: expected 'tiny', 'tiny-2.0', 'tiny-2.3', a local diffusers "
                     f"pipeline folder or a local single-file .safetensors checkpoint (no hub downloads)")


# ---------------------------------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------------------------------
def _diffusers_class(class_name: str):
    import diffusers
    from diffusers.pipelines import ltx2

    cls = getattr(diffusers, class_name, None) or getattr(ltx2, class_name, None)
    if cls is None:
        raise ValueError(f"unknown diffusers class {class_name!r}")
    return cls


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _load_one(model_dir: str, name: str, dtype: torch.dtype, device: str | torch.device) -> Any:
    sub = os.path.join(model_dir, name)
    if not os.path.isdir(sub):
        hint = (" (single-file checkpoints carry no text encoder: pass text_encoder=<local Gemma 3 folder> to "
                "resolve_model)") if name in ("text_encoder", "tokenizer") else ""
        raise FileNotFoundError(f"component {name!r} not found in {model_dir}{hint}")
    if name == "tokenizer":
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        try:
            return AutoTokenizer.from_pretrained(sub, local_files_only=True)
        except (ValueError, OSError, KeyError):
            if os.path.isfile(os.path.join(sub, "tokenizer.json")):
                return PreTrainedTokenizerFast.from_pretrained(sub, local_files_only=True)
            raise
    if name == "scheduler":
        cfg = _read_json(os.path.join(sub, "scheduler_config.json"))
        return _diffusers_class(cfg.get("_class_name", "FlowMatchEulerDiscreteScheduler")).from_pretrained(
            sub, local_files_only=True)
    if name == "text_encoder":
        import transformers

        archs = _read_json(os.path.join(sub, "config.json")).get("architectures") or []
        cls = getattr(transformers, archs[0], None) if archs else None
        if cls is None:
            cls = transformers.AutoModel
        model = cls.from_pretrained(sub, dtype=dtype, local_files_only=True)
        return model.to(device).eval()
    cfg = _read_json(os.path.join(sub, "config.json"))
    cls = _diffusers_class(cfg["_class_name"])
    model = cls.from_pretrained(model_dir, subfolder=name, torch_dtype=dtype, local_files_only=True)
    if name == "transformer":
        cross_modal.install_for_family(model, load_model_info(model_dir).family)
    return model.to(device).eval()


def load_components(model_dir: str, names: Iterable[str], dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load only the named components from a pipeline folder (modules in eval mode, on ``device``, in ``dtype``)."""
    names = list(names)
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise ValueError(f"unknown components {unknown}; expected some of {COMPONENTS}")
    return {n: _load_one(model_dir, n, dtype, device) for n in names}


def build_pipeline(model_dir: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """``LTX2Pipeline(**components)`` with all components loaded from the folder."""
    from diffusers import LTX2Pipeline

    pipe = LTX2Pipeline(**load_components(model_dir, COMPONENTS, dtype=dtype, device=device))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def empty_component(model_dir: str, name: str, dtype: torch.dtype = torch.float32):
    """A component with its architecture but no weights (parameters on the meta device): what every rank but one
    builds before FSDP sharding, so a 22B model is never materialised once per GPU."""
    sub = os.path.join(model_dir, name)
    cfg = _read_json(os.path.join(sub, "config.json"))
    cls = _diffusers_class(cfg["_class_name"])
    with torch.device("meta"):
        model = cls.from_config(cls.load_config(sub))
    if name == "transformer":
        cross_modal.install_for_family(model, load_model_info(model_dir).family)
    # nn.Module.to: ModelMixin.to warns about fp32-pinned modules, which LTX-2 has none of
    return torch.nn.Module.to(model, dtype).eval()
