"""Bytes <-> text for Python source, exactly: encoding cookie, BOM and newlines survive.

``status`` runs all of this, so it imports neither ``re`` nor ``tokenize`` unless a file
needs them (see :mod:`mmcv_patcher.records` for why that matters).
"""

from __future__ import annotations

import codecs
import hashlib

from mmcv_patcher.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


class UndecodableSource(ValueError):
    """The file's bytes are not text that can be written back byte for byte."""


class Source(NamedTuple):
    """A file's text and the codec that turns it back into the very same bytes."""

    text: str
    encoding: str

    def encode(self, text: str) -> bytes:
        """``text`` as bytes in this file's encoding (a BOM is kept by ``utf-8-sig``)."""
        return text.encode(self.encoding)


def decode(data: bytes) -> Source:
    """Decodes Python source the way the interpreter does (PEP 263 cookie, BOM).

    Newlines are not translated. Raises :class:`UndecodableSource` when the bytes do not
    decode, or do not encode back to themselves, so no edit can change other bytes.
    """
    try:
        encoding = _encoding(data)
        text = data.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError) as error:
        raise UndecodableSource(f"not decodable as Python source: {error}") from None
    if text.encode(encoding) != data:
        raise UndecodableSource(f"does not round-trip through {encoding}")
    return Source(text, encoding)


def _encoding(data: bytes) -> str:
    """The codec Python reads ``data`` with. A PEP 263 cookie can only be on the first two
    lines and must contain "coding"; without one it is UTF-8 (``utf-8-sig`` after a BOM),
    and ``tokenize`` reads the cookie only when there may be one."""
    first = data.find(b"\n")
    second = data.find(b"\n", first + 1) if first >= 0 else -1
    if b"coding" not in (data if second < 0 else data[:second]):
        return "utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"
    import io
    import tokenize

    return tokenize.detect_encoding(io.BytesIO(data).readline)[0]


def sha256_hex(data: bytes) -> str:
    """Hex sha256, the form kept in markers and compared with RECORD hashes."""
    return hashlib.sha256(data).hexdigest()


def line_at(text: str, offset: int) -> int:
    """The 1-based line of ``offset`` in ``text``, counting newlines as Python does
    (``\\r\\n``, ``\\r`` and ``\\n`` each end a line)."""
    return text.count("\n", 0, offset) + text.count("\r", 0, offset) - text.count("\r\n", 0, offset) + 1


def line_starts(text: str) -> List[int]:
    """The offset where each line of ``text`` starts (index 0 is line 1), counting newlines
    as :func:`line_at` does; one more entry than lines when ``text`` ends with a newline."""
    import re  # only the codemod needs every line, and LibCST imports re anyway

    return [0] + [match.end() for match in re.finditer(r"\r\n|\r|\n", text)]


def first_newline(text: str) -> str:
    """The newline ``text`` uses first ("\\n" if none): what LibCST takes as its default."""
    found = [at for at in (text.find("\r"), text.find("\n")) if at >= 0]
    if not found:
        return "\n"
    return "\r\n" if text.startswith("\r\n", min(found)) else text[min(found)]
