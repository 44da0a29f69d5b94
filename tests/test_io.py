"""Atomic writes give files the mode an ordinary write would: readable by others under the usual umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rsdg_bench.base.io import atomic_write_json, current_umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_follow_the_users_umask(tmp_path: Path, umask: int, mode: int):
    previous = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_json(tmp_path / "site" / "board.json", {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "site" / "board.json").stat().st_mode) == mode
