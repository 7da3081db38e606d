-- pg_sop: options, DML, pushdown, transactions (docs/pg_sop.md)
CREATE EXTENSION pg_sop;

-- options: every error names what is wrong
CREATE SERVER bad1 FOREIGN DATA WRAPPER pg_sop;
CREATE SERVER bad2 FOREIGN DATA WRAPPER pg_sop OPTIONS (path 'relative/dir');
CREATE SERVER bad3 FOREIGN DATA WRAPPER pg_sop OPTIONS (path '/tmp/x', colour 'red');
CREATE SERVER bad4 FOREIGN DATA WRAPPER pg_sop OPTIONS (path '/tmp/x', coordination 'zookeeper');
CREATE SERVER bad5 FOREIGN DATA WRAPPER pg_sop OPTIONS (path '/tmp/x', redis_host 'h');
CREATE SERVER bad6 FOREIGN DATA WRAPPER pg_sop OPTIONS (path '/tmp/x', coordination 'redis', redis_port '70000');
CREATE SERVER bad7 FOREIGN DATA WRAPPER pg_sop OPTIONS (path '/tmp/x', registry_hash_mod '10');
CREATE SERVER sopdb FOREIGN DATA WRAPPER pg_sop OPTIONS (path '/tmp/pg_sop_regress/db1');
CREATE FOREIGN TABLE bad_t1 (id int OPTIONS (key 'maybe')) SERVER sopdb;
CREATE FOREIGN TABLE bad_t2 (id int) SERVER sopdb OPTIONS (slot_length '7');
CREATE FOREIGN TABLE bad_t3 (id int) SERVER sopdb OPTIONS (value_placement 'cloud');
CREATE FOREIGN TABLE bad_t4 (id int) SERVER sopdb OPTIONS (store '../etc');
CREATE FOREIGN TABLE bad_t5 (id int) SERVER sopdb OPTIONS (value_placement 'streaming');
CREATE USER MAPPING FOR CURRENT_USER SERVER sopdb OPTIONS (path '/tmp');
-- a table without a key column, and a missing store
CREATE FOREIGN TABLE nokey (id int) SERVER sopdb OPTIONS (store 'nokey');
SELECT * FROM nokey;
CREATE FOREIGN TABLE missing (id int OPTIONS (key 'true')) SERVER sopdb OPTIONS (store 'missing');
SELECT * FROM missing;

-- non-superusers cannot point a server at a folder
CREATE ROLE sop_user;
GRANT USAGE ON FOREIGN DATA WRAPPER pg_sop TO sop_user;
SET ROLE sop_user;
CREATE SERVER mine FOREIGN DATA WRAPPER pg_sop OPTIONS (path '/tmp/pg_sop_regress/mine');
RESET ROLE;

CREATE FOREIGN TABLE people (
    id bigint OPTIONS (key 'true'),
    name text,
    city text,
    score int
) SERVER sopdb OPTIONS (store 'people', create_if_missing 'true', slot_length '64');

INSERT INTO people SELECT g, 'person ' || g, (ARRAY['Oslo','Lima','Pune','Kyiv'])[1 + g % 4], g % 100
  FROM generate_series(1, 2000) g;
SELECT count(*), sum(id), sum(score) FROM people;

-- key range pushdown, in both directions, without a Sort
EXPLAIN (COSTS OFF) SELECT * FROM people WHERE id BETWEEN 100 AND 105 ORDER BY id;
SELECT * FROM people WHERE id BETWEEN 100 AND 105 ORDER BY id;
EXPLAIN (COSTS OFF) SELECT id FROM people WHERE id > 1995 ORDER BY id DESC;
SELECT id FROM people WHERE id > 1995 ORDER BY id DESC;
EXPLAIN (COSTS OFF) SELECT id FROM people WHERE id < 4 ORDER BY id DESC;
SELECT id FROM people WHERE id < 4 ORDER BY id DESC;
SELECT id FROM people WHERE 5 > id ORDER BY id;
SELECT id FROM people WHERE 1998 <= id ORDER BY id;
EXPLAIN (COSTS OFF) SELECT * FROM people WHERE id = 42;
SELECT * FROM people WHERE id = 42;
SELECT * FROM people WHERE id = 4242;
EXPLAIN (COSTS OFF) SELECT id FROM people WHERE id = ANY (ARRAY[7, 3, 9, 3, NULL]);
SELECT id FROM people WHERE id = ANY (ARRAY[7, 3, 9, 3, NULL]);
SELECT id FROM people WHERE id = ANY (ARRAY[7, 3, 9]) ORDER BY id DESC;
SELECT id FROM people WHERE id = NULL;
-- a qual on a value column is checked locally
EXPLAIN (COSTS OFF) SELECT id FROM people WHERE city = 'Oslo' AND id < 20;
SELECT id FROM people WHERE city = 'Oslo' AND id < 20;
-- LIMIT stops the walk
SELECT id FROM people ORDER BY id LIMIT 3;
SELECT id FROM people ORDER BY id DESC LIMIT 3;

