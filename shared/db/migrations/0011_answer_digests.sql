-- A digest of each scan's answers, and the counted scan's digest and awarded total on the student's
-- row. A marking then tells a counted scan replaced by one with the very same answers (a document
-- sent again) by comparing two digests, and moves the item-analysis sums by the totals it already
-- holds: it used to fetch both scans' answer arrays and compare them, and look up each moved scan's
-- total (0.5 s of a 50,000-result document sent twice, out of 1.4 s).
--
-- The digest: the first 16 bytes of SHA-256 over the scan's questions and options joined by U+001F,
-- and its marks available and awarded joined by commas, the four joined by U+001E, in UTF-8
-- (shared/db/results.py, answers_digest). Neither separator can occur in XML text. NULL when the
-- scan has no answers, like awarded_total.
ALTER TABLE validated_results ADD COLUMN answers_digest bytea;
ALTER TABLE student_results ADD COLUMN best_total integer, ADD COLUMN best_digest bytea;

UPDATE validated_results v
   SET answers_digest = substr(sha256(convert_to(
           array_to_string(a.questions, chr(31)) || chr(30) || array_to_string(a.options, chr(31)) || chr(30)
           || array_to_string(a.available, ',') || chr(30) || array_to_string(a.awarded, ','), 'UTF8')), 1, 16)
  FROM answers a
 WHERE a.submission_id = v.submission_id AND a.result = v.result;

UPDATE student_results s
   SET best_total = v.awarded_total, best_digest = v.answers_digest
  FROM validated_results v
 WHERE v.submission_id = s.best_submission_id AND v.result = s.best_result;
