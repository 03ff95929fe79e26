-- Times are milliseconds since the Unix epoch (BIGINT), the same on every backend.
CREATE TABLE resources (
    name        VARCHAR(64)  PRIMARY KEY NOT NULL,
    try_url     TEXT         NOT NULL,
    confirm_url TEXT         NOT NULL,
    cancel_url  TEXT         NOT NULL,
    created_at  BIGINT       NOT NULL,
    updated_at  BIGINT       NOT NULL
);

CREATE TABLE transactions (
    gid           VARCHAR(128) PRIMARY KEY NOT NULL,
    status        VARCHAR(16)  NOT NULL,
    created_at    BIGINT       NOT NULL,
    updated_at    BIGINT       NOT NULL,
    expires_at    BIGINT       NOT NULL,
    finished_at   BIGINT,
    reason        TEXT,
    metadata      TEXT         NOT NULL,
    attempts      BIGINT       NOT NULL DEFAULT 0,
    next_retry_at BIGINT,
    last_error    TEXT,
    -- When recovery should next look at the row: expires_at while trying, the end of the driver's
    -- lease while one drives it, the retry time after a failed attempt.
    due_at        BIGINT       NOT NULL,
    lease_owner   VARCHAR(64),
    branch_seq    BIGINT       NOT NULL DEFAULT 0
);
-- The recovery query only ever looks at unfinished rows: a partial index keeps it small however
-- many finished transactions the table holds.
CREATE INDEX transactions_due ON transactions (due_at) WHERE status IN ('trying', 'committing', 'aborting');
CREATE INDEX transactions_created ON transactions (created_at, gid);
CREATE INDEX transactions_status_created ON transactions (status, created_at, gid);

CREATE TABLE branches (
    gid         VARCHAR(128) NOT NULL REFERENCES transactions (gid) ON DELETE CASCADE,
    branch_id   VARCHAR(128) NOT NULL,
    resource    VARCHAR(64)  NOT NULL,
    status      VARCHAR(16)  NOT NULL,
    payload     TEXT         NOT NULL,
    try_outcome VARCHAR(16),
    response    TEXT,
    attempts    BIGINT       NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  BIGINT       NOT NULL,
    updated_at  BIGINT       NOT NULL,
    PRIMARY KEY (gid, branch_id)
);
CREATE INDEX branches_resource ON branches (resource, status);
