"""What every dataset preparer shares: the registry, finding the raw download, safe archive extraction.

A preparer is one class per raw dataset (TorchGeo's pattern): facts as class attributes (archive names,
known checksums, classes, domains and bands, published counts, citation, licence), `make_fake()` writing
a small copy of the *raw* layout for tests and the demo, and `build()` reading that layout into the
canonical prepared format; `prepare()`, shared, finds the download and runs `build`.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import json
import os
import shutil
import tarfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rsdg_bench.base.errors import DataError
from rsdg_bench.base.io import sha256_file
from rsdg_bench.base.registry import Registry
from rsdg_bench.datasets.data_lock import preparing

if TYPE_CHECKING:
    from rsdg_bench.datasets.prepared import DomainInfo, PreparedWriter

ENTRY_POINT_GROUP = "rsdg_bench.datasets"
DEFAULT_MAX_RAW_BYTES = 512 * 2 ** 30
# The running prepare's cap on what its archives may unpack to (`Preparer.max_raw_bytes`).
RAW_BYTES_LIMIT: ContextVar[int] = ContextVar("raw_bytes_limit", default=DEFAULT_MAX_RAW_BYTES)


class Preparer(abc.ABC):
    """One raw dataset → prepared data.

    A subclass states the dataset's facts as class attributes and implements two steps: `make_fake` (a small
    copy of the raw layout) and `build` (read the raw files, add samples to the writer from `open_writer`,
    end with `finish`). Finding the download, extracting archives (kept for a rerun when the build fails,
    removed when it succeeds) and the dataset card's facts are shared here, in `prepare`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    prep_version: ClassVar[int]
    # Archive file name → its published checksum as "md5:<hex>" or "sha256:<hex>" (None: none published).
    archives: ClassVar[Mapping[str, str | None]]
    classes: ClassVar[str]  # the class schema (`tasks/classes/<name>.yaml`) the labels are decoded to
    citation: ClassVar[str]
    licence: ClassVar[str]
    domains: ClassVar[dict[str, DomainInfo]]  # domain → what it is and its stored bands
    # The sizes the papers report for the full release (domain → split → samples), recorded in the card.
    published_counts: ClassVar[dict[str, dict[str, int]]] = {}
    # Size caps, so a corrupt or hostile download is refused before it fills memory or disk: the most pixels
    # one raw image may have (read from its header before decoding), and the most bytes its archives may
    # unpack to (their members' declared sizes, checked before extracting). Raised per run with
    # `prepare --max-pixels` / `--max-raw-gib`.
    max_raw_pixels: ClassVar[int] = 64 * 2 ** 20
    max_raw_bytes: ClassVar[int] = DEFAULT_MAX_RAW_BYTES
    # The splits whose labels the release keeps private ("domain/split"): an organizer who holds them passes
    # `private_labels` (a folder in the raw layout of the labels) and the split is prepared labelled.
    private_label_splits: ClassVar[tuple[str, ...]] = ()

    def __init__(self, verify_checksums: bool = True, max_pixels: int | None = None,
                 max_raw_bytes: int | None = None, workers: int = 1) -> None:
        self.verify_checksums = verify_checksums
        self.workers = workers  # threads that encode, write and hash samples (`prepare --workers`)
        self._writers: list[PreparedWriter] = []
        self.private_labels: Path | None = None
        self.pixel_limit = max_pixels or self.max_raw_pixels
        self.byte_limit = max_raw_bytes or self.max_raw_bytes

    def checksums(self) -> dict[str, str | None]:
        """The archives with the checksums to verify (none when verification is switched off)."""
        return dict(self.archives) if self.verify_checksums else dict.fromkeys(self.archives)

    def domain_bands(self, domain: str) -> list[str]:
        """The stored bands of `domain`, known without preparing anything."""
        if domain not in self.domains:
            raise DataError(f"dataset {self.name} has no domain {domain!r}", f"its domains are {', '.join(self.domains)}")
        return [band.name for band in self.domains[domain].bands]

    @abc.abstractmethod
    def make_fake(self, out: Path, seed: int = 0, archive: bool = False) -> Path:
        """Write a small fake of the raw download under `out` (the unpacked folder, or with `archive` the
        archive as downloaded); return what to pass as `--raw`."""

    def prepare(self, raw: Path, data_root: Path, progress: bool = True) -> Path:
        """Prepare the raw download at `raw` (folder or archives) into `data_root/<name>`; return that folder."""
        from rsdg_bench.datasets.prepared import RAW_PIXEL_LIMIT

        data_root = Path(data_root)
        pixels, unpacked = RAW_PIXEL_LIMIT.set(self.pixel_limit), RAW_BYTES_LIMIT.set(self.byte_limit)
        try:
            with preparing(data_root, self.name), self.open_raw(Path(raw), data_root / f".{self.name}.raw") as files:
                try:
                    return self.build(files, data_root, progress)
                finally:  # a build that failed leaves no write running once the prepare lock is released
                    for writer in self._writers:
                        with contextlib.suppress(Exception):  # the build's own error is the one to report
                            writer.close()
                    self._writers.clear()
        finally:
            RAW_PIXEL_LIMIT.reset(pixels)
            RAW_BYTES_LIMIT.reset(unpacked)

    def open_raw(self, raw: Path, scratch: Path) -> AbstractContextManager[Any]:
        """The raw files, as `build` reads them: by default a `RawFiles` over the folder and its archives."""
        return raw_files(raw, self.checksums(), scratch)

    @abc.abstractmethod
    def build(self, files: Any, data_root: Path, progress: bool) -> Path:
        """Read the raw files (what `open_raw` gives), write every sample, and return `self.finish(...)`."""

    def open_writer(self, data_root: Path, **options: Any) -> PreparedWriter:
        """The writer of this dataset's prepared folder, labels in the `classes` schema, every image checked
        against its domain's declared bands and dtype (options: fingerprint, crs, timesteps, label_level,
        domain_schemas)."""
        from rsdg_bench.datasets.classes import load_class_schema
        from rsdg_bench.datasets.prepared import PreparedWriter

        writer = PreparedWriter(data_root, self.name, load_class_schema(self.classes), domains=self.domains,
                                workers=self.workers, **options)
        self._writers.append(writer)
        return writer

    def finish(self, writer: PreparedWriter, files: Any, **details: Any) -> Path:
        """Publish the prepared folder with the card's facts from the class attributes and `details`
        (expected_counts, notes, ...); what the prepare read is taken from `files` (a `RawFiles`, or the
        `SourceArchive` list itself)."""
        facts = {"prep_version": self.prep_version, "citation": self.citation, "licence": self.licence,
                 "domains": self.domains, "published_counts": self.published_counts,
                 "source_archives": source_archives_of(files) if isinstance(files, RawFiles) else files}
        return writer.finish(**{**facts, **details})  # details win: e.g. only the domains a download holds


