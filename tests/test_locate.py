"""Finding mmcv and its release without importing or executing any of its code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from mmcv_patcher import interpreter, locate, registry
from tests.fixtures import dist_info, egg_info, make_tree, seeing, tool

PATCHES = registry.all_patches()


def test_site_packages_path_gives_distribution_version_and_record_hash(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, version="1.7.2", distribution="mmcv-full")
    target = locate.locate(str(tmp_path), PATCHES)
    assert target.package_dir == str(tmp_path / "mmcv")
    assert (target.release.distribution, target.release.version) == ("mmcv-full", "1.7.2")
    assert target.release.installed(registry.all_patches()[0].file, nms.read_bytes())
    assert target.notes == () and target.only_file is None


@pytest.mark.parametrize("form", ["root", "package", "file"])
def test_path_may_name_the_root_the_package_or_the_file(tmp_path: Path, form: str) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    path = {"root": tmp_path, "package": tmp_path / "mmcv", "file": nms}[form]
    target = locate.locate(str(path), PATCHES)
    assert target.package_dir == str(tmp_path / "mmcv")
    assert target.only_file == ("ops/nms.py" if form == "file" else None)
    assert target.release.distribution == "mmcv"


def test_checkout_without_metadata_takes_the_version_from_version_py(tmp_path: Path) -> None:
    make_tree(tmp_path, version="1.4.2")
    target = locate.locate(str(tmp_path), PATCHES)
    assert (target.release.distribution, target.release.version, dict(target.release.record)) == (None, "1.4.2", {})
    assert PATCHES[0].file not in target.release.record


def test_version_py_is_parsed_never_executed(tmp_path: Path) -> None:
    make_tree(tmp_path, version=None)
    witness = tmp_path / "executed"
    (tmp_path / "mmcv" / "version.py").write_text(
        f"open({str(witness)!r}, 'w').close()\n__version__ = '1.5.3'\nraise SystemExit(9)\n"
    )
    assert locate.locate(str(tmp_path), PATCHES).release.version == "1.5.3"
    assert not witness.exists()


@pytest.mark.parametrize(
    "text",
    [
        "from importlib.metadata import version\n__version__ = version('onedl-mmcv')\n",
        "__version__ = 3\n",
        "this is not python(\n",
        "",
    ],
)
def test_version_py_without_a_literal_gives_no_version(tmp_path: Path, text: str) -> None:
    make_tree(tmp_path, version=None)
    (tmp_path / "mmcv" / "version.py").write_text(text)
    assert locate.locate(str(tmp_path), PATCHES).release.version is None


def test_sdist_egg_info_names_the_distribution(tmp_path: Path) -> None:
    make_tree(tmp_path, version="1.7.2")
    egg_info(
        tmp_path,
        "mmcv_full.egg-info",
        "mmcv-full",
        "1.7.2",
        "SOURCES.txt",
        "setup.py\nmmcv/__init__.py\nmmcv/ops/nms.py\n",
    )
    target = locate.locate(str(tmp_path), PATCHES)
    assert (target.release.distribution, target.release.version) == ("mmcv-full", "1.7.2")


def test_two_distributions_claiming_the_tree_are_both_reported(tmp_path: Path) -> None:
    make_tree(tmp_path, version="1.7.2", distribution="mmcv")
    dist_info(tmp_path, "mmcv-full", "1.7.2", {"mmcv/__init__.py": None, "mmcv/ops/nms.py": None})
    target = locate.locate(str(tmp_path), PATCHES)
    [note] = target.notes
    assert "mmcv 1.7.2" in note and "mmcv-full 1.7.2" in note and str(tmp_path / "mmcv") in note


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "missing", "no such file or directory"),
        (lambda root: root, "no mmcv/ in it"),
        (lambda root: root / "mmcv" / "version.py", "not a file the chosen patches work on"),
    ],
)
def test_bad_paths_are_refused_with_a_reason(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "site"
    root.mkdir()
    if "no mmcv" not in message:
        make_tree(root)
    with pytest.raises(locate.BadPath, match=message):
        locate.locate(str(make(root)), PATCHES)


def _locate_in_subprocess(path_entry: Path) -> str:
    program = "import sys; from mmcv_patcher import locate, registry; t = locate.locate(None, registry.all_patches()); print(t.package_dir, t.release.distribution, t.release.version, 'mmcv' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(path_entry))
    return subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
    ).stdout.strip()


def test_default_finds_the_interpreters_mmcv_without_importing_it(tmp_path: Path) -> None:
    make_tree(tmp_path, version="2.2.0", distribution="mmcv-lite")  # its __init__ raises
    assert _locate_in_subprocess(tmp_path) == f"{tmp_path / 'mmcv'} mmcv-lite 2.2.0 False"


def test_namespace_mmcv_is_not_a_package(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "mmcv" / "__init__.py").unlink()
    out = _locate_in_subprocess(tmp_path)
    assert "NotFound" in out and "not a regular package" in out


def _pyenv_pythons() -> List[Any]:
    import glob

    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    found: Dict[str, str] = {}
    for python in sorted(glob.glob(f"{root}/versions/3.*/bin/python3.*")):
        name = Path(python).name
        if name.count(".") == 1 and not name.endswith("-config"):
            found.setdefault(name, python)
    return sorted(found.values())


@pytest.mark.parametrize(
    "python", _pyenv_pythons() or [pytest.param(None, marks=pytest.mark.skip(reason="no pyenv interpreters"))]
)
def test_every_supported_interpreter_answers_where_mmcv_is(
    tmp_path: Path, python: str, monkeypatch: pytest.MonkeyPatch
) -> None:

    make_tree(tmp_path, version="1.7.2", distribution="mmcv")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    seen = interpreter.ask(python)
    assert seen.found("mmcv").dir == str(tmp_path / "mmcv") and str(tmp_path) in seen.sys_path
    target = locate.locate(None, PATCHES, seen)
    assert (target.release.distribution, target.release.version) == ("mmcv", "1.7.2")


def test_record_entries_pointing_outside_never_direct_a_write(tmp_path: Path) -> None:
    site = tmp_path / "site"
    nms = make_tree(site, distribution="mmcv")
    victim = tmp_path / "victim.py"
    victim.write_text("keep = True\n")
    record = next(site.glob("mmcv-*.dist-info")) / "RECORD"
    record.write_text(record.read_text() + "../victim.py,,\nmmcv/../../victim.py,,\n")
    done = tool("apply", "--path", str(site), python=Path(sys.executable))
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "keep = True\n" and b"mmcv-patcher" in nms.read_bytes()


@pytest.mark.parametrize(
    "sources", [None, "setup.py\nsrc/mmcv/__init__.py\nsrc/mmcv/ops/nms.py\n"], ids=["alone", "with-SOURCES.txt"]
)
def test_legacy_installed_files_txt_names_the_distribution(tmp_path: Path, sources: str) -> None:
    make_tree(tmp_path, version="1.7.2")
    info = "mmcv-1.7.2-py3.11.egg-info"
    egg_info(
        tmp_path, info, "mmcv", "1.7.2", "installed-files.txt", "../mmcv/__init__.py\n../mmcv/ops/nms.py\nPKG-INFO\n"
    )
    if sources is not None:  # setuptools also lists the source tree (here a src layout): the installed files decide
        (tmp_path / info / "SOURCES.txt").write_text(sources)
    target = locate.locate(str(tmp_path), PATCHES)
    assert (target.release.distribution, target.release.version, target.notes) == ("mmcv", "1.7.2", ())


def _setuptools_finder(mapping: Dict[str, str]) -> str:
    """The ``__editable__`` finder the installed setuptools writes for a PEP 660 install."""
    from setuptools.command import editable_wheel

    return str(editable_wheel._finder_template("__editable___mmcv_1_7_2_finder", mapping, {}))


def test_an_editable_finder_owns_the_tree_its_mapping_names(tmp_path: Path) -> None:
    checkout = tmp_path / "src"
    make_tree(checkout, version="1.7.2")
    site = tmp_path / "site"
    _editable_install(site, "__editable___mmcv_1_7_2_finder.py", _setuptools_finder({"mmcv": str(checkout / "mmcv")}))
    target = locate.locate(None, PATCHES, seeing([site], checkout / "mmcv"))
    assert (target.release.distribution, target.release.version, target.notes) == ("mmcv", "1.7.2", ())


def test_an_editable_finder_does_not_claim_the_site_packages_beside_it(tmp_path: Path) -> None:
    """The finder's code holds strings such as ".", which name its own directory: only its
    MAPPING counts, so a wheel-installed mmcv there is the wheel's alone."""
    site = tmp_path / "site"
    make_tree(site, version="2.1.0", distribution="mmcv-full")
    _editable_install(
        site, "__editable___mmcv_1_7_2_finder.py", _setuptools_finder({"mmcv": str(tmp_path / "src" / "mmcv")})
    )
    target = locate.locate(None, PATCHES, seeing([site], site / "mmcv"))
    assert (target.release.distribution, target.release.version, target.notes) == ("mmcv-full", "2.1.0", ())