-- a heap table joined on the key: a seek per outer row
CREATE TABLE orders (order_id int PRIMARY KEY, person_id bigint, total numeric);
INSERT INTO orders SELECT g, (g * 37) % 2000 + 1, g FROM generate_series(1, 500) g;
ANALYZE orders;
EXPLAIN (COSTS OFF)
SELECT o.order_id, p.name FROM orders o JOIN people p ON p.id = o.person_id WHERE o.order_id <= 5;
SELECT o.order_id, p.name FROM orders o JOIN people p ON p.id = o.person_id WHERE o.order_id <= 5
  ORDER BY o.order_id;

-- UPDATE, DELETE, RETURNING
UPDATE people SET score = score + 1000 WHERE id BETWEEN 10 AND 12 RETURNING id, score;
UPDATE people SET id = id + 100000 WHERE id IN (1, 2) RETURNING id, name;
SELECT id, name FROM people WHERE id > 2000 ORDER BY id;
UPDATE people SET id = 5 WHERE id = 100001;
DELETE FROM people WHERE id > 2000 RETURNING id, name, city;
DELETE FROM people WHERE id = 3;
SELECT count(*) FROM people;
-- duplicate keys and NULL keys
INSERT INTO people VALUES (4, 'again', NULL, NULL);
INSERT INTO people VALUES (NULL, 'nobody', NULL, NULL);
INSERT INTO people VALUES (1, 'one', NULL, NULL), (2, 'two', 'Lima', NULL) RETURNING *;
SELECT * FROM people WHERE id <= 2 ORDER BY id;
-- an UPDATE that moves every key forward must not see its own rows
UPDATE people SET id = id + 10000 WHERE id <= 100;
SELECT count(*), min(id), max(id) FROM people WHERE id > 10000;
UPDATE people SET id = id - 10000 WHERE id > 10000;
SELECT count(*) FROM people;
-- INSERT .. SELECT from the same table
INSERT INTO people SELECT id + 50000, name, city, score FROM people WHERE id <= 10;
SELECT count(*) FROM people WHERE id > 50000;
DELETE FROM people WHERE id > 50000;

-- transactions
BEGIN;
DELETE FROM people WHERE id <= 1000;
SELECT count(*) FROM people;
ROLLBACK;
SELECT count(*) FROM people;
BEGIN;
INSERT INTO people VALUES (3000, 'kept', 'Oslo', 1);
SAVEPOINT s1;
SELECT count(*) FROM people;
RELEASE SAVEPOINT s1;
COMMIT;
SELECT * FROM people WHERE id = 3000;
-- a savepoint rollback after writes: the whole transaction must roll back
BEGIN;
INSERT INTO people VALUES (3001, 'lost', 'Oslo', 1);
SAVEPOINT s1;
INSERT INTO people VALUES (3002, 'lost too', 'Oslo', 1);
ROLLBACK TO SAVEPOINT s1;
SELECT count(*) FROM people;
COMMIT;
SELECT count(*) FROM people WHERE id > 3000;
-- an error in a transaction rolls the engine's part back too
BEGIN;
INSERT INTO people VALUES (3003, 'lost', 'Oslo', 1);
INSERT INTO people VALUES (3000, 'duplicate', 'Oslo', 1);
COMMIT;
SELECT count(*) FROM people WHERE id > 3000;
-- TRUNCATE is transactional
BEGIN;
TRUNCATE people;
SELECT count(*) FROM people;
ROLLBACK;
SELECT count(*) FROM people;

-- ANALYZE samples the store; estimates follow the store's count
ANALYZE people;
SELECT reltuples FROM pg_class WHERE relname = 'people';

-- COPY in and out
COPY people FROM stdin;
5001	copied one	Lima	7
5002	copied two	\N	\N
\.
SELECT * FROM people WHERE id > 5000 ORDER BY id;
COPY (SELECT * FROM people WHERE id BETWEEN 20 AND 22 ORDER BY id) TO stdout;

-- duplicate keys (unique 'false'): every item is its own row; UPDATE and
-- DELETE change exactly the rows they scanned
CREATE FOREIGN TABLE tags (tag text OPTIONS (key 'true') COLLATE "C", n int)
  SERVER sopdb OPTIONS (create_if_missing 'true', unique 'false', value_placement 'active');
INSERT INTO tags VALUES ('red', 1), ('red', 2), ('blue', 3), ('red', 4);
SELECT * FROM tags ORDER BY tag, n;
SELECT n FROM tags WHERE tag = 'red' ORDER BY n;
UPDATE tags SET n = n * 10 WHERE tag = 'red' AND n >= 2 RETURNING tag, n;
DELETE FROM tags WHERE tag = 'red' AND n = 20 RETURNING *;
SELECT * FROM tags ORDER BY tag, n;
-- a row met twice by one UPDATE (a join with duplicates) changes once
UPDATE tags SET tag = 'green' FROM (VALUES ('blue'), ('blue')) v(x) WHERE tags.tag = v.x;
SELECT * FROM tags ORDER BY tag, n;
