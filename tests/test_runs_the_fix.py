"""A state is a claim about the code Python will run: ``patched`` only when every statement of
the patch, in the definition the callers reach, is the fix. Markers alone decide nothing: a
statement put back as released, a definition added after the patched one, an import the fix
needs taken out, a file whose callers hold on to an earlier definition: none reads as patched.

Judged on each patch's own example (``Example.before`` as the file of a release in its range)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmcv_patcher import find, ours, plan, registry
from mmcv_patcher.model import Example, Patch, Release, State
from mmcv_patcher.source import Source
from scripts import releases
from tests.fixtures import make_tree, registered, tool


def release_of(patch: Patch) -> Release:
    """A release of the patch's package whose file has the statements as its first example
    has them (the first, of the ends of its ranges, where that example reads as unpatched)."""
    before = first_example(patch).before
    for each in patch.affected[patch.package]:
        release = Release(patch.package, each.last_affected or each.introduced, package=patch.package)
        finding = plan.assess(Source(before, "utf-8"), patch, release, need_text=False, family=[patch])
        if finding.state is State.UNPATCHED:
            return release
    raise AssertionError(f"{patch.id}: no range of {patch.package} has its first example's statements")


def assess(patch: Patch, text: str) -> plan.Finding:
    return plan.assess(Source(text, "utf-8"), patch, release_of(patch), need_text=False, family=[patch])


def applied(patch: Patch, text: str) -> str:
    finding = plan.assess(Source(text, "utf-8"), patch, release_of(patch), need_text=True, family=[patch])
    action = plan.plan_apply(finding, force=False)
    assert action.ok and action.new_text is not None, action
    return action.new_text


def put_back(patch: Patch, text: str, marks: List[int]) -> str:
    """``text`` with the statements of the marks numbered ``marks`` (in file order) as
    released: their insertions and markers taken out, as `git checkout -p` of one hunk does."""
    found = ours.find_ours(Source(text, "utf-8"), [patch])
    assert found is not None
    return ours.cut(text, [span for index in marks for span in found.marks[index].spans])


def places_of(patch: Patch, message: str) -> List[str]:
    """Where the statement a drifted ``message`` quotes as released may be, in words: the
    definition named by each edit of that statement (the patch's own where it names none),
    or the module's own statements for an import."""
    quoted = [edit for edit in patch.edits if f"`{edit.anchor}` stands as released" in message]
    return ["the module's own statements" if edit.binds else f"{edit.function or patch.function}()" for edit in quoted]


def first_example(patch: Patch) -> Example:
    """The example of the release the patch's first range ends with (its first example)."""
    return patch.examples[0]


PATCHES = [pytest.param(patch, id=patch.id) for patch in registry.all_patches()]


@pytest.mark.parametrize("patch", PATCHES)
def test_every_statement_put_back_as_released_makes_the_patch_drifted_and_revert_force_gives_the_release(
    patch: Patch,
) -> None:
    before = first_example(patch).before
    patched = applied(patch, before)
    marks = ours.find_ours(Source(patched, "utf-8"), [patch])
    assert marks is not None and assess(patch, patched).state is State.PATCHED
    if len(marks.marks) == 1:  # put back, its one statement leaves the release
        assert assess(patch, put_back(patch, patched, [0])).state is State.UNPATCHED
        return
    for index, mark in enumerate(marks.marks):
        edited = put_back(patch, patched, [index])
        finding = assess(patch, edited)
        assert finding.state is State.DRIFTED and not finding.ok, (mark.line, finding)
        if finding.earlier:  # the statement of an edit this version added: as an earlier version left it
            assert any(edit.added and f"`{edit.anchor}`" in finding.message for edit in patch.edits), finding
            assert plan.plan_revert(finding, patch, release_of(patch), force=False).new_text == before
            continue
        assert finding.line == mark.line and "revert --force" in finding.message, finding
        places = places_of(patch, finding.message)
        assert any(f" in {place}, the code Python runs" in finding.message for place in places), finding
        assert (
            plan.plan_apply(
                plan.assess(Source(edited, "utf-8"), patch, release_of(patch), need_text=True, family=[patch]),
                force=False,
            ).ok
            is False
        )
        forced = plan.plan_revert(finding, patch, release_of(patch), force=True)
        assert forced.ok and forced.new_text == before, "what is left of ours taken out: the release"


@st.composite
def edits_of_a_patched_file(draw: st.DrawFn) -> Tuple[Patch, str, bool]:
    """A patch, its example patched and then edited: any subset of its statements put back as
    released, and maybe a copy of the released definition added after the patched one (as a
    kept copy of the release's class would be). Returns whether the fix is what Python runs."""
    patch = draw(st.sampled_from(registry.all_patches()))
    before = first_example(patch).before
    patched = applied(patch, before)
    found = ours.find_ours(Source(patched, "utf-8"), [patch])
    assert found is not None
    subset = draw(st.lists(st.integers(0, len(found.marks) - 1), unique=True))
    text = put_back(patch, patched, subset)
    definition = patch.function.split(".")[0]
    copy = draw(st.booleans()) and _top_level(before, definition)
    if copy:
        text += "\n\n" + copy
    return patch, text, not subset and not copy


def _top_level(text: str, name: str) -> str:
    """The module-level definition of ``name`` in ``text`` (its lines), or ""."""
    lines = text.splitlines(True)
    start = next((i for i, line in enumerate(lines) if line.startswith((f"class {name}", f"def {name}"))), None)
    if start is None:
        return ""
    end = next((i for i in range(start + 1, len(lines)) if lines[i][:1] not in ("", " ", "\t", "\n")), len(lines))
    return "".join(lines[start:end])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits_of_a_patched_file())
