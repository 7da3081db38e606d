/*
 * pg_sop.h - the PostgreSQL extension over libsop: SOP stores as foreign
 * tables (docs/pg_sop.md).
 *
 * Modules:
 *  - pg_sop.c: _PG_init, the handler and option validator, per-backend
 *    database handles, one engine transaction per PostgreSQL transaction
 *    and its commit/abort callbacks, engine errors as SQLSTATEs.
 *  - codec.c: a table's shape (key columns, raw or row-encoded stores) and
 *    the mapping of rows to engine keys and values.
 *  - fdw.c: planner and executor callbacks, ANALYZE, TRUNCATE, IMPORT.
 *  - replication.c: pg_sop_replication, pg_sop_failover, pg_sop_reinstate
 *    (the passive_path option is checked and passed on in pg_sop.c).
 *  - stream.c: pg_sop_stream_read/write/list/remove over the streaming
 *    store of a foreign table (the table's shape is in codec.c).
 *
 * Invariants:
 *  1. Nothing is opened in _PG_init (it may run in the postmaster): the
 *     database is opened by the first backend use.
 *  2. Only PRE_COMMIT raises; COMMIT and ABORT never do (an ERROR there is
 *     a PANIC): engine calls there return codes and are only logged.
 *  3. An engine transaction belongs to one PostgreSQL transaction; every
 *     cursor and stream opened on it is closed before it ends.
 *  4. No ERROR is raised from inside an engine callback (it would jump
 *     over the engine's frames): callbacks only collect.
 */
#ifndef PG_SOP_H
#define PG_SOP_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/relcache.h"

#include "sop.h"

/* A server's connection in this backend: its database, and the engine
 * transaction of the current PostgreSQL transaction (NULL if none). */
typedef struct PgSopConn {
    Oid serverid; /* hash key */
    sop_db *db;
    sop_txn *txn;
    uint64 writes;      /* engine changes made by the current transaction */
    bool poisoned;      /* a savepoint rollback undid engine changes */
    List *cursors;      /* open sop_cursor *, closed at transaction end */
    List *cursor_trees; /* the sop_btree * of each of them */
    List *streams;      /* open sop_stream *, closed at transaction end */
    bool eprepared;     /* txn is prepared in the engine (etxid), awaiting PG */
    uint8_t etxid[SOP_ID_LEN];
    char path[1024]; /* for messages */
} PgSopConn;

/* The connection of a server, with an engine transaction begun for the
 * current PostgreSQL transaction. */
PgSopConn *pgsop_conn(Oid serverid);
/* The connection with its database open (no transaction begun). A
 * missing database folder is created with `create`, else NULL. */
PgSopConn *pgsop_conn_db(Oid serverid, bool create);
/* Records an engine change (savepoint tracking, one writer per xact). */
void pgsop_note_write(PgSopConn *c);
/* Cursors closed with the transaction if the executor did not. */
sop_cursor *pgsop_cursor_open(PgSopConn *c, sop_btree *bt);
void pgsop_cursor_close(PgSopConn *c, sop_cursor *cur);
/* Whether a cursor of pgsop_cursor_open on `bt` is open (a scan or a
 * change of the store is under way in this backend). */
bool pgsop_tree_in_use(PgSopConn *c, sop_btree *bt);
/* Streams likewise: the streaming store `store` in the transaction
 * (ERROR if it is missing or not a streaming store). */
sop_stream *pgsop_stream_open(PgSopConn *c, const char *store);
void pgsop_stream_close(PgSopConn *c, sop_stream *s);
/* Closes every stream and cursor of the transaction (before it ends). */
void pgsop_close_handles(PgSopConn *c);

/* ERROR for an engine failure: SQLSTATE from rc (docs/pg_sop.md), the
 * message from `what`, the engine's words in the detail. */
void pgsop_error(sop_rc rc, const sop_err *err, const char *what, ...) pg_attribute_printf(3, 4)
    pg_attribute_noreturn();
int pgsop_sqlstate(sop_rc rc);

/* Table options. */
typedef struct PgSopTableOpts {
    char *store;
    bool create_if_missing;
    int slot_length;
    bool unique;
    sop_value_placement placement;
    bool streaming; /* value_placement 'streaming' (placement is then active) */
} PgSopTableOpts;
void pgsop_table_options(Oid relid, PgSopTableOpts *o);

