"""Feeding a pretrained encoder the bands it was trained on, matched by name from a task's bands.

Encoders name their input bands as their training data did (Sentinel-2's `B4`, torchgeo's `B8a`, Satlas's
`B04`, an aerial camera's `red`); the prepared datasets name theirs as their releases do. Matching is by name
first (case and zero-padding aside: `B04` = `B4`, `B8a` = `B8A`), then by spectral family: a Sentinel-2 band and
a camera's band of the same colour (`B4` ↔ `red`, `B8` ↔ `nir`), which is how remote-sensing benchmarks feed an
aerial RGB image to a Sentinel-2 encoder. An encoder band the task lacks is an error naming it, unless the
chosen policy says what to do:

- `error` (the default): refuse, naming the missing bands;
- `zero_fill`: feed zeros after normalization (the band's training mean) in its place;
- `drop`: remove the band from the encoder's first layer (its input channels' weights are sliced off).

The match, with how each band was found, goes into the record (`BandMatch.record`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from rsdg_bench.base.errors import AdapterError

BandPolicy = Literal["error", "zero_fill", "drop"]
BAND_POLICIES: tuple[BandPolicy, ...] = ("error", "zero_fill", "drop")

# Spectral family and centre wavelength (µm) of the bands the presets and the prepared datasets name. Sentinel-2
# MSI centre wavelengths (S2A, ESA's spectral response functions, rounded); a camera's red / green / blue / NIR
# take Sentinel-2's B4 / B3 / B2 / B8 centres, as DOFA and Panopticon feed RGB images.
_SENTINEL2 = {
    "B1": ("coastal", 0.443), "B2": ("blue", 0.490), "B3": ("green", 0.560), "B4": ("red", 0.665),
    "B5": ("red_edge_1", 0.705), "B6": ("red_edge_2", 0.740), "B7": ("red_edge_3", 0.783), "B8": ("nir", 0.842),
    "B8A": ("nir_narrow", 0.865), "B9": ("water_vapour", 0.945), "B10": ("cirrus", 1.375),
    "B11": ("swir_1", 1.610), "B12": ("swir_2", 2.190),
}
_CAMERA = {"RED": "red", "R": "red", "GREEN": "green", "G": "green", "BLUE": "blue", "B": "blue", "NIR": "nir",
           "IR": "nir"}
_FAMILY_WAVELENGTH = {family: wavelength for family, wavelength in _SENTINEL2.values()}


def canonical_band(name: str) -> str:
    """A band name as matching compares it: upper case, Sentinel-2's zero padding dropped (`B04` → `B4`)."""
    upper = name.strip().upper()
    match = re.fullmatch(r"B0*(\d+)(A?)", upper)
    return f"B{match.group(1)}{match.group(2)}" if match else upper


def band_family(name: str) -> str | None:
    """The spectral family of a band name (`B4` and `red` are both `red`), or None for one it does not know
    (SAR polarisations, indices): such bands match by name only."""
    canonical = canonical_band(name)
    if canonical in _SENTINEL2:
        return _SENTINEL2[canonical][0]
    return _CAMERA.get(canonical)


def band_wavelength(name: str) -> float | None:
    """The centre wavelength in µm of a band name's family, or None."""
    family = band_family(name)
    return _FAMILY_WAVELENGTH.get(family) if family else None


@dataclass(frozen=True)
class BandMatch:
    """For each of the encoder's bands, in its order: the task band that feeds it (None: filled or dropped) and
    how it was found (`name`, `family`, `zero_fill`, `drop`)."""

    encoder_bands: tuple[str, ...]
    task_bands: tuple[str | None, ...]
    how: tuple[str, ...]
    policy: BandPolicy

    @property
    def fed(self) -> tuple[str, ...]:
        """The task bands the harness selects, in the order the encoder takes them (filled bands left out)."""
        return tuple(band for band in self.task_bands if band is not None)

    @property
    def kept(self) -> tuple[int, ...]:
        """Indices of the encoder bands that stay in its first layer (all but the dropped ones)."""
        return tuple(i for i, how in enumerate(self.how) if how != "drop")

    def record(self) -> dict[str, Any]:
        return {"policy": self.policy, "encoder_bands": list(self.encoder_bands),
                "fed_by": {enc: task for enc, task in zip(self.encoder_bands, self.task_bands, strict=True)},
                "how": dict(zip(self.encoder_bands, self.how, strict=True))}


def match_bands(encoder_bands: tuple[str, ...], task_bands: list[str], policy: BandPolicy, where: str) -> BandMatch:
    """Each encoder band's source among `task_bands` (by name, else by spectral family, each task band used once),
    and what `policy` does with the ones the task lacks; `where` names the encoder in errors."""
    if policy not in BAND_POLICIES:
        raise AdapterError(f"unknown band policy {policy!r}", f"use one of {', '.join(BAND_POLICIES)}")
    by_name = {canonical_band(b): b for b in task_bands}
    picked: list[str | None] = []
    how: list[str] = []
    used: set[str] = set()
    for band in encoder_bands:
        found = by_name.get(canonical_band(band))
        kind = "name"
        if found is None or found in used:
            family = band_family(band)
            found = next((b for b in task_bands if family and band_family(b) == family and b not in used), None)
            kind = "family"
        if found is None:
            picked.append(None)
            how.append("zero_fill" if policy == "zero_fill" else "drop")
        else:
            used.add(found)
            picked.append(found)
            how.append(kind)
    missing = [band for band, source in zip(encoder_bands, picked, strict=True) if source is None]
    if missing and policy == "error":
        raise AdapterError(f"{where} takes bands {list(encoder_bands)}; the task's data has {task_bands} and lacks "
                           f"{missing}", "choose a preset for these bands, or say what to do with the missing ones: "
                                         "--model-arg band_policy=zero_fill (zeros after normalization) or "
                                         "band_policy=drop (their input weights removed); the record keeps the choice")
    if len(missing) == len(encoder_bands):
        raise AdapterError(f"none of {where}'s bands {list(encoder_bands)} is among the task's {task_bands}",
                           "choose a preset trained on these bands")
    return BandMatch(tuple(encoder_bands), tuple(picked), tuple(how), policy)
