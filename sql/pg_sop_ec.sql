-- pg_sop erasure coding (docs/pg_sop.md, docs/erasure_coding.md): server
-- options ec_data_shards, ec_parity_shards, ec_paths and ec_repair, checked
-- when the server is created or altered, recorded with a new database and
-- checked against the recorded ones when a database is opened.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_sop;
RESET client_min_messages;
\getenv dir PG_SOP_REGRESS_DIR
SELECT :'dir' || '/ecdb' AS path, :'dir' || '/ec0' AS d0, :'dir' || '/ec1' AS d1,
       :'dir' || '/ec2' AS d2 \gset
SELECT :'d0' || ',' || :'d1' || ',' || :'d2' AS paths,
       :'d1' || ',' || :'d0' || ',' || :'d2' AS swapped \gset

-- bad options: each error names what is wrong
CREATE SERVER ec_bad1 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_data_shards '2', ec_paths '/a,/b,/c');
CREATE SERVER ec_bad2 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_paths '/a,/b,/c');
CREATE SERVER ec_bad3 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_data_shards '2', ec_parity_shards '1', ec_paths '/a,/b');
CREATE SERVER ec_bad4 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_data_shards '20', ec_parity_shards '13', ec_paths '/a');
CREATE SERVER ec_bad5 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_data_shards '0', ec_parity_shards '1', ec_paths '/a');
CREATE SERVER ec_bad6 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_data_shards '2', ec_parity_shards '32', ec_paths '/a');
CREATE SERVER ec_bad7 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_data_shards '2', ec_parity_shards '1', ec_paths '/a,b,/c');
CREATE SERVER ec_bad8 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_data_shards '2', ec_parity_shards '1', ec_paths '/a,/b,/a/');
CREATE SERVER ec_bad9 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_data_shards '2', ec_parity_shards '1', ec_paths '/a,,/c');
CREATE SERVER ec_bad10 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_repair 'true');
CREATE SERVER ec_bad11 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_data_shards '2', ec_parity_shards '1', ec_paths '/a,/b,/c', ec_repair 'often');
-- spaces around the commas and trailing slashes are fine
CREATE SERVER ec_ok FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', ec_data_shards '2', ec_parity_shards '1', ec_paths '/a/, /b , /c');
-- ALTER SERVER checks the options together too
ALTER SERVER ec_ok OPTIONS (DROP ec_parity_shards);
ALTER SERVER ec_ok OPTIONS (SET ec_parity_shards '2');
ALTER SERVER ec_ok OPTIONS (SET ec_parity_shards '2', SET ec_paths '/a,/b,/c,/d');
ALTER SERVER ec_ok OPTIONS (DROP ec_data_shards, DROP ec_parity_shards, DROP ec_paths);
DROP SERVER ec_ok;

-- a database whose stores keep their blobs as 2 data + 1 parity shards
CREATE SERVER ec_main FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'path', ec_data_shards '2', ec_parity_shards '1', ec_paths :'paths',
           ec_repair 'true');
CREATE FOREIGN TABLE items (id int OPTIONS (key 'true'), name text, qty int)
  SERVER ec_main OPTIONS (store 'items', create_if_missing 'true', slot_length '8');
INSERT INTO items SELECT g, 'item ' || g, g * 10 FROM generate_series(1, 60) g;
SELECT count(*), sum(qty) FROM items;
SELECT * FROM items WHERE id BETWEEN 10 AND 12 ORDER BY id;
UPDATE items SET qty = qty + 1, name = upper(name) WHERE id % 10 = 0;
DELETE FROM items WHERE id > 55;
SELECT count(*), sum(qty) FROM items;
SELECT * FROM items WHERE id % 10 = 0 ORDER BY id;
-- separately stored values are blobs too
CREATE FOREIGN TABLE docs (id int OPTIONS (key 'true'), body text)
  SERVER ec_main OPTIONS (store 'docs', create_if_missing 'true', value_placement 'separate');
INSERT INTO docs SELECT g, repeat(md5(g::text), 200) FROM generate_series(1, 5) g;
SELECT id, length(body), md5(body) = md5(repeat(md5(id::text), 200)) AS intact FROM docs ORDER BY id;

-- each drive folder has its marker (.sop-ec) and a folder of shards per
-- store; the database folder has no blob folder for these stores (a plain
-- store keeps its blobs in <db>/stores/<name>/blob, see plain_t below)
SELECT i, f FROM generate_series(0, 2) i, pg_ls_dir(:'dir' || '/ec' || i) f ORDER BY i, f;
SELECT i, s, count(*) > 0 AS has_shards
  FROM generate_series(0, 2) i, unnest(ARRAY['docs', 'items']) s,
       pg_ls_dir(:'dir' || '/ec' || i || '/' || s) hh,
       pg_ls_dir(:'dir' || '/ec' || i || '/' || s || '/' || hh) f
 GROUP BY i, s ORDER BY i, s;
SELECT s, 'blob' IN (SELECT pg_ls_dir(:'path' || '/stores/' || s)) AS plain_blob_folder
  FROM unnest(ARRAY['docs', 'items']) s ORDER BY s;

