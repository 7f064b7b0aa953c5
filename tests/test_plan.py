"""plan: the state table of the seed patch (batched-nms-amp-dtype) on strings: each state, what apply and revert write."""

from __future__ import annotations

import subprocess
import sys
from typing import Optional

import pytest

from mmcv_patcher import ours, plan
from mmcv_patcher.model import Release, State
from mmcv_patcher.source import Source, decode, sha256_hex
from tests import fixtures
from tests.fixtures import (
    ANCHOR,
    ANCHOR_IN_NMS_TOO,
    ANCHOR_LINE,
    BATCHED,
    FIXED,
    INSERTED,
    NMS,
    SEED,
    apply,
    assess,
    nms_with,
    registered,
    revert,
)


def test_unpatched_file_is_found_at_the_anchor_line() -> None:
    verdict = assess(NMS)
    assert (verdict.state, verdict.line) == (State.UNPATCHED, ANCHOR_LINE)


def test_apply_changes_only_the_anchor_line() -> None:
    patched = apply(NMS)
    before, after = NMS.splitlines(True), patched.splitlines(True)
    changed = [i for i, (b, a) in enumerate(zip(before, after)) if b != a]
    assert len(before) == len(after) and changed == [ANCHOR_LINE - 1]
    marker = ours.marker(SEED, sha256_hex(NMS.encode()))
    assert after[ANCHOR_LINE - 1] == f"            {FIXED}  {marker}\n"


def test_the_other_branch_dets_is_untouched() -> None:
    patched = apply(NMS)
    assert "        scores = dets[:, -1]\n" in patched
    assert patched.count("dets[:, -1]") == NMS.count("dets[:, -1]")


def test_patched_file_reports_patched_and_reverts_to_the_exact_text() -> None:
    patched = apply(NMS)
    verdict = assess(patched)
    assert (verdict.state, verdict.line) == (State.PATCHED, ANCHOR_LINE)
    assert revert(patched) == NMS


def test_apply_on_patched_file_writes_nothing() -> None:
    verdict = plan.plan_apply(assess(apply(NMS)), force=False)
    assert verdict.ok and verdict.new_text is None and verdict.state is State.PATCHED


@pytest.mark.parametrize(
    "statement",
    [
        "scores_after_nms[mask[keep]] = dets[:, 4]",
        "scores_after_nms[mask[keep]] = dets[:, -2]",
        "scores_after_nms[mask] = dets[:, -1]",
        "scores_after_nms[mask[keep]] += dets[:, -1]",
        "scores_after_nms[mask[keep]] = dets[..., -1]",
        "scores_after_nms[mask[keep]] = dets[:, -1].half()",
        "pass",
    ],
)
def test_edited_statement_in_an_affected_release_is_drifted(statement: str) -> None:
    verdict = assess(nms_with(statement))
    assert verdict.state is State.DRIFTED and not verdict.ok
    assert verdict.line == 8  # the def line of batched_nms
    assert ANCHOR in verdict.message


def test_edited_statement_outside_the_range_is_not_affected() -> None:
    assert assess(nms_with("scores_after_nms[mask[keep]] = dets[:, 4]"), version="9.0.0").state is State.NOT_AFFECTED


@pytest.mark.parametrize(
    "statement",
    [
        FIXED,
        "scores_after_nms[mask[keep]] = dets[:,\n                                                -1].to(scores_after_nms.dtype)",
        "scores_after_nms[mask[keep]] = (dets[:, -1]).to(scores_after_nms.dtype)  # upstream",
    ],
)
def test_upstream_fix_is_fixed_upstream_and_never_touched(statement: str) -> None:
    text = nms_with(statement)
    verdict = assess(text)
    assert (verdict.state, verdict.line) == (State.FIXED_UPSTREAM, ANCHOR_LINE)
    assert plan.plan_apply(verdict, force=True).new_text is None
    assert plan.plan_revert(verdict, SEED, Release("mmcv", "2.1.0"), force=True).new_text is None


