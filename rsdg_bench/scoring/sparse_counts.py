"""Per-sample counts held as their non-zero cells, while a split is evaluated and in its record.

A split's per-image confusion matrices are N rows of K·K int64 counts, almost all zero: an image holds a
few classes, and a classified sample exactly one (label, prediction) cell. Held dense, WILDS fMoW's
22,108 OOD test images × 62² classes take 680 MB; held as (row, cell, count) triples, 12 MB (tracemalloc,
numpy's array headers included). The record stores the same triples (`results.encode_per_image`), so
nothing dense is ever built on the way.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SparseCountRows:
    """`rows` rows of `width` int64 counts, each row put once (in any order) and kept as its non-zero cells."""

    def __init__(self, rows: int, width: int) -> None:
        self.rows, self.width = rows, width
        self._filled = np.zeros(rows, dtype=bool)
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, cells, counts) triples

    @classmethod
    def from_dense(cls, dense: Any) -> SparseCountRows:
        """From an N×… array or tensor: row i is `dense[i]` flattened."""
        array = np.asarray(dense, dtype=np.int64)
        out = cls(array.shape[0], int(np.prod(array.shape[1:], dtype=np.int64)))
        for row, counts in enumerate(array.reshape(array.shape[0], -1)):
            out.put(row, counts)
        return out

    @classmethod
    def merged(cls, rows: int, width: int, entries: list[np.ndarray]) -> SparseCountRows:
        """The rows of several `entries()` (of disjoint rows, e.g. one per process of a distributed run)."""
        out = cls(rows, width)
        for part in entries:
            if out._filled[part[:, 0]].any():
                raise ValueError("two parts hold counts of the same row")
            out._filled[part[:, 0]] = True
            out._parts.append((part[:, 0], part[:, 1], part[:, 2]))
        return out

    def put(self, row: int, counts: Any) -> None:
        """Row `row` is `counts` (width values, any shape); a row is put at most once."""
        if self._filled[row]:
            raise ValueError(f"row {row} of {self.rows} was already put")
        flat = np.asarray(counts).reshape(-1)
        if flat.shape[0] != self.width:
            raise ValueError(f"row {row}: {flat.shape[0]} counts for a width of {self.width}")
        cells = np.flatnonzero(flat)
        self._filled[row] = True
        self._parts.append((np.full(len(cells), row, dtype=np.int64), cells, flat[cells].astype(np.int64)))

    def entries(self) -> np.ndarray:
        """E×3 int64 (row, cell, count) for every non-zero cell, by row then cell."""
        if not self._parts:
            return np.zeros((0, 3), dtype=np.int64)
        rows, cells, counts = (np.concatenate(column).astype(np.int64, copy=False) for column in zip(*self._parts))
        order = np.lexsort((cells, rows))
        return np.stack([rows[order], cells[order], counts[order]], axis=1)

    def total(self) -> np.ndarray:
        """The `width` column sums (for per-image confusion matrices, the split's flattened matrix)."""
        total = np.zeros(self.width, dtype=np.int64)
        for _, cells, counts in self._parts:
            np.add.at(total, cells, counts)
        return total

    @property
    def nbytes(self) -> int:
        """Bytes the held cells take (a dense array would take rows × width × 8)."""
        return sum(column.nbytes for part in self._parts for column in part)

    def dense(self) -> np.ndarray:
        """rows×width int64: only for small subsets (the re-run check of a few samples)."""
        out = np.zeros((self.rows, self.width), dtype=np.int64)
        for rows, cells, counts in self._parts:
            out[rows, cells] = counts
        return out
