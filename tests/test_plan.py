"""The state table and the codemod, pinned with strings (no files, no subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from mmcv_patcher import gate, ours, plan
from mmcv_patcher.model import Patch, State
from mmcv_patcher.patches.batched_nms_amp_dtype import PATCH
from mmcv_patcher.source import Source, decode, record_hash, sha256_hex
from tests import fixtures
from tests.fixtures import ANCHOR, ANCHOR_IN_NMS_TOO, ANCHOR_LINE, BATCHED, FIXED, NMS, lines_of, nms_with

[INSERTED] = PATCH.edits[0].insertions


def recorded(text: str) -> str:
    """RECORD's hash field for a file holding ``text`` (UTF-8)."""
    return record_hash(text.encode())


def assess(text: str, version: Optional[str] = "2.1.0", distribution: Optional[str] = "mmcv", *, need_text: bool = True, record: Optional[str] = None, encoding: str = "utf-8") -> plan.Verdict:
    return plan.assess(Source(text, encoding), PATCH, gate.Release(distribution, version, record), need_text=need_text)


def apply(text: str, **kwargs: object) -> str:
    verdict = plan.plan_apply(assess(text, **kwargs), force=False)  # type: ignore[arg-type]
    assert verdict.ok and verdict.new_text is not None, verdict
    return verdict.new_text


def revert(text: str, **kwargs: object) -> str:
    verdict = plan.plan_revert(assess(text, **kwargs), PATCH, gate.Release("mmcv", "2.1.0"), force=False)  # type: ignore[arg-type]
    assert verdict.ok and verdict.new_text is not None, verdict
    return verdict.new_text


# --- the one statement, patched and reverted ------------------------------------------------


def test_unpatched_file_is_found_at_the_anchor_line() -> None:
    verdict = assess(NMS)
    assert (verdict.state, verdict.line) == (State.UNPATCHED, ANCHOR_LINE)


def test_apply_changes_only_the_anchor_line() -> None:
    patched = apply(NMS)
    before, after = NMS.splitlines(True), patched.splitlines(True)
    changed = [i for i, (b, a) in enumerate(zip(before, after)) if b != a]
    assert len(before) == len(after) and changed == [ANCHOR_LINE - 1]
    marker = ours.marker(PATCH, sha256_hex(NMS.encode()))
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


FORMATTING_VARIANTS = [
    "scores_after_nms[mask[keep]]=dets[:,-1]",
    "scores_after_nms[ mask[ keep ] ] = dets[ : , -1 ]",
    "scores_after_nms[mask[keep]] = (dets[:, -1])",
    "scores_after_nms[mask[keep]] = dets[:, - 1]",
    "scores_after_nms[mask[keep]] = dets[:,\n                -1]",
    "scores_after_nms[mask[keep]] = \\\n                dets[:, -1]",
    "scores_after_nms[mask[keep]] = dets[:, -1]  # write back",
    "scores_after_nms[mask[keep]] = dets[:,  # last column\n                -1]",
    "total_mask[mask[keep]] = True; scores_after_nms[mask[keep]] = dets[:, -1]",
    "scores_after_nms[mask[keep]] = dets[:, -1];",
    "scores_after_nms[mask[keep]] = dets[:, -1]   ",
]


@pytest.mark.parametrize("statement", FORMATTING_VARIANTS)
def test_any_formatting_of_the_anchor_is_patched_and_reverted_exactly(statement: str) -> None:
    text = nms_with(statement)
    verdict = assess(text)
    assert verdict.state is State.UNPATCHED and verdict.line == ANCHOR_LINE
    patched = apply(text)
    assert patched.count(INSERTED) == 1
    assert assess(patched).state is State.PATCHED
    assert revert(patched) == text


def test_anchor_in_a_one_line_suite_is_patched() -> None:
    text = NMS.replace("        for id in torch.unique(idxs):\n", "        for id in torch.unique(idxs): scores_after_nms[mask[keep]] = dets[:, -1]\n        for id in []:\n")
    text = text.replace(f"            {ANCHOR}\n", "            pass\n")
    patched = apply(text)
    assert f"for id in torch.unique(idxs): {FIXED}  # mmcv-patcher" in patched
    assert revert(patched) == text


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
    assert plan.plan_revert(verdict, PATCH, gate.Release("mmcv", "2.1.0"), force=True).new_text is None