def test_status_says_patched_only_when_every_statement_python_runs_is_the_fix(case: Tuple[Patch, str, bool]) -> None:
    patch, text, runs_the_fix = case
    state = assess(patch, text).state
    assert (state is State.PATCHED) == runs_the_fix, (patch.id, state, text)
    assert state is not State.UNPATCHED or not ours.find_ours(Source(text, "utf-8"), [patch]), "markers left"


def test_a_definition_added_below_the_patched_one_is_the_one_judged() -> None:
    patch = registered("roi-align-fp32-kernel")
    example = first_example(patch)
    copy = _top_level(example.before, "RoIAlign")
    assert copy
    patched = applied(patch, example.before)
    edited = patched + "\n\n" + copy
    finding = assess(patch, edited)
    assert finding.state is State.DRIFTED and "stands as released" in finding.message, finding
    assert finding.line is not None and finding.line > patched.count("\n"), "the line of the added definition"


#: A file whose module-level alias holds on to the first of two definitions, as mmcv's
#: deform_conv.py binds ``deform_conv2d = DeformConv2dFunction.apply`` below the class.
def _aliased_then_redefined(patch: Patch) -> Tuple[str, Dict[str, int]]:
    before = first_example(patch).before
    name = patch.function.split(".")[0]
    text = before + f"\n\nalias = {name}.apply\n\n\n" + _top_level(before, name)
    lines = text.splitlines()
    where = {
        "first": next(i for i, line in enumerate(lines, 1) if line.startswith(f"class {name}")),
        "use": next(i for i, line in enumerate(lines, 1) if line.startswith("alias = ")),
        "last": max(i for i, line in enumerate(lines, 1) if line.startswith(f"class {name}")),
    }
    return text, where


def test_a_file_whose_callers_hold_on_to_an_earlier_definition_is_refused_naming_both() -> None:
    patch = registered("deform-conv-fp32-kernel")
    text, where = _aliased_then_redefined(patch)
    finding = assess(patch, text)
    assert finding.state is State.DRIFTED and finding.line == where["use"]
    assert f"defined at lines {where['first']} and {where['last']}, and line {where['use']} uses the first" in (
        finding.message
    )
    assert (
        plan.plan_apply(
            plan.assess(Source(text, "utf-8"), patch, release_of(patch), need_text=True, family=[patch]), force=False
        ).ok
        is False
    )


def test_a_name_used_only_inside_functions_between_two_definitions_is_not_ambiguous() -> None:
    patch = registered("deform-conv-fp32-kernel")
    before = first_example(patch).before
    text = (
        before
        + "\n\ndef later():\n    return DeformConv2dFunction.apply\n\n\n"
        + _top_level(before, "DeformConv2dFunction")
    )
    assert assess(patch, text).state is State.UNPATCHED, "the function looks the name up when it runs: the last"


