-- tests/pg/demo.sql - the pg_sop demo (run by tests/pg/demo.sh, `make demo`):
-- psql -e -v ON_ERROR_STOP=1 -v sopdb_path=FOLDER -f tests/pg/demo.sql
-- FOLDER is where the SOP database goes; the server's OS user must be able
-- to create it.

\echo '== 1. CREATE EXTENSION: the pg_sop foreign-data wrapper'
CREATE EXTENSION pg_sop;

\echo
\echo '== 2. A foreign server is a SOP database folder (pg_sop creates and initialises it)'
CREATE SERVER sopdb FOREIGN DATA WRAPPER pg_sop OPTIONS (path :'sopdb_path');

\echo
\echo '== 3. A foreign table over the SOP store "people", keyed by id (the store is created here)'
CREATE FOREIGN TABLE people (
    id bigint OPTIONS (key 'true'),
    name text,
    city text,
    score int
) SERVER sopdb OPTIONS (store 'people', create_if_missing 'true', slot_length '500');

\echo
\echo '== 4. Load 100,000 rows into the B-tree in one INSERT (statement times shown from here on)'
\timing on
INSERT INTO people
SELECT g, 'person ' || g, (ARRAY['Oslo','Lima','Pune','Kyiv'])[1 + g % 4], g % 1000
FROM generate_series(1, 100000) g;

\echo
\echo '== 5. A range query on the key: a B-tree range scan in key order (no Sort node)'
EXPLAIN (COSTS OFF) SELECT * FROM people WHERE id BETWEEN 5000 AND 5010 ORDER BY id;
SELECT * FROM people WHERE id BETWEEN 5000 AND 5010 ORDER BY id;

\echo
\echo '== 6. A join with an ordinary heap table: each order looks its person up by key'
CREATE TABLE orders (order_id int PRIMARY KEY, person_id bigint, total numeric);
INSERT INTO orders
SELECT g, 1 + (g * 7919) % 100000, round(10 + (g % 97) * 1.25, 2)
FROM generate_series(1, 5000) g;
ANALYZE orders;
EXPLAIN (COSTS OFF)
SELECT p.name, sum(o.total) FROM orders o JOIN people p ON p.id = o.person_id
WHERE o.order_id <= 10 GROUP BY p.name ORDER BY p.name;
SELECT p.name, sum(o.total) FROM orders o JOIN people p ON p.id = o.person_id
WHERE o.order_id <= 10 GROUP BY p.name ORDER BY p.name;

\echo
\echo '== 7. UPDATE ... RETURNING: 100 rows changed (the first 5 shown)'
WITH u AS (
    UPDATE people SET score = score + 1 WHERE id BETWEEN 1 AND 100 RETURNING id, score
)
SELECT count(*) OVER () AS updated, id, score FROM u ORDER BY id LIMIT 5;

\echo
\echo '== 8. A rolled-back transaction: the SOP store rolls back with PostgreSQL'
BEGIN;
DELETE FROM people WHERE id <= 50000;
SELECT count(*) FROM people;
ROLLBACK;
SELECT count(*) FROM people;

\echo
\echo '== 9. A new session reads the committed rows back from the SOP database'
\connect
SELECT count(*) FROM people;
SELECT * FROM people WHERE id BETWEEN 1 AND 3 ORDER BY id;
