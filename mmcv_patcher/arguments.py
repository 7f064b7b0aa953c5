"""The command line: one argparse parser with a subcommand per command, read into a :class:`Request`.

A function builds the parser and one parses. Two things argparse does not do by itself are
added here: the options of every command (``--json``, ``--path``, ``--python``) are also
taken before the command (``mmcv-patcher --json status``), and every usage error, whichever
parser finds it, raises :class:`UsageError` with the usage line of the command it is about,
so the CLI can report it as text or as JSON.
"""

import argparse
import math
from typing import List, NamedTuple, NoReturn, Optional, Sequence, Tuple

from mmcv_patcher import __version__, registry, verify
from mmcv_patcher.errors import Error
from mmcv_patcher.model import Command

PROG = "mmcv-patcher"
#: Seconds apply and revert wait for another run's lock; a run takes well under one.
DEFAULT_LOCK_TIMEOUT = 60.0


class UsageError(Error):
    """A command line that cannot be run: the reason, the usage line to show with it, and
    the command it is about (None when the command itself is missing or unknown)."""

    def __init__(self, message: str, usage: str, command: Optional[str]) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage
        self.command = command


class Request(NamedTuple):
    """What the command line asks for: the command and every option, with the defaults of
    the options that command does not take."""

    command: Command
    #: ``--path``: an mmcv to work on instead of the interpreter's
    path: Optional[str]
    #: ``--python``: the interpreters whose mmcv to work on (none: the running one)
    pythons: Tuple[str, ...]
    json: bool
    #: ``--patch``: the patch ids asked for (None: all)
    patch_ids: Optional[Tuple[str, ...]]
    #: the command's usage line, for errors found after parsing (a ``--path`` with no mmcv)
    usage: str
    force: bool = False
    dry_run: bool = False
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    check: bool = False
    all: bool = False
    boxes: int = verify.DEFAULT_BOXES
    device: str = "cpu"
    #: ``--dtype``: the AMP dtypes ``verify`` runs each case in
    dtypes: Tuple[str, ...] = verify.DTYPES


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions carrying its own usage line."""

    def error(self, message: str) -> NoReturn:
        _, _, command = self.prog.partition(" ")  # a command's parser is "mmcv-patcher apply"
        raise UsageError(message, self.format_usage(), command or None)


def _target_options(parser: argparse.ArgumentParser, suffix: str = "") -> None:
    """Which mmcv, and what output: options of every command. Given before the command
    they land in ``<name>_before`` (see :func:`parse`)."""
    parser.add_argument(
        "--path",
        dest="path" + suffix,
        metavar="PATH",
        help="site-packages or a checkout containing mmcv/, the mmcv package directory, or the file to patch (default: the mmcv this interpreter imports)",
    )
    parser.add_argument(
        "--python",
        dest="python" + suffix,
        action="append",
        metavar="PYTHON",
        help="work on the mmcv another interpreter (CPython 3.6+; a path, or a name looked up on PATH) imports; the patcher itself runs here",
    )
    parser.add_argument(
        "--json", dest="json" + suffix, action="store_true", help="print one JSON object instead of lines"
    )


def _seconds(text: str) -> float:
    """A finite number of seconds, 0 or more (argparse's ``type=``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds >= 0")
    return value


def _count(text: str) -> int:
    """A whole number, 1 or more (argparse's ``type=``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _patch_option(parser: argparse.ArgumentParser) -> None:
    """``--patch ID``; the ids are listed in the command's epilog, one a line, so that help
    never breaks an id at its hyphens."""
    ids = [patch.id for patch in registry.all_patches()]
    parser.add_argument(
        "--patch",
        action="append",
        choices=ids,
        metavar="ID",
        help="only this patch (repeatable; default: all, listed below)",
    )
    parser.epilog = "patches:\n" + "".join(f"  {id}\n" for id in ids)


def _writing(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that write."""
    parser.add_argument("--dry-run", action="store_true", help="print a unified diff; write nothing")
    parser.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=DEFAULT_LOCK_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for another run on the same mmcv to finish (default {DEFAULT_LOCK_TIMEOUT:g})",
    )


