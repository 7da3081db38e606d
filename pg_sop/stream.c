/*
 * stream.c - SQL functions over the streaming store of a foreign table
 * (docs/pg_sop.md, "Streaming tables"): pg_sop_stream_read, _write,
 * _list and _remove. Each runs in the engine transaction of the current
 * PostgreSQL transaction (pgsop_conn), so it commits, rolls back and
 * prepares with it, and checks the privilege the same change made by SQL
 * on the table would need.
 *
 * The table's shape and the streaming flag of its store are checked by
 * pgsop_store (codec.c), as for a scan. The engine's streams are closed
 * before each function returns, and by pgsop_close_handles when an ERROR
 * left one open.
 */
#include "pg_sop.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_class.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

/* A function's streaming table: its store open as a stream in the
 * transaction. */
typedef struct StreamTable {
    PgSopShape shape;
    PgSopConn *conn;
    sop_stream *s;
    const char *fn;
} StreamTable;

/* Whether the current user holds privilege `priv` on the table, or on
 * every one of its columns (as a statement using all of them would). */
static bool has_priv(Oid relid, AclMode priv)
{
    if (pg_class_aclcheck(relid, GetUserId(), priv) == ACLCHECK_OK)
        return true;
    return priv != ACL_DELETE &&
           pg_attribute_aclcheck_all(relid, GetUserId(), priv, ACLMASK_ALL) == ACLCHECK_OK;
}

/* Opens the pg_sop foreign table `relid` for function `fn`, checking each
 * privilege of `privs` (every one is needed), and its streaming store.
 * Writers lock the table as DML does. */
static void stream_table(StreamTable *t, Oid relid, AclMode privs, bool write, const char *fn)
{
    memset(t, 0, sizeof(*t));
    t->fn = fn;
    char relkind = get_rel_relkind(relid);
    if (relkind == '\0')
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("%s: relation with OID %u does not exist", fn, relid)));
    if (relkind != RELKIND_FOREIGN_TABLE ||
        strcmp(GetForeignDataWrapper(GetForeignServer(GetForeignTable(relid)->serverid)->fdwid)
                   ->fdwname,
               "pg_sop") != 0)
        ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                        errmsg("%s: \"%s\" is not a pg_sop foreign table", fn, get_rel_name(relid)),
                        errhint("Pass a foreign table over a streaming store: " STREAM_SHAPE_TEXT
                                " with value_placement 'streaming'.")));
    static const AclMode order[] = {ACL_SELECT, ACL_INSERT, ACL_UPDATE, ACL_DELETE};
    for (size_t i = 0; i < lengthof(order); i++)
        if ((privs & order[i]) && !has_priv(relid, order[i]))
            aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FOREIGN_TABLE, get_rel_name(relid));
    Relation rel = table_open(relid, write ? RowExclusiveLock : AccessShareLock);
    pgsop_shape_init(&t->shape, rel);
    t->conn = pgsop_conn(t->shape.serverid);
    (void)pgsop_store(&t->shape, t->conn);
    if (!t->shape.stream)
        ereport(ERROR,
                (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                 errmsg("%s: foreign table \"%s\" is not over a streaming store", fn,
                        RelationGetRelationName(rel)),
                 errdetail("Store \"%s\" is not a streaming store.", t->shape.opts.store),
                 errhint("Streaming tables have the table option value_placement 'streaming' "
                         "and the shape " STREAM_SHAPE_TEXT ".")));
    t->s = pgsop_stream_open(t->conn, t->shape.opts.store);
    /* the engine's cursors see the transaction's changes: a scan of the
     * store running in this statement would meet the new chunks (and a
     * scan that writes behind itself might never end) */
    if (write && pgsop_tree_in_use(t->conn, sop_stream_btree(t->s)))
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("%s: cannot change streaming store \"%s\" while a scan or change of "
                        "it is under way",
                        fn, t->shape.opts.store),
                 errdetail("A statement (or an open cursor) is still reading or changing \"%s\".",
                           RelationGetRelationName(rel)),
                 errhint("Collect the keys first (for example into a temporary table), then call "
                         "%s over them.",
                         fn)));
    /* the lock lasts until the transaction ends, as a statement's does */
    table_close(rel, NoLock);
}

static void stream_done(StreamTable *t)
{
    pgsop_stream_close(t->conn, t->s);
    t->s = NULL;
}

static void key_arg(StreamTable *t, text *key, const char **p, size_t *len)
{
    *p = VARDATA_ANY(key);
    *len = VARSIZE_ANY_EXHDR(key);
    if (*len == 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("%s: the key of a streaming table cannot be empty", t->fn)));
}

