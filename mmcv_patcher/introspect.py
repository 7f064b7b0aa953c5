"""Where an interpreter would import each package from, and its sys.path, without importing
any of them.

Runs in-process for the running interpreter and as ``python -c`` source in any other
(CPython 3.6 and newer), so it keeps to 3.6 syntax and imports nothing of this package.
``find_spec`` of a top-level name runs no package code.
"""

import importlib.util
import os
import sys
from typing import Any, Dict, List, Optional, Sequence  # noqa: F401 (the type comments' names, 3.6 syntax)


def introspect(packages):
    # type: (Sequence[str]) -> Dict[str, Any]
    """A JSON-able dict: executable, sys_path, pycache_prefix, and ``packages``: for each
    top-level package name, where it is (``dir``, or None with ``problem``) and ``local_dir``.

    ``sys_path`` and ``dir`` are what a program of this interpreter sees: ``sys.path``
    without the entry Python puts first for how it was started (the working directory for
    ``-m`` and ``-c``, a script's own directory), which differs from program to program. A
    copy in that left-out entry, which only programs started there import, is
    ``local_dir``. Relative entries are made absolute against the working directory, or
    left out when it was removed (they then name nothing).
    """
    try:
        cwd = os.getcwd()  # type: Optional[str]
    except OSError:  # the working directory was removed
        cwd = None
    started = 1 if sys.path and _is_start_entry(sys.path[0], cwd) else 0
    programs = [entry for entry in (_absolute(entry, cwd) for entry in sys.path[started:]) if entry is not None]
    start = _absolute(sys.path[0], cwd) if started else None
    return {
        "executable": sys.executable,
        "sys_path": programs,
        "pycache_prefix": getattr(sys, "pycache_prefix", None),  # 3.8+
        "packages": dict((name, _find(name, programs, start)) for name in packages),
    }


def _find(name, programs, start):
    # type: (str, List[str], Optional[str]) -> Dict[str, Optional[str]]
    """Where ``import name`` loads the package from with ``programs`` as sys.path (``dir``),
    or why not (``problem``), and the copy in ``start`` that only programs started there
    import (``local_dir``)."""
    found = {"dir": None, "problem": None, "local_dir": None}  # type: Dict[str, Optional[str]]
    own = sys.path[:]
    sys.path[:] = programs
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as error:
        found["problem"] = "finding %s failed: %s" % (name, error)
        return found
    finally:
        sys.path[:] = own
    local_dir = None  # type: Optional[str]
    if start is not None and os.path.isfile(os.path.join(start, name, "__init__.py")):
        local_dir = found["local_dir"] = os.path.join(start, name)
    if spec is None:
        found["problem"] = "no %s is importable" % name + (
            ""
            if local_dir is None
            else " except %s, which only programs started in %s import (--path %s works on it)"
            % (local_dir, start, start)
        )
        return found
    locations = list(spec.submodule_search_locations or [])
    if not locations or spec.origin in (None, "namespace"):
        found["problem"] = "%s at %s is not a regular package (no __init__.py)" % (
            name,
            (locations or [str(spec.origin)])[0],
        )
        return found
    if not os.path.isdir(locations[0]):
        found["problem"] = (
            "%s is imported from %s, inside an archive, which cannot be patched in place; install %s as a directory"
            % (name, locations[0], name)
        )
        return found
    package_dir = os.path.abspath(locations[0])
    found["dir"] = package_dir
    if local_dir is not None and os.path.realpath(local_dir) == os.path.realpath(package_dir):
        found["local_dir"] = None  # the same copy: nothing is left out
    return found


def _is_start_entry(entry, cwd):
    # type: (str, Optional[str]) -> bool
    """Whether ``entry``, first on sys.path, is the one Python added for how it was started:
    '' for ``-c``, the working directory for ``-m`` (none when that was removed), the
    script's directory for a script; never under ``-P`` (the flag is 3.11+)."""
    if getattr(sys.flags, "safe_path", False):
        return False
    script = sys.argv[0] if sys.argv and os.path.isabs(sys.argv[0]) else None
    return entry == "" or entry == cwd or (script is not None and entry == os.path.dirname(os.path.realpath(script)))


def _absolute(entry, cwd):
    # type: (str, Optional[str]) -> Optional[str]
    """``entry`` of sys.path as an absolute path ('' is the working directory), or None when
    it is relative and there is no working directory."""
    if os.path.isabs(entry):
        return entry
    return None if cwd is None else os.path.join(cwd, entry) if entry else cwd


if __name__ == "__main__":
    import json  # only the child process answering --python prints JSON

    print(json.dumps(introspect(sys.argv[1:])))
