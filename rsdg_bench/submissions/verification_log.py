"""The maintainer's verification log: what a leaderboard badge says was checked comes from here only.

A passed `submission verify` adds one entry to `<results root>/verifications/<bundle sha256>.json` (the
results folder `--results` / `RSDG_RESULTS` names: the maintainer's own, trusted like the records in it).
The entry names the bundle's sha256, the checks, how many samples per split were re-run, and when.
`leaderboard build --submissions` looks a bundle up there by its sha256: a "verified: re-run" badge needs an
entry of exactly that bundle with a passed re-run. Nothing that travels with a bundle (a
`<bundle>.verified.json` beside it, a member inside it) can give a badge: a submitter can write those.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from rsdg_bench.base.io import atomic_write_json
from rsdg_bench.submissions.bundle import Bundle
from rsdg_bench.submissions.verify import Verification

LOG_FOLDER = "verifications"
MAX_ENTRY_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def log_path(results_root: Path, bundle_sha256: str) -> Path:
    """The log entry of the bundle with this sha256."""
    if not _SHA256.fullmatch(bundle_sha256):
        raise ValueError(f"not a sha256: {bundle_sha256!r}")
    return Path(results_root) / LOG_FOLDER / f"{bundle_sha256}.json"


def record_verification(verification: Verification, results_root: Path) -> Path:
    """Log a passed verification under the maintainer's results folder; returns the entry's path."""
    if not verification.passed:
        raise ValueError("only a passed verification is logged")
    with Bundle(verification.bundle) as bundle:
        digest = bundle.sha256()
    path = log_path(results_root, digest)
    atomic_write_json(path, {"bundle": verification.bundle.name, "bundle_sha256": digest, "passed": True,
                             "rerun_samples": verification.rerun_samples,
                             "checks": [c.line() for c in verification.checks],
                             "date": datetime.now(UTC).isoformat(timespec="seconds")})
    return path


def rerun_in_log(bundle: Bundle, results_root: Path) -> int:
    """Samples per split re-run by a logged, passed verification of exactly this bundle, else 0."""
    try:
        digest = bundle.sha256()
        path = log_path(results_root, digest)
        if not path.is_file() or path.stat().st_size > MAX_ENTRY_BYTES:
            return 0
        entry = json.loads(path.read_bytes())
        if not isinstance(entry, dict) or entry.get("bundle_sha256") != digest or entry.get("passed") is not True:
            return 0
        samples = entry.get("rerun_samples", 0)
        return samples if isinstance(samples, int) and not isinstance(samples, bool) and samples > 0 else 0
    except (OSError, ValueError, RecursionError):
        return 0
