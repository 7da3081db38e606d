/* pg_sop--0.1.sql: the foreign-data wrapper (docs/pg_sop.md) */

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
