"""The window grid shared by tiling (prep) and sliding-window inference.

mmseg's rule: per axis `max(L − size + stride − 1, 0) // stride + 1` windows starting at `i·stride`, the
last one clamped to end at the edge; an axis shorter than `size` gets one window of its own length.
"""

from __future__ import annotations


def axis_starts(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of every window along one axis."""
    count = max(length - size + stride - 1, 0) // stride + 1
    spans = []
    for i in range(count):
        end = min(i * stride + size, length)
        spans.append((max(end - size, 0), end))
    return spans


def window_grid(height: int, width: int, size: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Row-major windows as (y0, y1, x0, x1)."""
    return [(y0, y1, x0, x1) for y0, y1 in axis_starts(height, size, stride)
            for x0, x1 in axis_starts(width, size, stride)]
