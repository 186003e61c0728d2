"""Rules of the results document: what is accepted, what rejects it, and how problems are reported."""

from __future__ import annotations

import gzip
import io

import pytest

from shared.domain.results_document import ParsedDocument, Problem, parse_results_document
from tests.documents import make_document


def parse(*results: dict, **kw) -> ParsedDocument:
    return parse_results_document(make_document(list(results), **kw))


def only_error(doc: ParsedDocument) -> Problem:
    assert not doc.valid
    assert doc.results == ()
    assert len(doc.errors) == 1, doc.errors
    return doc.errors[0]


def test_sample_document_is_valid(sample_results_xml: bytes) -> None:
    doc = parse_results_document(sample_results_xml)
    assert doc.valid and doc.errors == () and doc.warnings == ()
    assert doc.result_count == 100 and len(doc.results) == 100
    assert len({r.student_number for r in doc.results}) == 81
    assert doc.test_ids == ["9863"]
    first = doc.results[0]
    assert (first.result, first.student_number, first.test_id) == (1, "002299", "9863")
    assert (first.available, first.obtained, first.first_name, first.last_name) == (20, 13, "KJ", "Alysander")
    assert first.scanned_on == "2017-12-04T12:12:10+11:00"
    assert [r.result for r in doc.results] == list(range(1, 101))


def test_reads_a_gzip_stream(sample_results_xml: bytes) -> None:
    stream = gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(sample_results_xml)))
    assert len(parse_results_document(stream).results) == 100


def test_values_are_trimmed_and_leading_zeros_kept() -> None:
    doc = parse(
        {
            "student_number": "  002299\n",
            "test_id": "\t9863 ",
            "first_name": "  KJ ",
            "last_name": " ",
            "available": " 20 ",
            "obtained": "+07",
        }
    )
    (r,) = doc.results
    assert (r.student_number, r.test_id, r.available, r.obtained) == ("002299", "9863", 20, 7)
    assert r.first_name == "KJ" and r.last_name is None
    assert doc.normalized()["results"][0] == {
        "studentNumber": "002299",
        "testId": "9863",
        "available": 20,
        "obtained": 7,
        "firstName": "KJ",
        "scannedOn": "2017-12-04T12:12:10+11:00",
    }


def test_obtained_zero_and_full_marks_are_valid() -> None:
    doc = parse({"obtained": 0}, {"obtained": 20, "available": 20})
    assert doc.valid and [r.obtained for r in doc.results] == [0, 20]


def test_optional_fields_may_be_absent() -> None:
    (r,) = parse({"first_name": None, "last_name": None, "scanned_on": None}).results
    assert (r.first_name, r.last_name, r.scanned_on) == (None, None, None)


def test_duplicate_students_and_rescans_are_not_errors() -> None:
    doc = parse({"student_number": "1", "obtained": 9}, {"student_number": "1", "obtained": 8})
    assert doc.valid and len(doc.results) == 2


def test_answers_unknown_elements_and_attributes_are_ignored() -> None:
    unknown = '<remark lang="en">re-scanned<b>twice</b></remark><!-- operator note --><?scanner v2?>'
    body = make_document([{"answers": 20, "extra": unknown}], extra="<batch-id>7</batch-id>")
    body = body.replace(b"<mcq-test-result ", b'<mcq-test-result scanner="S1" ').replace(
        b"<summary-marks ", b'<summary-marks weight="2" '
    )
    doc = parse_results_document(body)
    assert doc.valid and doc.warnings == ()
    assert [(r.available, r.obtained) for r in doc.results] == [(20, 13)]


def test_text_split_by_a_comment_is_read_whole() -> None:
    doc = parse({"student_number": None, "extra": "<student-number>00<!-- x -->22</student-number>"})
    assert doc.results[0].student_number == "0022"


def test_wrong_root_element() -> None:
    p = only_error(parse({}, root="html"))
    assert (p.code, p.result, p.field) == ("wrong-root-element", None, None)
    assert "<html>" in p.message


