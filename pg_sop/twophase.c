/*
 * twophase.c - PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED and the
 * resolution of in-doubt engine transactions (docs/two_phase_commit.md).
 *
 * Every engine transaction that wrote is prepared in the engine (state
 * PREPARED, durable, its nodes claimed) before PostgreSQL decides, under
 * an owner tag naming this cluster, database and full transaction ID; a
 * decision row (fxid, server, engine txid, gid) is written in the same
 * PostgreSQL transaction and flushed to WAL first. The engine transaction
 * then follows PostgreSQL's outcome:
 *  - fast path: the COMMIT/ABORT callbacks (plain transactions) and the
 *    ProcessUtility hook after COMMIT/ROLLBACK PREPARED;
 *  - guarantee: the resolver (background worker, pg_sop_resolve()), which
 *    decides each engine transaction of this cluster and database from its
 *    xid's status, and from the decision row once clog no longer knows it.
 *
 * Invariants:
 *  1. The xid of an engine-prepared transaction is durable in WAL before
 *     the engine prepare (the decision row's insert is flushed): after a
 *     crash it is never handed to another transaction, so its status is
 *     the status of the transaction that prepared.
 *  2. An engine transaction is decided only when its PostgreSQL
 *     transaction is no longer in progress (a PostgreSQL-prepared one is in
 *     progress): committed -> commit, otherwise -> roll back. Both
 *     decisions are idempotent in the engine and serialised by its commit
 *     lock, so the fast path and the resolver may race.
 *  3. Nothing here raises an ERROR after PostgreSQL decided: engine calls
 *     return codes, failures are WARNINGs left to the resolver.
 *  4. A decision row is deleted only once its engine transaction is
 *     decided (rows are read before the engine's prepared list).
 */
#include "pg_sop.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/twophase.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_foreign_data_wrapper.h"
#include "catalog/pg_foreign_server.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/pmsignal.h"
#include "storage/procarray.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/xid8.h"

char *pgsop_pause_at = NULL;
/* test hook: the resolver treats every xid as too old for clog, so the
 * decision table decides (clog truncation takes ~10^6 xids to reach) */
static bool debug_xid_unknown = false;
static int resolver_naptime = 10;
bool pgsop_preloaded = false;

static ProcessUtility_hook_type prev_utility = NULL;
static char captured_gid[GIDSIZE];
static bool have_gid = false;
static bool gid_too_long = false;

/* ---- test pauses ---------------------------------------------------------- */

void pgsop_pause_point(const char *name)
{
    if (pgsop_pause_at == NULL || pgsop_pause_at[0] == '\0' || strcmp(pgsop_pause_at, name) != 0)
        return;
    /* a test kills this process (kill -9) or the server (immediate stop) */
    ereport(LOG, (errmsg("pg_sop: paused at %s (pid %d)", name, MyProcPid)));
    for (;;) {
        pg_usleep(100000L);
        if (!PostmasterIsAlive())
            _exit(1);
    }
}

static void engine_point(const char *name)
{
    pgsop_pause_point(name);
}

/* ---- owner tags ------------------------------------------------------------ */

static void owner_tag(char *out, size_t n, FullTransactionId fxid, const char *gid)
{
    snprintf(out, n, "pgsop:%016llx:%08x:%016llx:%s", (unsigned long long)GetSystemIdentifier(),
             MyDatabaseId, (unsigned long long)U64FromFullTransactionId(fxid), gid ? gid : "");
}

typedef struct OwnerTag {
    uint64 sysid;
    Oid db;
    FullTransactionId fxid;
    const char *gid; /* points into the tag; "" for a plain commit */
} OwnerTag;

static bool parse_owner(const char *s, OwnerTag *o)
{
    unsigned long long sysid, fxid;
    unsigned int db;
    int used = 0;
    if (strncmp(s, "pgsop:", 6) != 0 ||
        sscanf(s + 6, "%16llx:%8x:%16llx:%n", &sysid, &db, &fxid, &used) != 3 ||
        used != 16 + 1 + 8 + 1 + 16 + 1)
        return false;
    o->sysid = sysid;
    o->db = db;
    o->fxid = FullTransactionIdFromU64(fxid);
    o->gid = s + 6 + used;
    return true;
}

