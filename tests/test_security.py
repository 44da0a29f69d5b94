"""Strangers' input without a trained model (docs/security.md): argument limits, raster sniffing, names that
must stay names, bounded bundle reading and writers that own their output. The checks that need a packed
bundle or prediction maps live beside their fixtures in test_submissions.py and test_prediction_maps.py."""

from __future__ import annotations

import os
import shutil
import stat
import warnings
import zipfile
from pathlib import Path

import pytest

from rsdg_bench.base.errors import DataError
from rsdg_bench.cli import main


@pytest.mark.parametrize("tolerance", ["nan", "inf", "-1e-4", "1.5", "x"])
def test_a_tolerance_that_is_not_a_fraction_is_refused_at_parsing(tolerance: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        main(["submission", "verify", str(tmp_path / "b.zip"), "--rerun", "1", f"--tolerance={tolerance}"])
    assert exited.value.code == 2 and "not a" in capsys.readouterr().err


def test_rerun_refuses_a_nan_tolerance_from_python(tmp_path: Path):
    from rsdg_bench.base.errors import RsdgError
    from rsdg_bench.submissions.rerun import rerun_samples
    from rsdg_bench.submissions.verify import Verification

    with pytest.raises(RsdgError, match="not a fraction"):
        rerun_samples(Verification(tmp_path / "b.zip"), 1, tmp_path, tolerance=float("nan"))


@pytest.mark.parametrize("name", ["../victim", "/tmp/victim", ".victim", "a/b", "toyearth\n"])
def test_a_prepared_dataset_is_opened_by_name_only(name: str, tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / ".victim.old").mkdir()
    with pytest.raises(DataError, match="is not a dataset name"):
        from rsdg_bench.datasets.prepared import PreparedDataset

        PreparedDataset.open(tmp_path / "data", name)
    assert (tmp_path / ".victim.old").is_dir()


# --------------------------------------------------------------------------- writers own what they write

def _someones(folder: Path) -> Path:
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    return folder


@pytest.mark.parametrize("command", [
    ["leaderboard", "build", "--reported"],
    ["predict", "--task", "demo/u2a", "--model", "smp"],
    ["submission", "pack", "--model", "unet", "--format", "dir"],
    ["submission", "pack", "--model", "unet"],
], ids=["leaderboard build", "predict", "pack --format dir", "pack zip"])
@pytest.mark.parametrize("target", ["file", "folder"])
def test_an_out_that_is_someone_elses_is_refused_untouched(command: list[str], target: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "out"
    if target == "file":
        out.write_text("years of work")
    else:
        _someones(out)
    code = main([*command, "--results", str(tmp_path / "results"), "--data-root", str(tmp_path / "data"),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "would replace" in err and "fix: pass --out" in err
    assert (out.read_text() if target == "file" else (out / "thesis.tex").read_text()) == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing written beside it either


def test_a_site_is_rebuilt_over_its_own_earlier_output(tmp_path: Path):
    (tmp_path / "results").mkdir()
    for _ in range(2):
        assert main(["leaderboard", "build", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "index.html").is_file()


def test_builds_into_one_folder_take_turns(tmp_path: Path):
    """A second build into a folder waits for the lock the first holds, so two never mix their pages."""
    import threading

    from rsdg_bench.datasets.data_lock import held_exclusively

    (tmp_path / "results").mkdir()
    done = threading.Event()
    build = threading.Thread(target=lambda: (main(["leaderboard", "build", "--results", str(tmp_path / "results"),
                                                   "--out", str(tmp_path / "site")]), done.set()))
    with held_exclusively(tmp_path, "a build in progress"):  # what a first build into tmp_path/site holds
        build.start()
        assert not done.wait(0.5) and not (tmp_path / "site").exists()  # it waits for the first build
    build.join(30)
    assert done.is_set() and (tmp_path / "site" / "index.html").is_file()


# --------------------------------------------------------------------------- bounded bundle reading

def _zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we mean to write
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def _patched(path: Path, old: bytes, new: bytes) -> Path:
    path.write_bytes(path.read_bytes().replace(old, new))
    return path


def _link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _stored(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_STORED
    return info


HOSTILE = {
    "./x member": (lambda p: _zip(p, [("submission.json", b"{}"), ("./records/x.json", b"{}")]), "member names"),
    "absolute member": (lambda p: _zip(p, [("submission.json", b"{}"), ("/etc/x.json", b"{}")]), "member names"),
    "duplicate member": (lambda p: _zip(p, [("submission.json", b"{}"), ("submission.json", b"[]")]), "appears twice"),
    "non-UTF-8 name": (lambda p: _patched(_zip(p, [("submission.json", b"{}"), ("cafQ.json", b"{}")]), b"cafQ",
                                          b"caf\xe9"), "not named in UTF-8"),
    "link member": (lambda p: _zip(p, [("submission.json", b"{}"), (_link("records/x.json"), b"/etc/passwd")]),
                    "plain files"),
    "CRC error": (lambda p: _patched(_zip(p, [(_stored("submission.json"), b'{"format_version": 11111}')]),
                                     b"11111", b"22222"), "integrity"),
    "zip bomb": (lambda p: _zip(p, [("submission.json", b"{}"), ("records/x.json", bytes(64 << 20))]),
                 "compression ratio"),
    "deep JSON": (lambda p: _zip(p, [("submission.json", b"[" * 300 + b"]" * 300)]), "nested 300 levels"),
    "many members": (lambda p: _zip(p, [("submission.json", b"{}")] + [(f"m/{i}", b"") for i in range(10_001)]),
                     "member count"),
    "not a zip": (lambda p: (p.write_bytes(b"PK\x03\x04 broken"), p)[1], "not a zip archive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_bundle_ends_in_one_error_line_naming_it_and_the_rule(case: str, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]):
    make, rule = HOSTILE[case]
    bundle = make(tmp_path / "hostile.zip")
    assert main(["submission", "verify", str(bundle), "--data-root", str(tmp_path / "data"),
                 "--results", str(tmp_path / "results")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {bundle}: ") and rule in errors[0], errors


def test_the_board_lists_hostile_bundles_and_builds_from_the_rest(tmp_path: Path):
    from rsdg_bench.submissions.board import submitted_records

    folder = tmp_path / "submissions"
    folder.mkdir()
    for case, (make, _) in HOSTILE.items():
        if case != "many members":  # the slowest to make; the verify test covers it
            make(folder / f"{case.replace(' ', '-').replace('/', '')}.zip")
    found = submitted_records(folder, tmp_path / "data", tmp_path / "results")
    assert not found.records and len(found.refused) == len(HOSTILE) - 1
    assert all(why.startswith("submission refused: ") for _, why in found.refused)


def test_json_depth_is_measured_outside_strings():
    from rsdg_bench.base.bounded_json import json_depth, loads_bounded

    assert json_depth(b'{"a": "[[[[\\"[[", "b": [[1], {"c": []}]}') == 4
    with pytest.raises(ValueError, match="nested 65 levels"):
        loads_bounded(b"[" * 65 + b"]" * 65, 1 << 20)


# --------------------------------------------------------------------------- untrusted rasters

def _encoded(driver: str, width: int = 8, height: int = 8) -> bytes:
    import numpy as np
    from rasterio.io import MemoryFile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not georeferenced: on purpose
        with MemoryFile() as memory:
            with memory.open(driver=driver, width=width, height=height, count=1, dtype="uint8") as dst:
                dst.write(np.zeros((1, height, width), dtype=np.uint8))
            return memory.read()


def test_only_plain_png_and_geotiff_open_and_their_size_is_bounded_from_the_header():
    from rsdg_bench.base.errors import SubmissionError
    from rsdg_bench.datasets.untrusted_raster import open_untrusted_raster

    for driver in ("PNG", "GTiff"):
        with open_untrusted_raster(_encoded(driver), "map") as src:
            assert src.driver == driver and src.read().shape == (1, 8, 8)
    for data, says in ((b"<html><body>hi</body></html>", "XML/HTML"), (_encoded("BMP"), "bytes starting"),
                       (b"<VRTDataset rasterXSize='1'/>", "GDAL VRT")):
        with pytest.raises(SubmissionError, match=f"not an allowed raster format: .*{says}"):
            with open_untrusted_raster(data, "map"):
                pass
    with pytest.raises(SubmissionError, match="declares 1×8×8 values, more than 63"):
        with open_untrusted_raster(_encoded("GTiff"), "map", max_pixels=63):
            pass


def test_repeated_sample_ids_are_found_in_linear_time():
    """A predictions.json listing one id 50 000 times is refused at once (it was quadratic: minutes at 10 MB)."""
    import time

    from rsdg_bench.base.errors import SubmissionError
    from rsdg_bench.submissions.score_maps import _check_ids

    started = time.perf_counter()
    with pytest.raises(SubmissionError, match="1 sample ids repeated: a"):
        _check_ids([f"{i}" for i in range(50_000)] + ["a"] * 50_000, ["a"], "s")
    assert time.perf_counter() - started < 1.0


def test_the_sandbox_mounts_an_allow_list_and_masks_a_data_root_inside_it(tmp_path: Path):
    """The re-run's child sees the system, the interpreter and rsdg-bench's sources read-only, its job
    read-only and its output writable, nothing else: the maintainer's home, /root and /etc's secrets are not
    mounted, and a data root that lies inside a mounted folder (the demo's ./rsdg-demo/data in a checkout) is
    masked by an empty tmpfs."""
    import rsdg_bench
    from rsdg_bench.submissions.sandbox import bwrap, confined_command

    if bwrap() is None:
        pytest.fail("bubblewrap is needed (apt-get install bubblewrap; .ci/run installs it)")
    checkout_tasks = Path(rsdg_bench.__file__).resolve().parents[1] / "tasks"
    job, out = tmp_path / "job", tmp_path / "out"
    command = confined_command(["python"], job, out, hidden=[checkout_tasks])
    pairs = {(command[i], command[i + 1]) for i in range(len(command) - 1)}
    assert ("--ro-bind", str(job)) in pairs and ("--bind", str(out)) in pairs and "--unshare-net" in command
    assert ("--tmpfs", str(checkout_tasks)) in pairs
    mounted = {command[i + 1] for i in range(len(command) - 1) if command[i] in ("--ro-bind", "--bind")}
    assert not {"/", "/root", "/home", "/etc", "/etc/shadow", str(tmp_path)} & mounted
    with_cache = confined_command(["python"], job, out, numba_cache=tmp_path / "numba")
    at = with_cache.index(str(tmp_path / "numba"))  # writable, and mounted over the private /tmp, not under it
    assert with_cache[at - 1:at + 2] == ["--bind", str(tmp_path / "numba"), "/tmp/numba"]
    assert with_cache.index("--tmpfs") < at and "NUMBA_CACHE_DIR" in with_cache


def test_what_the_child_leaves_in_its_folders_is_removed_without_following_its_links(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch):
    """A child may leave a link to a maintainer's file where the clean-up cannot delete it (a folder it made
    read-only, for a maintainer who is not root: simulated here, as the tests run as root): the clean-up
    leaves the file and its permissions as they were. TemporaryDirectory's clean-up on Python < 3.11.8 chmods
    the link's target before retrying (CVE-2023-6597)."""
    from rsdg_bench.submissions.sandbox import child_writable_folder

    precious = tmp_path / "precious.txt"
    precious.write_text("the maintainer's")
    precious.chmod(0o400)
    real_unlink = os.unlink

    def refused(path, *args, **kwargs):  # what a folder the child made read-only does to a non-root unlink
        if str(path).endswith("link"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    with child_writable_folder("rsdg-test-") as folder:
        (folder / "link").symlink_to(precious)
        monkeypatch.setattr(os, "unlink", refused)
    monkeypatch.undo()
    assert stat.S_IMODE(precious.stat().st_mode) == 0o400 and precious.read_text() == "the maintainer's"
    assert (folder / "link").is_symlink()  # what could not be removed stays, untouched
    shutil.rmtree(folder)


def test_the_sandboxed_child_loads_the_compiled_loops_from_a_seeded_copy_of_the_cache(tmp_path: Path,
                                                                                      monkeypatch: pytest.MonkeyPatch):
    """The re-run's child gets a fresh copy of this process's numba cache, at the place numba looks under the
    child's NUMBA_CACHE_DIR: a loop compiled there anew (as in the child, whose in-tree cache is read-only)
    loads its machine code from the copy (a cache hit, no compilation) and gives the same class map."""
    import numba
    import torch

    from rsdg_bench.evaluator import class_map
    from rsdg_bench.submissions.sandbox import seeded_numba_cache

    scores = torch.randn(2, 5, 7, 9, generator=torch.Generator().manual_seed(0))
    expected, _ = class_map.first_max_classes(scores, 1)  # compiles, or loads, and caches this signature here
    copy = seeded_numba_cache(tmp_path / "numba")
    assert {p.suffix for p in copy.rglob("*")} >= {".nbi", ".nbc"}
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(copy))  # what the child's NUMBA_CACHE_DIR sets
    in_child = numba.njit(nogil=True, cache=True)(class_map._first_max.py_func)
    out = torch.empty(2, 7, 9, dtype=torch.uint8)
    in_child(scores.contiguous().view(2, 5, -1).numpy(), out.view(2, -1).numpy())
    assert Path(in_child._cache._cache_path).is_relative_to(copy)
    assert in_child.stats.cache_hits and not in_child.stats.cache_misses
    assert torch.equal(out, expected)
