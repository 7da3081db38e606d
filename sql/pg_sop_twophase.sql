-- pg_sop two-phase commit (docs/two_phase_commit.md): PREPARE TRANSACTION,
-- COMMIT/ROLLBACK PREPARED, what PREPARE refuses, the in-doubt view and the
-- resolver function. Crashes are in tests/pg/tap.
CREATE EXTENSION IF NOT EXISTS pg_sop;
\getenv dir PG_SOP_REGRESS_DIR
SELECT :'dir' || '/tp' AS path \gset
CREATE SERVER tp FOREIGN DATA WRAPPER pg_sop OPTIONS (path :'path');
CREATE FOREIGN TABLE acct (id int OPTIONS (key 'true'), bal int)
  SERVER tp OPTIONS (store 'acct', create_if_missing 'true', slot_length '4');
CREATE TABLE marks (id int PRIMARY KEY);

-- a plain commit leaves nothing in doubt
INSERT INTO acct SELECT g * 10, 100 FROM generate_series(1, 40) g;
SELECT count(*) FROM pg_sop_in_doubt;

-- PREPARE: invisible, in doubt (waiting for PostgreSQL), then committed once
BEGIN;
INSERT INTO acct VALUES (1, 1);
INSERT INTO marks VALUES (1);
PREPARE TRANSACTION 'tp1';
SELECT count(*) FROM acct;
SELECT server, gid, xact_status, resolution FROM pg_sop_in_doubt;
SELECT server, gid, action FROM pg_sop_resolve();
COMMIT PREPARED 'tp1';
SELECT * FROM acct WHERE id < 10 OR id = 395;
SELECT * FROM marks;
SELECT count(*) FROM pg_sop_in_doubt;

-- a prepared change blocks a conflicting write from another transaction
BEGIN;
UPDATE acct SET bal = 0 WHERE id = 10;
PREPARE TRANSACTION 'tp2';
UPDATE acct SET bal = 1 WHERE id = 10;
ROLLBACK PREPARED 'tp2';
SELECT * FROM acct WHERE id = 10;
SELECT count(*) FROM pg_sop_in_doubt;
UPDATE acct SET bal = 2 WHERE id = 10;
SELECT * FROM acct WHERE id = 10;

-- the same GID again
BEGIN;
INSERT INTO acct VALUES (2, 2);
PREPARE TRANSACTION 'tp1';
COMMIT PREPARED 'tp1';
SELECT * FROM acct WHERE id < 10 OR id = 395;

-- a transaction that only read pg_sop tables prepares like any other
BEGIN;
SELECT count(*) FROM acct;
PREPARE TRANSACTION 'ro';
COMMIT PREPARED 'ro';

-- what PREPARE refuses leaves nothing behind in the engine
BEGIN;
CREATE TEMP TABLE scratch (x int);
INSERT INTO acct VALUES (3, 3);
PREPARE TRANSACTION 'tmp';
BEGIN;
INSERT INTO acct VALUES (4, 4);
PREPARE TRANSACTION 'dup';
BEGIN;
INSERT INTO acct VALUES (395, 5);
PREPARE TRANSACTION 'dup';
SELECT gid FROM pg_sop_in_doubt;
COMMIT PREPARED 'dup';
SELECT * FROM acct WHERE id < 10 OR id = 395;

-- a GID PostgreSQL would refuse is refused before the engine prepares
BEGIN;
INSERT INTO acct VALUES (8, 8);
SELECT 'PREPARE TRANSACTION ''' || repeat('x', 200) || '''' AS stmt \gset
:stmt;
SELECT count(*) FROM acct WHERE id = 8;

-- a savepoint rollback after writes cannot be prepared
BEGIN;
INSERT INTO acct VALUES (6, 6);
SAVEPOINT a;
INSERT INTO acct VALUES (7, 7);
ROLLBACK TO a;
PREPARE TRANSACTION 'sp';
SELECT count(*) FROM pg_prepared_xacts;

-- once resolved, no decision rows remain
SELECT * FROM pg_sop_resolve();
SELECT count(*) FROM pg_sop_decisions;
SELECT count(*) FROM pg_sop_in_doubt;

-- only superusers resolve
CREATE ROLE tp_user;
SET ROLE tp_user;
SELECT * FROM pg_sop_resolve();
RESET ROLE;
DROP ROLE tp_user;