/* ---- the decision table ------------------------------------------------- */

static Oid extension_schema(void)
{
    Relation rel = table_open(ExtensionRelationId, AccessShareLock);
    ScanKeyData key;
    ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
                CStringGetDatum("pg_sop"));
    SysScanDesc scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
    HeapTuple tup = systable_getnext(scan);
    Oid nsp =
        HeapTupleIsValid(tup) ? ((Form_pg_extension)GETSTRUCT(tup))->extnamespace : InvalidOid;
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return nsp;
}

static Oid decisions_relid(void)
{
    Oid nsp = extension_schema();
    Oid rel = OidIsValid(nsp) ? get_relname_relid("pg_sop_decisions", nsp) : InvalidOid;
    if (!OidIsValid(rel))
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pg_sop: the table pg_sop_decisions is missing"),
                        errhint("Recreate the extension pg_sop in this database.")));
    return rel;
}

static char *decisions_name(void)
{
    Oid nsp = extension_schema();
    if (!OidIsValid(nsp))
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pg_sop: the extension is not installed in this database")));
    return psprintf("%s.pg_sop_decisions", quote_identifier(get_namespace_name(nsp)));
}

/*
 * The PRE_COMMIT / PRE_PREPARE half: the decision row, flushed, then the
 * engine prepare under the owner tag. ERRORs on failure (the transaction
 * aborts and so does the engine's).
 */
void pgsop_prepare_engine(PgSopConn *c, const char *gid)
{
    FullTransactionId fxid = GetTopFullTransactionId();
    Relation rel = table_open(decisions_relid(), RowExclusiveLock);
    uint8_t txid[SOP_ID_LEN];
    sop_txn_id(c->txn, txid);
    pg_uuid_t *u = palloc(sizeof(pg_uuid_t));
    memcpy(u->data, txid, SOP_ID_LEN);
    Datum values[5];
    bool nulls[5] = {false, false, false, gid == NULL, false};
    values[0] = FullTransactionIdGetDatum(fxid);
    values[1] = ObjectIdGetDatum(c->serverid);
    values[2] = UUIDPGetDatum(u);
    values[3] = gid ? CStringGetTextDatum(gid) : (Datum)0;
    values[4] = TimestampTzGetDatum(GetCurrentTimestamp());
    HeapTuple tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
    CatalogTupleInsert(rel, tup);
    table_close(rel, NoLock);
    /* invariant 1: the xid (and the row) reach WAL before the engine
     * holds anything under it; the commit itself is synchronous */
    XLogFlush(XactLastRecEnd);
    ForceSyncCommit();

    char owner[256];
    owner_tag(owner, sizeof(owner), fxid, gid);
    pgsop_close_handles(c);
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc = sop_txn_prepare(c->txn, owner, c->etxid, &err);
    if (rc != SOP_OK) {
        sop_txn_free(c->txn);
        c->txn = NULL;
        pgsop_error(rc, &err,
                    gid ? "could not prepare the SOP transaction"
                        : "could not commit the SOP transaction");
    }
    c->eprepared = true;
    pgsop_pause_point(gid ? "prepare.after_engine_prepare" : "commit.after_engine_prepare");
}

/* ---- transaction status ----------------------------------------------- */

typedef enum XidStatus {
    XS_IN_PROGRESS,
    XS_COMMITTED,
    XS_ABORTED,
    XS_UNKNOWN, /* older than clog: the decision table decides */
    XS_FUTURE   /* not assigned yet in this cluster: never decided */
} XidStatus;

static const char *xs_name(XidStatus s)
{
    switch (s) {
    case XS_IN_PROGRESS:
        return "in progress";
    case XS_COMMITTED:
        return "committed";
    case XS_ABORTED:
        return "aborted";
    default:
        return NULL;
    }
}

/* pg_xact_status's answer, with "in progress" checked first: a
 * transaction that is no longer running has its final clog state. */
