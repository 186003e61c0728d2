"""Turn a RawResult into a normalized JSON item and judge it against the schema.

schemas/results-document.schema.json is the written definition of what a result must contain; this
module only converts XML strings into JSON values (carefully, so a bad number stays a string and the
schema reports it) and translates jsonschema errors into Problems with a result position and field.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache, lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

import schemas
from shared.domain.ids import invalid_identifier
from shared.domain.model import SEPARATOR, Answer, AnswerSheet, Problem, TestResult
from shared.domain.xml_reader import RawResult

SCHEMA_NAME = "results-document.schema.json"

# Whole numbers follow the xs:integer lexical form after trimming surrounding whitespace: an optional
# sign and ASCII digits. So " 12 ", "+12" and "007" are 12 and 7; "-1" is a whole number that is then
# out of range; "12.0", "12.5", "1e3", "1_000", "" and non-ASCII digits are not whole numbers.
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
# int() refuses longer digit strings; such a value is simply far out of range.
_MAX_DIGITS = 4000

# JSON property -> where it lives in the XML, used as Problem.field.
XML_FIELD = {
    "studentNumber": "student-number",
    "testId": "test-id",
    "available": "summary-marks/@available",
    "obtained": "summary-marks/@obtained",
    "firstName": "first-name",
    "lastName": "last-name",
    "scannedOn": "@scanned-on",
}
_SUMMARY_ATTRS = ("available", "obtained")


@cache
def results_schema() -> dict[str, Any]:
    return schemas.resource(SCHEMA_NAME)


@cache
def item_validator() -> Draft202012Validator:
    """A compiled validator for one entry of "results" (so results are judged as they stream past)."""
    schema = results_schema()
    Draft202012Validator.check_schema(schema)
    item = dict(schema["$defs"]["result"])
    item["$schema"] = schema["$schema"]
    return Draft202012Validator(item)


# The item schema is a plain object schema (type, required, independent properties), so an item is
# valid exactly when its required keys are present and each value is valid under its own property
# schema. Judging per property lets the verdicts be cached: test ids, marks and names repeat across
# a document, so the schema is consulted once per distinct value instead of once per result.
_PLAIN_OBJECT_KEYWORDS = {"type", "required", "properties", "description", "title", "$schema"}


@cache
def _property_validators() -> dict[str, Draft202012Validator] | None:
    item = item_validator().schema
    if set(item) - _PLAIN_OBJECT_KEYWORDS or item.get("type") != "object":
        return None  # a richer schema: judge whole items
    return {prop: Draft202012Validator(sub) for prop, sub in item.get("properties", {}).items()}


@lru_cache(maxsize=65_536)
def _property_valid(prop: str, kind: type, value: Any) -> bool:
    # `kind` is part of the key because 1 == True and hash alike, yet differ under the schema.
    return _property_validators()[prop].is_valid(value)


# A string property whose schema has only these keywords is judged by the string's length alone, so
# one verdict per length serves every student number.
_LENGTH_ONLY = {"type", "minLength", "maxLength", "description", "title"}


@cache
def _judged_by_length() -> frozenset[str]:
    return frozenset(prop for prop, sub in item_validator().schema.get("properties", {}).items()
                     if set(sub) <= _LENGTH_ONLY)


@lru_cache(maxsize=4096)
def _length_valid(prop: str, length: int) -> bool:
    return _property_validators()[prop].is_valid("x" * length)  # the verdict of every string this long


def _is_valid(item: dict[str, Any]) -> bool:
    validators = _property_validators()
    if validators is None:
        return item_validator().is_valid(item)
    if not item.keys() >= _required():
        return False
    by_length = _judged_by_length()
    for prop, value in item.items():
        if prop not in validators:
            continue
        if not (_length_valid(prop, len(value)) if type(value) is str and prop in by_length
                else _property_valid(prop, type(value), value)):
            return False
    return True


@cache
def _required() -> frozenset[str]:
    return frozenset(item_validator().schema.get("required", ()))


_NUMBERS: dict[str, int | str] = {}  # marks repeat across a document: each text is converted once
_CACHED_LENGTH = 100  # longer texts are not kept in the caches of repeated values


def _number(text: str | None) -> int | str | None:
    """int for a whole number; otherwise the trimmed text, which the schema then rejects by type."""
    if text is None:
        return None
    found = _NUMBERS.get(text)
    if found is None:
        found = _convert(text)
        if len(text) <= _CACHED_LENGTH:
            if len(_NUMBERS) >= 4096:
                _NUMBERS.clear()
            _NUMBERS[text] = found
    return found


def _convert(text: str) -> int | str:
    value = text.strip()
    if not _WHOLE_NUMBER.fullmatch(value):
        return value
    if len(value) > _MAX_DIGITS:
        return -(10**_MAX_DIGITS) if value.startswith("-") else 10**_MAX_DIGITS
    return int(value)


def normalize(raw: RawResult) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for prop, tag in (("studentNumber", "student-number"), ("testId", "test-id")):
        if tag in raw.texts:
            item[prop] = raw.texts[tag].strip()
    for prop, text in (("available", raw.available), ("obtained", raw.obtained)):
        value = _number(text)
        if value is not None:
            item[prop] = value
    for prop, tag in (("firstName", "first-name"), ("lastName", "last-name")):
        name = raw.texts.get(tag, "").strip()
        if name:
            item[prop] = name
    if raw.scanned_on is not None:
        item["scannedOn"] = raw.scanned_on
    return item


def check(raw: RawResult, item: dict[str, Any]) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) for one normalized result."""
    valid = _is_valid(item)
    errors = _errors(raw, item, valid) if not valid or raw.duplicates or _suspect(item) else []
    warnings: list[Problem] = []
    if raw.scanned_on is not None and not _is_date_time(raw.scanned_on):
        n = raw.position
        warnings.append(
            Problem(
                "unparseable-scanned-on",
                f"result {n}: @scanned-on {_show(repr(raw.scanned_on))} is not an ISO 8601 date-time; kept as written",
                n,
                XML_FIELD["scannedOn"],
            )
        )
    return errors, warnings