def test_anchor_twice_is_drifted_naming_both_lines() -> None:
    text = nms_with(f"{ANCHOR}\n            {ANCHOR}")
    verdict = assess(text)
    assert verdict.state is State.DRIFTED and not verdict.ok
    assert "found 2 times in batched_nms() (lines 18, 19); mmcv 2.1.0 has it once" in verdict.message and verdict.line == 18
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


# --- gating by release ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "distribution, version, expected",
    [
        ("mmcv", "1.3.3", gate.Gate.BELOW),
        ("mmcv", "1.0rc0", gate.Gate.BELOW),
        ("mmcv", "1.3.4", gate.Gate.AFFECTED),
        ("mmcv", "1.7.2", gate.Gate.AFFECTED),
        ("mmcv-full", "1.7.2", gate.Gate.AFFECTED),
        ("mmcv-full", "1.3.3", gate.Gate.BELOW),
        ("mmcv", "2.0.0", gate.Gate.AFFECTED),
        ("mmcv-lite", "2.2.0", gate.Gate.AFFECTED),
        ("mmcv", "2.1.0+cu118", gate.Gate.AFFECTED),
        ("mmcv", "2.2.0+cu121", gate.Gate.AFFECTED),
        ("mmcv", "2.2.0.post1", gate.Gate.OUTSIDE),
        ("mmcv", "2.2.0.dev0", gate.Gate.OUTSIDE),
        ("mmcv", "2.2.1", gate.Gate.OUTSIDE),
        ("mmcv", "2.0.0rc4", gate.Gate.OUTSIDE),
        # a pre-release of the first affected release was never checked: outside, not below
        ("mmcv", "1.3.4rc1", gate.Gate.OUTSIDE),
        ("mmcv", "1.3.4.dev0", gate.Gate.OUTSIDE),
        ("mmcv-full", "1.3.4a1+cu113", gate.Gate.OUTSIDE),
        ("mmcv", "1.3.3rc1", gate.Gate.BELOW),
        ("onedl-mmcv", "2.3.5", gate.Gate.AFFECTED),
        ("onedl-mmcv", "2.3.5.post1", gate.Gate.AFFECTED),
        ("onedl-mmcv", "0.1", gate.Gate.AFFECTED),
        ("onedl-mmcv", "2.3.6rc1", gate.Gate.OUTSIDE),
        ("onedl-mmcv", "2.3.6", gate.Gate.OUTSIDE),
        ("someone-elses-mmcv", "2.1.0", gate.Gate.OUTSIDE),
        (None, "2.1.0", gate.Gate.AFFECTED),
        ("mmcv", None, gate.Gate.OUTSIDE),
        ("mmcv", "not a version", gate.Gate.OUTSIDE),
        # PEP 440 equality: trailing zeros and leading zeros
        ("mmcv", "2.2", gate.Gate.AFFECTED),
        ("mmcv", "2.2.0.0", gate.Gate.AFFECTED),
        ("mmcv", "2.2.0.1", gate.Gate.OUTSIDE),
        ("mmcv", "1.3.4.0", gate.Gate.AFFECTED),
        ("mmcv", "1.3", gate.Gate.BELOW),
        ("mmcv", "01.07.02", gate.Gate.AFFECTED),
        ("mmcv", "10.0", gate.Gate.OUTSIDE),
        # other spellings PEP 440 normalises
        ("mmcv", " 2.1.0 ", gate.Gate.AFFECTED),
        ("mmcv", "v2.1.0", gate.Gate.AFFECTED),
        ("mmcv", "2.1.0.", gate.Gate.OUTSIDE),
        ("mmcv", "2.\u0661.0", gate.Gate.OUTSIDE),
    ],
)
def test_gate(distribution: Optional[str], version: Optional[str], expected: gate.Gate) -> None:
    assert gate.gate(PATCH, gate.Release(distribution, version))[0] is expected


