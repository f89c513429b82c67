"""Scene splitting with PySceneDetect's ContentDetector.

We decode with PyAV ourselves and let swscale shrink each frame straight to ~256 px BGR, instead of the
SceneManager path (full-size BGR conversion, then cv2.resize): same detector, far less per-frame work.
Cut times come from frame timestamps on the same origin as `fit.decode_and_fit`, so windows line up.
"""

from __future__ import annotations

from fractions import Fraction

import av

from .fit import TimeWindow
from .probe import MediaError, MediaInfo, open_container, probe

_DETECT_WIDTH = 256  # PySceneDetect's own auto-downscale target width


def detect_scenes(path: str, threshold: float = 27.0, min_scene_len: float = 0.5) -> list[TimeWindow]:
    from scenedetect import ContentDetector, FrameTimecode
    from scenedetect.common import Timecode

    path = str(path)
    duration = probe(path).duration
    detector = ContentDetector(threshold=threshold, min_scene_len=float(min_scene_len))
    cuts: list[float] = []
    with open_container(path) as container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        tb, origin_pts = vs.time_base, vs.start_time or 0
        w, h = vs.codec_context.width, vs.codec_context.height
        scale = min(1.0, _DETECT_WIDTH / w)
        dw, dh = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
        tc = None
        try:
            for i, frame in enumerate(container.decode(vs)):
                # Exact rational timestamps; fall back to frame numbers when pts are missing.
                pts = frame.pts - origin_pts if frame.pts is not None else None
                tc = (FrameTimecode(Timecode(max(0, pts), tb), rate) if pts is not None
                      else FrameTimecode(i, rate))
                img = frame.reformat(width=dw, height=dh, format="bgr24", interpolation="FAST_BILINEAR",
                                     threads=1)  # swscale threads cost more than they save at this size
                cuts += [c.seconds for c in detector.process_frame(tc, img.to_ndarray())]
        except av.FFmpegError as e:
            raise MediaError(path, f"decoding failed ({e})") from e
        if tc is not None:
            cuts += [c.seconds for c in detector.post_process(tc)]
    return _windows(sorted(set(cuts)), duration)


def _windows(cuts: list[float], duration: float) -> list[TimeWindow]:
    bounds = [0.0] + [c for c in cuts if 0.0 < c < duration] + [duration]
    return [TimeWindow(a, b) for a, b in zip(bounds, bounds[1:])]


def split_windows(info: MediaInfo, enabled: bool, threshold_s: float) -> list[TimeWindow]:
    """Scene windows for clips longer than threshold_s when enabled; otherwise the whole clip as one window."""
    whole = [TimeWindow(0.0, info.duration)]
    if not enabled or info.kind != "video" or info.duration <= threshold_s:
        return whole
    return detect_scenes(info.path) or whole
