"""The direct reading of a plain command line, checked against argparse built from the same table."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcv_patcher import arguments

COMMAND_NAMES = [command.name for command in arguments.COMMANDS]
FLAGS = sorted({option.flag for command in arguments.COMMANDS for option in command.options})
VALUES = ["", "x", "/site-packages", "-x", "--json", "12000", "007", "+5", "1_000", "-3", "cpu", "cuda", "gpu", "a=b", "--", "١٢"]


def _argparse(argv: List[str]) -> Optional[Dict[str, Any]]:
    """argparse's reading, or None when it refuses (or prints help and exits)."""
    try:
        with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
            return vars(arguments.parser().parse_args(argv))
    except SystemExit:
        return None


def _word(flag: str, value: str, joined: bool) -> List[str]:
    return [f"{flag}={value}"] if joined else [flag, value]


command_lines = st.builds(
    lambda command, words: [command] + [w for chunk in words for w in chunk],
    st.sampled_from(COMMAND_NAMES + ["frobnicate", "--version"]),
    st.lists(
        st.one_of(
            st.sampled_from(FLAGS + ["--pat", "--dry", "-h", "positional", "--json=1"]).map(lambda flag: [flag]),
            st.builds(_word, st.sampled_from(FLAGS), st.sampled_from(VALUES), st.booleans()),
        ),
        max_size=6,
    ),
)


@settings(max_examples=600, deadline=None)
@given(command_lines)
def test_whatever_is_read_directly_argparse_reads_the_same(argv: List[str]) -> None:
    plain = arguments.parse_plain(argv)
    if plain is not None:
        assert vars(plain) == _argparse(argv), argv


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "--check", "--path", "/x", "--json"],
        ["apply", "--path=/x", "--patch", "a", "--patch=b", "--force", "--dry-run", "--python", "/usr/bin/python3"],
        ["revert", "--path", "x", "--path", "y"],
        ["verify", "--boxes", "50000", "--device", "cuda"],
        ["status", "--all", "--python", "a", "--python", "b"],
    ],
)
def test_the_command_lines_people_type_are_read_directly(argv: List[str]) -> None:
    plain = arguments.parse_plain(argv)
    assert plain is not None and vars(plain) == _argparse(argv)


@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["status", "-h"], ["status", "--pat", "x"], ["status", "--path"], ["verify", "--boxes", "+5"], ["apply", "--json=yes"], ["status", "extra"]],
)
def test_anything_else_is_left_to_argparse(argv: List[str]) -> None:
    assert arguments.parse_plain(argv) is None