def test_release_below_the_range_is_not_affected_even_with_the_statement() -> None:
    assert assess(NMS, version="1.3.3").state is State.NOT_AFFECTED


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
    reverted = plan.plan_revert(assess(patched, version="2.3.0"), PATCH, gate.Release("mmcv", "2.3.0"), force=False)
    assert reverted.state is State.UNVERIFIED and reverted.new_text == NMS


# --- our marker: identity and integrity -----------------------------------------------------------


def test_an_edit_elsewhere_keeps_our_edit_patched_and_revert_takes_out_only_ours() -> None:
    edited = apply(NMS).replace("import torch\n", "import torch  # edited by hand\n")
    verdict = assess(edited)
    assert verdict.state is State.PATCHED and verdict.line == ANCHOR_LINE and "other lines of the file were edited" in verdict.message
    reverted = plan.plan_revert(verdict, PATCH, gate.Release("mmcv", "2.1.0"), force=False)
    assert reverted.ok and "not the original" in reverted.message
    assert reverted.new_text == NMS.replace("import torch\n", "import torch  # edited by hand\n")


def test_a_marker_whose_insertion_was_taken_out_is_drifted_and_force_takes_out_the_marker() -> None:
    broken = apply(NMS).replace(INSERTED, "")
    verdict = assess(broken)
    assert verdict.state is State.DRIFTED and verdict.line == ANCHOR_LINE
    assert not plan.plan_revert(verdict, PATCH, gate.Release("mmcv", "2.1.0"), force=False).ok
    assert plan.plan_revert(verdict, PATCH, gate.Release("mmcv", "2.1.0"), force=True).new_text == NMS


def test_a_marked_line_copied_elsewhere_is_ours_too_and_revert_takes_out_both_insertions() -> None:
    patched = apply(NMS)
    marker_line = patched.splitlines(True)[ANCHOR_LINE - 1]
    verdict = assess(patched + marker_line.lstrip())
    assert verdict.state is State.PATCHED and "other lines of the file were edited" in verdict.message
    reverted = plan.plan_revert(verdict, PATCH, gate.Release("mmcv", "2.1.0"), force=False)
    assert reverted.new_text == NMS + ANCHOR + "\n"


# --- our edits, judged one statement at a time (the whole family of nms.py) -----------------------

FAMILY = fixtures.patches_of("ops/nms.py")
NMS_KERNEL = next(p for p in FAMILY if p.id == "nms-fp32-kernel")


def assess_family(text: str, patches: Sequence[Patch] = FAMILY) -> Dict[str, plan.Verdict]:
    """Each patch's verdict on ``text`` (mmcv 2.1.0), with every patch of nms.py as the family."""
    every = plan.assess_all(Source(text, "utf-8"), [(p, gate.Release("mmcv", "2.1.0")) for p in patches], need_text=True, family=FAMILY)
    return {p.id: verdict for p, verdict in zip(patches, every)}


def revert_family(text: str, *, force: bool) -> Tuple[bool, str]:
    """What revert of every patch gives, as the CLI runs it: each on the text the one after it left."""
    ok = True
    for patch in reversed(FAMILY):
        verdict = plan.plan_revert(assess_family(text, [patch])[patch.id], patch, gate.Release("mmcv", "2.1.0"), force=force)
        ok = ok and verdict.ok
        text = verdict.new_text if verdict.new_text is not None else text
    return ok, text


def test_one_edited_statement_flags_its_own_patch_only() -> None:
    edited = fixtures.patched().replace("dets[:, -1].to(scores_after_nms.dtype)", "dets[:, -1].to(scores_after_nms.dtype) * 1")
    states = {id: verdict.state for id, verdict in assess_family(edited).items()}
    assert states == {**dict.fromkeys(states, State.PATCHED), "batched-nms-amp-dtype": State.DRIFTED}
    assert assess_family(edited)["batched-nms-amp-dtype"].line == ANCHOR_LINE


