"""Training steps of ``scripts/model_step.py`` asked of one ``model_step.py --serve`` in an
interpreter: each step runs in a child the server forks before mmcv, mmdet or mmrotate is
imported, so it runs their files as they are when it is asked for, without paying for
torch's and mmengine's imports again.

    with Steps(python, log) as steps:
        report = steps.step(["faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "train", "bf16"], timeout=900)
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, Optional, Sequence, Type

#: the script whose ``--serve`` answers the steps
MODEL_STEP = Path(__file__).resolve().parent / "model_step.py"


class Steps:
    """``model_step.py --serve`` in ``python``, started at the first step and again after a
    step that stopped it; what it and its steps print goes to ``log``."""

    def __init__(self, python: Path, log: Path) -> None:
        self.python, self.log = python, log
        self._server: Optional["subprocess.Popen[str]"] = None

    def step(self, arguments: Sequence[str], timeout: Optional[float] = None) -> Dict[str, Any]:
        """``model_step.py``'s report of one step (``arguments``: those after the program's
        name). A step still running after ``timeout`` seconds is stopped with the server and
        answered ``{"error": "timed out after N s", "timed_out": true}``; a step whose process
        died is answered ``{"error": ..., "died": true}``, with the log's last line."""
        server = self._server or self._start()
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(json.dumps(list(arguments)) + "\n")
        server.stdin.flush()
        with selectors.DefaultSelector() as ready:
            ready.register(server.stdout, selectors.EVENT_READ)
            if not ready.select(timeout):
                self._kill()
                return {"error": f"timed out after {timeout:g} s", "timed_out": True}
        answered = server.stdout.readline()
        if not answered:
            self._kill()
            return {"error": f"the step server exited {server.returncode}: {self._last_line()}", "died": True}
        report: Dict[str, Any] = json.loads(answered)
        if report.get("died"):
            report["error"] += f": {self._last_line()}"
        return report

    def close(self) -> None:
        """Ends the server: it exits at the end of its requests."""
        if self._server is not None:
            assert self._server.stdin is not None
            self._server.stdin.close()
            try:
                self._server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._kill()
            self._release()

    def _kill(self) -> None:
        """Stops the server and the step it runs, if any."""
        if self._server is not None:
            try:
                os.killpg(self._server.pid, signal.SIGKILL)
            except ProcessLookupError:  # it had ended
                pass
            self._server.wait()
            self._release()

    def _release(self) -> None:
        if self._server is not None:
            for pipe in (self._server.stdin, self._server.stdout):
                if pipe is not None:
                    pipe.close()
            self._server = None

    def __enter__(self) -> "Steps":
        return self

    def __exit__(
        self, kind: Optional[Type[BaseException]], error: Optional[BaseException], trace: Optional[TracebackType]
    ) -> None:
        self.close()

    def _start(self) -> "subprocess.Popen[str]":
        with self.log.open("a") as log:
            self._server = subprocess.Popen(
                [str(self.python), str(MODEL_STEP), "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                universal_newlines=True,
                start_new_session=True,  # its own process group: a step that runs too long goes with it
            )
        return self._server

    def _last_line(self) -> str:
        with self.log.open("rb") as log:
            log.seek(max(0, self.log.stat().st_size - 4096))
            lines = log.read().decode(errors="replace").strip().splitlines()
        return (lines or ["no output"])[-1][:200]
