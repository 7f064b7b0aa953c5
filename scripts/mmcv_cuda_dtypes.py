#!/usr/bin/env python3
"""The dtypes each of mmcv's compiled ops takes on CUDA, read from mmcv's own CUDA sources.

    python scripts/mmcv_cuda_dtypes.py CHECKOUT [--tag TAG]

CHECKOUT is a source tree of mmcv (``mmcv/ops/csrc/pytorch`` in it: a clone at the tag, or
``git archive TAG`` of one). Each op of ``mmcv._ext`` (``m.def`` in ``pybind.cpp``) is followed
to its CUDA kernel launcher: the op's function calls an ``*_impl``, which ``cudabind.cpp``
registers for CUDA as a function that calls the launcher of a ``.cu`` file. In the launcher:
- ``AT_DISPATCH_FLOATING_TYPES_AND_HALF(input.scalar_type(), "name", ...)`` dispatches on
  ``input``'s dtype (float, double and half; ``AT_DISPATCH_FLOATING_TYPES``: float and
  double), and refuses any other with ``"name" not implemented for '...'``;
- ``t.data_ptr<scalar_t>()`` takes ``t`` in the dispatched dtype, ``t.data_ptr<float>()``
  (or ``scalar_t`` made ``float`` by ``using``) in fp32 only, else "expected scalar type ...
  but found ...";
- a tensor made from a parameter by its own methods (``boxes.index_select(0, order)``) keeps
  its dtype, so its rule is the parameter's.
Arguments are matched by name along the calls. Writes ``scripts/mmcv_cuda_dtypes-TAG.json``:
for each op, its parameters, its launcher, the dispatched argument and dtypes, and each
argument's rule;
``scripts/cuda_rules.py`` holds mmcv's kernels to them under CUDA's simulated rules.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

REPOSITORY = Path(__file__).resolve().parents[1]

#: The dtypes each dispatch macro takes, as torch names them.
DISPATCH = {
    "AT_DISPATCH_FLOATING_TYPES_AND_HALF": ("float64", "float32", "float16"),
    "AT_DISPATCH_FLOATING_TYPES": ("float64", "float32"),
}
#: C++ element types as torch's dtypes.
ELEMENTS = {"float": "float32", "double": "float64", "at::Half": "float16", "int": "int32", "int64_t": "int64"}


class Function(NamedTuple):
    name: str
    params: List[str]
    body: str


def functions(source: str) -> Iterator[Function]:
    """Every function defined at the top level of a C++ source: its name, parameter names
    and body (comments taken out)."""
    source = re.sub(r"//[^\n]*|/\*.*?\*/", "", source, flags=re.S)
    for found in re.finditer(r"^[\w:<>\s,*&]*?\b(\w+)\s*\(([^;{}]*?)\)\s*\{", source, flags=re.M):
        depth, at = 1, found.end()
        while depth and at < len(source):
            depth += {"{": 1, "}": -1}.get(source[at], 0)
            at += 1
        params = [re.split(r"[\s*&]+", part.strip())[-1] for part in found.group(2).split(",") if part.strip()]
        yield Function(found.group(1), params, source[found.end() : at - 1])


def calls(body: str, names: Dict[str, Function]) -> Iterator[Tuple[Function, List[str]]]:
    """The calls in ``body`` of the functions ``names``, each with its argument expressions."""
    for found in re.finditer(r"\b(\w+)\s*\(", body):
        if found.group(1) in names:
            depth, at, start, args = 1, found.end(), found.end(), []
            while depth and at < len(body):
                char = body[at]
                if char in "([{":
                    depth += 1
                elif char in ")]}":
                    depth -= 1
                elif char == "," and depth == 1:
                    args.append(body[start:at].strip())
                    start = at + 1
                at += 1
            args.append(body[start : at - 1].strip())
            yield names[found.group(1)], [each for each in args if each]


def rules(launcher: Function) -> Dict[str, object]:
    """What a launcher takes: the argument it dispatches on and the dtypes the macro takes,
    and each parameter's rule: ``dispatched`` (the dispatched dtype) or one dtype."""
    body = launcher.body
    alias = {name: name for name in launcher.params}
    for found in re.finditer(r"(?:auto|Tensor|at::Tensor)\s+(\w+)\s*=\s*(\w+)\s*\.\s*(\w+)\s*\(", body):
        variable, root, method = found.groups()
        if root in alias and method not in ("to", "toType", "type", "options"):
            alias[variable] = alias[root]
    fixed = re.search(r"using\s+scalar_t\s*=\s*([\w:]+)\s*;", body)
    dispatch = re.search(r"(AT_DISPATCH_\w+)\s*\(\s*(\w+)\s*\.\s*(?:scalar_)?type\s*\(\s*\)\s*,\s*\"([^\"]*)\"", body)
    dispatched: Optional[str] = None
    out: Dict[str, object] = {}
    if dispatch and dispatch.group(1) in DISPATCH and dispatch.group(2) in alias:
        dispatched = alias[dispatch.group(2)]
        out.update(dispatched=dispatched, dtypes=list(DISPATCH[dispatch.group(1)]), kernel=dispatch.group(3))
    taken: Dict[str, str] = {}
    for found in re.finditer(r"\b(\w+)\s*\.\s*data_ptr\s*<\s*([\w:]+)\s*>", body):
        variable, element = found.groups()
        if variable not in alias:
            continue
        if element == "scalar_t":
            element = fixed.group(1) if fixed else ""
            rule = ELEMENTS.get(element, "dispatched" if dispatched else "")
        else:
            rule = ELEMENTS.get(element, "")
        if rule:
            taken.setdefault(alias[variable], rule)
    out["args"] = taken
    return out


