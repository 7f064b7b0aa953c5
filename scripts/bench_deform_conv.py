#!/usr/bin/env python3
"""What the deformable convolution patch costs a TOOD training step in fp32, call by call.

    python scripts/bench_deform_conv.py [--repeats 30] [--size 800x1333]

Wall time of whole steps (scripts/bench_step.py) varies more between processes than the 1%
target, so this measures the patch's cost where it is paid, in one process: one fp32
training step of mmdetection 3.3.0's TOOD (``tood/tood_r50_fpn_1x_coco.py``, random weights,
scripts/model_step.py) on the real mmcv 2.1.0 built with its CPU ops (cached) records every
call of ``DeformConv2dFunction`` it makes (its head's deformable sampling); then each call is
run again, forward and backward, with three classes taken in turn ``--repeats`` times: the
released one, the same released source defined a second time (its difference from the first
is what this measurement cannot resolve), and the class of the patched file (every patch
applied, read back, reverted: the venv stays as released). The patched outputs and gradients
must be bit-identical to the release's. It prints the calls per step, each class's time for
them (per call the fastest of the repeats, as :mod:`timeit` advises, summed), and each
difference from the release as a share of the step.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # this checkout, for scripts.model_step and scripts.releases
CONFIG = "tood/tood_r50_fpn_1x_coco.py"
FILE = "ops/deform_conv.py"
FUNCTION = "DeformConv2dFunction"


def defined(text: str, release: Any) -> Any:
    """``FUNCTION`` as ``text`` (a version of the file) defines it, in a copy of the released
    module's globals (the file itself cannot run twice: it registers its modules)."""
    tree = ast.parse(text)
    [node] = [each for each in tree.body if isinstance(each, ast.ClassDef) and each.name == FUNCTION]
    namespace = dict(vars(release))
    exec(compile(ast.Module(body=[node], type_ignores=[]), release.__file__, "exec"), namespace)
    return namespace[FUNCTION]


def run_call(function: Any, call: List[Tuple[Any, bool]]) -> Tuple[float, List[Any]]:
    """Seconds of one forward and backward of ``function`` on a recorded call (each argument
    with whether it required a gradient), and the output and gradients."""
    import torch

    inputs = [value.detach().requires_grad_(grad) if grad else value for value, grad in call]
    started = time.perf_counter()
    output = function.apply(*inputs)
    output.backward(torch.ones_like(output))
    seconds = time.perf_counter() - started
    return seconds, [output.detach()] + [value.grad for value, (_, grad) in zip(inputs, call) if grad]


def measure(size: Tuple[int, int], patched_file: Path, repeats: int) -> Dict[str, Any]:
    """The child's work, in the benchmark venv: record, then time the classes in turn."""
    import torch
    from mmcv.ops import deform_conv as release

    from scripts import model_step

    functions = {
        "release": getattr(release, FUNCTION),
        "release again": defined(Path(release.__file__).read_text(), release),
        "patched": defined(patched_file.read_text(), release),
    }
    calls: List[List[Tuple[Any, bool]]] = []
    forward = functions["release"].forward

    def recording(ctx: Any, *args: Any) -> Any:
        calls.append(
            [(a.detach().clone(), a.requires_grad) if isinstance(a, torch.Tensor) else (a, False) for a in args]
        )
        return forward(ctx, *args)

    model = model_step.build(CONFIG, None)
    model.train(True)
    data = model_step.batch(model, size, training=True, masks=False, box_type=None)
    functions["release"].forward = staticmethod(recording)
    model_step.train(model, data)
    functions["release"].forward = staticmethod(forward)
    started = time.perf_counter()
    model_step.train(model, data)
    step = time.perf_counter() - started
    names = list(functions)
    times: Dict[str, List[List[float]]] = {name: [[] for _ in calls] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            for index, call in enumerate(calls):
                times[name][index].append(run_call(functions[name], call)[0])
    for call in calls:
        released, patched = run_call(functions["release"], call)[1], run_call(functions["patched"], call)[1]
        if not all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(released, patched)):
            raise SystemExit("the patched class gave other outputs or gradients than the release in fp32")
    return {"calls": len(calls), "step": step, **{name: sum(map(min, times[name])) for name in names}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="runs of every call per class, taken in turn")
    parser.add_argument("--size", default="800x1333", help="HEIGHTxWIDTH of the image (default 800x1333)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # the patched file: run as the child
    args = parser.parse_args()
    height, width = (int(side) for side in args.size.split("x"))
    if args.child:
        print(json.dumps(measure((height, width), args.child, args.repeats)))
        return 0
    from scripts import releases, results

    with tempfile.TemporaryDirectory() as scratch:
        python = releases.torch_venv(Path(scratch) / "venv", releases.ops_wheel())
        found = subprocess.run(
            [str(python), "-c", "import mmcv, os; print(os.path.dirname(mmcv.__file__))"],
            stdout=subprocess.PIPE,
            universal_newlines=True,
            check=True,
            cwd=scratch,
        )
        source = Path(found.stdout.strip()) / FILE
        patched = Path(scratch) / "patched.py"
        for command in ("apply", "revert"):
            if releases.tool(python, command).returncode != 0:
                raise SystemExit(f"could not {command} the patches in the benchmark venv")
            if command == "apply":
                patched.write_text(source.read_text())
        done = subprocess.run(
            [str(python), __file__, "--child", str(patched), "--repeats", str(args.repeats), "--size", args.size],
            stdout=subprocess.PIPE,
            universal_newlines=True,
            env=dict(os.environ, PYTHONPATH=str(releases.mmdet_site())),
            check=True,
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows = []
    for name in ("release", "release again", "patched"):
        extra = result[name] - result["release"]
        rows.append([name, f"{result[name] * 1e3:.2f} ms", f"{extra * 1e3:+.3f} ms", f"{extra / result['step']:+.4%}"])
    about = (
        f"TOOD at {args.size} in fp32: {result['calls']} calls a step, a step {result['step']:.2f} s;"
        f" the fastest of {args.repeats} runs a call."
    )
    columns = ["class", "the calls of a step", "difference", "difference / step (target 1%)"]
    versions = {"mmdet": releases.MMDET.partition("==")[2], "mmcv": "2.1.0 (CPU ops)"}
    results.record("bench_deform_conv", sys.argv[1:], versions, [results.Table(about, columns, rows)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
