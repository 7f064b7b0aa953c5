"""Every registered patch: well-formed data, and its own before/after examples hold."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
from packaging.version import Version

from mmcv_patcher import cli, gate, plan, registry
from mmcv_patcher.model import Affected, Edit, Patch, State
from mmcv_patcher.source import Source, sha256_hex
from tests import fixtures
from tests.fixtures import make_tree

PATCHES = registry.all_patches()


def _without(fixed: str, insertions: Tuple[str, ...]) -> str:
    """``fixed`` with each insertion taken out at its first place after the one before."""
    at = 0
    for text in insertions:
        at = fixed.index(text, at)
        fixed = fixed[:at] + fixed[at + len(text) :]
    return fixed


@pytest.mark.parametrize("edit", [pytest.param(e, id=f"{p.id}-{i}") for p in PATCHES for i, e in enumerate(p.edits)])
def test_each_fix_is_its_anchor_with_insertions(edit: Edit) -> None:
    assert edit.insertions, "a fix must insert something"
    assert _without(edit.fix, edit.insertions) == edit.anchor


def test_insertions_are_whole_runs_of_tokens() -> None:
    edit = Edit("offsets = idxs.to(boxes) * 2", "offsets = idxs.to(boxes.float()) * 2")
    assert edit.insertions == (".float()",), "not '.float(' and ')'"
    with pytest.raises(ValueError):
        _ = Edit("a = b", "a = c").insertions


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.id)
def test_patch_is_well_formed(patch: Patch) -> None:
    assert "\n" not in patch.summary and len(patch.summary) <= 100 and patch.error
    for distribution, ranges in patch.affected.items():
        assert distribution == distribution.lower() and ranges
        ends: List[Version] = []
        for each in ranges:
            assert (each.last_affected is None) != (each.fixed is None), "say where the known range ends"
            end = Version(each.last_affected or each.fixed or "")
            assert Version(each.introduced) <= end and all(Version(each.introduced) > earlier for earlier in ends), "ranges in order, apart"
            ends.append(end)
            assert each.counts == () or (len(each.counts) == len(patch.edits) and sum(each.counts) >= 1)
    assert not patch.file.startswith("/") and ".." not in patch.file.split("/")
    assert patch.examples and patch.untouched, "document the codemod with examples it patches and inputs it leaves alone"


def _releases(patch: Patch) -> List[gate.Release]:
    """One release at the end of every known range of the patch."""
    return [gate.Release(d, each.last_affected or each.introduced) for d, ranges in patch.affected.items() for each in ranges]


@pytest.mark.parametrize(
    "patch, before, after",
    [pytest.param(p, before, after, id=f"{p.id}-{i}") for p in PATCHES for i, (before, after) in enumerate(p.examples)],
)
def test_examples_apply_and_revert(patch: Patch, before: str, after: str) -> None:
    expected = after.format(sha256=sha256_hex(before.encode()))
    verdicts = [(r, plan.assess(Source(before, "utf-8"), patch, r, need_text=True)) for r in _releases(patch)]
    release, verdict = next((r, v) for r, v in verdicts if v.state is State.UNPATCHED)  # a release shaped like it
    assert plan.plan_apply(verdict, force=False).new_text == expected
    patched = plan.assess(Source(expected, "utf-8"), patch, release, need_text=False)
    assert patched.state is State.PATCHED and patched.new_text == before


@pytest.mark.parametrize("patch, source", [pytest.param(p, source, id=f"{p.id}-{i}") for p in PATCHES for i, source in enumerate(p.untouched)])
def test_untouched_sources_are_left_as_they_are(patch: Patch, source: str) -> None:
    for release in _releases(patch):
        verdict = plan.plan_apply(plan.assess(Source(source, "utf-8"), patch, release, need_text=True), force=True)
        assert verdict.new_text is None and verdict.state is not State.PATCHED, (release, verdict)


def _patch(id: str, file: str = "ops/nms.py") -> Patch:
    return PATCHES[0]._replace(id=id, file=file)


def test_select_keeps_registry_order_whatever_order_ids_come_in() -> None:
    patches = (_patch("a"), _patch("b", "ops/other.py"), _patch("c"))
    assert [p.id for p in registry.select(patches, ["c", "a"])] == ["a", "c"]
    assert [p.id for p in registry.select(patches, None)] == ["a", "b", "c"]
    assert [p.id for p in registry.select(patches, None, only_file="ops/other.py")] == ["b"]


def test_a_release_between_two_ranges_is_outside_and_each_range_has_its_own_counts() -> None:
    patch = _patch("x")._replace(affected={"mmcv": (Affected("1.0", "1.2", counts=(1,)), Affected("1.4", "2.0", counts=(1,)))})
    assert gate.gate(patch, gate.Release("mmcv", "1.3"))[0] is gate.Gate.OUTSIDE
    assert gate.gate(patch, gate.Release("mmcv", "0.9"))[0] is gate.Gate.BELOW
    assert gate.gate(patch, gate.Release("mmcv", "1.4.1")) == (gate.Gate.AFFECTED, patch.affected["mmcv"][1])


def test_registry_discovers_modules_in_name_order() -> None:
    import pkgutil

    from mmcv_patcher import patches as package

    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))
    assert [p.id.replace("-", "_") for p in PATCHES] == names


#: A patch module as a contributor would write it, for a file and a method no patch touches.
NEW_PATCH = """
from mmcv_patcher.model import Affected, Edit, Patch, per_distribution

