"""The installed distributions of given names on a path: name, version and file list, read
straight from their metadata (``*.dist-info``, ``*.egg-info``, an ``.egg``'s ``EGG-INFO``).

Why not ``importlib.metadata``: importing it (email, zipfile, csv, pathlib and friends)
takes longer than everything else ``status`` does, and all we need from a distribution is
three small text files. The lookup follows its rules (PEP 503 names as in
``Prepared.normalize``, ``.egg`` directories as in its ``Lookup``); ``tests/test_layouts.py``
checks the result on every way the real mmcv gets installed.
"""

from __future__ import annotations

import os

from mmcv_patcher.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence, Tuple


class Distribution(NamedTuple):
    """One installed distribution: the name it was asked for by and its metadata."""

    name: str
    #: the metadata directory (or, for old distutils installs, the PKG-INFO-style file)
    info: str
    version: Optional[str]

    @property
    def root(self) -> str:
        """The directory the file list's paths are relative to (``locate_file("")``)."""
        return os.path.dirname(self.info)

    def read_text(self, name: str) -> Optional[str]:
        """A metadata file's text, or None when it is missing or unreadable."""
        try:
            with open(os.path.join(self.info, name), encoding="utf-8") as handle:
                return handle.read()
        except (OSError, UnicodeDecodeError):
            return None

    def files(self) -> List[Tuple[str, str]]:
        """(POSIX path relative to :attr:`root`, hash field as written or "") for each file
        the distribution installed, from the first of RECORD (wheels), ``installed-files.txt``
        (old pip's ``setup.py install``, relative to the metadata directory) and
        ``SOURCES.txt`` (eggs, ``setup.py develop``) that exists."""
        record = self.read_text("RECORD")
        if record is not None:
            return [(row[0], row[1] if len(row) > 1 else "") for row in _csv_rows(record) if row]
        installed = self.read_text("installed-files.txt")
        if installed is not None:
            return [
                (os.path.relpath(os.path.normpath(os.path.join(self.info, line)), self.root).replace(os.sep, "/"), "")
                for line in installed.splitlines()
                if line.strip()
            ]
        sources = self.read_text("SOURCES.txt") or ""
        return [(line, "") for line in sources.splitlines() if line.strip()]


def find(names: Sequence[str], path: Sequence[str]) -> List[Distribution]:
    """Every distribution called one of ``names`` on ``path``, ordered by name as given,
    then by path entry (``importlib.metadata.distributions(name=..., path=...)`` per name)."""
    wanted = {_normalize(name): name for name in names}
    eggs = {_legacy_normalize(name): name for name in names}
    found: List[Tuple[int, int, Distribution]] = []
    order = {name: index for index, name in enumerate(names)}
    for position, entry in enumerate(path):
        for name, info in _candidates(entry or ".", wanted, eggs):
            found.append((order[name], position, Distribution(name, info, _version(info))))
    return [dist for _, _, dist in sorted(found, key=lambda item: item[:2])]


def _csv_rows(text: str) -> List[List[str]]:
    """RECORD's rows. Only a field holding a comma or a quote is quoted, so text without
    a quote is split on commas as the ``csv`` module would, without importing it."""
    if '"' not in text:
        return [line.split(",") if line else [] for line in text.splitlines()]
    import csv

    return list(csv.reader(text.splitlines()))


def _candidates(entry: str, wanted: Dict[str, str], eggs: Dict[str, str]) -> List[Tuple[str, str]]:
    """(asked-for name, metadata path) for the metadata found directly in one path entry."""
    try:
        children = sorted(os.listdir(entry))
    except OSError:  # not a directory (a zip, a missing entry) or unreadable
        return []
    found = []
    for child in children:
        low = child.lower()
        if low.endswith((".dist-info", ".egg-info")):
            name = wanted.get(_normalize(low.rpartition(".")[0].partition("-")[0]))
            if name is not None:
                found.append((name, os.path.join(entry, child)))
        elif low == "egg-info":  # EGG-INFO inside an .egg directory on sys.path
            base = os.path.basename(os.path.abspath(entry)).lower()
            name = eggs.get(_legacy_normalize(base.rpartition(".")[0].partition("-")[0])) if base.endswith(".egg") else None
            if name is not None:
                found.append((name, os.path.join(entry, child)))
    return found


def _normalize(name: str) -> str:
    """PEP 503 normalisation (each run of ``-``, ``_`` and ``.`` is one separator), with
    ``_`` as the separator that metadata file names use."""
    normalized = name.lower().replace("-", "_").replace(".", "_")
    while "__" in normalized:
        normalized = normalized.replace("__", "_")
    return normalized


def _legacy_normalize(name: str) -> str:
    """setuptools' escaping of egg names (``mmcv-full`` -> ``mmcv_full``)."""
    return name.lower().replace("-", "_")


def _version(info: str) -> Optional[str]:
    """The ``Version`` header of METADATA (wheels) or PKG-INFO (eggs, or the file itself)."""
    for candidate in (os.path.join(info, "METADATA"), os.path.join(info, "PKG-INFO"), info):
        try:
            with open(candidate, encoding="utf-8", errors="replace") as handle:
                return _header(handle.read(), "version")
        except OSError:  # missing, or a directory
            continue
    return None


def _header(text: str, key: str) -> Optional[str]:
    """A header's value from RFC 822-style metadata; the headers end at the first blank line."""
    for line in text.splitlines():
        if not line.strip():
            break
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == key:
            return value.strip()
    return None