def test_text_after_our_marker_makes_it_drifted_and_force_keeps_what_was_added() -> None:
    patched = fixtures.patched()
    lines = patched.splitlines(True)
    lines[ANCHOR_LINE - 1] = lines[ANCHOR_LINE - 1].replace("\n", "  # noqa: E501\n")
    edited = "".join(lines)
    verdict = assess_family(edited)["batched-nms-amp-dtype"]
    assert verdict.state is State.DRIFTED and verdict.line == ANCHOR_LINE
    assert revert_family(edited, force=False)[0] is False
    ok, reverted = revert_family(edited, force=True)
    assert ok and reverted == NMS.replace(ANCHOR + "\n", ANCHOR + "  # noqa: E501\n")


def test_one_insertion_undone_by_hand_flags_its_patch_and_force_gives_back_the_original() -> None:
    undone = fixtures.patched().replace("NMSop.apply(boxes.float(), scores.float(),", "NMSop.apply(boxes, scores.float(),")
    states = {id: verdict.state for id, verdict in assess_family(undone).items()}
    assert states == {**dict.fromkeys(states, State.PATCHED), "nms-fp32-kernel": State.DRIFTED}
    assert revert_family(undone, force=False)[0] is False
    assert revert_family(undone, force=True) == (True, NMS)


def test_an_intact_patch_beside_an_undone_one_reverts_on_its_own() -> None:
    undone = fixtures.patched().replace("NMSop.apply(boxes.float(), scores.float(),", "NMSop.apply(boxes, scores.float(),")
    verdict = assess_family(undone, [PATCH])[PATCH.id]
    reverted = plan.plan_revert(verdict, PATCH, gate.Release("mmcv", "2.1.0"), force=False)
    assert reverted.ok and reverted.new_text is not None
    assert ANCHOR + "\n" in reverted.new_text and "batched-nms-amp-dtype sha256" not in reverted.new_text


def test_the_search_for_our_insertions_is_bounded_whatever_the_file_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A marker whose statement lost its text, after many look-alikes on the same line."""
    decoys = " + ".join(["t.float()"] * 30)
    line = f"    x = NMSop.apply(boxes, scores, iou_threshold, offset, score_threshold, max_num) or ({decoys})"
    text = NMS.replace("    inds = NMSop.apply(boxes, scores, iou_threshold, offset, score_threshold, max_num)", line + "  " + ours.marker(NMS_KERNEL, "0" * 64))
    parsed: List[str] = []
    real = ours.dumps
    monkeypatch.setattr(ours, "dumps", lambda segment: parsed.append(segment) or real(segment))  # each placement tried parses once
    found = ours.find_ours(Source(text, "utf-8"), FAMILY)
    assert found is not None and not found.intact(NMS_KERNEL)
    assert len(parsed) <= ours.MAX_TRIES * len(NMS_KERNEL.edits) + 8


def test_look_alike_text_near_the_statements_never_changes_a_verdict() -> None:
    """A fork with debug lines that hold the very text a patch inserts, and no RECORD."""
    fork = NMS.replace("    inds = NMSop.apply(", "    print(boxes.float(), scores.float())\n    inds = NMSop.apply(").replace(
        "        scores_after_nms[mask[keep]]", "        print(dets[:, -1].to(scores_after_nms.dtype))\n        scores_after_nms[mask[keep]]"
    )
    together = assess_family(fork)
    for patch in FAMILY:
        alone = assess_family(fork, [patch])[patch.id]
        assert alone.state is together[patch.id].state is State.UNPATCHED, (patch.id, alone, together[patch.id])
    applied = plan.combined(Source(fork, "utf-8"), list(together.values()))
    assert revert_family(applied, force=False) == (True, fork)


# --- status without LibCST -------------------------------------------------------------------------


def test_the_state_of_a_release_file_or_a_patched_file_is_found_without_libcst() -> None:
    patched = apply(NMS)
    program = f"""
