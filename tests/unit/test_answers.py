"""<answer> elements: read for item analysis, never a reason to reject a document."""
from __future__ import annotations

from shared.domain.model import Answer
from shared.domain.results_document import parse_results_document
from tests.documents import make_document


def doc_with(answers: str, obtained: int = 1, available: int = 2) -> bytes:
    return make_document([{"available": available, "obtained": obtained, "answers": 0, "extra": answers}])


def answer(q, available="1", awarded="1", option="A") -> str:
    attrs = "".join(f' {k}="{v}"' for k, v in (("question", q), ("marks-available", available),
                                                ("marks-awarded", awarded)) if v is not None)
    return f"<answer{attrs}>{option}</answer>"


def test_the_sample_answers_are_read_and_add_up(sample_results_xml: bytes) -> None:
    doc = parse_results_document(sample_results_xml)
    first = doc.results[0]
    assert len(first.answers) == 20
    assert first.answers[0] == Answer("0", "D", 1, 1)
    assert first.answers[3] == Answer("3", "C", 1, 0)
    assert all(r.awarded_total == r.obtained for r in doc.results)
    assert doc.warnings == ()


def test_awarded_marks_that_do_not_add_up_are_a_warning_and_the_summary_is_scored() -> None:
    doc = parse_results_document(doc_with(answer("1") + answer("2"), obtained=1))
    assert doc.valid and doc.results[0].obtained == 1 and doc.results[0].awarded_total == 2
    [warning] = doc.warnings
    assert (warning.code, warning.result, warning.field) == ("marks-mismatch", 1, "answer/@marks-awarded")
    assert "add up to 2" in warning.message and "obtained is 1" in warning.message


def test_unusable_answers_are_left_out_with_a_warning_never_rejecting() -> None:
    bad = (answer("1") + answer("1", awarded="0") + answer(None) + answer("3", awarded="2")
           + answer("4", available="x") + answer("5", awarded="-1"))
    doc = parse_results_document(doc_with(bad, obtained=1))
    assert doc.valid
    assert doc.results[0].answers == (Answer("1", "A", 1, 1),)
    codes = [w.code for w in doc.warnings]
    assert codes == ["invalid-answer"] * 4  # three, then one that counts the rest
    assert "2 more" in doc.warnings[-1].message
    # Unusable answers make the sum meaningless: no mismatch warning on top.
    assert "marks-mismatch" not in codes


def test_a_result_without_answers_has_no_awarded_total_and_no_warning() -> None:
    doc = parse_results_document(doc_with("", obtained=1))
    assert doc.results[0].answers == () and doc.results[0].awarded_total is None
    assert doc.warnings == ()


def test_options_and_questions_are_trimmed_strings_and_blank_is_an_option() -> None:
    doc = parse_results_document(doc_with(answer(" 07 ", option=" B ") + answer("8", awarded="0", option=""),
                                          obtained=1))
    assert doc.results[0].answers == (Answer("07", "B", 1, 1), Answer("8", "", 1, 0))


def test_a_rejected_document_carries_no_answers() -> None:
    doc = parse_results_document(make_document([{"obtained": 30, "available": 20}]))
    assert not doc.valid and doc.results == ()


def test_the_well_formed_fast_path_and_the_one_by_one_path_agree() -> None:
    tidy = answer("1", "2", "1", "A") + answer("2", "1", "0", "B")
    # Spaces and a plus sign send the result through the one-by-one path; the values are the same.
    loose = answer(" 1", " 2 ", "+1", "A") + answer("2 ", "01", "0", " B ")
    fast, slow = (parse_results_document(doc_with(x, obtained=1, available=3)).results[0] for x in (tidy, loose))
    assert fast.answer_sheet == slow.answer_sheet
    assert fast.answers == (Answer("1", "A", 2, 1), Answer("2", "B", 1, 0)) and fast.awarded_total == 1


def test_marks_with_leading_zeros_read_as_the_same_sheet_and_a_comma_is_no_mark() -> None:
    tidy = parse_results_document(doc_with(answer("1", "2", "1") + answer("2", "10", "0"), available=12))
    zeros = parse_results_document(doc_with(answer("1", "002", "01") + answer("2", "010", "00"), available=12))
    assert zeros.results[0].answer_sheet == tidy.results[0].answer_sheet and zeros.warnings == ()
    comma = parse_results_document(doc_with(answer("1", "1,1", "1") + answer("2"), obtained=1))
    assert comma.results[0].answers == (Answer("2", "A", 1, 1),)
    assert [w.code for w in comma.warnings] == ["invalid-answer"]
