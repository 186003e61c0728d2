-- How many students of a test hold each exact score (their best available and obtained marks), kept
-- by the database itself as student_results changes. The statistics refresh reads these few rows
-- (one per distinct score) instead of every student of the test: the same exact count, mean,
-- stddev, percentiles, min, max and histogram, at a cost that no longer grows with the students.
CREATE TABLE test_scores (
    test_id   text    NOT NULL,
    available integer NOT NULL,
    obtained  integer NOT NULL,
    students  integer NOT NULL,  -- 0 once the last such student moved on
    PRIMARY KEY (test_id, available, obtained)
);

INSERT INTO test_scores (test_id, available, obtained, students)
SELECT test_id, available, obtained, count(*) FROM student_results GROUP BY 1, 2, 3;

-- One set-based adjustment per statement (transition tables), whatever wrote student_results:
-- marking, retraction, rebuild. A row whose score did not change counts -1 and +1, i.e. not at all.
-- Rows are locked in key order, as concurrent markings of different tests touch different keys and
-- markings of one test already take turns (the tests row lock).
CREATE FUNCTION count_test_scores() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO test_scores AS s (test_id, available, obtained, students)
        SELECT test_id, available, obtained, count(*) FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (test_id, available, obtained) DO UPDATE SET students = s.students + excluded.students;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE test_scores s SET students = s.students - d.n
          FROM (SELECT test_id, available, obtained, count(*) AS n FROM old_rows GROUP BY 1, 2, 3) d
         WHERE (s.test_id, s.available, s.obtained) = (d.test_id, d.available, d.obtained);
    ELSE
        INSERT INTO test_scores AS s (test_id, available, obtained, students)
        SELECT test_id, available, obtained, sum(n) FROM (
            SELECT test_id, available, obtained, 1 AS n FROM new_rows
            UNION ALL
            SELECT test_id, available, obtained, -1 FROM old_rows) c
         GROUP BY 1, 2, 3 HAVING sum(n) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (test_id, available, obtained) DO UPDATE SET students = s.students + excluded.students;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER student_results_counted_on_insert AFTER INSERT ON student_results
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_test_scores();
CREATE TRIGGER student_results_counted_on_update AFTER UPDATE ON student_results
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_test_scores();
CREATE TRIGGER student_results_counted_on_delete AFTER DELETE ON student_results
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_test_scores();
