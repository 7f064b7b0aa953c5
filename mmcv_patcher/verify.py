"""``verify``: run :mod:`mmcv_patcher.probe` in a child of the target interpreter.

The patcher never imports mmcv or torch; this command deliberately does, but only in the
child, so a crash, a missing CUDA library or a hung import cannot take the tool down.
"""

import os
from typing import Any, Dict, Optional, Sequence

from mmcv_patcher import child

#: The command's word on the command line and in JSON.
VERIFY = "verify"
DEFAULT_BOXES = 12000
DEFAULT_SPLIT_THR = 10000
#: Seconds the check may take: importing torch and mmcv, then NMS over the boxes twice.
TIMEOUT = 600


def run(python: str, patches: Sequence[str], *, package_dir: Optional[str] = None, boxes: int = DEFAULT_BOXES, device: str = "cpu") -> Dict[str, Any]:
    """The probe's report: for each patch id, the ``cases`` it ran (what it gave mmcv, and
    its verdict: survived, crashed or wrong), and the overall ``verdict`` (those, or
    unavailable; only survived is a success) with a ``detail``.

    ``package_dir`` (from ``--path``) is put first on the child's ``sys.path`` so it imports
    that mmcv; the report's ``mmcv_dir`` says which one it actually imported.
    """
    env = dict(os.environ)
    if package_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(package_dir), env.get("PYTHONPATH")]))
    try:
        return child.run_json(python, "probe.py", [str(boxes), device, str(DEFAULT_SPLIT_THR), ",".join(patches)], timeout=TIMEOUT, env=env)
    except child.ChildError as error:
        return {"python": python, "verdict": "unavailable", "detail": f"the check failed in the child process: {error}"}
