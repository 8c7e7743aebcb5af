-- Code intelligence: repositories, files (the uploaded content, parsed by the indexer),
-- chunks (the language's units, embedded like events), and the symbol graph.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE code_repositories (
    name            text PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_indexed_at timestamptz,
    last_commit     text,
    last_job_id     uuid
);

CREATE TABLE code_files (
    id           bigserial PRIMARY KEY,
    repository   text NOT NULL REFERENCES code_repositories (name) ON DELETE CASCADE,
    path         text NOT NULL,
    module       text NOT NULL,
    language     text,
    content      text NOT NULL,
    content_hash text NOT NULL,
    size_bytes   integer NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'indexed', 'failed', 'cancelled')),
    error        text,
    imports      text[] NOT NULL DEFAULT '{}',
    job_id       uuid REFERENCES jobs (id) ON DELETE SET NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    indexed_at   timestamptz,
    UNIQUE (repository, path)
);
CREATE INDEX code_files_job_idx ON code_files (job_id, status) WHERE job_id IS NOT NULL;
CREATE INDEX code_files_module_idx ON code_files (repository, module);

CREATE TABLE code_chunks (
    id                    bigserial PRIMARY KEY,
    file_id               bigint NOT NULL REFERENCES code_files (id) ON DELETE CASCADE,
    repository            text NOT NULL,
    path                  text NOT NULL,
    language              text NOT NULL,
    kind                  text NOT NULL,
    name                  text NOT NULL,
    qualified_name        text NOT NULL,
    parent_qualified_name text,
    signature             text NOT NULL DEFAULT '',
    docstring             text NOT NULL DEFAULT '',
    start_line            integer NOT NULL,
    end_line              integer NOT NULL,
    content               text NOT NULL,
    calls                 text[] NOT NULL DEFAULT '{}',
    complexity            integer NOT NULL DEFAULT 1,
    content_hash          text NOT NULL,
    embed_hash            text NOT NULL,
    search_text           text NOT NULL,
    tsv                   tsvector GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED,
    embedding             vector({{EMBEDDING_DIM}}),
    embedding_model       text,
    embedding_status      text NOT NULL DEFAULT 'pending'
                          CHECK (embedding_status IN ('pending', 'done', 'failed', 'cancelled', 'skipped')),
    embedding_error       text,
    job_id                uuid REFERENCES jobs (id) ON DELETE SET NULL,
    UNIQUE (file_id, qualified_name)
);
CREATE INDEX code_chunks_embedding_hnsw_idx ON code_chunks USING hnsw (embedding vector_cosine_ops);
CREATE INDEX code_chunks_tsv_idx ON code_chunks USING gin (tsv);
CREATE INDEX code_chunks_qname_trgm_idx ON code_chunks USING gin (qualified_name gin_trgm_ops);
CREATE INDEX code_chunks_repo_qname_idx ON code_chunks (repository, qualified_name);
CREATE INDEX code_chunks_repo_name_idx ON code_chunks (repository, name);
CREATE INDEX code_chunks_repo_path_idx ON code_chunks (repository, path text_pattern_ops);
CREATE INDEX code_chunks_job_idx ON code_chunks (job_id, embedding_status) WHERE job_id IS NOT NULL;

-- Edges belong to the file whose parse produced them and go when it is re-parsed.
-- `target` is the resolved qualified name in the repository, NULL while unresolved; the
-- candidates (from imports, enclosing scope and module, best first) and the bare name (for a
-- last-resort unique match) are kept so a later change anywhere in the repository can
-- resolve them again (mnemo_core.resolve). `external` is the name as written.
CREATE TABLE code_edges (
    id           bigserial PRIMARY KEY,
    repository   text NOT NULL,
    file_id      bigint NOT NULL REFERENCES code_files (id) ON DELETE CASCADE,
    source       text NOT NULL,
    relationship text NOT NULL CHECK (relationship IN ('contains', 'calls', 'imports')),
    external     text NOT NULL,
    candidates   text[] NOT NULL DEFAULT '{}',
    bare         text,
    target       text,
    line         integer,
    UNIQUE (file_id, source, relationship, external)
);
CREATE INDEX code_edges_source_idx ON code_edges (repository, source, relationship);
CREATE INDEX code_edges_target_idx ON code_edges (repository, target, relationship);

SELECT pgmq.create('index');
SELECT pgmq.create('index_dlq');
ALTER TABLE pgmq.q_index SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

-- Index-job results accumulate per file in the same transaction as the file's rows.
CREATE FUNCTION mnemo_index_result(
    p_job uuid, p_indexed integer, p_failed jsonb, p_chunks integer, p_symbols integer,
    p_edges integer
) RETURNS void LANGUAGE sql AS $$
    UPDATE jobs SET result = result || jsonb_build_object(
        'files_indexed', coalesce((result->>'files_indexed')::int, 0) + p_indexed,
        'files_failed', coalesce(result->'files_failed', '[]'::jsonb) || p_failed,
        'chunks', coalesce((result->>'chunks')::int, 0) + p_chunks,
        'symbols', coalesce((result->>'symbols')::int, 0) + p_symbols,
        'edges', coalesce((result->>'edges')::int, 0) + p_edges
    )
    WHERE id = p_job
$$;