def uint8_bands(names: tuple[str, ...] | list[str]) -> list:
    """BandInfo entries for 8-bit digital numbers, the encoding of every RGB / NIR-R-G photo product."""
    from rsdg_bench.datasets.prepared import BandInfo

    return [BandInfo(name=name, dtype="uint8", units="DN") for name in names]


def _states_its_facts(cls: type[Preparer]) -> None:
    missing = [fact for fact in ("summary", "prep_version", "archives", "classes", "citation", "licence", "domains")
               if not hasattr(cls, fact)]
    if missing:
        raise DataError(f"preparer {cls.__module__}.{cls.__qualname__} states no {', '.join(missing)}",
                        "set them as class attributes (see docs/extending.md)")


# Every module of `rsdg_bench.prep` registers its class on import; installed packages declare theirs in the
# entry-point group `rsdg_bench.datasets` (`[project.entry-points."rsdg_bench.datasets"] mydata =
# "mypkg.prep:MyData"`).
PREPARERS: Registry[type[Preparer]] = Registry("preparer", ENTRY_POINT_GROUP, DataError, check=_states_its_facts)


def register_preparer(cls: type[Preparer]) -> type[Preparer]:
    """Class decorator: make a preparer available under its `name`; a second class of that name is an error."""
    return PREPARERS.register(cls)


