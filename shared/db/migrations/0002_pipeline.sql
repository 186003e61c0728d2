-- The pipeline's state in PostgreSQL. Raw documents live in the Table Storage vault; everything
-- here is derived from them and names the submission(s) it came from, so it can be rebuilt.

-- Status of each submission. Written only by the notifier.
CREATE TABLE submissions (
    submission_id       text PRIMARY KEY,
    source              text NOT NULL,
    run_id              text NOT NULL,          -- the processing run (= submission_id, or a replay's id)
    status              text NOT NULL CHECK (status IN ('received', 'validated', 'rejected', 'completed', 'failed')),
    received_at         timestamptz,
    validated_at        timestamptz,
    rejected_at         timestamptz,
    marked_at           timestamptz,
    completed_at        timestamptz,
    failed_at           timestamptz,
    result_count        integer,
    test_ids            text[],
    aggregated_test_ids text[] NOT NULL DEFAULT '{}',
    errors              jsonb NOT NULL DEFAULT '[]',
    error_count         integer NOT NULL DEFAULT 0,
    warnings            jsonb NOT NULL DEFAULT '[]',
    failure             jsonb,                  -- {"stage", "reason", "description"} when failed
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- The rows of a document that passed validation, as parsed. Never holds a rejected document.
CREATE TABLE validated_results (
    submission_id  text    NOT NULL,
    result         integer NOT NULL,            -- position in the document, from 1
    test_id        text    NOT NULL,
    student_number text    NOT NULL,
    available      integer NOT NULL CHECK (available >= 1),
    obtained       integer NOT NULL CHECK (obtained >= 0 AND obtained <= available),
    PRIMARY KEY (submission_id, result)
);

-- One row per (test, student): the highest available and highest obtained marks seen, kept
-- independently (the Markr re-scan rule), with the submissions that contributed to it.
CREATE TABLE student_results (
    test_id        text    NOT NULL,
    student_number text    NOT NULL,
    available      integer NOT NULL CHECK (available >= 1),
    obtained       integer NOT NULL CHECK (obtained >= 0 AND obtained <= available),
    submission_ids text[]  NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (test_id, student_number)
);

-- Bumped by every marking that touches a test; statistics record the version they cover.
CREATE TABLE tests (
    test_id         text PRIMARY KEY,
    results_version bigint NOT NULL DEFAULT 0
);

-- Marking runs already applied (redelivery of a marking message changes nothing).
CREATE TABLE applied_markings (
    submission_id text NOT NULL,
    run_id        text NOT NULL,
    test_versions jsonb NOT NULL,               -- {"testId": results_version after this marking}
    result_count  integer NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (submission_id, run_id)
);

-- Statistics per test, in percent of available marks, over float8.
CREATE TABLE test_statistics (
    test_id          text PRIMARY KEY REFERENCES tests (test_id),
    computed_version bigint NOT NULL,
    count            integer NOT NULL,
    mean             float8 NOT NULL,
    stddev           float8 NOT NULL,
    min              float8 NOT NULL,
    max              float8 NOT NULL,
    p25              float8 NOT NULL,
    p50              float8 NOT NULL,
    p75              float8 NOT NULL,
    computed_at      timestamptz NOT NULL DEFAULT now()
);
