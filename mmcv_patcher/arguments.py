"""The command line: one argparse parser with a subcommand per command.

Built the way pypa/installer's ``__main__`` builds its own: a function that returns the
parser, and one that parses. Two things argparse does not do by itself are added here:
the options of every command (``--json``, ``--path``, ``--python``) are also taken before
the command (``mmcv-patcher --json status``), and every usage error, whichever parser
finds it, raises :class:`UsageError` with the usage line of the command it is about, so
the CLI can report it as text or as JSON.
"""

import argparse
from typing import List, NoReturn, Optional, Sequence

from mmcv_patcher import __version__, registry, verify
from mmcv_patcher.commands import APPLY, REVERT, STATUS
from mmcv_patcher.verify import VERIFY

PROG = "mmcv-patcher"
#: Seconds apply and revert wait for another run's lock; a run takes well under one.
DEFAULT_LOCK_TIMEOUT = 60.0


class UsageError(Exception):
    """A command line that cannot be run: the reason, the usage line to show with it, and
    the command it is about (None when the command itself is missing or unknown)."""

    def __init__(self, message: str, usage: str, command: Optional[str]) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage
        self.command = command


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions carrying its own usage line."""

    def error(self, message: str) -> NoReturn:
        _, _, command = self.prog.partition(" ")  # a command's parser is "mmcv-patcher apply"
        raise UsageError(message, self.format_usage(), command or None)


def _where(parser: argparse.ArgumentParser, suffix: str = "") -> None:
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
    parser.add_argument("--json", dest="json" + suffix, action="store_true", help="print one JSON object instead of lines")


def _patch_option(parser: argparse.ArgumentParser) -> None:
    ids = [patch.id for patch in registry.all_patches()]
    parser.add_argument("--patch", action="append", choices=ids, metavar="ID", help=f"only this patch (repeatable; default: all): {', '.join(ids)}")


def _writing(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that write."""
    parser.add_argument("--dry-run", action="store_true", help="print a unified diff; write nothing")
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULT_LOCK_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for another run on the same mmcv to finish (default {DEFAULT_LOCK_TIMEOUT:g})",
    )


def _command(commands: "argparse._SubParsersAction[_Parser]", name: str, help: str) -> argparse.ArgumentParser:
    """A command's parser, with the options of every command; it is kept in the parsed
    namespace (``set_defaults``) so that later checks report errors with its usage line."""
    parser = commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    _where(parser)
    parser.set_defaults(command_parser=parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser for ``mmcv-patcher`` (also ``python -m mmcv_patcher``)."""
    parser = _Parser(prog=PROG, description="Fix mmcv's NMS ops (ops/nms.py) under mixed precision, in place and reversibly.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _where(parser, "_before")
    commands = parser.add_subparsers(dest="command", metavar="{apply,status,revert,verify}", required=True)

    apply = _command(commands, APPLY, "patch the installed mmcv")
    _patch_option(apply)
    apply.add_argument("--force", action="store_true", help="patch a release outside the known ranges whose file has the statements as a known release does")
    _writing(apply)

    status = _command(commands, STATUS, "show each patch's state, file and line")
    _patch_option(status)
    status.add_argument("--check", action="store_true", help="exit 3 when an affected install is not patched")
    status.add_argument("--all", action="store_true", help="every mmcv copy on the sys.path of each --python (default: this interpreter)")

    revert = _command(commands, REVERT, "restore the original file byte for byte")
    _patch_option(revert)
    revert.add_argument("--force", action="store_true", help="remove our edit from a file that was edited after it was patched")
    _writing(revert)

    check = _command(commands, VERIFY, "run each patch's AMP case on the real mmcv in a child process (imports mmcv and torch)")
    _patch_option(check)
    check.add_argument(
        "--boxes",
        type=int,
        default=verify.DEFAULT_BOXES,
        help=f"boxes for batched-nms-amp-dtype's case (default {verify.DEFAULT_BOXES}; splitting starts at {verify.DEFAULT_SPLIT_THR})",
    )
    check.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the cases run (default cpu; cuda needs a GPU and mmcv built with CUDA)")
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The parsed command line: ``command`` and every option of that command, with the
    options of every command merged from before and after it (``--python`` values add up;
    for ``--path`` the later wins, as for any repeated option). Raises :class:`UsageError`;
    ``--help`` and ``--version`` print and exit as argparse does."""
    parser = build_parser()
    args, extra = parser.parse_known_args(list(argv))
    command = args.command_parser
    del args.command_parser
    if extra:
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    args.json = args.json or args.json_before
    args.path = args.path if args.path is not None else args.path_before
    pythons: List[str] = (args.python_before or []) + (args.python or [])
    args.python = pythons or None
    del args.json_before, args.path_before, args.python_before
    scan_all = getattr(args, "all", False)
    if len(pythons) > 1 and not scan_all:
        command.error("--python can be given more than once only with status --all")
    if scan_all and args.path is not None:
        command.error("status --all scans interpreters; it does not take --path")
    return args
