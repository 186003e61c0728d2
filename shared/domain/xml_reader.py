"""Hardened, streaming reader of <mcq-test-results> XML.

Yields one RawResult (strings exactly as found) per <mcq-test-result>; it does not judge values, that is
validation.py's job. Memory stays flat: every element is cleared once read and its earlier siblings
are deleted, so a 100,000-result document never exists as a tree.

Security: entities are never resolved, nothing is fetched (no network, no DTD loading), and any DOCTYPE
is refused outright before the first result is read. That one rule covers billion-laughs, external
entities (XXE) and parameter entities, since none of them can be declared without a DOCTYPE.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from lxml import etree

from shared.domain.model import Problem

ROOT_TAG = "mcq-test-results"
RESULT_TAG = "mcq-test-result"
# Child elements of a result whose text we keep; anything else (unknown elements) is discarded.
TEXT_FIELDS = frozenset({"first-name", "last-name", "student-number", "test-id"})
SUMMARY_TAG = "summary-marks"
ANSWER_TAG = "answer"
_FIELD_TAGS = tuple(f"{{*}}{name}" for name in (*sorted(TEXT_FIELDS), SUMMARY_TAG))
_ANSWER = f"{{*}}{ANSWER_TAG}"


class DocumentRejected(Exception):
    """A problem that stops reading the document (not well-formed, DOCTYPE, wrong root)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass(slots=True)
class RawResult:
    position: int
    texts: dict[str, str] = field(default_factory=dict)  # first occurrence of each TEXT_FIELDS element
    has_summary: bool = False
    available: str | None = None  # summary-marks/@available as written, None when absent
    obtained: str | None = None
    scanned_on: str | None = None
    duplicates: list[str] = field(default_factory=list)  # fields that occurred more than once
    # Each <answer> as (question, marks-available, marks-awarded, text), attributes None when absent.
    answers: list[tuple[str | None, str | None, str | None, str]] = field(default_factory=list)


def _local(tag: object) -> str:
    # Namespaced documents are read by local name; comments/PIs have non-string tags.
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _discard(elem: etree._Element) -> None:
    elem.clear(keep_tail=False)
    parent = elem.getparent()
    if parent is not None:
        while elem.getprevious() is not None:
            del parent[0]


def _text(elem: etree._Element) -> str:
    return "".join(elem.itertext()) if len(elem) else (elem.text or "")


def _syntax_problem(exc: etree.XMLSyntaxError) -> Problem:
    line, column = exc.position if exc.position else (0, 0)
    last = exc.error_log.last_error if exc.error_log else None
    detail = (last.message if last is not None else str(exc)).strip()
    where = f"line {line}, column {column}" if line else "end of input"
    return Problem("not-well-formed", f"document is not well-formed XML at {where}: {detail}")


def read_results(source: bytes | BinaryIO, *, position: int = 0) -> Iterator[RawResult]:
    """Yield each result of the document in order; raise DocumentRejected for a fatal problem.

    Errors from reading `source` itself (e.g. a corrupt gzip stream) propagate unchanged: they are a
    storage fault, not a property of the document. `position` is the number of results before the
    first one in `source` (plain_reader hands over the rest of a document this way).
    """
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
    stream = _check_root_first(stream)
    # Only result elements (and the root) surface in Python; their children are picked by tag
    # inside libxml2, which is what keeps a 100,000-result document fast.
    events = etree.iterparse(
        stream,
        events=("start", "end"),
        tag=(f"{{*}}{ROOT_TAG}", f"{{*}}{RESULT_TAG}"),
        **PARSER_OPTIONS,
    )
    root: etree._Element | None = None
    try:
        for event, elem in events:
            if root is None:
                root = elem.getroottree().getroot()
            if elem is root or elem.getparent() is not root:
                continue  # results count only as direct children of the root
            if event == "start":
                position += 1
                continue
            yield read_result(elem, position)
            _discard(elem)
    except etree.XMLSyntaxError as exc:
        raise DocumentRejected(_syntax_problem(exc)) from None


PARSER_OPTIONS = {"resolve_entities": False, "no_network": True, "load_dtd": False, "dtd_validation": False,
                   "huge_tree": False,  # keep libxml2's depth/size limits: our documents need none of huge_tree's room
                   "remove_comments": True, "remove_pis": True}
_SNIFF_CHUNK = 16 * 1024


class _Replay(io.RawIOBase):
    """The bytes already sniffed, then the rest of the stream."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix, self._rest = memoryview(prefix), rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            n = len(self._prefix) if size is None or size < 0 else min(size, len(self._prefix))
            head, self._prefix = bytes(self._prefix[:n]), self._prefix[n:]
            return head
        return self._rest.read(size)


def _check_root_first(stream: BinaryIO) -> BinaryIO:
    """Judge the root element (and any DOCTYPE) before the document body is read.

    The main parse only surfaces results, so a document of another kind would otherwise be read
    to its end before being refused; this reads just up to its first start tag.
    """
    sniffer = etree.XMLPullParser(events=("start",), **PARSER_OPTIONS)
    seen = bytearray()
    while True:
        chunk = stream.read(_SNIFF_CHUNK)
        seen += chunk
        failure = None
        try:
            if chunk:
                sniffer.feed(chunk)
            else:
                sniffer.close()
        except etree.XMLSyntaxError as exc:
            failure = exc  # the root may have started before the error: judge it first
        for _, elem in sniffer.read_events():
            _check_root(elem)
            return _Replay(bytes(seen), stream)  # the main parse meets any error itself, in context
        if failure is not None:
            raise DocumentRejected(_syntax_problem(failure)) from None
        if not chunk:
            return _Replay(bytes(seen), stream)


def _check_root(root: etree._Element) -> None:
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.system_url or docinfo.public_id:
        raise DocumentRejected(
            Problem(
                "doctype-forbidden",
                "document has a DOCTYPE declaration; DTDs and entity declarations are not accepted",
            )
        )
    if _local(root.tag) != ROOT_TAG:
        raise DocumentRejected(
            Problem(
                "wrong-root-element",
                f"root element is <{_local(root.tag) or root.tag}>, expected <{ROOT_TAG}>",
            )
        )


def read_result(elem: etree._Element, position: int) -> RawResult:
    """The RawResult of one parsed <mcq-test-result> element."""
    current = RawResult(position, scanned_on=elem.get("scanned-on"))
    for child in elem.iterchildren(*_FIELD_TAGS):  # unknown children skipped in C
        _read_field(current, child)
    current.answers = [(a.get("question"), a.get("marks-available"), a.get("marks-awarded"), a.text or "")
                       for a in elem.iterchildren(_ANSWER)]
    return current


def _read_field(raw: RawResult, elem: etree._Element) -> None:
    name = _local(elem.tag)
    if name in TEXT_FIELDS:
        if name in raw.texts:
            raw.duplicates.append(name)
        else:
            raw.texts[name] = _text(elem)
    elif name == SUMMARY_TAG:
        if raw.has_summary:
            raw.duplicates.append(name)
        else:
            raw.has_summary = True
            raw.available = elem.get("available")
            raw.obtained = elem.get("obtained")