def test_no_results() -> None:
    p = only_error(parse())
    assert (p.code, p.result) == ("no-results", None)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"student_number": None}, "student-number"),
        ({"test_id": None}, "test-id"),
        ({"summary": False}, "summary-marks"),
        ({"available": None}, "summary-marks/@available"),
        ({"obtained": None}, "summary-marks/@obtained"),
    ],
)
def test_missing_field(spec: dict, field: str) -> None:
    p = only_error(parse({}, spec))
    assert (p.code, p.result, p.field) == ("missing-field", 2, field)
    assert p.message.startswith("result 2: ")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"student_number": ""}, "student-number"),
        ({"student_number": " \n\t "}, "student-number"),
        ({"test_id": "  "}, "test-id"),
    ],
)
def test_empty_field(spec: dict, field: str) -> None:
    p = only_error(parse(spec))
    assert (p.code, p.result, p.field) == ("empty-field", 1, field)


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"student_number": "\u200b"}, "student-number"),  # nothing but a zero-width space
        ({"student_number": "12\u202e34"}, "student-number"),  # a right-to-left override inside
        ({"test_id": "98\u200d63"}, "test-id"),
    ],
)
def test_invisible_characters_in_ids_reject_the_document_naming_result_and_field(spec: dict, field: str) -> None:
    doc = parse({"student_number": "1"}, spec)
    assert not doc.valid and doc.results == ()
    [p] = doc.errors
    assert (p.code, p.result, p.field) == ("invisible-character", 2, field)
    assert "U+20" in p.message


@pytest.mark.parametrize("value", ["12.5", "abc", "", "  ", "1e3", "12.0", "0x10", "1_0", "١٢", "- 1"])
@pytest.mark.parametrize("attr", ["available", "obtained"])
def test_not_a_whole_number(attr: str, value: str) -> None:
    p = only_error(parse({attr: value}))
    assert (p.code, p.result, p.field) == ("not-a-whole-number", 1, f"summary-marks/@{attr}")
    assert "not a whole number" in p.message


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [
        ({"available": 0, "obtained": 0}, "summary-marks/@available", "is 0, less than 1"),
        ({"available": -5, "obtained": 0}, "summary-marks/@available", "is -5, less than 1"),
        ({"obtained": -1}, "summary-marks/@obtained", "is -1, less than 0"),
        ({"available": 20, "obtained": 21}, "summary-marks/@obtained", "is 21, more than available 20"),
        ({"available": 2**31, "obtained": 1}, "summary-marks/@available", "more than 2147483647"),
        ({"available": 20, "obtained": "9" * 5000}, "summary-marks/@obtained", "more than 2147483647"),
    ],
)
def test_out_of_range(spec: dict, field: str, fragment: str) -> None:
    p = only_error(parse({}, {}, spec))
    assert (p.code, p.result, p.field) == ("out-of-range", 3, field)
    assert fragment in p.message


def test_obtained_more_than_available_message() -> None:
    p = only_error(parse({}, {}, {"available": 20, "obtained": 21}))
    assert p.message == "result 3: summary-marks/@obtained is 21, more than available 20"


def test_duplicated_required_field_is_an_error() -> None:
    p = only_error(parse({"extra": "<student-number>9999</student-number>"}))
    assert (p.code, p.result, p.field) == ("duplicate-field", 1, "student-number")


def test_last_result_invalid_rejects_all() -> None:
    doc = parse(*([{}] * 9), {"test_id": ""})
    assert doc.result_count == 10 and doc.results == ()
    assert [(p.code, p.result, p.field) for p in doc.errors] == [("empty-field", 10, "test-id")]


def test_every_problem_is_listed() -> None:
    doc = parse(
        {},
        {"student_number": None, "available": "abc"},
        {},
        {"test_id": " ", "obtained": 30},
        {"summary": False},
    )
    assert doc.results == () and doc.error_count == 5
    assert [(p.code, p.result, p.field) for p in doc.errors] == [
        ("missing-field", 2, "student-number"),
        ("not-a-whole-number", 2, "summary-marks/@available"),
        ("empty-field", 4, "test-id"),
        ("out-of-range", 4, "summary-marks/@obtained"),
        ("missing-field", 5, "summary-marks"),
    ]


def test_errors_are_capped_but_counted() -> None:
    doc = parse_results_document(make_document([{"test_id": ""}] * 30), max_errors=10)
    assert doc.error_count == 30 and len(doc.errors) == 10
    assert [p.result for p in doc.errors] == list(range(1, 11))


def test_problems_found_before_a_syntax_error_are_kept() -> None:
    body = make_document([{"test_id": ""}, {}]).replace(b"</mcq-test-results>", b"")
    doc = parse_results_document(body)
    assert [(p.code, p.result) for p in doc.errors] == [("not-well-formed", None), ("empty-field", 1)]
    assert doc.error_count == 2 and doc.results == ()


