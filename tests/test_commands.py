"""apply and revert across several files: all or nothing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mmcv_patcher import commands, locate, write
from mmcv_patcher.model import State
from tests.fixtures import NMS, SEED, make_tree

OTHER = SEED._replace(id="same-fix-in-another-file", file="ops/other_nms.py")


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
    outcome = commands.apply(target, [SEED, OTHER], commands.Options())
    assert not outcome.ok and outcome.error is not None and "No space left on device" in outcome.error
    assert nms.read_text() == NMS and other.read_text() == NMS
    assert [r.state for r in outcome.results] == [State.UNPATCHED, State.UNPATCHED]
    assert all("not written" in r.message and not r.changed for r in outcome.results)


def test_both_files_are_written_when_both_succeed(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    other = nms.with_name("other_nms.py")
    other.write_text(NMS)
    target = locate.locate(str(tmp_path), [SEED, OTHER])
    outcome = commands.apply(target, [SEED, OTHER], commands.Options())
    assert outcome.ok and [r.changed for r in outcome.results] == [True, True]
    assert commands.revert(target, [SEED, OTHER], commands.Options()).ok
    assert nms.read_text() == NMS and other.read_text() == NMS
