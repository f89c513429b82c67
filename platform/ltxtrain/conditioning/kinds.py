"""Conditions as data: one small frozen class per condition kind, and the modality roles of a product.

Each kind answers, in one place, everything the pipeline asks of it:
- `roles` / `validation_fields`: the archive files and validation-entry fields it needs (intake, the entry model
  and error messages are built from them);
- `fit(ctx)`: its media fitted to the bucket geometry, as typed cache columns (`video:` columns are encoded with
  the VAE, `audio:` with the audio VAE, `raw:` stored as is) — training samples and validation entries alike;
- `tokens(t)`: which tokens it pins clean or appends — ONE function that training and sampling both call through
  `tokens.assemble`;
- `metadata()`: what it writes into the LoRA metadata and the config JSON.

A product declares its conditions with request-field references (`From("first_frame_conditioning_p")`);
`bind(request)` turns them into plain values, and the bound `ConditionSet` is what travels (as JSON) to
preprocessing, the Train workers and the sampler. Nothing else switches on product names.

This module is a leaf: media helpers are imported inside `fit` (CPU tasks), torch only for tokens.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

GENERATED, FROZEN, ABSENT, AUTO = "generated", "frozen", "absent", "auto"
IMAGE_KINDS = ("image",)
VIDEO_KINDS = ("video",)
MASK_KINDS = ("video", "image")
AUDIO_KINDS = ("audio",)
AUDIO_STEPS_PER_SECOND = 25  # the LTX-2 audio VAE's latent rate (16 kHz, mel hop 160, 4x temporal downsampling)
MAX_AUDIO_SPANS = 32  # spans per audio mask (a fixed-size column, so batches stack)


@dataclass(frozen=True)
class From:
    """A condition parameter read from the request field `name` at bind time (optionally converted); with
    `name=None`, `convert` receives the whole request (a value several fields make, e.g. a rectangle)."""

    name: str | None
    convert: Callable[[Any], Any] | None = None

    def read(self, request) -> Any:
        value = request if self.name is None else getattr(request, self.name)
        return self.convert(value) if self.convert else value


class ConditionInputError(Exception):
    """A condition's input could not be used; `role` names the file (an archive path or a validation field)."""

    def __init__(self, role: str, message: str):
        super().__init__(message)
        self.role, self.message = role, message


@dataclass
class FitContext:
    """What a kind's `fit` may read: the sample's media by role, its time window and the bucket geometry."""

    media: dict[str, str]  # role -> local path
    window: Any  # media.fit.TimeWindow of the target (or of the whole file in validation)
    spec: Any  # media.fit.FitSpec
    auto_scale: bool
    target: Any = None  # fitted target frames uint8 [F, H, W, 3] (None when the entry has no target)
    audio_rate: int = 16000
    audio_normalize: bool = True
    audio_preserve_pitch: bool = True
    validation: bool = False

    def fit_video(self, role: str):
        from ..media.fit import ClipTooShort, decode_and_fit
        from ..media.probe import MediaError

        try:
            try:
                return decode_and_fit(self.media[role], self.spec, self.window, auto_scale=self.auto_scale)
            except ClipTooShort:
                if not self.validation:
                    raise
                return decode_and_fit(self.media[role], self.spec, self.window, auto_scale=True)
        except MediaError as exc:
            raise ConditionInputError(role, f"unreadable media: {exc}") from None

    def fit_image(self, role: str):
        from ..media.fit import fit_image
        from ..media.probe import MediaError

        try:
            return fit_image(self.media[role], self.spec.width, self.spec.height)
        except MediaError as exc:
            raise ConditionInputError(role, f"unreadable image: {exc}") from None

    def fit_first_frame(self, role: str):
        """An image fitted to the bucket, or a video's first frame (fill + centre crop, as every clip)."""
        from ..media.probe import IMAGE_EXTENSIONS

        if self.media[role].lower().endswith(IMAGE_EXTENSIONS):
            return self.fit_image(role)
        from ..media.fit import FitSpec, TimeWindow, decode_and_fit
        from ..media.probe import MediaError

        spec = FitSpec(self.spec.width, self.spec.height, 1, self.spec.frame_rate)
        try:
            return decode_and_fit(self.media[role], spec, TimeWindow(0.0, 1.0 / self.spec.frame_rate), auto_scale=True)
        except MediaError as exc:
            raise ConditionInputError(role, f"unreadable media: {exc}") from None

    def audio(self, role: str, auto_scale: bool | None = None):
        from ..media.audio import AudioMissing, audio_for_clip
        from ..media.probe import MediaError

        auto = self.auto_scale if auto_scale is None else auto_scale
        try:
            return audio_for_clip(self.media[role], self.window, self.spec, auto, self.audio_rate,
                                  self.audio_normalize, self.audio_preserve_pitch)
        except (AudioMissing, MediaError) as exc:
            raise ConditionInputError(role, f"no usable audio: {exc}") from None


