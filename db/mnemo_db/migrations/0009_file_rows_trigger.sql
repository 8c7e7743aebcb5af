-- A file's chunks and edges go with it by a statement trigger instead of foreign keys. The
-- keys checked every inserted chunk and edge against code_files, one lookup each (~73,000
-- edges and ~21,000 chunks for the stdlib: a sixth of PostgreSQL's time writing them,
-- bench/README.md, change 29). Nothing else writes these rows: the indexer inserts them
-- for files its claim_files has just locked, under the repository's lock. What the keys
-- did on delete stays: deleting files (directly, or through their repository) deletes
-- their chunks and edges in the same statement.
ALTER TABLE code_edges DROP CONSTRAINT code_edges_file_id_fkey;
ALTER TABLE code_chunks DROP CONSTRAINT code_chunks_file_id_fkey;

CREATE FUNCTION mnemo_delete_file_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM code_edges WHERE file_id IN (SELECT id FROM gone_files);
    DELETE FROM code_chunks WHERE file_id IN (SELECT id FROM gone_files);
    RETURN NULL;
END
$$;

CREATE TRIGGER code_files_delete_rows AFTER DELETE ON code_files
    REFERENCING OLD TABLE AS gone_files
    FOR EACH STATEMENT EXECUTE FUNCTION mnemo_delete_file_rows();