#: Statements after which ``torch`` only looks bound.
UNBOUND = {
    "deleted": "import torch\ndel torch\n",
    "annotated": "from types import ModuleType\ntorch: ModuleType\n",
}


@pytest.mark.parametrize("prefix", UNBOUND.values(), ids=UNBOUND.keys())
def test_a_name_that_only_looks_bound_gets_the_import_the_fix_needs(prefix: str) -> None:
    patch = registered("roi-align-rotated-fp32-kernel")
    example = next(each for each in patch.examples if each.before.startswith("import torch.nn as nn\n"))
    text = prefix + example.before
    found = find.find(text, [patch])
    assert not isinstance(found, find.ParseFailure) and found[patch.id].unneeded == frozenset()
    release = Release("mmcv", "1.5.3")
    action = plan.plan_apply(plan.assess(Source(text, "utf-8"), patch, release, need_text=True), force=False)
    assert action.ok and action.new_text is not None
    assert "import torch.nn as nn, torch  # mmcv-patcher: " in action.new_text


def test_a_file_patched_without_the_import_the_fix_needs_is_not_patched() -> None:
    patch = registered("roi-align-rotated-fp32-kernel")
    example = next(each for each in patch.examples if each.before.startswith("import torch.nn as nn\n"))
    release = Release("mmcv", "1.5.3")
    patched = plan.plan_apply(
        plan.assess(Source(example.before, "utf-8"), patch, release, need_text=True), force=False
    ).new_text
    assert patched is not None
    marks = ours.find_ours(Source(patched, "utf-8"), [patch])
    assert marks is not None
    edited = put_back(patch, patched, [next(i for i, mark in enumerate(marks.marks) if mark.line == 1)])
    finding = plan.assess(Source(edited, "utf-8"), patch, release, need_text=False)
    assert finding.state is State.DRIFTED and finding.line == 1, finding


# --- on the real files ----------------------------------------------------------------------------


def real_tree(root: Path, release: releases.Release, file: str) -> Path:
    """A synthetic install that says ``release``, holding that release's own ``file``."""
    make_tree(root, version=release.version, distribution="mmcv")
    installed = root / "mmcv" / file
    installed.write_bytes(releases.released_file(release, f"mmcv/{file}"))
    return installed


def put_back_by_hand(text: str, fixed: str, released: str) -> str:
    """``text`` with the line holding ``fixed`` put back as released, as a person would: that
    text made ``released`` again, and our marker taken off the line."""
    lines = text.splitlines(True)
    index = next(i for i, line in enumerate(lines) if fixed in line)
    lines[index] = re.sub(r"  # mmcv-patcher: \S+ sha256=[0-9a-f]{64}", "", lines[index]).replace(fixed, released, 1)
    return "".join(lines)


@pytest.mark.release
def test_the_real_deform_conv_with_backwards_statement_put_back_is_drifted_and_revert_force_gives_the_release(
    tmp_path: Path,
) -> None:
    installed = real_tree(tmp_path, releases.OPS, "ops/deform_conv.py")
    released = installed.read_bytes()
    assert tool("apply", "--patch", "deform-conv-fp32-kernel", "--path", str(tmp_path)).returncode == 0
    fixed = "grad_output = grad_output.contiguous().type_as(input)"
    installed.write_text(put_back_by_hand(installed.read_text(), fixed, "grad_output = grad_output.contiguous()"))
    status = tool("status", "--check", "--patch", "deform-conv-fp32-kernel", "--path", str(tmp_path))
    assert status.returncode == 1 and "deform-conv-fp32-kernel: drifted" in status.stdout, status.stdout
    assert "`grad_output = grad_output.contiguous()` stands as released at line " in status.stdout
    edited = installed.read_bytes()
    assert tool("apply", "--path", str(tmp_path)).returncode == 1 and installed.read_bytes() == edited
    assert tool("revert", "--force", "--patch", "deform-conv-fp32-kernel", "--path", str(tmp_path)).returncode == 0
    assert installed.read_bytes() == released


