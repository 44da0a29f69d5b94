"""Submission bundles: one file (a `.zip`, or a folder) holding a model's records and what made them.

Members:
- `submission.json`: the manifest (below), with the sha256 of every other member;
- `records/<task id>/<key>.json`: the model's result records, as `run` wrote them;
- `adapter/…`: the adapter's source files for a `file.py:Class` adapter (for a built-in, its name; for an
  installed plug-in, its distribution, version and the sha256 of the distribution's installed-file list);
- `weights/<sha256>.<suffix>`: the checkpoints, only with `--include-weights` (else only their sha256s);
- `environment/pip-freeze.txt`: every installed distribution and version.

The manifest also names the harness version and git commit, the selection (a suite or tasks) and the model
card (`--card FILE.yaml`: name, paper, URL, licence, contact; free text). Reading a bundle never executes
anything; member names must stay inside the bundle and sizes are bounded before anything is read.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import distribution, distributions
from pathlib import Path, PurePosixPath
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from rsdg_bench import __version__
from rsdg_bench.base.bounded_json import loads_bounded
from rsdg_bench.base.errors import SubmissionError
from rsdg_bench.base.io import atomic_write_bytes, sha256_bytes, sha256_file
from rsdg_bench.records.results import ResultRecord, ResultStore, git_commit

MANIFEST = "submission.json"
FORMAT_VERSION = 1
MAX_MEMBERS = 10_000  # records (tasks × splits), adapter sources, weights: hundreds in practice
MAX_MEMBER_BYTES = 2 * 1024 ** 3  # a checkpoint may be large; records are capped by `results.MAX_RECORD_BYTES`
MAX_MANIFEST_BYTES = 16 * 1024 ** 2
MAX_DATA_BYTES = 2 * 1024 ** 3  # everything but weights/, unpacked
MAX_BUNDLE_BYTES = 64 * 1024 ** 3
MAX_RATIO = 100  # unpacked ÷ packed, for members larger than RATIO_FLOOR (JSON records deflate ~10:1)
RATIO_FLOOR = 1024 ** 2
ADAPTER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
CARD_FIELDS = ("name", "paper", "url", "code", "weights", "licence", "contact", "description")


class AdapterSource(BaseModel):
    """Where the adapter's code is: `built-in` (by name, part of the harness), `file` (its sources are
    members under `adapter/`; `entry` is `file.py:Class` inside that folder), or `package` (an installed
    distribution, by name, version and the sha256 of its installed-file list)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["built-in", "file", "package"]
    name: str
    code_sha256: str | None = None
    entry: str | None = None
    files: list[str] = []
    distribution: str | None = None
    version: str | None = None
    record_sha256: str | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        """An adapter's name is a name, never a path or a `file.py:Class` spec: a bundle cannot make the
        maintainer's harness import a file by naming it (the name is only ever looked up among built-ins and
        installed plug-ins)."""
        if not ADAPTER_NAME.fullmatch(name):
            raise ValueError(f"adapter name {name!r} is not a plain name (letters, digits, '_', '-', '.')")
        return name

    @model_validator(mode="after")
    def _inert_sources(self) -> AdapterSource:
        """A file adapter's `entry` and `files` are plain relative names inside `adapter/`; the other kinds
        carry no files."""
        if self.kind != "file":
            if self.files or self.entry:
                raise ValueError(f"a {self.kind} adapter carries no source files or entry")
            return self
        file, _, cls_name = (self.entry or "").partition(":")
        if not file.endswith(".py") or not cls_name.isidentifier() or file not in self.files:
            raise ValueError(f"entry {self.entry!r} is not `file.py:Class` naming one of the bundled files")
        for rel in self.files:
            pure = PurePosixPath(rel)
            if (not rel or pure.is_absolute() or ".." in pure.parts or "." in pure.parts or "\\" in rel
                    or pure.as_posix() != rel):
                raise ValueError(f"adapter file {rel!r} is not a plain relative path")
        return self


class SubmissionManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int
    model: str
    card: dict[str, str] = {}
    suite: str | None = None
    tasks: list[str] = []
    adapter: AdapterSource
    checkpoints: dict[str, str | None]  # sha256 → weights member (None: not included)
    harness: dict[str, str]
    members: dict[str, str]  # member name → sha256
    date: str


# --------------------------------------------------------------------------- reading

