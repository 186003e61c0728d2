"""plain_reader must give exactly what xml_reader gives: every document below is parsed both ways and
the ParsedDocuments (results, answer sheets, errors, warnings, counts) must be equal."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator

import pytest

from shared.domain import plain_reader, results_document, xml_reader
from shared.domain.model import AnswerSheet
from shared.domain.results_document import ParsedDocument, parse_results_document
from shared.domain.validation import _each_answer, _well_formed_sheet
from tests.documents import make_document, make_large_document

ANSWERS = "".join(f'<answer question="{q}" marks-available="1" marks-awarded="{q % 2}">{"ABCD"[q % 4]}</answer>\n'
                  for q in range(4))


def one(**spec: object) -> bytes:
    return make_document([{"obtained": 2, "answers": 0, "extra": ANSWERS, **spec}, {}])


def swap(old: str, new: str, doc: bytes | None = None) -> bytes:
    doc = one() if doc is None else doc
    assert old.encode() in doc, old
    return doc.replace(old.encode(), new.encode(), 1)


def large(n: int = 700) -> bytes:
    return b"".join(make_large_document(n))  # ~1.2 MB: crosses the reader's 1 MiB chunks


def nth(doc: bytes, old: bytes, new: bytes, n: int) -> bytes:
    """`doc` with the n-th (from 1) occurrence of `old` replaced."""
    at = -1
    for _ in range(n):
        at = doc.index(old, at + 1)
    return doc[:at] + new + doc[at + len(old):]


TRICKY = {
    "sample-like": one(),
    "namespaced": swap("<mcq-test-results>", '<mcq-test-results xmlns="urn:x">'),
    "prefixed": swap("<mcq-test-results>", '<m:mcq-test-results xmlns:m="urn:m">',
                     swap("</mcq-test-results>", "</m:mcq-test-results>")),
    "namespace-on-a-result": swap("<mcq-test-result ", '<mcq-test-result xmlns="urn:r" '),
    "answer-attributes-reordered": swap('question="1" marks-available="1"', 'marks-available="1" question="1"'),
    "summary-attributes-reordered": swap('available="20" obtained="2"', 'obtained="2" available="20"'),
    "entity-in-text": swap("<last-name>Alysander", "<last-name>Smith &amp; Jones"),
    "char-reference-in-text": swap(">A</answer>", ">&#x41;</answer>"),
    "entity-in-attribute": swap('question="2"', 'question="&#50;"'),
    "lt-in-attribute": swap('question="2"', 'question="2&lt;3"'),
    "gt-in-attribute": swap('question="2"', 'question="2>3"'),
    "gt-in-scanned-on": swap('scanned-on="2017', 'scanned-on=">2017'),
    "tab-in-attribute": swap('question="2"', 'question="2\t"'),
    "newline-in-scanned-on": swap('scanned-on="2017', 'scanned-on="\n2017'),
    "cdata-in-answer": swap(">A</answer>", "><![CDATA[A]]></answer>"),
    "cdata-in-name": swap("<first-name>KJ", "<first-name><![CDATA[K<J]]>"),
    "comment-in-result": swap("<test-id>", "<!-- note --><test-id>"),
    "comment-in-answer": swap(">A</answer>", ">A<!-- x --></answer>"),
    "comment-splits-a-name": swap("<first-name>KJ", "<first-name>K<!-- -->J"),
    "pi-in-answer": swap(">A</answer>", "><?scanner x?>A</answer>"),
    "comment-between-results": swap("</mcq-test-result>", "</mcq-test-result><!-- next -->"),
    "text-between-results": swap("</mcq-test-result>", "</mcq-test-result>stray text"),
    "comment-after-root": one() + b"<!-- trailing -->\n",
    "nested-result-in-unknown-element": swap("<test-id>", "<x><mcq-test-result><test-id>1</test-id></mcq-test-result></x><test-id>"),
    "unknown-element": swap("<test-id>", "<seat row='3'>12</seat><test-id>"),
    "self-closing-answer": swap('<answer question="3" marks-available="1" marks-awarded="1">D</answer>',
                                '<answer question="3" marks-available="1" marks-awarded="1"/>'),
    "empty-answer": swap(">D</answer>", "></answer>"),
    "answer-without-question": swap('question="1" ', ""),
    "answer-without-marks": swap(' marks-awarded="0">C', ">C"),
    "duplicate-attribute": swap('question="1"', 'question="1" question="1"'),
    "duplicate-question": swap('question="1"', 'question="0"'),
    "blank-question": swap('question="1"', 'question=" "'),
    "padded-question": swap('question="1"', 'question=" 1 "'),
    "marks-007": swap('marks-available="1" marks-awarded="1">B', 'marks-available="007" marks-awarded="1">B'),
    "marks-padded": swap('marks-awarded="1">B', 'marks-awarded=" 1 ">B'),
    "marks-negative": swap('marks-awarded="1">B', 'marks-awarded="-1">B'),
    "marks-empty": swap('marks-awarded="1">B', 'marks-awarded="">B'),
    "marks-comma": swap('marks-available="1" marks-awarded="1">B', 'marks-available="1,1" marks-awarded="1">B'),
    "marks-zero-available": swap('marks-available="1" marks-awarded="0">A', 'marks-available="0" marks-awarded="0">A'),
    "marks-plus": swap('marks-awarded="1">B', 'marks-awarded="+1">B'),
    "marks-huge": swap('marks-available="1" marks-awarded="1">B', f'marks-available="{"9" * 40}" marks-awarded="1">B'),
    "awarded-above-available": swap('marks-awarded="1">B', 'marks-awarded="2">B'),
    "padded-option": swap(">B</answer>", ">  B \n</answer>"),
    "non-ascii": one(first_name="Zoë", last_name="Ōtake 李", student_number="٠١٢"),
    "invisible-id": one(student_number="12\u200b3"),
    "very-long-name": one(last_name="x" * 150_000),
    "long-name": one(last_name="y" * 90_000),
    "long-option": swap(">B</answer>", f">{'B' * 120_000}</answer>"),
    "crlf": one().replace(b"\n", b"\r\n"),
    "lone-cr": one().replace(b"\n", b"\r"),
    "cr-in-name": swap("<first-name>KJ", "<first-name>K\r\nJ"),
    "spaces-in-tags": swap('<answer question="1"', '<answer  question = "1"', swap("</answer>", "</answer >")),
    "single-quotes": swap('question="1"', "question='1'"),
    "fields-reordered": one().replace(b"\t\t<first-name>KJ</first-name>\n", b"").replace(
        b"</test-id>\n", b"</test-id>\n\t\t<first-name>KJ</first-name>\n", 1),
    "summary-first": one().replace(b"<first-name>", b'<summary-marks available="3" obtained="1"/><first-name>', 1),
    "duplicate-field": swap("<test-id>", "<test-id>1</test-id><test-id>"),
    "duplicate-summary": swap("<test-id>", '<summary-marks available="3" obtained="1"/><test-id>'),
    "missing-summary": one(summary=False),
    "summary-extra-attribute": swap("<summary-marks ", '<summary-marks by="x" '),
    "summary-with-end-tag": swap('obtained="2" />', 'obtained="2"></summary-marks>'),
    "empty-field": swap("<test-id>9863</test-id>", "<test-id/>"),
    "unusable-summary": one(available="007", obtained=" 1 "),
    "bad-summary": one(available="12.5", obtained="-1"),
    "scanned-on-unparseable": one(scanned_on="yesterday"),
    "no-scanned-on": one(scanned_on=None),
    "result-attribute": swap("<mcq-test-result ", '<mcq-test-result id="1" '),
    "self-closing-result": swap("</mcq-test-results>", "<mcq-test-result/></mcq-test-results>"),
    "xml-lang": swap("<first-name>", '<first-name xml:lang="en">'),
    "bom": b"\xef\xbb\xbf" + one(),
    "no-declaration": one().split(b"\n", 1)[1],
    "single-quoted-declaration": swap('<?xml version="1.0" encoding="UTF-8" ?>', "<?xml version='1.0' encoding='utf-8'?>"),
    "standalone": swap('encoding="UTF-8" ?>', 'encoding="UTF-8" standalone="yes"?>'),
    "latin-1": make_document([{"first_name": "Zoë"}], encoding="ISO-8859-1"),
    "utf-16": make_document([{"first_name": "Tomás"}], encoding="UTF-16"),
    "doctype": swap("<mcq-test-results>", "<!DOCTYPE mcq-test-results><mcq-test-results>"),
    "comment-in-prolog": swap("<mcq-test-results>", "<!-- c --><mcq-test-results>"),
    "wrong-root": make_document([{}], root="results"),
    "no-results": make_document([]),
    "invalid-utf8": one().replace(b"<first-name>KJ", b"<first-name>K\xff", 1),
    "control-character": swap("<first-name>KJ", "<first-name>K\x01"),
    "cdata-end-in-text": swap("<first-name>KJ", "<first-name>K]]>"),
    "truncated": one()[:-40],
    "mismatched-tag": swap("</test-id>", "</test-ID>"),
    "unbound-prefix": swap("<test-id>", "<x:y/><test-id>"),
    "content-after-root": one() + b"<mcq-test-results/>",
    "empty": b"",
    "undefined-entity": swap("<first-name>KJ", "<first-name>&nbsp;KJ"),
    "xml-1.1": swap('version="1.0"', 'version="1.1"'),
    "utf8-alias": swap('encoding="UTF-8"', 'encoding="UTF8"'),
    "fields-between-answers": swap('<answer question="2"', '<test-id>1</test-id><answer question="2"'),
    "root-only": make_document([]).replace(b"</mcq-test-results>", b""),
    "self-closing-root": b'<?xml version="1.0"?><mcq-test-results/>',
    "root-with-attribute": swap("<mcq-test-results>", '<mcq-test-results version="2">'),
    "error-in-second-chunk": nth(large(), b"</first-name>", b"</first-nam>", 650),
    "truncated-in-second-chunk": large()[:-1000],
    "invalid-utf8-in-second-chunk": nth(large(), b"<first-name>", b"<first-name>\xc3", 700),
    "odd-result-in-second-chunk": nth(large(), b"<last-name>", b"<last-name>&amp;", 690),
    "markup-between-results-in-second-chunk": nth(large(), b"</mcq-test-result>", b"</mcq-test-result><x/>", 690),
    "single-line": large().replace(b"\n", b"").replace(b"\t", b"  "),
    "single-line-error-late": nth(large().replace(b"\n", b""), b"</last-name>", b"</last-nam>", 690),
    "results-on-one-line-error-late": nth(large().replace(b"</mcq-test-result>\n\t<", b"</mcq-test-result> <"),
                                          b"<mcq-test-result scanned-on", b"<mcq-test-result scanned-on=x", 690),
    "undefined-entity-in-first-result": nth(large(), b"<first-name>", b"<first-name>&nbsp;", 1),
    "undefined-entity-in-third-result": nth(large(), b"<first-name>", b"<first-name>&nbsp;", 3),
    "undefined-entity-in-second-chunk": nth(large(), b"<first-name>", b"<first-name>&nbsp;", 650),
    "unbound-prefix-in-second-chunk": nth(large(), b"<test-id>", b"<x:y/><test-id>", 650),
    "crlf-undefined-entity-in-second-chunk": nth(large().replace(b"\n", b"\r\n"), b"<first-name>",
                                                 b"<first-name>&nbsp;", 650),
    "single-line-undefined-entity-late": nth(large().replace(b"\n", b""), b"<first-name>", b"<first-name>&nbsp;", 650),
    "large": large(),
}


def reference(source: bytes | io.BytesIO, monkeypatch: pytest.MonkeyPatch, max_errors: int = 1000) -> ParsedDocument:
    with monkeypatch.context() as m:
        m.setattr(results_document, "read_plain_results", xml_reader.read_results)
        return parse_results_document(source, max_errors=max_errors)


@pytest.fixture(params=[None, 200, 4096], ids=["1MiB-chunks", "200-byte-chunks", "4KiB-chunks"])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.param:
        monkeypatch.setattr(plain_reader, "_CHUNK", request.param)
    yield


@pytest.mark.parametrize("name", TRICKY)
def test_same_document_as_xml_reader(name: str, chunk: None, monkeypatch: pytest.MonkeyPatch) -> None:
    body = TRICKY[name]
    expected = reference(body, monkeypatch)
    assert parse_results_document(body) == expected
    assert parse_results_document(io.BytesIO(body)) == expected
    assert parse_results_document(gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(body)))) == expected
    assert parse_results_document(body, max_errors=2) == reference(body, monkeypatch, max_errors=2)


@pytest.mark.parametrize("seed", range(4))
def test_same_generated_documents_as_xml_reader(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"".join(make_large_document(300, seed=seed))
    assert parse_results_document(body) == reference(body, monkeypatch)


def test_a_plain_document_is_read_without_lxml_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("read with lxml elements")

    monkeypatch.setattr(plain_reader, "read_results", refuse)
    monkeypatch.setattr(plain_reader, "read_result", refuse)
    doc = parse_results_document(large())
    assert doc.valid and len(doc.results) == 700


def test_an_odd_result_alone_is_parsed_by_lxml(monkeypatch: pytest.MonkeyPatch) -> None:
    alone: list[int] = []

    def read_result(elem: object, position: int) -> xml_reader.RawResult:
        alone.append(position)
        return xml_reader.read_result(elem, position)

    monkeypatch.setattr(plain_reader, "read_result", read_result)
    doc = parse_results_document(TRICKY["odd-result-in-second-chunk"])
    assert alone == [690]
    assert doc.results[689].last_name.startswith("&")


def test_a_result_longer_than_the_reader_holds_goes_to_xml_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    body = TRICKY["very-long-name"]
    expected = reference(body, monkeypatch)
    handed_over: list[int] = []

    def read_results(source: object, position: int = 0) -> Iterator[xml_reader.RawResult]:
        handed_over.append(position)
        return xml_reader.read_results(source, position=position)

    monkeypatch.setattr(plain_reader, "_CHUNK", 1000)
    monkeypatch.setattr(plain_reader, "_MAX_PENDING", 5000)
    monkeypatch.setattr(plain_reader, "read_results", read_results)
    assert parse_results_document(body) == expected
    assert handed_over == [0]


def test_long_values_are_not_kept_in_the_caches_of_repeated_values() -> None:
    from shared.domain import validation

    doc = make_document([{"available": 2, "obtained": 1, "answers": 0, "extra": (
        f'<answer question="{q}" marks-available="1" marks-awarded="{q}">{"B" * 5000}</answer>'
        f'<answer question="{q + 1}" marks-available="{"0" * 5000}1" marks-awarded="0">A</answer>')}
        for q in range(2)])
    assert parse_results_document(doc).valid
    assert max(map(len, plain_reader._ROWS), default=0) <= plain_reader._CACHED_LENGTH
    assert max((len(row[0]) + len(row[3]) for row in validation._USABLE), default=0) <= validation._CACHED_LENGTH
    assert max(map(len, validation._NUMBERS), default=0) <= validation._CACHED_LENGTH


ROWS = [
    [("1", "1", "1", "A"), ("2", "1", "0", " B ")],
    [(" 1 ", "2", "2", "")],
    [("1", "1", "1", "A"), ("1", "1", "1", "B")],
    [("1", "007", "1", "A")],
    [("1", " 1", "1", "A")],
    [("1", "1", "2", "A")],
    [("1", "0", "0", "A")],
    [("1", None, "0", "A")],
    [(None, "1", "0", "A")],
    [("", "1", "0", "A")],
    [("1", "1,1", "1", "A")],
    [("1", "1234567890", "1", "A")],
    [("1", "123456789", "123456789", "A"), ("2", "5", "0", "")],
]


@pytest.mark.parametrize("rows", ROWS)
def test_the_answer_sheet_shortcut_agrees_with_reading_each_answer(rows: list[tuple]) -> None:
    problems: list[str] = []
    answers = _each_answer(rows, problems)
    fast = _well_formed_sheet(rows)
    if fast is not None:  # None only sends the result the slow way
        assert not problems
        assert fast == AnswerSheet.of(answers)
        assert fast.awarded_total == sum(a.awarded for a in answers)
