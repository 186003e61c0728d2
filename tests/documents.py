"""Builders of <mcq-test-results> documents for tests and benchmarks, shaped like the real sample.

make_document(results) takes one dict per <mcq-test-result>. Keys (all optional):
    student_number, test_id, first_name, last_name  -> child elements
    available, obtained                             -> <summary-marks> attributes
    scanned_on                                      -> @scanned-on
    answers      int: number of <answer> elements (default: `available` when it is a small int, else 0)
    summary      False to leave out <summary-marks> entirely
    extra        raw XML placed inside the result (unknown elements, comments, ...)
A missing key takes a realistic default; a value of None leaves the element/attribute out. Values are
written with str() and XML-escaped, so "  002299 " or "12.5" appear exactly as given.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

_DEFAULTS: dict[str, Any] = {
    "first_name": "KJ",
    "last_name": "Alysander",
    "test_id": "9863",
    "available": 20,
    "obtained": 13,
    "scanned_on": "2017-12-04T12:12:10+11:00",
}
_FIRST = ["KJ", "Jim", "Ana", "Zoë", "Li", "Priya", "Tomás", "Noor", "Sam", "Aroha", "Mei", "Oskar"]
_LAST = ["Alysander", "Jim", "Nguyen", "O'Brien", "Smith", "Kaur", "García", "Te Rangi", "Müller", "Chen"]


def _element(tag: str, value: Any) -> str:
    return "" if value is None else f"\t\t<{tag}>{escape(str(value))}</{tag}>\n"


def _answers(count: int, awarded: int, rng: random.Random | None = None) -> str:
    hits = set(rng.sample(range(count), awarded)) if rng else set(range(awarded))
    letters = rng.choices("ABCD", k=count) if rng else ["ABCD"[q % 4] for q in range(count)]
    return "".join(
        f'\t\t<answer question="{q}" marks-available="1" marks-awarded="{int(q in hits)}">{letters[q]}</answer>\n'
        for q in range(count)
    )


def _result(index: int, spec: dict[str, Any]) -> str:
    r = {"student_number": f"{2299 + index:06d}", **_DEFAULTS, **spec}
    available, obtained = r["available"], r["obtained"]
    small = isinstance(available, int) and 0 < available <= 200
    count = r.get("answers", available if small else 0)
    awarded = min(obtained, count) if isinstance(obtained, int) and obtained >= 0 else 0
    scanned = "" if r["scanned_on"] is None else f" scanned-on={quoteattr(str(r['scanned_on']))}"
    summary = ""
    if r.get("summary", True):
        attrs = "".join(
            f" {name}={quoteattr(str(value))}"
            for name, value in (("available", available), ("obtained", obtained))
            if value is not None
        )
        summary = f"\t\t<summary-marks{attrs} />\n"
    return (
        f"\t<mcq-test-result{scanned}>\n"
        + _element("first-name", r["first_name"])
        + _element("last-name", r["last_name"])
        + _element("student-number", r["student_number"])
        + _element("test-id", r["test_id"])
        + _answers(count, awarded)
        + summary
        + r.get("extra", "")
        + "\t</mcq-test-result>\n"
    )


def make_document(
    results: list[dict[str, Any]],
    *,
    root: str = "mcq-test-results",
    extra: str = "",
    prolog: str = "",
    encoding: str = "UTF-8",
) -> bytes:
    """A whole document. `extra` is raw XML placed inside the root after the results; `prolog` goes
    between the XML declaration and the root (e.g. a DOCTYPE); `encoding` is declared and used."""
    body = "".join(_result(i, spec) for i, spec in enumerate(results))
    text = f'<?xml version="1.0" encoding="{encoding}" ?>\n{prolog}<{root}>\n{body}{extra}</{root}>\n'
    return text.encode(encoding)


def make_large_document(n_results: int, *, seed: int = 0, chunk_results: int = 1000) -> Iterator[bytes]:
    """A realistic UTF-8 document in chunks: a handful of tests, student numbers with leading zeros,
    about 1 in 10 results a re-scan of an earlier student, 20 answers each (~1.75 KB per result)."""
    rng = random.Random(seed)
    tests = [str(9000 + t) for t in range(max(1, n_results // 5000))]
    yield b'<?xml version="1.0" encoding="UTF-8" ?>\n<mcq-test-results>\n'
    parts: list[str] = []
    for i in range(n_results):
        rescan = i > 0 and rng.random() < 0.1
        student = f"{rng.randrange(i) if rescan else i:06d}"
        obtained = rng.randint(0, 20)
        parts.append(
            f'\t<mcq-test-result scanned-on="2017-12-04T{8 + i % 10:02d}:{i % 60:02d}:{i % 59:02d}+11:00">\n'
            + _element("first-name", rng.choice(_FIRST))
            + _element("last-name", rng.choice(_LAST))
            + _element("student-number", student)
            + _element("test-id", tests[int(student) % len(tests)])
            + _answers(20, obtained, rng)
            + f'\t\t<summary-marks available="20" obtained="{obtained}" />\n'
            + "\t</mcq-test-result>\n"
        )
        if len(parts) >= chunk_results:
            yield "".join(parts).encode()
            parts.clear()
    yield ("".join(parts) + "</mcq-test-results>\n").encode()


def write_large_document(path: Path, n_results: int, *, seed: int = 0, compress: bool = False) -> int:
    """Write make_large_document() to `path` (gzip-compressed if asked); return uncompressed bytes."""
    total = 0
    with gzip.open(path, "wb", compresslevel=1) if compress else open(path, "wb") as out:
        for chunk in make_large_document(n_results, seed=seed):
            out.write(chunk)
            total += len(chunk)
    return total
