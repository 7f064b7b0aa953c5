"""What every op runner shares (each runs in a venv with torch and the real mmcv, as
``python -m tests.e2e_ops.RUNNER CASES``, where CASES is a JSON list of argument lists):
counting the copies a call makes, a tensor's digest, the difference of two results, and
answering every case in one process.

A runner defines ``run(*case)``, which answers one case as a JSON object, and ends with
``answer(run)``: one line of JSON, ``{"answers": [...]}``, each the case's answer or
``{"error": "Type: first line of the message"}`` when the case raised.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any, Callable, Dict, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: torch's dtypes by the names the cases give them
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


class Copies(TorchDispatchMode):  # type: ignore[misc]
    """Counts the copies (``aten._to_copy``) made while it is active, in ``Copies.count``."""

    count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        Copies.count += func.__name__.startswith("_to_copy")
        return func(*args, **(kwargs or {}))


def digest(tensor: Any) -> str:
    """A short hash of a tensor's bytes: equal digests are bit-identical results."""
    return hashlib.sha256(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def difference(ours: Any, theirs: Any) -> float:
    """The largest difference of two tensors, relative to the second's largest value."""
    scale = theirs.detach().float().abs().max().clamp_min(1e-30)
    return float(((ours.detach().float() - theirs.detach().float()).abs().max() / scale).item())


def answer(run: Callable[..., Dict[str, Any]]) -> None:
    """Runs ``run`` on each case of the JSON list in argv[1] and prints every answer, in order."""

    def one(case: List[Any]) -> Dict[str, Any]:
        try:
            return run(*case)
        except Exception as error:
            return {"error": "%s: %s" % (type(error).__name__, (str(error).splitlines() or [""])[0])}

    print(json.dumps({"answers": [one(case) for case in json.loads(sys.argv[1])]}))