static void stream_error(StreamTable *t, sop_rc rc, sop_err *err, const char *what)
{
    pgsop_error(rc, err, "%s: could not %s streaming store \"%s\"", t->fn, what,
                t->shape.opts.store);
}

PG_FUNCTION_INFO_V1(pg_sop_stream_read);

/* The whole value of a key, or NULL when the key has no chunks. */
Datum pg_sop_stream_read(PG_FUNCTION_ARGS)
{
    StreamTable t;
    stream_table(&t, PG_GETARG_OID(0), ACL_SELECT, false, "pg_sop_stream_read");
    const char *key;
    size_t klen;
    key_arg(&t, PG_GETARG_TEXT_PP(1), &key, &klen);
    sop_err err;
    sop_err_clear(&err);
    sop_stream_entry e;
    sop_rc rc = sop_stream_stat(t.s, key, klen, &e, &err);
    if (rc == SOP_NOTFOUND) {
        stream_done(&t);
        PG_RETURN_NULL();
    }
    if (rc != SOP_OK)
        stream_error(&t, rc, &err, "read");
    if (e.bytes > (uint64)(MaxAllocSize - VARHDRSZ))
        ereport(ERROR,
                (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                 errmsg("pg_sop_stream_read: the value of key \"%s\" is " UINT64_FORMAT
                        " bytes, more than a bytea can hold (%zu bytes)",
                        text_to_cstring(PG_GETARG_TEXT_PP(1)), (uint64)e.bytes,
                        (size_t)(MaxAllocSize - VARHDRSZ)),
                 errdetail("It has " UINT64_FORMAT " chunks.", (uint64)e.chunks),
                 errhint("Read it by chunks through the table: SELECT chunk FROM %s WHERE key = "
                         "... ORDER BY chunk_index.",
                         get_rel_name(t.shape.relid))));
    bytea *out = palloc(VARHDRSZ + (Size)e.bytes);
    SET_VARSIZE(out, VARHDRSZ + (Size)e.bytes);
    sop_stream_reader *r = NULL;
    rc = sop_stream_find(t.s, key, klen, &err);
    if (rc == SOP_OK)
        rc = sop_stream_reader_open(t.s, &r, &err);
    if (rc != SOP_OK)
        stream_error(&t, rc, &err, "read");
    size_t at = 0, got = 0;
    do {
        CHECK_FOR_INTERRUPTS();
        rc = sop_stream_read(r, VARDATA(out) + at, (size_t)e.bytes - at, &got, &err);
        if (rc != SOP_OK)
            stream_error(&t, rc, &err, "read");
        at += got;
    } while (got > 0 && at < (size_t)e.bytes);
    if (at != (size_t)e.bytes)
        ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                        errmsg("pg_sop_stream_read: store \"%s\" gave %zu bytes of a " UINT64_FORMAT
                               "-byte value",
                               t.shape.opts.store, at, (uint64)e.bytes)));
    sop_stream_reader_close(r); /* also closed by the stream, on an ERROR */
    stream_done(&t);
    PG_RETURN_BYTEA_P(out);
}

PG_FUNCTION_INFO_V1(pg_sop_stream_write);

/* Replaces (or creates) the value of a key, in chunks of chunk_size bytes:
 * the number of chunks it now has (1 for an empty value). */
Datum pg_sop_stream_write(PG_FUNCTION_ARGS)
{
    int32 chunk_size = PG_GETARG_INT32(3);
    if (chunk_size <= 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("pg_sop_stream_write: chunk_size must be positive, not %d", chunk_size)));
    StreamTable t;
    stream_table(&t, PG_GETARG_OID(0), ACL_INSERT | ACL_UPDATE | ACL_DELETE, true,
                 "pg_sop_stream_write");
    const char *key;
    size_t klen;
    key_arg(&t, PG_GETARG_TEXT_PP(1), &key, &klen);
    bytea *data = PG_GETARG_BYTEA_PP(2);
    const char *p = VARDATA_ANY(data);
    size_t len = VARSIZE_ANY_EXHDR(data);
    /* before the first change (one server written per transaction; a
     * savepoint rollback after it poisons the transaction) */
    pgsop_note_write(t.conn);
    sop_err err;
    sop_err_clear(&err);
    sop_stream_writer *w;
    sop_rc rc = sop_stream_writer_open(t.s, key, klen, SOP_STREAM_UPSERT, &w, &err);
    if (rc != SOP_OK)
        stream_error(&t, rc, &err, "write");
    /* an ERROR from here on leaves the writer open: closing the stream
     * then poisons the engine transaction, which PostgreSQL aborts */
    for (size_t at = 0; at < len; at += (size_t)chunk_size) {
        CHECK_FOR_INTERRUPTS();
        size_t n = Min((size_t)chunk_size, len - at);
        rc = sop_stream_write(w, p + at, n, &err);
        if (rc != SOP_OK)
            stream_error(&t, rc, &err, "write");
    }
    uint64_t chunks = 0;
    rc = sop_stream_writer_close(w, &chunks, &err);
    if (rc != SOP_OK)
        stream_error(&t, rc, &err, "write");
    stream_done(&t);
    PG_RETURN_INT64((int64)chunks);
}