def test_anchor_twice_is_drifted_naming_both_lines() -> None:
    text = nms_with(f"{ANCHOR}\n            {ANCHOR}")
    verdict = assess(text)
    assert verdict.state is State.DRIFTED and not verdict.ok
    assert (
        "found 2 times in batched_nms() (lines 18, 19); mmcv 2.1.0 has it once" in verdict.message
        and verdict.line == 18
    )
    assert plan.plan_apply(verdict, force=True).new_text is None


def test_anchor_beside_the_fixed_form_is_drifted() -> None:
    verdict = assess(nms_with(f"{ANCHOR}\n            {FIXED}"))
    assert verdict.state is State.DRIFTED and "lines 18, 19" in verdict.message


def test_anchor_only_in_another_function_is_drifted() -> None:
    text = ANCHOR_IN_NMS_TOO.replace(f"            {ANCHOR}\n", "            pass\n")
    assert text.count(ANCHOR) == 1
    verdict = assess(text)
    assert verdict.state is State.DRIFTED and verdict.line == 9


def test_no_batched_nms_function_is_drifted_in_range_and_not_affected_outside() -> None:
    text = NMS.replace("def batched_nms(", "def other_nms(")
    assert assess(text).state is State.DRIFTED
    assert assess(text, version="1.3.3").state is State.NOT_AFFECTED
    assert assess(text, version="3.0.0").state is State.NOT_AFFECTED


def test_syntax_error_is_drifted_with_its_line() -> None:
    text = NMS.replace("    split_thr = nms_cfg.pop('split_thr', 10000)\n", "    split_thr = (\n")
    verdict = assess(text)
    assert verdict.state is State.DRIFTED and not verdict.ok and "cannot parse" in verdict.message
    assert verdict.line is not None and verdict.line >= 9


def test_release_below_the_range_is_not_affected_even_with_the_statement() -> None:
    verdict = assess(NMS, version="1.3.3")
    assert (verdict.state, verdict.message) == (
        State.NOT_AFFECTED,
        "mmcv 1.3.3 is older than 1.3.4, the first release this patch covers",
    )


@pytest.mark.parametrize("version", ["2.3.0", None, "2.0.0rc2", "garbage"])
def test_unknown_release_with_the_statement_is_unverified_and_needs_force(version: Optional[str]) -> None:
    verdict = assess(NMS, version=version)
    assert verdict.state is State.UNVERIFIED and "--force" in verdict.message
    refused = plan.plan_apply(verdict, force=False)
    assert not refused.ok and refused.new_text is None
    forced = plan.plan_apply(verdict, force=True)
    assert forced.ok and forced.state is State.PATCHED and forced.new_text is not None
    assert assess(forced.new_text, version=version).state is State.PATCHED


def test_reverting_an_unverified_release_reports_it_unverified_again() -> None:
    patched = plan.plan_apply(assess(NMS, version="2.3.0"), force=True).new_text
    assert patched is not None
    reverted = plan.plan_revert(assess(patched, version="2.3.0"), SEED, Release("mmcv", "2.3.0"), force=False)
    assert reverted.state is State.UNVERIFIED and reverted.new_text == NMS


