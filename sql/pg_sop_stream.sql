-- pg_sop streaming tables (docs/pg_sop.md, "Streaming tables"): foreign
-- tables over streaming stores, and pg_sop_stream_read/write/list/remove.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_sop;
RESET client_min_messages;
\getenv dir PG_SOP_REGRESS_DIR
SELECT :'dir' || '/stream' AS path \gset
CREATE SERVER stream_srv FOREIGN DATA WRAPPER pg_sop OPTIONS (path :'path');

-- the shape of a streaming table: (key text, chunk_index integer, chunk bytea)
CREATE FOREIGN TABLE st_bad0 (key text OPTIONS (key 'true'), chunk_index bigint OPTIONS (key 'true'),
    chunk bytea) SERVER stream_srv OPTIONS (value_placement 'streaming', unique 'false');
CREATE FOREIGN TABLE st_bad1 (key text OPTIONS (key 'true'), chunk bytea)
  SERVER stream_srv OPTIONS (store 'st_bad', value_placement 'streaming', create_if_missing 'true');
SELECT * FROM st_bad1;
CREATE FOREIGN TABLE st_bad2 (key int OPTIONS (key 'true'), chunk_index bigint OPTIONS (key 'true'),
    chunk bytea)
  SERVER stream_srv OPTIONS (store 'st_bad', value_placement 'streaming', create_if_missing 'true');
SELECT * FROM st_bad2;
CREATE FOREIGN TABLE st_bad3 (chunk_index bigint OPTIONS (key 'true'), key text OPTIONS (key 'true'),
    chunk bytea)
  SERVER stream_srv OPTIONS (store 'st_bad', value_placement 'streaming', create_if_missing 'true');
INSERT INTO st_bad3 VALUES (0, 'a', 'x');
CREATE FOREIGN TABLE st_bad4 (key text OPTIONS (key 'true'), chunk_index bigint OPTIONS (key 'true'),
    chunk text)
  SERVER stream_srv OPTIONS (store 'st_bad', value_placement 'streaming', create_if_missing 'true');
SELECT * FROM st_bad4;
CREATE FOREIGN TABLE st_bad5 (key text OPTIONS (key 'true'), chunk_index bigint OPTIONS (key 'true'),
    chunk bytea, note text)
  SERVER stream_srv OPTIONS (store 'st_bad', value_placement 'streaming', create_if_missing 'true');
SELECT * FROM st_bad5;

CREATE FOREIGN TABLE files (key text OPTIONS (key 'true'), chunk_index bigint OPTIONS (key 'true'),
    chunk bytea)
  SERVER stream_srv OPTIONS (store 'files', value_placement 'streaming', create_if_missing 'true',
    slot_length '16');
SELECT count(*) FROM files;

-- values of several sizes, written in chunks of several sizes
CREATE TEMP TABLE src (key text PRIMARY KEY, data bytea, chunk_size int);
INSERT INTO src VALUES
  ('a/empty', '', 7),
  ('b/small', 'hello world', 4),
  ('d/odd', decode(repeat('0123456789', 250), 'escape'), 1000),
  ('e/exact', decode(repeat('ab', 3000), 'hex'), 1000);
INSERT INTO src SELECT 'c/big', string_agg(decode(md5(g::text), 'hex'), '' ORDER BY g), 65536
  FROM generate_series(1, 200000) g;
SELECT key, length(data) FROM src ORDER BY key;
SELECT key, pg_sop_stream_write('files', key, data, chunk_size) AS chunks FROM src ORDER BY key;
SELECT s.key, md5(pg_sop_stream_read('files', s.key)) = md5(s.data) AS same,
       length(pg_sop_stream_read('files', s.key)) AS bytes
  FROM src s ORDER BY s.key;
SELECT pg_sop_stream_read('files', 'b/small') AS small, pg_sop_stream_read('files', 'a/empty') AS empty,
       pg_sop_stream_read('files', 'nothing') IS NULL AS missing;
-- the default chunk size is 1 MiB
SELECT pg_sop_stream_write('files', 'g/default', data) FROM src WHERE key = 'c/big';
SELECT md5(pg_sop_stream_read('files', 'g/default')) = md5(data) FROM src WHERE key = 'c/big';
SELECT * FROM pg_sop_stream_list('files');

-- the chunks as rows
SELECT key, chunk_index, length(chunk), substr(chunk, 1, 6) AS starts FROM files
 WHERE key IN ('a/empty', 'b/small', 'd/odd') ORDER BY key, chunk_index;
SELECT key, count(*), min(chunk_index), max(chunk_index), sum(length(chunk)) FROM files
 GROUP BY key ORDER BY key;
