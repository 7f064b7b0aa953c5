"""Every registered patch: well-formed data, and its own named examples hold."""

from __future__ import annotations

import ast
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List, Set, Tuple

import pytest
from packaging.version import Version

from mmcv_patcher import plan, probe, ranges, registry
from mmcv_patcher.model import PACKAGES, Affected, Edit, Example, Patch, Release, State, Tensor, Untouched
from mmcv_patcher.source import Source, sha256_hex
from tests.fixtures import make_tree, marked, registered, tool

PATCHES = registry.all_patches()
ROOT = Path(__file__).resolve().parents[1]


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


def test_the_binary_cross_entropy_fix_wraps_the_function_named_and_nothing_else() -> None:
    """``patches/_bce_fp32.py``: a ``(`` before ``F.binary_cross_entropy``, the CUDA-autocast
    choice after it, in a call and in an assignment alike; a statement that names it not
    once, or names only the loss on logits, is refused."""
    from patches._bce_fp32 import bce_fp32

    call, assignment = bce_fp32("loss = F.binary_cross_entropy(p, t)"), bce_fp32("f = F.binary_cross_entropy")
    assert call.insertions[0] == assignment.insertions[0] == "("
    assert call.insertions[1] == assignment.insertions[1]
    assert call.insertions[1].startswith(" if not torch.is_autocast_enabled() else lambda *a, **k:")
    for refused in (
        "loss = F.binary_cross_entropy_with_logits(p, t)",
        "f, g = F.binary_cross_entropy, F.binary_cross_entropy",
    ):
        with pytest.raises(ValueError):
            bce_fp32(refused)


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.id)
def test_patch_is_well_formed(patch: Patch) -> None:
    assert "\n" not in patch.summary and len(patch.summary) <= 100 and patch.error and "|" not in patch.error
    for distribution, known in patch.affected.items():
        assert distribution == distribution.lower() and known
        ends: List[Version] = []
        for each in known:
            assert (each.last_affected is None) != (each.fixed is None), "say where the known range ends"
            end = Version(each.last_affected or each.fixed or "")
            assert Version(each.introduced) <= end and all(Version(each.introduced) > earlier for earlier in ends), (
                "ranges in order, apart"
            )
            ends.append(end)
            assert each.counts == () or (len(each.counts) == len(patch.edits) and sum(each.counts) >= 1)
    assert not patch.file.startswith("/") and ".." not in patch.file.split("/")
    assert patch.examples and patch.untouched, (
        "document the codemod with examples it patches and inputs it leaves alone"
    )
    assert all(example.why for example in patch.examples) and all(look_alike.why for look_alike in patch.untouched)
    for edit in patch.edits:
        if edit.binds is not None:
            assert edit.function is None, "an import a fix needs is the module's, in no definition"
            assert edit.binds in _imported(edit.fix) - _imported(edit.anchor), "the fix is an import that binds it"


def _imported(statement: str) -> Set[str]:
    """The names an import statement binds (none for any other statement)."""
    node = ast.parse(statement).body[0]
    if not isinstance(node, (ast.Import, ast.ImportFrom)):
        return set()
    return {alias.asname or alias.name.split(".")[0] for alias in node.names}


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.id)
def test_verify_case_is_data_the_probe_reads(patch: Patch) -> None:
    """JSON as it is, its tensors of a kind the probe makes, its comparison one it knows."""
    case = patch.case.as_json()
    assert json.loads(json.dumps(case)) == case
    assert case["compare"] in probe.COMPARE
    assert any(isinstance(arg, Tensor) and arg.amp for arg in patch.case.args), (
        "a case gives mmcv something in the AMP dtype"
    )
    assert {arg.kind for arg in patch.case.args if isinstance(arg, Tensor)} <= set(probe.KINDS)
    assert set(patch.case.devices) <= {"cpu", "cuda"}
    assert "{amp}" in patch.case.gave


def _releases(patch: Patch) -> List[Release]:
    """One release at the end of every known range of the patch."""
    return [Release(d, each.last_affected or each.introduced) for d, known in patch.affected.items() for each in known]


def test_an_examples_markers_go_at_the_end_of_each_fixed_statement() -> None:
    patch = registered("nms-fp32-kernel")
    before = "def nms(boxes, scores, iou_threshold, offset=0):\n    inds = NMSop.apply(boxes, scores,\n                       iou_threshold, offset)\n    return inds\n"
    after = before.replace("apply(boxes, scores,", "apply(boxes.float(), scores.float(),")
    mark = f"  # mmcv-patcher: nms-fp32-kernel sha256={sha256_hex(before.encode())}"
    assert marked(patch, Example(before, after, "over two lines")) == after.replace("offset)\n", f"offset){mark}\n")


