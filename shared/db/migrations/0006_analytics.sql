-- Analysts' read side: answers for item analysis, per-submission data quality, and the precomputed
-- catalogue, histogram and item analysis (refreshed with the aggregate, per test per batch).

-- The <answer> elements of every accepted scan that has any, one row per scan (arrays in document
-- order, one element per answer: a row per answer made staging several times slower), by student
-- number, never names. submission_id is the lineage: deleting a submission's rows removes its answers.
CREATE TABLE answers (
    submission_id  text      NOT NULL,
    result         integer   NOT NULL,          -- the scan's position in its document, from 1
    test_id        text      NOT NULL,
    student_number text      NOT NULL,
    questions      text[]    NOT NULL,          -- unique within the scan
    options        text[]    NOT NULL,          -- the chosen option as written ('' when blank)
    available      integer[] NOT NULL,
    awarded        integer[] NOT NULL,          -- 0 <= awarded <= available, checked by the validator
    PRIMARY KEY (submission_id, result)
);

-- Sum of a scan's awarded marks; NULL when the scan carried no usable <answer> elements.
ALTER TABLE validated_results ADD COLUMN awarded_total integer;

-- The scan whose answers count for item analysis: the highest obtained mark, the latest on a tie
-- (greatest submission id, a time-ordered ULID, then the later position in the document).
ALTER TABLE student_results ADD COLUMN best_submission_id text, ADD COLUMN best_result integer;

UPDATE student_results s
   SET best_submission_id = b.submission_id, best_result = b.result
  FROM (SELECT DISTINCT ON (test_id, student_number) test_id, student_number, submission_id, result
          FROM validated_results v
         WHERE EXISTS (SELECT 1 FROM applied_markings a WHERE a.submission_id = v.submission_id)
         ORDER BY test_id, student_number, obtained DESC, submission_id DESC, result DESC) b
 WHERE s.test_id = b.test_id AND s.student_number = b.student_number;

-- One row per (test, marked submission): how many of its scans are there, how many have awarded
-- marks that do not add up to summary-marks obtained, how many carry no answers.
CREATE TABLE test_submissions (
    test_id            text    NOT NULL,
    submission_id      text    NOT NULL,
    results            integer NOT NULL,
    mismatched_results integer NOT NULL,
    unanswered_results integer NOT NULL,
    PRIMARY KEY (test_id, submission_id)
);

INSERT INTO test_submissions (test_id, submission_id, results, mismatched_results, unanswered_results)
SELECT test_id, submission_id, count(*), 0, count(*)
  FROM validated_results v
 WHERE EXISTS (SELECT 1 FROM applied_markings a WHERE a.submission_id = v.submission_id)
 GROUP BY test_id, submission_id;

-- Item-analysis sums over each student's counted scan, kept current by the marker as deltas (when a
-- student's counted scan changes, the old scan's contributions are taken away and the new one's
-- added), so a refresh reads a few rows per question instead of every answer of the test.
-- x = a question's awarded marks, t = the scan's total awarded marks (validated_results.awarded_total).
CREATE TABLE item_sums (
    test_id   text    NOT NULL,
    question  text    NOT NULL,
    answering bigint  NOT NULL,                 -- counted scans answering it
    sum_x     bigint  NOT NULL,
    sum_xx    bigint  NOT NULL,
    sum_xt    bigint  NOT NULL,
    sum_ratio numeric NOT NULL,                 -- sum of awarded / available
    nonbinary bigint  NOT NULL,                 -- answers whose marks-available is not 1
    PRIMARY KEY (test_id, question)
);

CREATE TABLE option_counts (
    test_id  text   NOT NULL,
    question text   NOT NULL,
    option   text   NOT NULL,
    chosen   bigint NOT NULL,
    PRIMARY KEY (test_id, question, option)
);

CREATE TABLE item_totals (
    test_id  text PRIMARY KEY,
    students bigint NOT NULL,                   -- counted scans with answers
    sum_t    bigint NOT NULL,
    sum_tt   bigint NOT NULL
);

-- Precomputed with the aggregate, at the same results version.
ALTER TABLE test_statistics
    ADD COLUMN max_available          integer NOT NULL DEFAULT 0,
    ADD COLUMN submission_count       integer NOT NULL DEFAULT 0,
    ADD COLUMN histogram              integer[] NOT NULL DEFAULT '{0,0,0,0,0,0,0,0,0,0}',
    ADD COLUMN analysed_students      integer NOT NULL DEFAULT 0,
    ADD COLUMN cronbach_alpha         float8,
    ADD COLUMN kr20                   float8,
    ADD COLUMN items                  json NOT NULL DEFAULT '[]',  -- served as built: json keeps key order, costs less
    ADD COLUMN mismatched_results     integer NOT NULL DEFAULT 0,
    ADD COLUMN mismatched_submissions integer NOT NULL DEFAULT 0,
    ADD COLUMN unanswered_results     integer NOT NULL DEFAULT 0;

-- Statistics computed before this migration: their catalogue and histogram figures. Answers of
-- documents imported before it were not kept; `markr-ops reprocess --all --rebuild` reads them again.
UPDATE test_statistics ts
   SET max_available = f.max_available, histogram = f.histogram, submission_count = f.submissions,
       unanswered_results = f.unanswered
  FROM (SELECT s.test_id, max(s.available) AS max_available,
               (SELECT array_agg(coalesce(h.c, 0) ORDER BY b)
                  FROM generate_series(0, 9) AS b
                  LEFT JOIN (SELECT least(10 * obtained / available, 9) AS bin, count(*)::int AS c
                               FROM student_results WHERE test_id = s.test_id GROUP BY 1) h ON h.bin = b) AS histogram,
               (SELECT count(*) FROM test_submissions t WHERE t.test_id = s.test_id) AS submissions,
               (SELECT coalesce(sum(unanswered_results), 0) FROM test_submissions t WHERE t.test_id = s.test_id)
                   AS unanswered
          FROM student_results s GROUP BY s.test_id) f
 WHERE ts.test_id = f.test_id;
