"""Shared fixtures, each built once per test run: a prepared ToyEarth (made by its own raw-layout generator),
the demo run (its own data, a U-Net trained through the real training loop, records, a site) and that trained
U-Net as a checkpoint of its own; every other dataset prepared from its fake, once, on first use
(`prepared_fakes`). "Once per run" holds with pytest-xdist too: the first worker to ask builds a fixture under a
file lock in the run's shared temporary folder, the others wait for it and reuse it (`built_once`).

Temporary files go to memory (`/dev/shm`, a tmpfs) where it and the memory behind it (`MemAvailable`, and a
cgroup's limit) have 12 GB to spare, unless `--basetemp` or
`PYTEST_DEBUG_TEMPROOT` says otherwise: the suite writes about 5 GB of small files, each written atomically
with its fsync, and on disk the fsyncs and the deletions cost about 40 s of a 6-minute run on the 2-core box.
The code under test is the same; only where pytest's temporary folders lie differs. With
`tmp_path_retention_policy = "failed"` (pyproject.toml) a passing run leaves nothing behind there.

Threads are set here, before torch is imported anywhere: one intra-op thread per process, in this process and
in every subprocess the tests start (they inherit the environment). On two cores torch's default of one
thread per core spins against anything else running: a 20-iteration training took 145 s with the default
and 42 s with one thread on a loaded box.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import shutil  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from filelock import FileLock  # noqa: E402

from rsdg_bench.models.adapters import Adapter, InputContract, Normalization  # noqa: E402
from rsdg_bench.models.registry import register_adapter  # noqa: E402
from rsdg_bench.prep import get_preparer  # noqa: E402
from rsdg_bench.protocol.task_schema import Task  # noqa: E402
from rsdg_bench.run.runner import ModelSpec  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # set in each worker process of `pytest -n N`
MEMORY_TEMP_ROOT, MEMORY_TEMP_NEEDS = Path("/dev/shm"), 12 * 2 ** 30  # the run's temporary files, with room to spare


def _memory_to_spare() -> int:
    """Bytes of memory this process may still fill: the kernel's `MemAvailable`, and below a cgroup's limit what
    the limit leaves (a tmpfs's pages are memory, charged to the cgroup that writes them)."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        spare = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            spare = min(spare, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return spare


def pytest_configure(config: pytest.Config) -> None:
    """Put the run's temporary folders in memory where a tmpfs, and the memory behind it, have room for them
    (see the module docstring)."""
    if XDIST_WORKER or config.option.basetemp or "PYTEST_DEBUG_TEMPROOT" in os.environ:
        return  # a worker's folder is its controller's choice; a folder the user chose is kept
    if MEMORY_TEMP_ROOT.is_dir() and os.access(MEMORY_TEMP_ROOT, os.W_OK) \
            and shutil.disk_usage(MEMORY_TEMP_ROOT).free > MEMORY_TEMP_NEEDS and _memory_to_spare() > MEMORY_TEMP_NEEDS:
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(MEMORY_TEMP_ROOT)


class PixelLinear(Adapter):
    """A random 1×1 convolution over the task's bands, for tests of the run path (bands, normalization, resize,
    sliding windows, counting, records, intervals) that need a model's output but not a real network's: almost
    no model cost where a U-Net takes seconds per window on a CPU core."""

    kinds = frozenset({"segmentation"})

    def setup(self, task: Task, band_names: list[str]) -> None:
        self.module = torch.nn.Conv2d(len(band_names), task.class_schema.num_classes, 1)
        self.contract = InputContract(len(band_names), Normalization((127.5,) * len(band_names),
                                                                     (64.0,) * len(band_names)))

    def input_contract(self) -> InputContract:
        return self.contract

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class TrainablePixelLinear(PixelLinear):
    """`PixelLinear` that `train` accepts: for tests of the trainer's bookkeeping (seeds, shards, refusals),
    where a U-Net's forward passes would only cost time."""

    trainable = True


class TrainableNormedNet(TrainablePixelLinear):
    """A seeded 3×3 convolution, batch norm, ReLU and 1×1 convolution: a state with buffers (running
    statistics) beside weights, as a U-Net's has, at a fraction of a U-Net's cost per step on a CPU core."""

    def setup(self, task: Task, band_names: list[str]) -> None:
        super().setup(task, band_names)
        torch.manual_seed(0)
        self.module = torch.nn.Sequential(torch.nn.Conv2d(len(band_names), 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                          torch.nn.ReLU(), torch.nn.Conv2d(8, task.class_schema.num_classes, 1))


def trainable_normed_net() -> ModelSpec:
    """`TrainableNormedNet` registered as `normed-net-trainable`."""
    register_adapter("normed-net-trainable")(TrainableNormedNet)
    return ModelSpec("normed-net-trainable")


def trainable_pixel_linear() -> ModelSpec:
    """`TrainablePixelLinear` registered as `pixel-linear-trainable`."""
    register_adapter("pixel-linear-trainable")(TrainablePixelLinear)
    return ModelSpec("pixel-linear-trainable")


def pixel_linear(display_name: str = "pixel-linear") -> ModelSpec:
    """`PixelLinear` registered under its name, as a random-init model spec."""
    register_adapter("pixel-linear")(PixelLinear)
    return ModelSpec("pixel-linear", random_init=True, display_name=display_name)


def linear_model(checkpoint: Path, display_name: str = "pixel-linear") -> ModelSpec:
    """`PixelLinear` registered under its name, with weights from `checkpoint` (the `linear_checkpoint` fixture):
    the same numbers on every run, where a test compares two runs but needs no trained network."""
    register_adapter("pixel-linear")(PixelLinear)
    return ModelSpec("pixel-linear", checkpoint=checkpoint, display_name=display_name)


SMALL_MODEL = ModelSpec("smp", {"arch": "unet", "encoder": "resnet18"}, display_name="unet-r18")
# The one training of the run: the demo's, at this length (its protocol says 1,500; so the checkpoint is
# off-protocol, and tests check that it says so). Long enough that the source split scores above 0.6 mIoU
# (at 30 iterations on the 2-core build machine: 0.657 on one thread, 0.659 on two, as `-n 0` trains it; 0.77
# at 40, 0.42 at 20: steep, so a change here is measured on both before it lands).
TRAINED_ITERATIONS = 30


@pytest.fixture(scope="session", autouse=True)
def default_roots(tmp_path_factory: pytest.TempPathFactory):
    """`$RSDG_DATA` and `$RSDG_RESULTS` point into the session's temporary folder, so a command a test runs
    without --data-root or --results never writes into the checkout or the user's home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RSDG_DATA", str(tmp_path_factory.mktemp("default-data")))
        patch.setenv("RSDG_RESULTS", str(tmp_path_factory.mktemp("default-results")))
        yield


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """What `build(folder)` returns, built in `folder` once per test run. Under pytest-xdist the folder lies in
    the run's temporary folder, above each worker's own: the first worker builds it while holding a file lock,
    the others wait on the lock, then reuse it. A build that failed leaves no marker and is tried again."""
    base = factory.getbasetemp().parent if XDIST_WORKER else factory.getbasetemp()
    folder, marker = base / f"once-{name}", base / f"once-{name}.built"
    with FileLock(f"{folder}.lock"):
        if not marker.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            result = build(folder)
            marker.write_text(str(result.relative_to(folder)))
    return folder / marker.read_text()


@pytest.fixture(scope="session")
def toyearth_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_once(tmp_path_factory, "toyearth-raw", get_preparer("toyearth").make_fake)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory, toyearth_raw: Path) -> Path:
    def prepare(root: Path) -> Path:
        get_preparer("toyearth").prepare(toyearth_raw, root, progress=False)
        return root

    return built_once(tmp_path_factory, "toyearth-data", prepare)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder `rsdg-bench demo` left, run once per test run through `run_demo` (fake → prepare → train →
    evaluate the demo suite → site). Tests that change what is in it work on a copy (`demo_copy`). Beside other
    xdist workers the demo trains on one thread, as every test process does; alone, on its own two."""
    from rsdg_bench.demo import DEMO_THREADS, run_demo

    def demo(workdir: Path) -> Path:
        run_demo(workdir, iterations=TRAINED_ITERATIONS, progress=False, threads=1 if XDIST_WORKER else DEMO_THREADS)
        return workdir

    return built_once(tmp_path_factory, "demo", demo)


@pytest.fixture(scope="session")
def linear_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded `PixelLinear` weights for the demo tasks (RGB in, ToyEarth's 5 classes out), as a plain state dict."""
    def save(folder: Path) -> Path:
        torch.manual_seed(0)
        path = folder / "pixel-linear.pt"
        torch.save(torch.nn.Conv2d(3, 5, 1).state_dict(), path)
        return path

    return built_once(tmp_path_factory, "pixel-linear", save)


@pytest.fixture
def demo_copy(demo_run: Path, tmp_path: Path) -> Path:
    """A private copy of the demo's folder (data, results, site) for a test that writes into it."""
    copy = tmp_path / "demo"
    shutil.copytree(demo_run, copy, symlinks=True, ignore=shutil.ignore_patterns("raw"))
    return copy


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, demo_run: Path) -> dict:
    """The U-Net the demo trained on toyearth urban/train (selected on urban/val), as a checkpoint in a
    results folder of its own that holds nothing else. The demo's data and `data_root` come from the same
    deterministic fake, so the checkpoint's data version is `data_root`'s too."""
    from rsdg_bench.models.model_spec import default_checkpoint_dir
    from rsdg_bench.protocol.task_schema import TaskCatalog

    task = TaskCatalog().task("demo/u2a")
    source = default_checkpoint_dir(demo_run / "results", SMALL_MODEL.adapter) / f"{task.checkpoint_key}.pt"
    results = tmp_path_factory.mktemp("results")
    checkpoint = default_checkpoint_dir(results, SMALL_MODEL.adapter) / source.name
    checkpoint.parent.mkdir(parents=True)
    for path in source.parent.glob(f"{source.name}*"):  # the weights and their training history
        shutil.copy2(path, checkpoint.parent / path.name)
    return {"task": task, "checkpoint": checkpoint, "results": results}


CROSSEARTH_DATASETS = ("potsdam", "vaihingen", "loveda", "rescuenet", "openearthmap", "deepglobe_road",
                       "massachusetts_roads", "globalroadnet", "whu_building", "casid")


class PreparedFakes:
    """Each dataset's default raw-layout fake (unpacked), made once per test run, and prepared once per run by
    its real preparer into one shared data root, on first use (under a file lock per dataset, so xdist workers
    share them too). Tests read from it; a test that changes prepared files, or prepares a variant (an archive,
    a broken file), works in its own folder."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory
        self.root = built_once(factory, "prepared", lambda folder: folder)

    def raw(self, name: str) -> Path:
        """The unpacked fake of `name`'s raw download."""
        return built_once(self._factory, f"raw-{name}", get_preparer(name).make_fake)

    def data(self, *names: str) -> Path:
        """The shared data root, with each of `names` prepared in it."""
        for name in names:
            with FileLock(f"{self.root}-{name}.lock"):
                if not (self.root / name).is_dir():
                    get_preparer(name).prepare(self.raw(name), self.root, progress=False)
        return self.root

    def archive(self, name: str) -> Path:
        """`name`'s default fake as its download comes (`make_fake(archive=True)`: the archive, or the folder of
        archives), made once per run. Read it; a test that changes it works on a copy."""
        return built_once(self._factory, f"archive-{name}", lambda folder: get_preparer(name).make_fake(folder, archive=True))

    def from_archive(self, name: str) -> Path:
        """A data root of its own holding `name` prepared from `archive(name)` (checksums unchecked: a fake's
        archives are not the published ones), once per run, and nothing else but what the prepare left there."""
        def prepare(folder: Path) -> Path:
            get_preparer(name, verify_checksums=False).prepare(self.archive(name), folder, progress=False)
            return folder

        return built_once(self._factory, f"from-archive-{name}", prepare)


@pytest.fixture(scope="session")
def prepared_fakes(tmp_path_factory: pytest.TempPathFactory) -> PreparedFakes:
    return PreparedFakes(tmp_path_factory)


@pytest.fixture(scope="session")
def ce_raw(prepared_fakes: PreparedFakes) -> dict[str, Path]:
    """The raw-layout fake of every CrossEarth dataset, unpacked."""
    return {name: prepared_fakes.raw(name) for name in CROSSEARTH_DATASETS}


@pytest.fixture(scope="session")
def ce_data(prepared_fakes: PreparedFakes) -> Path:
    """A data root with every CrossEarth dataset prepared by its real preparer from its fake (the shared root:
    other datasets may be prepared there too)."""
    return prepared_fakes.data(*CROSSEARTH_DATASETS)
