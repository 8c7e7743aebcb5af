-- Code intelligence: repositories, files, chunks, the symbol graph and code search.

-- ============================ repositories ==========================

-- upsert_repository --
-- Create repository $1 if new and remember commit $2 and job $3.
INSERT INTO code_repositories (name, last_commit, last_job_id) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
SET last_commit = coalesce(EXCLUDED.last_commit, code_repositories.last_commit),
    last_job_id = coalesce(EXCLUDED.last_job_id, code_repositories.last_job_id);

-- lock_repository --
-- Serialize writers of repository $1 until the end of the transaction.
SELECT pg_advisory_xact_lock(hashtextextended('mnemo-repo:' || $1, 0));

-- repository_exists --
-- Does repository $1 exist?
SELECT EXISTS (SELECT 1 FROM code_repositories WHERE name = $1);

-- repository_names --
-- Every repository's name.
SELECT name FROM code_repositories ORDER BY name;

-- symbols_missing --
-- Those of names $2 that are no node of repository $1's graph (no chunk defines them, and
-- no edge leaves them: a file with only definitions has no chunk of its own, but its
-- imports and what it contains leave it), in the order given.
SELECT n.name FROM unnest($2::text[]) WITH ORDINALITY AS n(name, i)
WHERE NOT EXISTS (SELECT 1 FROM code_chunks c WHERE c.repository = $1 AND c.qualified_name = n.name)
  AND NOT EXISTS (SELECT 1 FROM code_edges e WHERE e.repository = $1 AND e.source = n.name)
ORDER BY n.i;

