"""Every registered patch: well-formed data, and its own before/after examples hold."""

from __future__ import annotations

from typing import List, Tuple

import pytest
from packaging.version import Version

from mmcv_patcher import gate, plan, registry
from mmcv_patcher.model import Affected, Edit, Patch, State
from mmcv_patcher.source import Source, sha256_hex

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
