"""A stranger's bundle, mutated at random (hypothesis): `submission verify` and `leaderboard build
--submissions` end in a verdict or one error line, never a traceback; they run none of the bundle's code,
write nothing outside their output, and take bounded time and memory (the peak resident memory of the process
may not grow by a GiB over one small bundle).

The honest bundle carries a file adapter whose module writes a marker file when it is imported while
`RSDG_FUZZ_MARKER` is set: any import of submitted code during verification would leave it. Examples are
derandomized (the same ones on every run, so CI is repeatable); `--hypothesis-seed` or a changed strategy
explores others.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import time
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsdg_bench.cli import main
from rsdg_bench.models.model_spec import ModelSpec
from rsdg_bench.protocol.task_schema import TaskCatalog
from rsdg_bench.run.runner import RunSettings, run_tasks
from rsdg_bench.submissions.bundle import pack
from rsdg_bench.submissions.verify import verify_bundle

ADAPTER = '''"""A 1×1 convolution; importing this file with RSDG_FUZZ_MARKER set leaves a marker."""
import os
from pathlib import Path

import torch

from rsdg_bench.models.adapters import Adapter, InputContract, Normalization

if os.environ.get("RSDG_FUZZ_MARKER"):
    Path(os.environ["RSDG_FUZZ_MARKER"]).write_text("submitted code ran")


class Marked(Adapter):
    kinds = frozenset({"segmentation"})

    def setup(self, task, band_names):
        self.module = torch.nn.Conv2d(len(band_names), task.class_schema.num_classes, 1)
        n = len(band_names)
        self.contract = InputContract(n, Normalization((127.5,) * n, (64.0,) * n))

    def input_contract(self):
        return self.contract

    def predict(self, x):
        return self.module(x)
'''
NAMES = ["../escape.json", "/absolute.json", "./dotted.json", "records/../../up.json", "", "records/\u00e9\u0301.json",
         "a" * 300, "records/demo-u2a/x.json"]
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() |
                           st.text(max_size=20), lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2 ** 31), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2 ** 31)),
    st.tuples(st.just("json"), st.text(min_size=1, max_size=12), JSON_VALUES),
    st.tuples(st.just("deep"), st.integers(1, 5000)),
    st.tuples(st.just("rename"), st.sampled_from(NAMES)),
    st.tuples(st.just("duplicate")),
    st.tuples(st.just("drop")),
)


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory, data_root: Path, linear_checkpoint: Path) -> dict[str, bytes]:
    """The members of an honest zip bundle of demo/u2a evaluated by the marked file adapter."""
    root = tmp_path_factory.mktemp("fuzz-honest")
    adapter = root / "plugin" / "marked.py"
    adapter.parent.mkdir()
    adapter.write_text(ADAPTER)
    spec = f"{adapter}:Marked"
    [outcome] = run_tasks([TaskCatalog().task("demo/u2a")], ModelSpec(spec, checkpoint=linear_checkpoint),
                          RunSettings(data_root, root / "results", progress=False))
    assert outcome.error is None, outcome.error
    pack(root / "results", "Marked", ["demo/u2a"], root / "honest.zip", adapter_spec=spec)
    verification = verify_bundle(root / "honest.zip", data_root)  # unmutated, it passes: a failure below is news
    assert verification.passed, [c.line() for c in verification.failed]
    marker = root / "marker"  # and the sentinel works: importing the adapter with the variable set leaves it
    os.environ["RSDG_FUZZ_MARKER"] = str(marker)
    try:
        runpy.run_path(str(adapter))
    finally:
        del os.environ["RSDG_FUZZ_MARKER"]
    assert marker.read_text() == "submitted code ran"
    with zipfile.ZipFile(root / "honest.zip") as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def mutated(members: dict[str, bytes], index: int, mutation: tuple) -> list[tuple[str, bytes]]:
    """The members after one mutation of the `index`-th (in order), as (name, bytes) pairs (names may repeat)."""
    items = list(members.items())
    name, data = items[index % len(items)]
    kind = mutation[0]
    if kind == "flip":
        position = mutation[1] % max(len(data), 1)
        data = data[:position] + bytes([data[position] ^ mutation[2]]) + data[position + 1:] if data else b"\x00"
    elif kind == "truncate":
        data = data[:mutation[1] % max(len(data), 1)]
    elif kind == "json":
        try:
            content = json.loads(data)
        except ValueError:
            content = {}
        if isinstance(content, dict) and content:
            content[sorted(content)[hash(mutation[1]) % len(content)]] = mutation[2]
        else:
            content = {mutation[1]: mutation[2]}
        data = json.dumps(content, allow_nan=True).encode()
    elif kind == "deep":
        data = ("[" * mutation[1] + "]" * mutation[1]).encode()
    elif kind == "rename":
        name = mutation[1]
    elif kind == "duplicate":
        return [*items, (name, data + b" ")]
    elif kind == "drop":
        return [item for item in items if item[0] != name]
    items[index % len(items)] = (name, data)
    return items


def write_zip(path: Path, members: list[tuple[str, bytes]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on a duplicate name: that is the point
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members:
                archive.writestr(zipfile.ZipInfo(name or "unnamed"), data)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB): a bomb that inflates past it shows."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(index=st.integers(0, 50), mutation=MUTATIONS)
def test_a_mutated_bundle_gets_a_verdict_runs_no_code_and_writes_nothing(
        honest: dict[str, bytes], data_root: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch, capsys,
        index: int, mutation: tuple):
    scratch = tmp_path_factory.mktemp("fuzz")
    marker = scratch / "code-ran"
    monkeypatch.setenv("RSDG_FUZZ_MARKER", str(marker))
    submissions = scratch / "submissions"
    submissions.mkdir()
    bundle = submissions / "mutated.zip"
    members = mutated(honest, index, mutation)
    write_zip(bundle, members)
    data_before, bundles_before = listing(data_root), listing(submissions)

    started, peak_before = time.monotonic(), peak_rss_mib()
    verification = verify_bundle(bundle, data_root)  # any exception here fails the test
    assert time.monotonic() - started < 30
    unchanged = sorted(members) == sorted(honest.items())
    assert not verification.passed or unchanged, [c.line() for c in verification.checks]

    code = main(["leaderboard", "build", "--results", str(scratch / "no-results"), "--submissions",
                 str(submissions), "--out", str(scratch / "site"), "--quiet"])
    out, err = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in out + err, err[-2000:]
    assert not marker.exists(), "verification imported the bundle's code"
    assert peak_rss_mib() - peak_before < 1024, "one small bundle raised the peak memory by over 1 GiB"
    assert listing(data_root) == data_before and listing(submissions) == bundles_before  # nothing written there