@pytest.mark.parametrize(
    "patch, example", [pytest.param(p, e, id=f"{p.id}: {e.why}") for p in PATCHES for e in p.examples]
)
def test_examples_apply_and_revert(patch: Patch, example: Example) -> None:
    expected = marked(patch, example)
    findings = [(r, plan.assess(_source(example.before), patch, r, need_text=True)) for r in _releases(patch)]
    release, finding = next((r, f) for r, f in findings if f.state is State.UNPATCHED)  # a release shaped like it
    assert plan.plan_apply(finding, force=False).new_text == expected
    patched = plan.assess(_source(expected), patch, release, need_text=False)
    assert patched.state is State.PATCHED and patched.new_text == example.before


@pytest.mark.parametrize(
    "patch, look_alike", [pytest.param(p, u, id=f"{p.id}: {u.why}") for p in PATCHES for u in p.untouched]
)
def test_untouched_sources_are_left_as_they_are(patch: Patch, look_alike: Untouched) -> None:
    for release in _releases(patch):
        action = plan.plan_apply(plan.assess(_source(look_alike.source), patch, release, need_text=True), force=True)
        assert action.new_text is None and action.state is not State.PATCHED, (release, action)


def _source(text: str) -> Source:
    return Source(text, "utf-8")


def _patch(id: str, file: str = "ops/nms.py") -> Patch:
    return PATCHES[0]._replace(id=id, file=file)


def test_select_keeps_registry_order_whatever_order_ids_come_in() -> None:
    patches = (_patch("a"), _patch("b", "ops/other.py"), _patch("c"))
    assert [p.id for p in registry.select(patches, ["c", "a"])] == ["a", "c"]
    assert [p.id for p in registry.select(patches, None)] == ["a", "b", "c"]
    assert [p.id for p in registry.select(patches, None, only_file="ops/other.py")] == ["b"]


def test_a_release_between_two_ranges_is_outside_and_each_range_has_its_own_counts() -> None:
    patch = _patch("x")._replace(
        affected={"mmcv": (Affected("1.0", "1.2", counts=(1,)), Affected("1.4", "2.0", counts=(1,)))}
    )
    assert ranges.standing(patch, Release("mmcv", "1.3"))[0] is ranges.Standing.OUTSIDE
    assert ranges.standing(patch, Release("mmcv", "0.9"))[0] is ranges.Standing.BELOW
    assert ranges.standing(patch, Release("mmcv", "1.4.1")) == (ranges.Standing.AFFECTED, patch.affected["mmcv"][1])


def test_registry_discovers_modules_by_package_then_in_name_order() -> None:
    import pkgutil

    package = importlib.import_module("mmcv_patcher.patches")
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))
    by_package = [name for each in PACKAGES for name in names if registered(name.replace("_", "-")).package == each]
    assert [p.id.replace("-", "_") for p in PATCHES] == by_package


# --- a new patch is one module -------------------------------------------------------------------

#: A patch module as a contributor would write it, for a file and a method no patch touches.
NEW_PATCH = '''
from mmcv_patcher.model import Affected, Case, Edit, Example, Patch, Tensor, Untouched, per_distribution

PATCH = Patch(
    id="box-iou-example",
    summary="an example: a patch for another file, inside a method",
    affected=per_distribution((Affected("1.0.0", "2.2.0"),), (Affected("2.3.0", "2.3.6"),)),
    file="ops/box_iou_example.py",
    function="BoxIoU.compute",
    edits=(Edit("return ext_module.box_iou(bboxes1, bboxes2, aligned)", "return ext_module.box_iou(bboxes1.float(), bboxes2.float(), aligned)"),),
    error="`RuntimeError: expected scalar type Float but found Half`",
    case=Case(op="BoxIoU", init=(), args=(Tensor("boxes", 100, amp=True), Tensor("boxes", 100)), gave="BoxIoU: 100 {amp} boxes", compare="values"),
    examples=(
        Example.of(
            """
            class BoxIoU:
                def compute(self, bboxes1, bboxes2, aligned=False):
                    return ext_module.box_iou(bboxes1, bboxes2, aligned)
            """,
            """
            class BoxIoU:
                def compute(self, bboxes1, bboxes2, aligned=False):
                    return ext_module.box_iou(bboxes1.float(), bboxes2.float(), aligned)
            """,
            why="as released",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def compute(bboxes1, bboxes2, aligned=False):
                return ext_module.box_iou(bboxes1, bboxes2, aligned)
            """,
            why="a module-level function of the method's name",
        ),
    ),
)
'''


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of this checkout's package, patches, scripts and generated files."""
    copy = tmp_path / "checkout"
    for name in ("mmcv_patcher", "patches", "scripts", "docs"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("README.md", "setup.cfg", "CONTRIBUTING.md"):
        shutil.copy(ROOT / name, copy / name)
    return copy


def _document(checkout: Path, *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, str(checkout / "scripts" / "document.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )


def test_a_new_patch_module_is_the_whole_change(checkout: Path, tmp_path: Path) -> None:
    """Added to a copy of the tree: its docs are generated, and the registry, status, apply
    and revert take it from its module alone."""
    (checkout / "patches" / "box_iou_example.py").write_text(NEW_PATCH)
    stale = _document(checkout, "--check")
    assert (
        stale.returncode == 1
        and "README.md, docs/patches.md, setup.cfg, mmcv_patcher/__init__.py: not what the registry" in stale.stderr
    )
    assert _document(checkout).returncode == 0 and _document(checkout, "--check").returncode == 0
    page = (checkout / "docs" / "patches.md").read_text()
    assert "| `box-iou-example` | `mmcv/ops/box_iou_example.py`, `BoxIoU.compute` |" in page
    assert "BoxIoU" in (checkout / "setup.cfg").read_text()

    make_tree(tmp_path / "site", distribution="mmcv")
    example = tmp_path / "site" / "mmcv" / "ops" / "box_iou_example.py"
    before = textwrap.dedent(NEW_PATCH.split('"""')[1]).lstrip("\n")
    example.write_text(before)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))}
    status = json.loads(tool("status", "--json", "--path", str(tmp_path / "site"), env=env).stdout)
    assert {p["id"]: p["state"] for p in status["patches"]}["box-iou-example"] == "unpatched"
    assert tool("apply", "--path", str(tmp_path / "site"), env=env).returncode == 0
    assert "bboxes1.float(), bboxes2.float()" in example.read_text()
    assert tool("revert", "--path", str(tmp_path / "site"), env=env).returncode == 0
    assert example.read_text() == before
    assert "BoxIoU" in tool("--help", env=env).stdout