@pytest.mark.release
def test_the_real_roi_align_rotated_of_mmcv_1_4_8_without_the_import_it_needs_is_drifted(tmp_path: Path) -> None:
    installed = real_tree(tmp_path, releases.Release("mmcv", "1.4.8", ""), "ops/roi_align_rotated.py")
    released = installed.read_bytes()
    assert tool("apply", "--patch", "roi-align-rotated-fp32-kernel", "--path", str(tmp_path)).returncode == 0
    assert "import torch.nn as nn, torch  # mmcv-patcher: " in installed.read_text()
    installed.write_text(
        put_back_by_hand(installed.read_text(), "import torch.nn as nn, torch", "import torch.nn as nn")
    )
    status = tool("status", "--check", "--patch", "roi-align-rotated-fp32-kernel", "--path", str(tmp_path))
    assert status.returncode == 1 and "roi-align-rotated-fp32-kernel: drifted" in status.stdout, status.stdout
    assert "`import torch.nn as nn` stands as released at line " in status.stdout
    assert (
        tool("revert", "--force", "--patch", "roi-align-rotated-fp32-kernel", "--path", str(tmp_path)).returncode == 0
    )
    assert installed.read_bytes() == released


@pytest.mark.release
def test_the_real_deform_conv_with_its_class_copied_below_its_alias_is_refused(tmp_path: Path) -> None:
    installed = real_tree(tmp_path, releases.OPS, "ops/deform_conv.py")
    text = installed.read_text()
    assert "\ndeform_conv2d = DeformConv2dFunction.apply\n" in text
    copy = _top_level(text, "DeformConv2dFunction")
    installed.write_text(text + "\n\n" + copy)
    edited = installed.read_bytes()
    status = tool("status", "--patch", "deform-conv-fp32-kernel", "--path", str(tmp_path))
    assert "deform-conv-fp32-kernel: drifted" in status.stdout and "uses the first before the second" in status.stdout
    assert tool("apply", "--path", str(tmp_path)).returncode == 1 and installed.read_bytes() == edited


def test_revert_force_refuses_to_leave_a_fix_whose_marker_a_formatter_moved() -> None:
    patch = registered("deform-conv-fp32-kernel")
    before = first_example(patch).before
    patched = applied(patch, before)
    lines = patched.splitlines(True)
    index = next(i for i, line in enumerate(lines) if "grad_output.contiguous().type_as(input)" in line)
    marker = re.search(r"  # mmcv-patcher: \S+ sha256=[0-9a-f]{64}", lines[index])
    assert marker is not None
    lines[index] = lines[index].replace(marker.group(0), "")
    lines[index - 1] = lines[index - 1].rstrip("\n") + marker.group(0) + "\n"  # onto the line above
    moved = "".join(lines)
    finding = assess(patch, moved)
    assert finding.state is State.DRIFTED
    refused = plan.plan_revert(finding, patch, release_of(patch), force=True)
    assert not refused.ok and refused.new_text is None
    assert f"would leave its fix without a marker at line {index + 1}" in refused.message


EARLIER = [
    pytest.param(patch, id=patch.id) for patch in registry.all_patches() if any(e.was or e.added for e in patch.edits)
]


@pytest.mark.parametrize("patch", EARLIER)
def test_a_file_an_earlier_version_patched_is_not_patched_and_revert_takes_its_fix_out_exactly(patch: Patch) -> None:
    """An earlier version wrote an earlier fix of a statement (``Edit.was``), or none of one
    this version added (``Edit.added``)."""
    before = first_example(patch).before
    older = patch._replace(
        edits=tuple(e._replace(fix=e.was[0], was=()) if e.was else e for e in patch.edits if not e.added)
    )
    finding = plan.assess(Source(before, "utf-8"), older, release_of(patch), need_text=True, family=[older])
    earlier = plan.plan_apply(finding, force=False).new_text
    assert earlier is not None and earlier != applied(patch, before)
    found = assess(patch, earlier)
    assert found.state is State.DRIFTED and "an earlier version of mmcv-patcher" in found.message
    assert not plan.plan_apply(
        plan.assess(Source(earlier, "utf-8"), patch, release_of(patch), need_text=True, family=[patch]), force=False
    ).ok
    reverted = plan.plan_revert(found, patch, release_of(patch), force=False)
    assert reverted.ok and reverted.new_text == before, "no --force: it is exactly ours"
    assert assess(patch, applied(patch, reverted.new_text)).state is State.PATCHED
