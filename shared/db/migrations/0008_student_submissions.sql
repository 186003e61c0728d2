-- The lineage of each (test, student) moves out of student_results into rows of its own: one per
-- contributing submission. As an array on the student's row, every marking rewrote the whole list
-- (TOASTed once long) and re-indexed every element (GIN), so a student's marking slowed with each
-- re-scan: the sample document sent 150 times took 14 ms to upsert its 81 students, against 1 ms
-- the first time. Now a marking only adds the rows it brings.
CREATE TABLE student_submissions (
    test_id        text NOT NULL,
    student_number text NOT NULL,
    submission_id  text NOT NULL,
    PRIMARY KEY (test_id, student_number, submission_id)
);

-- Retraction finds the students a submission contributed to.
CREATE INDEX student_submissions_by_submission ON student_submissions (submission_id);

INSERT INTO student_submissions (test_id, student_number, submission_id)
SELECT DISTINCT test_id, student_number, unnest(submission_ids) FROM student_results;

DROP INDEX IF EXISTS student_results_submission_ids;
ALTER TABLE student_results DROP COLUMN submission_ids;