PATCH = Patch(
    id="box-iou-example",
    summary="an example: a patch for another file, inside a method",
    affected=per_distribution((Affected("1.0.0", "2.2.0"),), (Affected("2.3.0", "2.3.6"),)),
    file="ops/box_iou_example.py",
    function="BoxIoU.compute",
    edits=(Edit("return ext_module.box_iou(bboxes1, bboxes2, aligned)", "return ext_module.box_iou(bboxes1.float(), bboxes2.float(), aligned)"),),
    error="RuntimeError: expected scalar type Float but found Half",
    examples=(
        (
            "class BoxIoU:\\n    def compute(self, bboxes1, bboxes2, aligned=False):\\n        return ext_module.box_iou(bboxes1, bboxes2, aligned)\\n",
            "class BoxIoU:\\n    def compute(self, bboxes1, bboxes2, aligned=False):\\n"
            "        return ext_module.box_iou(bboxes1.float(), bboxes2.float(), aligned)  # mmcv-patcher: box-iou-example sha256={sha256}\\n",
        ),
    ),
    untouched=("def compute(bboxes1, bboxes2, aligned=False):\\n    return ext_module.box_iou(bboxes1, bboxes2, aligned)\\n",),
)
"""


def test_a_patch_module_added_at_run_time_needs_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The registry finds it, the synthetic tree holds its file, and the CLI patches and reverts it."""
    (tmp_path / "box_iou_example.py").write_text(NEW_PATCH)
    package = importlib.import_module("mmcv_patcher.patches")
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    registry.all_patches.cache_clear()
    try:
        assert "box-iou-example" in [patch.id for patch in registry.all_patches()]
        assert "ops/box_iou_example.py" in fixtures.synthetic_files()
        make_tree(tmp_path / "site", distribution="mmcv")
        example = tmp_path / "site" / "mmcv" / "ops" / "box_iou_example.py"
        before = example.read_text()
        assert cli.main(["apply", "--json", "--path", str(tmp_path / "site")]) == 0
        applied = {p["id"]: p for p in json.loads(capsys.readouterr().out)["patches"]}
        assert applied["box-iou-example"]["state"] == "patched" and applied["box-iou-example"]["file"] == str(example)
        assert "bboxes1.float(), bboxes2.float()" in example.read_text()
        assert cli.main(["revert", "--path", str(tmp_path / "site")]) == 0
        assert example.read_text() == before
    finally:
        registry.all_patches.cache_clear()
        sys.modules.pop("mmcv_patcher.patches.box_iou_example", None)