-- a lost drive: the other folders' shards rebuild its share (in a new
-- backend, so nothing is cached), and ec_repair writes it back
SELECT format('COPY (SELECT 1) TO PROGRAM %L', 'rm -rf ' || :'d0' || '/items') AS lose \gset
:lose;
SELECT count(*) FROM pg_ls_dir(:'d0' || '/items', true, false);
\c
SELECT count(*), sum(qty) FROM items;
SELECT * FROM items WHERE id % 10 = 0 ORDER BY id;
SELECT count(*) > 0 AS repaired
  FROM pg_ls_dir(:'d0' || '/items') hh, pg_ls_dir(:'d0' || '/items/' || hh) f;
SELECT f FROM pg_ls_dir(:'d0' || '/items') hh, pg_ls_dir(:'d0' || '/items/' || hh) f
EXCEPT
SELECT f FROM pg_ls_dir(:'d1' || '/items') hh, pg_ls_dir(:'d1' || '/items/' || hh) f;
SELECT f FROM pg_ls_dir(:'d1' || '/items') hh, pg_ls_dir(:'d1' || '/items/' || hh) f
EXCEPT
SELECT f FROM pg_ls_dir(:'d0' || '/items') hh, pg_ls_dir(:'d0' || '/items/' || hh) f;

-- opening the database checks the options against the recorded ones (terse:
-- the DETAIL is the engine's wording; ec_plain_ec below shows the full form)
\set VERBOSITY terse
CREATE SERVER ec_swapped FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'path', ec_data_shards '2', ec_parity_shards '1', ec_paths :'swapped');
CREATE FOREIGN TABLE items_swapped (id int OPTIONS (key 'true'), name text, qty int)
  SERVER ec_swapped OPTIONS (store 'items');
SELECT count(*) FROM items_swapped;
CREATE SERVER ec_wider FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'path', ec_data_shards '1', ec_parity_shards '2', ec_paths :'paths');
CREATE FOREIGN TABLE items_wider (id int OPTIONS (key 'true'), name text, qty int)
  SERVER ec_wider OPTIONS (store 'items');
SELECT count(*) FROM items_wider;
\set VERBOSITY default
-- ec_repair may differ; without ec_* options the recorded ones are used
CREATE SERVER ec_norepair FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'path', ec_data_shards '2', ec_parity_shards '1', ec_paths :'paths',
           ec_repair 'false');
CREATE FOREIGN TABLE items_norepair (id int OPTIONS (key 'true'), name text, qty int)
  SERVER ec_norepair OPTIONS (store 'items');
SELECT count(*), sum(qty) FROM items_norepair;
CREATE SERVER ec_recorded FOREIGN DATA WRAPPER pg_sop OPTIONS (path :'path');
CREATE FOREIGN TABLE items_recorded (id int OPTIONS (key 'true'), name text, qty int)
  SERVER ec_recorded OPTIONS (store 'items');
SELECT count(*), sum(qty) FROM items_recorded;
-- a database made without erasure coding cannot be opened with it
SELECT :'dir' || '/plaindb' AS plain \gset
CREATE SERVER ec_plain FOREIGN DATA WRAPPER pg_sop OPTIONS (path :'plain');
CREATE FOREIGN TABLE plain_t (id int OPTIONS (key 'true')) SERVER ec_plain
  OPTIONS (create_if_missing 'true');
INSERT INTO plain_t VALUES (1);
SELECT 'blob' IN (SELECT pg_ls_dir(:'plain' || '/stores/plain_t')) AS plain_blob_folder;
CREATE SERVER ec_plain_ec FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'plain', ec_data_shards '2', ec_parity_shards '1', ec_paths :'paths');
CREATE FOREIGN TABLE plain_ec_t (id int OPTIONS (key 'true')) SERVER ec_plain_ec
  OPTIONS (store 'plain_t');
SELECT * FROM plain_ec_t;
-- a drive folder whose parent is missing: the database is not created
SELECT :'dir' || '/nodb' AS nodb, :'dir' || '/gone/d0,' || :'dir' || '/gone/d1' AS gone \gset
CREATE SERVER ec_gone FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'nodb', ec_data_shards '1', ec_parity_shards '1', ec_paths :'gone');
CREATE FOREIGN TABLE gone_t (id int OPTIONS (key 'true')) SERVER ec_gone
  OPTIONS (create_if_missing 'true');
SELECT * FROM gone_t;
-- drive folders belong to one database
SELECT :'dir' || '/ecdb2' AS path2 \gset
CREATE SERVER ec_shared FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'path2', ec_data_shards '2', ec_parity_shards '1', ec_paths :'paths');
CREATE FOREIGN TABLE shared_t (id int OPTIONS (key 'true')) SERVER ec_shared
  OPTIONS (create_if_missing 'true');
SELECT * FROM shared_t;
-- a database made without replication cannot be opened with passive_path
-- (replication itself: pg_sop_repl)
CREATE SERVER ec_passive FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'path', ec_data_shards '2', ec_parity_shards '1', ec_paths :'paths',
           passive_path '/tmp/pg_sop_regress/passive');
CREATE FOREIGN TABLE items_passive (id int OPTIONS (key 'true')) SERVER ec_passive
  OPTIONS (store 'items');
SELECT * FROM items_passive;

-- servers whose database cannot be opened would fail pg_sop_in_doubt and
-- pg_sop_resolve() in the tests that follow (the others stay: their
-- commits' decision rows are cleaned up by the next pg_sop_resolve())
SET client_min_messages = warning;
DROP SERVER ec_swapped, ec_wider, ec_plain_ec, ec_gone, ec_shared, ec_passive CASCADE;
RESET client_min_messages;
