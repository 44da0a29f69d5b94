"""Running a stranger's code in a sandbox: `submission verify --rerun` is the one step that executes a bundle's
adapter, and it does so in a separate process that bubblewrap (`bwrap`, Debian's `bubblewrap`) confines:

- **no network**: a network namespace of its own, with no interface but loopback;
- **reads only what it needs**: an allow-list of read-only mounts, namely the system's programs and libraries
  (`/usr`, the `/bin` and `/lib` links), the interpreter and its packages (`sys.prefix`, `sys.base_prefix`),
  rsdg-bench's own sources, and the job folder (the drawn samples' images, never a label, the bundle's adapter
  files and weights). The data root, the results, the maintainer's home and the rest of `/etc` are not there;
- **writes only its answer**: two writable mounts, both fresh folders of this run: the output folder, and a
  copy of this process's numba cache of the harness's compiled loops (`seeded_numba_cache`) at `/tmp/numba`,
  the child's `NUMBA_CACHE_DIR`, so that it loads their machine code instead of compiling it again (about 3 s
  of each re-run on the 2-core box); the rest of `/tmp` is a private tmpfs. Nothing the child writes is ever
  loaded outside it, and both folders are removed without following a link it may have left
  (`child_writable_folder`);
- **bounded**: its own process and IPC namespaces, killed with its parent, a wall-clock timeout, and address
  space and CPU-time limits (`setrlimit`).
Where no sandbox can be made (no `bwrap`, or one that cannot create namespaces), the re-run is refused unless
the maintainer passes `--trust-code`, which runs the same child process without confinement.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from rsdg_bench.base.errors import SubmissionError

# The few files of /etc that the interpreter and its libraries read (the dynamic linker's cache, name lookups
# of the own user); the rest of /etc (credentials, keys) stays out.
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group",
             "/etc/nsswitch.conf", "/etc/localtime")
SYSTEM_DIRS = ("/usr", "/opt/conda")  # programs and shared libraries (a conda base too, where there is one)
MERGED_USR_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
CHILD_NUMBA_CACHE = "/tmp/numba"  # the child's NUMBA_CACHE_DIR, in its private /tmp


@dataclass(frozen=True)
class Limits:
    """What the sandboxed process may use."""

    timeout_s: float = 1800.0
    memory_bytes: int = 16 * 2 ** 30  # address space (torch maps much more than it touches: keep generous)
    cpu_s: int = 3600


@cache
def bwrap() -> str | None:
    """The bubblewrap executable, if it is installed and can create the namespaces (None otherwise)."""
    found = shutil.which("bwrap")
    if found is None:
        return None
    probe = subprocess.run([found, "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--die-with-parent",
                            "--proc", "/proc", "--dev", "/dev", "true"], capture_output=True, timeout=60)
    return found if probe.returncode == 0 else None


def require_sandbox() -> str:
    """The bubblewrap executable, or the error that says what to install (or that `--trust-code` runs unconfined)."""
    executable = bwrap()
    if executable is None:
        raise SubmissionError("no sandbox can be made here (bubblewrap missing or unable to create namespaces)",
                              "install Debian's bubblewrap (apt-get install bubblewrap), or pass --trust-code to run "
                              "the bundle's code unconfined on this machine")
    return executable


def _code_roots() -> list[Path]:
    """Where this interpreter and rsdg-bench's sources live (an editable install's sources are outside it)."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent}
    for package in ("rsdg_bench", "rsdg_bench.prep", "rsdg_bench.baselines", "rsdg_bench.leaderboards"):
        spec = importlib.util.find_spec(package)  # where the (mapped) folders are; nothing of them is imported
        locations = spec.submodule_search_locations if spec is not None else None
        roots.update(Path(p).resolve().parent for p in locations or [])
    return sorted(r for r in roots if r.exists())


