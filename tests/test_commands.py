"""apply and revert across several files and several packages: all or nothing."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from mmcv_patcher import commands, locate, write
from mmcv_patcher.model import Affected, State
from tests.fixtures import NMS, SEED, make_tree, seeing

OTHER = SEED._replace(id="same-fix-in-another-file", file="ops/other_nms.py")
#: The seed's statement in another package, as a patch of mmdet's declares it.
IN_MMDET = SEED._replace(
    id="same-fix-in-mmdet",
    package="mmdet",
    affected={"mmdet": (Affected(introduced="3.0.0", last_affected="3.3.0"),)},
    file="models/nms.py",
)


def mmdet_tree(site: Path) -> Path:
    """``models/nms.py`` (NMS) written into the mmdet 3.3.0 that :func:`make_tree` put in
    ``site``. Returns it."""
    nms = site / "mmdet" / "models" / "nms.py"
    nms.write_text(NMS)
    return nms


def test_a_failed_write_of_a_later_file_rolls_back_the_earlier_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    other = nms.with_name("other_nms.py")
    other.write_text(NMS)
    target = locate.locate(str(tmp_path), [SEED, OTHER])
    real_replace = write.replace_file

    def full_disk_for_the_second(path: str, data: bytes, **kwargs: object) -> None:
        if os.path.basename(path) == "other_nms.py":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(path, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(write, "replace_file", full_disk_for_the_second)
    outcome = commands.apply([target], [SEED, OTHER], commands.Options())
    assert not outcome.ok and outcome.error is not None and "No space left on device" in outcome.error
    assert nms.read_text() == NMS and other.read_text() == NMS
    assert [r.state for r in outcome.results] == [State.UNPATCHED, State.UNPATCHED]
    assert all("not written" in r.message and not r.changed for r in outcome.results)


def test_both_files_are_written_when_both_succeed(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    other = nms.with_name("other_nms.py")
    other.write_text(NMS)
    target = locate.locate(str(tmp_path), [SEED, OTHER])
    outcome = commands.apply([target], [SEED, OTHER], commands.Options())
    assert outcome.ok and [r.changed for r in outcome.results] == [True, True]
    assert commands.revert([target], [SEED, OTHER], commands.Options()).ok
    assert nms.read_text() == NMS and other.read_text() == NMS


def test_a_site_holding_both_packages_is_one_target_each_and_apply_and_revert_cover_both(tmp_path: Path) -> None:
    in_mmcv, in_mmdet = make_tree(tmp_path, distribution="mmcv"), mmdet_tree(tmp_path)
    located = locate.locate_all(str(tmp_path), [SEED, IN_MMDET])
    assert [(t.package, t.release.distribution, t.release.version) for t in located.targets] == [
        ("mmcv", "mmcv", "2.1.0"),
        ("mmdet", "mmdet", "3.3.0"),
    ]
    assert located.absent == ()
    outcome = commands.apply(located.targets, [SEED, IN_MMDET], commands.Options())
    assert outcome.ok and [(r.id, r.file, r.changed) for r in outcome.results] == [
        (SEED.id, str(in_mmcv), True),
        (IN_MMDET.id, str(in_mmdet), True),
    ]
    assert (
        f"# mmcv-patcher: {SEED.id}" in in_mmcv.read_text() and f"# mmcv-patcher: {IN_MMDET.id}" in in_mmdet.read_text()
    )
    assert commands.revert(located.targets, [SEED, IN_MMDET], commands.Options()).ok
    assert in_mmcv.read_text() == in_mmdet.read_text() == NMS


def test_a_failed_write_in_the_second_package_leaves_the_first_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_mmcv, in_mmdet = make_tree(tmp_path, distribution="mmcv"), mmdet_tree(tmp_path)
    targets = locate.locate_all(str(tmp_path), [SEED, IN_MMDET]).targets
    real_replace = write.replace_file

    def read_only_mmdet(path: str, data: bytes, **kwargs: object) -> None:
        if "mmdet" in path:
            raise OSError(errno.EROFS, "Read-only file system", path)
        real_replace(path, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(write, "replace_file", read_only_mmdet)
    outcome = commands.apply(targets, [SEED, IN_MMDET], commands.Options())
    assert not outcome.ok and outcome.failure is not None and outcome.failure.path == str(in_mmdet)
    assert in_mmcv.read_text() == in_mmdet.read_text() == NMS


def test_a_package_that_is_not_installed_is_said_once_and_is_no_failure(tmp_path: Path) -> None:
    make_tree(tmp_path, distribution="mmcv")
    shutil.rmtree(tmp_path / "mmdet")
    located = locate.locate_all(str(tmp_path), [SEED, IN_MMDET])
    assert [t.package for t in located.targets] == ["mmcv"]
    assert located.absent == (f"--path {tmp_path}: no mmdet/ in it",)
    assert commands.apply(located.targets, [SEED, IN_MMDET], commands.Options()).ok
    python = seeing([tmp_path], tmp_path / "mmcv")
    [absent] = locate.locate_all(None, [SEED, IN_MMDET], python).absent
    assert absent == "python: no mmdet is importable"


def test_none_of_the_packages_there_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(locate.NotFound, match="^python: no mmdet is importable$"):
        locate.locate_all(None, [IN_MMDET], seeing([tmp_path], tmp_path / "mmcv"))


@pytest.mark.parametrize("named", ["mmdet", "mmdet/models/nms.py"])
def test_a_path_inside_one_package_works_on_that_package_alone(tmp_path: Path, named: str) -> None:
    make_tree(tmp_path, distribution="mmcv")
    mmdet_tree(tmp_path)
    [target] = locate.locate_all(str(tmp_path / named), [SEED, IN_MMDET]).targets
    assert (target.package, target.package_dir) == ("mmdet", str(tmp_path / "mmdet"))


def test_a_directory_holding_none_of_the_packages_names_them_all(tmp_path: Path) -> None:
    with pytest.raises(locate.BadPath, match=r"no mmcv/ or mmdet/ in it, and it is not one of those packages"):
        locate.locate_all(str(tmp_path), [SEED, IN_MMDET])
