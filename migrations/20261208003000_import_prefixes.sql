-- Imports from an object already in storage (docs/api.md, "Importing a file already in
-- storage"): the key prefixes, in the service's bucket, from which an organization may start
-- an import without uploading. NULL: the default, `orgs/<id>/inbox/`. Every prefix lies under
-- `orgs/<id>/` (the API refuses others), so no organization can name another's objects nor
-- the service's own uploads and reports.
ALTER TABLE organizations ADD COLUMN import_prefixes text[];
