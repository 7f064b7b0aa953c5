#!/usr/bin/env python3
"""Time one step of a real detector with the release and with every patch applied.

    python scripts/bench_step.py [--rounds 3] [--steps 3] [--modes predict train] [--models faster-rcnn tood centernet vfnet]

mmdetection 3.3.0's own models (random weights, scripts/model_step.py), on the real mmcv
2.1.0 built with its CPU ops (cached; the first run builds it), each through patched code:
the seed's Faster R-CNN (``faster-rcnn_r50_fpn_1x_coco.py``) on one image of 2666x1600; TOOD
(``tood_r50_fpn_1x_coco.py``), whose head runs mmcv's deformable convolution, on one of
1333x800; CenterNet (``centernet_r18-dcnv2_8xb16-crop512-140e_coco.py``), its modulated
one, at 512x512; and VFNet (``vfnet_r50_fpn_1x_coco.py``), whose head's loss is patched in
mmdet, at 1333x800. Two kinds of step:

    predict   inference with the COCO test cfg (80 classes): the RPN's batched_nms over
              5 FPN levels x 1000 proposals and the box head's per-class NMS
    train     a training step: forward with mode='loss', and backward

each in three variants:

    release fp32   the released files, fp32: the reference
    patched fp32   every patch applied, the same fp32 inputs (target: within 1%, the noise
                   of one step)
    patched bf16   every patch applied, under bf16 CPU autocast (the release crashes here),
                   and the copies the patches make in it: the casts on the lines they
                   patched, forward and backward, timed in one more step of each process
                   (scripts/model_step.py --copies), as a share of the median bf16 step
                   (target: at most 2%, so the speed-up AMP is turned on for is kept)

Each variant runs in its own process (a patch is a file on disk: the venv is patched and
reverted between them), ``--rounds`` processes per variant, taken in turn so that drift hits
every variant alike; each process builds the model once, then times ``--steps`` steps, of
which the first warms up and is left out. It prints the median step and its ratio to the
reference. The venv goes away afterwards, so nothing stays patched.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # this checkout, for scripts.releases

from scripts import releases, results  # noqa: E402  (the same cached builds the tests use)

STEP = REPOSITORY / "scripts" / "model_step.py"
#: name -> (config, input size as height x width)
MODELS = {
    "faster-rcnn": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "1600x2666"),
    "tood": ("tood/tood_r50_fpn_1x_coco.py", "800x1333"),
    "centernet": ("centernet/centernet_r18-dcnv2_8xb16-crop512-140e_coco.py", "512x512"),
    "vfnet": ("vfnet/vfnet_r50_fpn_1x_coco.py", "800x1333"),
}
#: The share of a patched bf16 step its patches' copies may take (issue: the AMP speed-up kept)
COPIES_TARGET = 0.02
#: variant -> (patched?, dtype)
VARIANTS = {"release fp32": (False, "fp32"), "patched fp32": (True, "fp32"), "patched bf16": (True, "bf16")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=3, help="processes per variant, taken in turn")
    parser.add_argument("--steps", type=int, default=3, help="steps per process; the first warms up")
    parser.add_argument("--modes", nargs="+", choices=("predict", "train"), default=["predict", "train"])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    args = parser.parse_args()
    steps = [(model, mode) for model in args.models for mode in args.modes]
    times: Dict[Tuple[str, str], Dict[str, List[float]]] = {key: {variant: [] for variant in VARIANTS} for key in steps}
    copies: Dict[Tuple[str, str], List[float]] = {key: [] for key in steps}
    with tempfile.TemporaryDirectory() as scratch:
        python = releases.detector_venv(Path(scratch) / "venv")  # apply patches its mmdet too
        for round_ in range(args.rounds):
            order = list(VARIANTS)[round_ % len(VARIANTS) :] + list(VARIANTS)[: round_ % len(VARIANTS)]
            for variant in order:
                patched, dtype = VARIANTS[variant]
                if releases.tool(python, "apply" if patched else "revert").returncode != 0:
                    raise SystemExit(f"could not {'apply' if patched else 'revert'} the patches in the benchmark venv")
                for model, mode in steps:
                    config, size = MODELS[model]
                    # patched bf16: one more round, not timed, times the copies made on patched lines
                    counted = ["--copies"] if variant == "patched bf16" else []
                    done = subprocess.run(
                        [
                            str(python),
                            str(STEP),
                            config,
                            mode,
                            dtype,
                            "--size",
                            size,
                            "--rounds",
                            str(args.steps),
                            *counted,
                        ],
                        stdout=subprocess.PIPE,
                        universal_newlines=True,
                        check=True,
                    )
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    if "error" in result:
                        raise SystemExit(f"{variant} {model} {mode}: {result['error']}")
                    times[(model, mode)][variant].extend(result["seconds"][1:])
                    if counted:
                        copies[(model, mode)].append(result["copies"]["seconds"])
        versions = subprocess.run(
            [
                str(python),
                "-c",
                "import torch, mmcv; print(torch.__version__, mmcv.__version__, torch.get_num_threads())",
            ],
            stdout=subprocess.PIPE,
            universal_newlines=True,
            check=True,
        ).stdout.split()
    rows = []
    for (model, mode), by_variant in times.items():
        medians = {variant: statistics.median(values) for variant, values in by_variant.items()}
        base = medians["release fp32"]
        fp32, bf16 = medians["patched fp32"] / base, medians["patched bf16"] / base
        copied = statistics.median(copies[(model, mode)])
        share = copied / medians["patched bf16"]
        rows.append(
            [
                model,
                mode,
                f"{base:.2f} s (1.000)",
                f"{medians['patched fp32']:.2f} s ({fp32:.3f}{'' if fp32 <= 1.01 else ', missed 1%'})",
                f"{medians['patched bf16']:.2f} s ({bf16:.3f})",
                f"{copied * 1000:.1f} ms ({share:.2%}{'' if share <= COPIES_TARGET else ', missed 2%'})",
            ]
        )
    about = (
        f"The median step of {args.rounds} processes x {args.steps - 1} timed steps a variant, processes"
        f" taken in turn; {versions[2]} torch threads."
    )
    columns = [
        "model",
        "step",
        "release, fp32",
        "every patch, fp32 (target 1%)",
        "every patch, bf16 autocast",
        "its patches' copies, bf16 (share of the step; target 2%)",
    ]
    found = {"python": platform.python_version(), "torch": versions[0], "mmcv": f"{versions[1]} (CPU ops)"}
    found["mmdet"] = releases.MMDET.partition("==")[2]
    results.record("bench_step", sys.argv[1:], found, [results.Table(about, columns, rows)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
