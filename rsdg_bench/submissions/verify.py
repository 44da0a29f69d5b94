"""Verifying a submission bundle: every check a maintainer needs before publishing someone else's numbers.

Each check passes or fails with its reason; a bundle is verified only when all pass. Without `rerun`
nothing from the bundle is executed: its records are parsed as data and checked against the installed tasks
and the maintainer's prepared data. With `rerun` K (and the weights at hand), K samples per split, drawn by
a seeded draw the submitter cannot predict, are evaluated again and must give identical per-image matrices
(see `rerun.py` for the tolerance policy).

Checks, in order: members (the manifest's sha256 of every member, nothing unlisted), schema (each record
parses, sizes in range), digests (no record edited after it was written), per-image sums (each split's
per-image matrices add up to its matrix), metrics (every stored number recomputed from the matrices under
the installed task's headline, classes and convention, not the record's copy of them), model
(one model, one adapter code, the checkpoints the manifest lists), adapter code (the bundled source, or the
built-in / installed plug-in, is the code the records name), task versions (equal to the installed tasks;
a stale one names the fields that changed), definition (each record's task block is the installed task's, and
its numbers follow from its matrices under the installed headline, classes and convention: a bundle's copy
of a task is only compared, never used), data versions (the manifest sha256 of the maintainer's prepared
data), split sizes (the prepared and published split sizes), eligible (no smoke, `--limit`, random-init or
oracle record), complete (every split of every task of the selection), provenance (harness version, commit,
software, date, hashes that agree with the record).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rsdg_bench.base.errors import RsdgError
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultRecord, check_bounds, check_digest, check_per_image, parse_record_json
from rsdg_bench.submissions.bundle import MANIFEST, Bundle, SubmissionManifest, board_exclusion
from rsdg_bench.submissions.local_definition import check_definition, check_metrics_locally
from rsdg_bench.submissions.task_changes import changed_fields

if TYPE_CHECKING:
    from rsdg_bench.datasets.prepared import PreparedDataset


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:15s} {self.detail}"


@dataclass
class Verification:
    """The outcome of verifying one bundle: its checks, its records (those that parsed), and what a badge
    says was verified."""

    bundle: Path
    checks: list[Check] = field(default_factory=list)
    records: list[tuple[str, ResultRecord]] = field(default_factory=list)
    manifest: SubmissionManifest | None = None
    rerun_samples: int = 0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def badge(self) -> tuple[str, str]:
        """(text, explanation) for the leaderboard."""
        if self.rerun_samples:
            return ("verified: re-run", f"submission {self.bundle.name}: every number recomputed from its matrices, "
                                        f"and {self.rerun_samples} samples per split re-run here with identical results")
        return ("verified: recomputed", f"submission {self.bundle.name}: every number recomputed from its matrices and "
                                        "checked against the installed tasks and prepared data (not re-run)")


def _run(verification: Verification, name: str, check: Callable[[], str]) -> bool:
    """Run one check: it returns what it saw (pass) or raises RsdgError with why (fail)."""
    try:
        verification.checks.append(Check(name, True, check()))
        return True
    except RsdgError as exc:
        verification.checks.append(Check(name, False, exc.problem))
        return False
    except Exception as exc:  # noqa: BLE001 — a bundle is hostile input: whatever it breaks is its failure, not a crash
        verification.checks.append(Check(name, False, f"malformed bundle ({type(exc).__name__}: {str(exc)[:200]})"))
        return False


def verify_bundle(path: Path, data_root: Path, catalog: TaskCatalog | None = None) -> Verification:
    """Every check that reads the bundle as data (see the module docstring); `rerun.rerun_samples` adds the
    re-run."""
    verification = Verification(Path(path))
    catalog = catalog or TaskCatalog()
    try:
        bundle = Bundle(path)
    except RsdgError as exc:
        verification.checks.append(Check("bundle", False, exc.problem))
        return verification
    with bundle:
        try:
            verification.manifest = manifest = bundle.manifest()
        except RsdgError as exc:
            verification.checks.append(Check("manifest", False, exc.problem))
            return verification
        except Exception as exc:  # noqa: BLE001 — as in `_run`
            verification.checks.append(Check("manifest", False, f"malformed ({type(exc).__name__}: {exc})"[:300]))
            return verification
        _run(verification, "members", lambda: _members(bundle, manifest))
        if not _run(verification, "schema", lambda: _schema(bundle, verification)):
            return verification
        records = verification.records
        checks: list[tuple[str, Callable[[ResultRecord, str], None]]] = [
            ("digests", check_digest), ("per-image sums", check_per_image),
            ("metrics", lambda r, w: check_metrics_locally(r, catalog, w))]
        for name, check in checks:
            _run(verification, name, partial(_each, records, check))
        _run(verification, "model", lambda: _one_model(records, manifest))
        _run(verification, "adapter code", lambda: _adapter_code(bundle, manifest, records))
        if _run(verification, "task versions", lambda: _task_versions(records, catalog)):
            _run(verification, "definition", lambda: _local_definition(records, catalog))
        _run(verification, "data versions", lambda: _data_versions(records, Path(data_root)))
        _run(verification, "split sizes", lambda: _split_sizes(records, Path(data_root)))
        _run(verification, "eligible", lambda: _eligible(records))
        _run(verification, "complete", lambda: _complete(records, manifest, catalog))
        _run(verification, "provenance", lambda: _provenance(records))
    return verification


def _fail(problem: str) -> RsdgError:
    return RsdgError(problem)


def _members(bundle: Bundle, manifest: SubmissionManifest) -> str:
    present = set(bundle.names) - {MANIFEST}
    listed = set(manifest.members)
    if present - listed:
        raise _fail(f"members not in {MANIFEST}: {', '.join(sorted(present - listed)[:5])}")
    if listed - present:
        raise _fail(f"members listed but missing: {', '.join(sorted(listed - present)[:5])}")
    changed = [name for name in sorted(listed) if bundle.member_sha256(name) != manifest.members[name]]
    if changed:
        raise _fail(f"{len(changed)} members changed since packing (sha256 differs): {', '.join(changed[:5])}")
    return f"{len(listed)} members, every sha256 as listed"


def _schema(bundle: Bundle, verification: Verification) -> str:
    names = bundle.record_members()
    if not names:
        raise _fail("the bundle holds no records (records/<task>/<key>.json)")
    for name in names:
        where = f"{bundle.path.name}:{name}"
        record, _ = parse_record_json(bundle.read(name), where)
        check_bounds(record, where)
        verification.records.append((where, record))
    return f"{len(names)} records parse, sizes in range"


def _each(records: list[tuple[str, ResultRecord]], check: Callable[[ResultRecord, str], None]) -> str:
    for where, record in records:
        check(record, where)
    return f"{len(records)} records"


def _one_model(records: list[tuple[str, ResultRecord]], manifest: SubmissionManifest) -> str:
    for where, record in records:
        if record.model.display_name != manifest.model:
            raise _fail(f"{where} is a record of {record.model.display_name!r}, the bundle is of {manifest.model!r}")
        sha = record.model.checkpoint.get("sha256")
        if sha not in manifest.checkpoints:
            raise _fail(f"{where} names checkpoint {str(sha)[:12]}, which {MANIFEST} does not list")
    codes = {json.dumps([r.model.adapter, r.model.code], sort_keys=True) for _, r in records}
    if len(codes) != 1:
        raise _fail(f"the records were made by {len(codes)} different adapter codes")
    return f"{manifest.model}: {len(manifest.checkpoints)} checkpoints, one adapter code"


def _adapter_code(bundle: Bundle, manifest: SubmissionManifest, records: list[tuple[str, ResultRecord]]) -> str:
    source = manifest.adapter
    code = records[0][1].model.code or {}
    if source.code_sha256 != code.get("sha256"):
        raise _fail(f"{MANIFEST} names adapter code {str(source.code_sha256)[:12]}, the records "
                    f"{str(code.get('sha256'))[:12]}")
    if source.kind == "file":
        from rsdg_bench.models.code_identity import sources_sha256

        files = [(rel, bundle.read(f"adapter/{rel}")) for rel in source.files]
        digest = sources_sha256(files)
        if digest != code.get("sha256"):
            raise _fail(f"the bundled adapter source hashes to {digest[:12]}, the records were made by "
                        f"{str(code.get('sha256'))[:12]}")
        return f"bundled {source.entry} ({len(files)} files) is the code that made the records"
    if source.kind == "built-in":
        from rsdg_bench.models.code_identity import builtin_code_identity
        from rsdg_bench.models.registry import builtin_modules

        if source.name not in builtin_modules():  # only the harness's own code is ever looked up, never a file
            raise _fail(f"{MANIFEST} names {source.name!r} as a built-in adapter; it is not one here")
        here = builtin_code_identity(builtin_modules()[source.name]).get("sha256")  # read, not imported
        if here != code.get("sha256"):
            raise _fail(f"built-in adapter {source.name} here is code {str(here)[:12]}; the records were made by "
                        f"{str(code.get('sha256'))[:12]} (harness {manifest.harness.get('version')} "
                        f"{manifest.harness.get('git_commit', '')[:12]})")
        return f"built-in {source.name}, the same code here"
    if source.kind == "package":
        if code.get("distribution") != source.distribution or code.get("version") != source.version:
            raise _fail(f"{MANIFEST} names {source.distribution} {source.version}; the records "
                        f"{code.get('distribution')} {code.get('version')}")
        return f"plug-in {source.distribution} {source.version} (installed-file list {str(source.record_sha256)[:12]})"
    raise _fail(f"unknown adapter source kind {source.kind!r}")


def _task_versions(records: list[tuple[str, ResultRecord]], catalog: TaskCatalog) -> str:
    for where, record in records:
        if record.task.id not in catalog.tasks:
            raise _fail(f"{where}: task {record.task.id} is not installed here")
        task = catalog.tasks[record.task.id]
        if record.task.hash != task.hash or record.provenance.task_hash != task.hash:
            changes = changed_fields(record.task.resolved, task.model_dump(mode="json"))
            raise _fail(f"{where}: made for another definition of {task.id} (version {record.task.version}, hash "
                        f"{str(record.task.hash)[:12]}; installed version {task.version}, {task.hash[:12]}); "
                        f"changed: {', '.join(changes) or 'the hash only'}")
    return f"{len({r.task.id for _, r in records})} tasks, each the installed definition"


def _local_definition(records: list[tuple[str, ResultRecord]], catalog: TaskCatalog) -> str:
    """Every record judged under the installed task (see `local_definition`), not the block it carries."""
    for where, record in records:
        check_definition(record, catalog.tasks[record.task.id], where)
    return f"{len(records)} records carry the installed headline, classes, convention and definition"


def _prepared(data_root: Path, dataset: str, cache: dict[str, PreparedDataset]) -> PreparedDataset:
    from rsdg_bench.datasets.prepared import PreparedDataset

    if dataset not in cache:
        try:
            cache[dataset] = PreparedDataset.open(data_root, dataset)
        except RsdgError as exc:
            raise _fail(f"{dataset} is not prepared in {data_root} ({exc.problem}); prepare it to compare") from exc
    return cache[dataset]


def _data_versions(records: list[tuple[str, ResultRecord]], data_root: Path) -> str:
    cache: dict[str, PreparedDataset] = {}
    for where, record in records:
        prepared = _prepared(data_root, record.evaluated.dataset, cache)
        if record.provenance.dataset_manifest_sha256 != prepared.manifest_sha256:
            raise _fail(f"{where}: {record.evaluated.slug} was evaluated on data manifest "
                        f"{str(record.provenance.dataset_manifest_sha256)[:12]}; the prepared data here is "
                        f"{prepared.manifest_sha256[:12]}")
    return f"{len(cache)} datasets, the same manifests as here"


def _split_sizes(records: list[tuple[str, ResultRecord]], data_root: Path) -> str:
    cache: dict[str, PreparedDataset] = {}
    for where, record in records:
        split = record.evaluated
        prepared = _prepared(data_root, split.dataset, cache)
        here = prepared.card.split_counts.get(split.domain, {}).get(split.split)
        if split.num_samples != here:
            raise _fail(f"{where}: {split.slug} has {split.num_samples} samples, the prepared split here {here}")
        if split.partial_data:
            raise _fail(f"{where}: {split.slug} has {split.num_samples} samples; the published split has "
                        f"{split.published_samples}")
    return "every split at its prepared size"


def _eligible(records: list[tuple[str, ResultRecord]]) -> str:
    for where, record in records:
        why = board_exclusion(record)
        if why:
            raise _fail(f"{where}: {why}")
    return "no smoke, --limit, random-init or oracle record"


def _complete(records: list[tuple[str, ResultRecord]], manifest: SubmissionManifest, catalog: TaskCatalog) -> str:
    if manifest.suite:
        try:
            tasks = catalog.suite_tasks(manifest.suite)
        except RsdgError as exc:
            raise _fail(f"suite {manifest.suite!r}: {exc.problem}") from exc
    else:
        tasks = [catalog.tasks[t] for t in manifest.tasks if t in catalog.tasks]
    have = {(r.task.id, r.evaluated.role, r.evaluated.slug) for _, r in records}
    missing = [f"{task.id} {ref.slug}" for task in tasks for role, ref in task.evaluation_splits()
               if (task.id, role, ref.slug) not in have]
    if missing:
        raise _fail(f"{len(missing)} splits missing: {', '.join(missing[:6])}" + (" …" if len(missing) > 6 else ""))
    selection = f"suite {manifest.suite}" if manifest.suite else "the listed tasks"
    return f"{len(tasks)} tasks of {selection}, every evaluated split"


def _provenance(records: list[tuple[str, ResultRecord]]) -> str:
    for where, record in records:
        given = record.provenance
        required: tuple[str, ...] = ("harness_version", "git_commit", "date", "task_hash", "dataset_manifest_sha256")
        if not record.model.get("scored_from"):  # a record scored from prediction maps ran no model: no torch
            required += ("torch_version",)
        absent = [name for name in required if not getattr(given, name)]
        if absent:
            raise _fail(f"{where}: provenance lacks {', '.join(absent)}")
        if given.git_commit == "unknown":
            raise _fail(f"{where}: made by a copy of rsdg-bench that cannot say which code it is (git_commit "
                        "'unknown': a source tree without git or version metadata); run it again from a git "
                        "checkout or an installed release")
        if given.checkpoint_sha256 != record.model.checkpoint.get("sha256"):
            raise _fail(f"{where}: provenance names checkpoint {str(given.checkpoint_sha256)[:12]}, the model "
                        f"{str(record.model.checkpoint.get('sha256'))[:12]}")
    commits = sorted({r.provenance.git_commit or "" for _, r in records})
    return f"complete (harness commits: {', '.join(c[:12] for c in commits)})"
