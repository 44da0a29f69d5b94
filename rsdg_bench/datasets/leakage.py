"""Spatial leakage audit: do samples of different splits of one domain cover the same ground?

A model judged on a test tile that overlaps one of its training tiles has seen part of the answer. For
every georeferenced prepared dataset, `prepare` compares the footprints of each pair of splits within a
domain (geopandas spatial join) and records the pairs whose interiors intersect; touching edges (adjacent
tiles of one scene) do not count. Footprints of different domains of one dataset are not compared: they
are often the same scene in another modality, by design.
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import geopandas as gpd


def split_overlaps(footprints: gpd.GeoDataFrame) -> dict[str, int]:
    """{"domain: split_a/split_b": number of overlapping sample pairs} for every pair with any overlap."""
    import geopandas as gpd
    found: dict[str, int] = {}
    for domain, in_domain in footprints.groupby("domain"):
        splits = {split: frame[["sample_id", "geometry"]] for split, frame in in_domain.groupby("split")}
        for a, b in combinations(sorted(splits), 2):
            pairs = gpd.sjoin(splits[a], splits[b], predicate="intersects", how="inner")
            if pairs.empty:
                continue
            left = splits[a].geometry.loc[pairs.index].to_numpy()
            right = splits[b].geometry.loc[pairs["index_right"]].to_numpy()
            overlapping = int(sum(not a_shape.touches(b_shape) for a_shape, b_shape in zip(left, right, strict=True)))
            if overlapping:
                found[f"{domain}: {a}/{b}"] = overlapping
    return found
