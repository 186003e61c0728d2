"""Fast reader of plain <mcq-test-results> documents: the same RawResults as xml_reader, without lxml
creating an element for every <answer> (a 50,000-result document has a million of them).

A document is read here while it stays *plain*, the way scanners write it: a UTF-8 prolog without a
DOCTYPE, a root without attributes, and results whose fields and answers are written literally:

    <mcq-test-result scanned-on="...">
        <first-name>KJ</first-name> ... <answer question="3" marks-available="1" marks-awarded="0">C</answer>
        ... <summary-marks available="20" obtained="13" />
    </mcq-test-result>

Why the values read here are exactly the ones lxml reports:
- libxml2 still checks every byte: it is fed the document, with xml_reader's hardened options, through
  a target that builds nothing, before any result in those bytes is read; a document it refuses is
  handed to xml_reader, which reports the same error.
- The patterns below take a value only where XML keeps characters as written: never with "&" (entity
  and character references), "<" (markup, CDATA, comments) or "\\r"; attribute values also without
  tab or newline (XML turns those into spaces). The root has no attributes and names are matched
  whole, so no namespace is in play. A result's content must be covered entirely by the patterns
  (fields, then the answers split at "</answer>", then fields), so nothing in it goes unread. The
  same <answer> markup repeats across a document: each distinct one is matched once, then looked up.
- A result that does not fit the patterns is parsed by lxml on its own and read by xml_reader's code:
  a result means the same alone as in a plain document (no namespaces or entities are declared
  around it), and it parses alone only if it is exactly one element.
- Anything else (another prolog or encoding, markup between results, a result lxml cannot parse
  alone, a refused byte) hands the rest of the document to xml_reader.read_results. Its stream
  starts with the prolog as written and blanks in place of the results already read, ending on the
  same line and column and (unless that part is one line with non-ASCII text) as many bytes long, so
  its error messages, positions included, are those of the original document.
The security properties are xml_reader's: a DOCTYPE never passes the prolog pattern, so such a
document goes to xml_reader before libxml2 sees a byte of it, and every parser here uses its options.
"""

from __future__ import annotations

import codecs
import io
import itertools
import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from lxml import etree

from shared.domain.xml_reader import PARSER_OPTIONS, RawResult, read_result, read_results

_CHUNK = 1 << 20
_MAX_PENDING = 16 * _CHUNK  # characters read past the last complete result
_PROLOG = re.compile(
    r"""\ufeff?(?:<\?xml[ \t\r\n]+version=(["'])1\.0\1(?:[ \t\r\n]+encoding=(["'])(?i:utf-8)\2)?"""
    r"""(?:[ \t\r\n]+standalone=(["'])(?:yes|no)\3)?[ \t\r\n]*\?>)?[ \t\r\n]*<mcq-test-results[ \t\r\n]*>"""
)
# Value patterns; bounded well below libxml2's limits on text and attribute length.
_TEXT = r"([^<&\r]{0,100000})"
_ATTR = r'="([^"<>&\t\n\r]{0,100000})"'
_OPENING = re.compile(r"[ \t\r\n]*<mcq-test-result(?=[ \t\r\n/>])")  # any result, plain or not
_START = re.compile(rf"[ \t\r\n]*<mcq-test-result(?:[ \t\r\n]+scanned-on{_ATTR})?[ \t\r\n]*>")
_END = "</mcq-test-result>"
_ROOT_END = re.compile(r"[ \t\r\n]*</mcq-test-results[ \t\r\n]*>[ \t\r\n]*")
_NAMES = ("first-name", "last-name", "student-number", "test-id")
_FIELD = (rf"[ \t\r\n]*(?:<({'|'.join(_NAMES)})>{_TEXT}</\1>"
          rf"|<summary-marks[ \t\r\n]+available{_ATTR}[ \t\r\n]+obtained{_ATTR}[ \t\r\n]*/>)")