def _command(commands: "argparse._SubParsersAction[_Parser]", command: Command, help: str) -> argparse.ArgumentParser:
    """A command's parser, with the options of every command; it is kept in the parsed
    namespace (``set_defaults``) so that later checks report errors with its usage line."""
    parser = commands.add_parser(
        command.value,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _target_options(parser)
    parser.set_defaults(command_parser=parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser for ``mmcv-patcher`` (also ``python -m mmcv_patcher``)."""
    parser = _Parser(prog=PROG, description=registry.description())
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _target_options(parser, "_before")
    commands = parser.add_subparsers(
        dest="command", metavar="{" + ",".join(c.value for c in Command) + "}", required=True
    )

    apply = _command(commands, Command.APPLY, "patch the installed mmcv")
    _patch_option(apply)
    apply.add_argument(
        "--force",
        action="store_true",
        help="patch a release outside the known ranges whose file has the statements as a known release does",
    )
    _writing(apply)

    status = _command(commands, Command.STATUS, "show each patch's state, file and line")
    _patch_option(status)
    status.add_argument("--check", action="store_true", help="exit 3 when an affected install is not patched")
    status.add_argument(
        "--all",
        action="store_true",
        help="every mmcv copy on the sys.path of each --python (default: this interpreter)",
    )

    revert = _command(commands, Command.REVERT, "restore the original file byte for byte")
    _patch_option(revert)
    revert.add_argument(
        "--force",
        action="store_true",
        help="take out what is left of our edit from a statement edited since it was patched",
    )
    _writing(revert)

    verify_parser = _command(
        commands,
        Command.VERIFY,
        "run each patch's AMP case on the real mmcv in a child process (imports mmcv and torch)",
    )
    _patch_option(verify_parser)
    verify_parser.add_argument(
        "--boxes",
        type=_count,
        default=verify.DEFAULT_BOXES,
        help=f"boxes for the cases that need many (default {verify.DEFAULT_BOXES}; batched_nms splits by class from {verify.DEFAULT_SPLIT_THR})",
    )
    verify_parser.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="where the cases run (default cpu; cuda needs a GPU and mmcv built with CUDA)",
    )
    verify_parser.add_argument(
        "--dtype",
        action="append",
        choices=verify.DTYPES,
        help=f"the AMP dtype the cases run in (repeatable; default both: {', '.join(verify.DTYPES)})",
    )
    return parser


def parse(argv: Sequence[str]) -> Request:
    """The request the command line makes, with the options of every command merged from
    before and after it (``--python`` values add up; for ``--path`` the later wins, as for
    any repeated option). Raises :class:`UsageError`; ``--help`` and ``--version`` print and
    exit as argparse does."""
    parser = build_parser()
    args, extra = parser.parse_known_args(list(argv))
    command_parser = args.command_parser
    if extra:
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    path = args.path if args.path is not None else args.path_before
    pythons: List[str] = (args.python_before or []) + (args.python or [])
    scan_all = getattr(args, "all", False)
    if len(pythons) > 1 and not scan_all:
        command_parser.error("--python can be given more than once only with status --all")
    if scan_all and path is not None:
        command_parser.error("status --all scans interpreters; it does not take --path")
    given = {name: value for name, value in vars(args).items() if name in Request._fields and value is not None}
    given.update(
        command=Command(args.command),
        path=path,
        pythons=tuple(dict.fromkeys(pythons)),  # the same interpreter asked twice is asked once
        json=args.json or args.json_before,
        patch_ids=tuple(args.patch) if getattr(args, "patch", None) else None,
        dtypes=tuple(dict.fromkeys(getattr(args, "dtype", None) or verify.DTYPES)),
        usage=command_parser.format_usage(),
    )
    return Request(**given)
