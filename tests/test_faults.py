"""Fault injection: kill -9 at the stage boundaries of prepare, run, train and leaderboard build (inside the
publish swap too), concurrent prepares and reads, read-only roots and a full disk. Each fault must end in an
error or a correct result, and the data, records and site from before the fault must be intact.

A kill is real: the command runs in a child process (`KILLER` below) that wraps one function at its point
of use and sends itself SIGKILL before or after its n-th call, so nothing (no `finally`, no atexit) runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rsdg_bench.cli import main
from rsdg_bench.datasets.data_lock import preparing, reading
from rsdg_bench.datasets.prepared import PreparedDataset
from rsdg_bench.prep import get_preparer
from rsdg_bench.records.results import ResultStore

KILLER = r'''
import importlib, json, os, signal, sys, threading, types

def killing(real, nth, when):
    calls, lock = [0], threading.Lock()
    def wrapper(*args, **kwargs):
        with lock:  # prepare's writer threads call in at once: each call keeps its own number
            calls[0] += 1
            number = calls[0]
        if number == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if number == nth and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapper

for patch in json.loads(sys.argv[1]):
    module_name, _, attr = patch["target"].partition(":")
    owner = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        inner = getattr(owner, part)
        if isinstance(inner, types.ModuleType):  # e.g. `os` as one module sees it: patch a private copy
            copy = types.ModuleType(inner.__name__)
            copy.__dict__.update(inner.__dict__)
            setattr(owner, part, copy)
            inner = copy
        owner = inner
    real = getattr(owner, name)
    if "returns" in patch:
        setattr(owner, name, lambda *a, _value=patch["returns"], **k: _value)
    else:
        setattr(owner, name, killing(real, patch["nth"], patch.get("when", "before")))

from rsdg_bench.cli import main
sys.exit(main(sys.argv[2:]))
'''


def killed_run(tmp_path: Path, patches: list[dict], args: list[str]) -> subprocess.CompletedProcess:
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    import torch

    threads = str(torch.get_num_threads())  # as this process computes, so that numbers compare bit for bit
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    done = subprocess.run([sys.executable, str(script), json.dumps(patches), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == -signal.SIGKILL, f"the fault never fired: {done.returncode}\n{done.stderr[-2000:]}"
    return done


def _intact(root: Path, name: str, manifest_sha256: str) -> None:
    dataset = PreparedDataset.open(root, name)
    assert dataset.manifest_sha256 == manifest_sha256 and dataset.verify_files() == []


# One prepare of toyearth over a root that already holds it: each point where a kill can fall.
PREPARE_FAULTS = {
    "mid-write of a sample": [{"target": "rsdg_bench.datasets.prepared:atomic_write_bytes", "nth": 4}],
    "a sample written, not journaled": [{"target": "rsdg_bench.datasets.prepared:atomic_write_bytes", "nth": 4,
                                         "when": "after"}],
    "a sample's bytes on disk, not renamed": [{"target": "rsdg_bench.base.io:os.replace", "nth": 4}],
    "before publish": [{"target": "rsdg_bench.datasets.prepared:swap_in", "nth": 1}],
    "publish: after the exchange": [{"target": "rsdg_bench.base.folder_swap:os.replace", "nth": 1}],
    "publish: between two renames": [{"target": "rsdg_bench.base.folder_swap:_exchange", "returns": False},
                                      {"target": "rsdg_bench.base.folder_swap:os.replace", "nth": 2}],
}


@pytest.mark.parametrize("fault", list(PREPARE_FAULTS))
def test_a_prepare_killed_anywhere_leaves_the_dataset_whole_and_the_rerun_gives_the_clean_one(
        fault: str, toyearth_raw: Path, data_root: Path, tmp_path: Path):
    clean = PreparedDataset.open(data_root, "toyearth").manifest_sha256
    root = tmp_path / "data"
    shutil.copytree(data_root / "toyearth", root / "toyearth")
    killed_run(tmp_path, PREPARE_FAULTS[fault], ["prepare", "toyearth", "--raw", str(toyearth_raw), "--quiet",
                                                 "--data-root", str(root)])
    _intact(root, "toyearth", clean)  # readers see a whole dataset (the old or the new one), never neither
    get_preparer("toyearth").prepare(toyearth_raw, root, progress=False)
    _intact(root, "toyearth", clean)
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".toyearth") and "lock" not in p.name) == []
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp")) == []  # no half-written file published


@pytest.mark.parametrize("fault", ["mid-write of a sample", "a sample's bytes on disk, not renamed"])
def test_a_first_prepare_killed_mid_write_resumes_without_a_stray_file(fault: str, toyearth_raw: Path,
                                                                       data_root: Path, tmp_path: Path):
    """Killed while its staging folder holds a half-written file, a first prepare resumes from that folder;
    the file the kill interrupted is not published with the dataset."""
    clean = PreparedDataset.open(data_root, "toyearth").manifest_sha256
    root = tmp_path / "data"
    killed_run(tmp_path, PREPARE_FAULTS[fault], ["prepare", "toyearth", "--raw", str(toyearth_raw), "--quiet",
                                                 "--data-root", str(root)])
    assert not (root / "toyearth").exists()
    get_preparer("toyearth").prepare(toyearth_raw, root, progress=False)
    _intact(root, "toyearth", clean)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp")) == []


RUN_FAULTS = {
    "before the second record": [{"target": "rsdg_bench.records.results:atomic_write_text", "nth": 2}],
    "inside a record's write": [{"target": "rsdg_bench.base.io:os.replace", "nth": 1}],
    "a split counted, not recorded": [{"target": "rsdg_bench.run.runner:evaluate_split_counts", "nth": 2,
                                       "when": "after"}],
}


# What the run and train faults use as their model, which is not what they test (records, resume): a small
# trainable network from a file (`--adapter`, so that the killed child process finds it too), with a batch
# norm so that its state holds buffers as well as weights, as a U-Net's does. Its init is seeded: a killed
# and a clean training start from the same weights. (A U-Net cost each process seconds of imports, forward
# passes and state writes.)
TINY = """
import torch
from rsdg_bench.models.adapters import Adapter, InputContract, Normalization

