-- Code text is stored uncompressed: a file's content, a chunk's content and its lexical
-- document. PostgreSQL compressed every such value over ~2 kB with pglz (lz4 is not built
-- into the embedded server), a tenth of its CPU time while indexing code, on the write
-- path; the stdlib's 734 files take ~16 MB more disk for it (bench/README.md, change 27).
-- Values already stored keep their form; both read the same.
ALTER TABLE code_files ALTER COLUMN content SET STORAGE EXTERNAL;
ALTER TABLE code_chunks ALTER COLUMN content SET STORAGE EXTERNAL;
ALTER TABLE code_chunks ALTER COLUMN tsv SET STORAGE EXTERNAL;
