"""Bytes <-> text for Python source, exactly: encoding cookie, BOM and newlines survive."""

import base64
import hashlib
import io
import os
import re
import stat
import tokenize
from typing import List, NamedTuple, Optional

from mmcv_patcher.errors import Error

#: mmcv's largest source files are tens of KB; anything this big is no mmcv file, and refused.
MAX_SOURCE_BYTES = 2 * 1024 * 1024


class UndecodableSource(Error, ValueError):
    """The file's bytes are not text that can be written back byte for byte."""


class Source(NamedTuple):
    """A file's text and the codec that turns it back into the very same bytes."""

    text: str
    encoding: str

    def encode(self, text: str) -> bytes:
        """``text`` as bytes in this file's encoding (a BOM is kept by ``utf-8-sig``)."""
        return text.encode(self.encoding)


def read_source(path: str, limit: int = MAX_SOURCE_BYTES) -> bytes:
    """The bytes of a file the tool reads (a source, an editable-install hook): a regular file
    of at most ``limit`` bytes. Anything else (a FIFO, a socket, ``/dev/zero`` behind a
    symlink, a huge file) is refused with :class:`UndecodableSource` at once, without
    reading it or waiting for a writer."""
    _check_regular(os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        _check_regular(os.fstat(fd).st_mode)  # it may have been swapped since
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UndecodableSource(f"it is over {limit // 2**20} MB, far larger than any mmcv file; refusing to read it")
    return data


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
        )
        raise UndecodableSource(f"it is {kind}, not a regular file")


def decode(data: bytes) -> Source:
    """Decodes Python source the way the interpreter does (PEP 263 cookie, BOM), with
    :func:`tokenize.detect_encoding`.

    Newlines are not translated. Raises :class:`UndecodableSource` when the bytes do not
    decode, or do not encode back to themselves, so no edit can change other bytes.
    """
    try:
        encoding = tokenize.detect_encoding(io.BytesIO(data).readline)[0]
        text = data.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError) as error:
        raise UndecodableSource(f"not decodable as Python source: {error}") from None
    if text.encode(encoding) != data:
        raise UndecodableSource(f"does not round-trip through {encoding}")
    return Source(text, encoding)


def sha256_hex(data: bytes) -> str:
    """Hex sha256: the form our marker keeps of the bytes a revert must restore."""
    return hashlib.sha256(data).hexdigest()


def record_hash(data: bytes, algorithm: str = "sha256") -> str:
    """RECORD's hash field for ``data``, ``<algorithm>=<urlsafe base64, unpadded>`` (PEP 376,
    the wheel spec), so RECORD entries are compared as written."""
    return f"{algorithm}=" + base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).decode("ascii").rstrip("=")


def matches_record(field: str, data: bytes) -> Optional[bool]:
    """Whether ``data`` is what a RECORD hash field says, in the field's own algorithm
    (RECORD allows any of ``hashlib.algorithms_guaranteed``); None when the field names no
    such algorithm."""
    algorithm = field.partition("=")[0]
    if algorithm not in hashlib.algorithms_guaranteed or algorithm.startswith("shake_"):
        return None
    return record_hash(data, algorithm) == field.rstrip("=")


def line_at(text: str, offset: int) -> int:
    """The 1-based line of ``offset`` in ``text``, counting newlines as Python does
    (``\\r\\n``, ``\\r`` and ``\\n`` each end a line)."""
    return len(_NEWLINE.findall(text, 0, offset)) + 1


def line_starts(text: str) -> List[int]:
    """The offset where each line of ``text`` starts (index 0 is line 1), counting newlines
    as :func:`line_at` does; one more entry than lines when ``text`` ends with a newline."""
    return [0] + [match.end() for match in _NEWLINE.finditer(text)]


def first_newline(text: str) -> str:
    """The newline ``text`` uses first ("\\n" if none): what LibCST takes as its default."""
    match = _NEWLINE.search(text)
    return match.group() if match else "\n"


def line_end(text: str, offset: int) -> int:
    """Where the line holding ``offset`` ends: the offset of its newline, or the text's end."""
    found = _NEWLINE.search(text, offset)
    return found.start() if found else len(text)


_NEWLINE = re.compile(r"\r\n|\r|\n")
