"""find: the definition Python binds and the statements in it, read with ast and tokenize."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from mmcv_patcher import find, plan
from mmcv_patcher.model import Example, Patch, Release, State
from mmcv_patcher.source import Source
from tests.fixtures import (
    ANCHOR,
    ANCHOR_LINE,
    BATCHED,
    FIXED,
    INSERTED,
    NMS,
    SEED,
    apply,
    assess,
    lines_of,
    recorded,
    registered,
    revert,
)


def test_old_mac_newlines_and_a_copy_of_the_function_in_a_string_patch_exactly() -> None:
    function = NMS[NMS.index("def batched_nms") :]
    text = (NMS + '\nCOPY = """\n\n\n' + function + '"""\n').replace("\n", "\r")
    assert revert(apply(text)) == text
    assert assess(text).line == ANCHOR_LINE


def test_function_text_also_inside_a_string_patches_the_real_function() -> None:
    function = BATCHED
    text = NMS + '\n\nCOPY = """\n\n\n' + function + '"""\n'
    assert text.count("\n\n" + function) == 2, "the copy must match the function's node text, leading lines included"
    patched = apply(text)
    assert patched.startswith(NMS.replace(ANCHOR, FIXED, 1)[: NMS.index(ANCHOR) + len(FIXED)])
    assert patched.endswith('\n\nCOPY = """\n\n\n' + function + '"""\n')
    assert revert(patched) == text


def test_of_two_definitions_the_one_python_binds_is_patched() -> None:
    text = NMS + "\n\n" + BATCHED
    verdict = assess(text)
    assert (verdict.state, verdict.line) == (State.UNPATCHED, lines_of(text, ANCHOR)[-1])
    patched = apply(text)
    assert patched.startswith(NMS) and patched.count(INSERTED) == 1
    assert revert(patched) == text


@pytest.mark.parametrize("need_text", [True, False])
def test_a_statement_only_in_a_dead_definition_is_drifted(need_text: bool) -> None:
    # Python runs the last definition; the statement in the first is dead code.
    last = "def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):"
    text = NMS + f"\n\n{last}\n    return boxes, scores\n"
    verdict = assess(text, need_text=need_text, record=recorded(text))
    assert verdict.state is State.DRIFTED and not verdict.ok and verdict.line == lines_of(text, last)[-1]
    assert "the last of 2 definitions of batched_nms(), the one Python runs" in verdict.message
    assert plan.plan_apply(verdict, force=True).new_text is None


def test_a_statement_over_several_lines_is_named_by_its_first_line_in_every_state() -> None:
    # The marker ends the statement's last line; apply, status and revert all name its first.
    patch = registered("nms-fp32-kernel")
    one_line = "inds = NMSop.apply(boxes, scores, iou_threshold, offset, score_threshold, max_num)"
    text = NMS.replace(
        one_line,
        "inds = NMSop.apply(boxes, scores, iou_threshold, offset,\n                       score_threshold, max_num)",
    )
    first = lines_of(text, "inds = NMSop.apply(boxes, scores, iou_threshold, offset,")[0]
    release = Release("mmcv", "2.1.0", {patch.file: recorded(text)})
    scanned = plan.assess(Source(text, "utf-8"), patch, release, need_text=True)
    status = plan.assess(Source(text, "utf-8"), patch, release, need_text=False)
    assert scanned.state is status.state is State.UNPATCHED and scanned.line == status.line == first
    applied = plan.plan_apply(scanned, force=False)
    assert applied.line == first and applied.new_text is not None
    assert "# mmcv-patcher: nms-fp32-kernel" in applied.new_text.splitlines()[first]  # on the last line
    patched = plan.assess(Source(applied.new_text, "utf-8"), patch, release, need_text=False)
    assert patched.state is State.PATCHED and patched.line == first
    assert plan.plan_revert(patched, patch, release, force=False).line == first


def test_anchor_in_a_one_line_suite_is_patched() -> None:
    text = NMS.replace(
        "        for id in torch.unique(idxs):\n",
        "        for id in torch.unique(idxs): scores_after_nms[mask[keep]] = dets[:, -1]\n        for id in []:\n",
    )
    text = text.replace(f"            {ANCHOR}\n", "            pass\n")
    patched = apply(text)
    assert f"for id in torch.unique(idxs): {FIXED}  # mmcv-patcher" in patched
    assert revert(patched) == text


def test_find_locates_each_statement_of_the_definition_python_binds() -> None:
    text = "def nms(a):\n    pass\n\n\ndef nms(a):\n    x = 1\n    inds = NMSop.apply(boxes, scores, iou_threshold, offset)  # why\n"
    patch = registered("nms-fp32-kernel")
    found = find.find(text, [patch])
    assert not isinstance(found, find.ParseFailure)
    located = found[patch.id]
    assert (located.definition_line, located.definitions, located.fixes) == (5, 2, ())
    [statement] = located.anchors
    assert text[statement.start : statement.end] == "inds = NMSop.apply(boxes, scores, iou_threshold, offset)"
    assert (statement.line, statement.edit) == (7, 0)


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param(
            "x = f(a,\n      b)  # c\ny = 2\n", "x = f(a,\n      b)", id="brackets over two lines, comment after"
        ),
        pytest.param("x = 1; y = 2\n", "x = 1", id="a semicolon ends it"),
        pytest.param("x = 1 + \\\n    2\n", "x = 1 + \\\n    2", id="a backslash continues it"),
        pytest.param("x = 1\r\ny = 2\r\n", "x = 1", id="CRLF"),
    ],
)
def test_statement_end_is_after_the_last_token(text: str, expected: str) -> None:
    assert text[: find.statement_end(text, 0)] == expected


def test_a_file_python_cannot_parse_is_a_parse_failure_with_its_line() -> None:
    assert find.find("x = 1\ndef (:\n", [SEED]) == find.ParseFailure(2, "invalid syntax")


# --- a method Python reaches through inheritance, in the same file ------------------------------------

ROI_CALL = (
    "return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.pool_mode,"
    " self.aligned)"
)
INHERITED = {
    "moved-to-a-base": f"""
