"""Fixtures every test module may ask for; long downloads and builds announce themselves on
pytest's terminal (scripts/releases.py)."""

import os
import signal
from pathlib import Path
from typing import List

import pytest

from scripts import releases
from tests import fixtures


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the real mmcv 2.1.0 CPU-ops build, mmdet 3.3.0 and onedl-mmrotate 1.2.1
    (one for each test module that asks: ``apply`` and ``revert`` run in it)."""
    return releases.detector_venv(tmp_path_factory.mktemp("ops") / "venv")


@pytest.fixture(scope="session")
def patched_nms() -> bytes:
    """The synthetic ops/nms.py after apply with every registered patch of it."""
    return fixtures.patched().encode()


@pytest.fixture(scope="session")
def released_nms() -> bytes:
    """The synthetic ops/nms.py as the tests install it."""
    return fixtures.NMS.encode()


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background without job control (`nohup ... &`) inherits SIGINT
    # ignored, and so would every CLI process it starts: the Ctrl-C tests could not reach
    # them. A handled signal is reset to its default in a child, an ignored one is not.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # The processes each xdist worker starts (model steps, op runners) share the CPUs with the
    # other workers': torch's default, a thread per CPU in each, would oversubscribe them and
    # leave their threads waiting on each other. Set here in the controller, before it starts
    # the workers, which inherit it; a value the caller set is kept.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers(config))))

    def announce(line: str) -> None:
        """Writes past pytest's output capture, as pytest's own progress lines are."""
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None:
            print(line, flush=True)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
            reporter.flush()

    releases.announce = announce


def workers(config: pytest.Config) -> int:
    """How many xdist workers run the tests side by side (1: none): in a worker, as xdist
    tells it; in the controller, one per process it starts (``-n``, resolved)."""
    if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
        return int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    distributed = config.getoption("dist", default="no") != "no"
    return max(1, len(config.getoption("tx", default=None) or [])) if distributed else 1


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """The e2e test files first, each whole and in its own order: they are the longest, and
    xdist (``--dist loadfile``) hands files to its workers in this order, so the others fill
    the time beside them instead of one long file running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