def _suspect(item: dict[str, Any]) -> bool:
    """Whether a valid item without duplicates may still have an error (_errors says which): an id
    with a character that is not printable, or more marks obtained than available."""
    student, test = item.get("studentNumber"), item.get("testId")
    available, obtained = item.get("available"), item.get("obtained")
    return (isinstance(student, str) and not student.isprintable() or isinstance(test, str) and not test.isprintable()
            or isinstance(available, int) and isinstance(obtained, int) and available >= 1 and obtained > available)


def _errors(raw: RawResult, item: dict[str, Any], valid: bool) -> list[Problem]:
    n = raw.position
    errors: list[Problem] = []
    seen: set[tuple[str, str]] = set()

    def add(code: str, field: str, message: str) -> None:
        if (code, field) not in seen:
            seen.add((code, field))
            errors.append(Problem(code, f"result {n}: {message}", n, field))

    if not valid:  # the usual case is valid: only an invalid item pays for the error report
        for error in item_validator().iter_errors(item):
            for code, field, message in _translate(error, raw):
                add(code, field, message)
    for name in raw.duplicates:
        add("duplicate-field", name, f"{name} occurs more than once")
    for prop in ("studentNumber", "testId"):
        value = item.get(prop)
        # Ids that look alike but differ (zero-width spaces, bidirectional overrides) would split or
        # disguise a student's or a test's results.
        problem = invalid_identifier(value) if isinstance(value, str) and value else None
        if problem and problem != "is empty":
            add("invisible-character", XML_FIELD[prop], f"{XML_FIELD[prop]} {_show(repr(value))} {problem}")

    available, obtained = item.get("available"), item.get("obtained")
    # Only when both values are otherwise valid, so one bad number is reported once.
    if isinstance(available, int) and isinstance(obtained, int) and available >= 1 and obtained > available:
        add(
            "out-of-range",
            XML_FIELD["obtained"],
            f"summary-marks/@obtained is {obtained}, more than available {available}",
        )

    return errors


def _translate(error: ValidationError, raw: RawResult) -> list[tuple[str, str, str]]:
    """jsonschema error -> [(code, field, message)]."""
    if error.validator == "required":
        missing = [p for p in error.validator_value if p not in error.instance]
        out = []
        for prop in missing:
            if prop in _SUMMARY_ATTRS and not raw.has_summary:
                out.append(("missing-field", "summary-marks", "summary-marks is missing"))
            else:
                what = XML_FIELD.get(prop, prop)
                out.append(("missing-field", what, f"{what} is missing"))
        return out
    prop = str(error.path[0]) if error.path else ""
    what = XML_FIELD.get(prop, prop or "result")
    value = error.instance
    if error.validator == "minLength":
        return [("empty-field", what, f"{what} is empty")]
    if error.validator == "type" and prop in _SUMMARY_ATTRS:
        return [("not-a-whole-number", what, f"{what} is {_show(json.dumps(value))}, not a whole number")]
    if error.validator == "minimum":
        return [("out-of-range", what, f"{what} is {_show(value)}, less than {error.validator_value}")]
    if error.validator == "maximum":
        return [("out-of-range", what, f"{what} is {_show(value)}, more than {error.validator_value}")]
    return [("invalid-field", what, f"{what}: {error.message}")]


