"""Submissions on the leaderboard: a folder of bundles, each verified (no code runs), split into the records
of verified bundles (each with its badge, from the maintainer's verification log) and the bundles refused
(with the failing check)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.records.results import ResultRecord, compact_in_memory
from rsdg_bench.submissions.bundle import Bundle, iter_bundles
from rsdg_bench.submissions.verification_log import rerun_in_log
from rsdg_bench.submissions.verify import verify_bundle


@dataclass
class SubmittedRecords:
    records: list[tuple[str, ResultRecord]] = field(default_factory=list)
    badges: dict[str, tuple[str, str]] = field(default_factory=dict)  # record name → (badge, explanation)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (bundle, why)


def submitted_records(folder: Path, data_root: Path, results_root: Path) -> SubmittedRecords:
    """The records of every verified bundle in `folder`, named `<bundle>:<member>`, each with its badge: "re-run"
    only where the maintainer's verification log under `results_root` holds a passed re-run of exactly that
    bundle (`verification_log`), never from a file beside it. A record from a bundle names no local files: its
    saved-prediction and checkpoint paths are dropped, so a bundle can never make the site copy a file of the
    maintainer's."""
    found = SubmittedRecords()
    for path in iter_bundles(folder):
        try:
            verification = verify_bundle(path, data_root)
        except Exception as exc:  # noqa: BLE001 — one hostile bundle never stops the board: it is listed instead
            found.refused.append((str(path), f"submission refused: unreadable: {type(exc).__name__}: {exc}"[:300]))
            continue
        if not verification.passed:
            first = verification.failed[0] if verification.failed else None
            found.refused.append((str(path), f"submission refused: {first.name}: {first.detail}" if first else
                                  "submission refused"))
            continue
        try:
            with Bundle(path) as bundle:
                verification.rerun_samples = rerun_in_log(bundle, results_root)
        except RsdgError:  # changed since it was verified a moment ago: not this build's to show
            found.refused.append((str(path), "submission refused: changed while the board was built"))
            continue
        text, why = verification.badge()
        card = verification.manifest.card if verification.manifest else {}
        badge = (text, why + "".join(f"; {field}: {card[field]}" for field in ("paper", "code", "weights", "licence",
                                                                               "contact") if card.get(field)))
        for where, record in verification.records:
            record.predictions = {}
            record.model.checkpoint = {**record.model.checkpoint, "path": None}
            found.records.append((where, compact_in_memory(record)))
            found.badges[where] = badge
    return found
