"""Every registered patch: well-formed data, and its own before/after examples hold."""

from __future__ import annotations

import pytest
from packaging.version import Version

from mmcv_patcher import plan, registry
from mmcv_patcher.model import Patch, State
from mmcv_patcher.source import Source, sha256_hex

PATCHES = registry.all_patches()


def test_the_batched_nms_patch_is_registered() -> None:
    assert [p.id for p in PATCHES] == ["batched-nms-amp-dtype"]


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.id)
def test_patch_is_well_formed(patch: Patch) -> None:
    assert patch.fixed.startswith(patch.anchor) and patch.inserted, "the fix must be a pure insertion"
    assert "\n" not in patch.summary and len(patch.summary) <= 100
    for distribution, affected in patch.affected.items():
        assert distribution == distribution.lower()
        assert (affected.last_affected is None) != (affected.fixed is None), "say where the known range ends"
        end = affected.last_affected or affected.fixed
        assert end is not None and Version(affected.introduced) <= Version(end)  # Version raises when invalid
    assert not patch.file.startswith("/") and ".." not in patch.file.split("/")
    assert patch.examples, "document the codemod with before/after examples"


@pytest.mark.parametrize(
    "patch, before, after",
    [(p, before, after) for p in PATCHES for before, after in p.examples],
    ids=lambda value: value.id if isinstance(value, Patch) else "",
)
def test_examples_apply_and_revert(patch: Patch, before: str, after: str) -> None:
    expected = after.format(sha256=sha256_hex(before.encode()))
    release = plan.Release(next(iter(patch.affected)), _an_affected_version(patch))
    verdict = plan.plan_apply(plan.assess(Source(before, "utf-8"), patch, release, need_text=True), force=False)
    assert verdict.new_text == expected
    patched = plan.assess(Source(expected, "utf-8"), patch, release, need_text=False)
    assert patched.state is State.PATCHED and patched.new_text == before


def _an_affected_version(patch: Patch) -> str:
    affected = next(iter(patch.affected.values()))
    return affected.last_affected or affected.introduced


def _patch(id: str, file: str = "ops/nms.py") -> Patch:
    return PATCHES[0]._replace(id=id, file=file)


def test_select_keeps_registry_order_whatever_order_ids_come_in() -> None:
    patches = (_patch("a"), _patch("b", "ops/other.py"), _patch("c"))
    assert [p.id for p in registry.select(patches, ["c", "a"])] == ["a", "c"]
    assert [p.id for p in registry.select(patches, None)] == ["a", "b", "c"]
    assert [p.id for p in registry.select(patches, None, only_file="ops/other.py")] == ["b"]


def test_registry_discovers_modules_in_name_order() -> None:
    import pkgutil

    from mmcv_patcher import patches as package

    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))
    assert [p.id.replace("-", "_") for p in PATCHES] == names