class _RoIAlignBase(nn.Module):
    def forward(self, input, rois):
        {ROI_CALL}


class RoIAlign(_RoIAlignBase):
    pass
""",
    "re-wrapped-by-a-subclass-of-the-same-name": f"""
class RoIAlign(nn.Module):
    def forward(self, input, rois):
        {ROI_CALL}


class RoIAlign(RoIAlign):
    def extra_repr(self):
        return ''
""",
    "through-two-bases": f"""
class _Kernel(nn.Module):
    def forward(self, input, rois):
        {ROI_CALL}


class _Named(_Kernel):
    pass


class RoIAlign(_Named):
    pass
""",
}


def assess_roi_align(text: str, version: str) -> plan.Finding:
    patch = registered("roi-align-fp32-kernel")
    return plan.assess(Source(text, "utf-8"), patch, Release("mmcv", version), need_text=True)


@pytest.mark.parametrize("text", INHERITED.values(), ids=INHERITED.keys())
def test_an_inherited_method_outside_the_known_releases_is_unverified(text: str) -> None:
    finding = assess_roi_align(text, "9.0.0")
    assert (finding.state, finding.line) == (State.UNVERIFIED, lines_of(text, ROI_CALL)[0])


@pytest.mark.parametrize("text", INHERITED.values(), ids=INHERITED.keys())
def test_an_inherited_method_of_a_known_release_is_patched_where_it_is_defined(text: str) -> None:
    finding = assess_roi_align(text, "2.1.0")
    assert finding.state is State.UNPATCHED and finding.new_text is not None
    assert finding.new_text.count("input.to(torch.float32 if") == 1


INHERITED_FROM_ELSEWHERE = {
    "a-base-from-an-import": "from mmcv.ops.base import RoIAlignBase\n\n\nclass RoIAlign(RoIAlignBase):\n    pass\n",
    "a-base-bound-by-an-assignment": f"""
class _Base(nn.Module):
    def forward(self, input, rois):
        {ROI_CALL}


_Base = make_base()


class RoIAlign(_Base):
    pass
""",
    "bound-in-the-class-by-an-assignment": f"""
class _Base(nn.Module):
    def forward(self, input, rois):
        {ROI_CALL}


class RoIAlign(_Base):
    forward = torch.jit.ignore(_Base.forward)