static XidStatus xid_status(FullTransactionId fxid)
{
    FullTransactionId next = ReadNextFullTransactionId();
    if (FullTransactionIdFollowsOrEquals(fxid, next))
        return XS_FUTURE;
    TransactionId xid = XidFromFullTransactionId(fxid);
    XidStatus st;
    LWLockAcquire(XactTruncationLock, LW_SHARED);
    if (U64FromFullTransactionId(next) - U64FromFullTransactionId(fxid) >= (UINT64CONST(1) << 31) ||
        TransactionIdPrecedes(xid, ShmemVariableCache->oldestClogXid))
        st = XS_UNKNOWN;
    else if (TransactionIdIsInProgress(xid))
        st = XS_IN_PROGRESS;
    else if (TransactionIdDidCommit(xid))
        st = XS_COMMITTED;
    else
        st = XS_ABORTED; /* aborted, or running when the server crashed */
    LWLockRelease(XactTruncationLock);
    return st;
}

/* ---- the resolver ------------------------------------------------------- */

/* One engine prepared transaction, as listed. */
typedef struct InDoubt {
    uint8_t txid[SOP_ID_LEN];
    char owner[256];
    int64 prepared_ms;
    bool decided; /* by this pass */
} InDoubt;

static void collect_prepared(void *ctx, const sop_prepared_info *info)
{
    List **l = ctx;
    InDoubt *d = palloc(sizeof(InDoubt));
    memcpy(d->txid, info->txid, SOP_ID_LEN);
    strlcpy(d->owner, info->owner, sizeof(d->owner));
    d->prepared_ms = info->prepared_ms;
    d->decided = false;
    *l = lappend(*l, d);
}

/* What the resolver does with one engine transaction. */
typedef enum Verdict {
    V_NOT_OURS, /* another cluster, database or coordinator */
    V_WAIT,     /* its PostgreSQL transaction is still in progress */
    V_COMMIT,
    V_ROLLBACK,
    V_FUTURE /* its xid is ahead of this cluster: left in doubt */
} Verdict;

static const char *verdict_name(Verdict v)
{
    static const char *names[] = {"not ours", "wait", "commit", "roll back", "xid in the future"};
    return names[v];
}

static bool decision_row_visible(Oid serverid, const uint8_t txid[SOP_ID_LEN])
{
    char *sql = psprintf("SELECT 1 FROM %s WHERE server = $1 AND txid = $2", decisions_name());
    pg_uuid_t u;
    memcpy(u.data, txid, SOP_ID_LEN);
    Oid types[2] = {OIDOID, UUIDOID};
    Datum args[2] = {ObjectIdGetDatum(serverid), UUIDPGetDatum(&u)};
    SPI_connect();
    int rc = SPI_execute_with_args(sql, 2, types, args, NULL, true, 1);
    bool found = rc == SPI_OK_SELECT && SPI_processed > 0;
    SPI_finish();
    return found;
}

static Verdict judge(Oid serverid, const InDoubt *d, OwnerTag *o, XidStatus *st)
{
    *st = XS_UNKNOWN;
    if (!parse_owner(d->owner, o) || o->sysid != GetSystemIdentifier() || o->db != MyDatabaseId)
        return V_NOT_OURS;
    *st = debug_xid_unknown ? XS_UNKNOWN : xid_status(o->fxid);
    switch (*st) {
    case XS_IN_PROGRESS:
        return V_WAIT;
    case XS_COMMITTED:
        return V_COMMIT;
    case XS_ABORTED:
        return V_ROLLBACK;
    case XS_FUTURE:
        return V_FUTURE;
    case XS_UNKNOWN:
        break;
    }
    return decision_row_visible(serverid, d->txid) ? V_COMMIT : V_ROLLBACK;
}

typedef void (*ResolveReport)(void *ctx, ForeignServer *srv, const InDoubt *d, const OwnerTag *o,
                              XidStatus st, Verdict v, const char *outcome);

static char *txid_text(const uint8_t txid[SOP_ID_LEN])
{
    pg_uuid_t u;
    memcpy(u.data, txid, SOP_ID_LEN);
    return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&u)));
}

/*
 * Decides the in-doubt engine transactions of one server (only those of
 * `gid` if given; none when `act` is false - the view). With `cleanup`,
 * deletes the decision rows of decided transactions and runs the engine's
 * recovery. ERRORs only before touching the engine (no database).
 */