def _root(expression: str) -> str:
    """The variable an argument expression passes on with its dtype (``dets_sorted.contiguous()``,
    ``input[b]``: the variable; a cast or anything else: none)."""
    found = re.match(
        r"^\s*(\w+)\s*((?:\[[^\]]*\]|\.\s*(?:contiguous|view|select|narrow|reshape)\s*\([^()]*\))*)\s*$", expression
    )
    return found.group(1) if found else ""


def read(checkout: Path) -> Dict[str, Dict[str, object]]:
    """Every op of ``mmcv._ext`` that reaches a CUDA launcher, with the launchers' rules by
    the op's own argument names."""
    root = checkout / "mmcv" / "ops" / "csrc" / "pytorch"
    entries = {f.name: f for path in sorted(root.glob("*.cpp")) for f in functions(path.read_text(errors="replace"))}
    cudabind = (root / "cuda" / "cudabind.cpp").read_text(errors="replace")
    launchers = {
        f.name: f for path in sorted((root / "cuda").glob("*.cu")) for f in functions(path.read_text(errors="replace"))
    }
    cuda = {**launchers, **{f.name: f for f in functions(cudabind)}}
    registered = dict(re.findall(r"REGISTER_DEVICE_IMPL\(\s*(\w+)\s*,\s*CUDA\s*,\s*(\w+)\s*\)", cudabind))
    # what a call reaches on CUDA: an *_impl the CUDA function registered for it, else the function itself
    reach = {**entries, **cuda, **{impl: cuda[each] for impl, each in registered.items() if each in cuda}}
    pybind = (root / "pybind.cpp").read_text(errors="replace")
    ops: Dict[str, Dict[str, object]] = {}
    for op, function, arguments in re.findall(r"m\.def\(\s*\"(\w+)\"\s*,\s*&(\w+)\s*,(.*?)\);", pybind, flags=re.S):
        entry = entries.get(function)
        if entry is None:
            continue
        names = re.findall(r"py::arg\(\"(\w+)\"\)", arguments) or entry.params
        found: Dict[str, object] = {"args": {}, "params": names}
        _walk(entry, dict(zip(entry.params, names)), reach, launchers, found, depth=4)
        if found["args"]:
            ops[op] = found
    return ops


def _walk(
    function: Function,
    names: Dict[str, str],
    reach: Dict[str, Function],
    launchers: Dict[str, Function],
    found: Dict[str, object],
    depth: int,
) -> None:
    """Follows ``function``'s calls down to the launchers, ``names`` its parameters' names
    as the op has them, and adds each launcher's rules to ``found`` by those names."""
    if function.name in launchers:
        rules_of = rules(function)
        taken: Dict[str, str] = found["args"]  # type: ignore[assignment]
        for param, rule in rules_of["args"].items():  # type: ignore[attr-defined]
            if names.get(param):
                taken.setdefault(names[param], rule)
        dispatched = names.get(str(rules_of.get("dispatched", "")), "")
        if dispatched and "dispatched" not in found:
            found.update(
                launcher=function.name, dispatched=dispatched, dtypes=rules_of["dtypes"], kernel=rules_of["kernel"]
            )
        found.setdefault("launcher", function.name)
    if depth == 0:
        return
    for callee, args in calls(function.body, reach):
        if callee is function:
            continue
        passed = {param: names.get(_root(arg), "") for param, arg in zip(callee.params, args)}
        if any(passed.values()):
            _walk(callee, passed, reach, launchers, found, depth - 1)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--tag", required=True, help="the tag the checkout is of (v2.1.0)")
    args = parser.parse_args(argv)
    ops = read(args.checkout)
    target = REPOSITORY / "scripts" / f"mmcv_cuda_dtypes-{args.tag}.json"
    target.write_text(json.dumps({"mmcv": args.tag, "ops": ops}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target.relative_to(REPOSITORY)}: {len(ops)} ops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