PG_FUNCTION_INFO_V1(pg_sop_stream_remove);

/* Removes every chunk of a key: false when it had none. */
Datum pg_sop_stream_remove(PG_FUNCTION_ARGS)
{
    StreamTable t;
    stream_table(&t, PG_GETARG_OID(0), ACL_SELECT | ACL_DELETE, true, "pg_sop_stream_remove");
    const char *key;
    size_t klen;
    key_arg(&t, PG_GETARG_TEXT_PP(1), &key, &klen);
    pgsop_note_write(t.conn);
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc = sop_stream_remove(t.s, key, klen, &err);
    if (rc != SOP_OK && rc != SOP_NOTFOUND)
        stream_error(&t, rc, &err, "remove from");
    stream_done(&t);
    PG_RETURN_BOOL(rc == SOP_OK);
}

/* ---- pg_sop_stream_list ----------------------------------------------- */

#define LIST_BATCH 1024

typedef struct ListEntry {
    char *key;
    size_t key_len;
    uint64 chunks, bytes;
} ListEntry;

/* One batch of sop_stream_list's entries. The callback runs inside the
 * engine: it never raises (allocation failures stop the walk). */
typedef struct ListBatch {
    MemoryContext cxt;
    ListEntry e[LIST_BATCH];
    int n;
    bool nomem;
    const char *skip; /* the key the previous batch ended with (from is inclusive) */
    size_t skip_len;
} ListBatch;

static bool list_collect(void *ctx, const sop_stream_entry *e)
{
    ListBatch *b = ctx;
    if (b->skip && e->key_len == b->skip_len && memcmp(e->key, b->skip, e->key_len) == 0)
        return true;
    char *k = MemoryContextAllocExtended(b->cxt, e->key_len + 1, MCXT_ALLOC_NO_OOM);
    if (k == NULL) {
        b->nomem = true;
        return false;
    }
    memcpy(k, e->key, e->key_len);
    k[e->key_len] = '\0';
    b->e[b->n] = (ListEntry){k, e->key_len, e->chunks, e->bytes};
    return ++b->n < LIST_BATCH;
}

PG_FUNCTION_INFO_V1(pg_sop_stream_list);

/* (key, chunks, bytes) of every key, in key order; reads no chunk. */
Datum pg_sop_stream_list(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *)fcinfo->resultinfo;
    InitMaterializedSRF(fcinfo, 0);
    StreamTable t;
    stream_table(&t, PG_GETARG_OID(0), ACL_SELECT, false, "pg_sop_stream_list");
    ListBatch *b = palloc0(sizeof(*b));
    MemoryContext cxts[2] = {
        AllocSetContextCreate(CurrentMemoryContext, "pg_sop_stream_list", ALLOCSET_DEFAULT_SIZES),
        AllocSetContextCreate(CurrentMemoryContext, "pg_sop_stream_list", ALLOCSET_DEFAULT_SIZES)};
    int turn = 0;
    for (;;) {
        CHECK_FOR_INTERRUPTS();
        /* the previous batch's keys stay readable (its last one is `from`) */
        b->cxt = cxts[turn];
        MemoryContextReset(b->cxt);
        turn ^= 1;
        b->n = 0;
        sop_err err;
        sop_err_clear(&err);
        sop_rc rc = sop_stream_list(t.s, b->skip, b->skip_len, list_collect, b, &err);
        if (rc != SOP_OK)
            stream_error(&t, rc, &err, "list");
        if (b->nomem)
            ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory"),
                            errdetail("pg_sop_stream_list could not copy a key.")));
        for (int i = 0; i < b->n; i++) {
            ListEntry *e = &b->e[i];
            pgsop_verify_text(e->key, e->key_len, t.shape.opts.store, true);
            Datum values[3] = {PointerGetDatum(cstring_to_text_with_len(e->key, (int)e->key_len)),
                               Int64GetDatum((int64)e->chunks), Int64GetDatum((int64)e->bytes)};
            bool nulls[3] = {false, false, false};
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        }
        if (b->n < LIST_BATCH)
            break;
        b->skip = b->e[b->n - 1].key;
        b->skip_len = b->e[b->n - 1].key_len;
    }
    stream_done(&t);
    return (Datum)0;
}
