"""Datasets of whole images with one mask each: pairing files, binary masks, and writing the samples.

Shared by the binary road and building datasets (DeepGlobe, Massachusetts, GlobalRoadNet, WHU Building).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rsdg_bench.base.errors import DataError
from rsdg_bench.datasets.prepared import PreparedWriter, SampleArrays, read_raw_raster

LOSSY_SUFFIXES = {".jpg", ".jpeg"}


@dataclass(frozen=True)
class Pair:
    """One image and its mask, bound for one domain/split."""

    sample_id: str
    domain: str
    split: str
    image: Path
    mask: Path
    source_file: str


def match_pairs(images: dict[str, Path], masks: dict[str, Path], where: str, fix: str) -> list[tuple[str, Path, Path]]:
    """(key, image, mask) for every key, sorted; an image without a mask or the reverse is a DataError."""
    unmatched = sorted(set(images) ^ set(masks))
    if unmatched:
        side = "a mask" if unmatched[0] in images else "an image"
        raise DataError(f"{where}: {len(unmatched)} file(s) without their pair, first {unmatched[0]} (no {side})", fix)
    return [(key, images[key], masks[key]) for key in sorted(images)]


def binary_mask(mask: np.ndarray, where: str, threshold: int | None = None) -> np.ndarray:
    """A 0/1 uint8 mask from a binary label file (first band).

    With `threshold`, values ≥ threshold are foreground (DeepGlobe's masks are not pure 0/255, so its
    documentation says to binarize at 128). Without, the file must hold only {0, 255} or {0, 1}; anything
    else raises, so a resampled or wrong file is not silently thresholded.
    """
    band = mask[0] if mask.ndim == 3 else mask
    if threshold is not None:
        return (band >= threshold).astype(np.uint8)
    values = np.unique(band)
    if set(values.tolist()) <= {0, 255}:
        return (band == 255).astype(np.uint8)
    if set(values.tolist()) <= {0, 1}:
        return band.astype(np.uint8)
    raise DataError(f"{where}: a binary mask must hold 0/255 (or 0/1), found values {values[:8].tolist()}",
                    "the file is not the dataset's original label; re-extract it")


def write_pairs(writer: PreparedWriter, pairs: list[Pair], decode: Callable[[np.ndarray, str], np.ndarray],
                progress: bool, desc: str) -> dict[tuple[str, str], int]:
    """Write every pair as one whole-image sample (JPEG images copied byte for byte); return the counts."""
    expected: dict[tuple[str, str], int] = {}
    for pair in tqdm(pairs, desc=desc, unit="img", disable=not progress):
        expected[(pair.domain, pair.split)] = expected.get((pair.domain, pair.split), 0) + 1
        if writer.has(pair.sample_id):
            continue
        image = read_raw_raster(pair.image)[:3]
        label = decode(read_raw_raster(pair.mask), str(pair.mask))
        if image.shape[1:] != label.shape:
            raise DataError(f"{pair.image} is {image.shape[1]}×{image.shape[2]} but its mask {pair.mask} is "
                            f"{label.shape[0]}×{label.shape[1]}", "the image and mask do not belong together")
        copy = pair.image if pair.image.suffix.lower() in LOSSY_SUFFIXES else None
        writer.add(SampleArrays(sample_id=pair.sample_id, domain=pair.domain, split=pair.split, image=image,
                                label=label, source_file=pair.source_file,
                                window=(0, 0, label.shape[1], label.shape[0]), image_copy_from=copy))
    return expected
