"""Label encodings: colour-coded label images → class indices, with unknown colours reported, not guessed."""

from __future__ import annotations

import numpy as np

from rsdg_bench.errors import DataError


def _rgb_keys(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]


def colours_to_indices(rgb: np.ndarray, palette: dict[tuple[int, int, int], int], where: str) -> np.ndarray:
    """Map an H×W×3 uint8 colour label to H×W uint8 indices through `palette` (colour → index, 255 = ignore).

    A colour outside the palette raises DataError naming the file, the colour, how many pixels have it and
    where the first one is: a wrong archive or a resampled (blurred) label must not become silent class 0.
    """
    indices, _ = decode_colour_label(rgb, palette, where, tolerance=0.0)
    return indices


def decode_colour_label(rgb: np.ndarray, palette: dict[tuple[int, int, int], int], where: str,
                        tolerance: float) -> tuple[np.ndarray, int]:
    """Like `colours_to_indices`, but up to a `tolerance` fraction of off-palette pixels become ignore (255).

    Returns the indices and how many pixels were off-palette, for the dataset card. Scattered stray
    colours in hand-drawn labels are tolerated this way (mmseg maps them to ignore silently); a wrong or
    resampled label file has far more and still raises.
    """
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise DataError(f"{where}: expected an H×W×3 uint8 colour label, got {rgb.dtype} {rgb.shape}")
    keys = _rgb_keys(rgb)
    known = np.array(sorted(_rgb_keys(np.array([list(c) for c in palette], dtype=np.uint8)[None])[0]),
                     dtype=np.uint32)
    values = np.array([palette[((int(k) >> 16) & 255, (int(k) >> 8) & 255, int(k) & 255)] for k in known],
                      dtype=np.uint8)
    position = np.clip(np.searchsorted(known, keys), 0, len(known) - 1)
    unknown = known[position] != keys
    stray = int(unknown.sum())
    if stray and stray <= tolerance * unknown.size:
        indices = values[position]
        indices[unknown] = 255
        return indices, stray
    if stray:
        ys, xs = np.nonzero(unknown)
        colour = tuple(int(c) for c in rgb[ys[0], xs[0]])
        distinct = np.unique(keys[unknown]).size
        raise DataError(
            f"{where}: colour {colour} at (row {ys[0]}, col {xs[0]}) is not a class colour "
            f"({int(unknown.sum())} pixels, {distinct} unknown colour(s))",
            "the label file is not from the expected release, or was resampled/compressed lossily; "
            "use the original label files",
        )
    return values[position], 0


def stray_notes(stray_total: int) -> list[str]:
    """The dataset-card note for tolerated off-palette label pixels, if there were any."""
    return [f"{stray_total} off-palette label pixels set to ignore"] if stray_total else []