#: A patch of each kind the engine takes, by the module that declares it: a statement edit, a
#: method of a class, an autograd Function's forward and backward, a module-level import.
KINDS = {
    "a-statement": "nms_fp32_kernel",
    "a-method": "roi_align_fp32_kernel",
    "forward-and-backward": "deform_conv_fp32_kernel",
    "a-module-level-import": "roi_align_rotated_fp32_kernel",
    "the-seed": "batched_nms_amp_dtype",
    "a-patch-of-mmdet": "vfnet_iou_targets_amp_dtype",
}
#: The seed's statement is the engine's worked example (tests/fixtures.SEED) and the patch the
#: CLI tests name most: with its module gone, the whole fast suite runs, not only the files
#: that read the registry.
WHOLE_FAST_SUITE = "batched_nms_amp_dtype"


def _pytest(checkout: Path, *args: str) -> "subprocess.CompletedProcess[str]":
    """pytest run in ``checkout`` on its own package, also where its tests run the CLI elsewhere."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=str(checkout),
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
    )


@pytest.mark.parametrize("module", KINDS.values(), ids=KINDS.keys())
def test_removing_a_patch_module_and_regenerating_the_docs_leaves_every_suite_green(
    checkout: Path, module: str
) -> None:
    """The module is the patch: with it gone, the docs regenerate, every test module collects
    (the e2e and release suites included, which then neither run nor name it), and the suites
    that read the registry pass."""
    shutil.copytree(ROOT / "tests", checkout / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    gone = registered(module.replace("_", "-")).id
    (checkout / "patches" / f"{module}.py").unlink()
    assert _document(checkout).returncode == 0 and _document(checkout, "--check").returncode == 0
    assert f"`{gone}`" not in (checkout / "docs" / "patches.md").read_text()
    collected = _pytest(checkout, "--collect-only", "tests")
    assert collected.returncode == 0, collected.stdout[-3000:]
    assert f"[{gone}" not in collected.stdout and gone in (ROOT / "docs" / "patches.md").read_text()
    fast = "not release and not e2e and not interpreters and not package and not faults and not concurrency"
    registry_driven = ["tests/test_patches.py", "tests/test_find.py", "tests/test_ours.py", "tests/test_plan.py"]
    files = ["tests"] if module == WHOLE_FAST_SUITE else registry_driven
    ran = _pytest(checkout, "-x", "-m", fast, "-k", "not removing_a_patch_module", *files)
    assert ran.returncode == 0, ran.stdout[-3000:]


def test_a_missing_row_of_the_table_of_patches_fails_the_docs_check(checkout: Path) -> None:
    page = checkout / "docs" / "patches.md"
    page.write_text(
        "".join(line for line in page.read_text().splitlines(True) if not line.startswith(f"| `{PATCHES[-1].id}`"))
    )
    stale = _document(checkout, "--check")
    assert stale.returncode == 1 and f"+| `{PATCHES[-1].id}`" in stale.stdout


def test_the_generated_docs_are_what_the_registry_says() -> None:
    done = _document(ROOT, "--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_help_names_every_op_the_registry_fixes() -> None:
    shown = " ".join(tool("--help").stdout.split())
    assert all(op in shown for op in registry.ops(PATCHES)) and registry.description() in shown


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(edit, id=f"{patch.id}-{index}")
        for patch in PATCHES
        for index, edit in enumerate(patch.edits)
        if edit.was
    ],
)
def test_each_earlier_fix_is_its_anchor_with_insertions(edit: Edit) -> None:
    for earlier in edit.was:
        assert Edit(edit.anchor, earlier).insertions, "an earlier fix is the released statement with text inserted"
        assert earlier != edit.fix
