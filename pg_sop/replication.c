/*
 * replication.c - the SQL functions over the engine's active/passive
 * replication of a server's database (docs/pg_sop.md, "Replication"):
 * pg_sop_replication(server) reports the state, pg_sop_failover(server)
 * and pg_sop_reinstate(server) change it. The passive_path option itself is
 * handled with the other server options (pg_sop.c).
 */
#include "pg_sop.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

/* The pg_sop server named by the text argument, with its database open in
 * this backend. ERRORs when there is no such server, it is not a pg_sop
 * server or its database folder does not exist yet. */
static PgSopConn *server_conn(text *name, bool check_usage)
{
    char *srvname = text_to_cstring(name);
    ForeignServer *srv = GetForeignServerByName(srvname, false);
    ForeignDataWrapper *fdw = GetForeignDataWrapper(srv->fdwid);
    if (strcmp(fdw->fdwname, "pg_sop") != 0)
        ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                        errmsg("server \"%s\" is not a pg_sop server", srvname)));
    if (check_usage) {
        AclResult acl = pg_foreign_server_aclcheck(srv->serverid, GetUserId(), ACL_USAGE);
        if (acl != ACLCHECK_OK)
            aclcheck_error(acl, OBJECT_FOREIGN_SERVER, srvname);
    }
    PgSopConn *c = pgsop_conn_db(srv->serverid, false);
    if (c == NULL)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("the SOP database of server \"%s\" does not exist yet", srvname),
                        errhint("The first use of one of its foreign tables creates it.")));
    return c;
}

/* The blessed row type a composite-returning function was declared with. */
static TupleDesc result_desc(FunctionCallInfo fcinfo, const char *fn)
{
    TupleDesc desc;
    if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
        ereport(ERROR,
                (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("%s must return a record", fn)));
    return BlessTupleDesc(desc);
}

static sop_replication_info replication_info(PgSopConn *c)
{
    sop_replication_info ri;
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc = sop_db_replication(c->db, &ri, &err);
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not read the replication state of \"%s\"", c->path);
    return ri;
}

PG_FUNCTION_INFO_V1(pg_sop_replication);

/* (enabled, active, active_path, path_stale, passive_path, passive_stale,
 * generation, changed, reason); all but enabled NULL when the database is
 * not replicated. */
Datum pg_sop_replication(PG_FUNCTION_ARGS)
{
    TupleDesc desc = result_desc(fcinfo, "pg_sop_replication");
    PgSopConn *c = server_conn(PG_GETARG_TEXT_PP(0), true);
    sop_replication_info ri = replication_info(c);
    Datum values[9];
    bool nulls[9];
    memset(values, 0, sizeof(values));
    memset(nulls, 0, sizeof(nulls));
    values[0] = BoolGetDatum(ri.enabled);
    if (!ri.enabled) {
        for (int i = 1; i < 9; i++)
            nulls[i] = true;
    } else {
        int a = ri.active == 1 ? 1 : 0;
        values[1] = CStringGetTextDatum(a ? "passive_path" : "path");
        values[2] = CStringGetTextDatum(ri.paths[a] ? ri.paths[a] : "");
        values[3] = BoolGetDatum(ri.stale[0]);
        values[4] = CStringGetTextDatum(ri.paths[1] ? ri.paths[1] : "");
        values[5] = BoolGetDatum(ri.stale[1]);
        values[6] = Int64GetDatum((int64)ri.generation);
        if (ri.changed_ms > 0)
            values[7] = TimestampTzGetDatum(time_t_to_timestamptz(ri.changed_ms / 1000) +
                                            (ri.changed_ms % 1000) * 1000);
        else
            nulls[7] = true;
        values[8] = CStringGetTextDatum(ri.reason);
    }
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

PG_FUNCTION_INFO_V1(pg_sop_failover);

/* Makes the other side active (the engine refuses a stale one). */
Datum pg_sop_failover(PG_FUNCTION_ARGS)
{
    PgSopConn *c = server_conn(PG_GETARG_TEXT_PP(0), false);
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc = sop_db_failover(c->db, &err);
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not fail over the SOP database \"%s\"", c->path);
    PG_RETURN_VOID();
}

typedef struct Copied {
    uint64 bytes, files;
} Copied;

static void reinstate_progress(void *ctx, uint64_t bytes, uint64_t files)
{
    Copied *c = ctx;
    c->bytes = bytes;
    c->files = files;
}

PG_FUNCTION_INFO_V1(pg_sop_reinstate);

/* Copies the active side over a stale one and marks it live: (bytes,
 * files) copied, 0 and 0 when no side was stale. */
Datum pg_sop_reinstate(PG_FUNCTION_ARGS)
{
    TupleDesc desc = result_desc(fcinfo, "pg_sop_reinstate");
    PgSopConn *c = server_conn(PG_GETARG_TEXT_PP(0), false);
    Copied copied = {0, 0};
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc = sop_db_reinstate(c->db, reinstate_progress, &copied, &err);
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not reinstate the stale side of the SOP database \"%s\"",
                    c->path);
    Datum values[2] = {Int64GetDatum((int64)copied.bytes), Int64GetDatum((int64)copied.files)};
    bool nulls[2] = {false, false};
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