def available_preparers() -> dict[str, type[Preparer]]:
    return {name: PREPARERS.get(name) for name in sorted(PREPARERS.names())}


def get_preparer(name: str, verify_checksums: bool = True, max_pixels: int | None = None,
                 max_raw_bytes: int | None = None, private_labels: Path | None = None, workers: int = 1) -> Preparer:
    """The preparer of a dataset; `private_labels`: the folder of labels its release keeps private (an
    organizer's preparation, see docs/submissions.md); `workers`: threads that write samples (the same
    bytes whatever the count)."""
    if name not in PREPARERS:
        raise DataError(f"no preparer for dataset {name!r}", f"use one of: {', '.join(sorted(PREPARERS.names()))}")
    preparer = PREPARERS.get(name)(verify_checksums, max_pixels, max_raw_bytes, workers)
    if private_labels is not None:
        if not preparer.private_label_splits:
            raise DataError(f"{name} publishes the labels of all its splits; there are no private labels to add",
                            "drop --private-labels")
        if not Path(private_labels).is_dir():
            raise DataError(f"no private labels folder at {private_labels}",
                            f"pass the folder holding the labels of {', '.join(preparer.private_label_splits)}")
        preparer.private_labels = Path(private_labels)
    return preparer


def _safe_members(names: list[str], archive: Path) -> None:
    for name in names:
        target = Path(name)
        if target.is_absolute() or ".." in target.parts:
            raise DataError(f"{archive} holds an unsafe path {name!r}", "this is not the original archive")


def _check_unpacked_size(archive: Path, sizes: dict[str, int], into: Path) -> None:
    """Refuse to extract members whose declared sizes add up to more than the dataset's release can hold,
    or than the disk has free (the archive is fine then: the advice is about space, not a new download).
    zipfile and tarfile never write a member past its declared size, so the declared sizes bound the writes."""
    total, limit = sum(sizes.values()), RAW_BYTES_LIMIT.get()
    if total > limit:
        largest = max(sizes, key=sizes.__getitem__)
        raise DataError(f"{archive} would unpack to {total / 2 ** 30:.2f} GiB (largest member {largest}: "
                        f"{sizes[largest] / 2 ** 30:.2f} GiB), more than the {limit / 2 ** 30:.2f} GiB this dataset's "
                        "release holds: a corrupt or hostile archive, or not this dataset's",
                        "check the download; if the release really is this large, raise the limit with "
                        "`rsdg-bench prepare NAME --max-raw-gib G`")
    free = shutil.disk_usage(into.parent).free
    if total > free:
        raise DataError(f"extracting {archive} needs {total / 2 ** 30:.2f} GiB, {free / 2 ** 30:.2f} GiB are free at "
                        f"{into.parent}", "free space there, or point --data-root (RSDG_DATA) at a larger disk; "
                        "the archive itself is fine")


def extract_archive(archive: Path, into: Path) -> None:
    """Extract a zip or tar archive into `into` atomically (temporary sibling, then rename)."""
    tmp = into.with_name(f".{into.name}.extracting")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _safe_members(zf.namelist(), archive)
                _check_unpacked_size(archive, {info.filename: info.file_size for info in zf.infolist()}, tmp)
                bad = zf.testzip()
                if bad is not None:
                    raise DataError(f"{archive} is corrupt (member {bad} fails its CRC)", "download it again")
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                _safe_members([member.name for member in members], archive)
                _check_unpacked_size(archive, {member.name: member.size for member in members}, tmp)
                tf.extractall(tmp, filter="data")
        else:
            raise DataError(f"{archive} is neither a zip nor a tar archive (truncated or corrupt download?)",
                            "download it again")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):  # the disk, not the file
            raise DataError(f"cannot extract {archive} into {into.parent}: {exc.strerror}",
                            "free space there or make it writable, or point --data-root (RSDG_DATA) elsewhere; "
                            "the archive itself is fine") from exc
        raise DataError(f"{archive} cannot be read: {exc}", "the download is corrupt or truncated; download it again") from exc
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive} cannot be read: {exc}", "the download is corrupt or truncated; download it again") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if into.exists():
        shutil.rmtree(into)
    os.replace(tmp, into)


