"""Reading installed distributions without importlib.metadata, checked against it.

importlib.metadata is the reference: on every synthetic layout here, :func:`distributions.find`
must find the same distributions with the same versions and roots. The real install
layouts (wheel, editable, egg, develop, old pip) are covered end to end in test_layouts.py.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import List, Sequence, Set, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcv_patcher import distributions
from mmcv_patcher.model import MMCV_DISTRIBUTIONS


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _pkg_info(name: str, version: str) -> str:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: x\n\nVersion: not this one\n"


def _layout(root: Path) -> List[str]:
    """Every kind of metadata importlib.metadata finds, for the mmcv family and others."""
    site, checkout, egg = root / "site", root / "checkout", root / "mmcv_full-1.7.2-py3.11.egg"
    _write(site / "mmcv-2.1.0.dist-info" / "METADATA", _pkg_info("mmcv", "2.1.0"))
    _write(site / "MMCV_Lite-2.2.0.dist-info" / "METADATA", _pkg_info("MMCV.Lite", "2.2.0"))
    _write(site / "onedl_mmcv-2.3.5.dist-info" / "METADATA", _pkg_info("onedl-mmcv", "2.3.5"))
    _write(site / "mmcv_full-1.7.2-py3.11.egg-info" / "PKG-INFO", _pkg_info("mmcv-full", "1.7.2"))
    _write(site / "mmcv-1.3.3-py3.6.egg-info", _pkg_info("mmcv", "1.3.3"))  # distutils: a file
    _write(site / "mmcv_extra-1.0.dist-info" / "METADATA", _pkg_info("mmcv-extra", "1.0"))
    _write(site / "torch-2.13.0.dist-info" / "METADATA", _pkg_info("torch", "2.13.0"))
    (site / "mmcv-0.1.dist-info").mkdir()  # no METADATA at all
    _write(checkout / "mmcv.egg-info" / "PKG-INFO", _pkg_info("mmcv", "1.7.2"))
    _write(egg / "EGG-INFO" / "PKG-INFO", _pkg_info("mmcv-full", "1.7.2"))
    return [str(site), str(checkout), str(egg), str(root / "missing"), str(site / "mmcv-2.1.0.dist-info" / "METADATA")]


def _seen(found: Sequence[Tuple[str, object, object]]) -> Set[Tuple[str, object, str]]:
    return {(name, version, os.path.normpath(str(root))) for name, version, root in found}


def test_finds_what_importlib_metadata_finds(tmp_path: Path) -> None:
    path = _layout(tmp_path)
    ours = distributions.find(MMCV_DISTRIBUTIONS, path)
    reference = [(name, dist.version, dist.locate_file("")) for name in MMCV_DISTRIBUTIONS for dist in metadata.distributions(name=name, path=path)]
    assert _seen([(d.name, d.version, d.root) for d in ours]) == _seen(reference)
    assert len(ours) == len(reference) == 8


def test_order_is_by_name_as_given_then_path_entry(tmp_path: Path) -> None:
    path = _layout(tmp_path)
    found = [(d.name, d.version, d.root) for d in distributions.find(["mmcv-full", "mmcv"], path)]
    site, checkout, egg = path[:3]
    assert found == [
        ("mmcv-full", "1.7.2", site),
        ("mmcv-full", "1.7.2", egg),
        ("mmcv", None, site),
        ("mmcv", "1.3.3", site),
        ("mmcv", "2.1.0", site),
        ("mmcv", "1.7.2", checkout),
    ]


def test_version_is_the_header_not_a_later_line(tmp_path: Path) -> None:
    _write(tmp_path / "mmcv-2.1.0.dist-info" / "METADATA", "Name: mmcv\nversion:  2.1.0 \n\nVersion: 9\n")
    assert [d.version for d in distributions.find(["mmcv"], [str(tmp_path)])] == ["2.1.0"]


def test_missing_and_empty_entries_give_nothing(tmp_path: Path) -> None:
    assert distributions.find(MMCV_DISTRIBUTIONS, [str(tmp_path / "nope"), str(tmp_path)]) == []


def test_record_rows_are_csv(tmp_path: Path) -> None:
    info = tmp_path / "mmcv-2.1.0.dist-info"
    _write(info / "METADATA", _pkg_info("mmcv", "2.1.0"))
    _write(info / "RECORD", 'mmcv/__init__.py,sha256=abc,12\n"mmcv/odd,name.py",,\n\nmmcv-2.1.0.dist-info/RECORD,,\n')
    [dist] = distributions.find(["mmcv"], [str(tmp_path)])
    assert dist.root == str(tmp_path)
    assert dist.files() == [("mmcv/__init__.py", "sha256=abc"), ("mmcv/odd,name.py", ""), ("mmcv-2.1.0.dist-info/RECORD", "")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["mmcv/a.py", "sha256=x-_", "12", "", " ", "odd,name", 'say "hi"', "é"]), max_size=3), max_size=5))
def test_record_is_read_as_the_csv_module_reads_it(rows: List[List[str]]) -> None:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    text = buffer.getvalue()
    assert distributions._csv_rows(text) == list(csv.reader(text.splitlines())), text


def test_installed_files_are_made_relative_to_the_root(tmp_path: Path) -> None:
    info = tmp_path / "mmcv-1.7.2-py3.11.egg-info"
    _write(info / "PKG-INFO", _pkg_info("mmcv", "1.7.2"))
    _write(info / "installed-files.txt", "../mmcv/__init__.py\n../mmcv/ops/nms.py\n\nPKG-INFO\n")
    _write(info / "SOURCES.txt", "setup.py\n")  # installed-files.txt wins
    [dist] = distributions.find(["mmcv"], [str(tmp_path)])
    assert dist.files() == [("mmcv/__init__.py", ""), ("mmcv/ops/nms.py", ""), (f"{info.name}/PKG-INFO", "")]


@pytest.mark.parametrize("listing", ["SOURCES.txt", None])
def test_sources_txt_is_the_last_resort(tmp_path: Path, listing: str) -> None:
    info = tmp_path / "mmcv.egg-info"
    _write(info / "PKG-INFO", _pkg_info("mmcv", "1.7.2"))
    if listing:
        _write(info / listing, "setup.py\nmmcv/__init__.py\n")
    [dist] = distributions.find(["mmcv"], [str(tmp_path)])
    assert dist.files() == ([("setup.py", ""), ("mmcv/__init__.py", "")] if listing else [])