-- key conditions are pushed down: one key from a chunk on
EXPLAIN (COSTS OFF) SELECT chunk_index, length(chunk) FROM files
 WHERE key = 'c/big' AND chunk_index >= 46 ORDER BY key, chunk_index;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT chunk_index, length(chunk) FROM files
 WHERE key = 'c/big' AND chunk_index >= 46;
SELECT chunk_index, length(chunk) FROM files
 WHERE key = 'c/big' AND chunk_index >= 46 ORDER BY key, chunk_index DESC;
SELECT key, chunk_index FROM files WHERE key LIKE 'd%' AND chunk_index < 2 ORDER BY 1, 2;
SELECT key, chunk_index FROM files WHERE key > 'c' AND key < 'e' AND chunk_index = 1 ORDER BY 1, 2;
SELECT key FROM files WHERE chunk_index = 0 ORDER BY key DESC;
-- the functions between the rows of a scan of the same store
SELECT key, length(pg_sop_stream_read('files', key)) FROM files WHERE chunk_index = 0;

-- UPDATE one chunk: exactly that range of the value changes
UPDATE files SET chunk = decode(repeat('5a', 65536), 'hex') WHERE key = 'c/big' AND chunk_index = 3;
SELECT length(v) = length(s.data) AS same_length,
       substr(v, 1, 3 * 65536) = substr(s.data, 1, 3 * 65536) AS before_same,
       substr(v, 3 * 65536 + 1, 65536) = decode(repeat('5a', 65536), 'hex') AS chunk3_new,
       substr(s.data, 3 * 65536 + 1, 65536) <> decode(repeat('5a', 65536), 'hex') AS chunk3_was_other,
       substr(v, 4 * 65536 + 1) = substr(s.data, 4 * 65536 + 1) AS after_same
  FROM src s, pg_sop_stream_read('files', 'c/big') v WHERE s.key = 'c/big';
-- a chunk may change size; RETURNING
UPDATE files SET chunk = chunk || '!' WHERE key = 'b/small' AND chunk_index = 2
  RETURNING key, chunk_index, chunk;
SELECT pg_sop_stream_read('files', 'b/small');

-- DELETE a chunk: the value is the remaining chunks in order
DELETE FROM files WHERE key = 'b/small' AND chunk_index = 1 RETURNING chunk_index, chunk;
SELECT pg_sop_stream_read('files', 'b/small');
DELETE FROM files WHERE key = 'e/exact' AND chunk_index >= 2;
SELECT * FROM pg_sop_stream_list('files') WHERE key IN ('b/small', 'e/exact');

-- INSERT chunks directly (gaps are allowed: the value is the chunks in order)
INSERT INTO files VALUES ('f/direct', 0, 'abc'), ('f/direct', 1, 'def'), ('f/direct', 5, 'xyz');
SELECT pg_sop_stream_read('files', 'f/direct');
INSERT INTO files VALUES ('f/direct', 1, 'again');
INSERT INTO files VALUES ('f/direct', -1, 'neg');
INSERT INTO files VALUES ('f/direct', 2, NULL);
INSERT INTO files VALUES ('', 0, 'x');
INSERT INTO files VALUES (NULL, 0, 'x');
INSERT INTO files VALUES (repeat('k', 20000), 0, 'x');
UPDATE files SET chunk_index = -5 WHERE key = 'f/direct' AND chunk_index = 5;
-- moving a chunk (a new key: delete + insert)
UPDATE files SET chunk_index = 2 WHERE key = 'f/direct' AND chunk_index = 5;
SELECT chunk_index, chunk FROM files WHERE key = 'f/direct' ORDER BY chunk_index;

-- COPY
COPY files (key, chunk_index, chunk) FROM stdin;
h/copied	0	\\x6869
h/copied	1	\\x21
\.
SELECT convert_from(pg_sop_stream_read('files', 'h/copied'), 'UTF8');
COPY (SELECT key, chunk_index, chunk FROM files WHERE key = 'h/copied' ORDER BY chunk_index) TO stdout;

-- writes replace a value: fewer chunks remove the old ones past the end
SELECT pg_sop_stream_write('files', 'd/odd', 'short', 2);
SELECT chunk_index, chunk FROM files WHERE key = 'd/odd' ORDER BY chunk_index;

