"""Model submissions: pack → verify passes on the demo; each kind of edit fails verify with the check named;
a re-run catches numbers made up consistently; the leaderboard shows verified bundles with their badge and
lists refused ones."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from rsdg_bench.cli import main
from rsdg_bench.models.model_spec import ModelSpec, default_checkpoint_dir
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.records.results import ResultRecord, record_digest
from rsdg_bench.run.runner import RunSettings, run_tasks
from rsdg_bench.submissions.bundle import MANIFEST, pack
from rsdg_bench.submissions.rerun import rerun_samples
from rsdg_bench.submissions.verify import verify_bundle

FILE_ADAPTER = '''"""A plug-in adapter from a file: a 1×1 convolution over the task's bands."""
import torch

from rsdg_bench.models.adapters import Adapter, InputContract, Normalization


class FileLinear(Adapter):
    name = "file-linear"
    kinds = frozenset({"segmentation"})

    def setup(self, task, band_names):
        self.module = torch.nn.Conv2d(len(band_names), task.class_schema.num_classes, 1)
        self.contract = InputContract(len(band_names), Normalization((127.5,) * len(band_names),
                                                                     (64.0,) * len(band_names)))

    def input_contract(self):
        return self.contract

    def predict(self, x):
        return self.module(x)
'''
DEMO_MODEL = "U-Net R18 (source-only)"  # the model `rsdg-bench demo` trains and runs (rsdg_bench.demo)


@pytest.fixture(scope="module")
def submitted(tmp_path_factory: pytest.TempPathFactory, demo_run: Path, data_root: Path,
              linear_checkpoint: Path) -> dict[str, Path]:
    """The demo's own records of the demo suite (its trained U-Net, which the `trained` checkpoint is a copy of),
    packed as a folder bundle; and one task evaluated by a file adapter, packed with its source (a re-run of
    every sample stays short)."""
    root = tmp_path_factory.mktemp("submitted")
    shutil.copytree(demo_run / "results" / "records", root / "results" / "records")
    card = root / "card.yaml"
    card.write_text("name: U-Net R18\npaper: https://example.org/paper\nlicence: MIT\ncontact: someone@example.org\n")
    pack(root / "results", DEMO_MODEL, [t.id for t in TaskCatalog().suite_tasks("demo")], root / "unet", suite="demo",
         folder=True, card=card)
    adapter_file = root / "plugin" / "file_linear.py"
    adapter_file.parent.mkdir()
    adapter_file.write_text(FILE_ADAPTER)
    spec = f"{adapter_file}:FileLinear"
    file_model = ModelSpec(spec, checkpoint=linear_checkpoint, display_name="file-linear")
    [outcome] = run_tasks([TaskCatalog().task("demo/u2a")], file_model,
                          RunSettings(data_root, root / "file-results", progress=False))
    assert outcome.error is None, outcome.error
    pack(root / "file-results", "file-linear", ["demo/u2a"], root / "file-linear.zip", adapter_spec=spec)
    return {"bundle": root / "unet", "file_bundle": root / "file-linear.zip",
            "checkpoints": default_checkpoint_dir(demo_run / "results", "smp"), "file_checkpoints": linear_checkpoint.parent,
            "results": root / "results", "card": card}


def _failed(bundle: Path, data_root: Path) -> set[str]:
    return {check.name for check in verify_bundle(bundle, data_root).failed}


def test_a_packed_demo_submission_verifies(submitted: dict[str, Path], data_root: Path):
    verification = verify_bundle(submitted["bundle"], data_root)
    assert verification.passed, [c.line() for c in verification.failed]
    assert {c.name for c in verification.checks} >= {
        "members", "schema", "digests", "per-image sums", "metrics", "model", "adapter code", "task versions",
        "data versions", "split sizes", "eligible", "complete", "provenance"}
    manifest = json.loads((submitted["bundle"] / MANIFEST).read_text())
    assert manifest["card"]["licence"] == "MIT" and manifest["suite"] == "demo"
    assert manifest["adapter"]["kind"] == "built-in" and manifest["harness"]["version"]
    assert "environment/pip-freeze.txt" in manifest["members"] and len(manifest["checkpoints"]) == 1
    assert len([m for m in manifest["members"] if m.startswith("records/")]) == 6  # 3 tasks × (source + target)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def _first_record(bundle: Path) -> Path:
    return sorted((bundle / "records").rglob("*.json"))[0]


def _edit_record(bundle: Path, change, restamp: bool = False) -> None:
    """Edit the first record and list its new sha256 in the manifest (so the member check passes and the
    record's own checks are what fail); `restamp` also recomputes its digest, as a forger would."""
    path = _first_record(bundle)
    data = json.loads(path.read_text())
    change(data)
    if restamp:
        record = ResultRecord.model_validate(data)
        from rsdg_bench.records.results import _block_of

        record.metrics = {slug: _block_of(record, slug) for slug in record.confusion_matrices}
        record.digest = record_digest(record)
        data = record.model_dump(mode="json")
    path.write_text(json.dumps(data))
    _relist(bundle, path)


def _relist(bundle: Path, member: Path) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["members"][member.relative_to(bundle).as_posix()] = hashlib.sha256(member.read_bytes()).hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def _slug(data: dict) -> str:
    return next(iter(data["confusion_matrices"]))


def _bump_metric(data: dict) -> None:
    data["metrics"][_slug(data)]["miou"] += 0.01


def _bump_cell(data: dict) -> None:
    data["confusion_matrices"][_slug(data)][0][0] += 1


def _bump_per_image(data: dict) -> None:
    data["per_image_matrices"][_slug(data)]["entries"][0][2] += 1


def _unknown_commit(data: dict) -> None:
    data["provenance"]["git_commit"] = "unknown"  # what a copy without git or version metadata wrote


def _edit_member(bundle: Path) -> None:
    (bundle / "environment" / "pip-freeze.txt").write_text("torch==0.0\n")


@pytest.mark.parametrize("edit, fails", [
    (lambda b: _edit_record(b, _bump_metric), {"metrics"}),
    (lambda b: _edit_record(b, _bump_cell), {"digests", "per-image sums", "metrics"}),
    (lambda b: _edit_record(b, _bump_per_image), {"digests", "per-image sums"}),
    (_edit_member, {"members"}),
    (lambda b: _first_record(b).unlink(), {"members", "complete"}),
    (lambda b: _edit_record(b, _unknown_commit, restamp=True), {"provenance"}),
], ids=["one number", "one matrix cell", "one per-image entry", "one member file", "a record removed",
        "code it cannot name"])
def test_each_edit_fails_verify_with_its_check_named(edit, fails: set[str], submitted: dict[str, Path],
                                                    data_root: Path, tmp_path: Path):
    bundle = _copy(submitted["bundle"], tmp_path)
    edit(bundle)
    assert _failed(bundle, data_root) == fails


def test_an_edited_task_yaml_fails_verify_naming_the_field(submitted: dict[str, Path], data_root: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from rsdg_bench.protocol import task_schema

    tasks = tmp_path / "tasks"
    shutil.copytree(task_schema.package_tasks_dir(), tasks)
    path = tasks / "demo" / "rgb2irrg.yaml"
    path.write_text(path.read_text() + "training: {iterations: 3000}\n")
    monkeypatch.setattr(task_schema, "package_tasks_dir", lambda: tasks)
    verification = verify_bundle(submitted["bundle"], data_root)
    [failed] = verification.failed
    assert failed.name == "task versions" and "demo/rgb2irrg" in failed.detail and "training.iterations" in failed.detail


def test_data_of_another_version_fails_verify(submitted: dict[str, Path], tmp_path: Path):
    assert _failed(submitted["bundle"], tmp_path / "nothing-prepared") == {"data versions", "split sizes"}


@pytest.mark.slow
def test_rerun_passes_on_honest_records_and_catches_made_up_ones(submitted: dict[str, Path], data_root: Path,
                                                                 tmp_path: Path):
    honest = verify_bundle(submitted["bundle"], data_root)
    check = rerun_samples(honest, 1, data_root, submitted["checkpoints"], seed=7)
    assert check.passed and "6 samples of 6 splits" in check.detail and honest.badge()[0] == "verified: re-run"
    # the forgery is caught by comparing matrices, whatever the model: the file adapter's bundle of demo/u2a,
    # whose every sample re-runs in a fraction of the U-Net's time (the U-Net's re-run is checked above)
    import zipfile

    forged = tmp_path / "forged"
    zipfile.ZipFile(submitted["file_bundle"]).extractall(forged)

    def move_a_pixel(data: dict) -> None:  # one pixel of one image moved from wrong to right, matrix kept consistent
        slug = _slug(data)
        k = data["per_image_matrices"][slug]["k"]
        image, cell, count = next(e for e in data["per_image_matrices"][slug]["entries"] if e[1] // k != e[1] % k)
        data["per_image_matrices"][slug]["entries"].remove([image, cell, count])
        data["per_image_matrices"][slug]["entries"] += [[image, cell, count - 1], [image, (cell // k) * (k + 1), 1]]
        data["per_image_matrices"][slug]["entries"] = [e for e in data["per_image_matrices"][slug]["entries"] if e[2]]
        matrix = data["confusion_matrices"][slug]
        matrix[cell // k][cell % k] -= 1
        matrix[cell // k][cell // k] += 1

    _edit_record(forged, move_a_pixel, restamp=True)
    verification = verify_bundle(forged, data_root)
    assert verification.passed, [c.line() for c in verification.failed]  # consistent: only a re-run can tell
    caught = rerun_samples(verification, 1000, data_root, submitted["file_checkpoints"])
    assert not caught.passed and "1 of" in caught.detail and "differ from their records" in caught.detail


def test_a_file_adapter_is_packed_with_its_source_and_re_run_from_it(submitted: dict[str, Path], data_root: Path,
                                                                     tmp_path: Path):
    verification = verify_bundle(submitted["file_bundle"], data_root)
    assert verification.passed, [c.line() for c in verification.failed]
    assert "file_linear.py:FileLinear" in next(c.detail for c in verification.checks if c.name == "adapter code")
    assert rerun_samples(verification, 1, data_root, submitted["file_checkpoints"]).passed
    import zipfile

    folder = tmp_path / "unzipped"
    zipfile.ZipFile(submitted["file_bundle"]).extractall(folder)
    source = folder / "adapter" / "file_linear.py"
    source.write_text(source.read_text() + "\n# changed after the records were made\n")
    _relist(folder, source)
    assert _failed(folder, data_root) == {"adapter code"}


def test_cli_pack_verify_and_leaderboard_with_badges(submitted: dict[str, Path], data_root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]):
    bundles = tmp_path / "submissions"
    bundles.mkdir()
    assert main(["submission", "pack", "--results", str(submitted["results"]), "--model", DEMO_MODEL, "--suite", "demo",
                 "--card", str(submitted["card"]), "--out", str(bundles / "unet.zip")]) == 0
    assert main(["submission", "verify", str(bundles / "unet.zip"), "--data-root", str(data_root),
                 "--results", str(tmp_path / "maintainer")]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 14 and "FAIL" not in out and not (bundles / "unet.zip.verified.json").exists()
    assert len(list((tmp_path / "maintainer" / "verifications").glob("*.json"))) == 1  # the maintainer's log
    refused = _copy(submitted["bundle"], bundles)
    _edit_record(refused, _bump_metric)
    assert main(["submission", "verify", str(refused), "--data-root", str(data_root)]) == 1
    assert "FAIL  metrics" in capsys.readouterr().out
    shutil.copy(bundles / "unet.zip", bundles / "unet-again.zip")  # one model in two bundles: one row, no crash
    site = tmp_path / "site"
    assert main(["leaderboard", "build", "--results", str(tmp_path / "no-results"), "--submissions", str(bundles),
                 "--data-root", str(data_root), "--out", str(site)]) == 0
    suite = (site / "suites" / "demo.html").read_text()
    assert "checked against the installed tasks and prepared data (not re-run)" in suite and DEMO_MODEL in suite
    assert "paper: https://example.org/paper; licence: MIT" in suite  # the model card, on the badge
    pages = "".join(p.read_text() for p in site.rglob("*.html"))
    assert "submission refused: metrics" in pages
    assert "superseded by a newer record of the same model" in pages
    rows = [line.split(",") for line in (site / "scores.csv").read_text().splitlines()[1:]]
    assert len(rows) == 6 and {row[5] for row in rows} == {DEMO_MODEL}  # one row per split, from one of the two bundles
    assert main(["submission", "verify", str(tmp_path / "absent.zip")]) == 1
    assert "FAIL  bundle          no submission bundle at" in capsys.readouterr().out


def test_pack_refuses_what_it_cannot_vouch_for(submitted: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]):
    assert main(["submission", "pack", "--results", str(submitted["results"]), "--model", "nobody",
                 "--out", str(tmp_path / "x.zip")]) == 2
    err = capsys.readouterr().err
    assert "no records of model 'nobody'" in err and f"models there: {DEMO_MODEL}" in err
    assert not (tmp_path / "x.zip").exists()


# --------------------------------------------------------------------------- strangers' input (docs/security.md)

MARKER_ADAPTER = '''"""Hostile: leaves a marker file the moment it is imported."""
from pathlib import Path

