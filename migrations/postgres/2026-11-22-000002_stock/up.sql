-- The stock service's tables. The database is the source of truth; Redis mirrors `stock`.
CREATE TABLE stock (
    key        VARCHAR(128) PRIMARY KEY NOT NULL,
    available  BIGINT       NOT NULL CHECK (available >= 0),
    locked     BIGINT       NOT NULL CHECK (locked >= 0),
    consumed   BIGINT       NOT NULL CHECK (consumed >= 0),
    version    BIGINT       NOT NULL DEFAULT 0,
    created_at BIGINT       NOT NULL,
    updated_at BIGINT       NOT NULL
);

-- What each branch's Try reserved, so Confirm and Cancel move exactly that.
CREATE TABLE stock_reservations (
    gid        VARCHAR(128) NOT NULL,
    branch_id  VARCHAR(128) NOT NULL,
    key        VARCHAR(128) NOT NULL,
    amount     BIGINT       NOT NULL CHECK (amount > 0),
    state      VARCHAR(16)  NOT NULL,
    created_at BIGINT       NOT NULL,
    updated_at BIGINT       NOT NULL,
    PRIMARY KEY (gid, branch_id, key)
);
CREATE INDEX stock_reservations_key_state ON stock_reservations (key, state);

-- The TCC barrier: one row per (gid, branch, op), written in the same local transaction as the
-- business change. A Cancel also writes the Try's row, so a Try arriving after it does nothing.
CREATE TABLE tcc_barriers (
    gid        VARCHAR(128) NOT NULL,
    branch_id  VARCHAR(128) NOT NULL,
    op         VARCHAR(16)  NOT NULL,
    origin     VARCHAR(16)  NOT NULL,
    created_at BIGINT       NOT NULL,
    PRIMARY KEY (gid, branch_id, op)
);