static void resolve_server(Oid serverid, const char *gid, bool act, bool cleanup,
                           ResolveReport report, void *ctx)
{
    ForeignServer *srv = GetForeignServer(serverid);
    PgSopConn *c = pgsop_conn_db(serverid, false);
    if (c == NULL)
        return; /* its database folder does not exist: nothing in doubt */
    sop_err err;
    sop_err_clear(&err);

    /* invariant 4: the rows first, then the list */
    List *rows = NIL;
    char *table = cleanup ? decisions_name() : NULL;
    if (cleanup) {
        char *sql = psprintf("SELECT txid FROM %s WHERE server = $1", table);
        Oid types[1] = {OIDOID};
        Datum args[1] = {ObjectIdGetDatum(serverid)};
        SPI_connect();
        if (SPI_execute_with_args(sql, 1, types, args, NULL, true, 0) == SPI_OK_SELECT) {
            MemoryContext old = MemoryContextSwitchTo(CurTransactionContext);
            for (uint64 i = 0; i < SPI_processed; i++) {
                bool isnull;
                Datum v = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
                if (!isnull) {
                    pg_uuid_t *u = palloc(sizeof(pg_uuid_t));
                    memcpy(u, DatumGetUUIDP(v), sizeof(pg_uuid_t));
                    rows = lappend(rows, u);
                }
            }
            MemoryContextSwitchTo(old);
        }
        SPI_finish();
    }

    List *list = NIL;
    sop_rc rc = sop_db_list_prepared(c->db, collect_prepared, &list, &err);
    if (rc != SOP_OK) {
        ereport(WARNING, (errmsg("pg_sop: could not list the in-doubt transactions of server "
                                 "\"%s\": %s",
                                 srv->servername, sop_rc_message(rc)),
                          errdetail("%s", err.msg)));
        return;
    }
    ListCell *lc;
    foreach (lc, list) {
        InDoubt *d = lfirst(lc);
        OwnerTag o;
        memset(&o, 0, sizeof(o));
        XidStatus st;
        Verdict v = judge(serverid, d, &o, &st);
        if (gid && (v == V_NOT_OURS || strcmp(o.gid, gid) != 0))
            continue;
        const char *outcome = NULL;
        if (act && (v == V_COMMIT || v == V_ROLLBACK)) {
            pgsop_pause_point("resolve.before_decide");
            sop_err_clear(&err);
            rc = v == V_COMMIT ? sop_db_commit_prepared(c->db, d->txid, &err)
                               : sop_db_rollback_prepared(c->db, d->txid, &err);
            if (rc == SOP_OK) {
                outcome = v == V_COMMIT ? "committed" : "rolled back";
                d->decided = true;
                ereport(LOG, (errmsg("pg_sop: %s in-doubt SOP transaction %s of server \"%s\" "
                                     "(xid %llu%s%s)",
                                     outcome, txid_text(d->txid), srv->servername,
                                     (unsigned long long)U64FromFullTransactionId(o.fxid),
                                     o.gid[0] ? ", gid " : "", o.gid)));
            } else if (rc == SOP_NOTFOUND) {
                outcome = "decided meanwhile";
                d->decided = true;
            } else {
                outcome = "failed";
                ereport(WARNING,
                        (errmsg("pg_sop: could not %s in-doubt SOP transaction %s of server "
                                "\"%s\": %s",
                                v == V_COMMIT ? "commit" : "roll back", txid_text(d->txid),
                                srv->servername, sop_rc_message(rc)),
                         errdetail("%s", err.msg), errhint("The resolver retries it.")));
            }
            pgsop_pause_point("resolve.after_decide");
        }
        if (report)
            report(ctx, srv, d, &o, st, v, outcome);
    }

    if (cleanup) {
        /* rows whose engine transaction is no longer prepared: decided */
        StringInfoData ids;
        initStringInfo(&ids);
        foreach (lc, rows) {
            pg_uuid_t *u = lfirst(lc);
            bool pending = false;
            ListCell *lc2;
            foreach (lc2, list) {
                InDoubt *d = lfirst(lc2);
                if (memcmp(d->txid, u->data, SOP_ID_LEN) == 0 && !d->decided)
                    pending = true;
            }
            if (!pending)
                appendStringInfo(&ids, "%s'%s'", ids.len ? "," : "", txid_text(u->data));
        }
        if (ids.len) {
            char *sql = psprintf("DELETE FROM %s WHERE server = %u AND txid IN (%s)", table,
                                 serverid, ids.data);
            SPI_connect();
            SPI_execute(sql, false, 0);
            SPI_finish();
        }
        sop_err_clear(&err);
        rc = sop_db_recover(c->db, &err);
        if (rc != SOP_OK)
            ereport(WARNING, (errmsg("pg_sop: recovery of server \"%s\" failed: %s",
                                     srv->servername, sop_rc_message(rc)),
                              errdetail("%s", err.msg)));
    }
}

