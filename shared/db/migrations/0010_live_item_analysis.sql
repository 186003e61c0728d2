-- Item analysis is computed when it is read (shared/db/results.py, _ITEM_ANALYSIS) from the sums the
-- marker keeps, no longer stored by every statistics refresh: building its JSON was two thirds of
-- each refresh, and a refresh runs per test for every marking batch, while item analysis is read
-- now and then.
ALTER TABLE test_statistics
    DROP COLUMN analysed_students,
    DROP COLUMN cronbach_alpha,
    DROP COLUMN kr20,
    DROP COLUMN items;