@pytest.mark.parametrize("value", ["2017-12-04T12:12:10+11:00", "2017-12-04T01:12:10Z", "2017-12-04 12:12"])
def test_iso_scanned_on_gives_no_warning(value: str) -> None:
    assert parse({"scanned_on": value}).warnings == ()


@pytest.mark.parametrize("value", ["yesterday", "04/12/2017 12:12", "2017-12-04", "2017-13-04T12:00:00", ""])
def test_unparseable_scanned_on_is_a_warning(value: str) -> None:
    doc = parse({}, {"scanned_on": value})
    assert doc.valid and len(doc.results) == 2
    (w,) = doc.warnings
    assert (w.code, w.result, w.field) == ("unparseable-scanned-on", 2, "@scanned-on")
    assert doc.results[1].scanned_on == value


def test_problem_to_json_omits_none() -> None:
    assert Problem("no-results", "m").to_json() == {"code": "no-results", "message": "m"}
    assert Problem("empty-field", "m", 3, "test-id").to_json() == {
        "code": "empty-field",
        "message": "m",
        "result": 3,
        "field": "test-id",
    }


def test_namespaced_document_is_read_by_local_name() -> None:
    body = make_document([{}]).replace(b"<mcq-test-results>", b'<mcq-test-results xmlns="urn:markr">')
    assert parse_results_document(body).valid


def test_a_broken_stream_raises_instead_of_blaming_the_document() -> None:
    # A truncated gzip member is a storage fault: the caller must see it, not a "not-well-formed" verdict.
    packed = gzip.compress(make_document([{}] * 200))
    with pytest.raises(EOFError):
        parse_results_document(gzip.GzipFile(fileobj=io.BytesIO(packed[: len(packed) // 2])))


def test_max_errors_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_errors"):
        parse_results_document(make_document([{}]), max_errors=0)


# The per-property shortcut must judge exactly as the full item schema does.
SHORTCUT_CASES = [
    {"studentNumber": "1", "testId": "t", "available": 10, "obtained": 5},
    {"studentNumber": "1", "testId": "t", "available": 10, "obtained": 5, "firstName": "A", "scannedOn": "x"},
    {"studentNumber": "", "testId": "t", "available": 10, "obtained": 5},
    {"studentNumber": "1", "testId": "t", "available": True, "obtained": 5},
    {"studentNumber": "1", "testId": "t", "available": 1, "obtained": True},
    {"studentNumber": "1", "testId": "t", "available": "10", "obtained": 5},
    {"studentNumber": "1", "testId": "t", "available": 0, "obtained": 0},
    {"studentNumber": "1", "testId": "t", "available": 2**31, "obtained": 0},
    {"studentNumber": "1", "testId": "t", "available": 10, "obtained": -1},
    {"studentNumber": "1", "testId": "t", "available": 10},
    {"testId": "t", "available": 10, "obtained": 5},
    {"studentNumber": "1", "testId": "t", "available": 10, "obtained": 5, "unknown": object},
    {"studentNumber": 1, "testId": "t", "available": 10, "obtained": 5},
    {"studentNumber": "1", "testId": "t", "available": 10, "obtained": 5, "lastName": 3},
    {"studentNumber": "ëé\u200b", "testId": "t" * 5000, "available": 10, "obtained": 5, "lastName": ""},
    {"studentNumber": "1", "testId": "t", "available": 10, "obtained": 5, "firstName": "", "scannedOn": ""},
]


@pytest.mark.parametrize("item", SHORTCUT_CASES)
def test_per_property_shortcut_agrees_with_the_whole_schema(item):
    from shared.domain.validation import _is_valid, item_validator

    assert _is_valid(item) == item_validator().is_valid(item)


# check() reports in full only an item that may have an error; every other item must have none.
CHECK_CASES = [
    {"student_number": "12\u200b3"},  # zero-width space: invisible
    {"student_number": "12\u00a03"},  # no-break space: not printable, yet a visible identifier
    {"test_id": "t\x7f"},
    {"test_id": "\u202eabc"},
    {"available": 5, "obtained": 6},
    {"available": 5, "obtained": 5},
    {"available": 0, "obtained": 1},
    {"student_number": "Zoë 李"},
]


@pytest.mark.parametrize("spec", CHECK_CASES)
def test_the_error_report_is_skipped_only_when_it_would_be_empty(spec: dict) -> None:
    from shared.domain.validation import _errors, _is_valid, check, normalize
    from shared.domain.xml_reader import read_results

    (raw,) = read_results(make_document([spec]))
    item = normalize(raw)
    assert check(raw, item)[0] == _errors(raw, item, _is_valid(item))