/* The pg_sop servers of this database. */
static List *sop_servers(void)
{
    ForeignDataWrapper *fdw = GetForeignDataWrapperByName("pg_sop", true);
    List *out = NIL;
    if (fdw == NULL)
        return NIL;
    Relation rel = table_open(ForeignServerRelationId, AccessShareLock);
    SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
    HeapTuple tup;
    while (HeapTupleIsValid(tup = systable_getnext(scan))) {
        Form_pg_foreign_server s = (Form_pg_foreign_server)GETSTRUCT(tup);
        if (s->srvfdw == fdw->fdwid)
            out = lappend_oid(out, s->oid);
    }
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return out;
}

/* ---- the fast path after COMMIT / ROLLBACK PREPARED ----------------------- */

static void finish_gid(const char *gid)
{
    MemoryContext old = CurrentMemoryContext;
    ResourceOwner owner = CurrentResourceOwner;
    BeginInternalSubTransaction(NULL);
    PG_TRY();
    {
        pgsop_pause_point("finish_prepared.before_engine");
        List *servers = sop_servers();
        ListCell *lc;
        foreach (lc, servers)
            resolve_server(lfirst_oid(lc), gid, true, false, NULL, NULL);
        ReleaseCurrentSubTransaction();
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(old);
        ErrorData *e = CopyErrorData();
        FlushErrorState();
        RollbackAndReleaseCurrentSubTransaction();
        ereport(WARNING, (errmsg("pg_sop: the SOP side of prepared transaction \"%s\" is left "
                                 "to the resolver: %s",
                                 gid, e->message)));
    }
    PG_END_TRY();
    MemoryContextSwitchTo(old);
    CurrentResourceOwner = owner;
}

static void utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
                         ProcessUtilityContext context, ParamListInfo params,
                         QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
    Node *node = pstmt->utilityStmt;
    TransactionStmt *ts = IsA(node, TransactionStmt) ? (TransactionStmt *)node : NULL;
    if (ts && ts->kind == TRANS_STMT_PREPARE) {
        /* PrepareTransactionBlock keeps the GID to itself: PRE_PREPARE
         * reads it from here (the statement only marks the block; the
         * prepare happens when it ends) */
        strlcpy(captured_gid, ts->gid, sizeof(captured_gid));
        gid_too_long = strlen(ts->gid) >= sizeof(captured_gid);
        have_gid = true;
    }
    if (prev_utility)
        prev_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
    else
        standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest,
                                qc);
    if (ts && (ts->kind == TRANS_STMT_COMMIT_PREPARED || ts->kind == TRANS_STMT_ROLLBACK_PREPARED))
        finish_gid(ts->gid); /* PostgreSQL decided: the engine follows */
}

const char *pgsop_captured_gid(void)
{
    if (have_gid && gid_too_long) /* PostgreSQL refuses it, after PRE_PREPARE */
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("transaction identifier \"%s...\" is too long", captured_gid)));
    return have_gid ? captured_gid : NULL;
}

void pgsop_forget_gid(void)
{
    have_gid = false;
}

/* ---- SQL: pg_sop_resolve(), pg_sop_in_doubt ------------------------------- */

typedef struct SrfOut {
    Tuplestorestate *ts;
    TupleDesc desc;
    bool full; /* the view's columns */
} SrfOut;

