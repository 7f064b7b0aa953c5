"""codemod: LibCST makes each fix keeping the statement's own formatting, or refuses."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from mmcv_patcher import codemod, find, plan
from mmcv_patcher.model import Edit, Release, State
from mmcv_patcher.source import Source
from tests import fixtures
from tests.fixtures import (
    ANCHOR_LINE,
    INSERTED,
    NMS,
    SEED,
    apply,
    assess,
    nms_with,
    revert,
)

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


def test_a_fix_libcst_cannot_make_exactly_is_refused_not_written(monkeypatch: pytest.MonkeyPatch) -> None:
    # Should the codemod ever write more than our insertions, the check that revert could
    # take them out again refuses the edit.
    from mmcv_patcher import codemod

    real = codemod.fixes

    def also_elsewhere(text: str, wanted: List[Any]) -> Dict[str, Any]:
        return {id: replacements + ((0, 0, "# and more\n"),) for id, replacements in (real(text, wanted) or {}).items()}

    monkeypatch.setattr(codemod, "fixes", also_elsewhere)
    verdict = assess(NMS)
    assert verdict.state is State.DRIFTED and not verdict.ok and verdict.line == ANCHOR_LINE
    assert "without changing other bytes" in verdict.message
    assert plan.plan_apply(verdict, force=True).new_text is None


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_every_patch_at_once_is_what_one_after_another_gives(newline: str) -> None:
    # apply assesses all the patches of a file on its text as it is, and merges their
    # changes; fixtures.patched applies them one after another (the oracle).
    text = NMS.replace("\n", newline)
    family = fixtures.patches_of("ops/nms.py")
    release = Release("mmcv", "2.1.0")
    every = plan.assess_all(
        Source(text, "utf-8"), [(patch, release) for patch in family], need_text=True, family=family
    )
    assert every == [
        plan.assess(Source(text, "utf-8"), patch, release, need_text=True, family=family) for patch in family
    ]
    assert all(verdict.state is State.UNPATCHED for verdict in every)
    merged = plan.combined(Source(text, "utf-8"), every)
    assert merged == fixtures.patched(text)


def test_fixes_keeps_the_statements_own_formatting_and_ends_its_line_with_the_marker() -> None:
    text = "def batched_nms(b):\n    scores_after_nms[ mask[keep] ] = (dets[:,\n        -1])  # mine\n"
    found = find.find(text, [SEED])
    assert not isinstance(found, find.ParseFailure)
    made = codemod.fixes(text, [(SEED, found[SEED.id].anchors, "# MARK")])
    assert made is not None
    [(start, end, fixed), (at, _, marker)] = made[SEED.id]
    assert fixed == "scores_after_nms[ mask[keep] ] = (dets[:,\n        -1]).to(scores_after_nms.dtype)"
    assert text[at:].startswith("\n") and text[:at].endswith("# mine") and marker == "  # MARK"


def test_fixes_refuses_a_statement_shaped_other_than_its_anchor() -> None:
    text = "def batched_nms(b):\n    scores_after_nms[mask[keep]] = dets[:, -1]\n"
    located = find.find(text, [SEED])
    assert not isinstance(located, find.ParseFailure)
    [statement] = located[SEED.id].anchors
    wrong = statement._replace(end=statement.end - 3)  # "dets[:, " cut short: no statement LibCST reads alone
    assert codemod.fixes(text, [(SEED, [wrong], "# MARK")]) is None


IMPORTS = {
    "canonical": ("import torch.nn as nn\n", "import torch.nn as nn, torch\n"),
    "its-own-spacing-and-comment": (
        "import  torch.nn  as  nn  # layers\n",
        "import  torch.nn  as  nn, torch  # layers\n",
    ),
    "after-a-semicolon": ("import os; import torch.nn as nn\n", "import os; import torch.nn as nn, torch\n"),
}


@pytest.mark.parametrize("before, after", IMPORTS.values(), ids=IMPORTS.keys())
def test_a_fix_that_adds_to_a_list_keeps_the_statements_own_formatting(before: str, after: str) -> None:
    patch = fixtures.registered("roi-align-rotated-fp32-kernel")
    text = before + "\n\nclass RoIAlignRotated(nn.Module):\n    def forward(self, input, rois):\n        pass\n"
    found = find.find(text, [patch])
    assert not isinstance(found, find.ParseFailure)
    made = codemod.fixes(text, [(patch, found[patch.id].anchors, "# MARK")])
    assert made is not None
    [(start, end, fixed), _] = made[patch.id]
    assert text[:start] + fixed + text[end:] == after + text[len(before) :]


def test_a_fix_that_drops_one_of_the_anchors_children_is_refused() -> None:
    edit = Edit("import a, b", "import a, c, d", binds="c")
    patch = fixtures.SEED._replace(id="drops-a-child", edits=(edit,))
    text = "import a, b\n\n\ndef batched_nms(boxes):\n    pass\n"
    found = find.find(text, [patch])
    assert not isinstance(found, find.ParseFailure) and len(found[patch.id].anchors) == 1
    assert codemod.fixes(text, [(patch, found[patch.id].anchors, "# MARK")]) is None