Path({marker!r}).write_text("imported")


class Evil:
    pass
'''


@pytest.mark.parametrize("name", ["absolute", "relative"])
def test_static_verify_and_the_board_never_import_bundle_code(name: str, submitted: dict[str, Path], data_root: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A manifest naming a 'built-in' adapter by a `file.py:Class` spec is data: neither `submission verify`
    (without --rerun) nor `leaderboard build --submissions` imports the file."""
    bundles = tmp_path / "submissions"
    bundles.mkdir()
    bundle = _copy(submitted["bundle"], bundles)
    marker = tmp_path / "imported.txt"
    evil = bundle / "adapter" / "evil.py"
    evil.parent.mkdir()
    evil.write_text(MARKER_ADAPTER.format(marker=str(marker)))
    _relist(bundle, evil)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["adapter"] = {"kind": "built-in", "name": f"{evil}:Evil" if name == "absolute" else "evil.py:Evil",
                           "code_sha256": manifest["adapter"]["code_sha256"]}
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.chdir(evil.parent)  # a relative spec would resolve here
    assert main(["submission", "verify", str(bundle), "--data-root", str(data_root)]) == 1
    assert not marker.exists()
    assert main(["leaderboard", "build", "--results", str(tmp_path / "no-results"), "--submissions", str(bundles),
                 "--data-root", str(data_root), "--out", str(tmp_path / "site")]) == 0
    assert not marker.exists()
    assert "submission refused" in "".join(p.read_text() for p in (tmp_path / "site").rglob("*.html"))


@pytest.mark.parametrize("dataset", ["absolute", "../victim"])
def test_a_records_dataset_is_a_name_never_a_path(dataset: str, submitted: dict[str, Path], data_root: Path,
                                                  tmp_path: Path):
    """`evaluated.dataset` names a folder under the data root; a path there fails the schema check, and the
    `.<name>.old` a swap recovery would rename or delete beside it is left alone."""
    victim = data_root.parent / "victim"
    (victim / "kept").mkdir(parents=True, exist_ok=True)
    (data_root.parent / ".victim.old").mkdir(exist_ok=True)
    (data_root.parent / ".victim.old" / "kept.txt").write_text("mine")
    bundle = _copy(submitted["bundle"], tmp_path)
    name = str(victim) if dataset == "absolute" else dataset
    _edit_record(bundle, lambda data: data["evaluated"].update(dataset=name))
    verification = verify_bundle(bundle, data_root)
    assert (data_root.parent / ".victim.old" / "kept.txt").read_text() == "mine" and (victim / "kept").is_dir()
    assert "schema" in {c.name for c in verification.failed}
    assert "evaluated.dataset" in next(c.detail for c in verification.failed if c.name == "schema")


def test_a_forged_headline_fails_verify_under_the_installed_definition(submitted: dict[str, Path], data_root: Path,
                                                                       tmp_path: Path):
    """A record whose copy of the task averages other classes (numbers and digest restamped to agree, task
    hash kept) is judged under the installed task: the definition and the recomputed metrics both fail."""
    bundle = _copy(submitted["bundle"], tmp_path)
    _edit_record(bundle, lambda data: data["task"].update(headline_classes=[0]), restamp=True)
    verification = verify_bundle(bundle, data_root)
    failed = {c.name: c.detail for c in verification.failed}
    assert set(failed) == {"metrics", "definition"} and not verification.passed
    assert "headline_classes [0], installed [0, 1, 2" in failed["definition"]
    assert "its confusion matrix gives" in failed["metrics"]


def test_the_rerun_badge_comes_from_the_maintainers_log_not_a_file_beside_the_bundle(
        submitted: dict[str, Path], data_root: Path, tmp_path: Path):
    from rsdg_bench.api import build_leaderboard
    from rsdg_bench.submissions.verification_log import log_path

    bundles = tmp_path / "submissions"
    bundles.mkdir()
    bundle = _copy(submitted["bundle"], bundles)
    sha = hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()  # a folder bundle's digest
    forged = {"bundle": bundle.name, "bundle_sha256": sha, "passed": True, "rerun_samples": 8, "checks": []}
    (bundles / f"{bundle.name}.verified.json").write_text(json.dumps(forged))
    maintainer = tmp_path / "maintainer"

    def badge() -> str:
        build_leaderboard(maintainer, tmp_path / "site", submissions=bundles, data_root=data_root)
        suite = (tmp_path / "site" / "suites" / "demo.html").read_text()  # its legend names both badges
        rerun, recomputed = "samples per split re-run here", "prepared data (not re-run)"  # what a row's badge says
        assert (rerun in suite) != (recomputed in suite)
        return "verified: re-run" if rerun in suite else "verified: recomputed"

    assert badge() == "verified: recomputed"  # the submitter's file beside the bundle counts for nothing
    log_path(maintainer, sha).parent.mkdir(parents=True)
    log_path(maintainer, sha).write_text(json.dumps(forged))  # what a passed `verify --rerun 8` logs here
    assert badge() == "verified: re-run"


def test_the_board_shows_a_bundle_whose_model_is_also_in_the_local_results(submitted: dict[str, Path],
                                                                            data_root: Path, tmp_path: Path):
    from rsdg_bench.api import build_leaderboard

    bundles = tmp_path / "submissions"
    bundles.mkdir()
    _copy(submitted["bundle"], bundles)
    board = build_leaderboard(submitted["results"], tmp_path / "site", submissions=bundles, data_root=data_root)
    assert board.tasks == 3 and (tmp_path / "site" / "suites" / "demo.html").is_file()


def test_a_metric_given_as_a_string_fails_verify_with_one_error_line(submitted: dict[str, Path], data_root: Path,
                                                                     tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]):
    bundle = _copy(submitted["bundle"], tmp_path)
    _edit_record(bundle, lambda data: data["metrics"][_slug(data)].update(miou="84.4"))
    assert main(["submission", "verify", str(bundle), "--data-root", str(data_root),
                 "--results", str(tmp_path / "maintainer")]) == 1
    captured = capsys.readouterr()
    assert "FAIL  metrics" in captured.out
    [error] = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: {bundle}: ") and "Traceback" not in captured.err


HOSTILE = {
    # what the adapter tries when it is set up; each must fail inside the sandbox
    "reads a label file": "open({target!r}, 'rb').read()",
    "opens a socket": "__import__('socket').create_connection(('127.0.0.1', {port}), timeout=5)",
    "writes outside its folder": "open({target!r}, 'w').write('escaped')",
}


@pytest.mark.slow
@pytest.mark.parametrize("attempt", sorted(HOSTILE))
def test_a_hostile_adapter_is_stopped_by_the_rerun_sandbox_and_reported(attempt: str, submitted: dict[str, Path],
                                                                        data_root: Path, tmp_path: Path):
    """`verify --rerun` runs the bundle's adapter confined: reading a label file, reaching the maintainer's
    machine over the network or writing outside its folder fails there, the re-run is reported failed with
    the reason, and nothing escaped. With --trust-code the same escape succeeds (so the sandbox is what
    stopped it)."""
    import socket
    import zipfile

    from rsdg_bench.submissions.verify import verify_bundle as verify

    label = next(path for path in (data_root / "toyearth").rglob("*") if path.parent.name == "labels")
    outside = tmp_path / "escaped.txt"
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    target = {"reads a label file": label, "writes outside its folder": outside}.get(attempt, "")
    line = HOSTILE[attempt].format(target=str(target), port=listener.getsockname()[1])
    folder = tmp_path / "bundle"
    zipfile.ZipFile(submitted["file_bundle"]).extractall(folder)
    source = folder / "adapter" / "file_linear.py"
    source.write_text(source.read_text().replace("    def setup(self, task, band_names):\n",
                                                 f"    def setup(self, task, band_names):\n        {line}\n"))
    _relist(folder, source)

    check = rerun_samples(verify(folder, data_root), 1, data_root, submitted["file_checkpoints"])
    assert not check.passed and "failed in the re-run sandbox" in check.detail, check.detail
    reason = {"reads a label file": "No such file or directory", "opens a socket": "Connection refused",
              "writes outside its folder": "No such file or directory"}[attempt]
    assert reason in check.detail, check.detail
    assert not outside.exists()
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing reached the maintainer's machine
    if attempt == "writes outside its folder":
        rerun_samples(verify(folder, data_root), 1, data_root, submitted["file_checkpoints"], trust_code=True)
        assert outside.read_text() == "escaped"  # unconfined, it escapes: the sandbox is what stops it
    listener.close()


def test_without_a_sandbox_the_rerun_refuses_unless_the_code_is_trusted(submitted: dict[str, Path], data_root: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    from rsdg_bench.base.errors import SubmissionError
    from rsdg_bench.submissions import sandbox

    monkeypatch.setattr(sandbox, "bwrap", lambda: None)
    with pytest.raises(SubmissionError, match="no sandbox can be made here") as refused:
        rerun_samples(verify_bundle(submitted["file_bundle"], data_root), 1, data_root, submitted["file_checkpoints"])
    assert "apt-get install bubblewrap" in refused.value.fix and "--trust-code" in refused.value.fix
