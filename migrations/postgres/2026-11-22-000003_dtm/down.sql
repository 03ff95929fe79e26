ALTER TABLE branches DROP COLUMN cancel_url;
ALTER TABLE branches DROP COLUMN confirm_url;
ALTER TABLE transactions DROP COLUMN options;
ALTER TABLE transactions DROP COLUMN protocol;
