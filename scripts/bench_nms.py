#!/usr/bin/env python3
"""Time mmcv's real batched_nms under the fixes users choose between.

    python scripts/bench_nms.py [--rounds 40] [--boxes 10000 50000] [--classes 3 80]

Sets up a throwaway venv with mmcv 2.1.0 built with its CPU ops (cached; the first run
builds it, about 10 minutes), applies the patch there with the CLI, and then measures, in
one process and round-robin so drift hits every variant alike:

    fp32          scores in fp32 (AMP off), default split_thr: the reference
    fp16+patch    fp16 scores, default split_thr, with this patch
    fp16+no-split fp16 scores, split_thr raised so the batch never splits (the workaround;
                  many times slower, so timed for --workaround-rounds only)

with 3 class ids (what `verify` and the issue's check use) and with COCO's 80, where the
per-class cost of AMP's fp16 scores shows. It prints the median wall time of each and its
ratio to fp32, then where the fp16 path's extra time goes per class.

Then the patch pack: the released nms.py, the one with every patch applied and the one
with every patch but batched-nms-amp-dtype are loaded side by side in one process (as
mmcv.ops submodules), and nms, soft_nms and batched_nms with 80 classes are timed
round-robin at 10k and 50k boxes, each row for --pack-seconds (at least --pack-rounds rounds):

    released fp32   the release, fp32 inputs: the reference
    patched fp32    every patch applied, fp32 inputs (target: within 1% of the reference)
    but the .to()   batched_nms only: every patch but batched-nms-amp-dtype, fp32 inputs;
                    what its `.to(scores_after_nms.dtype)` costs shows against the row before
    patched AMP     every patch applied, AMP's inputs (fp16 boxes and scores; for soft_nms
                    fp32 boxes, fp16 scores), which crash or go wrong unpatched (target:
                    within 5% of the reference)
    patched bf16    the same with bf16 (autocast's other dtype, and CPU autocast's only one)

The venv goes away afterwards, so nothing stays patched.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # this checkout, for scripts.releases

from scripts import releases, results  # noqa: E402  (the same cached builds the tests use)

MEASURE = r"""
import json, statistics, sys, time, torch, mmcv
from mmcv.ops import batched_nms, nms
rounds, workaround_rounds = int(sys.argv[1]), int(sys.argv[2])
class_counts = [int(n) for n in sys.argv[3].split(",")]
sizes = [int(n) for n in sys.argv[4].split(",")]
results = {"torch": torch.__version__, "mmcv": mmcv.__version__, "threads": torch.get_num_threads(), "rows": []}

def inputs(n, classes):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g) * 1333
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 200 + 1], 1)
    half = torch.rand(n, generator=g).half()
    return boxes, half, torch.randint(0, classes, (n,), generator=g)

for classes in class_counts:
    for n in sizes:
        boxes, half, idxs = inputs(n, classes)
        variants = {
            "fp32": (half.float(), dict(type="nms", iou_threshold=0.5)),
            "fp16+patch": (half, dict(type="nms", iou_threshold=0.5)),
            "fp16+no-split": (half, dict(type="nms", iou_threshold=0.5, split_thr=10**9)),
        }
        times = {name: [] for name in variants}
        names = list(variants)
        for r in range(rounds + 3):
            for name in names[r % 3:] + names[:r % 3]:
                if name == "fp16+no-split" and r >= workaround_rounds + 3:
                    continue  # many times slower; a few rounds place it well enough
                scores, cfg = variants[name]
                start = time.perf_counter()
                batched_nms(boxes, scores, idxs, dict(cfg))
                elapsed = time.perf_counter() - start
                if r >= 3:  # warm-up rounds are not counted
                    times[name].append(elapsed)
        medians = {name: statistics.median(t) for name, t in times.items()}
        results["rows"].append({"classes": classes, "boxes": n, "medians": medians})

def per_call(f, repeat=2000):
    samples = []
    for _ in range(repeat):
        start = time.perf_counter(); f(); samples.append(time.perf_counter() - start)
    return statistics.median(samples)

