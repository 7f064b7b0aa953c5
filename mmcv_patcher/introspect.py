"""Where an interpreter would import mmcv from, and its sys.path, without importing mmcv.

Runs in-process for the running interpreter and as ``python -c`` source in any other
(CPython 3.6 and newer), so it keeps to 3.6 syntax and imports nothing of this package.
``find_spec`` of a top-level name runs no package code.
"""

import importlib.util
import os
import sys
from typing import Any, Dict  # noqa: F401 (the type comment's names, 3.6 syntax)


def introspect():
    # type: () -> Dict[str, Any]
    """A JSON-able dict: executable, sys_path, pycache_prefix, mmcv_dir, mmcv_problem."""
    cwd = os.getcwd()
    found = {
        "executable": sys.executable,
        "sys_path": [os.path.join(cwd, entry) if entry else cwd for entry in sys.path],
        "pycache_prefix": getattr(sys, "pycache_prefix", None),  # 3.8+
        "mmcv_dir": None,
        "mmcv_problem": None,
    }
    try:
        spec = importlib.util.find_spec("mmcv")
    except (ImportError, ValueError) as error:
        found["mmcv_problem"] = "finding mmcv failed: %s" % error
        return found
    if spec is None:
        found["mmcv_problem"] = "no mmcv is importable by %s" % sys.executable
        return found
    locations = list(spec.submodule_search_locations or [])
    if not locations or spec.origin in (None, "namespace"):
        found["mmcv_problem"] = (
            "mmcv at %s is not a regular package (no __init__.py)" % (locations or [str(spec.origin)])[0]
        )
        return found
    if not os.path.isdir(locations[0]):
        found["mmcv_problem"] = (
            "mmcv is imported from %s, inside an archive, which cannot be patched in place; install mmcv as a directory"
            % locations[0]
        )
        return found
    found["mmcv_dir"] = os.path.abspath(locations[0])
    return found


if __name__ == "__main__":
    import json  # only the child process answering --python prints JSON

    print(json.dumps(introspect()))
