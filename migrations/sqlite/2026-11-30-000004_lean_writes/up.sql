-- Fewer index entries and row versions per transaction.
-- A branch's status changes three times; without an index on it, the row can be updated in
-- place (a HOT update on Postgres) instead of adding index entries each time. The only query
-- that used the index (may a resource be deleted?) starts from the open transactions instead.
DROP INDEX branches_resource;
-- The next automatic branch id is the smallest free one, found among the branches read anyway:
-- adding a branch no longer rewrites its transaction's row.
ALTER TABLE transactions DROP COLUMN branch_seq;