@pytest.mark.parametrize(
    "finder",
    ["MAPPING = {'tools': '{site}', 'mmcv_ext': '{site}/mmcv'}\n", "PATHS = ['{site}/mmcv']\n", "MAPPING = broken(\n"],
    ids=["other-names", "no-mapping", "unparsable"],
)
def test_a_finder_whose_mapping_has_no_mmcv_owns_nothing(tmp_path: Path, finder: str) -> None:
    site = tmp_path / "site"
    make_tree(site, version="2.1.0", distribution="mmcv-full")
    _editable_install(site, "__editable___mmcv_1_7_2_finder.py", finder.replace("{site}", str(site)))
    target = locate.locate(None, PATCHES, seeing([site], site / "mmcv"))
    assert (target.release.distribution, target.release.version, target.notes) == ("mmcv-full", "2.1.0", ())


def _editable_install(site: Path, hook_name: str, hook_text: str) -> None:
    """A dist-info in ``site`` whose RECORD lists only an editable-install hook."""
    site.mkdir(parents=True, exist_ok=True)
    (site / hook_name).write_text(hook_text)
    dist_info(site, "mmcv", "1.7.2", {hook_name: None})


@pytest.mark.parametrize(
    "hook_name, names_src, names_src2",
    [
        ("__editable__.mmcv-1.7.2.pth", "{src}\n", "{src}2\n"),
        (
            "__editable___mmcv_1_7_2_finder.py",
            "MAPPING = {{'mmcv': '{src}/mmcv'}}\n",
            "MAPPING = {{'mmcv': '{src}2/mmcv'}}\n",
        ),
    ],
    ids=["pth", "finder"],
)
def test_an_editable_hook_owns_only_the_checkout_it_names_whole(
    tmp_path: Path, hook_name: str, names_src: str, names_src2: str
) -> None:
    checkout = tmp_path / "x" / "src"
    make_tree(checkout, version="1.7.2")
    owned, other = tmp_path / "owned", tmp_path / "other"
    _editable_install(owned, hook_name, names_src.format(src=checkout))
    _editable_install(other, hook_name, names_src2.format(src=checkout))  # /x/src2 contains "/x/src"
    for site, distribution in ((owned, "mmcv"), (other, None)):
        seen = seeing([site], checkout / "mmcv")
        target = locate.locate(None, PATCHES, seen)
        assert (target.release.distribution, target.release.version) == (distribution, "1.7.2"), site
