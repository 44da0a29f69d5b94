"""Writers own what they write: an `--out` never replaces something it did not make.

Every command that publishes into `--out` (a leaderboard site, a predictions folder, a bundle) builds its
output beside the target and swaps it in whole. Before that, the target is *claimed*: it may be absent, an
empty folder, or the command's own earlier output, recognised by the marker file that command writes into
every output of its kind (the site marker for a site, `predictions.json` for
predictions, `submission.json` for a bundle). A file where a folder goes, a folder where a file goes, or a
folder of someone else's files is refused with an error saying how to proceed; nothing is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rsdg_bench.base.errors import RsdgError


def claim_folder(out: Path, marker: str, what: str, flag: str = "--out") -> Path:
    """`out` (absolute) if a folder output may be written there: absent, an empty folder, or a folder holding
    `marker` (this command's earlier output, replaced whole). Raises RsdgError otherwise."""
    out = Path(out).absolute()
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise RsdgError(f"{flag} {out} is {'a link' if out.is_symlink() else 'a file'}, not a folder; writing "
                        f"{what} there would replace it",
                        f"pass {flag} a new folder (or move {out.name} away first)")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise RsdgError(f"{flag} {out} holds files and is not {what} (no {marker}); writing there would "
                        "replace them",
                        f"pass {flag} a new or empty folder, or one this command wrote before")
    return out


def claim_file(out: Path, is_own: Callable[[Path], bool], what: str, flag: str = "--out") -> Path:
    """`out` (absolute) if a file output may be written there: absent, or a file `is_own` recognises as this
    command's earlier output. Raises RsdgError for a folder, a link, or someone else's file."""
    out = Path(out).absolute()
    if out.is_symlink() or out.is_dir():
        raise RsdgError(f"{flag} {out} is {'a link' if out.is_symlink() else 'a folder'}; writing {what} there "
                        "would replace it", f"pass {flag} a new file name")
    if out.exists() and not is_own(out):
        raise RsdgError(f"{flag} {out} exists and is not {what}; writing there would replace it",
                        f"pass {flag} a new file name, or remove {out.name} first if it is yours to lose")
    return out