# Where the fp16 path's extra time goes, per class, for the most classes and fewest boxes.
boxes, half, idxs = inputs(sizes[0], class_counts[-1])
mask = (idxs == 0).nonzero().view(-1)
dets, _ = nms(boxes[mask], half[mask].float(), 0.5)
results["per_class"] = {
    "classes": class_counts[-1],
    "boxes": int(mask.numel()),
    "nms_fp32": per_call(lambda: nms(boxes[mask], half[mask].float(), 0.5)),
    "nms_fp16": per_call(lambda: nms(boxes[mask], half[mask], 0.5)),
    "cast": per_call(lambda: dets[:, -1].to(torch.float16)),
}
print(json.dumps(results))
"""

MEASURE_PACK = r"""
import importlib.util, json, statistics, sys, time, torch
import mmcv.ops

def load(name, path):
    spec = importlib.util.spec_from_file_location("mmcv.ops." + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

released, patched, but_to = (load("_bench_" + name, path) for name, path in zip(("released", "patched", "but_to"), sys.argv[1:4]))
seconds, min_rounds, sizes = float(sys.argv[4]), int(sys.argv[5]), [int(n) for n in sys.argv[6].split(",")]
rows = []
for op in ("nms", "soft_nms", "batched_nms"):
    for n in sizes:
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(n, 2, generator=g) * 1333
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 200 + 1], 1).half().float()
        scores = torch.rand(n, generator=g).half().float()
        idxs = torch.randint(0, 80, (n,), generator=g)
        amp = {"nms": (boxes.half(), scores.half()), "soft_nms": (boxes, scores.half()), "batched_nms": (boxes.half(), scores.half())}[op]
        bf16 = {"nms": (boxes.bfloat16(), scores.bfloat16()), "soft_nms": (boxes, scores.bfloat16()), "batched_nms": (boxes.bfloat16(), scores.bfloat16())}[op]
        def call(module, b, s):
            if op == "batched_nms":
                return module.batched_nms(b, s, idxs, dict(type="nms", iou_threshold=0.5))
            if op == "soft_nms":
                return module.soft_nms(b, s, 0.5, min_score=0.05)
            return module.nms(b, s, 0.5)
        variants = {
            "released fp32": lambda: call(released, boxes, scores),
            "patched fp32": lambda: call(patched, boxes, scores),
            "patched AMP": lambda: call(patched, *amp),
            "patched bf16": lambda: call(patched, *bf16),
        }
        if op == "batched_nms":  # the only call that runs batched-nms-amp-dtype's statement
            variants["but the .to()"] = lambda: call(but_to, boxes, scores)
        names = list(variants)
        times = {name: [] for name in names}
        started, r = time.perf_counter(), 0
        while r <= min_rounds or time.perf_counter() - started < seconds:
            for name in names[r % len(names):] + names[:r % len(names)]:
                start = time.perf_counter()
                variants[name]()
                if r >= 1:  # the first round warms up
                    times[name].append(time.perf_counter() - start)
            r += 1
        rows.append({"op": op, "boxes": n, "rounds": r - 1, "medians": {name: statistics.median(t) for name, t in times.items()}})
