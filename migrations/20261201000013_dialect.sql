-- Issue 13: options of an import (dry run, error limit, dialect overrides), the dialect the
-- importer detected and used, and the resume point inside a gzip upload.

ALTER TABLE import_jobs
    -- Validate and report only: no customer row is written.
    ADD COLUMN dry_run         boolean NOT NULL DEFAULT false,
    -- Stop `failed` (too_many_errors) once more than this many rows are bad.
    ADD COLUMN max_errors      bigint CHECK (max_errors >= 0),
    -- delimiter= and encoding= as requested (NULL: detect).
    ADD COLUMN delimiter       text,
    ADD COLUMN encoding        text,
    -- The dialect used (JSON: delimiter, encoding, compression, header, columns, warnings),
    -- written once at the first start and kept for every later attempt.
    ADD COLUMN dialect         text,
    -- gzip uploads: offset in the decompressed stream of the next record (a resume
    -- decompresses from the start up to here); checkpoint_offset then holds the compressed
    -- bytes consumed, for progress. NULL for uncompressed files.
    ADD COLUMN checkpoint_stream_offset bigint;

-- Dry runs: the emails a dry run would have written, so that later batches see them
-- exactly as the real run sees its own rows (duplicate_in_file, upsert's inserted/updated).
-- Deleted when the job ends.
CREATE TABLE import_dry_run_rows (
    job_id uuid NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    email  text NOT NULL,
    line   bigint NOT NULL,
    PRIMARY KEY (job_id, email)
);