def verify_checksum(path: Path, expected: str) -> None:
    """Check `path` against a published checksum, "md5:<hex>" or "sha256:<hex>" (a bare hex is sha256)."""
    import hashlib

    algorithm, _, digest = expected.rpartition(":")
    hasher = hashlib.new(algorithm or "sha256")
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    if hasher.hexdigest() != digest.lower():
        raise DataError(f"{path} has {algorithm or 'sha256'} {hasher.hexdigest()}, the published one is {digest}",
                        "the file is corrupt, truncated or from another release; download it again "
                        "(--no-checksum skips this check for archives you re-packed yourself)")


def extract_once(archive: Path, checksum: str | None, scratch: Path) -> Path:
    """Extract `archive` into `scratch/<stem>` unless a stamp shows this very file was extracted there
    before (a rerun after a failure); its checksum is verified first when one is published."""
    extracted = scratch / archive.name.split(".")[0]
    stamp = extracted / ".extracted-from"
    identity = f"{archive.resolve()} {archive.stat().st_size} {archive.stat().st_mtime_ns}"
    if not (stamp.is_file() and stamp.read_text() == identity):
        if checksum is not None:
            verify_checksum(archive, checksum)
        extract_archive(archive, extracted)
        stamp.write_text(identity)
    return extracted


@contextmanager
def raw_folder(raw: Path, folder_name: str, archive_names: dict[str, str | None], scratch: Path) -> Iterator[Path]:
    """Yield the unpacked top folder `folder_name` of a download, extracting an archive if that is what we got.

    `raw` may be the unpacked folder itself, a folder that contains it, an archive, or a folder that
    contains the archive. Archives with a known sha256 are checked before extraction. An extraction goes
    to `scratch`; it is kept if the prepare fails (a rerun reuses it) and removed once the prepare succeeds.
    """
    raw = Path(raw).expanduser()
    if not raw.exists():
        raise DataError(f"{raw} does not exist", "pass --raw the downloaded archive or the folder it unpacks to")
    if raw.is_dir() and raw.name == folder_name:
        yield raw
        return
    if raw.is_dir() and (raw / folder_name).is_dir():
        yield raw / folder_name
        return
    archive = raw if raw.is_file() else next((raw / a for a in archive_names if (raw / a).is_file()), None)
    if archive is None:
        raise DataError(f"{raw} holds neither the folder {folder_name}/ nor the archive "
                        f"{' or '.join(archive_names)}",
                        "pass --raw the archive as downloaded or the folder it unpacks to")
    extracted = extract_once(archive, archive_names.get(archive.name), scratch)
    if not (extracted / folder_name).is_dir():
        raise DataError(f"{archive} does not contain the folder {folder_name}/", "this is not the expected archive")
    yield extracted / folder_name
    shutil.rmtree(extracted)
    if scratch.is_dir() and not any(scratch.iterdir()):
        scratch.rmdir()


