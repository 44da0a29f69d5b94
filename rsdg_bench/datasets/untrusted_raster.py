"""Opening a raster someone else made (a submitted prediction map): plain pixels or nothing.

GDAL opens far more than pictures: a VRT is an XML file that reads *other* files (the hidden labels, say)
or URLs through `/vsicurl/`, and many drivers look for sidecar files. A prediction map is therefore
accepted only as one of two formats, recognised by its magic bytes before GDAL sees it:

- PNG (`\\x89PNG\\r\\n\\x1a\\n`), opened with the PNG driver only;
- TIFF / GeoTIFF (`II*\\0`, `MM\\0*`; BigTIFF `II+\\0`, `MM\\0+`), opened with the GTiff driver only.

The bytes are opened from memory (never from the submitter's path), with only that one driver allowed and
GDAL configured so that nothing but those bytes can be read: no directory listing, no sidecars (`.aux.xml`,
`.ovr`, world files), no network (`/vsicurl/` allows no extension, HTTP off). A raster whose file list
names anything besides itself, with subdatasets, or whose header declares more pixels than `max_pixels`
is refused before a pixel is decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rsdg_bench.base.errors import SubmissionError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
MAX_PIXELS = 1 << 28  # bands × height × width of one map: 256 Mi values, far beyond any label here

FORMAT_FIX = "write each map as a plain PNG or GeoTIFF (`rsdg-bench predict` does); VRT and other formats are refused"

# GDAL settings for opening untrusted bytes: read the bytes given and nothing else.
LOCKED_DOWN: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",   # no directory listing, so no sidecar is found
    "GDAL_PAM_ENABLED": "NO",                       # no .aux.xml read or written
    "GDAL_GEOREF_SOURCES": "INTERNAL",              # no world files (.tfw, .pgw, .wld, .tab)
    "TIFF_USE_OVR": "NO",                           # no external .ovr overviews
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".rsdg-bench-never",  # /vsicurl/ may open no file at all
    "GDAL_HTTP_MAX_RETRY": "0",
    "GDAL_HTTP_TIMEOUT": "1",
    "CPL_VSIL_CURL_USE_HEAD": "NO",
    "GDAL_HTTP_PROXY": "127.0.0.1:9",               # should a request ever be attempted, it goes nowhere
    "GDAL_HTTP_UNSAFESSL": "NO",
    "CPL_VSIL_CURL_CHUNK_SIZE": "16384",
    "VSI_CACHE": "FALSE",
    "GDAL_VRT_ENABLE_PYTHON": "NO",
    "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",
}


def sniff_format(data: bytes) -> str | None:
    """The GDAL driver for these bytes by their magic ("PNG" or "GTiff"), else None."""
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data[:4] in TIFF_MAGICS:
        return "GTiff"
    return None


def _described(data: bytes) -> str:
    """A short, safe description of what the bytes look like, for the error."""
    head = data[:64].lstrip().lower()
    if head.startswith(b"<vrtdataset") or b"<vrtdataset" in data[:4096].lower():
        return "a GDAL VRT (it reads other files)"
    if head.startswith(b"<"):
        return "an XML/HTML document"
    return f"bytes starting {data[:8]!r}"


@contextmanager
def open_untrusted_raster(data: bytes, where: str, max_pixels: int = MAX_PIXELS) -> Iterator[Any]:
    """A rasterio dataset over `data` (PNG or GeoTIFF only), opened so that it can read nothing else; `where`
    names the file in errors. Raises SubmissionError for any other format, for a raster that references
    other files, and for one whose header declares more than `max_pixels` values."""
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.io import MemoryFile

    from rsdg_bench.datasets.prepared import quiet_georef

    driver = sniff_format(data)
    if driver is None:
        raise SubmissionError(f"{where} is not an allowed raster format: {_described(data)}; only PNG and "
                              "GeoTIFF maps are read", FORMAT_FIX)
    try:
        with rasterio.Env(**LOCKED_DOWN), quiet_georef(), MemoryFile(data) as memory, \
                memory.open(driver=driver) as src:
            _check_self_contained(src, where, max_pixels)
            yield src
    except RasterioError as exc:
        raise SubmissionError(f"{where} is not a readable raster: {exc}", FORMAT_FIX) from exc


def _check_self_contained(src: Any, where: str, max_pixels: int) -> None:
    """Refuse a raster that reads other files, holds subdatasets, or is larger than `max_pixels` values."""
    if src.driver not in ("PNG", "GTiff"):
        raise SubmissionError(f"{where} opened as {src.driver}, not PNG or GeoTIFF", FORMAT_FIX)
    files = [f for f in (src.files or []) if f != src.name]
    if files:
        raise SubmissionError(f"{where} references other files ({', '.join(map(str, files[:3]))})", FORMAT_FIX)
    if src.subdatasets:
        raise SubmissionError(f"{where} holds {len(src.subdatasets)} subdatasets; a map is one raster", FORMAT_FIX)
    values = int(src.count) * int(src.height) * int(src.width)
    if values > max_pixels:
        raise SubmissionError(f"{where} declares {src.count}×{src.height}×{src.width} values, more than "
                              f"{max_pixels} (refused unread)", "write one map per sample at the label's size")
