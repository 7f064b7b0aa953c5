"""Property: whatever the formatting of batched_nms, apply patches exactly the anchor or
refuses, and revert restores the exact bytes. Python's own ``ast`` is the oracle. And LibCST
given only the function's lines finds and writes exactly what it does given the whole file."""

from __future__ import annotations

import ast
import re
from typing import List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmcv_patcher import plan
from mmcv_patcher.model import Release, State
from mmcv_patcher.source import Source
from tests.fixtures import SEED

INDENT = " " * 12
space = st.sampled_from(["", " ", "  "])
#: breaks allowed inside brackets: a newline (with a comment, or not) and deeper indent
bracket_break = st.sampled_from(["", " ", "\n" + INDENT + "    ", "  # why\n" + INDENT + "    "])
DECOYS = [
    "pass",
    "scores = dets[:, -1]",
    "best = dets[:, -1]",
    "scores_after_nms[mask[keep]] = dets[:, 4]",
    "scores_after_nms[mask] = dets[:, -1]",
    "total_mask[mask[keep]] = True",
    "# scores_after_nms[mask[keep]] = dets[:, -1]",
    "",
]


@st.composite
def anchors(draw: st.DrawFn) -> str:

    def w() -> str:
        return draw(space)

    target = f"scores_after_nms[{w()}mask[{w()}keep{w()}]{w()}]"
    value = f"dets[{w()}:{w()},{draw(bracket_break)}-{w()}1{w()}]"
    if draw(st.booleans()):
        value = f"({draw(bracket_break)}{value}{w()})"
    equals = draw(st.sampled_from([" = ", "=", " =  ", " = \\\n" + INDENT + "    "]))
    statement = f"{target}{equals}{value}"
    if draw(st.booleans()):
        statement = f"total_mask[mask[keep]] = True;{w()}{statement}"
    if draw(st.booleans()):
        statement += draw(st.sampled_from(["  # write back", ";", "   ", "  #"]))
    return statement


@st.composite
def sources(draw: st.DrawFn) -> str:
    before = draw(st.lists(st.sampled_from(DECOYS), max_size=3))
    after = draw(st.lists(st.sampled_from(DECOYS), max_size=3))
    body = [*before, draw(anchors()), *after]
    lines = "".join(f"{INDENT}{line}\n" if line else "\n" for line in body)
    header = draw(st.sampled_from(["", "# -*- coding: utf-8 -*-\n", "import torch\n\n"]))
    return (
        f"{header}def batched_nms(boxes, scores, idxs, nms_cfg):\n"
        "    if boxes.shape[0] < 10000:\n"
        "        dets, keep = nms(boxes, scores)\n"
        "        scores = dets[:, -1]\n"
        "    else:\n"
        "        scores_after_nms = scores.new_zeros(scores.size())\n"
        "        for id in torch.unique(idxs):\n"
        f"{lines}"
        "    return boxes, scores\n"
    )


class _Unfix(ast.NodeTransformer):
    """Turns ``X.to(scores_after_nms.dtype)`` back into ``X``, counting where it did."""

    def __init__(self) -> None:
        self.undone: List[str] = []

    def visit_Assign(self, node: ast.Assign) -> ast.Assign:
        value = node.value
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and value.func.attr == "to"
            and ast.dump(value.args[0]) == ast.dump(ast.parse("scores_after_nms.dtype", mode="eval").body)
        ):
            self.undone.append(ast.dump(node.targets[0]))
            node.value = value.func.value
        return node


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(sources())
def test_apply_patches_exactly_the_anchor_or_refuses_and_revert_is_exact(text: str) -> None:
    release = Release("mmcv", "2.1.0")
    verdict = plan.assess(Source(text, "utf-8"), SEED, release, need_text=True)
    if verdict.state is State.DRIFTED:
        assert not verdict.ok and verdict.new_text is None  # refused, and says why
        assert "without changing other bytes" in verdict.message, verdict.message
        return
    assert verdict.state is State.UNPATCHED, verdict
    patched = verdict.new_text
    assert patched is not None

    unfix = _Unfix()
    restored = unfix.visit(ast.parse(patched))
    target = ast.parse("scores_after_nms[mask[keep]] = 0").body[0]
    assert isinstance(target, ast.Assign)
    assert unfix.undone == [ast.dump(target.targets[0])]
    assert ast.dump(restored) == ast.dump(ast.parse(text)), "only the anchor may change meaning"

    again = plan.assess(Source(patched, "utf-8"), SEED, release, need_text=False)
    assert again.state is State.PATCHED and again.new_text == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(
    sources(),
    st.sampled_from(["", "@torch.no_grad()\n", "@a\n# between\n@b(\n    1)\n"]),
    st.sampled_from(
        ["", "\n\nx = 1\n", "\n# trailing comment\n", "\n\n@decorator\ndef other():\n    return 2", "\r\n"]
    ),
)
def test_the_edit_is_local_whatever_surrounds_the_function(text: str, decorators: str, tail: str) -> None:
    """Decorators above the function and code after it change nothing in what apply does
    to the function (but the hash the marker keeps, which is of the whole file)."""
    release = Release("mmcv", "2.1.0")
    alone = plan.assess(Source(text, "utf-8"), SEED, release, need_text=True)
    surrounded = text.replace("def batched_nms", decorators + "def batched_nms", 1) + tail
    verdict = plan.assess(Source(surrounded, "utf-8"), SEED, release, need_text=True)
    assert verdict.state is alone.state
    if alone.new_text is not None:
        assert verdict.new_text is not None
        expected = alone.new_text.replace("def batched_nms", decorators + "def batched_nms", 1) + tail
        assert _without_hashes(verdict.new_text) == _without_hashes(expected)


def _without_hashes(text: str) -> str:
    return re.sub("sha256=[0-9a-f]{64}", "sha256=", text)