class Tiny(Adapter):
    trainable = True

    def setup(self, task, band_names):
        torch.manual_seed(0)
        n = len(band_names)
        self.module = torch.nn.Sequential(torch.nn.Conv2d(n, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                          torch.nn.ReLU(), torch.nn.Conv2d(8, task.class_schema.num_classes, 1))
        self._contract = InputContract(n, Normalization((127.5,) * n, (64.0,) * n))

    def input_contract(self):
        return self._contract

    def predict(self, x):
        return self.module(x)
"""


def tiny(tmp_path: Path) -> list[str]:
    """The model flags for `Tiny`, written to a file in `tmp_path`."""
    plugin = tmp_path / "tiny.py"
    plugin.write_text(TINY)
    return ["--adapter", f"{plugin}:Tiny"]


@pytest.mark.parametrize("fault", list(RUN_FAULTS))
def test_a_run_killed_anywhere_keeps_whole_records_and_the_rerun_completes_them(
        fault: str, data_root: Path, tmp_path: Path):
    args = ["run", "--task", "demo/u2a", *tiny(tmp_path), "--random-init", "--data-root", str(data_root),
            "--quiet", "--limit", "2"]
    killed_run(tmp_path, RUN_FAULTS[fault], [*args, "--results", str(tmp_path / "killed")])
    store = ResultStore(tmp_path / "killed")
    valid, refused = store.load_valid()
    assert refused == [] and len(valid) <= 1  # what was written before the kill is whole
    assert main([*args, "--results", str(tmp_path / "killed")]) == 0
    assert main([*args, "--results", str(tmp_path / "clean")]) == 0
    killed = {record.key: record.confusion_matrices for _, record in store.load_all()}
    clean = {record.key: record.confusion_matrices for _, record in ResultStore(tmp_path / "clean").load_all()}
    assert killed == clean and len(clean) == 2


@pytest.mark.slow
def test_a_training_killed_while_saving_its_state_resumes_to_the_uninterrupted_weights(data_root: Path,
                                                                                      tmp_path: Path):
    import torch

    # --lr 0.1: the tiny net learns fast enough that its selection score rises from iteration 2 to 4, so the
    # weights compared (the selected ones) are those trained after the resume point (asserted below)
    args = ["train", "--task", "demo/u2a", *tiny(tmp_path), "--iterations", "4", "--val-interval", "2",
            "--batch-size", "2", "--lr", "0.1", "--quiet", "--data-root", str(data_root)]
    killed_run(tmp_path, [{"target": "rsdg_bench.train.training:atomic_write_bytes", "nth": 2}],
               [*args, "--results", str(tmp_path / "killed")])
    assert main([*args, "--results", str(tmp_path / "killed")]) == 0
    assert main([*args, "--results", str(tmp_path / "clean")]) == 0
    [resumed] = (tmp_path / "killed").rglob("*.pt")
    [clean] = (tmp_path / "clean").rglob("*.pt")
    a, b = torch.load(resumed, weights_only=True), torch.load(clean, weights_only=True)
    assert a["rsdg"]["resumed_from"] == 2 and b["rsdg"]["selection"]["iteration"] == 4
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])


SITE_FAULTS = {
    "mid-build": [{"target": "rsdg_bench.leaderboards.render:atomic_write_text", "nth": 3}],
    "publish: after the exchange": [{"target": "rsdg_bench.base.folder_swap:os.replace", "nth": 1}],
    "publish: between two renames": [{"target": "rsdg_bench.base.folder_swap:_exchange", "returns": False},
                                     {"target": "rsdg_bench.base.folder_swap:os.replace", "nth": 2}],
}


@pytest.mark.parametrize("fault", list(SITE_FAULTS))
def test_a_leaderboard_build_killed_anywhere_leaves_the_previous_site_and_the_rebuild_works(
        fault: str, trained: dict, tmp_path: Path):
    site = tmp_path / "site"
    args = ["leaderboard", "build", "--results", str(trained["results"]), "--out", str(site)]
    assert main(args) == 0
    before = _site_files(site)
    killed_run(tmp_path, SITE_FAULTS[fault], args)
    from rsdg_bench.base.folder_swap import recover_swap

    recover_swap(site)  # what the next build (or a reader that cares) does first
    assert _site_files(site) == before  # from the same results old and new are one site: whole either way
    assert main(args) == 0
    assert _site_files(site) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".site")] == []


def _site_files(site: Path) -> dict[Path, bytes]:
    """Every file of a site, the build time on the index page blanked (two builds differ only there)."""
    import re

    return {p.relative_to(site): re.sub(rb"Built [0-9T:+-]+ ", b"Built <time> ", p.read_bytes())
            for p in site.rglob("*") if p.is_file()}


def _wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_prepares_of_one_dataset_take_turns_with_a_message(toyearth_raw: Path, data_root: Path, tmp_path: Path,
                                                               capfd: pytest.CaptureFixture):
    root = tmp_path / "data"
    errors: list[BaseException] = []

    def second_prepare() -> None:
        try:
            get_preparer("toyearth").prepare(toyearth_raw, root, progress=False)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    with preparing(root, "toyearth"):  # the first prepare, still running
        thread = threading.Thread(target=second_prepare)
        thread.start()
        seen: list[str] = []
        _wait_for(lambda: seen.append(capfd.readouterr().err) or "another prepare of toyearth" in "".join(seen),
                  "the waiting message")
        assert thread.is_alive() and not (root / ".toyearth.partial").exists()  # it waits before touching anything
    thread.join(timeout=300)
    assert errors == [] and not thread.is_alive()
    _intact(root, "toyearth", PreparedDataset.open(data_root, "toyearth").manifest_sha256)


def test_a_prepare_never_publishes_under_a_running_read(toyearth_raw: Path, data_root: Path, tmp_path: Path,
                                                        capfd: pytest.CaptureFixture):
    root = tmp_path / "data"
    shutil.copytree(data_root / "toyearth", root / "toyearth")
    inode = (root / "toyearth").stat().st_ino
    thread = threading.Thread(target=get_preparer("toyearth").prepare, args=(toyearth_raw, root, False))
    with reading(root, "toyearth"):  # a run reading a split
        thread.start()
        seen: list[str] = []
        _wait_for(lambda: seen.append(capfd.readouterr().err) or "waiting for the runs reading toyearth" in
                  "".join(seen), "the publish to wait")
        assert (root / "toyearth").stat().st_ino == inode  # the dataset under the reader is the one it opened
    thread.join(timeout=300)
    assert (root / "toyearth").stat().st_ino != inode  # published once the read ended


@pytest.fixture
def read_only(tmp_path: Path):
    """Make a folder read-only for real: a read-only bind mount when running as root (root ignores modes),
    else its permission bits."""
    mounted: list[Path] = []

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            view = folder.with_name(folder.name + "-ro")
            view.mkdir()
            if subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True).returncode != 0:
                pytest.skip("running as root without permission to mount: no way to make a folder read-only")
            mounted.append(view)
            subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True, capture_output=True)
            folder = view
        else:
            for path in [folder, *folder.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")
        return folder

    yield make
    for view in mounted:
        subprocess.run(["umount", "--lazy", str(view)], check=False)


def test_read_only_roots_give_an_error_and_a_fix_or_just_work(read_only, toyearth_raw: Path, trained: dict,
                                                                data_root: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture):
    empty = read_only(tmp_path / "empty-root")
    assert main(["prepare", "toyearth", "--raw", str(toyearth_raw), "--quiet", "--data-root", str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write to the data root {empty}" in err and "fix:" in err and "Traceback" not in err

    shared = tmp_path / "shared"
    shutil.copytree(data_root / "toyearth", shared / "toyearth")
    shared = read_only(shared)  # a dataset on a read-only mount, as on a cluster: reading it needs no lock file
    args = ["run", "--task", "demo/u2a", "--model", "smp", "--model-arg", "arch=unet", "--model-arg",
            "encoder=resnet18", "--checkpoint", str(trained["checkpoint"]), "--quiet", "--limit", "1",
            "--data-root", str(shared)]
    assert main([*args, "--results", str(tmp_path / "results")]) == 0

    results = read_only(tmp_path / "results-ro")
    assert main([*args, "--results", str(results)]) != 0
    err = capsys.readouterr().err
    assert "cannot write" in err and str(results) in err and "fix:" in err and "Traceback" not in err


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real file system of `size` bytes (tmpfs), to fill: needs root and permission to mount."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        folder = tmp_path / f"disk-{len(mounted)}"
        folder.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (not root); the full-disk path is covered by the patched-write "
                        "test in test_reliability.py")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:  # lazily: a file still open in it (a lock) must not leave the mount behind
        subprocess.run(["umount", "--lazy", str(folder)], check=False)


def test_a_disk_error_without_a_file_name_names_the_commands_folder_and_its_free_space(tmp_path: Path):
    """A write to an open file fails without a file name (`f.write` on a full disk): the error names the
    command's output folder instead, with the space left there, and the fix."""
    import errno

    from rsdg_bench.base.errors import disk_error

    full = OSError(errno.ENOSPC, "No space left on device")
    message = str(disk_error(full, "--data-root", near=tmp_path))
    assert f"cannot write a file under {tmp_path}: No space left on device (" in message and "MiB free there" in message
    assert "free space there (or point --data-root elsewhere)" in message
    assert str(disk_error(full, "--data-root")).startswith("cannot write a file: No space left on device")


def test_a_full_disk_is_an_error_about_space_and_a_rerun_after_freeing_it_completes(
        small_disk, toyearth_raw: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        prepared_fakes):
    archive = prepared_fakes.archive("toyearth")  # read only: the extraction goes under the data root
    disk = small_disk("1m")
    assert main(["prepare", "toyearth", "--raw", str(archive), "--no-checksum", "--quiet",
                 "--data-root", str(disk)]) == 2
    err = capsys.readouterr().err
    assert "free" in err and "the archive itself is fine" in err and "download it again" not in err
    assert main(["prepare", "toyearth", "--raw", str(toyearth_raw), "--quiet", "--data-root", str(disk)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "MiB free" in err and "Traceback" not in err
    assert not (disk / "toyearth").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    assert main(["prepare", "toyearth", "--raw", str(toyearth_raw), "--quiet", "--data-root", str(disk)]) == 0
    _intact(disk, "toyearth", PreparedDataset.open(data_root, "toyearth").manifest_sha256)


def test_a_results_disk_that_fills_during_a_run_stops_it_with_one_error_and_the_rerun_completes(
        small_disk, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    """Records of three tasks onto a disk with room for a few of them: the run stops at the first write that
    does not fit, with one `error:` naming the file, the space left and `--results` (not one traceback per
    task); what it wrote is whole, and after space is freed the re-run completes them to a clean run's."""
    args = ["run", "--suite", "demo", *tiny(tmp_path), "--random-init", "--data-root", str(data_root), "--quiet",
            "--limit", "2"]
    disk = small_disk("24k")
    assert main([*args, "--results", str(disk)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "No space left on device" in err and "MiB free there" in err
    assert f"cannot write {disk}" in err and "--results" in err and "Traceback" not in err
    valid, refused = ResultStore(disk).load_valid()
    assert refused == [] and len(valid) < 6
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    assert main([*args, "--results", str(disk)]) == 0
    assert main([*args, "--results", str(tmp_path / "clean")]) == 0
    stored = {record.key: record.confusion_matrices for _, record in ResultStore(disk).load_all()}
    clean = {record.key: record.confusion_matrices for _, record in ResultStore(tmp_path / "clean").load_all()}
    assert stored == clean and len(clean) == 6


def test_only_a_results_folder_that_refuses_a_write_stops_a_run(tmp_path: Path):
    """The stop is for the results disk alone: a full disk elsewhere (an adapter's cache), a permission error,
    or an error naming no file fails its task as any adapter error does."""
    import errno

    from rsdg_bench.run.runner import _results_disk_failed

    results = tmp_path / "results"
    inside, outside = str(results / "records" / "x.json"), str(tmp_path / "cache" / "w.pt")
    assert _results_disk_failed(OSError(errno.ENOSPC, "No space left on device", inside), results)
    assert _results_disk_failed(OSError(errno.EROFS, "Read-only file system", inside), results)
    assert not _results_disk_failed(OSError(errno.ENOSPC, "No space left on device", outside), results)
    assert not _results_disk_failed(OSError(errno.EACCES, "Permission denied", inside), results)
    assert not _results_disk_failed(OSError(errno.ENOSPC, "No space left on device"), results)
    assert not _results_disk_failed(ValueError("not a disk"), results)