print(json.dumps(rows))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--workaround-rounds", type=int, default=5)
    parser.add_argument("--classes", type=int, nargs="+", default=[3, 80])
    parser.add_argument("--boxes", type=int, nargs="+", default=[10000, 50000])
    parser.add_argument("--pack-seconds", type=float, default=20, help="how long to time each of the patch pack's rows")
    parser.add_argument(
        "--pack-rounds",
        type=int,
        default=7,
        help="the fewest rounds of a patch pack's row, however long (soft_nms of 50k boxes takes seconds)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        python = releases.torch_venv(Path(scratch) / "venv", releases.ops_wheel())
        if releases.tool(python, "apply", "--patch", "batched-nms-amp-dtype").returncode != 0:
            raise SystemExit("could not apply the patch in the benchmark venv")
        done = subprocess.run(
            [
                str(python),
                "-c",
                MEASURE,
                str(args.rounds),
                str(args.workaround_rounds),
                ",".join(map(str, args.classes)),
                ",".join(map(str, args.boxes)),
            ],
            stdout=subprocess.PIPE,
            universal_newlines=True,
            check=True,
        )
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        if releases.tool(python, "apply").returncode != 0:
            raise SystemExit("could not apply every patch in the benchmark venv")
        released = Path(scratch) / "released_nms.py"
        released.write_bytes(releases.released_file(releases.OPS))
        installed = releases.site_packages(python) / "mmcv" / "ops" / "nms.py"
        patched = Path(scratch) / "patched_nms.py"
        patched.write_bytes(installed.read_bytes())
        if releases.tool(python, "revert", "--patch", "batched-nms-amp-dtype").returncode != 0:
            raise SystemExit("could not revert batched-nms-amp-dtype alone in the benchmark venv")
        done = subprocess.run(
            [
                str(python),
                "-c",
                MEASURE_PACK,
                str(released),
                str(patched),
                str(installed),
                str(args.pack_seconds),
                str(args.pack_rounds),
                ",".join(map(str, args.boxes)),
            ],
            stdout=subprocess.PIPE,
            universal_newlines=True,
            check=True,
        )
        pack = json.loads(done.stdout.strip().splitlines()[-1])
    rows = []
    for row in measured["rows"]:
        m = row["medians"]
        base = m["fp32"]
        rows.append(
            [
                str(row["classes"]),
                str(row["boxes"]),
                f"{base * 1e3:.1f} ms (1.000)",
                f"{m['fp16+patch'] * 1e3:.1f} ms ({m['fp16+patch'] / base:.3f})",
                f"{m['fp16+no-split'] * 1e3:.1f} ms ({m['fp16+no-split'] / base:.2f})",
            ]
        )
    part = measured["per_class"]
    seed = results.Table(
        f"`batched-nms-amp-dtype` alone: the median of {args.rounds} round-robin rounds ({args.workaround_rounds}"
        f" for `split_thr` raised), iou 0.5, {measured['threads']} torch threads. Per class ({part['boxes']} boxes,"
        f" one of {part['classes']}): mmcv's nms with fp16 scores {(part['nms_fp16'] - part['nms_fp32']) * 1e6:+.1f} us"
        f" over fp32; the patch's cast {part['cast'] * 1e6:.1f} us.",
        ["classes", "boxes", "fp32 scores (AMP off)", "fp16 + this patch", "fp16 + `split_thr` raised"],
        rows,
    )
    rows = []
    for row in pack:
        m = row["medians"]
        base = m["released fp32"]
        fp32, amp, bf16 = m["patched fp32"] / base, m["patched AMP"] / base, m["patched bf16"] / base
        but_to = f"{m['but the .to()'] * 1e3:.1f} ms ({m['but the .to()'] / base:.3f})" if "but the .to()" in m else "-"
        rows.append(
            [
                f"`{row['op']}`",
                str(row["boxes"]),
                str(row["rounds"]),
                f"{base * 1e3:.1f} ms (1.000)",
                f"{m['patched fp32'] * 1e3:.1f} ms ({fp32:.3f}{'' if fp32 <= 1.01 else ', missed 1%'})",
                but_to,
                f"{m['patched AMP'] * 1e3:.1f} ms ({amp:.3f}{'' if amp <= 1.05 else ', missed 5%'})",
                f"{m['patched bf16'] * 1e3:.1f} ms ({bf16:.3f}{'' if bf16 <= 1.05 else ', missed 5%'})",
            ]
        )
    columns = ["call", "boxes", "rounds", "released, fp32", "every patch, fp32", "every patch but the `.to()`, fp32"]
    columns += ["every patch, AMP's fp16 inputs", "every patch, bf16 inputs"]
    every = results.Table(
        f"Every patch of `nms.py`: the median of round-robin rounds in one process ({args.pack_seconds:g} s a row,"
        f" at least {args.pack_rounds} rounds), iou 0.5 (`batched_nms`: 80 classes).",
        columns,
        rows,
    )
    versions = {
        "python": platform.python_version(),
        "torch": measured["torch"],
        "mmcv": f"{measured['mmcv']} (CPU ops)",
    }
    results.record("bench_nms", sys.argv[1:], versions, [seed, every])
    return 0


if __name__ == "__main__":
    sys.exit(main())