class Bundle:
    """A bundle opened for reading: its members' names and bytes, from a zip or a folder, bounded.

    Opening checks every rule that needs no member's content (see docs/security.md): at most `MAX_MEMBERS`
    plain files (no links, no devices); names that are relative, UTF-8, free of `..`, `.`, empty parts,
    backslashes and control characters, and each present once; sizes within `MAX_MEMBER_BYTES` a member
    (`MAX_MANIFEST_BYTES` for the manifest, `results.MAX_RECORD_BYTES` for a record), `MAX_DATA_BYTES` in all
    apart from weights and `MAX_BUNDLE_BYTES` with them; no member compressed more than `MAX_RATIO` times.
    Reading a member checks its CRC. A broken rule is a SubmissionError naming the bundle and the rule."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._infos: dict[str, zipfile.ZipInfo] = {}
        if self.path.is_dir() and not self.path.is_symlink():
            self.names = self._folder_members()
        elif self.path.is_file() and not self.path.is_symlink():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                raise SubmissionError(f"{self.path} is not a zip archive: {exc}",
                                      "give the .zip (or folder) `rsdg-bench submission pack` wrote") from exc
            self.names = self._zip_members()
        else:
            raise SubmissionError(f"no submission bundle at {self.path}",
                                  "give the .zip or folder `rsdg-bench submission pack` wrote")
        _check_sizes(self.path, {name: self.size(name) for name in self.names})

    def _refuse(self, rule: str, detail: str) -> SubmissionError:
        return SubmissionError(f"{self.path}: {rule}: {detail}", "pack the bundle again with `rsdg-bench submission pack`")

    def _zip_members(self) -> list[str]:
        assert self._zip is not None
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise self._refuse("member count", f"{len(infos)} members, more than {MAX_MEMBERS}")
        for info in infos:
            if info.is_dir():
                continue
            if (info.external_attr >> 16) & 0o170000 not in (0, stat.S_IFREG):
                raise self._refuse("plain files", f"member {info.filename!r} is a link or a special file")
            if not info.flag_bits & 0x800 and not info.filename.isascii():
                raise self._refuse("member names", f"member {info.filename!r} is not named in UTF-8")
            name = _member_name(info.filename, self.path)
            if name in self._infos:
                raise self._refuse("member names", f"member {name!r} appears twice")
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise self._refuse("compression ratio", f"member {name!r} unpacks {info.file_size} bytes from "
                                   f"{info.compress_size} (more than {MAX_RATIO}:1)")
            self._infos[name] = info
        return list(self._infos)

    def _folder_members(self) -> list[str]:
        names = []
        for path in sorted(self.path.rglob("*")):
            if path.is_symlink():
                raise self._refuse("plain files", f"{path} is a link; a bundle holds plain files only")
            if path.is_dir():
                continue
            if not path.is_file():
                raise self._refuse("plain files", f"{path} is not a plain file")
            relative = path.relative_to(self.path).as_posix()
            try:
                relative.encode("utf-8")
            except UnicodeEncodeError:
                raise self._refuse("member names", f"{relative!r} is not named in UTF-8") from None
            names.append(_member_name(relative, self.path))
            if len(names) > MAX_MEMBERS:
                raise self._refuse("member count", f"more than {MAX_MEMBERS} files")
        return names

    def size(self, name: str) -> int:
        """The member's (declared) unpacked size."""
        if self._zip is not None:
            return self._infos[name].file_size
        return (self.path / name).stat().st_size

    def _chunks(self, name: str, limit: int) -> Iterator[bytes]:
        """The member's bytes in chunks, at most `limit` in all; a CRC error or a member that unpacks past
        its declared size is a SubmissionError."""
        if name not in self.names:
            raise SubmissionError(f"{self.path} has no member {name}", "pack the bundle again")
        if self.size(name) > limit:
            raise self._refuse("member size", f"member {name} is {self.size(name) >> 20} MiB, more than "
                               f"{limit >> 20} MiB")
        seen = 0
        try:
            with (self._zip.open(self._infos[name]) if self._zip is not None else (self.path / name).open("rb")) as f:
                while chunk := f.read(1 << 20):
                    seen += len(chunk)
                    if seen > self.size(name):
                        raise self._refuse("member size", f"member {name} unpacks past its declared size")
                    yield chunk
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError, ValueError) as exc:
            raise self._refuse("integrity", f"member {name} cannot be read whole ({exc})") from exc

    def read(self, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
        """A member's bytes (CRC checked); a member larger than `limit` is refused unread."""
        return b"".join(self._chunks(name, limit))

    def member_sha256(self, name: str) -> str:
        """A member's sha256, streamed (a weights member is not held in memory whole)."""
        digest = hashlib.sha256()
        for chunk in self._chunks(name, MAX_MEMBER_BYTES):
            digest.update(chunk)
        return digest.hexdigest()

    def manifest(self) -> SubmissionManifest:
        try:
            return SubmissionManifest.model_validate(loads_bounded(self.read(MANIFEST, MAX_MANIFEST_BYTES),
                                                                   MAX_MANIFEST_BYTES))
        except (ValueError, UnicodeDecodeError, ValidationError, RecursionError) as exc:
            raise SubmissionError(f"{self.path}: {MANIFEST} is not a valid submission manifest: {exc}",
                                  "pack the bundle again with `rsdg-bench submission pack`") from exc

    def record_members(self) -> list[str]:
        return sorted(n for n in self.names if n.startswith("records/") and n.endswith(".json"))

    def sha256(self) -> str:
        """The bundle's own digest (the zip file, or the manifest of a folder bundle)."""
        return sha256_file(self.path) if self._zip is not None else sha256_bytes(self.read(MANIFEST))

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _member_name(name: str, bundle: Path) -> str:
    """A member name exactly as a bundle writes it: relative, `/`-separated, without `..`, `.` or empty
    parts, backslashes or control characters (`./x` and `x` would be two names for one file)."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in parts)
            or any(ord(c) < 32 or ord(c) == 127 for c in name)):
        raise SubmissionError(f"{bundle}: member names: {name!r} is not a plain relative name",
                              "a bundle's members are relative paths; pack it again")
    return name


def _check_sizes(bundle: Path, sizes: dict[str, int]) -> None:
    """The size rules that need no content: per member by kind, and in all."""
    from rsdg_bench.records.results import MAX_RECORD_BYTES

    fix = "pack records and sources only (weights stay apart unless asked for)"
    for name, size in sizes.items():
        limit = (MAX_MANIFEST_BYTES if name == MANIFEST else MAX_RECORD_BYTES if name.startswith("records/")
                 else MAX_MEMBER_BYTES)
        if size > limit:
            raise SubmissionError(f"{bundle}: member size: {name} is {size >> 20} MiB, more than {limit >> 20} MiB", fix)
    data = sum(size for name, size in sizes.items() if not name.startswith("weights/"))
    if data > MAX_DATA_BYTES or sum(sizes.values()) > MAX_BUNDLE_BYTES:
        raise SubmissionError(f"{bundle}: total size: {data >> 20} MiB of records and sources, "
                              f"{sum(sizes.values()) >> 20} MiB in all unpacked: more than a bundle may", fix)


# --------------------------------------------------------------------------- packing

@dataclass(frozen=True)
class PackReport:
    bundle: Path
    records: int
    left_out: list[tuple[str, str]]
    tasks: list[str]


def model_records(results: Path, model: str, task_ids: list[str] | None) -> tuple[list[tuple[Path, ResultRecord]],
                                                                                  list[tuple[str, str]]]:
    """The records of one model (its display name, else its adapter name) in a results folder, newest per
    task and split, limited to `task_ids`; smoke, random-init and oracle records are left out (with why)."""
    valid, refused = ResultStore(Path(results)).load_valid()
    if refused:
        first, first_why = refused[0]
        raise SubmissionError(f"{len(refused)} records in {results} fail their checks, e.g. {first}: {first_why}",
                              "re-run those tasks (or remove the records) before packing")
    named = [(p, r) for p, r in valid if r.model.display_name == model]
    if not named:
        named = [(p, r) for p, r in valid if r.model.adapter == model]
        names = sorted({r.model.display_name or "" for _, r in named})
        if len(names) > 1:
            raise SubmissionError(f"adapter {model} has records under several names: {', '.join(names)}",
                                  "pass one of those names with --model")
    if not named:
        shown = sorted({r.model.display_name or "" for _, r in valid})
        raise SubmissionError(f"no records of model {model!r} in {results}",
                              f"models there: {', '.join(shown) or 'none'}; `rsdg-bench run --name NAME` names them")
    left_out: list[tuple[str, str]] = []
    chosen: dict[tuple[str, str], tuple[Path, ResultRecord]] = {}
    for path, record in sorted(named, key=lambda pr: pr[1].provenance.date or "", reverse=True):
        why = board_exclusion(record)
        if task_ids is not None and record.task.id not in task_ids:
            continue
        if why:
            left_out.append((str(path), why))
            continue
        chosen.setdefault((record.task.id, record.evaluated.slug), (path, record))
    return [chosen[k] for k in sorted(chosen)], left_out


def board_exclusion(record: ResultRecord) -> str | None:
    """Why a record can never be on a board (a smoke run, random-init weights, an oracle), else None."""
    if record.smoke is not None:
        return f"smoke run (--limit {record.smoke.get('limit')})"
    if record.model.checkpoint.get("random_init"):
        return "random-init weights"
    if record.model.peeks_at_labels:
        return "an oracle that chooses with the labels"
    return None


def adapter_source(records: list[ResultRecord], adapter_spec: str | None) -> tuple[AdapterSource, dict[str, bytes]]:
    """Where the records' adapter code is, and the source members to pack (a file adapter's files)."""
    from rsdg_bench.models.code_identity import code_identity
    from rsdg_bench.models.registry import available_adapters, resolve_adapter

    identities = {json.dumps(r.model.code, sort_keys=True) for r in records}
    names = {r.model.adapter for r in records}
    if len(identities) != 1 or len(names) != 1:
        raise SubmissionError(f"the records were made by {len(identities)} versions of the adapter code "
                              f"({', '.join(sorted(n or '' for n in names))})",
                              "re-run the older tasks with the current adapter (`run --force`) so one code made all")
    code, name = records[0].model.code or {}, records[0].model.adapter or ""
    if code.get("distribution"):
        dist = distribution(code["distribution"])
        listing = dist.read_text("RECORD") or ""
        return AdapterSource(kind="package", name=name, code_sha256=code.get("sha256"),
                             distribution=code["distribution"], version=code.get("version"),
                             record_sha256=sha256_bytes(listing.encode())), {}
    if adapter_spec is None and available_adapters().get(name) == "built-in":
        return AdapterSource(kind="built-in", name=name, code_sha256=code.get("sha256")), {}
    if adapter_spec is None or ".py:" not in adapter_spec:
        raise SubmissionError(f"the records' adapter {name!r} is neither built in nor an installed plug-in",
                              "pass its source with --adapter path/to/file.py:ClassName")
    cls = resolve_adapter(adapter_spec)
    now = code_identity(cls)
    if now.get("sha256") != code.get("sha256"):
        raise SubmissionError(f"{adapter_spec} is not the code that made the records (code sha256 "
                              f"{str(now.get('sha256'))[:12]}, the records say {str(code.get('sha256'))[:12]})",
                              "re-run the tasks with this adapter (`run --force`), or pass the file that made them")
    folder = Path(adapter_spec.rsplit(":", 1)[0]).resolve().parent
    sources = {f"adapter/{rel}": (folder / rel).read_bytes() for rel in now["files"]}
    entry = f"{Path(adapter_spec.rsplit(':', 1)[0]).name}:{adapter_spec.rsplit(':', 1)[1]}"
    return AdapterSource(kind="file", name=name, code_sha256=now["sha256"], entry=entry, files=list(now["files"])), sources


def read_card(path: Path | None) -> dict[str, str]:
    """The model card: a small YAML mapping of the `CARD_FIELDS` (free text)."""
    if path is None:
        return {}
    try:
        card = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"cannot read the model card {path}: {exc}",
                              f"write a YAML mapping with some of: {', '.join(CARD_FIELDS)}") from exc
    if not isinstance(card, dict) or not all(isinstance(v, str | int | float) for v in card.values()):
        raise SubmissionError(f"{path} is not a YAML mapping of text fields",
                              f"write e.g. `name: ...`, `paper: ...` (fields: {', '.join(CARD_FIELDS)})")
    unknown = sorted(set(card) - set(CARD_FIELDS))
    if unknown:
        raise SubmissionError(f"{path}: unknown card fields {', '.join(map(str, unknown))}",
                              f"use: {', '.join(CARD_FIELDS)}")
    return {str(k): str(v) for k, v in card.items()}


def pip_freeze() -> str:
    """Every installed distribution as `name==version`, sorted (the environment the records were made in)."""
    found = {(d.metadata["Name"] or "?", d.version) for d in distributions()}
    return "".join(f"{name}=={version}\n" for name, version in sorted(found, key=lambda nv: nv[0].lower()))


def pack(results: Path, model: str, task_ids: list[str] | None, out: Path, *, suite: str | None = None,
         folder: bool = False, adapter_spec: str | None = None, card: Path | None = None,
         include_weights: bool = False, checkpoints: Path | None = None) -> PackReport:
    """Write a bundle of `model`'s records (see the module docstring); the bundle appears whole or not at all,
    and only where nothing else would be replaced (absent, empty, or an earlier bundle)."""
    out = _claim(Path(out), folder)
    chosen, left_out = model_records(results, model, task_ids)
    if not chosen:
        raise SubmissionError(f"no records of {model!r} for the selected tasks in {results} (left out: "
                              f"{'; '.join(why for _, why in left_out[:3]) or 'none'})",
                              "run the tasks first (`rsdg-bench run`), without --limit or --random-init")
    records = [r for _, r in chosen]
    source, sources = adapter_source(records, adapter_spec)
    members: dict[str, bytes] = {**sources, "environment/pip-freeze.txt": pip_freeze().encode()}
    for path, record in chosen:
        members[f"records/{record.task.id}/{path.name}"] = path.read_bytes()
    weights: dict[str, str | None] = {}
    for record in records:
        sha = record.model.checkpoint.get("sha256")
        if sha and sha not in weights:
            weights[sha] = None
            if include_weights:
                file = _find_weights(sha, record, checkpoints)
                member = weights[sha] = f"weights/{sha}{file.suffix}"
                members[member] = file.read_bytes()
    manifest = SubmissionManifest(
        format_version=FORMAT_VERSION, model=model, card=read_card(card), suite=suite,
        tasks=sorted({r.task.id for r in records}), adapter=source, checkpoints=weights,
        harness={"version": __version__, "git_commit": git_commit()},
        members={name: sha256_bytes(data) for name, data in sorted(members.items())},
        date=datetime.now(UTC).isoformat(timespec="seconds"))
    members[MANIFEST] = json.dumps(manifest.model_dump(mode="json"), indent=1).encode()
    _write(members, Path(out), folder)
    return PackReport(Path(out), len(records), left_out, manifest.tasks)


def _claim(out: Path, folder: bool) -> Path:
    """`out` if a bundle may be written there: absent, empty, or an earlier bundle (`output_owner`)."""
    from rsdg_bench.base.output_owner import claim_file, claim_folder

    if folder:
        return claim_folder(out, MANIFEST, "an rsdg-bench submission bundle")
    return claim_file(out, _is_bundle_zip, "an rsdg-bench submission bundle")


def _is_bundle_zip(path: Path) -> bool:
    """Whether `path` is a zip holding a submission manifest (a bundle `pack` wrote, which it may replace)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return MANIFEST in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _find_weights(sha: str, record: ResultRecord, folder: Path | None) -> Path:
    """The checkpoint file with this sha256: the path the record names, else a file in `folder`."""
    named = record.model.checkpoint.get("path")
    candidates = ([Path(named)] if named else []) + (sorted(p for p in Path(folder).rglob("*") if p.is_file())
                                                      if folder else [])
    for candidate in candidates:
        if candidate.is_file() and sha256_file(candidate) == sha:
            return candidate
    raise SubmissionError(f"no checkpoint with sha256 {sha[:12]}… (record of {record.task.id} names "
                          f"{named or 'no path'})", "pass the folder that holds it with --checkpoints DIR")


def _write(members: dict[str, bytes], out: Path, folder: bool) -> None:
    if folder:
        from rsdg_bench.base.folder_swap import swap_in

        staging = out.parent / f".{out.name}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        for name, data in members.items():
            atomic_write_bytes(staging / name, data)
        swap_in(staging, out)
        return
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(members.items()):
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED)
    atomic_write_bytes(out, buffer.getvalue())


def iter_bundles(folder: Path) -> Iterator[Path]:
    """The bundles in a folder of submissions: `*.zip` files and folders holding a `submission.json`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(f"no submissions folder at {folder}", "point --submissions at a folder of bundles")
    for path in sorted(folder.iterdir()):
        if path.suffix == ".zip" or (path.is_dir() and (path / MANIFEST).is_file()):
            yield path
