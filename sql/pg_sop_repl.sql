-- pg_sop replication (docs/pg_sop.md, "Replication"): the server option
-- passive_path, checked when the server is created or altered, set up with a
-- new database and checked against the recorded one when a database is
-- opened; pg_sop_replication(), pg_sop_failover() and pg_sop_reinstate().
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_sop;
RESET client_min_messages;
\getenv dir PG_SOP_REGRESS_DIR
SELECT :'dir' || '/repldb' AS path, :'dir' || '/replpassive' AS passive \gset

-- bad options: each error names what is wrong
CREATE SERVER repl_bad1 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', passive_path 'relative/dir');
CREATE SERVER repl_bad2 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', passive_path '');
CREATE SERVER repl_bad3 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', passive_path '/tmp/x');
CREATE SERVER repl_bad4 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x/', passive_path '/tmp/x//');
CREATE SERVER repl_bad5 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', passive_path '/tmp/x/passive');
CREATE SERVER repl_bad6 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x/db', passive_path '/tmp/x');
CREATE SERVER repl_bad7 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', passive_path E'/tmp/y\nz');
CREATE SERVER repl_bad8 FOREIGN DATA WRAPPER pg_sop
  OPTIONS (passive_path '/tmp/y');
-- a sibling whose name starts like path's is fine
CREATE SERVER repl_ok FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path '/tmp/x', passive_path '/tmp/x2');
-- ALTER SERVER checks the options together too
ALTER SERVER repl_ok OPTIONS (SET path '/tmp/x2/');
ALTER SERVER repl_ok OPTIONS (SET passive_path 'y');
ALTER SERVER repl_ok OPTIONS (DROP passive_path);
DROP SERVER repl_ok;
-- only a superuser sets passive_path, fails over or reinstates
CREATE ROLE regress_repl_user;
GRANT USAGE ON FOREIGN DATA WRAPPER pg_sop TO regress_repl_user;
SET ROLE regress_repl_user;
CREATE SERVER repl_user FOREIGN DATA WRAPPER pg_sop OPTIONS (passive_path '/tmp/y');
SELECT pg_sop_failover('nope');
SELECT * FROM pg_sop_reinstate('nope');
RESET ROLE;
REVOKE USAGE ON FOREIGN DATA WRAPPER pg_sop FROM regress_repl_user;
DROP ROLE regress_repl_user;

-- a new database with its passive side: both are written
CREATE SERVER repl FOREIGN DATA WRAPPER pg_sop OPTIONS (path :'path', passive_path :'passive');
CREATE FOREIGN TABLE repl_items (id int OPTIONS (key 'true'), name text, qty int)
  SERVER repl OPTIONS (store 'items', create_if_missing 'true', slot_length '8');
INSERT INTO repl_items SELECT g, 'item ' || g, g * 10 FROM generate_series(1, 40) g;
UPDATE repl_items SET qty = qty + 1, name = upper(name) WHERE id % 10 = 0;
DELETE FROM repl_items WHERE id > 35;
SELECT count(*), sum(qty) FROM repl_items;
SELECT * FROM repl_items WHERE id % 10 = 0 ORDER BY id;
SELECT enabled, active, active_path = :'path' AS active_is_path, path_stale,
       passive_path = :'passive' AS passive_is_passive_path, passive_stale, generation,
       changed > now() - interval '1 hour' AS changed_recently, reason
  FROM pg_sop_replication('repl');
-- the passive folder is a copy of the database folder (but its lock file)
SELECT f FROM pg_ls_dir(:'path') f EXCEPT SELECT f FROM pg_ls_dir(:'passive') f;
SELECT f FROM pg_ls_dir(:'passive') f EXCEPT SELECT f FROM pg_ls_dir(:'path') f;
SELECT count(*) > 0 AS passive_has_items
  FROM pg_ls_dir(:'passive' || '/stores/items') f WHERE f LIKE '%.reg';

-- a planned switch-over: the passive side becomes active, in this session
-- and in new ones, and back
SELECT pg_sop_failover('repl');
SELECT active, active_path = :'passive' AS active_is_passive_path, path_stale, passive_stale,
       generation FROM pg_sop_replication('repl');
INSERT INTO repl_items VALUES (100, 'after failover', 1);
\c
SELECT active, path_stale, passive_stale, generation FROM pg_sop_replication('repl');
SELECT count(*), sum(qty) FROM repl_items;
SELECT pg_sop_failover('repl');
INSERT INTO repl_items VALUES (101, 'failed back', 1);
SELECT active, path_stale, passive_stale, generation FROM pg_sop_replication('repl');
SELECT count(*), sum(qty) FROM repl_items;

-- a lost passive drive: the database stays usable, the passive side stale
SELECT format('COPY (SELECT 1) TO PROGRAM %L', 'rm -rf ' || :'passive') AS lose \gset
:lose;
\c
INSERT INTO repl_items VALUES (102, 'passive lost', 1);
SELECT count(*), sum(qty) FROM repl_items;
SELECT active, path_stale, passive_stale, reason <> '' AS has_reason
  FROM pg_sop_replication('repl');
