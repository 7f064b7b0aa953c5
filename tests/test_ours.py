"""ours: our markers and insertions, judged one statement at a time, and taken out."""

from __future__ import annotations

from typing import List, Tuple

import pytest

from mmcv_patcher import find, ours, plan
from mmcv_patcher.model import Edit, Release, State
from mmcv_patcher.source import Source
from tests import fixtures
from tests.fixtures import (
    ANCHOR,
    ANCHOR_LINE,
    FAMILY,
    INSERTED,
    NMS,
    SEED,
    apply,
    assess,
    assess_family,
    recorded,
    registered,
    revert_family,
)


def test_an_edit_elsewhere_keeps_our_edit_patched_and_revert_takes_out_only_ours() -> None:
    edited = apply(NMS).replace("import torch\n", "import torch  # edited by hand\n")
    verdict = assess(edited)
    assert (
        verdict.state is State.PATCHED
        and verdict.line == ANCHOR_LINE
        and "other lines of the file were edited" in verdict.message
    )
    reverted = plan.plan_revert(verdict, SEED, Release("mmcv", "2.1.0"), force=False)
    assert reverted.ok and "not the original" in reverted.message
    assert reverted.new_text == NMS.replace("import torch\n", "import torch  # edited by hand\n")


def test_a_marker_whose_insertion_was_taken_out_is_drifted_and_force_takes_out_the_marker() -> None:
    broken = apply(NMS).replace(INSERTED, "")
    verdict = assess(broken)
    assert verdict.state is State.DRIFTED and verdict.line == ANCHOR_LINE
    assert not plan.plan_revert(verdict, SEED, Release("mmcv", "2.1.0"), force=False).ok
    assert plan.plan_revert(verdict, SEED, Release("mmcv", "2.1.0"), force=True).new_text == NMS


def test_a_marked_line_copied_elsewhere_is_ours_too_and_revert_takes_out_both_insertions() -> None:
    patched = apply(NMS)
    marker_line = patched.splitlines(True)[ANCHOR_LINE - 1]
    verdict = assess(patched + marker_line.lstrip())
    assert verdict.state is State.PATCHED and "other lines of the file were edited" in verdict.message
    reverted = plan.plan_revert(verdict, SEED, Release("mmcv", "2.1.0"), force=False)
    assert reverted.new_text == NMS + ANCHOR + "\n"


def test_one_edited_statement_flags_its_own_patch_only() -> None:
    edited = fixtures.patched(family=FAMILY).replace(
        "dets[:, -1].to(scores_after_nms.dtype)", "dets[:, -1].to(scores_after_nms.dtype) * 1"
    )
    states = {id: verdict.state for id, verdict in assess_family(edited).items()}
    assert states == {**dict.fromkeys(states, State.PATCHED), "batched-nms-amp-dtype": State.DRIFTED}
    assert assess_family(edited)["batched-nms-amp-dtype"].line == ANCHOR_LINE


def test_text_after_our_marker_makes_it_drifted_and_force_keeps_what_was_added() -> None:
    patched = fixtures.patched(family=FAMILY)
    lines = patched.splitlines(True)
    lines[ANCHOR_LINE - 1] = lines[ANCHOR_LINE - 1].replace("\n", "  # noqa: E501\n")
    edited = "".join(lines)
    verdict = assess_family(edited)["batched-nms-amp-dtype"]
    assert verdict.state is State.DRIFTED and verdict.line == ANCHOR_LINE
    assert revert_family(edited, force=False)[0] is False
    ok, reverted = revert_family(edited, force=True)
    assert ok and reverted == NMS.replace(ANCHOR + "\n", ANCHOR + "  # noqa: E501\n")


def test_patches_never_applied_beside_an_edited_one_are_unpatched_and_revert_force_takes_out_ours() -> None:
    kernel = registered("nms-fp32-kernel")
    applied = plan.plan_apply(assess_family(NMS, [kernel])[kernel.id], force=False).new_text
    assert applied is not None
    edited = "".join(
        line.replace("\n", "  # noqa\n") if f"# mmcv-patcher: {kernel.id} " in line else line
        for line in applied.splitlines(True)
    )
    others = [patch for patch in FAMILY if patch is not kernel]
    states = {id: verdict.state for id, verdict in assess_family(edited, need_text=False).items()}
    assert states == {**dict.fromkeys(states, State.UNPATCHED), kernel.id: State.DRIFTED}
    refused = assess_family(edited, others)  # apply: their marker could not remember the original
    assert all(
        verdict.state is State.DRIFTED and "revert those first" in verdict.message for verdict in refused.values()
    )
    ok, reverted = revert_family(edited, force=True)
    assert ok and reverted == "".join(
        line.replace("\n", "  # noqa\n") if " = NMSop.apply(boxes, scores," in line else line
        for line in NMS.splitlines(True)
    )


def test_one_insertion_undone_by_hand_flags_its_patch_and_force_gives_back_the_original() -> None:
    registered("nms-fp32-kernel")
    undone = fixtures.patched(family=FAMILY).replace(
        "NMSop.apply(boxes.float(), scores.float(),", "NMSop.apply(boxes, scores.float(),"
    )
    states = {id: verdict.state for id, verdict in assess_family(undone).items()}
    assert states == {**dict.fromkeys(states, State.PATCHED), "nms-fp32-kernel": State.DRIFTED}
    assert revert_family(undone, force=False)[0] is False
    assert revert_family(undone, force=True) == (True, NMS)


