"""XML-level handling: DOCTYPE/entity attacks, encodings, and documents that are not well-formed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lxml import etree

from shared.domain.results_document import ParsedDocument, parse_results_document
from tests.documents import make_document

BILLION_LAUGHS = (
    '<!DOCTYPE mcq-test-results [\n<!ENTITY lol "lol">\n'
    + "".join(f'<!ENTITY lol{i} "{(f"&lol{i - 1};" if i > 1 else "&lol;") * 10}">\n' for i in range(1, 10))
    + "]>\n"
)


def rejected_for(doc: ParsedDocument, code: str) -> str:
    assert not doc.valid and doc.results == ()
    assert [(p.code, p.result, p.field) for p in doc.errors] == [(code, None, None)]
    return doc.errors[0].message


def test_billion_laughs_is_refused_without_expansion() -> None:
    body = make_document([{"student_number": "&lol9;", "first_name": None}], prolog=BILLION_LAUGHS)
    body = body.replace(b"&amp;lol9;", b"&lol9;")  # make_document escapes; put the live reference back
    assert b"<student-number>&lol9;</student-number>" in body
    rejected_for(parse_results_document(body), "doctype-forbidden")


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER")
    os.utime(secret, (0, secret.stat().st_mtime))  # any read moves atime off 0 (relatime/strictatime)
    return secret


def _assert_secret_absent(doc: ParsedDocument, secret: Path) -> None:
    everything = repr(doc.errors) + repr(doc.warnings) + repr(doc.results)
    assert "TOP-SECRET-MARKER" not in everything
    assert secret.stat().st_atime == 0, "the parser read the file"


def test_the_xxe_document_is_a_real_attack(secret_file: Path) -> None:
    # Control: a permissive parser does expand the entity, so the tests below prove something.
    prolog = f'<!DOCTYPE mcq-test-results [<!ENTITY xxe SYSTEM "{secret_file.as_uri()}">]>\n'
    body = make_document([{"student_number": "X"}], prolog=prolog).replace(b">X<", b">&xxe;<")
    permissive = etree.XMLParser(resolve_entities=True, load_dtd=True, no_network=True)
    assert "TOP-SECRET-MARKER" in etree.tostring(etree.fromstring(body, permissive), encoding="unicode")


@pytest.mark.parametrize("target", ["file:///etc/passwd", "secret"])
def test_external_entity_is_never_read(target: str, secret_file: Path) -> None:
    url = secret_file.as_uri() if target == "secret" else target
    prolog = f'<!DOCTYPE mcq-test-results [<!ENTITY xxe SYSTEM "{url}">]>\n'
    body = make_document([{"student_number": "X"}], prolog=prolog).replace(b">X<", b">&xxe;<")
    doc = parse_results_document(body)
    rejected_for(doc, "doctype-forbidden")
    _assert_secret_absent(doc, secret_file)
    assert "root:" not in repr(doc)  # /etc/passwd content


def test_external_dtd_is_refused(secret_file: Path) -> None:
    prolog = f'<!DOCTYPE mcq-test-results SYSTEM "{secret_file.as_uri()}">\n'
    doc = parse_results_document(make_document([{}], prolog=prolog))
    rejected_for(doc, "doctype-forbidden")
    _assert_secret_absent(doc, secret_file)


def test_parameter_entity_is_refused(secret_file: Path) -> None:
    prolog = (
        f'<!DOCTYPE mcq-test-results [<!ENTITY % remote SYSTEM "{secret_file.as_uri()}"> %remote;'
        " <!ENTITY % local \"<!ENTITY injected 'x'>\"> %local;]>\n"
    )
    doc = parse_results_document(make_document([{}], prolog=prolog))
    rejected_for(doc, "doctype-forbidden")
    _assert_secret_absent(doc, secret_file)


def test_harmless_doctype_is_still_refused() -> None:
    message = rejected_for(
        parse_results_document(make_document([{}], prolog="<!DOCTYPE mcq-test-results>\n")),
        "doctype-forbidden",
    )
    assert "DOCTYPE" in message


def test_iso_8859_1_document_with_non_ascii_name() -> None:
    body = make_document([{"first_name": "Zoë", "last_name": "Müller"}], encoding="ISO-8859-1")
    assert "Zoë".encode("latin-1") in body
    (r,) = parse_results_document(body).results
    assert (r.first_name, r.last_name) == ("Zoë", "Müller")


def test_utf16_document_with_bom() -> None:
    text = make_document([{"first_name": "Tomás"}]).decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
    (r,) = parse_results_document(text.encode("utf-16")).results
    assert r.first_name == "Tomás"


def test_document_without_declaration_defaults_to_utf8() -> None:
    body = b"<mcq-test-results>" + make_document([{"last_name": "García"}]).split(b"<mcq-test-results>")[1]
    assert parse_results_document(body).results[0].last_name == "García"


def test_bytes_that_contradict_the_declared_encoding() -> None:
    body = make_document([{"first_name": "Zoë"}]).replace("Zoë".encode(), "Zoë".encode("latin-1"))
    message = rejected_for(parse_results_document(body), "not-well-formed")
    assert "line 4" in message


def test_unsupported_encoding() -> None:
    body = make_document([{}]).replace(b'encoding="UTF-8"', b'encoding="klingon"')
    assert "klingon" in rejected_for(parse_results_document(body), "not-well-formed")


def test_truncated_document_reports_position() -> None:
    body = make_document([{}, {}])
    message = rejected_for(parse_results_document(body[: len(body) // 2]), "not-well-formed")
    assert "line" in message and "column" in message


def test_mismatched_tag_reports_line_and_column() -> None:
    body = b"<mcq-test-results>\n  <mcq-test-result>\n  </mcq-test-results>\n"
    message = rejected_for(parse_results_document(body), "not-well-formed")
    assert "line 3, column" in message


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \n",
        b"this is not XML",
        b"\x00\xff\xfe\x01garbage\x9c",
        b'{"results": []}',
        b"<mcq-test-results>",
    ],
    ids=["empty", "blank", "text", "garbage", "json", "unclosed-root"],
)
def test_not_well_formed(body: bytes) -> None:
    rejected_for(parse_results_document(body), "not-well-formed")


def test_content_after_the_root_is_not_well_formed() -> None:
    rejected_for(parse_results_document(make_document([{}]) + b"<mcq-test-results/>"), "not-well-formed")


def test_html_page_is_the_wrong_kind_of_document() -> None:
    body = b"<html><head><title>Error</title></head><body><p>502 Bad Gateway</p></body></html>"
    message = rejected_for(parse_results_document(body), "wrong-root-element")
    assert message == "root element is <html>, expected <mcq-test-results>"


def test_wrong_root_stops_reading_at_once() -> None:
    # A wrong root is reported even though the rest of the document is broken: it is not read.
    rejected_for(parse_results_document(b"<results><unclosed>"), "wrong-root-element")