import sys
from mmcv_patcher import gate, plan
from mmcv_patcher.patches.batched_nms_amp_dtype import PATCH
from mmcv_patcher.source import Source, record_hash
nms = {NMS!r}
release = gate.Release("mmcv", "2.1.0", record_hash(nms.encode()))
first = plan.assess(Source(nms, "utf-8"), PATCH, release, need_text=False)
second = plan.assess(Source({patched!r}, "utf-8"), PATCH, release, need_text=False)
print(first.state.value, first.line, second.state.value, second.line, "libcst" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", program], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    assert out.split() == ["unpatched", str(ANCHOR_LINE), "patched", str(ANCHOR_LINE), "False"]


# --- encodings and newlines survive ---------------------------------------------------------


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
    verdict = plan.assess(source, PATCH, gate.Release("mmcv", "2.1.0"), need_text=True)
    assert verdict.state is State.UNPATCHED
    patched = source.encode(verdict.new_text)
    assert patched.count(INSERTED.encode()) == 1
    assert len(patched.splitlines()) == len(data.splitlines())
    again = decode(patched)
    undone = plan.assess(again, PATCH, gate.Release("mmcv", "2.1.0"), need_text=False)
    assert undone.state is State.PATCHED
    assert again.encode(undone.new_text) == data


def test_a_fix_libcst_cannot_make_exactly_is_refused_not_written(monkeypatch: pytest.MonkeyPatch) -> None:
    # Should the codemod ever write more than our insertions, the check that revert could
    # take them out again refuses the edit.
    from mmcv_patcher import codemod

    real = codemod.fixes

    def also_elsewhere(text: str, wanted: list) -> dict:
        return {id: replacements + ((0, 0, "# and more\n"),) for id, replacements in (real(text, wanted) or {}).items()}

    monkeypatch.setattr(codemod, "fixes", also_elsewhere)
    verdict = assess(NMS)
    assert verdict.state is State.DRIFTED and not verdict.ok and verdict.line == ANCHOR_LINE
    assert "without changing other bytes" in verdict.message
    assert plan.plan_apply(verdict, force=True).new_text is None


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


@pytest.mark.parametrize(
    "text, state, line",
    [
        pytest.param(ANCHOR_IN_NMS_TOO.replace(f"            {ANCHOR}\n", "            pass\n"), State.DRIFTED, 9, id="anchor-in-another-function"),
        pytest.param(NMS + "\n\n" + BATCHED, State.UNPATCHED, 45, id="two-definitions-both-with-it"),
        pytest.param(nms_with(f"keep = keep; {ANCHOR}"), State.UNPATCHED, ANCHOR_LINE, id="not-alone-on-its-line"),
        pytest.param(nms_with(f"{ANCHOR}  # a comment"), State.UNPATCHED, ANCHOR_LINE, id="comment-after-it"),
        pytest.param(nms_with("scores_after_nms[mask[keep]] = dets[:,\n                -1]"), State.UNPATCHED, ANCHOR_LINE, id="over-two-lines"),
    ],
)
def test_status_and_apply_see_the_same_state_and_line(text: str, state: State, line: int) -> None:
    status = assess(text, need_text=False)
    applying = assess(text, need_text=True)
    assert (status.state, status.line, status.message) == (applying.state, applying.line, applying.message) == (state, line, status.message)
    assert (status.new_text is None) and ((applying.new_text is not None) == (state is State.UNPATCHED))


def test_revert_checks_record_and_says_when_the_original_was_not_the_release() -> None:
    record = recorded(NMS)
    released = gate.Release("mmcv", "2.1.0", record)
    pristine = assess(apply(NMS), record=record, need_text=False)
    assert pristine.message == "patched by mmcv-patcher"
    assert plan.plan_revert(pristine, PATCH, released, force=False).message == "reverted to the original bytes"

    hand_edited = NMS.replace("import torch\n", "import torch  # edited before patching\n")
    patched = assess(apply(hand_edited), record=record, need_text=False)
    assert patched.state is State.PATCHED and "already differed from the release's RECORD" in patched.message
    reverted = plan.plan_revert(patched, PATCH, released, force=False)
    assert reverted.ok and reverted.new_text == hand_edited
    assert "differ from the release's RECORD" in reverted.message
    assert "pip install --force-reinstall --no-deps mmcv==2.1.0" in reverted.message


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_every_patch_at_once_is_what_one_after_another_gives(newline: str) -> None:
    # apply assesses all the patches of a file on its text as it is, and merges their
    # changes; fixtures.patched applies them one after another (the oracle).
    text = NMS.replace("\n", newline)
    family = fixtures.patches_of("ops/nms.py")
    release = gate.Release("mmcv", "2.1.0")
    every = plan.assess_all(Source(text, "utf-8"), [(patch, release) for patch in family], need_text=True, family=family)
    assert every == [plan.assess(Source(text, "utf-8"), patch, release, need_text=True, family=family) for patch in family]
    assert all(verdict.state is State.UNPATCHED for verdict in every)
    merged = plan.combined(Source(text, "utf-8"), every)
    assert merged == fixtures.patched(text)


def test_one_pass_tells_each_patch_its_own_state() -> None:
    # One patch already applied, one whose statement is missing, the rest unpatched: the
    # shared pass still gives each patch the verdict it gets alone.
    family = fixtures.patches_of("ops/nms.py")
    release = gate.Release("mmcv", "2.1.0")
    edited = NMS.replace("inds = NMSop.apply(boxes, scores, iou_threshold, offset,", "inds = NMSop.apply(boxes, scores, iou_threshold, 0,")
    text = plan.plan_apply(plan.assess(Source(edited, "utf-8"), family[0], release, need_text=True, family=family), force=False).new_text
    assert text is not None
    every = plan.assess_all(Source(text, "utf-8"), [(patch, release) for patch in family], need_text=True, family=family)
    assert every == [plan.assess(Source(text, "utf-8"), patch, release, need_text=True, family=family) for patch in family]
    states = {patch.id: verdict.state for patch, verdict in zip(family, every)}
    assert states[family[0].id] is State.PATCHED and states["nms-fp32-kernel"] is State.DRIFTED
    assert list(states.values()).count(State.UNPATCHED) == len(family) - 2
    # Their changes merged onto the patched file: what applying them one by one writes.
    unpatched = [(patch, verdict) for patch, verdict in zip(family, every) if verdict.state is State.UNPATCHED]
    one_by_one = text
    for patch, _ in unpatched:
        one_by_one = plan.plan_apply(plan.assess(Source(one_by_one, "utf-8"), patch, release, need_text=True, family=family), force=False).new_text or ""
    assert plan.combined(Source(text, "utf-8"), [verdict for _, verdict in unpatched]) == one_by_one != text


def test_a_statement_over_several_lines_is_named_by_its_first_line_in_every_state() -> None:
    # The marker ends the statement's last line; apply, status and revert all name its first.
    [patch] = [p for p in fixtures.patches_of("ops/nms.py") if p.id == "nms-fp32-kernel"]
    one_line = "inds = NMSop.apply(boxes, scores, iou_threshold, offset, score_threshold, max_num)"
    text = NMS.replace(one_line, "inds = NMSop.apply(boxes, scores, iou_threshold, offset,\n                       score_threshold, max_num)")
    first = lines_of(text, "inds = NMSop.apply(boxes, scores, iou_threshold, offset,")[0]
    release = gate.Release("mmcv", "2.1.0", recorded(text))
    scanned = plan.assess(Source(text, "utf-8"), patch, release, need_text=True)
    status = plan.assess(Source(text, "utf-8"), patch, release, need_text=False)
    assert scanned.state is status.state is State.UNPATCHED and scanned.line == status.line == first
    applied = plan.plan_apply(scanned, force=False)
    assert applied.line == first and applied.new_text is not None
    assert "# mmcv-patcher: nms-fp32-kernel" in applied.new_text.splitlines()[first]  # on the last line
    patched = plan.assess(Source(applied.new_text, "utf-8"), patch, release, need_text=False)
    assert patched.state is State.PATCHED and patched.line == first
    assert plan.plan_revert(patched, patch, release, force=False).line == first