static void report_row(void *ctx, ForeignServer *srv, const InDoubt *d, const OwnerTag *o,
                       XidStatus st, Verdict v, const char *outcome)
{
    SrfOut *out = ctx;
    Datum values[8];
    bool nulls[8];
    memset(nulls, 0, sizeof(nulls));
    pg_uuid_t *u = palloc(sizeof(pg_uuid_t));
    memcpy(u->data, d->txid, SOP_ID_LEN);
    bool ours = v != V_NOT_OURS;
    int i = 0;
    values[i++] = CStringGetTextDatum(srv->servername);
    values[i++] = UUIDPGetDatum(u);
    if (ours)
        values[i++] = FullTransactionIdGetDatum(o->fxid);
    else
        nulls[i++] = true;
    if (ours && o->gid[0])
        values[i++] = CStringGetTextDatum(o->gid);
    else
        nulls[i++] = true;
    if (out->full) {
        values[i++] = CStringGetTextDatum(d->owner);
        values[i++] = TimestampTzGetDatum(time_t_to_timestamptz(d->prepared_ms / 1000) +
                                          (d->prepared_ms % 1000) * 1000);
        if (xs_name(st))
            values[i++] = CStringGetTextDatum(xs_name(st));
        else
            nulls[i++] = true;
        values[i++] = CStringGetTextDatum(verdict_name(v));
    } else {
        values[i++] = CStringGetTextDatum(outcome ? outcome : verdict_name(v));
    }
    tuplestore_putvalues(out->ts, out->desc, values, nulls);
}

static void run_srf(FunctionCallInfo fcinfo, bool act)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *)fcinfo->resultinfo;
    InitMaterializedSRF(fcinfo, 0);
    SrfOut out = {rsinfo->setResult, rsinfo->setDesc, !act};
    List *servers = sop_servers();
    ListCell *lc;
    foreach (lc, servers)
        resolve_server(lfirst_oid(lc), NULL, act, act, report_row, &out);
}

PG_FUNCTION_INFO_V1(pg_sop_resolve);

Datum pg_sop_resolve(PG_FUNCTION_ARGS)
{
    if (RecoveryInProgress())
        ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
                        errmsg("pg_sop_resolve() cannot run during recovery")));
    run_srf(fcinfo, true);
    return (Datum)0;
}

PG_FUNCTION_INFO_V1(pg_sop_in_doubt_list);

Datum pg_sop_in_doubt_list(PG_FUNCTION_ARGS)
{
    run_srf(fcinfo, false);
    return (Datum)0;
}

/* ---- background workers --------------------------------------------------- */

PGDLLEXPORT void pgsop_resolver_main(Datum arg);
PGDLLEXPORT void pgsop_launcher_main(Datum arg);

/* A failing server is logged and does not stop the pass. */
static void resolve_in_own_xact(Oid serverid)
{
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    PG_TRY();
    {
        resolve_server(serverid, NULL, true, true, NULL, NULL);
        PopActiveSnapshot();
        CommitTransactionCommand();
    }
    PG_CATCH();
    {
        EmitErrorReport();
        FlushErrorState();
        AbortCurrentTransaction();
    }
    PG_END_TRY();
}

/* One pass over one database: every server in its own transaction. */
void pgsop_resolver_main(Datum arg)
{
    Oid dboid = DatumGetObjectId(arg);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
    pgstat_report_appname("pg_sop resolver");
    pgsop_resolver_process = true;

    StartTransactionCommand();
    List *servers = NIL;
    if (OidIsValid(get_extension_oid("pg_sop", true))) {
        MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
        servers = list_copy(sop_servers());
        MemoryContextSwitchTo(old);
    }
    CommitTransactionCommand();

    ListCell *lc;
    foreach (lc, servers)
        resolve_in_own_xact(lfirst_oid(lc));
    proc_exit(0);
}

static List *connectable_databases(void)
{
    List *out = NIL;
    StartTransactionCommand();
    Relation rel = table_open(DatabaseRelationId, AccessShareLock);
    SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
    HeapTuple tup;
    while (HeapTupleIsValid(tup = systable_getnext(scan))) {
        Form_pg_database d = (Form_pg_database)GETSTRUCT(tup);
        if (d->datallowconn && !d->datistemplate) {
            MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
            out = lappend_oid(out, d->oid);
            MemoryContextSwitchTo(old);
        }
    }
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    CommitTransactionCommand();
    return out;
}

