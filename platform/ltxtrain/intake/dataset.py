"""Turn extracted archive files into named samples by the recipe's file roles, with named errors and skips.

Runs on the driver and only reads container metadata (probe), so `ltxtrain check` stays cheap.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from ..api.errors import Diagnostics, ErrorItem, RequestError
from ..api.schema import TrainingRequest
from ..media.fit import frames_available
from ..media.probe import (AUDIO_EXTENSIONS, DATA_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, MediaError,
                           MediaInfo, probe)
from ..products.base import ABSENT, AUTO, Recipe
from .archive import ExtractedFile

CAPTION_EXTENSION = ".txt"


@dataclass(frozen=True)
class SampleSpec:
    """One training item before decoding: its media files by role, its final caption and their probes."""

    name: str  # archive path of the target media, used in every message about this sample
    kind: str  # "video" | "image"
    caption: str
    media: dict[str, str]  # role -> local path
    info: dict[str, MediaInfo]  # role -> probe
    archive_paths: dict[str, str] = field(default_factory=dict)  # role -> path inside the archive

    def to_json(self) -> dict:
        target = self.info["target"]
        return {
            "name": self.name,
            "kind": self.kind,
            "caption": self.caption,
            "files": self.archive_paths,
            "width": target.width,
            "height": target.height,
            "fps": target.fps,
            "duration": round(target.duration, 3),
            "has_audio": target.has_audio,
        }


def media_kind(path: str) -> str | None:
    ext = posixpath.splitext(path)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in DATA_EXTENSIONS:
        return "json"
    return None


def final_caption(trigger_phrase: str, caption: str) -> str:
    """Spec: the trigger phrase is prepended to every caption ("mystyle A dog running")."""
    caption = " ".join(caption.split())
    return f"{trigger_phrase} {caption}".strip() if trigger_phrase else caption


def _split_role(stem: str, roles: dict[str, str]) -> tuple[str, str] | None:
    """('clip_start', {'_start': 'reference', ...}) -> ('clip', 'reference'); '' matches a bare name."""
    for suffix, role in sorted(roles.items(), key=lambda kv: -len(kv[0])):
        if suffix and stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], role
    return (stem, roles[""]) if "" in roles else None


def build_samples(recipe: Recipe, request: TrainingRequest, files: list[ExtractedFile], diag: Diagnostics) -> list[SampleSpec]:
    captions: dict[str, ExtractedFile] = {}
    groups: dict[str, dict[str, ExtractedFile]] = {}
    kinds: dict[str, list[str]] = {}
    errors: list[ErrorItem] = []
    n_media = 0

    for f in files:
        stem, ext = posixpath.splitext(f.archive_path)
        if ext.lower() == CAPTION_EXTENSION:
            captions[stem] = f
            continue
        kind = media_kind(f.archive_path)
        if kind == "json" and "json" not in recipe.all_kinds:  # only products with JSON roles read them
            kind = None
        if kind is None:
            diag.warn(f"ignored '{f.archive_path}': not a supported media or caption file")
            continue
        split = _split_role(stem, recipe.roles)
        if split is None:
            errors.append(ErrorItem(("body", "training_data_url", f.archive_path),
                                    f"file name must end with one of {sorted(s for s in recipe.roles if s)}"))
            continue
        base, role = split
        if kind not in recipe.kinds_for(role):
            errors.append(ErrorItem(("body", "training_data_url", f.archive_path),
                                    f"{kind} files are not accepted as {role} by this endpoint"))
            continue
        slot = groups.setdefault(base, {})
        if role in slot:
            errors.append(ErrorItem(("body", "training_data_url", f.archive_path),
                                    f"duplicate media for '{base}': '{slot[role].archive_path}' and '{f.archive_path}'"))
            continue
        slot[role] = f
        n_media += 1
        if role == "target":  # the videos-or-images rule is about what is trained on, not masks
            kinds.setdefault(kind, []).append(f.archive_path)

    if errors:
        raise RequestError(errors)
    if n_media == 0:
        raise RequestError.field("training_data_url", "the archive contains no supported media files "
                                 f"(videos: {', '.join(VIDEO_EXTENSIONS)}; images: {', '.join(IMAGE_EXTENSIONS)})")
    if recipe.single_media_kind and len(kinds) > 1:
        raise RequestError.field(
            "training_data_url",
            "the dataset must contain only videos or only images, found both "
            f"(e.g. '{kinds['video'][0]}' and '{kinds['image'][0]}')",
        )
    if n_media > recipe.max_media_files:
        raise RequestError.field("training_data_url",
                                 f"the archive has {n_media} media files; at most {recipe.max_media_files} are allowed")

    needs_caption = recipe.captions_required(request)
    samples: list[SampleSpec] = []
    for base in sorted(groups):
        slot = groups[base]
        missing = [r for r in set(recipe.roles.values()) if r not in slot and r not in recipe.optional_roles]
        if missing:
            present = next(iter(slot.values())).archive_path
            want = [s or "(bare name)" for s, r in recipe.roles.items() if r in missing]
            errors.append(ErrorItem(("body", "training_data_url", present),
                                    f"'{present}' has no matching {' / '.join(want)} file"))
            continue
        cap_file = captions.get(base)
        if cap_file is None and needs_caption:
            errors.append(ErrorItem(("body", "training_data_url", base + CAPTION_EXTENSION),
                                    f"caption '{base}{CAPTION_EXTENSION}' is required (or set trigger_phrase)"))
            continue
        text = ""
        if cap_file is not None:
            with open(cap_file.local_path, "rb") as fh:
                text = fh.read(64 * 1024).decode("utf-8", errors="replace")
        infos: dict[str, MediaInfo] = {}
        for role, f in slot.items():
            try:
                infos[role] = probe(f.local_path)
            except MediaError as exc:
                errors.append(ErrorItem(("body", "training_data_url", f.archive_path), f"unreadable media: {exc}"))
        if len(infos) != len(slot):
            continue
        target = slot["target"]
        mismatched = [r for r in recipe.matched_roles if infos[r].num_frames != infos["target"].num_frames]
        if mismatched:
            other = slot[mismatched[0]]
            errors.append(ErrorItem(
                ("body", "training_data_url", target.archive_path),
                f"pair '{other.archive_path}' / '{target.archive_path}' has different frame counts "
                f"({infos[mismatched[0]].num_frames} vs {infos['target'].num_frames}); trim each pair to the same length"))
            continue
        samples.append(SampleSpec(
            name=target.archive_path,
            kind=infos["target"].kind,
            caption=final_caption(request.trigger_phrase, text),
            media={r: f.local_path for r, f in slot.items()},
            info=infos,
            archive_paths={r: f.archive_path for r, f in slot.items()},
        ))
    if errors:
        raise RequestError(errors)

    timed = ("target", *recipe.matched_roles)  # other roles follow the target's length (masks held or trimmed)
    samples = [s for s in samples if _long_enough(s, request, diag, timed)]
    if not samples:
        raise RequestError(ErrorItem(("body", "training_data_url"), "no usable samples left after checks"),
                           skipped=diag.skipped)
    return samples


def will_split(info: MediaInfo, request: TrainingRequest) -> bool:
    return info.kind == "video" and request.split_input_into_scenes and info.duration > request.split_input_duration_threshold


def _long_enough(sample: SampleSpec, request: TrainingRequest, diag: Diagnostics, roles: tuple[str, ...]) -> bool:
    """Spec: a clip shorter than number_of_frames at frame_rate is skipped (unless auto_scale_input fits it).

    Clips that will be split into scenes are judged per scene later, during preprocessing.
    """
    if sample.kind == "audio":
        return _audio_long_enough(sample, request, diag, roles)
    if sample.kind != "video" or request.auto_scale_input:
        return True
    for role, info in sample.info.items():
        if role not in roles or will_split(info, request):
            continue
        have = frames_available(info.duration, request.frame_rate)
        if have < request.number_of_frames:
            diag.skip(sample.archive_paths[role],
                      f"too short: {have} frames at {request.frame_rate} fps ({info.duration:.2f} s), "
                      f"need {request.number_of_frames} (enable auto_scale_input to fit it)")
            return False
    return True


def _audio_long_enough(sample: SampleSpec, request, diag: Diagnostics, roles: tuple[str, ...]) -> bool:
    """Audio-only (fal page): a clip shorter than `audio_duration_seconds` is skipped (both sides of a pair)."""
    need = request.audio_duration_seconds
    for role, info in sample.info.items():
        if info.kind == "audio" and info.duration + 1e-3 < need:
            diag.skip(sample.archive_paths[role], f"too short: {info.duration:.2f} s of audio, need "
                                                  f"audio_duration_seconds = {need:g} s")
            return False
    return True


def resolve_audio(recipe: Recipe, request: TrainingRequest, samples: list[SampleSpec], diag: Diagnostics) -> bool:
    """Whether the clips' audio is trained (generated or frozen), from the recipe's audio role.

    generated / frozen: every clip the conditions name (and the target) needs an audible track. auto (spec
    `with_audio`): null = on when every clip has an audio track; true = required (clips without one are named);
    false = off. A silent but present track counts as audio there."""
    if recipe.audio == ABSENT:
        return False
    if recipe.audio != AUTO:
        require_audible(samples, recipe.audible_roles)
        return True
    wanted = getattr(request, recipe.audio_field)
    if wanted is False:
        return False
    field_name = recipe.audio_field
    if any(s.kind == "image" for s in samples):
        if wanted:
            raise RequestError.field(field_name, "images have no audio: set with_audio to false or null")
        return False
    lacking = [s.archive_paths["target"] for s in samples if not s.info["target"].has_audio]
    if wanted and lacking:
        raise RequestError([ErrorItem(("body", "training_data_url", name),
                                      f"'{name}' has no audio track but with_audio is true") for name in lacking])
    if lacking:
        diag.warn(f"training video only: {len(lacking)} clip(s) have no audio track (e.g. '{lacking[0]}')")
        return False
    return True


SILENCE_PEAK = 1e-3  # below this peak a track is treated as silent (about -60 dBFS)


def require_audible(samples: list[SampleSpec], roles: tuple[str, ...]) -> None:
    """Every named clip must have an audio track that is not silence; each offender is named."""
    from ..media.audio import load_audio

    errors = []
    for s in samples:
        for role in roles:
            if isinstance(role, tuple):  # alternatives (a2v: `_audio`, else the `_start` video's track)
                role = next((r for r in role if r in s.info), role[-1])
            if role not in s.info:
                continue
            name, info = s.archive_paths[role], s.info[role]
            if not info.has_audio:
                errors.append(ErrorItem(("body", "training_data_url", name), f"'{name}' has no audio track"))
                continue
            wave = load_audio(s.media[role], 0.0, max(info.duration, 0.1), 16000)
            if float(abs(wave).max(initial=0.0)) < SILENCE_PEAK:
                errors.append(ErrorItem(("body", "training_data_url", name), f"'{name}' has a silent audio track"))
    if errors:
        raise RequestError(errors)
