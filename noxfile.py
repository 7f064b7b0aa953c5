"""The contributor's commands, one nox session each (``nox -s NAME``; ``nox -l`` lists them).

``scripts/test.sh`` is what CI runs (``.ci/run``): every check and the whole suite. These
sessions run a part of it in a venv of their own, with the tool and its test extras.
"""

import nox

nox.options.sessions = ["lint", "unit"]
SOURCES = ["mmcv_patcher", "patches", "tests", "scripts", "noxfile.py"]
#: The fast suite: no downloads, builds or other Pythons.
UNIT = "not release and not e2e and not interpreters and not package"


def _install(session: nox.Session) -> None:
    session.install("-e", ".[test]")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (pyflakes, pycodestyle, isort, bugbear), the formatter's check, mypy --strict, the docs check."""
    _install(session)
    session.run("python", "-m", "ruff", "check", *SOURCES)
    session.run("python", "-m", "ruff", "format", "--check", *SOURCES)
    session.run("python", "-m", "mypy")
    session.run("python", "scripts/document.py", "--check")


@nox.session(name="format")
def format_(session: nox.Session) -> None:
    """Formats the code and writes what is generated from the registry of patches."""
    _install(session)
    session.run("python", "-m", "ruff", "check", "--fix", *SOURCES)
    session.run("python", "-m", "ruff", "format", *SOURCES)
    session.run("python", "scripts/document.py")


@nox.session
def unit(session: nox.Session) -> None:
    """The fast suite: everything but real releases, builds and other Pythons (its time: CONTRIBUTING.md)."""
    _install(session)
    session.run("python", "-m", "pytest", "-m", UNIT, *session.posargs)


@nox.session
def release(session: nox.Session) -> None:
    """Every patch on every release's own files, and the install layouts (downloads, cached)."""
    _install(session)
    session.run("python", "-m", "pytest", "-m", "release and not e2e", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """The real mmcv 2.1.0 built with its CPU ops, and mmdet: every op and training step (cached build)."""
    _install(session)
    session.run("python", "-m", "pytest", "-m", "e2e", *session.posargs)