/* Every pg_resolver_naptime seconds, one pass per database, one at a
 * time (short-lived workers: nothing stays connected to a database that
 * CREATE or DROP DATABASE may need alone). */
void pgsop_launcher_main(Datum arg)
{
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnection(NULL, NULL, 0);
    pgstat_report_appname("pg_sop launcher");
    for (;;) {
        List *dbs = resolver_naptime > 0 ? connectable_databases() : NIL;
        ListCell *lc;
        foreach (lc, dbs) {
            BackgroundWorker w;
            memset(&w, 0, sizeof(w));
            w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
            w.bgw_start_time = BgWorkerStart_RecoveryFinished;
            w.bgw_restart_time = BGW_NEVER_RESTART;
            strlcpy(w.bgw_library_name, "pg_sop", BGW_MAXLEN);
            strlcpy(w.bgw_function_name, "pgsop_resolver_main", BGW_MAXLEN);
            snprintf(w.bgw_name, BGW_MAXLEN, "pg_sop resolver for database %u", lfirst_oid(lc));
            strlcpy(w.bgw_type, "pg_sop resolver", BGW_MAXLEN);
            w.bgw_main_arg = ObjectIdGetDatum(lfirst_oid(lc));
            w.bgw_notify_pid = MyProcPid;
            BackgroundWorkerHandle *h;
            if (!RegisterDynamicBackgroundWorker(&w, &h))
                break; /* no slot now: the next round */
            if (WaitForBackgroundWorkerShutdown(h) == BGWH_POSTMASTER_DIED)
                proc_exit(1);
            pfree(h);
            CHECK_FOR_INTERRUPTS();
        }
        list_free(dbs);
        /* 0: no passes until the setting changes (pg_sop_resolve() only) */
        do {
            (void)WaitLatch(MyLatch,
                            WL_LATCH_SET | WL_EXIT_ON_PM_DEATH |
                                (resolver_naptime > 0 ? WL_TIMEOUT : 0),
                            resolver_naptime * 1000L, PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
            CHECK_FOR_INTERRUPTS();
            if (ConfigReloadPending) {
                ConfigReloadPending = false;
                ProcessConfigFile(PGC_SIGHUP);
            }
        } while (resolver_naptime == 0);
    }
}

/* ---- set-up ------------------------------------------------------------ */

void pgsop_twophase_init(void)
{
    DefineCustomStringVariable("pg_sop.debug_pause_at",
                               "Test hook: a pg_sop or engine step at which to pause forever.",
                               "For crash tests only (tests/pg/tap).", &pgsop_pause_at, "",
                               PGC_SUSET, GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
    DefineCustomBoolVariable("pg_sop.debug_xid_status_unknown",
                             "Test hook: the resolver decides from the decision table only.",
                             "For crash tests only (tests/pg/tap).", &debug_xid_unknown, false,
                             PGC_SUSET, GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
    DefineCustomIntVariable(
        "pg_sop.resolver_naptime", "Seconds between the resolver's passes over the databases.",
        "0 turns the passes off (pg_sop_resolve() still works).", &resolver_naptime, 10, 0, 3600,
        PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
    MarkGUCPrefixReserved("pg_sop");
    sop_set_point_observer(engine_point);
    prev_utility = ProcessUtility_hook;
    ProcessUtility_hook = utility_hook;
    pgsop_preloaded = process_shared_preload_libraries_in_progress;
    if (pgsop_preloaded) {
        BackgroundWorker w;
        memset(&w, 0, sizeof(w));
        w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
        w.bgw_start_time = BgWorkerStart_RecoveryFinished;
        w.bgw_restart_time = 10;
        strlcpy(w.bgw_library_name, "pg_sop", BGW_MAXLEN);
        strlcpy(w.bgw_function_name, "pgsop_launcher_main", BGW_MAXLEN);
        strlcpy(w.bgw_name, "pg_sop resolver launcher", BGW_MAXLEN);
        strlcpy(w.bgw_type, "pg_sop launcher", BGW_MAXLEN);
        RegisterBackgroundWorker(&w);
    }
}
