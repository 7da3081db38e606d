-- pg_sop: key types, value types, schema changes, raw stores, IMPORT
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_sop;
RESET client_min_messages;
CREATE SERVER typesdb FOREIGN DATA WRAPPER pg_sop OPTIONS (path '/tmp/pg_sop_regress/db2');

-- every key type round-trips and orders like PostgreSQL
CREATE FOREIGN TABLE k_int2 (k smallint OPTIONS (key 'true'), v text) SERVER typesdb OPTIONS (create_if_missing 'true');
INSERT INTO k_int2 VALUES (-32768, 'min'), (32767, 'max'), (0, 'zero'), (-1, 'minus one');
SELECT * FROM k_int2 ORDER BY k;
CREATE FOREIGN TABLE k_int4 (k int OPTIONS (key 'true'), v text) SERVER typesdb OPTIONS (create_if_missing 'true');
INSERT INTO k_int4 VALUES (-2147483648, 'min'), (2147483647, 'max'), (256, 'x'), (255, 'y');
SELECT * FROM k_int4 WHERE k >= 255 ORDER BY k DESC;
CREATE FOREIGN TABLE k_float (k float8 OPTIONS (key 'true'), v text) SERVER typesdb OPTIONS (create_if_missing 'true');
INSERT INTO k_float VALUES ('-Infinity', 'a'), (-1.5, 'b'), (0, 'c'), (1e-300, 'd'), ('Infinity', 'e'), ('NaN', 'f');
SELECT * FROM k_float ORDER BY k;
SELECT * FROM k_float WHERE k > 0 ORDER BY k;
CREATE FOREIGN TABLE k_text (k text OPTIONS (key 'true') COLLATE "C", v int) SERVER typesdb OPTIONS (create_if_missing 'true');
INSERT INTO k_text VALUES ('apple', 1), ('apricot', 2), ('banana', 3), ('', 4), ('Zebra', 5), (E'a\x01b', 6), ('ap', 7);
SELECT k, v FROM k_text ORDER BY k;
EXPLAIN (COSTS OFF) SELECT k FROM k_text WHERE k LIKE 'ap%' ORDER BY k;
SELECT k FROM k_text WHERE k LIKE 'ap%' ORDER BY k;
SELECT k FROM k_text WHERE k LIKE 'a_r%' ORDER BY k;
SELECT k FROM k_text WHERE k > 'apple' AND k < 'banana' ORDER BY k;
CREATE FOREIGN TABLE k_bytea (k bytea OPTIONS (key 'true'), v int) SERVER typesdb OPTIONS (create_if_missing 'true');
INSERT INTO k_bytea VALUES ('\x00', 1), ('\x0000', 2), ('\xff', 3), ('\x', 4), ('\x00ff', 5);
SELECT * FROM k_bytea ORDER BY k;
CREATE FOREIGN TABLE k_uuid (k uuid OPTIONS (key 'true'), v int) SERVER typesdb OPTIONS (create_if_missing 'true');
INSERT INTO k_uuid VALUES ('ffffffff-0000-0000-0000-000000000000', 1), ('00000000-0000-0000-0000-000000000001', 2);
SELECT * FROM k_uuid ORDER BY k;
CREATE FOREIGN TABLE k_time (k timestamptz OPTIONS (key 'true'), d date, t timestamp) SERVER typesdb OPTIONS (create_if_missing 'true');
INSERT INTO k_time VALUES ('2026-01-01 00:00:00+00', '2026-01-01', '2026-01-01 12:00'), ('-infinity', '-infinity', '-infinity'), ('1999-12-31 23:59:59.999999+00', '1999-12-31', 'infinity');
SET timezone = 'UTC';
SELECT * FROM k_time ORDER BY k;
SELECT * FROM k_time WHERE k >= '2000-01-01' ORDER BY k;
CREATE FOREIGN TABLE k_bool (k boolean OPTIONS (key 'true'), v int) SERVER typesdb OPTIONS (create_if_missing 'true');
INSERT INTO k_bool VALUES (true, 1), (false, 0);
SELECT * FROM k_bool ORDER BY k DESC;
-- a type that cannot be a key
CREATE FOREIGN TABLE k_numeric (k numeric OPTIONS (key 'true'), v int) SERVER typesdb OPTIONS (create_if_missing 'true');
SELECT * FROM k_numeric;

-- composite keys: equality on the first column, range on the second
CREATE FOREIGN TABLE events (
    device int OPTIONS (key 'true'),
    at timestamptz OPTIONS (key 'true'),
    reading float8
) SERVER typesdb OPTIONS (create_if_missing 'true');
INSERT INTO events SELECT d, '2026-01-01'::timestamptz + (m || ' minutes')::interval, d * 1000 + m
  FROM generate_series(1, 3) d, generate_series(0, 9) m;