/* ---- twophase.c (docs/two_phase_commit.md) ---- */

extern bool pgsop_preloaded;        /* loaded by shared_preload_libraries */
extern bool pgsop_resolver_process; /* this process is a resolver worker */
extern char *pgsop_pause_at;        /* GUC pg_sop.debug_pause_at */
void pgsop_twophase_init(void);     /* GUCs, hooks, the launcher */
/* Test hook: pauses forever when pg_sop.debug_pause_at names `name`. */
void pgsop_pause_point(const char *name);
/* PRE_COMMIT/PRE_PREPARE: decision row, WAL flush, engine prepare under
 * the owner tag (gid NULL for a plain commit). ERRORs on failure. */
void pgsop_prepare_engine(PgSopConn *c, const char *gid);
/* The GID of the PREPARE TRANSACTION being run, or NULL. */
const char *pgsop_captured_gid(void);
void pgsop_forget_gid(void);

/* fdw.c: drops the UPDATE/DELETE row identities at transaction end. */
void pgsop_forget_stashes(void);

/* ---- codec.c ---- */

/* How a table maps onto its store. */
typedef struct PgSopShape {
    Oid relid;
    Oid serverid;
    PgSopTableOpts opts;
    TupleDesc desc;
    int nkeys;
    AttrNumber *keyatt; /* 1-based attribute numbers of the key columns, in key order */
    bool *iskey;        /* by 0-based attribute index */
    bool raw;           /* (key bytea, value bytea) over a plain byte-key store */
    int rawval;         /* raw: 0-based index of the value column, or -1 */
    bool stream;        /* (key text, chunk_index int, chunk bytea) over a streaming store */
    int streamval;      /* stream: 0-based index of the chunk column */
} PgSopShape;

/* Reads the key columns and options (no engine access). */
void pgsop_shape_init(PgSopShape *s, Relation rel);
/* Opens (or creates, with create_if_missing) the table's store in the
 * transaction, deciding raw, streaming or row-encoded from the store. */
sop_btree *pgsop_store(PgSopShape *s, PgSopConn *c);
/* The columns of a streaming table, for messages. */
#define STREAM_SHAPE_TEXT                                                                          \
    "(key text OPTIONS (key 'true'), chunk_index bigint OPTIONS (key 'true'), chunk bytea)"
/* ERROR unless the table has the streaming shape (key text, chunk_index
 * integer, chunk bytea); sets s->streamval. */
void pgsop_check_stream_shape(PgSopShape *s);
/* ERROR (22021) unless len bytes read from store `store` are valid text in
 * the database encoding; `key`: they are a key (else a text value). */
void pgsop_verify_text(const char *p, size_t len, const char *store, bool key);

/* Whether a type can be a key column, and whether its encoded order is
 * PostgreSQL's btree order (for text: only with a "C" collation). */
bool pgsop_key_type_ok(Oid type);
bool pgsop_order_matches(Oid type, Oid collation);
/* The engine tuple type a value of `type` is encoded as (-1: none). */
int pgsop_tuple_kind(Oid type);

/* Appends one key field (an encoded value of a key column's type). */
void pgsop_encode_field(StringInfo out, Oid type, Datum v);
/* The encoded key of a row (values/isnull by attribute index): ERROR on a
 * NULL key column. */
void pgsop_encode_key(PgSopShape *s, Datum *values, bool *isnull, StringInfo out);
/* The encoded value of a row. */
void pgsop_encode_row(PgSopShape *s, Datum *values, bool *isnull, StringInfo out);
/* Decodes a stored item into values/isnull (palloc'd in the current
 * memory context). */
void pgsop_decode(PgSopShape *s, const void *key, size_t klen, const void *val, size_t vlen,
                  Datum *values, bool *isnull);

/* IMPORT FOREIGN SCHEMA: the column list of a store ("id bigint OPTIONS
 * (key 'true'), ..."). */
char *pgsop_import_columns(const sop_store_info *info, sop_btree *bt);
/* The table options IMPORT adds for a store (", value_placement ..." or ""). */
const char *pgsop_import_options(const sop_store_info *info);
/* The store description pg_sop writes when it creates a store: it names
 * the key columns, for IMPORT. */
char *pgsop_describe_keys(PgSopShape *s);

#endif