-- symbol_suggestions --
-- Up to $4 qualified names of repository $1's symbols that $2, which names none, may have
-- meant: those whose own name is $3 ($2's last dotted part). Those that end with $2 come
-- first (a qualified name written without its first parts: `db.connect` for
-- `app.store.db.connect`), then the shortest. A split unit's pieces count as the unit.
SELECT q FROM (
    SELECT DISTINCT split_part(qualified_name, '@', 1) AS q
    FROM code_chunks
    WHERE repository = $1 AND name = $3 AND kind NOT IN ('module', 'section', 'window')
) AS s
ORDER BY right(q, length($2) + 1) = '.' || $2 DESC, length(q), q
LIMIT $4;

-- list_repositories --
-- Every repository with its counts, languages and embedding coverage.
SELECT r.name, r.created_at, r.last_indexed_at, r.last_commit, r.last_job_id,
       (SELECT count(*) FROM code_files f WHERE f.repository = r.name)::int AS files,
       (SELECT count(*) FROM code_files f WHERE f.repository = r.name AND f.status = 'failed')::int
           AS files_failed,
       c.chunks, c.symbols, c.embedded,
       (SELECT count(*) FROM code_edges e WHERE e.repository = r.name)::int AS edges,
       (SELECT coalesce(jsonb_object_agg(language, n), '{}'::jsonb) FROM (
            SELECT language, count(*)::int AS n FROM code_files f
            WHERE f.repository = r.name AND language IS NOT NULL GROUP BY language) l)
           AS languages
FROM code_repositories r
CROSS JOIN LATERAL (
    SELECT count(*)::int AS chunks,
           count(*) FILTER (WHERE kind NOT IN ('module', 'section', 'window'))::int AS symbols,
           count(*) FILTER (WHERE embedding_status = 'done')::int AS embedded
    FROM code_chunks k WHERE k.repository = r.name
) c
ORDER BY r.name;

-- pending_files_of_repository --
-- Per job, the files of repository $1 still waiting to be parsed (to settle on delete; the
-- caller holds the repository's lock, so no indexer changes them meanwhile).
SELECT job_id, count(*)::int AS n FROM code_files
WHERE repository = $1 AND status = 'pending' AND job_id IS NOT NULL GROUP BY job_id;

-- clear_repository_chunks --
-- Delete repository $1's chunks; returns, per job, those that were still waiting for an
-- embedding. What the deletion found is exact: an embedder writing one of them meanwhile
-- is waited for, and a chunk it embedded counts as done, not as pending.
WITH gone AS (DELETE FROM code_chunks WHERE repository = $1 RETURNING job_id, embedding_status)
SELECT job_id, count(*)::int AS n FROM gone
WHERE embedding_status = 'pending' AND job_id IS NOT NULL GROUP BY job_id;

-- delete_repository --
-- Remove repository $1 and everything of it (files, chunks and edges cascade).
DELETE FROM code_repositories WHERE name = $1 RETURNING name;

-- ============================== files ===============================

-- files_of_repository --
-- Current files of repository $1 (locked for this transaction).
SELECT id, path, content_hash, status, job_id FROM code_files WHERE repository = $1 FOR UPDATE;

-- upsert_files --
-- Store new or changed files ($1 repository, $2 paths, $3 modules, $4 languages, $5 contents,
-- $6 hashes, $7 sizes, $8 job) as pending; returns their ids.
INSERT INTO code_files (repository, path, module, language, content, content_hash, size_bytes,
                        status, job_id)
SELECT $1, u.path, u.module, u.language, u.content, u.hash, u.size, 'pending', $8
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[])
     AS u(path, module, language, content, hash, size)
ON CONFLICT (repository, path) DO UPDATE SET
    module = EXCLUDED.module, language = EXCLUDED.language, content = EXCLUDED.content,
    content_hash = EXCLUDED.content_hash, size_bytes = EXCLUDED.size_bytes, status = 'pending',
    error = NULL, job_id = EXCLUDED.job_id, updated_at = now()
RETURNING id, path;

-- delete_files --
-- Delete files $1 (chunks and edges cascade); returns their paths.
DELETE FROM code_files WHERE id = ANY($1::bigint[]) RETURNING path;

-- files_to_index --
-- The current rows behind a batch of file ids ($1), with their job's status.
SELECT f.id, f.repository, f.path, f.language, f.content, f.content_hash, f.status, f.job_id,
       j.status AS job_status
FROM code_files f LEFT JOIN jobs j ON j.id = f.job_id
WHERE f.id = ANY($1::bigint[]);

-- claim_files --
-- Mark files $1 indexed (with imports $4, joined by U+001F, and languages $5) where each
-- still holds content $2 for job $3; returns those claimed.
UPDATE code_files f
SET status = 'indexed', imports = string_to_array(u.imports, E'\x1f'), language = u.language,
    error = NULL, indexed_at = now()
FROM unnest($1::bigint[], $2::text[], $4::text[], $5::text[]) AS u(id, hash, imports, language)
WHERE f.id = u.id AND f.content_hash = u.hash AND f.job_id IS NOT DISTINCT FROM $3
  AND f.status = 'pending'
RETURNING f.id;

-- fail_file --
-- Mark file $1 failed with reason $4 if it still holds content $2 for job $3; returns it.
UPDATE code_files SET status = 'failed', error = $4, indexed_at = now()
WHERE id = $1 AND content_hash = $2 AND job_id IS NOT DISTINCT FROM $3 AND status = 'pending'
RETURNING id;

-- cancel_files --
-- Files $1 of a cancelled job stay unparsed.
UPDATE code_files SET status = 'cancelled'
WHERE id = ANY($1::bigint[]) AND status = 'pending';

-- old_chunk_vectors --
-- Embeddings of files $1's current chunks by embed hash, to reuse for unchanged chunks.
SELECT embed_hash, embedding, embedding_model FROM code_chunks
WHERE file_id = ANY($1::bigint[]) AND embedding_status = 'done';

-- clear_file_rows --
-- Drop files $1's chunks and edges (before writing their new parse, or deleting them);
-- returns, per job, the chunks that were still waiting for an embedding (they leave their
-- jobs). Exact for the same reason as clear_repository_chunks.
WITH gone_edges AS (DELETE FROM code_edges WHERE file_id = ANY($1::bigint[])),
     gone AS (DELETE FROM code_chunks WHERE file_id = ANY($1::bigint[])
              RETURNING job_id, embedding_status)
SELECT job_id, count(*)::int AS n FROM gone
WHERE embedding_status = 'pending' AND job_id IS NOT NULL GROUP BY job_id;

-- insert_chunks --
-- Chunks, one element a chunk: $1 file ids, job $2, then columns of strings packed into one
-- text each, every value after separator $3 (records.packed: (string_to_array(t, $3))[2:]
-- gives them back): $4 repositories, $5 paths, $6 languages, $7 kinds, $8 names,
-- $9 qualified names, $10 signatures, $11 docstrings, $12 contents, $13 callees (joined by
-- U+001F), $14 content hashes, $15 embed hashes, $16 lexical documents (tsvector literals),
-- $17 statuses; then arrays: $18 parents, $19 start lines, $20 end lines, $21 complexities,
-- $22 vectors, $23 models. Returns ids and statuses.
INSERT INTO code_chunks (file_id, repository, path, language, job_id, kind, name,
    qualified_name, parent_qualified_name, signature, docstring, start_line, end_line, content,
    calls, complexity, content_hash, embed_hash, tsv, embedding, embedding_model,
    embedding_status)
SELECT u.file_id, u.repository, u.path, u.language, $2, u.kind, u.name, u.qname, u.parent,
       u.sig, u.doc, u.s, u.e, u.content, string_to_array(u.calls, E'\x1f'), u.cx, u.chash,
       u.ehash, u.lexemes::tsvector, u.emb, u.model, u.status
FROM unnest($1::bigint[], (string_to_array($4, $3))[2:], (string_to_array($5, $3))[2:],
            (string_to_array($6, $3))[2:], (string_to_array($7, $3))[2:],
            (string_to_array($8, $3))[2:], (string_to_array($9, $3))[2:],
            (string_to_array($10, $3))[2:], (string_to_array($11, $3))[2:],
            (string_to_array($12, $3))[2:], (string_to_array($13, $3))[2:],
            (string_to_array($14, $3))[2:], (string_to_array($15, $3))[2:],
            (string_to_array($16, $3))[2:], (string_to_array($17, $3))[2:],
            $18::text[], $19::int[], $20::int[], $21::int[], $22::vector[], $23::text[])
     AS u(file_id, repository, path, language, kind, name, qname, sig, doc, content, calls,
          chash, ehash, lexemes, status, parent, s, e, cx, emb, model)
RETURNING id, embedding_status;

-- insert_edges --
-- Edges, one element an edge: $1 file ids, then columns of strings packed as in
-- insert_chunks with separator $2: $3 repositories, $4 sources, $5 relationships,
-- $6 externals, $7 candidate lists (joined by U+001F); then arrays: $8 bare names, $9 lines,
-- $10 resolved targets. No ON CONFLICT: a file's edges are unique by construction
-- (records.edge_rows keeps one per source, relationship and external) and its old edges are
-- cleared in the same transaction; the speculative insert cost ~15% of this statement.
INSERT INTO code_edges (repository, file_id, source, relationship, external, candidates, bare,
                        target, line)
SELECT u.repository, u.file_id, u.source, u.rel, u.ext, string_to_array(u.cands, E'\x1f'),
       u.bare, u.target, u.line
FROM unnest($1::bigint[], (string_to_array($3, $2))[2:], (string_to_array($4, $2))[2:],
            (string_to_array($5, $2))[2:], (string_to_array($6, $2))[2:],
            (string_to_array($7, $2))[2:], $8::text[], $9::int[], $10::text[])
     AS u(file_id, repository, source, rel, ext, cands, bare, line, target);

-- known_symbols --
-- Which of names $2 are symbols (chunks) or modules (files) of repository $1.
SELECT qualified_name AS name FROM code_chunks
WHERE repository = $1 AND qualified_name = ANY($2::text[])
UNION
SELECT module FROM code_files WHERE repository = $1 AND module = ANY($2::text[]);

-- unique_bare_names --
-- For bare names $2, the repository $1 symbol each names, when only one does. (Not merged with
-- all_unique_bare_names: a prepared "$2 IS NULL OR ..." plan scans the whole repository.)
SELECT name, min(qualified_name) AS qualified_name FROM code_chunks
WHERE repository = $1 AND name = ANY($2::text[])
  AND kind NOT IN ('module', 'section', 'window')
GROUP BY name HAVING count(DISTINCT qualified_name) = 1;

-- all_unique_bare_names --
-- Every name of repository $1 that exactly one symbol has, with that symbol.
SELECT name, min(qualified_name) AS qualified_name FROM code_chunks
WHERE repository = $1 AND kind NOT IN ('module', 'section', 'window')
GROUP BY name HAVING count(DISTINCT qualified_name) = 1;

-- all_symbols --
-- Every symbol and module name of repository $1.
SELECT qualified_name AS name FROM code_chunks WHERE repository = $1
UNION
SELECT module FROM code_files WHERE repository = $1;

-- resolvable_edges --
-- Every non-containment edge of repository $1 with what resolves it.
SELECT id, candidates, bare, target FROM code_edges
WHERE repository = $1 AND relationship <> 'contains';

-- set_edge_targets --
-- Point edges $1 at targets $2 (NULL = unresolved).
UPDATE code_edges e SET target = u.target
FROM unnest($1::bigint[], $2::text[]) AS u(id, target)
WHERE e.id = u.id;

-- files_left_in_job --
-- How many files of job $1 are still pending.
SELECT count(*)::int FROM code_files WHERE job_id = $1 AND status = 'pending';

-- index_result --
-- Add one batch's outcome to index job $1 ($2 indexed, $3 failures, $4 chunks, $5 symbols, $6 edges).
SELECT mnemo_index_result($1, $2, $3::jsonb, $4, $5, $6);

-- repository_indexed --
-- Stamp repository $1 as indexed now.
UPDATE code_repositories SET last_indexed_at = now() WHERE name = $1;

-- ============================== chunks ==============================

-- chunks_to_embed --
-- The current rows behind a batch of chunk ids ($1), with their job's status.
SELECT k.id::text AS id, k.qualified_name, k.signature, k.docstring, k.content, k.path,
       k.embedding_status, k.job_id, j.status AS job_status
FROM code_chunks k LEFT JOIN jobs j ON j.id = k.job_id
WHERE k.id = ANY($1::bigint[]);

-- store_chunk_embeddings --
-- Write vectors ($1 ids, $2 vectors, $3 model) for chunks still pending; returns what moved.
UPDATE code_chunks k
SET embedding = u.embedding, embedding_model = $3, embedding_status = 'done',
    embedding_error = NULL
FROM unnest($1::bigint[], $2::vector[]) AS u(id, embedding)
WHERE k.id = u.id AND k.embedding_status = 'pending'
RETURNING k.id::text AS id, k.job_id;

-- settle_chunks --
-- Move pending chunks ($1 ids) to status $2 with error $3; returns what moved.
UPDATE code_chunks SET embedding_status = $2, embedding_error = $3
WHERE id = ANY($1::bigint[]) AND embedding_status = 'pending'
RETURNING id::text AS id, job_id;

-- ============================== search ==============================

-- search_code_lexical --
-- Full-text and trigram matches for tsquery $1 / raw text $2, filtered ($3 repository,
-- $4 language, $5 kind, $6 path prefix), best $7.
SELECT k.id, ts_rank_cd(k.tsv, q) + greatest(similarity(k.qualified_name, $2),
       similarity(k.name, $2)) AS score
FROM code_chunks k, to_tsquery('simple', $1) q
WHERE ($3::text IS NULL OR k.repository = $3)
  AND ($4::text IS NULL OR k.language = $4)
  AND ($5::text IS NULL OR k.kind = $5)
  AND ($6::text IS NULL OR k.path LIKE $6 || '%')
  AND (k.tsv @@ q OR k.qualified_name % $2 OR k.name % $2)
ORDER BY score DESC, k.id
LIMIT $7;

-- search_code_vector --
-- Nearest chunks to vector $1 by model $2, filtered ($3 repository, $4 language, $5 kind,
-- $6 path prefix), best $7.
SELECT k.id, 1 - (k.embedding <=> $1) AS score
FROM code_chunks k
WHERE k.embedding IS NOT NULL AND k.embedding_model = $2
  AND ($3::text IS NULL OR k.repository = $3)
  AND ($4::text IS NULL OR k.language = $4)
  AND ($5::text IS NULL OR k.kind = $5)
  AND ($6::text IS NULL OR k.path LIKE $6 || '%')
ORDER BY k.embedding <=> $1
LIMIT $7;

-- chunks_by_id --
-- Search results' rows ($1 ids).
SELECT id, repository, path, language, kind, name, qualified_name, signature, docstring,
       start_line, end_line, content, complexity, embedding_status
FROM code_chunks WHERE id = ANY($1::bigint[]);

-- ============================== graph ===============================

-- symbol --
-- The chunks named $2 in repository $1.
SELECT id, repository, path, language, kind, name, qualified_name, parent_qualified_name,
       signature, docstring, start_line, end_line, calls, complexity
FROM code_chunks WHERE repository = $1 AND qualified_name = $2 ORDER BY path, start_line;

-- callers --
-- Who calls $2 in repository $1: source symbols with their location.
SELECT DISTINCT e.source AS qualified_name, k.path, k.start_line AS line, e.line AS call_line
FROM code_edges e
LEFT JOIN code_chunks k ON k.repository = e.repository AND k.qualified_name = e.source
    AND k.file_id = e.file_id
WHERE e.repository = $1 AND e.target = $2 AND e.relationship = 'calls'
ORDER BY 1, 2 NULLS LAST
LIMIT $3;

-- callees --
-- What $2 calls in repository $1: resolved targets with their location, or external names.
SELECT DISTINCT coalesce(e.target, e.external) AS qualified_name, e.target IS NOT NULL AS resolved,
       t.path, t.start_line AS line, e.line AS call_line
FROM code_edges e
LEFT JOIN LATERAL (
    SELECT path, start_line FROM code_chunks
    WHERE repository = e.repository AND qualified_name = e.target
    ORDER BY path LIMIT 1
) t ON true
WHERE e.repository = $1 AND e.source = $2 AND e.relationship = 'calls'
ORDER BY 2 DESC, 1
LIMIT $3;

-- edges_out --
-- Edges leaving nodes $2 in repository $1 ($3 relationship, NULL = all; $4 only resolved).
SELECT source, relationship, coalesce(target, external) AS other, target IS NOT NULL AS resolved
FROM code_edges
WHERE repository = $1 AND source = ANY($2::text[])
  AND ($3::text IS NULL OR relationship = $3) AND (NOT $4 OR target IS NOT NULL);

-- call_steps --
-- Where a call chain goes on from nodes $2 of repository $1: their resolved calls, and from a
-- class (a call to it makes an instance) on to its constructors.
SELECT e.source, e.target AS other
FROM code_edges e
WHERE e.repository = $1 AND e.source = ANY($2::text[]) AND e.target IS NOT NULL
  AND (e.relationship = 'calls'
       OR (e.relationship = 'contains' AND EXISTS (
               SELECT 1 FROM code_chunks k
               WHERE k.repository = $1 AND k.qualified_name = e.target
                 AND k.kind = 'constructor')));

-- edges_in --
-- Edges arriving at nodes $2 in repository $1 ($3 relationship, NULL = all).
SELECT target AS node, relationship, source AS other, true AS resolved
FROM code_edges
WHERE repository = $1 AND target = ANY($2::text[]) AND ($3::text IS NULL OR relationship = $3);

-- locate_symbols --
-- Paths and lines of symbols $2 in repository $1.
SELECT DISTINCT ON (qualified_name) qualified_name, path, start_line
FROM code_chunks WHERE repository = $1 AND qualified_name = ANY($2::text[])
ORDER BY qualified_name, path;

-- index_job_detail --
-- Live counts of index job $1: files by status and chunks by embedding status.
SELECT 'file' AS item, status, count(*)::int AS n FROM code_files WHERE job_id = $1 GROUP BY status
UNION ALL
SELECT 'chunk', embedding_status, count(*)::int FROM code_chunks WHERE job_id = $1
GROUP BY embedding_status;

-- ============================== retry ===============================

-- requeue_files --
-- Put failed or cancelled files ($1 ids) of job $2 back to pending; returns ids and paths.
UPDATE code_files SET status = 'pending', error = NULL
WHERE id = ANY($1::bigint[]) AND job_id = $2 AND status IN ('failed', 'cancelled')
RETURNING id::text AS id, path;

-- cancelled_files_of_job --
-- The cancelled files of job $1.
SELECT id::text AS id FROM code_files WHERE job_id = $1 AND status = 'cancelled';

-- requeue_chunks --
-- Put failed or cancelled chunks ($1 ids) of job $2 back to pending; returns their ids.
UPDATE code_chunks SET embedding_status = 'pending', embedding_error = NULL
WHERE id = ANY($1::bigint[]) AND job_id = $2 AND embedding_status IN ('failed', 'cancelled')
RETURNING id::text AS id;

-- cancelled_chunks_of_job --
-- The cancelled chunks of job $1.
SELECT id::text AS id FROM code_chunks WHERE job_id = $1 AND embedding_status = 'cancelled';

-- forget_failed_files --
-- Drop paths $2 from index job $1's result.files_failed (they are being parsed again).
UPDATE jobs SET result = jsonb_set(result, '{files_failed}', coalesce((
    SELECT jsonb_agg(f) FROM jsonb_array_elements(result->'files_failed') f
    WHERE NOT (f->>'path' = ANY($2::text[]))), '[]'::jsonb))
WHERE id = $1 AND result ? 'files_failed';

-- reopen_failed_files --
-- Put failed files ($1 ids) of job $2 back to pending (dead-letter replay); returns ids.
UPDATE code_files SET status = 'pending', error = NULL
WHERE id = ANY($1::bigint[]) AND status = 'failed' AND job_id IS NOT DISTINCT FROM $2
RETURNING id::text AS id, path;

-- reopen_failed_chunks --
-- Put failed chunks ($1 ids) of job $2 back to pending (dead-letter replay); returns ids.
UPDATE code_chunks SET embedding_status = 'pending', embedding_error = NULL
WHERE id = ANY($1::bigint[]) AND embedding_status = 'failed'
  AND job_id IS NOT DISTINCT FROM $2
RETURNING id::text AS id;