EXPLAIN (COSTS OFF) SELECT * FROM events WHERE device = 2 AND at >= '2026-01-01 00:07' ORDER BY device, at;
SELECT * FROM events WHERE device = 2 AND at >= '2026-01-01 00:07' ORDER BY device, at;
SELECT reading FROM events WHERE device = 3 ORDER BY device DESC, at DESC LIMIT 2;
SELECT count(*) FROM events WHERE device >= 2;
SELECT reading FROM events WHERE device = 1 AND at = '2026-01-01 00:05';

-- value columns of every kind, NULLs, and types stored as text
CREATE FOREIGN TABLE vals (
    id int OPTIONS (key 'true'),
    b boolean, i2 smallint, i8 bigint, f4 real, f8 float8, t text, vc varchar(10), by bytea,
    u uuid, ts timestamp, tz timestamptz, d date, n numeric, j jsonb, arr int[], iv interval
) SERVER typesdb OPTIONS (create_if_missing 'true', value_placement 'separate');
INSERT INTO vals VALUES
  (1, true, -3, 9007199254740993, 1.5, 2.25, 'text', 'short', '\xdeadbeef',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2026-11-21 10:00', '2026-11-21 10:00+00', '2026-11-21',
   12345.678901234567890, '{"a": [1, 2]}', '{1,2,3}', '1 day 2 hours'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT * FROM vals ORDER BY id;

-- schema changes: old rows keep their columns by name
ALTER FOREIGN TABLE vals DROP COLUMN f4;
ALTER FOREIGN TABLE vals ADD COLUMN extra text;
ALTER FOREIGN TABLE vals ALTER COLUMN i2 TYPE bigint;
SELECT id, i2, t, extra FROM vals ORDER BY id;
UPDATE vals SET extra = 'new' WHERE id = 1;
SELECT id, i2, t, extra FROM vals ORDER BY id;
-- a second table over the same store with fewer columns
CREATE FOREIGN TABLE vals_narrow (id int OPTIONS (key 'true'), t text, missing int) SERVER typesdb OPTIONS (store 'vals');
SELECT * FROM vals_narrow ORDER BY id;

-- IMPORT FOREIGN SCHEMA: one table per store, columns from the store
CREATE SCHEMA imported;
IMPORT FOREIGN SCHEMA sop LIMIT TO (events, vals, k_text) FROM SERVER typesdb INTO imported;
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attfdwoptions
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'imported' AND a.attnum > 0 ORDER BY c.relname, a.attnum;
SELECT device, reading FROM imported.events WHERE device = 1 ORDER BY at LIMIT 2;
IMPORT FOREIGN SCHEMA sop EXCEPT (events, vals, k_text) FROM SERVER typesdb INTO imported;
SELECT count(*) FROM pg_foreign_table ft JOIN pg_class c ON c.oid = ft.ftrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'imported';

-- the remaining key types
CREATE FOREIGN TABLE k_more (d date OPTIONS (key 'true'), t timestamp OPTIONS (key 'true'),
    r real OPTIONS (key 'true'), v varchar(8) OPTIONS (key 'true') COLLATE "C", x int)
  SERVER typesdb OPTIONS (create_if_missing 'true');
INSERT INTO k_more VALUES ('2026-01-02', '2026-01-02 03:04:05.678901', 1.25, 'b', 1),
  ('2026-01-02', '2026-01-02 03:04:05.678901', 1.25, 'a', 2),
  ('2026-01-02', '2026-01-02 03:04:05.678901', -0.5, 'z', 3),
  ('-infinity', 'infinity', 'NaN', '', 4),
  ('2026-01-01', '2026-01-02 03:04:05', 1.25, 'a', 5);
SELECT * FROM k_more ORDER BY d, t, r, v;
SELECT x FROM k_more WHERE d = '2026-01-02' AND t = '2026-01-02 03:04:05.678901' AND r = 1.25 AND v = 'a';
SELECT x FROM k_more WHERE d = '2026-01-02' AND t = '2026-01-02 03:04:05.678901' AND r > 0 ORDER BY d, t, r, v;

-- server options: a replicated database (more in pg_sop_repl), Redis
-- coordination reports an unreachable server (erasure coding: pg_sop_ec)
CREATE SERVER passivedb FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/pg_sop_regress/active', passive_path '/tmp/pg_sop_regress/passive');
CREATE FOREIGN TABLE passive_t (id int OPTIONS (key 'true')) SERVER passivedb OPTIONS (create_if_missing 'true');
SELECT * FROM passive_t;
CREATE SERVER redisdb FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/pg_sop_regress/redis', coordination 'redis', redis_host '127.0.0.1', redis_port '1');
CREATE USER MAPPING FOR CURRENT_USER SERVER redisdb OPTIONS (redis_password 'secret', redis_user 'app');
CREATE USER MAPPING FOR PUBLIC SERVER redisdb OPTIONS (redis_colour 'red');
CREATE FOREIGN TABLE redis_t (id int OPTIONS (key 'true')) SERVER redisdb OPTIONS (create_if_missing 'true');
\set VERBOSITY terse
SELECT * FROM redis_t;
\set VERBOSITY default
ALTER SERVER redisdb OPTIONS (SET coordination 'local');
