"""``verify``: run each patch's case (:class:`mmcv_patcher.model.Case`) with
:mod:`mmcv_patcher.probe` in a child of the target interpreter.

The patcher never imports mmcv or torch; this command deliberately does, but only in the
child, so a crash, a missing CUDA library or a hung import cannot take the tool down.
"""

import json
import os
from typing import Any, Dict, Optional, Sequence

from mmcv_patcher import child
from mmcv_patcher.model import Patch

DEFAULT_BOXES = 12000
#: The ``split_thr`` of mmcv's ``batched_nms``: ``--boxes`` must reach it for the per-class path.
DEFAULT_SPLIT_THR = 10000
#: The dtypes mixed precision computes in: AMP's fp16, and bf16 (``AmpOptimWrapper(dtype='bfloat16')``, CPU autocast).
DTYPES = ("float16", "bfloat16")
#: Seconds the check may take: importing torch and mmcv, then every case in every dtype.
TIMEOUT = 600


def run(
    python: str,
    patches: Sequence[Patch],
    *,
    package_dir: Optional[str] = None,
    boxes: int = DEFAULT_BOXES,
    device: str = "cpu",
    dtypes: Sequence[str] = DTYPES,
) -> Dict[str, Any]:
    """The probe's report: under ``cases``, for each patch id and each of ``dtypes``, its case
    (what it gave mmcv, and its verdict: survived, crashed, wrong, skipped on a device the
    case does not run on (see :attr:`mmcv_patcher.model.Case.skipped`), or unavailable when it
    could not run), and the overall ``verdict`` over the cases not skipped (only survived is a
    success) with a ``detail``.

    ``package_dir`` (from ``--path``) is put first on the child's ``sys.path`` so it imports
    that mmcv; the report's ``mmcv_dir`` says which one it actually imported.
    """
    env = dict(os.environ)
    if package_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(package_dir), env.get("PYTHONPATH")]))
    asked = {
        "cases": {patch.id: patch.case.as_json() for patch in patches},
        "dtypes": list(dtypes),
        "device": device,
        "boxes": boxes,
    }
    try:
        result = child.run_json(python, "probe.py", [json.dumps(asked)], timeout=TIMEOUT, env=env)
    except child.ChildError as error:
        result = {
            "python": python,
            "verdict": "unavailable",
            "detail": f"the check failed in the child process: {error}",
        }
    cases = result.setdefault("cases", {})
    for patch in patches:  # a case that could not run says so, with the reason none could
        for dtype in dtypes:
            cases.setdefault(patch.id, {}).setdefault(
                dtype, {"gave": None, "verdict": "unavailable", "detail": result["detail"]}
            )
    return result