def test_an_intact_patch_beside_an_undone_one_reverts_on_its_own() -> None:
    registered("nms-fp32-kernel")
    undone = fixtures.patched(family=FAMILY).replace(
        "NMSop.apply(boxes.float(), scores.float(),", "NMSop.apply(boxes, scores.float(),"
    )
    verdict = assess_family(undone, [SEED])[SEED.id]
    reverted = plan.plan_revert(verdict, SEED, Release("mmcv", "2.1.0"), force=False)
    assert reverted.ok and reverted.new_text is not None
    assert ANCHOR + "\n" in reverted.new_text and "batched-nms-amp-dtype sha256" not in reverted.new_text


def test_the_search_for_our_insertions_is_bounded_whatever_the_file_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A marker whose statement lost its text, after many look-alikes on the same line."""
    nms_kernel = registered("nms-fp32-kernel")
    decoys = " + ".join(["t.float()"] * 30)
    line = f"    x = NMSop.apply(boxes, scores, iou_threshold, offset, score_threshold, max_num) or ({decoys})"
    text = NMS.replace(
        "    inds = NMSop.apply(boxes, scores, iou_threshold, offset, score_threshold, max_num)",
        line + "  " + ours.marker(nms_kernel, "0" * 64),
    )
    parsed: List[str] = []
    real = find.dumps

    def counted(segment: str) -> List[str]:  # each placement tried parses once
        parsed.append(segment)
        return real(segment)

    monkeypatch.setattr(ours, "dumps", counted)
    found = ours.find_ours(Source(text, "utf-8"), FAMILY)
    assert found is not None and not found.intact(nms_kernel)
    assert len(parsed) <= ours.MAX_TRIES * len(nms_kernel.edits) + 8


def test_look_alike_text_near_the_statements_never_changes_a_verdict() -> None:
    """A fork with debug lines that hold the very text a patch inserts, and no RECORD."""
    fork = NMS.replace(
        "    inds = NMSop.apply(", "    print(boxes.float(), scores.float())\n    inds = NMSop.apply("
    ).replace(
        "        scores_after_nms[mask[keep]]",
        "        print(dets[:, -1].to(scores_after_nms.dtype))\n        scores_after_nms[mask[keep]]",
    )
    together = assess_family(fork)
    for patch in FAMILY:
        alone = assess_family(fork, [patch])[patch.id]
        assert alone.state is together[patch.id].state is State.UNPATCHED, (patch.id, alone, together[patch.id])
    applied = plan.combined(Source(fork, "utf-8"), list(together.values()))
    assert revert_family(applied, force=False) == (True, fork)


def test_revert_checks_record_and_says_when_the_original_was_not_the_release() -> None:
    record = recorded(NMS)
    released = Release("mmcv", "2.1.0", {SEED.file: record})
    pristine = assess(apply(NMS), record=record, need_text=False)
    assert pristine.message == "patched by mmcv-patcher"
    assert plan.plan_revert(pristine, SEED, released, force=False).message == "reverted to the original bytes"

    hand_edited = NMS.replace("import torch\n", "import torch  # edited before patching\n")
    patched = assess(apply(hand_edited), record=record, need_text=False)
    assert patched.state is State.PATCHED and "already differed from the release's RECORD" in patched.message
    reverted = plan.plan_revert(patched, SEED, released, force=False)
    assert reverted.ok and reverted.new_text == hand_edited
    assert "differ from the release's RECORD" in reverted.message
    assert "pip install --force-reinstall --no-deps mmcv==2.1.0" in reverted.message


# --- what an edit inserts, spacing included -----------------------------------------------------

INSERTIONS = {
    "a-call-wrapped": ("return output", "return output.to(ctx.output_dtype)", (".to(ctx.output_dtype)",)),
    "a-conditional-after-the-value": (
        "input = input.type_as(offset)",
        "input = input.type_as(offset) if offset.dtype != torch.bfloat16 else input.float()",
        (" if offset.dtype != torch.bfloat16 else input.float()",),
    ),
    "targets-and-values-added": (
        "weight = weight.type_as(input)",
        "weight, offset = weight.type_as(input), offset.type_as(input)",
        (", offset", ", offset.type_as(input)"),
    ),
}


@pytest.mark.parametrize("anchor, fix, inserted", INSERTIONS.values(), ids=INSERTIONS.keys())
def test_an_edit_inserts_whole_tokens_with_the_spacing_the_fix_adds(
    anchor: str, fix: str, inserted: Tuple[str, ...]
) -> None:
    edit = Edit(anchor, fix)
    assert edit.insertions == inserted
    assert ours.cut(fix, _spans(fix, edit.insertions)) == anchor, "taking them out gives the anchor back exactly"


def _spans(text: str, insertions: Tuple[str, ...]) -> List[ours.Span]:
    spans, at = [], 0
    for insertion in insertions:
        at = text.index(insertion, at)
        spans.append((at, at + len(insertion)))
        at += len(insertion)
    return spans
