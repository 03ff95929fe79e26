-- Transactions made through the DTM-compatible API (/api/dtmsvr) live in the same tables.
-- `protocol` says how phase two calls a branch; `options` keeps DTM's per-transaction options.
ALTER TABLE transactions ADD COLUMN protocol VARCHAR(16) NOT NULL DEFAULT 'native';
ALTER TABLE transactions ADD COLUMN options TEXT;
-- A DTM branch names its own Confirm and Cancel URLs instead of a registered resource.
ALTER TABLE branches ADD COLUMN confirm_url TEXT;
ALTER TABLE branches ADD COLUMN cancel_url TEXT;