_ONE_FIELD, _FIELDS = re.compile(_FIELD), re.compile(rf"(?:{_FIELD})*[ \t\r\n]*")
# The usual layout in one match each side of the answers (the general one takes two passes).
_USUAL_HEAD = re.compile("".join(rf"[ \t\r\n]*<{name}>{_TEXT}</{name}>" for name in _NAMES) + r"[ \t\r\n]*")
_USUAL_TAIL = re.compile(rf"[ \t\r\n]*<summary-marks[ \t\r\n]+available{_ATTR}[ \t\r\n]+obtained{_ATTR}[ \t\r\n]*/>[ \t\r\n]*")
# One answer without its end tag: the answers are split at "</answer>".
_ANSWER = re.compile(rf"[ \t\r\n]*<answer[ \t\r\n]+question{_ATTR}[ \t\r\n]+marks-available{_ATTR}"
                     rf"[ \t\r\n]+marks-awarded{_ATTR}[ \t\r\n]*>{_TEXT}")
_ANSWER_END = "</answer>"
_ROWS: dict[str, tuple[str, str, str, str]] = {}  # answer markup -> (question, available, awarded, text)
_CACHED_LENGTH = 200


class _Refused(Exception):
    """The rest of the document is not plain: xml_reader reads it."""


class _Nothing:
    """A parser target that builds nothing: libxml2 only checks the document."""

    def close(self) -> None:
        return None


def read_plain_results(source: bytes | BinaryIO) -> Iterator[RawResult]:
    """xml_reader.read_results, fast while the document is plain (see the module docstring)."""
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
    first = stream.read(_CHUNK)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        prolog = _PROLOG.match(text := decoder.decode(first))
    except UnicodeDecodeError:
        prolog = None
    if prolog is None:  # judged before libxml2 sees a byte: a DOCTYPE goes straight to xml_reader
        yield from read_results(io.BufferedReader(_Chain([first], stream)))
        return
    checker = etree.XMLParser(target=_Nothing(), **PARSER_OPTIONS)
    reader = _Reader(text, prolog.end(), decoder, len(first))
    try:
        checker.feed(first)
        yield from reader.results(final=False)
        while chunk := stream.read(_CHUNK):
            reader.unread, reader.size = chunk, reader.size + len(chunk)
            checker.feed(chunk)
            reader.add(chunk)
            yield from reader.results(final=False)
        checker.close()
        reader.add(b"", final=True)
        yield from reader.results(final=True)
    except (_Refused, etree.LxmlError, UnicodeDecodeError):
        yield from read_results(reader.rest(text[:prolog.end()].encode(), stream), position=reader.position)


class _Reader:
    """The decoded text not yet read, and where the part already read ended (for _blanks)."""

    def __init__(self, text: str, pos: int, decoder: codecs.IncrementalDecoder, size: int) -> None:
        self.text, self.pos, self.counted, self.decoder = text, pos, pos, decoder
        self.position = 0  # results read
        self.lines = self.column = 0  # line breaks and last line's length of the text read after the root tag
        self.unread = b""  # a chunk given to the checker but not yet decoded
        self.size = size  # bytes read from the source

    def add(self, chunk: bytes, final: bool = False) -> None:
        if len(self.text) - self.pos > _MAX_PENDING:
            raise _Refused  # no result ends in sight: xml_reader streams such a document better
        new = self.decoder.decode(chunk, final)
        self._count_lines()
        self.text, self.pos, self.counted, self.unread = self.text[self.pos:] + new, 0, 0, b""

    def _count_lines(self) -> None:
        """Count the lines of the text read since the last count, as XML counts them (\\r\\n, \\r, \\n).
        The text read always ends with ">", so no \\r\\n is split between two counts."""
        text, start, stop = self.text, self.counted, self.pos
        if text.find("\r", start, stop) < 0:
            self.lines += text.count("\n", start, stop)
            last = text.rfind("\n", start, stop)
        else:
            self.lines += text.count("\n", start, stop) + text.count("\r", start, stop) - text.count("\r\n", start, stop)
            last = max(text.rfind("\n", start, stop), text.rfind("\r", start, stop))
        self.column = stop - last - 1 if last >= 0 else self.column + stop - start
        self.counted = stop

    def results(self, final: bool) -> Iterator[RawResult]:
        text = self.text
        while True:
            start = _START.match(text, self.pos)
            opening = start or _OPENING.match(text, self.pos)
            if opening is None:
                # The root's end tag, or markup that is not plain (unless the chunk ends inside a tag).
                if final and not _ROOT_END.fullmatch(text, self.pos) or not final and (
                        text.find(">", self.pos) >= 0 and not _ROOT_END.match(text, self.pos)):
                    raise _Refused
                return
            end = text.find(_END, opening.end())
            if end < 0:
                if final:
                    raise _Refused
                return  # the result goes on in the next chunk
            position = self.position + 1
            raw = _plain_result(position, start[1], text, start.end(), end) if start else None
            raw = raw or _lone_result(position, text[text.index("<", self.pos):end + len(_END)])
            self.position, self.pos = position, end + len(_END)
            yield raw

    def rest(self, prolog: bytes, stream: BinaryIO) -> BinaryIO:
        """The document with blanks in place of the results read: its prolog as written, then blanks
        that end on the same line and column, and as long in bytes where they can be (libxml2's message
        for some errors depends on where the reads of the document end: reads fall where they did)."""
        self._count_lines()
        unread = [self.text[self.pos:].encode(), self.decoder.getstate()[0], self.unread]
        size = self.size - len(prolog) - sum(map(len, unread))
        padding = size - self.lines - self.column if self.lines else 0
        pieces = itertools.chain([prolog], _blanks(b" ", padding), _blanks(b"\n", self.lines),
                                 _blanks(b" ", self.column), unread)
        return io.BufferedReader(_Chain(pieces, stream))