def seeded_numba_cache(folder: Path) -> Path:
    """`folder`, filled with this process's numba cache files of the harness's compiled loops (the class map's
    and the pair counter's), laid out as numba looks for them under `NUMBA_CACHE_DIR` for the same source
    files: a child whose cache directory is a copy of it loads their machine code instead of compiling it.
    Only a speed-up: a loop with no cache file here yet, a cache numba finds stale (another source), or numba
    internals this does not know, leave the child compiling as it would without the copy."""
    import inspect

    from rsdg_bench.evaluator import class_map
    from rsdg_bench.scoring import pair_counts

    try:
        from numba.core.caching import UserProvidedCacheLocator  # the locator NUMBA_CACHE_DIR selects
    except ImportError:
        return folder
    for module in (class_map, pair_counts):
        for loop in vars(module).values():
            cache: Any = getattr(loop, "_cache", None)
            try:
                index = Path(cache._cache_path) / cache._cache_file._index_name
                target = folder / UserProvidedCacheLocator.get_suitable_cache_subpath(inspect.getfile(loop.py_func))
            except (AttributeError, TypeError):
                continue  # not a cached numba loop, or a numba whose internals differ: the child compiles
            stem = index.name.removesuffix(".nbi")
            try:
                for file in [index, *index.parent.glob(f"{stem}.*.nbc")] if index.is_file() else []:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(file, target / file.name)
            except OSError:
                continue  # an unreadable cache file, a full disk: a partial copy is a cache miss, never an error
    return folder


@contextmanager
def child_writable_folder(prefix: str) -> Iterator[Path]:
    """A fresh temporary folder for the sandboxed child to write into, removed afterwards by `shutil.rmtree`,
    which never follows a link and changes no permission: `TemporaryDirectory`'s clean-up, on Python before
    3.11.8, 3.12.2, may chmod what a symlink left in a read-only folder points to (CVE-2023-6597). What the
    child made undeletable stays behind in the temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def confined_command(argv: list[str], job: Path, out: Path, hidden: Sequence[Path] = (), gpu: bool = False,
                     numba_cache: Path | None = None) -> list[str]:
    """`argv` under bwrap: the allow-list of read-only mounts, `job` read-only, `out` writable, no network.
    `hidden`: folders masked by an empty tmpfs where a mounted root holds them (a data root inside the
    checkout, as the demo's `./rsdg-demo/data`). `numba_cache`: a folder of this run's own (a copy made by
    `seeded_numba_cache`), mounted writable as the child's numba cache directory."""
    executable = require_sandbox()
    command = [executable, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
               "--new-session", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for folder in SYSTEM_DIRS:
        if Path(folder).is_dir():
            command += ["--ro-bind", folder, folder]
    for link in MERGED_USR_LINKS:
        path = Path(link)
        if path.is_symlink():
            command += ["--symlink", os.readlink(path), link]
        elif path.is_dir():
            command += ["--ro-bind", link, link]
    for file in ETC_FILES:
        if Path(file).exists():
            command += ["--ro-bind", file, file]
    roots = _code_roots()
    for root in roots:
        command += ["--ro-bind", str(root), str(root)]
    for mask in (Path(folder).resolve() for folder in hidden):
        if mask.exists() and any(mask.is_relative_to(root) for root in roots):
            command += ["--tmpfs", str(mask)]
    if gpu:  # the NVIDIA device nodes only (the driver's libraries are under /usr)
        for node in sorted(Path("/dev").glob("nvidia*")):
            command += ["--dev-bind", str(node), str(node)]
    if numba_cache is not None:
        command += ["--bind", str(numba_cache), CHILD_NUMBA_CACHE]
    command += ["--ro-bind", str(job), str(job), "--bind", str(out), str(out), "--chdir", str(out),
                "--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/bin:/bin",
                "--setenv", "XDG_CACHE_HOME", "/tmp", "--setenv", "NUMBA_CACHE_DIR", CHILD_NUMBA_CACHE,
                "--setenv", "OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1")]
    return command + ["--", *argv]


def _limit(limits: Limits) -> None:
    """Set in the child before it runs: address space and CPU time."""
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))


def run_child(argv: list[str], job: Path, out: Path, limits: Limits = Limits(), trust_code: bool = False,
              hidden: Sequence[Path] = (), gpu: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `argv` (a Python module of the harness) confined, or unconfined with `trust_code`; its output
    captured. A timeout kills it and is reported as a failed run, not raised."""
    if trust_code:
        return _run(argv, out, limits)
    with child_writable_folder("rsdg-numba-") as numba_cache:
        return _run(confined_command(argv, job, out, hidden, gpu, seeded_numba_cache(numba_cache)), out, limits)


def _run(command: list[str], out: Path, limits: Limits) -> subprocess.CompletedProcess[str]:
    """`command` run in `out` under `limits`, its output captured; a timeout is a failed run, not raised."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=limits.timeout_s, cwd=out,
                              preexec_fn=lambda: _limit(limits))
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(command, -9, "", f"the re-run took longer than {limits.timeout_s:.0f} s "
                                                            f"and was stopped ({exc.cmd[0]})")