-- a stale side cannot become active
\set VERBOSITY terse
SELECT pg_sop_failover('repl');
\set VERBOSITY default
-- reinstate copies the active side over it (the folder is made again)
SELECT bytes > 0 AS copied_bytes, files > 0 AS copied_files FROM pg_sop_reinstate('repl');
SELECT active, path_stale, passive_stale, reason FROM pg_sop_replication('repl');
INSERT INTO repl_items VALUES (103, 'reinstated', 1);
SELECT active, path_stale, passive_stale FROM pg_sop_replication('repl');
-- nothing stale: nothing copied
SELECT * FROM pg_sop_reinstate('repl');
-- the reinstated side has every row: read it as the active side
\c
SELECT pg_sop_failover('repl');
SELECT active, path_stale, passive_stale FROM pg_sop_replication('repl');
SELECT count(*), sum(qty) FROM repl_items;
SELECT id, name FROM repl_items WHERE id >= 100 ORDER BY id;

-- the drive of path replaced while the passive side is active: no new
-- database over it; the empty folder opens from the passive side, and
-- reinstate fills it
SELECT format('COPY (SELECT 1) TO PROGRAM %L', 'rm -rf ' || :'path') AS lose_path,
       format('COPY (SELECT 1) TO PROGRAM %L', 'mkdir ' || :'path') AS replace_path \gset
:lose_path;
\c
SELECT count(*) FROM repl_items;
:replace_path;
SELECT count(*), sum(qty) FROM repl_items;
SELECT active, path_stale, passive_stale, reason <> '' AS has_reason
  FROM pg_sop_replication('repl');
INSERT INTO repl_items VALUES (104, 'path replaced', 1);
SELECT bytes > 0 AS copied_bytes, files > 0 AS copied_files FROM pg_sop_reinstate('repl');
INSERT INTO repl_items VALUES (105, 'path reinstated', 1);
SELECT active, path_stale, passive_stale FROM pg_sop_replication('repl');
SELECT pg_sop_failover('repl');
SELECT active, path_stale, passive_stale FROM pg_sop_replication('repl');
SELECT count(*), sum(qty) FROM repl_items;
SELECT id, name FROM repl_items WHERE id >= 100 ORDER BY id;

-- without passive_path the recorded one is used
CREATE SERVER repl_recorded FOREIGN DATA WRAPPER pg_sop OPTIONS (path :'path');
CREATE FOREIGN TABLE repl_items_recorded (id int OPTIONS (key 'true'), name text, qty int)
  SERVER repl_recorded OPTIONS (store 'items');
SELECT count(*) FROM repl_items_recorded;
SELECT enabled, passive_path = :'passive' AS passive_is_passive_path, passive_stale
  FROM pg_sop_replication('repl_recorded');
-- another passive_path is refused: by the engine when it opens the folder
-- (in a new session), by pg_sop when the session has it open already (the
-- engine does not check then) or when the folder does not exist
SELECT :'dir' || '/replother' AS other, :'dir' || '/replmissing' AS missing \gset
SELECT format('COPY (SELECT 1) TO PROGRAM %L', 'mkdir ' || :'other') AS mkother \gset
:mkother;
CREATE SERVER repl_other FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'path', passive_path :'other');
CREATE FOREIGN TABLE repl_items_other (id int OPTIONS (key 'true')) SERVER repl_other
  OPTIONS (store 'items');
CREATE SERVER repl_missing FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'path', passive_path :'missing');
CREATE FOREIGN TABLE repl_items_missing (id int OPTIONS (key 'true')) SERVER repl_missing
  OPTIONS (store 'items');
\c
SELECT count(*) FROM repl_items_other;
SELECT count(*) FROM repl_items_recorded;
SELECT count(*) FROM repl_items_other;
SELECT count(*) FROM repl_items_missing;
-- a database made without replication cannot be opened with passive_path
SELECT :'dir' || '/replplain' AS plain \gset
CREATE SERVER repl_plain FOREIGN DATA WRAPPER pg_sop OPTIONS (path :'plain');
CREATE FOREIGN TABLE repl_plain_t (id int OPTIONS (key 'true')) SERVER repl_plain
  OPTIONS (create_if_missing 'true');
INSERT INTO repl_plain_t VALUES (1);
SELECT * FROM pg_sop_replication('repl_plain');
\set VERBOSITY terse
SELECT pg_sop_failover('repl_plain');
SELECT * FROM pg_sop_reinstate('repl_plain');
\set VERBOSITY default
SELECT :'dir' || '/replplain_p' AS plain_p \gset
CREATE SERVER repl_plain_p FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'plain', passive_path :'plain_p');
CREATE FOREIGN TABLE repl_plain_p_t (id int OPTIONS (key 'true')) SERVER repl_plain_p
  OPTIONS (store 'repl_plain_t');
SELECT * FROM repl_plain_p_t;
-- a missing database folder whose passive side holds data: no new database
SELECT :'dir' || '/repllost' AS lost \gset
CREATE SERVER repl_lost FOREIGN DATA WRAPPER pg_sop
  OPTIONS (path :'lost', passive_path :'passive');
CREATE FOREIGN TABLE repl_lost_t (id int OPTIONS (key 'true')) SERVER repl_lost
  OPTIONS (create_if_missing 'true');
SELECT * FROM repl_lost_t;
SELECT count(*) FROM pg_ls_dir(:'dir') f WHERE f = 'repllost';
-- the functions name a pg_sop server whose database exists
SELECT * FROM pg_sop_replication('nope');
SELECT * FROM pg_sop_replication('repl_lost');

-- servers whose database cannot be opened would fail pg_sop_in_doubt and
-- pg_sop_resolve() in the tests that follow
SET client_min_messages = warning;
DROP SERVER repl_other, repl_missing, repl_plain_p, repl_lost CASCADE;
RESET client_min_messages;
