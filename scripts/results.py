"""The sweep's committed result files, ``docs/results/zoo-DTYPE.json``: what one training step
of each config did, in fp32 and in one AMP dtype on the release and patched, and the runs that
made the rows (date, machine, versions, size, the command).

    {"dtype": "bf16",
     "runs": [{"command": "...", "date": "2026-12-04", "size": "256x256", "machine": "...",
               "versions": {"mmcv": "...", ...}, "source": "..."}],
     "rows": [{"family": "...", "config": "...", "size": "", "fp32": "trains",
               "release": "...", "patched": "...", "run": 0}]}

``scripts/sweep_zoo.py`` writes them as it goes; ``scripts/document.py`` makes docs/zoo.md's
tables from them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
#: A row's cells, in the order the tables show them.
COLUMNS = ("fp32", "release", "patched")


def path(dtype: str, directory: Path = RESULTS) -> Path:
    """The result file of one AMP dtype."""
    return directory / f"zoo-{dtype}.json"


def load(dtype: str, directory: Path = RESULTS) -> Dict[str, Any]:
    """One dtype's results, or an empty set of them when there is no file yet."""
    try:
        document: Dict[str, Any] = json.loads(path(dtype, directory).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"dtype": dtype, "runs": [], "rows": []}
    return document


def save(document: Dict[str, Any], directory: Path = RESULTS) -> None:
    """Writes one dtype's results whole (a temporary file, then a rename), so a sweep stopped
    at any point leaves the last complete file."""
    target = path(document["dtype"], directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(json.dumps(document, indent=1) + "\n")
    os.replace(temporary, target)


def start_run(document: Dict[str, Any], run: Dict[str, Any]) -> int:
    """Adds a run to ``document`` and returns its index, for the rows it writes."""
    document["runs"].append(run)
    return len(document["runs"]) - 1


def put(document: Dict[str, Any], row: Dict[str, Any], order: List[str]) -> int:
    """Puts ``row`` in place of the row of the same config (or adds it), keeping the rows in
    ``order`` (the list's configs; any other after them), and drops runs no row names. Returns
    the index of the row's run now, for the rows that follow it."""
    rows = [each for each in document["rows"] if each["config"] != row["config"]] + [row]
    rank = {config: index for index, config in enumerate(order)}
    rows.sort(key=lambda each: rank.get(each["config"], len(rank)))
    used = sorted({each["run"] for each in rows})
    renumber = {old: new for new, old in enumerate(used)}
    document["runs"] = [document["runs"][old] for old in used]
    document["rows"] = [dict(each, run=renumber[each["run"]]) for each in rows]
    return renumber[row["run"]]