-- a rolled-back write leaves the old value
BEGIN;
SELECT pg_sop_stream_write('files', 'b/small', 'rolled back', 3);
SELECT pg_sop_stream_read('files', 'b/small');
SELECT count(*) FROM files WHERE key = 'b/small';
ROLLBACK;
SELECT pg_sop_stream_read('files', 'b/small');
-- and an ERROR after a write rolls it back too
BEGIN;
SELECT pg_sop_stream_write('files', 'b/small', 'doomed', 3);
SELECT 1 / 0;
ROLLBACK;
SELECT pg_sop_stream_read('files', 'b/small');

-- a write interrupted half way (a writer left open) rolls back
SET statement_timeout = '200ms';
SELECT pg_sop_stream_write('files', 'b/small', decode(repeat('ab', 100000), 'hex'), 1);
RESET statement_timeout;
SELECT pg_sop_stream_read('files', 'b/small');
SELECT * FROM pg_sop_stream_list('files') WHERE key = 'b/small';

-- a savepoint rolled back over a write: the transaction can only roll back
BEGIN;
SAVEPOINT s1;
SELECT pg_sop_stream_write('files', 'b/small', 'in a savepoint');
ROLLBACK TO s1;
SELECT pg_sop_stream_read('files', 'b/small');
ROLLBACK;

-- PREPARE TRANSACTION: the write is invisible until COMMIT PREPARED
BEGIN;
SELECT pg_sop_stream_write('files', 'b/small', 'prepared value', 5);
SELECT pg_sop_stream_remove('files', 'f/direct');
PREPARE TRANSACTION 'stream_w1';
SELECT pg_sop_stream_read('files', 'b/small'), pg_sop_stream_read('files', 'f/direct');
SELECT gid FROM pg_sop_in_doubt;
COMMIT PREPARED 'stream_w1';
SELECT pg_sop_stream_read('files', 'b/small'), pg_sop_stream_read('files', 'f/direct');
SELECT key, chunk_index, chunk FROM files WHERE key = 'b/small' ORDER BY chunk_index;
BEGIN;
SELECT pg_sop_stream_write('files', 'b/small', 'never', 5);
PREPARE TRANSACTION 'stream_w2';
ROLLBACK PREPARED 'stream_w2';
SELECT pg_sop_stream_read('files', 'b/small');
SELECT count(*) FROM pg_sop_in_doubt;

-- a store made earlier in the transaction is found streaming too
BEGIN;
CREATE FOREIGN TABLE st_new (key text OPTIONS (key 'true'), chunk_index int OPTIONS (key 'true'),
    chunk bytea)
  SERVER stream_srv OPTIONS (store 'st_new', value_placement 'streaming', create_if_missing 'true');
CREATE FOREIGN TABLE st_new2 (k text OPTIONS (key 'true'), i bigint OPTIONS (key 'true'), c bytea)
  SERVER stream_srv OPTIONS (store 'st_new');
SELECT pg_sop_stream_write('st_new', 'x', 'abc', 2);
SELECT * FROM st_new2;
SELECT pg_sop_stream_read('st_new2', 'x');
ROLLBACK;

-- remove
SELECT pg_sop_stream_remove('files', 'd/odd'), pg_sop_stream_remove('files', 'd/odd');
SELECT pg_sop_stream_read('files', 'd/odd') IS NULL;
SELECT key, chunks, bytes FROM pg_sop_stream_list('files');

-- what the functions refuse
SELECT pg_sop_stream_write('files', 'x', 'data', 0);
SELECT pg_sop_stream_write('files', 'x', 'data', -1);
SELECT pg_sop_stream_write('files', '', 'data');
SELECT pg_sop_stream_read('files', '');
SELECT pg_sop_stream_write('files', 'x', NULL) IS NULL AS strict;
SELECT pg_sop_stream_write('files', repeat('k', 20000), 'data');
-- writing while a scan of the store runs: refused (the scan would see the new chunks)
SELECT pg_sop_stream_write('files', key || '.copy', 'x') FROM files WHERE chunk_index = 0;
BEGIN;
DECLARE c CURSOR FOR SELECT key FROM files;
FETCH 1 FROM c;
SELECT pg_sop_stream_remove('files', 'a/empty');
ROLLBACK;
-- once the scan is over (here: its rows collected first), it is fine
SELECT pg_sop_stream_write('files', k || '.copy', 'x')
  FROM (SELECT array_agg(key ORDER BY key) AS ks FROM files WHERE chunk_index = 0) a,
       unnest(a.ks) k
 WHERE k LIKE 'a%';
SELECT pg_sop_stream_remove('files', 'a/empty.copy');
CREATE FOREIGN TABLE st_plain (id int OPTIONS (key 'true'), v text)
  SERVER stream_srv OPTIONS (store 'st_plain', create_if_missing 'true');
