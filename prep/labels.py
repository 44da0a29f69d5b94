"""Label encodings: colour-coded label images → class indices, with unknown colours reported, not guessed."""

from __future__ import annotations

from functools import cache

import numpy as np

from rsdg_bench.base.errors import DataError

_ROWS_PER_BLOCK = 256  # rows decoded at a time: the 24-bit keys of a 6000-pixel-wide label block are 6 MiB


def _rgb_keys(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]


@cache
def _colour_table(palette: tuple[tuple[tuple[int, int, int], int], ...]) -> tuple[np.ndarray, int]:
    """A 2²⁴-entry uint8 table, 24-bit colour → class index, and the value it holds for colours outside the
    palette (one that no palette colour maps to). 16 MiB, built once per palette."""
    unused = next(v for v in range(255, -1, -1) if v not in {index for _, index in palette})
    table = np.full(1 << 24, unused, dtype=np.uint8)
    for (red, green, blue), index in palette:
        table[(red << 16) | (green << 8) | blue] = index
    return table, unused


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
    resampled label file has far more and still raises. Colours are looked up in a 2²⁴-entry table, a
    block of rows at a time, so a 6000² label needs its indices and a few MiB besides, not ~800 MB.
    """
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise DataError(f"{where}: expected an H×W×3 uint8 colour label, got {rgb.dtype} {rgb.shape}")
    table, off_palette = _colour_table(tuple(sorted(palette.items())))
    indices = np.empty(rgb.shape[:2], dtype=np.uint8)
    for row in range(0, rgb.shape[0], _ROWS_PER_BLOCK):
        np.take(table, _rgb_keys(rgb[row:row + _ROWS_PER_BLOCK]), out=indices[row:row + _ROWS_PER_BLOCK])
    unknown = indices == off_palette
    stray = int(np.count_nonzero(unknown))
    if stray and stray <= tolerance * unknown.size:
        indices[unknown] = 255
        return indices, stray
    if stray:
        ys, xs = np.nonzero(unknown)
        colour = tuple(int(c) for c in rgb[ys[0], xs[0]])
        distinct = np.unique(_rgb_keys(rgb[ys, xs])).size
        raise DataError(
            f"{where}: colour {colour} at (row {ys[0]}, col {xs[0]}) is not a class colour "
            f"({stray} pixels, {distinct} unknown colour(s))",
            "the label file is not from the expected release, or was resampled/compressed lossily; "
            "use the original label files",
        )
    return indices, 0


def stray_notes(stray_total: int) -> list[str]:
    """The dataset-card note for tolerated off-palette label pixels, if there were any."""
    return [f"{stray_total} off-palette label pixels set to ignore"] if stray_total else []
