-- Retracting a submission (shared/ops/retract.py): its contribution is removed from the results and
-- it never comes back (replays, reprocess and --rebuild skip it). Not a derived table: a rebuild keeps it.
CREATE TABLE retractions (
    submission_id text PRIMARY KEY,
    source        text NOT NULL,
    reason        text NOT NULL,
    retracted_at  timestamptz NOT NULL DEFAULT now(),
    -- Set by --erase: the vault entry is gone; its tombstone (and this row) keep the sha256.
    sha256        text,
    erased_at     timestamptz
);

ALTER TABLE submissions DROP CONSTRAINT submissions_status_check;
ALTER TABLE submissions ADD CONSTRAINT submissions_status_check
    CHECK (status IN ('received', 'validated', 'rejected', 'completed', 'failed', 'retracted'));
ALTER TABLE submissions ADD COLUMN retracted_at timestamptz;
ALTER TABLE submissions ADD COLUMN retraction_reason text;

-- Finding the rows a submission contributed to (lineage) without scanning every result.
CREATE INDEX student_results_submission_ids ON student_results USING gin (submission_ids);
