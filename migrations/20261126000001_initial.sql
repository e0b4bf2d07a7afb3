-- bulk-import schema: users, import jobs with their checkpoint, customers, per-row errors.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE import_jobs (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Idempotency-Key, unique per user; the fingerprint is sha256(file) + mode, so that a
    -- replay with another file or mode can be told apart from a plain retry.
    idempotency_key     text NOT NULL,
    request_fingerprint text NOT NULL,
    mode                text NOT NULL CHECK (mode IN ('insert_only', 'upsert')),
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('uploading', 'pending', 'processing', 'done', 'failed')),
    source_object       text NOT NULL,
    file_name           text NOT NULL,
    file_size           bigint NOT NULL DEFAULT 0 CHECK (file_size >= 0),
    processed_rows      bigint NOT NULL DEFAULT 0,
    inserted_rows       bigint NOT NULL DEFAULT 0,
    updated_rows        bigint NOT NULL DEFAULT 0,
    error_rows          bigint NOT NULL DEFAULT 0,
    -- Byte offset and physical line of the next record to read; committed with each batch.
    checkpoint_offset   bigint NOT NULL DEFAULT 0,
    checkpoint_line     bigint NOT NULL DEFAULT 1,
    report_object       text,
    error               text,
    attempts            integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT import_jobs_user_key UNIQUE (user_id, idempotency_key)
);

CREATE INDEX import_jobs_user_created ON import_jobs (user_id, created_at DESC, id DESC);
CREATE INDEX import_jobs_unfinished ON import_jobs (status) WHERE status IN ('pending', 'processing');

CREATE TABLE customers (
    -- The email is the identity of a customer: trimmed, lower-cased, unique.
    email            text PRIMARY KEY,
    first_name       text,
    last_name        text,
    phone            text,
    city             text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Which import last wrote the row, and from which line of its file. Not a foreign key:
    -- customers outlive the jobs that loaded them, and the check would slow every COPY.
    last_import_id   uuid,
    last_import_line bigint
);

CREATE TABLE import_errors (
    job_id     uuid NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    line       bigint NOT NULL,
    code       text NOT NULL,
    message    text NOT NULL,
    email      text,
    first_name text,
    last_name  text,
    phone      text,
    city       text,
    PRIMARY KEY (job_id, line)
);
