"""The committed result files of the sweep and the benchmarks, under ``docs/results``, from
which ``scripts/document.py`` makes the docs' tables.

``zoo-DTYPE.json``: what one training step of each config did, in fp32 and in one AMP dtype
on the release and patched, and the runs that made the rows (date, machine, versions, size,
the command); ``zoo-DTYPE-cuda.json`` the same under CUDA's autocast rules, simulated.

    {"dtype": "bf16",
     "runs": [{"command": "...", "date": "2026-12-04", "size": "256x256", "machine": "...",
               "versions": {"mmcv": "...", ...}, "source": "..."}],
     "rows": [{"family": "...", "config": "...", "size": "", "batch": "", "fp32": "trains",
               "release": "...", "patched": "...", "run": 0}]}

``scripts/sweep_zoo.py`` writes them as it goes.

``bench_NAME.json``: the runs of ``scripts/bench_NAME.py``, each with its command, date,
machine and versions, and the tables it measured (:class:`Table`), which the script writes.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Sequence

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
#: A row's cells, in the order the tables show them.
COLUMNS = ("fp32", "release", "patched")


#: The zoo's tables: each AMP dtype under the CPU's autocast rules, then under CUDA's, simulated.
TABLES = ("bf16", "fp16", "bf16-cuda", "fp16-cuda")


def name(dtype: str, rules: str = "cpu") -> str:
    """The table of an AMP dtype's steps under ``rules``' autocast: ``fp16``, ``fp16-cuda``."""
    return dtype if rules == "cpu" else f"{dtype}-{rules}"


def path(table: str, directory: Path = RESULTS) -> Path:
    """The result file of one table."""
    return directory / f"zoo-{table}.json"


def load(table: str, directory: Path = RESULTS) -> Dict[str, Any]:
    """One table's results, or an empty set of them when there is no file yet."""
    try:
        document: Dict[str, Any] = json.loads(path(table, directory).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"dtype": table, "runs": [], "rows": []}
    return document


def save(document: Dict[str, Any], directory: Path = RESULTS) -> None:
    """Writes one table's results, so a sweep stopped at any point leaves the last complete file."""
    _write(path(document["dtype"], directory), document)


def _write(target: Path, document: Dict[str, Any]) -> None:
    """Writes a result file whole: a temporary file beside it, then a rename."""
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


class Table(NamedTuple):
    """One table a benchmark measured: what it measured (a sentence or two), its columns and
    its rows, every cell as the script wrote it."""

    about: str
    columns: List[str]
    rows: List[List[str]]

    def markdown(self) -> str:
        """The table in Markdown, its numbers right-aligned."""
        numeric = [[row[i][:1] for row in self.rows if row[i]] for i in range(len(self.columns))]
        align = ["---:" if column and all(c.isdigit() or c in "+-" for c in column) else "---" for column in numeric]
        lines = [f"| {' | '.join(self.columns)} |", f"| {' | '.join(align)} |"]
        lines += [f"| {' | '.join(cell.replace('|', chr(92) + '|') for cell in row)} |" for row in self.rows]
        return "\n".join(lines) + "\n"


def bench_path(name: str, directory: Path = RESULTS) -> Path:
    """The result file of benchmark ``scripts/NAME.py``."""
    return directory / f"{name}.json"


def load_bench(name: str, directory: Path = RESULTS) -> List[Dict[str, Any]]:
    """Every run of benchmark ``name`` the result file keeps (none when there is no file)."""
    try:
        runs: List[Dict[str, Any]] = json.loads(bench_path(name, directory).read_text(encoding="utf-8"))["runs"]
    except FileNotFoundError:
        return []
    return runs


def record(
    name: str, argv: Sequence[str], versions: Dict[str, str], tables: Sequence[Table], directory: Path = RESULTS
) -> None:
    """Prints the tables of one run of benchmark ``scripts/NAME.py`` and writes the run into its
    result file, with the date, machine and versions, in place of an earlier run of the same
    command (a run with other arguments is kept beside it)."""
    from scripts import machine

    command = shlex.join(["python", f"scripts/{name}.py", *argv])
    for table in tables:
        print(f"{table.about}\n\n{table.markdown()}")
    run = {
        "command": command,
        "date": datetime.now(timezone.utc).date().isoformat(),
        "machine": machine.cpu(),
        "versions": versions,
        "tables": [table._asdict() for table in tables],
    }
    runs = [each for each in load_bench(name, directory) if each["command"] != command] + [run]
    _write(bench_path(name, directory), {"runs": runs})