class Condition:
    """Base of every kind: declares nothing, pins nothing."""

    kind: ClassVar[str] = ""

    # archive file-name suffix -> (role, accepted media kinds)
    def roles(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        return {}

    def matched_roles(self) -> tuple[str, ...]:
        """Roles whose clip must have exactly the target's frame count."""
        return ()

    def audible_roles(self) -> tuple:
        """Roles whose clip must carry an audible track (a tuple entry: the first of those roles the sample has)."""
        return ()

    def optional_roles(self) -> tuple[str, ...]:
        """Roles a sample may lack (e.g. a2v's `_audio` when the `_start` video has a track)."""
        return ()

    def supplies_audio(self) -> bool:
        """True when this condition, not the target's own track, provides the sample's audio column."""
        return False

    # validation-entry field -> (role, required)
    def validation_fields(self) -> dict[str, tuple[str, bool]]:
        return {}

    def bind(self, request) -> "Condition | None":
        """Request-field references replaced by their values; None drops a condition the request switched off."""
        values = {f.name: f_.read(request) if isinstance(f_ := getattr(self, f.name), From) else f_
                  for f in dataclasses.fields(self)}
        bound = dataclasses.replace(self, **values)
        return bound if getattr(bound, "enabled", True) else None

    def request_fields(self) -> tuple[str, ...]:
        """The request fields this condition reads (its `From` parameters that name one)."""
        return tuple(v.name for f in dataclasses.fields(self)
                     if isinstance(v := getattr(self, f.name), From) and v.name is not None)

    def trained(self, metadata: dict[str, str]) -> "Condition":
        """This bound condition with the parameters a LoRA's metadata records (inference), where no request field
        restores them; default: unchanged."""
        return self

    def pins_audio(self) -> bool:
        """True when the target's own audio is (partly) given clean: previews then encode the entry's audio."""
        return False

    def check(self, request) -> list[tuple[tuple, str]]:
        """Cross-field rules on the bound request: (location under "body", message) pairs, each a 422."""
        return []

    def plan_skip(self, ctx: FitContext) -> str:
        """A reason to skip this training window ("" keeps it); runs on the cheap planning pass."""
        return ""

    def fit(self, ctx: FitContext) -> dict[str, Any]:
        """Fitted media as cache columns: {"video:<name>" | "audio:<name>" | "raw:<name>": array}."""
        return {}

    def tokens(self, t) -> None:
        """Pin or append this condition's tokens on `t` (a `tokens.TokenBuilder`)."""

    def probability(self) -> float | None:
        """Drawn per sample in training when not None (flags reach `tokens` through `t.flag`)."""
        return None

    def metadata(self) -> dict[str, str]:
        return {}

    def to_json(self) -> dict:
        return {"kind": self.kind, **dataclasses.asdict(self)}


# ------------------------------------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class FirstFrame(Condition):
    """Latent frame 0 (= pixel frame 0 of the causal VAE) clean, t = 0, out of the loss, with probability p.
    source "target": the clip's own frame 0; "file": an image (`_start`) written over frame 0 before encoding.
    In sampling the entry's image (`image_field`) is written over frame 0; without one nothing is pinned."""

    kind: ClassVar[str] = "first_frame"
    p: Any = 1.0
    source: str = "target"
    image_field: str | None = "image_url"
    image_required: bool = False
    file_kinds: tuple = IMAGE_KINDS  # a2v also takes a `_start` video (its first frame)

    def roles(self):
        return {"_start": ("first_frame_image", tuple(self.file_kinds))} if self.source == "file" else {}

    def validation_fields(self):
        return {self.image_field: ("first_frame_image", self.image_required)} if self.image_field else {}

    def probability(self):
        return float(self.p)

    def fit(self, ctx):
        if "first_frame_image" not in ctx.media:
            return {}
        return {"video:first_frame": ctx.fit_first_frame("first_frame_image")}

    def tokens(self, t):
        given = t.cols.get("first_frame")
        if given is None and t.sampling:
            return
        on = t.flag(self)
        if t.grid[0] == 1 and not t.sampling:  # a 1-frame sample conditioned on its only frame has nothing to learn
            on = torch.zeros_like(on)
        if given is not None:
            t.clean[:, :, :1] = given[:, :, :1].to(t.clean)
        t.pin_video_frames(0, 1, on)


@dataclass(frozen=True)
class _EdgeFrames(Condition):
    """Prefix and Suffix: k latent frames at one end of the clip given clean, optionally with their audio."""

    latent_frames: Any = 1
    audio: Any = False

    def validation_fields(self):
        return {"video_url": ("target", True)}

    def pins_audio(self):
        return bool(self.audio)


@dataclass(frozen=True)
class Prefix(_EdgeFrames):
    """The first `latent_frames` latent frames clean (pixel frames 0 .. 8(k-1)); with `audio`, the audio latent
    steps of the same time window too."""

    kind: ClassVar[str] = "prefix"

    def tokens(self, t):
        f = t.grid[0]
        k = min(int(self.latent_frames), f)
        t.pin_video_frames(0, k)
        if self.audio and t.audio_clean is not None:
            pixels = 8 * (k - 1) + 1
            t.pin_audio_steps(0, _audio_share(t.audio_clean.shape[1], pixels, f))

    def metadata(self):
        return {"conditioning_latent_frames": str(self.latent_frames), "conditioning_side": "prefix"}


@dataclass(frozen=True)
class Suffix(_EdgeFrames):
    """The last `latent_frames` latent frames clean (the last 8k pixel frames); with `audio`, the audio of the same
    closing window too."""

    kind: ClassVar[str] = "suffix"

    def tokens(self, t):
        f = t.grid[0]
        k = min(int(self.latent_frames), f - 1)
        t.pin_video_frames(f - k, f)
        if self.audio and t.audio_clean is not None:
            n = t.audio_clean.shape[1]
            t.pin_audio_steps(n - _audio_share(n, 8 * k, f), n)

    def metadata(self):
        return {"conditioning_latent_frames": str(self.latent_frames), "conditioning_side": "suffix"}


def _audio_share(audio_steps: int, pixel_frames: int, latent_frames: int) -> int:
    """Audio latent steps covering `pixel_frames` of a clip of 8(F-1)+1 frames (floor: never more than the window)."""
    return audio_steps * pixel_frames // (8 * (latent_frames - 1) + 1)


@dataclass(frozen=True)
class SpatialKeep(Condition):
    """The latent cells inside a pixel rectangle (x0, y0, x1, y1) of the training size clean on every frame.
    Corners snap inward to the 32-px grid; previews at another size scale the rectangle proportionally."""

    kind: ClassVar[str] = "spatial_keep"
    rect: Any = None  # (x0, y0, x1, y1) in pixels of `size`
    size: Any = None  # (W, H) the rectangle is expressed in

    def validation_fields(self):
        return {"video_url": ("target", True)}

    def check(self, request):
        w, h = self.size
        cx0, cy0, cx1, cy1 = self.cells(h // 32, w // 32)
        x0, y0, x1, y1 = self.rect
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            return [(("crop_top_left",), f"the rectangle ({x0}, {y0})-({x1}, {y1}) must lie inside the training "
                                         f"frame {w}x{h} with top-left above and left of bottom-right")]
        if cx1 <= cx0 or cy1 <= cy0:
            return [(("crop_bottom_right",), f"the rectangle ({x0}, {y0})-({x1}, {y1}) holds no whole 32-px latent "
                                             "cell after snapping inward: nothing would be kept")]
        if (cx0, cy0, cx1, cy1) == (0, 0, w // 32, h // 32):
            return [(("crop_bottom_right",), "the rectangle covers the whole frame: nothing would be generated")]
        return []

    def cells(self, grid_h: int, grid_w: int) -> tuple[int, int, int, int]:
        """(cx0, cy0, cx1, cy1) latent cells, inward-snapped."""
        x0, y0, x1, y1 = self.rect
        w, h = self.size
        sx, sy = grid_w / w, grid_h / h  # cells per pixel (1/32 at the training size)
        return (math.ceil(x0 * sx - 1e-9), math.ceil(y0 * sy - 1e-9), math.floor(x1 * sx + 1e-9),
                math.floor(y1 * sy + 1e-9))

    def tokens(self, t):
        _, h, w = t.grid
        cx0, cy0, cx1, cy1 = self.cells(h, w)
        cells = torch.zeros(t.grid)
        cells[:, cy0:cy1, cx0:cx1] = 1.0
        t.pin_video(cells.flatten()[None].expand(t.batch, -1))

    def metadata(self):
        return {"kept_rect": ",".join(map(str, self.rect)), "kept_rect_size": ",".join(map(str, self.size))}

    def trained(self, metadata):
        # the rectangle in the training frame's pixels, with that frame's size: `cells` scales it to any grid
        try:
            rect = tuple(int(v) for v in metadata["kept_rect"].split(","))
            size = tuple(int(v) for v in metadata["kept_rect_size"].split(","))
        except (KeyError, ValueError):
            return self
        return dataclasses.replace(self, rect=rect, size=size) if len(rect) == 4 and len(size) == 2 else self


@dataclass(frozen=True)
class MaskKeep(Condition):
    """A per-sample mask file (`_mask`, image or video) fitted with the clip's crop and timestamps, pooled onto
    the VAE's causal latent grid; WHITE = regenerate (fal polarity), so BLACK (kept) cells are clean."""

    kind: ClassVar[str] = "mask_keep"
    polarity: str = "white_regenerates"

    def roles(self):
        return {"_mask": ("mask", MASK_KINDS)}

    def validation_fields(self):
        return {"video_url": ("target", True), "mask_url": ("mask", True)}

    def latent(self, ctx: FitContext):
        from ..media.fit import frame_times
        from ..media.masks import clip_display_size, fit_mask, mask_to_latent
        from ..media.probe import MediaError

        times = frame_times(ctx.window, ctx.spec, ctx.auto_scale)  # the mask follows the clip's own timestamps
        try:
            pixels = fit_mask(ctx.media["mask"], clip_display_size(ctx.media["target"]), ctx.spec, times=times)
        except MediaError as exc:
            raise ConditionInputError("mask", f"unreadable mask: {exc}") from None
        if self.polarity != "white_regenerates":
            pixels = ~pixels
        return mask_to_latent(pixels)

    def plan_skip(self, ctx):
        if not self.latent(ctx).any():
            return ("mask is all black after fitting to the clip: nothing to regenerate "
                    "(WHITE = regenerate, BLACK = keep)")
        return ""

    def fit(self, ctx):
        import numpy as np

        return {"raw:mask": self.latent(ctx).astype(np.uint8)}

    def tokens(self, t):
        from .tokens import kept_mask

        t.pin_video(kept_mask(t.cols["mask"]))

    def metadata(self):
        return {"mask_rule": "white_regenerates_causal_latent_max"}


@dataclass(frozen=True)
class ReferenceVideo(Condition):
    """IC-LoRA: the `_start` clip, fitted like the target, downscaled by (spatial, temporal), appended as clean
    tokens laid over the target's space-time extent."""

    kind: ClassVar[str] = "reference_video"
    spatial: Any = 1
    temporal: Any = 1

    def roles(self):
        return {"_start": ("reference", VIDEO_KINDS)}

    def matched_roles(self):
        return ("reference",)

    def validation_fields(self):
        return {"reference_video_url": ("reference", True)}

    def fit(self, ctx):
        from ..media.reference import scale_reference

        return {"video:reference": scale_reference(ctx.fit_video("reference"), int(self.spatial), int(self.temporal))}

    def tokens(self, t):
        from .tokens import Reference, pack_video, reference_coords

        ref = Reference(t.cols["reference"].float(), int(self.spatial), int(self.temporal))
        t.append_video(pack_video(ref.latents), reference_coords(t.rope, ref, t.fps, ref.latents.device))

    def metadata(self):
        # the names LTX-2's IC-LoRA pipeline reads, plus the explicit spatial name; always written (even for 1)
        s, tt = str(self.spatial), str(self.temporal)
        return {"reference_downscale_factor": s, "reference_spatial_scale_factor": s,
                "reference_temporal_scale_factor": tt}


@dataclass(frozen=True)
class ReferenceAudio(Condition):
    """The reference clip's audio (or a separate file in validation) as clean audio tokens from t = 0."""

    kind: ClassVar[str] = "reference_audio"
    source: str = "reference"  # the role whose track is the reference audio
    suffix: str | None = None  # a2a: the reference is its own audio file (`_start`); None: another kind's clip
    required: bool = False  # the validation entry must bring `reference_audio_url`

    def roles(self):
        return {self.suffix: (self.source, AUDIO_KINDS)} if self.suffix else {}

    def audible_roles(self):
        return (self.source, "target")

    def validation_fields(self):
        return {"reference_audio_url": ("reference_audio", self.required)}

    def fit(self, ctx):
        role = "reference_audio" if "reference_audio" in ctx.media else self.source
        auto = None
        if ctx.validation:  # a preview input of another length (or an audio-only file): stretch it over the preview
            from ..media.fit import frames_available
            from ..media.probe import probe

            info = probe(ctx.media[role])
            auto = info.kind != "video" or frames_available(info.duration, ctx.spec.frame_rate) < ctx.spec.num_frames
        return {"audio:ref_audio": ctx.audio(role, auto)}

    def tokens(self, t):
        ref = t.cols["ref_audio"].float()
        t.append_audio(ref, t.audio_rope.prepare_audio_coords(ref.shape[0], ref.shape[1], ref.device))


@dataclass(frozen=True)
class Keyframe(Condition):
    """One pixel frame ("last", "middle" or an index) encoded alone as a 1-frame latent and appended as clean
    tokens at that frame's RoPE time. Training takes it from the fitted clip; previews from `image_field`."""

    kind: ClassVar[str] = "keyframe"
    position: Any = "last"
    image_field: str | None = None
    enabled: Any = True
    image_required: bool = True  # False: optional in the entry model, required (422) only when enabled

    @property
    def name(self) -> str:
        return f"keyframe_{self.position}"

    def index(self, num_frames: int) -> int:
        if self.position == "last":
            return num_frames - 1
        if self.position == "middle":
            return (num_frames - 1) // 2
        return int(self.position)

    def validation_fields(self):
        return {self.image_field: (self.name, self.image_required)} if self.image_field else {}

    def check(self, request):
        if not self.image_field:
            return []
        return [(("validation", i, self.image_field), f"{self.image_field} is required for the {self.position} keyframe")
                for i, entry in enumerate(request.validation) if not getattr(entry, self.image_field, None)]

    def fit(self, ctx):
        if self.name in ctx.media:
            return {f"video:{self.name}": ctx.fit_image(self.name)}
        frame = ctx.target[self.index(ctx.target.shape[0])]
        return {f"video:{self.name}": frame[None]}

    def tokens(self, t):
        from .tokens import pack_video

        lat = t.cols[self.name].float()  # [B, C, 1, H, W]
        b, _, _, h, w = lat.shape
        coords = t.rope.prepare_video_coords(b, 1, h, w, lat.device, fps=t.fps)  # time [0, 1/fps)
        coords[:, 0] = coords[:, 0] + self.index(8 * (t.grid[0] - 1) + 1) / t.fps
        t.append_video(pack_video(lat), coords)

    def metadata(self):
        return {f"{self.name}": "appended"}


# ------------------------------------------------------------------------------------------------- audio kinds
@dataclass(frozen=True)
class GivenAudio(Condition):
    """a2v: the conditioning track, from `<name>_audio` when present, else the `source` clip's own track (the
    target's track is ignored). It fills the "audio" column; with a frozen audio role it is clean everywhere.
    Read from t = 0 and fitted to the target's fitted duration (pitch-preserving stretch when the request says so)."""

    kind: ClassVar[str] = "given_audio"
    source: str = "first_frame_image"
    audio_field: str = "audio_url"

    def roles(self):
        return {"_audio": ("given_audio", AUDIO_KINDS)}

    def optional_roles(self):
        return ("given_audio",)

    def audible_roles(self):
        return (("given_audio", self.source),)

    def supplies_audio(self):
        return True

    def pins_audio(self):
        return True

    def validation_fields(self):
        return {self.audio_field: ("given_audio", True)}

    def fit(self, ctx):
        from ..media.fit import frames_available
        from ..media.probe import probe

        role = "given_audio" if "given_audio" in ctx.media else self.source
        info = probe(ctx.media[role])
        have = frames_available(info.duration, ctx.spec.frame_rate)
        # shorter than the clip (or a preview input of another length): stretch it over the clip's duration
        return {"audio:audio": ctx.audio(role, ctx.auto_scale or have < ctx.spec.num_frames or ctx.validation)}


@dataclass(frozen=True)
class GivenVideo(Condition):
    """v2a: the clip's video is the frozen modality (the recipe's `video=FROZEN` pins it clean everywhere); this
    kind only names what a preview needs: the video to score (`video_url`), fitted like a training clip."""

    kind: ClassVar[str] = "given_video"

    def validation_fields(self):
        return {"video_url": ("target", True)}


def audio_step_mask(spans, steps: int, seconds_per_step: float = 1.0 / AUDIO_STEPS_PER_SECOND) -> torch.Tensor:
    """[K, 2] seconds to regenerate (NaN rows = padding) -> [steps] float, 1 = regenerate: step i (at i/25 s)
    is regenerated iff its time lies inside a span (start inclusive, end exclusive)."""
    times = torch.arange(steps, dtype=torch.float64) * seconds_per_step + 1e-4  # spans travel as float32
    out = torch.zeros(steps, dtype=torch.bool)
    for start, end in torch.as_tensor(spans, dtype=torch.float64).reshape(-1, 2).tolist():
        if start == start and end == end:  # not NaN padding
            out |= (times >= start) & (times < end)
    return out.float()


def read_audio_spans(path: str, seconds: float) -> list[tuple[float, float]]:
    """A `_mask.json` ([[start, end], ...] seconds to regenerate) clipped to [0, seconds]; ValueError says why."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    ok = isinstance(data, list) and all(isinstance(r, (list, tuple)) and len(r) == 2 and
                                        all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in r)
                                        for r in data)
    if not ok:
        raise ValueError("must be a JSON list of [start, end] second pairs, e.g. [[1.0, 2.0], [3.5, 4.0]]")
    bad = [r for r in data if not 0 <= r[0] < r[1]]
    if bad:
        raise ValueError(f"range {list(bad[0])} must have 0 <= start < end")
    if len(data) > MAX_AUDIO_SPANS:
        raise ValueError(f"at most {MAX_AUDIO_SPANS} ranges, got {len(data)}")
    return [(float(a), float(min(b, seconds))) for a, b in data if a < seconds]


@dataclass(frozen=True)
class AudioSpans(Condition):
    """audio-inpaint: `<name>_mask.json` lists [start, end] seconds to REGENERATE; every other audio latent step
    is clean (t = 0, out of the loss). Ranges past the bucket are clipped; a window left with none is skipped."""

    kind: ClassVar[str] = "audio_spans"

    def roles(self):
        return {"_mask": ("audio_mask", ("json",))}

    def validation_fields(self):
        return {"audio_url": ("target", True), "mask_url": ("audio_mask", True)}

    def pins_audio(self):
        return True

    def spans(self, ctx: FitContext):
        seconds = ctx.spec.num_frames / ctx.spec.frame_rate
        try:
            return read_audio_spans(ctx.media["audio_mask"], seconds)
        except ValueError as exc:
            raise ConditionInputError("audio_mask", f"unusable audio mask: {exc}") from None

    def plan_skip(self, ctx):
        if not self.spans(ctx):
            return "the mask's ranges all lie past audio_duration_seconds: nothing to regenerate"
        return ""

    def fit(self, ctx):
        import numpy as np

        table = np.full((MAX_AUDIO_SPANS, 2), np.nan, np.float32)
        spans = self.spans(ctx)
        table[: len(spans)] = spans
        return {"raw:audio_spans": table}

    def tokens(self, t):
        n = t.audio_clean.shape[1]
        regen = torch.stack([audio_step_mask(s, n) for s in t.cols["audio_spans"].cpu()])
        t.audio_cond = torch.maximum(t.audio_cond, (1.0 - regen).to(t.audio_cond))

    def metadata(self):
        return {"mask_rule": "audio_spans_regenerate_25_per_second"}


@dataclass(frozen=True)
class AudioWindow(Condition):
    """audio-extend: the first (`side` "prefix") or last ("suffix") `seconds` of the audio clean:
    round(seconds x 25) latent steps (at least one step is always left to generate)."""

    kind: ClassVar[str] = "audio_window"
    side: str = "prefix"
    seconds: Any = 2.0

    def validation_fields(self):
        return {"audio_url": ("target", True)}

    def pins_audio(self):
        return True

    def steps(self, total: int) -> int:
        return min(int(round(float(self.seconds) * AUDIO_STEPS_PER_SECOND)), total - 1)

    def tokens(self, t):
        n = t.audio_clean.shape[1]
        k = self.steps(n)
        if self.side == "prefix":
            t.pin_audio_steps(0, k)
        else:
            t.pin_audio_steps(n - k, n)

    def metadata(self):
        return {"conditioning_seconds": f"{float(self.seconds):g}", "conditioning_side": self.side}


KINDS: dict[str, type[Condition]] = {k.kind: k for k in (FirstFrame, Prefix, Suffix, SpatialKeep, MaskKeep,
                                                          ReferenceVideo, ReferenceAudio, Keyframe, GivenAudio,
                                                          GivenVideo, AudioSpans, AudioWindow)}


@dataclass(frozen=True)
class ConditionSet:
    """A bound recipe's conditioning: the role of each modality and the condition list (what travels)."""

    video: str = GENERATED
    audio: str = ABSENT
    items: tuple[Condition, ...] = ()

    def find(self, kind: type) -> Condition | None:
        return next((c for c in self.items if isinstance(c, kind)), None)

    def metadata(self) -> dict[str, str]:
        """The LoRA file's metadata (string values)."""
        out: dict[str, str] = {}
        for c in self.items:
            out.update(c.metadata())
        return out

    def config(self) -> dict:
        """The config JSON's condition fields (numbers where they are numbers)."""
        out = {}
        for c in self.items:
            out.update({k: int(v) if v.isdigit() else v for k, v in c.metadata().items()})
        return out

    def to_json(self) -> dict:
        return {"video": self.video, "audio": self.audio, "items": [c.to_json() for c in self.items]}

    @classmethod
    def from_json(cls, data: dict | None) -> "ConditionSet":
        if not data:
            return cls()
        items = []
        for d in data.get("items", []):
            d = dict(d)
            kind = KINDS[d.pop("kind")]
            items.append(kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}))
        return cls(data.get("video", GENERATED), data.get("audio", ABSENT), tuple(items))


def roles_of(conditions, target_suffix: str) -> dict[str, tuple[str, tuple[str, ...] | None]]:
    """Archive suffix -> (role, media kinds; None = the product's own kinds) for a target and its conditions."""
    out: dict[str, tuple[str, tuple[str, ...] | None]] = {target_suffix: ("target", None)}
    for c in conditions:
        out.update(c.roles())
    return out


def validation_fields_of(conditions) -> dict[str, tuple[str, bool]]:
    """Entry field -> (role, required) over all conditions (a field two kinds need is required if either says so)."""
    out: dict[str, tuple[str, bool]] = {}
    for c in conditions:
        for name, (role, required) in c.validation_fields().items():
            prev = out.get(name)
            out[name] = (role, required or bool(prev and prev[1]))
    return out

