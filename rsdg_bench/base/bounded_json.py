"""Parsing JSON someone else wrote, within bounds: its size and its nesting depth.

`json.loads` accepts any depth up to Python's recursion limit, and what comes after it does not:
pydantic's serializer, `canonical_json` and recursive comparisons fail at a few hundred levels with
errors that are not a user's (a traceback instead of a refusal). No file the harness writes nests deeper
than a dozen levels, so anything deeper than `MAX_DEPTH` is refused before it is parsed.

The depth is measured on the bytes, at C speed (a record holds millions of small lists): escaped
backslashes and quotes are dropped, the text between quotes (strings) is cut out, and what remains is the
JSON's structure, whose running bracket count is its depth.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

MAX_DEPTH = 64
_STEP = np.zeros(256, dtype=np.int8)  # byte → +1 opens a level, −1 closes one, 0 neither
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in the JSON text `data` (valid or not: a malformed text gets
    a depth too, and then fails to parse)."""
    text = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = b"".join(text.split(b'"')[::2])  # the pieces between strings
    steps = _STEP[np.frombuffer(structure, dtype=np.uint8)]
    steps = steps[steps != 0].astype(np.int64)
    return int(np.cumsum(steps).max()) if steps.size else 0


def loads_bounded(data: bytes, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads(data)` after checking its size and depth; a ValueError saying which bound was passed
    (callers turn it into their own error naming the file)."""
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes, more than {max_bytes} allowed")
    depth = json_depth(data)
    if depth > max_depth:
        raise ValueError(f"JSON nested {depth} levels deep, more than {max_depth} allowed")
    try:
        return json.loads(data)
    except RecursionError as exc:  # cannot happen below MAX_DEPTH; kept so no bound is assumed silently
        raise ValueError(f"JSON nested too deeply: {exc}") from exc