def test_the_state_of_a_release_file_or_a_patched_file_is_found_without_libcst() -> None:
    patched = apply(NMS)
    program = f"""
import sys
from mmcv_patcher import plan
from mmcv_patcher.model import Release
from mmcv_patcher.source import Source, record_hash
from tests.fixtures import SEED as seed
nms = {NMS!r}
release = Release("mmcv", "2.1.0", {{seed.file: record_hash(nms.encode())}})
first = plan.assess(Source(nms, "utf-8"), seed, release, need_text=False)
second = plan.assess(Source({patched!r}, "utf-8"), seed, release, need_text=False)
print(first.state.value, first.line, second.state.value, second.line, "libcst" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, universal_newlines=True, check=True
    ).stdout
    assert out.split() == ["unpatched", str(ANCHOR_LINE), "patched", str(ANCHOR_LINE), "False"]


@pytest.mark.parametrize(
    "data",
    [
        NMS.replace("\n", "\r\n").encode(),
        NMS.replace("\n", "\r").encode(),
        b"\xef\xbb\xbf" + NMS.encode(),
        ("# -*- coding: latin-1 -*-\n# caf\xe9\n" + NMS).encode("latin-1"),
        NMS.replace("    ", "\t").encode(),
    ],
    ids=["crlf", "cr", "bom", "latin-1", "tabs"],
)
def test_encodings_and_newlines_round_trip_byte_for_byte(data: bytes) -> None:
    source = decode(data)
    verdict = plan.assess(source, SEED, Release("mmcv", "2.1.0"), need_text=True)
    assert verdict.state is State.UNPATCHED
    assert verdict.new_text is not None
    patched = source.encode(verdict.new_text)
    assert patched.count(INSERTED.encode()) == 1
    assert len(patched.splitlines()) == len(data.splitlines())
    again = decode(patched)
    undone = plan.assess(again, SEED, Release("mmcv", "2.1.0"), need_text=False)
    assert undone.state is State.PATCHED
    assert undone.new_text is not None and again.encode(undone.new_text) == data


@pytest.mark.parametrize(
    "text, state, line",
    [
        pytest.param(
            ANCHOR_IN_NMS_TOO.replace(f"            {ANCHOR}\n", "            pass\n"),
            State.DRIFTED,
            9,
            id="anchor-in-another-function",
        ),
        pytest.param(NMS + "\n\n" + BATCHED, State.UNPATCHED, 45, id="two-definitions-both-with-it"),
        pytest.param(nms_with(f"keep = keep; {ANCHOR}"), State.UNPATCHED, ANCHOR_LINE, id="not-alone-on-its-line"),
        pytest.param(nms_with(f"{ANCHOR}  # a comment"), State.UNPATCHED, ANCHOR_LINE, id="comment-after-it"),
        pytest.param(
            nms_with("scores_after_nms[mask[keep]] = dets[:,\n                -1]"),
            State.UNPATCHED,
            ANCHOR_LINE,
            id="over-two-lines",
        ),
    ],
)
def test_status_and_apply_see_the_same_state_and_line(text: str, state: State, line: int) -> None:
    status = assess(text, need_text=False)
    applying = assess(text, need_text=True)
    assert (
        (status.state, status.line, status.message)
        == (applying.state, applying.line, applying.message)
        == (state, line, status.message)
    )
    assert (status.new_text is None) and ((applying.new_text is not None) == (state is State.UNPATCHED))


def test_one_pass_tells_each_patch_its_own_state() -> None:
    # One patch already applied, one whose statement is missing, the rest unpatched: the
    # shared pass still gives each patch the verdict it gets alone.
    registered("nms-fp32-kernel")
    family = fixtures.patches_of("ops/nms.py")
    release = Release("mmcv", "2.1.0")
    edited = NMS.replace(
        "inds = NMSop.apply(boxes, scores, iou_threshold, offset,",
        "inds = NMSop.apply(boxes, scores, iou_threshold, 0,",
    )
    text = plan.plan_apply(
        plan.assess(Source(edited, "utf-8"), family[0], release, need_text=True, family=family), force=False
    ).new_text
    assert text is not None
    every = plan.assess_all(
        Source(text, "utf-8"), [(patch, release) for patch in family], need_text=True, family=family
    )
    assert every == [
        plan.assess(Source(text, "utf-8"), patch, release, need_text=True, family=family) for patch in family
    ]
    states = {patch.id: verdict.state for patch, verdict in zip(family, every)}
    assert states[family[0].id] is State.PATCHED and states["nms-fp32-kernel"] is State.DRIFTED
    assert list(states.values()).count(State.UNPATCHED) == len(family) - 2
    # Their changes merged onto the patched file: what applying them one by one writes.
    unpatched = [(patch, verdict) for patch, verdict in zip(family, every) if verdict.state is State.UNPATCHED]
    one_by_one = text
    for patch, _ in unpatched:
        one_by_one = (
            plan.plan_apply(
                plan.assess(Source(one_by_one, "utf-8"), patch, release, need_text=True, family=family), force=False
            ).new_text
            or ""
        )
    assert plan.combined(Source(text, "utf-8"), [verdict for _, verdict in unpatched]) == one_by_one != text
