/* pg_sop--0.1.sql: the foreign-data wrapper (docs/pg_sop.md) and its
 * two-phase commit (docs/two_phase_commit.md) */

\echo Use "CREATE EXTENSION pg_sop" to load this file. \quit

CREATE FUNCTION pg_sop_handler()
RETURNS fdw_handler
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT;

CREATE FUNCTION pg_sop_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER pg_sop
  HANDLER pg_sop_handler
  VALIDATOR pg_sop_validator;

-- One row per engine transaction prepared under a PostgreSQL transaction,
-- written inside that transaction: visible exactly when it committed. The
-- resolver reads it once clog no longer knows the xid, and deletes rows
-- whose engine transaction is decided.
CREATE TABLE pg_sop_decisions (
  fxid xid8 NOT NULL,            -- the PostgreSQL transaction
  server oid NOT NULL,           -- pg_foreign_server
  txid uuid NOT NULL,            -- the engine transaction
  gid text,                      -- PREPARE TRANSACTION's GID; NULL: plain COMMIT
  created timestamptz NOT NULL,
  PRIMARY KEY (server, txid)
);
REVOKE ALL ON pg_sop_decisions FROM PUBLIC;

-- Decides every in-doubt engine transaction of this database's pg_sop
-- servers whose PostgreSQL transaction has ended (the resolver worker does
-- the same every pg_sop.resolver_naptime seconds).
CREATE FUNCTION pg_sop_resolve(OUT server text, OUT txid uuid, OUT xid xid8, OUT gid text,
                               OUT action text)
RETURNS SETOF record
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION pg_sop_resolve() FROM PUBLIC;

CREATE FUNCTION pg_sop_in_doubt_list(OUT server text, OUT txid uuid, OUT xid xid8, OUT gid text,
                                     OUT owner text, OUT prepared timestamptz,
                                     OUT xact_status text, OUT resolution text)
RETURNS SETOF record
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT VOLATILE;

-- Engine transactions prepared and not yet decided, with what the resolver
-- will do: wait (PostgreSQL transaction in progress or prepared), commit,
-- roll back, or leave them (another cluster's or database's).
CREATE VIEW pg_sop_in_doubt AS SELECT * FROM pg_sop_in_doubt_list();

-- Active/passive replication of a server's database (the passive_path
-- option; docs/pg_sop.md, "Replication"): its state, and the two changes an
-- administrator makes. The NULLs of a database without a passive side:
-- everything but enabled.
CREATE FUNCTION pg_sop_replication(server text, OUT enabled boolean, OUT active text,
                                   OUT active_path text, OUT path_stale boolean,
                                   OUT passive_path text, OUT passive_stale boolean,
                                   OUT generation bigint, OUT changed timestamptz,
                                   OUT reason text)
RETURNS record
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT VOLATILE;

-- Makes the other side active (a planned switch-over; the engine fails
-- over by itself when the active side fails).
CREATE FUNCTION pg_sop_failover(server text)
RETURNS void
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION pg_sop_failover(text) FROM PUBLIC;

-- Copies the active side over a stale one (a replaced drive) and marks it
-- live; commits of every session wait during the copy.
CREATE FUNCTION pg_sop_reinstate(server text, OUT bytes bigint, OUT files bigint)
RETURNS record
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION pg_sop_reinstate(text) FROM PUBLIC;

-- Streaming tables (docs/pg_sop.md, "Streaming tables"): whole values of a
-- foreign table over a streaming store, in the transaction's engine
-- transaction. STRICT: a NULL argument does nothing and returns NULL.

-- The whole value of a key (NULL if it has no chunks); values over 1 GB
-- are read by chunks through the table.
CREATE FUNCTION pg_sop_stream_read(tbl regclass, key text)
RETURNS bytea
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

-- Replaces (or creates) the value of a key, chunk_size bytes per chunk:
-- the number of chunks (1 for an empty value).
CREATE FUNCTION pg_sop_stream_write(tbl regclass, key text, data bytea,
                                    chunk_size integer DEFAULT 1048576)
RETURNS bigint
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

-- Every key with its chunk count and size, in key order (reads no chunk).
CREATE FUNCTION pg_sop_stream_list(tbl regclass)
RETURNS TABLE(key text, chunks bigint, bytes bigint)
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

-- Removes every chunk of a key: false when it had none.
CREATE FUNCTION pg_sop_stream_remove(tbl regclass, key text)
RETURNS boolean
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
