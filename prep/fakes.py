"""Helpers for the fake raw downloads: zipping folders into archives named as the real ones."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path


def zip_folders(root: Path, out: Path, folders: list[str], keep_folder: bool = True) -> Path:
    """Zip each `root/<folder>` into `out/<folder>.zip` (with the folder as the archive's top entry when
    `keep_folder`, else its content at the archive root), remove `root`, and return `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        source = root / folder
        if not source.is_dir():
            continue
        with zipfile.ZipFile(out / f"{folder}.zip", "w", compression=zipfile.ZIP_STORED) as zf:
            for path in sorted(source.rglob("*")):
                base = root if keep_folder else source
                zf.write(path, path.relative_to(base).as_posix())
    shutil.rmtree(root)
    return out