""",
}


@pytest.mark.parametrize("text", INHERITED_FROM_ELSEWHERE.values(), ids=INHERITED_FROM_ELSEWHERE.keys())
def test_a_method_python_takes_from_elsewhere_is_not_guessed(text: str) -> None:
    finding = assess_roi_align(text, "9.0.0")
    assert finding.state is State.NOT_AFFECTED and finding.message == "no definition of RoIAlign.forward()"


def test_an_edit_that_names_another_definition_is_found_there_alone() -> None:
    """A fix spanning an autograd function's forward and backward: each statement counts
    only in the definition its edit names."""
    patch = registered("deform-conv-fp32-kernel")
    text = patch.examples[0].before
    found = find.find(text, [patch])
    assert not isinstance(found, find.ParseFailure)
    counts = found[patch.id].counts(found[patch.id].anchors, len(patch.edits))
    assert counts == (1, 1, 2, 1)
    moved = text.replace("        grad_output = grad_output.contiguous()\n", "").replace(
        "        ctx.save_for_backward(input, offset, weight)\n",
        "        ctx.save_for_backward(input, offset, weight)\n        grad_output = grad_output.contiguous()\n",
    )
    found = find.find(moved, [patch])
    assert not isinstance(found, find.ParseFailure)
    assert found[patch.id].counts(found[patch.id].anchors, len(patch.edits)) == (1, 1, 2, 0), (
        "in forward, the backward's statement is not the edit's"
    )


# --- an import a fix needs, among the module's own statements ------------------------------------------


class Rotated(NamedTuple):
    """The RoIAlignRotated patch, the index of its edit that adds the ``torch`` import, and
    its example of mmcv 1.5.3's form, whose file binds torch only as ``nn``."""

    patch: Patch
    edit: int
    binds_only_nn: Example


@pytest.fixture
def rotated() -> Rotated:
    patch = registered("roi-align-rotated-fp32-kernel")
    edit = next(index for index, each in enumerate(patch.edits) if each.binds == "torch")
    example = next(each for each in patch.examples if each.before.startswith("import torch.nn as nn\n"))
    return Rotated(patch, edit, example)


def found_rotated(rotated: Rotated, text: str) -> find.Found:
    """What the RoIAlignRotated patch finds in ``text``."""
    found = find.find(text, [rotated.patch])
    assert not isinstance(found, find.ParseFailure)
    return found[rotated.patch.id]


def assess_rotated(rotated: Rotated, text: str) -> plan.Finding:
    """The RoIAlignRotated patch's finding on ``text`` as mmcv 1.5.3's file."""
    return plan.assess(Source(text, "utf-8"), rotated.patch, Release("mmcv", "1.5.3"), need_text=True)


def test_an_import_a_fix_needs_is_found_among_the_modules_statements(rotated: Rotated) -> None:
    located = found_rotated(rotated, rotated.binds_only_nn.before)
    assert [(s.line, s.edit) for s in located.anchors if s.edit == rotated.edit] == [(1, rotated.edit)]
    assert located.unneeded == frozenset()


BOUND_OTHERWISE = {
    "import-torch": "import torch\n",
    "from-import": "from mmcv.utils import torch\n",
    "an-assignment": "torch = __import__('torch')\n",
}


@pytest.mark.parametrize("binding", BOUND_OTHERWISE.values(), ids=BOUND_OTHERWISE.keys())
def test_an_import_of_a_name_the_module_binds_otherwise_is_not_needed(rotated: Rotated, binding: str) -> None:
    text = binding + rotated.binds_only_nn.before
    located = found_rotated(rotated, text)
    assert located.unneeded == frozenset({rotated.edit}) and all(s.edit != rotated.edit for s in located.anchors)
    finding = assess_rotated(rotated, text)
    assert finding.state is State.UNPATCHED and finding.new_text is not None
    assert finding.new_text.startswith(binding + "import torch.nn as nn\n"), "the import is left as it is"
    again = assess_rotated(rotated, finding.new_text)
    reverted = plan.plan_revert(again, rotated.patch, Release("mmcv", "1.5.3"), force=False)
    assert reverted.new_text == text


def test_an_import_inside_a_function_is_not_the_modules(rotated: Rotated) -> None:
    text = rotated.binds_only_nn.before.replace(
        "import torch.nn as nn\n", "def _load():\n    import torch.nn as nn\n", 1
    )
    assert all(s.edit != rotated.edit for s in found_rotated(rotated, text).anchors)
    assert assess_rotated(rotated, text).state is State.DRIFTED, "1.5.3 has the import: the file was edited"


def test_an_import_and_a_call_fixed_by_hand_are_fixed_upstream(rotated: Rotated) -> None:
    finding = assess_rotated(rotated, rotated.binds_only_nn.after)
    assert finding.state is State.FIXED_UPSTREAM and finding.line == 1