INSERT INTO st_plain VALUES (1, 'one');
SELECT pg_sop_stream_read('st_plain', 'x');
SELECT * FROM pg_sop_stream_list('st_plain');
SELECT pg_sop_stream_read('src', 'x');
SELECT pg_sop_stream_read('pg_class', 'x');
-- a table declared streaming over a store that is not
CREATE FOREIGN TABLE st_notstream (key text OPTIONS (key 'true'), chunk_index int OPTIONS (key 'true'),
    chunk bytea) SERVER stream_srv OPTIONS (store 'st_plain', value_placement 'streaming');
SELECT * FROM st_notstream;
SELECT pg_sop_stream_read('st_notstream', 'x');

-- a streaming store is found streaming without the option (varchar, int)
CREATE FOREIGN TABLE files_plain (name varchar(20) OPTIONS (key 'true'), n int OPTIONS (key 'true'),
    bytes bytea) SERVER stream_srv OPTIONS (store 'files');
SELECT name, n, length(bytes) FROM files_plain WHERE name = 'b/small' ORDER BY n;
SELECT pg_sop_stream_read('files_plain', 'h/copied');
CREATE FOREIGN TABLE files_wrong (id bigint OPTIONS (key 'true'), v text)
  SERVER stream_srv OPTIONS (store 'files');
SELECT * FROM files_wrong;

-- privileges: the ones a statement on the table would need
CREATE ROLE regress_stream_user;
GRANT SELECT ON files TO regress_stream_user;
SET ROLE regress_stream_user;
SELECT pg_sop_stream_read('files', 'h/copied');
SELECT count(*) FROM pg_sop_stream_list('files');
SELECT pg_sop_stream_write('files', 'h/copied', 'no');
SELECT pg_sop_stream_remove('files', 'h/copied');
RESET ROLE;
GRANT INSERT, UPDATE ON files TO regress_stream_user;
SET ROLE regress_stream_user;
SELECT pg_sop_stream_write('files', 'h/copied', 'no');
RESET ROLE;
GRANT DELETE ON files TO regress_stream_user;
SET ROLE regress_stream_user;
SELECT pg_sop_stream_write('files', 'h/copied', 'yes');
SELECT pg_sop_stream_remove('files', 'h/copied');
RESET ROLE;
REVOKE ALL ON files FROM regress_stream_user;
DROP ROLE regress_stream_user;

-- ANALYZE (keys only: the chunks are not read) and TRUNCATE
ANALYZE files;
SELECT attname, null_frac, avg_width FROM pg_stats WHERE tablename = 'files' AND schemaname = 'public'
 ORDER BY attname;
CREATE FOREIGN TABLE scratch_stream (key text OPTIONS (key 'true'), chunk_index smallint OPTIONS (key 'true'),
    chunk bytea)
  SERVER stream_srv OPTIONS (store 'scratch_stream', value_placement 'streaming', create_if_missing 'true');
SELECT pg_sop_stream_write('scratch_stream', 'k' || g, 'v', 1) FROM generate_series(1, 3) g;
BEGIN;
TRUNCATE scratch_stream;
SELECT * FROM pg_sop_stream_list('scratch_stream');
ROLLBACK;
SELECT * FROM pg_sop_stream_list('scratch_stream');
TRUNCATE scratch_stream;
SELECT count(*) FROM scratch_stream;
-- pg_sop_stream_list reads the keys in batches of 1024
INSERT INTO scratch_stream SELECT 'k' || lpad(g::text, 4, '0'), 0, '' FROM generate_series(1, 1030) g;
SELECT count(*), count(DISTINCT key), min(key), max(key), sum(chunks), sum(bytes)
  FROM pg_sop_stream_list('scratch_stream');
SELECT count(*) FROM (SELECT key, lag(key) OVER () AS prev FROM pg_sop_stream_list('scratch_stream')) x
 WHERE prev >= key;

-- IMPORT FOREIGN SCHEMA of a streaming store
CREATE SCHEMA stream_imp;
IMPORT FOREIGN SCHEMA sop LIMIT TO (files) FROM SERVER stream_srv INTO stream_imp;
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attfdwoptions
  FROM pg_attribute a WHERE a.attrelid = 'stream_imp.files'::regclass AND a.attnum > 0
 ORDER BY a.attnum;
SELECT ftoptions FROM pg_foreign_table WHERE ftrelid = 'stream_imp.files'::regclass;
SELECT key, chunk_index, chunk FROM stream_imp.files WHERE key = 'b/small' ORDER BY chunk_index;
SELECT convert_from(pg_sop_stream_read('stream_imp.files', 'b/small'), 'UTF8');
