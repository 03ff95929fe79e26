ALTER TABLE branches RESET (fillfactor);
ALTER TABLE transactions RESET (fillfactor);
ALTER TABLE transactions ADD COLUMN branch_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX branches_resource ON branches (resource, status);