def _plain_result(position: int, scanned_on: str | None, text: str, begin: int, end: int) -> RawResult | None:
    """The result whose content is text[begin:end], or None when it is not plain."""
    last = text.rfind(_ANSWER_END, begin, end)
    first = text.find("<answer", begin, last) if last >= 0 else end
    if first < 0:
        return None
    after = last + len(_ANSWER_END) if last >= 0 else end  # the answers are text[first:last] + "</answer>"
    usual_head, usual_tail = _USUAL_HEAD.fullmatch(text, begin, first), _USUAL_TAIL.fullmatch(text, after, end)
    if usual_head and usual_tail:
        first_name, last_name, student_number, test_id = usual_head.groups()
        raw = RawResult(position, {"first-name": first_name, "last-name": last_name, "student-number": student_number,
                                   "test-id": test_id}, True, *usual_tail.groups(), scanned_on)
    elif _FIELDS.fullmatch(text, begin, first) and _FIELDS.fullmatch(text, after, end):
        raw = RawResult(position, scanned_on=scanned_on)
        for name, value, available, obtained in _ONE_FIELD.findall(text, begin, first) + _ONE_FIELD.findall(
                text, after, end):
            key = name or "summary-marks"
            if key in raw.texts or key == "summary-marks" and raw.has_summary:
                raw.duplicates.append(key)
            elif name:
                raw.texts[name] = value
            else:
                raw.has_summary, raw.available, raw.obtained = True, available, obtained
    else:
        return None
    if last >= 0:
        pieces = text[first:last].split(_ANSWER_END)
        rows = list(map(_ROWS.get, pieces))
        if not all(rows):
            for k, piece in enumerate(pieces):
                if rows[k] is None:
                    match = _ANSWER.fullmatch(piece)
                    if match is None:
                        return None
                    rows[k] = match.groups()
                    if len(piece) <= _CACHED_LENGTH:  # a long one is unlikely to repeat: not kept
                        if len(_ROWS) >= 65_536:
                            _ROWS.clear()
                        _ROWS[piece] = rows[k]
        raw.answers = rows
    return raw


def _lone_result(position: int, markup: str) -> RawResult:
    try:
        elem = etree.fromstring(markup.encode(), etree.XMLParser(**PARSER_OPTIONS))
    except etree.LxmlError:
        raise _Refused from None
    return read_result(elem, position)


def _blanks(blank: bytes, count: int) -> Iterator[bytes]:
    while count > 0:  # a piece at a time: a one-line document may need millions
        yield blank * min(count, _CHUNK)
        count -= _CHUNK


class _Chain(io.RawIOBase):
    """Some bytes, then the rest of a stream."""

    def __init__(self, head: Iterable[bytes], rest: BinaryIO) -> None:
        self._head, self._rest, self._buffer = iter(head), rest, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, into: bytearray | memoryview) -> int:
        while not self._buffer:
            piece = next(self._head, None)
            if piece is None:
                data = self._rest.read(len(into))
                into[:len(data)] = data
                return len(data)
            self._buffer = memoryview(piece)
        n = min(len(into), len(self._buffer))
        into[:n], self._buffer = self._buffer[:n], self._buffer[n:]
        return n
