"""IC-LoRA reference scaling: a coarser (smaller, lower-fps) control clip derived from the fitted reference."""

from __future__ import annotations

import cv2
import numpy as np


def reference_frame_indices(num_frames: int, temporal: int) -> list[int]:
    """[0] + range(1, F, S): frame 0 stays (the causal VAE's lone first frame), then every S-th frame.

    With (F - 1) divisible by S and (F - 1) / S a multiple of 8 the result is again 8k+1 frames long.
    """
    return [0] + list(range(1, num_frames, temporal)) if temporal > 1 else list(range(num_frames))


def scale_reference(frames: np.ndarray, spatial: int = 1, temporal: int = 1) -> np.ndarray:
    """uint8 [F, H, W, 3] fitted like the target -> [F', H/s, W/s, 3] (area filter: no aliasing when shrinking)."""
    out = frames[reference_frame_indices(frames.shape[0], temporal)]
    if spatial > 1:
        h, w = frames.shape[1] // spatial, frames.shape[2] // spatial
        out = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in out])
    return np.ascontiguousarray(out)
