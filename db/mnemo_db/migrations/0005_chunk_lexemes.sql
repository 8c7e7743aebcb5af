-- A chunk's lexical document arrives from the indexer as a tsvector (built in Python by
-- mnemo_core.text.chunk_lexemes) instead of being computed from a stored search text by a
-- generated column: to_tsvector over every chunk was about a quarter of PostgreSQL's time
-- while indexing code, and the search text was stored only to feed it (bench/README.md,
-- change 20). Existing chunks keep the tsvector they have.
ALTER TABLE code_chunks ALTER COLUMN tsv DROP EXPRESSION;
ALTER TABLE code_chunks ALTER COLUMN tsv SET NOT NULL;
ALTER TABLE code_chunks DROP COLUMN search_text;
