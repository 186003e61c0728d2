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
# Child elements of a result whose text we keep; everything else (<answer>, unknown) is discarded.
TEXT_FIELDS = frozenset({"first-name", "last-name", "student-number", "test-id"})
SUMMARY_TAG = "summary-marks"


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


def read_results(source: bytes | BinaryIO) -> Iterator[RawResult]:
    """Yield each result of the document in order; raise DocumentRejected for a fatal problem.

    Errors from reading `source` itself (e.g. a corrupt gzip stream) propagate unchanged: they are a
    storage fault, not a property of the document.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
    events = etree.iterparse(
        stream,
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,  # keep libxml2's depth/size limits: our documents need none of huge_tree's room
        remove_comments=True,
        remove_pis=True,
    )
    depth = 0
    position = 0
    current: RawResult | None = None
    try:
        for event, elem in events:
            if event == "start":
                depth += 1
                if depth == 1:
                    _check_root(elem)
                elif depth == 2 and _local(elem.tag) == RESULT_TAG:
                    position += 1
                    current = RawResult(position, scanned_on=elem.get("scanned-on"))
                continue
            depth -= 1
            if depth == 1:  # a child of the root ended: a result, or something to ignore
                if current is not None:
                    yield current
                    current = None
                _discard(elem)
            elif current is None:
                if depth > 1:
                    _discard(elem)  # content of an unknown top-level element
            elif depth == 2:
                _read_field(current, elem)
                _discard(elem)
            # deeper elements inside a result are kept until their field ends (its text may span them)
    except etree.XMLSyntaxError as exc:
        raise DocumentRejected(_syntax_problem(exc)) from None


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
