-- Issue 26: the explicit column mapping of an upload (`columns=`), as the JSON object of the
-- mapped columns to their header cells (`{"email":"E-mail Address",…}`); NULL: detect the
-- header's names.
ALTER TABLE import_jobs ADD COLUMN columns text;
