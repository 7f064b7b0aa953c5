"""``verify``: run :mod:`mmcv_patcher.probe` in a child of the target interpreter.

The patcher never imports mmcv or torch; this command deliberately does, but only in the
child, so a crash, a missing CUDA library or a hung import cannot take the tool down.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional

#: The command's word on the command line and in JSON.
VERIFY = "verify"
#: The verdicts the probe gives; only "survived" makes ``verify`` exit 0.
VERDICTS = ("survived", "crashed", "wrong", "unavailable")
DEFAULT_BOXES = 12000
DEFAULT_SPLIT_THR = 10000


def run(python: str = sys.executable, *, package_dir: Optional[str] = None, boxes: int = DEFAULT_BOXES, device: str = "cpu", timeout: float = 600) -> Dict[str, Any]:
    """The probe's report: what it gave ``batched_nms`` and its ``verdict`` and ``detail``.

    ``package_dir`` (from ``--path``) is put first on the child's ``sys.path`` so it imports
    that mmcv; the report's ``mmcv_dir`` says which one it actually imported.
    """
    import subprocess  # imported here: the CLI imports this module for its defaults

    env = dict(os.environ)
    if package_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(package_dir), env.get("PYTHONPATH")]))
    with open(os.path.join(os.path.dirname(__file__), "probe.py"), encoding="utf-8") as handle:
        source = handle.read()
    command = [python, "-c", source, str(boxes), device, str(DEFAULT_SPLIT_THR)]
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"python": python, "verdict": "unavailable", "detail": f"the check did not run: {error}"}
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        import json

        try:
            report: Dict[str, Any] = json.loads(lines[-1])
            return report
        except ValueError:
            pass
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"python": python, "verdict": "unavailable", "detail": f"the check failed in the child process: {last}"}