class RawFiles:
    """The files of a download made of several archives, each given zipped or already unpacked.

    `raw` is a folder holding the archives as downloaded and/or what they unpack to (any nesting), or one
    archive. Archives named in `archives` are extracted into `scratch` unless a folder of the same stem
    sits beside them. Files are then found by name pattern across the folder and the extractions;
    the first copy of a file name wins, so an unpacked copy is preferred over its archive.
    """

    def __init__(self, raw: Path, archives: dict[str, str | None], scratch: Path, progress: bool = True) -> None:
        raw = Path(raw).expanduser()
        if not raw.exists():
            raise DataError(f"{raw} does not exist", "pass --raw the folder holding the downloaded archives")
        self.raw = raw
        self.scratch = scratch
        self.roots: list[Path] = [raw] if raw.is_dir() else []
        self.archives_used: list[Path] = []
        candidates = [raw] if raw.is_file() else [raw / name for name in archives if (raw / name).is_file()]
        for archive in candidates:
            if raw.is_dir() and (raw / archive.name.split(".")[0]).is_dir():
                continue  # unpacked beside its archive: use the folder
            self.roots.append(extract_once(archive, archives.get(archive.name), scratch))
            self.archives_used.append(archive)
        self._index: dict[str, Path] | None = None

    def _files(self) -> dict[str, Path]:
        if self._index is None:
            self._index = {}
            for root in self.roots:
                for path in sorted(root.rglob("*")):
                    if path.is_file() and not path.name.startswith("."):
                        self._index.setdefault(path.relative_to(root).as_posix(), path)
        return self._index

    def find(self, pattern: str) -> dict[str, Path]:
        """Files whose path (relative to their root) matches the glob `pattern`, keyed by file name."""
        found: dict[str, Path] = {}
        for path in self.find_all(pattern).values():
            found.setdefault(path.name, path)
        return found

    def find_all(self, pattern: str) -> dict[str, Path]:
        """Like `find`, keyed by relative path, for datasets that repeat file names across folders."""
        from fnmatch import fnmatch

        return {rel: path for rel, path in self._files().items()
                if fnmatch(rel, pattern) or fnmatch(rel, f"*/{pattern}")}

    def cleanup(self) -> None:
        """Remove the extractions (after a successful prepare)."""
        if self.scratch.is_dir():
            shutil.rmtree(self.scratch)


@contextmanager
def raw_files(raw: Path, archives: dict[str, str | None], scratch: Path) -> Iterator[RawFiles]:
    """`RawFiles` whose extractions are removed when the block succeeds and kept (for a rerun) when it fails."""
    files = RawFiles(raw, archives, scratch)
    yield files
    files.cleanup()


def source_archives_of(files: RawFiles) -> list:
    """What the prepare read, for the dataset card: each archive used (name, sha256, size); for a download
    given unpacked, the folder with the sha256 of its file listing (paths and sizes; hashing every
    multi-GB raster again would double the prepare time)."""
    from rsdg_bench.base.io import sha256_bytes
    from rsdg_bench.datasets.prepared import SourceArchive

    entries = [SourceArchive(name=p.name, sha256=sha256_file(p), size=p.stat().st_size) for p in files.archives_used]
    if files.raw.is_dir():
        used = set(files.archives_used)
        listing = sorted((rel, path.stat().st_size) for rel, path in files._files().items()
                         if path.is_relative_to(files.raw) and not path.is_relative_to(files.scratch)
                         and path not in used)
        if listing:
            text = "\n".join(f"{rel} {size}" for rel, size in listing)
            entries.append(SourceArchive(name=f"{files.raw.name}/ (unpacked, listing sha256)",
                                         sha256=sha256_bytes(text.encode()), size=sum(s for _, s in listing)))
    return entries


def read_split_lists(path: Path, splits: tuple[str, ...], kind: str) -> dict[str, list[str]]:
    """A JSON file `{split: [id, ...]}` naming which places (areas, countries) go to which split, checked:
    every split present, and no `kind` in two splits (that would leak test places into training)."""
    try:
        lists = json.loads(Path(path).read_text())
        out = {split: [str(item) for item in lists[split]] for split in splits}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        shape = ", ".join(f'"{s}": [...]' for s in splits)
        raise DataError(f"{path} is not a split file ({exc})", f"it must hold {{{shape}}}") from exc
    seen: dict[str, str] = {}
    for split, items in out.items():
        for item in items:
            if item in seen:
                raise DataError(f"{path}: {kind} {item} is in both {seen[item]} and {split}: a {kind} in two splits "
                                "would leak test places into training", "fix the file: each belongs to one split")
            seen[item] = split
    return out