def _show(value: object, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _is_date_time(text: str) -> bool:
    value = text.strip()
    # A bare date ("2017-12-04") parses too, but a scan time needs the time part.
    if len(value) <= 10:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


# A document with many bad answers gets this many warnings per result, then one summary.
_ANSWER_WARNINGS_PER_RESULT = 3


def read_answers(raw: RawResult, obtained: int) -> tuple[AnswerSheet | None, list[Problem]]:
    """The result's usable answers, and warnings: answers never reject a document (scoring uses
    summary-marks), but an unusable one is left out of item analysis, and awarded marks that do not
    add up to summary-marks obtained are a data-quality warning."""
    if not raw.answers:
        return None, []
    n = raw.position
    problems: list[str] = []
    sheet = _well_formed_sheet(raw.answers)
    if sheet is None:
        sheet = AnswerSheet.of(_each_answer(raw.answers, problems))
    warnings = [Problem("invalid-answer", f"result {n}: {message}; left out of item analysis", n, "answer")
                for message in problems[:_ANSWER_WARNINGS_PER_RESULT]]
    if len(problems) > _ANSWER_WARNINGS_PER_RESULT:
        warnings.append(Problem("invalid-answer", f"result {n}: {len(problems) - _ANSWER_WARNINGS_PER_RESULT} more "
                                "unusable <answer> elements", n, "answer"))
    if sheet is not None and not problems and sheet.awarded_total != obtained:
        warnings.append(Problem("marks-mismatch", f"result {n}: awarded marks add up to {sheet.awarded_total}, but "
                                f"summary-marks/@obtained is {obtained}; the summary is scored", n,
                                "answer/@marks-awarded"))
    return sheet, warnings


# Marks as written in the usual case: whole numbers without sign, blanks or leading zeros, so the
# joined text is already the AnswerSheet's canonical form (no int -> str round trip).
_CANONICAL_MARK = re.compile(r"0|[1-9][0-9]{0,8}")
_Usable = tuple[str, str, str, str, int]  # (question, option) trimmed, marks as written, marks awarded
_USABLE: dict[tuple, _Usable] = {}  # rows repeat across a document: each is judged once


def _usable(row: tuple) -> _Usable | None:
    """The row as a sheet entry when it is usable with its marks written canonically, else None."""
    question, available, awarded, text = row
    if question is None or not question.strip() or not all(
            isinstance(mark, str) and _CANONICAL_MARK.fullmatch(mark) for mark in (available, awarded)):
        return None
    if not 0 <= int(awarded) <= int(available) or int(available) < 1:
        return None
    return question.strip(), text.strip(), available, awarded, int(awarded)


def _judged(row: tuple) -> _Usable | None:
    usable = _usable(row)
    if usable is not None and len(row[0]) + len(row[3]) <= _CACHED_LENGTH:  # marks are short when usable
        if len(_USABLE) >= 65_536:
            _USABLE.clear()
        _USABLE[row] = usable
    return usable


def _well_formed_sheet(rows: list[tuple]) -> AnswerSheet | None:
    """The usual case, every answer usable and written canonically, with whole-list operations (a
    million answers in a large document); None sends the result through _each_answer, which says
    what is wrong (or, for marks written like "007" or " 1 ", builds the same sheet one answer at a time)."""
    entries = list(map(_USABLE.get, rows))
    if not all(entries):  # rows not judged yet (unusable ones are not kept: they take the slow path)
        entries = [entry or _judged(row) for row, entry in zip(rows, entries, strict=True)]
        if not all(entries):
            return None
    questions, options, available, awarded, points = zip(*entries, strict=True)
    names = _distinct(SEPARATOR.join(questions), len(questions))
    if names is None:
        return None
    return AnswerSheet(names, SEPARATOR.join(options), _shared(",".join(available)), ",".join(awarded), sum(points))


_SHARED: dict[str, str] = {}


def _shared(value: str) -> str:
    """One copy of values that repeat across a test's results (its question list and marks)."""
    found = _SHARED.get(value)
    if found is None:
        if len(_SHARED) >= 4096:
            _SHARED.clear()
        found = _SHARED[value] = value
    return found


_DISTINCT: dict[str, str | None] = {}


def _distinct(questions: str, count: int) -> str | None:
    """The shared copy of a joined question list whose `count` questions all differ, else None."""
    try:
        return _DISTINCT[questions]
    except KeyError:
        if len(_DISTINCT) >= 4096:
            _DISTINCT.clear()
        found = _DISTINCT[questions] = _shared(questions) if len(set(questions.split(SEPARATOR))) == count else None
        return found


def _each_answer(rows: list[tuple], problems: list[str]) -> list[Answer]:
    answers: list[Answer] = []
    seen: set[str] = set()
    for question, available_text, awarded_text, text in rows:
        q = (question or "").strip()
        available, awarded = _number(available_text), _number(awarded_text)
        if not q:
            problems.append("an <answer> has no question attribute")
        elif q in seen:
            problems.append(f"question {_show(repr(q))} is answered more than once; the first is kept")
        elif not isinstance(available, int) or not isinstance(awarded, int) or not 0 <= awarded <= available \
                or available < 1:
            problems.append(f"question {_show(repr(q))}: marks-available {_show(repr(available_text))} and "
                            f"marks-awarded {_show(repr(awarded_text))} are not whole marks with 0 <= awarded <= available")
        else:
            seen.add(q)
            answers.append(Answer(q, text.strip(), available, awarded))
    return answers


def to_test_result(raw: RawResult, item: dict[str, Any], answers: AnswerSheet | None = None) -> TestResult:
    return TestResult(
        result=raw.position,
        student_number=item["studentNumber"],
        test_id=item["testId"],
        available=item["available"],
        obtained=item["obtained"],
        first_name=item.get("firstName"),
        last_name=item.get("lastName"),
        scanned_on=item.get("scannedOn"),
        answer_sheet=answers,
    )
