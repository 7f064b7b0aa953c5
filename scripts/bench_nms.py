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
ratio to fp32, then where the fp16 path's extra time goes per class. The venv goes away
afterwards, so nothing stays patched.
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
sys.path.insert(0, str(REPOSITORY))

from tests import releases  # noqa: E402  (the same cached builds the tests use)

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--workaround-rounds", type=int, default=5)
    parser.add_argument("--classes", type=int, nargs="+", default=[3, 80])
    parser.add_argument("--boxes", type=int, nargs="+", default=[10000, 50000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        python = releases.torch_venv(Path(scratch) / "venv", releases.ops_wheel())
        if releases.tool(python, "apply").returncode != 0:
            raise SystemExit("could not apply the patch in the benchmark venv")
        done = subprocess.run(
            [str(python), "-c", MEASURE, str(args.rounds), str(args.workaround_rounds), ",".join(map(str, args.classes)), ",".join(map(str, args.boxes))],
            stdout=subprocess.PIPE,
            universal_newlines=True,
            check=True,
        )
        results = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"machine: {_cpu()}, {results['threads']} torch threads; Python {platform.python_version()}, torch {results['torch']}, mmcv {results['mmcv']} (CPU ops)")
    print(f"median of {args.rounds} round-robin rounds ({args.workaround_rounds} for split_thr raised), iou 0.5\n")
    print("| classes | boxes | fp32 (AMP off) | fp16 + this patch | fp16 + split_thr raised |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for row in results["rows"]:
        m = row["medians"]
        base = m["fp32"]
        print(
            f"| {row['classes']} | {row['boxes']} | {base * 1e3:.1f} ms (1.000) | {m['fp16+patch'] * 1e3:.1f} ms ({m['fp16+patch'] / base:.3f})"
            f" | {m['fp16+no-split'] * 1e3:.1f} ms ({m['fp16+no-split'] / base:.2f}) |"
        )
    ratios = [(row["classes"], row["boxes"], row["medians"]["fp16+patch"] / row["medians"]["fp32"]) for row in results["rows"]]
    for verdict, rows in (("met", [r for r in ratios if r[2] <= 1.01]), ("missed", [r for r in ratios if r[2] > 1.01])):
        if rows:
            print(f"\ntarget (fp16 + this patch within 1% of fp32) {verdict} at: " + ", ".join(f"{c} classes x {b} boxes ({x:.3f})" for c, b, x in rows))
    part = results["per_class"]
    print(
        f"\nper class ({part['boxes']} boxes, one of {part['classes']}): mmcv nms with fp16 scores"
        f" {(part['nms_fp16'] - part['nms_fp32']) * 1e6:+.1f} us over fp32; the patch's cast {part['cast'] * 1e6:.1f} us"
    )
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{_cores()}"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
