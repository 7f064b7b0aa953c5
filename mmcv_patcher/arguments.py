"""The command line's words as one table, read directly when plain and by argparse otherwise.

Importing argparse (``re``, ``gettext``) and building its parser (``shutil``, with ``bz2``
and ``lzma``) takes longer than starting the interpreter, and ``status`` has to finish within
three start-ups. So the commands and options are data: a command line made only of a command and
its options spelled out in full, each with a value that needs no judgement, is read straight
from the table; anything else (``--help``, ``--version``, abbreviations, mistakes) goes to
an argparse parser built from the same table. ``tests/test_arguments.py`` checks on generated
command lines that whatever the direct reading accepts, argparse reads the same way.
"""

from __future__ import annotations

from types import SimpleNamespace

from mmcv_patcher import __version__, verify
from mmcv_patcher.commands import APPLY, REVERT, STATUS
from mmcv_patcher.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Dict, NoReturn, Optional, Sequence, Tuple

PROG = "mmcv-patcher"
DESCRIPTION = "Fix mmcv's batched_nms crash under mixed precision, in place and reversibly."


class Option(NamedTuple):
    """One ``--flag``: what argparse's ``add_argument`` is given for it."""

    flag: str
    help: str
    #: "store" (one value, the last given wins), "append" (repeatable) or "store_true"
    action: str = "store"
    metavar: Optional[str] = None
    default: Any = None
    #: values are whole numbers (argparse's ``type=int``)
    integer: bool = False
    choices: Optional[Tuple[str, ...]] = None

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


class Command(NamedTuple):
    name: str
    help: str
    options: Tuple[Option, ...]


_WHERE = (  # every command: which mmcv, what output
    Option("--path", "site-packages or a checkout containing mmcv/, the mmcv package directory, or the file to patch (default: the mmcv this interpreter imports)"),
    Option("--python", "work on the mmcv another interpreter (CPython 3.6+) imports; the patcher itself runs here", action="append", metavar="PYTHON"),
    Option("--json", "print one JSON object instead of lines", action="store_true", default=False),
)
_PATCHING = _WHERE + (  # the commands that run patches
    Option("--patch", "only this patch (repeatable; default: all)", action="append", metavar="ID"),
    Option("--force", "apply: patch a release outside the known range when the statement is there once; revert: remove our edit from a file edited since", action="store_true", default=False),
)
_DRY_RUN = Option("--dry-run", "print a unified diff; write nothing", action="store_true", default=False)

COMMANDS = (
    Command(APPLY, "patch the installed mmcv", _PATCHING + (_DRY_RUN,)),
    Command(
        STATUS,
        "show each patch's state, file and line",
        _PATCHING
        + (
            Option("--check", "exit 3 when an affected install is not patched", action="store_true", default=False),
            Option("--all", "every mmcv copy on the sys.path of each --python (default: this interpreter)", action="store_true", default=False),
        ),
    ),
    Command(REVERT, "restore the original file byte for byte", _PATCHING + (_DRY_RUN,)),
    Command(
        verify.VERIFY,
        "run batched_nms with AMP-style inputs in a child process (imports mmcv and torch)",
        _WHERE
        + (
            Option(
                "--boxes",
                f"boxes to give batched_nms (default {verify.DEFAULT_BOXES}; splitting starts at {verify.DEFAULT_SPLIT_THR})",
                default=verify.DEFAULT_BOXES,
                integer=True,
            ),
            Option("--device", "where batched_nms runs (default cpu; cuda needs a GPU and mmcv built with CUDA)", default="cpu", choices=("cpu", "cuda")),
        ),
    ),
)


def parse(argv: Sequence[str]) -> SimpleNamespace:
    """The parsed command line: ``command`` and every option of that command (defaults for
    those not given). Help, the version and usage errors print and exit as argparse does."""
    plain = parse_plain(argv)
    if plain is not None:
        return plain
    return SimpleNamespace(**vars(parser().parse_args(argv)))


def usage_error(message: str) -> NoReturn:
    """Prints the usage and ``message`` and exits 2, as argparse does for its own errors."""
    parser().error(message)


def parse_plain(argv: Sequence[str]) -> Optional[SimpleNamespace]:
    """Reads a command line made only of a command and its options spelled in full, each
    value plain (not starting with ``-``, ASCII digits for a number, one of the choices);
    None for anything else, which argparse must judge."""
    command = next((c for c in COMMANDS if argv and c.name == argv[0]), None)
    if command is None:
        return None
    options = {option.flag: option for option in command.options}
    values: Dict[str, Any] = {option.dest: option.default for option in command.options}
    words = iter(argv[1:])
    for word in words:
        flag, equals, value = word.partition("=")
        option = options.get(flag)
        if option is None or (equals and option.action == "store_true"):
            return None
        if option.action == "store_true":
            values[option.dest] = True
            continue
        if not equals:
            value = next(words, "-")  # a missing value is argparse's error to word
        if value.startswith("-") or (option.choices and value not in option.choices):
            return None
        if option.integer:
            if not (value.isdigit() and value.isascii()):
                return None
            values[option.dest] = int(value)
        elif option.action == "append":
            values[option.dest] = (values[option.dest] or []) + [value]
        else:
            values[option.dest] = value
    return SimpleNamespace(command=command.name, **values)


def parser() -> argparse.ArgumentParser:
    """The argparse parser for the same table (help, version, and every usage error)."""
    import argparse

    top = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    top.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    names = ",".join(command.name for command in COMMANDS)
    sub = top.add_subparsers(dest="command", metavar=f"{{{names}}}")
    sub.required = True
    for command in COMMANDS:
        each = sub.add_parser(command.name, help=command.help)
        for option in command.options:
            settings: Dict[str, Any] = {"action": option.action, "help": option.help}
            if option.action != "store_true":
                settings.update(metavar=option.metavar, default=option.default, type=int if option.integer else None, choices=option.choices)
            each.add_argument(option.flag, **settings)
    return top
