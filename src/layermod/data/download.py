"""Where a named dataset's files are looked for, and how a missing set is downloaded into the per-user cache.

One search order and one cache for every dataset read from files: the IDX sets (:mod:`layermod.data.idx`) and
CIFAR (:mod:`layermod.data.cifar`). A loader says what it wants in a :class:`Wanted` (what its data looks like in a
folder, and which files to fetch); :func:`locate` returns the path to read.

Decisions, on purpose:

* **Search order.** An explicit ``data_dir`` (and ``data_dir/<name>``) is the only place searched, so a typo is
  reported instead of silently loading another copy. Otherwise: ``$LAYERMOD_DATA/<name>`` (never the root:
  MNIST and Fashion-MNIST share file names), the folder of a distribution package where the set has one
  (Debian's ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``), and the per-user cache
  ``${XDG_CACHE_HOME:-~/.cache}/layermod/data/<name>``; the first folder holding the data wins.
* **Downloads go to the cache** and only there, and only when no copy is found and ``download`` is on. Each
  file goes to a temporary name in the same folder, renamed when complete, so an interrupted download leaves
  no partial file that a later search would take for the data.
* **Failures are one line** naming every folder searched, the download's source and error, and what to do
  (``--data-dir``, ``LAYERMOD_DATA``, the distribution package where there is one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from layermod.errors import DatasetError, one_line

__all__ = ["Wanted", "locate"]

_SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
_SYSTEM_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}  # Debian packages installing _SYSTEM_DIRS
_DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class Wanted:
    """What a loader looks for.

    Attributes:
        name: dataset name, e.g. ``"mnist"``: the subfolder searched in ``data_dir``, ``$LAYERMOD_DATA`` and
            the cache.
        what: how messages name the data, e.g. ``"mnist test files"``.
        listing: the files or folders the data is, as messages list them.
        url: where the data is downloaded from, as messages name it.
        find: the path to read when a folder holds the data, else ``None``.
        missing: ``{file name: URL}`` of the files to download into a folder to make it hold the data.
    """

    name: str
    what: str
    listing: str
    url: str
    find: Callable[[Path], Path | None]
    missing: Callable[[Path], dict[str, str]]


def locate(wanted: Wanted, data_dir: str | os.PathLike | None, download: bool) -> Path:
    """The path of ``wanted``'s data in the search order of the module docstring, downloaded into the cache when
    no copy is found and ``download`` is on; :class:`DatasetError` (one line) when there is none."""
    name = wanted.name
    if data_dir is not None:
        given = Path(data_dir).expanduser()
        for folder in (given, given / name):
            found = wanted.find(folder)
            if found is not None:
                return found
        raise DatasetError(
            f"no {wanted.what} ({wanted.listing}) in {given} or {given / name}; "
            "point data_dir at the folder that holds them"
        )

    candidates = []
    env = os.environ.get("LAYERMOD_DATA")
    if env:
        candidates.append(Path(env).expanduser() / name)
    if name in _SYSTEM_DIRS:
        candidates.append(_SYSTEM_DIRS[name])
    cache = _cache_dir(name)
    candidates.append(cache)
    for folder in candidates:
        found = wanted.find(folder)
        if found is not None:
            return found

    looked = ", ".join(str(c) for c in candidates)
    fixes = f"pass data_dir=DIR or set LAYERMOD_DATA to a folder whose {name}/ subfolder holds them"
    if name in _SYSTEM_PACKAGES:
        fixes += f", or on Debian `apt-get install {_SYSTEM_PACKAGES[name]}`"
    if not download:
        raise DatasetError(f"{wanted.what} ({wanted.listing}) not found in {looked} and download is off; {fixes}")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for file, url in wanted.missing(cache).items():
            _download_file(url, cache / file)
    except (OSError, HTTPException) as e:
        raise DatasetError(
            f"{wanted.what} not found in {looked} and download from {wanted.url} failed ({one_line(e)}); {fixes}"
        ) from None
    found = wanted.find(cache)
    if found is None:
        raise DatasetError(f"{wanted.what} downloaded from {wanted.url} are incomplete in {cache}; delete {cache} "
                           "and try again")
    return found


def _cache_dir(name: str) -> Path:
    """Per-user download folder ``${XDG_CACHE_HOME:-~/.cache}/layermod/data/<name>``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "layermod" / "data" / name


def _download_file(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` via a temporary file in the same folder, renamed when complete."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
