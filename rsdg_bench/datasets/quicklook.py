"""Images people can look at: a display preview of any stored image and PNG encoding, without torch.

The preview is the first three stored bands (or the single band in grey), each stretched between its 2nd and
98th percentile to 0-255: what the leaderboard's sample predictions and the Hub export's `image_preview` show.
It is for the eye only; numbers are always computed from the stored values.
"""

from __future__ import annotations

import io

import numpy as np


def preview(image: np.ndarray) -> np.ndarray:
    """C×H×W stored values → H×W×3 uint8 for display."""
    values = np.asarray(image, dtype=np.float32)
    bands = values[:3] if values.shape[0] >= 3 else np.repeat(values[:1], 3, axis=0)
    out = np.empty((*bands.shape[1:], 3), dtype=np.uint8)
    for i, band in enumerate(bands):
        low, high = np.percentile(band, [2, 98])
        out[..., i] = np.clip((band - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    return out


def png_bytes(array: np.ndarray) -> bytes:
    """H×W (grey, values kept exactly) or H×W×3 uint8 as a PNG file's bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
