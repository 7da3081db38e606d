/*
 * pg_sop.c - option validation, per-backend database handles, the engine
 * transaction of each PostgreSQL transaction, and engine errors as
 * SQLSTATEs (pg_sop.h, docs/pg_sop.md).
 */
#include "pg_sop.h"

#include <dirent.h>
#include <sys/stat.h>

#include "access/genam.h"
#include "access/reloptions.h"
#include "access/table.h"
#include "access/twophase.h"
#include "access/xact.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_foreign_table.h"
#include "catalog/pg_user_mapping.h"
#include "commands/defrem.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

PG_MODULE_MAGIC;

void _PG_init(void);

static HTAB *conns;         /* serverid -> PgSopConn */
static List *subxact_marks; /* writes at each open subtransaction level */

/* ---- errors ------------------------------------------------------------- */

int pgsop_sqlstate(sop_rc rc)
{
    switch (rc) {
    case SOP_CONFLICT:
        return ERRCODE_T_R_SERIALIZATION_FAILURE;
    case SOP_LOCKED:
    case SOP_TIMEOUT:
    case SOP_BUSY:
        return ERRCODE_LOCK_NOT_AVAILABLE;
    case SOP_EXISTS:
        return ERRCODE_UNIQUE_VIOLATION;
    case SOP_NOTFOUND:
        return ERRCODE_UNDEFINED_TABLE;
    case SOP_INVALID:
        return ERRCODE_INVALID_PARAMETER_VALUE;
    case SOP_CORRUPT:
        return ERRCODE_DATA_CORRUPTED;
    case SOP_IO:
        return ERRCODE_IO_ERROR;
    case SOP_NOMEM:
        return ERRCODE_OUT_OF_MEMORY;
    case SOP_UNREACHABLE:
        return ERRCODE_CONNECTION_FAILURE;
    case SOP_LIMIT:
        return ERRCODE_PROGRAM_LIMIT_EXCEEDED;
    case SOP_UNSUPPORTED:
        return ERRCODE_FEATURE_NOT_SUPPORTED;
    case SOP_POISONED:
        return ERRCODE_IN_FAILED_SQL_TRANSACTION;
    default:
        return ERRCODE_INTERNAL_ERROR;
    }
}

void pgsop_error(sop_rc rc, const sop_err *err, const char *what, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, what);
    vsnprintf(msg, sizeof(msg), what, ap);
    va_end(ap);
    ereport(ERROR, (errcode(pgsop_sqlstate(rc)), errmsg("%s: %s", msg, sop_rc_message(rc)),
                    err && err->msg[0] ? errdetail("%s", err->msg) : 0,
                    rc == SOP_CONFLICT ? errhint("Retry the transaction.") : 0));
}

/* ---- options ------------------------------------------------------------ */

typedef struct OptDef {
    const char *name;
    Oid context;
    bool superuser;
} OptDef;

static const OptDef opt_defs[] = {
    {"path", ForeignServerRelationId, true},
    {"passive_path", ForeignServerRelationId, true},
    {"coordination", ForeignServerRelationId, false},
    {"redis_host", ForeignServerRelationId, false},
    {"redis_port", ForeignServerRelationId, false},
    {"lock_ttl_ms", ForeignServerRelationId, false},
    {"ec_data_shards", ForeignServerRelationId, false},
    {"ec_parity_shards", ForeignServerRelationId, false},
    {"ec_paths", ForeignServerRelationId, true},
    {"ec_repair", ForeignServerRelationId, false},
    {"registry_hash_mod", ForeignServerRelationId, false},
    {"redis_password", UserMappingRelationId, false},
    {"redis_user", UserMappingRelationId, false},
    {"store", ForeignTableRelationId, false},
    {"create_if_missing", ForeignTableRelationId, false},
    {"slot_length", ForeignTableRelationId, false},
    {"unique", ForeignTableRelationId, false},
    {"value_placement", ForeignTableRelationId, false},
    {"key", AttributeRelationId, false},
};

static int int_opt(DefElem *d, int lo, int hi)
{
    char *s = defGetString(d);
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("option \"%s\" must be a whole number %d..%d, not \"%s\"",
                               d->defname, lo, hi, s)));
    return (int)v;
}

static bool bool_opt(DefElem *d)
{
    bool v;
    if (!parse_bool(defGetString(d), &v))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("option \"%s\" must be true or false, not \"%s\"", d->defname,
                               defGetString(d))));
    return v;
}

/* value_placement: node, separate, active, or streaming (a streaming
 * store: its values are active; *streaming says which). */
static sop_value_placement placement_opt(DefElem *d, bool *streaming)
{
    char *s = defGetString(d);
    *streaming = false;
    if (strcmp(s, "node") == 0)
        return SOP_VALUES_IN_NODE;
    if (strcmp(s, "separate") == 0)
        return SOP_VALUES_SEPARATE;
    if (strcmp(s, "active") == 0)
        return SOP_VALUES_ACTIVE;
    if (strcmp(s, "streaming") == 0) {
        *streaming = true;
        return SOP_VALUES_ACTIVE;
    }
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("option \"value_placement\" must be node, separate, active or "
                           "streaming, not \"%s\"",
                           s)));
}

/* ec_paths: comma-separated absolute folders (spaces around a comma are
 * ignored, trailing slashes dropped), none twice, at most
 * SOP_EC_SHARDS_MAX. Returns them as a List of char *. */
static List *ec_paths_opt(DefElem *d)
{
    char *s = pstrdup(defGetString(d));
    List *paths = NIL;
    int n = 0;
    for (char *p = s;; n++) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strlen(p);
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            p[--len] = '\0';
        while (len > 1 && p[len - 1] == '/')
            p[--len] = '\0';
        if (len == 0)
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("option \"ec_paths\": folder %d is empty", n + 1),
                            errhint("ec_paths is a comma-separated list of absolute folders, one "
                                    "per shard.")));
        if (p[0] != '/')
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("option \"ec_paths\": folder %d must be an absolute path, not "
                                   "\"%s\"",
                                   n + 1, p)));
        ListCell *lc;
        foreach (lc, paths)
            if (strcmp(lfirst(lc), p) == 0)
                ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                                errmsg("option \"ec_paths\" names \"%s\" twice", p),
                                errdetail("Each shard needs its own folder, on its own drive.")));
        paths = lappend(paths, p);
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if (list_length(paths) > (int)SOP_EC_SHARDS_MAX)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("option \"ec_paths\" names %d folders, more than %u",
                               list_length(paths), SOP_EC_SHARDS_MAX)));
    return paths;
}

/* A server's erasure-coding options together: none of them, or
 * ec_data_shards, ec_parity_shards and ec_paths (one folder per shard),
 * optionally ec_repair. Returns false when there are none; else fills *ec
 * (paths palloc'd in the current memory context). ERRORs on a bad mix. */
static bool ec_options(List *options, sop_ec_config *ec)
{
    DefElem *data = NULL, *parity = NULL, *paths = NULL, *repair = NULL;
    ListCell *lc;
    foreach (lc, options) {
        DefElem *d = lfirst(lc);
        if (strcmp(d->defname, "ec_data_shards") == 0)
            data = d;
        else if (strcmp(d->defname, "ec_parity_shards") == 0)
            parity = d;
        else if (strcmp(d->defname, "ec_paths") == 0)
            paths = d;
        else if (strcmp(d->defname, "ec_repair") == 0)
            repair = d;
    }
    memset(ec, 0, sizeof(*ec));
    if (!data && !parity && !paths) {
        if (repair)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("option \"ec_repair\" needs ec_data_shards, ec_parity_shards and "
                            "ec_paths")));
        return false;
    }
    if (!data || !parity || !paths) {
        StringInfoData missing;
        initStringInfo(&missing);
        if (!data)
            appendStringInfoString(&missing, "ec_data_shards");
        if (!parity)
            appendStringInfo(&missing, "%sec_parity_shards", missing.len ? ", " : "");
        if (!paths)
            appendStringInfo(&missing, "%sec_paths", missing.len ? ", " : "");
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("erasure coding needs ec_data_shards, ec_parity_shards and ec_paths "
                               "together"),
                        errdetail("Missing: %s.", missing.data)));
    }
    int k = int_opt(data, 1, SOP_EC_SHARDS_MAX - 1);
    int p = int_opt(parity, 1, SOP_EC_SHARDS_MAX - 1);
    if (k + p > (int)SOP_EC_SHARDS_MAX)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("ec_data_shards + ec_parity_shards must be at most %u, not %d",
                               SOP_EC_SHARDS_MAX, k + p)));
    List *l = ec_paths_opt(paths);
    if (list_length(l) != k + p)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("option \"ec_paths\" must name %d folders (ec_data_shards + "
                               "ec_parity_shards), not %d",
                               k + p, list_length(l))));
    const char **a = palloc(sizeof(char *) * (k + p));
    int i = 0;
    foreach (lc, l)
        a[i++] = lfirst(lc);
    ec->store = NULL; /* the database's default: every store */
    ec->data_shards = (uint32_t)k;
    ec->parity_shards = (uint32_t)p;
    ec->paths = a;
    ec->repair = repair ? bool_opt(repair) : false;
    return true;
}

/* A folder option without its trailing slashes (palloc'd). */
static char *folder_opt(DefElem *d)
{
    char *p = pstrdup(defGetString(d));
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/')
        p[--len] = '\0';
    return p;
}

/* Whether folder `in` is `outer` or inside it (both without trailing
 * slashes). */
static bool folder_within(const char *in, const char *outer)
{
    size_t n = strlen(outer);
    if (strcmp(outer, "/") == 0)
        return true;
    return strncmp(in, outer, n) == 0 && (in[n] == '\0' || in[n] == '/');
}

/* A server's passive_path (replication, docs/pg_sop.md), without trailing
 * slashes, or NULL when it has none. ERRORs when it is the database folder
 * or either folder is inside the other (every file of the one is copied to
 * the other). The values are checked by check_option. */
static char *passive_option(List *options)
{
    DefElem *path = NULL, *passive = NULL;
    ListCell *lc;
    foreach (lc, options) {
        DefElem *d = lfirst(lc);
        if (strcmp(d->defname, "path") == 0)
            path = d;
        else if (strcmp(d->defname, "passive_path") == 0)
            passive = d;
    }
    if (passive == NULL)
        return NULL;
    char *pp = folder_opt(passive);
    if (path == NULL)
        return pp;
    char *p = folder_opt(path);
    if (strcmp(p, pp) == 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("option \"passive_path\" must be another folder than \"path\", "
                               "not \"%s\"",
                               pp),
                        errdetail("The passive side is a second copy of the database folder, on "
                                  "another drive.")));
    if (folder_within(pp, p) || folder_within(p, pp))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("options \"path\" and \"passive_path\" must not be inside one "
                               "another"),
                        errdetail("\"%s\" is inside \"%s\".", folder_within(pp, p) ? pp : p,
                                  folder_within(pp, p) ? p : pp)));
    return pp;
}

/* Checks every option's value (the validator, and again at use). */
static void check_option(DefElem *d)
{
    const char *n = d->defname;
    if (strcmp(n, "path") == 0 || strcmp(n, "passive_path") == 0) {
        char *p = defGetString(d);
        if (p[0] != '/')
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("option \"%s\" must be an absolute path, not \"%s\"", n, p)));
        for (const char *q = p; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f)
                ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                                errmsg("option \"%s\" must not contain control characters", n)));
    } else if (strcmp(n, "coordination") == 0) {
        char *s = defGetString(d);
        if (strcmp(s, "local") != 0 && strcmp(s, "redis") != 0)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("option \"coordination\" must be local or redis, not \"%s\"", s)));
    } else if (strcmp(n, "redis_port") == 0) {
        int_opt(d, 1, 65535);
    } else if (strcmp(n, "lock_ttl_ms") == 0) {
        int_opt(d, 1000, 3600000);
    } else if (strcmp(n, "ec_data_shards") == 0 || strcmp(n, "ec_parity_shards") == 0) {
        int_opt(d, 1, SOP_EC_SHARDS_MAX - 1);
    } else if (strcmp(n, "ec_paths") == 0) {
        ec_paths_opt(d);
    } else if (strcmp(n, "registry_hash_mod") == 0) {
        int_opt(d, 250, 750000);
    } else if (strcmp(n, "slot_length") == 0) {
        int v = int_opt(d, SOP_SLOT_LENGTH_MIN, SOP_SLOT_LENGTH_MAX);
        if (v % 2 != 0)
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("option \"slot_length\" must be even, not %d", v)));
    } else if (strcmp(n, "create_if_missing") == 0 || strcmp(n, "unique") == 0 ||
               strcmp(n, "key") == 0 || strcmp(n, "ec_repair") == 0) {
        bool_opt(d);
    } else if (strcmp(n, "value_placement") == 0) {
        bool streaming;
        placement_opt(d, &streaming);
    } else if (strcmp(n, "store") == 0) {
        char *s = defGetString(d);
        size_t len = strlen(s);
        bool ok = len >= 1 && len <= 128 && s[0] != '-';
        for (size_t i = 0; ok && i < len; i++)
            ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                 (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-';
        if (!ok)
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("option \"store\": \"%s\" is not a store name", s),
                            errdetail("Store names are 1..128 letters, digits, '_' and '-' (not "
                                      "first).")));
    }
}

PG_FUNCTION_INFO_V1(pg_sop_validator);

Datum pg_sop_validator(PG_FUNCTION_ARGS)
{
    List *options = untransformRelOptions(PG_GETARG_DATUM(0));
    Oid catalog = PG_GETARG_OID(1);
    ListCell *lc;
    bool has_path = false, redis = false, has_redis_host = false;
    foreach (lc, options) {
        DefElem *d = lfirst(lc);
        const OptDef *def = NULL;
        for (size_t i = 0; i < lengthof(opt_defs); i++)
            if (strcmp(opt_defs[i].name, d->defname) == 0 && opt_defs[i].context == catalog)
                def = &opt_defs[i];
        if (def == NULL) {
            StringInfoData valid;
            initStringInfo(&valid);
            for (size_t i = 0; i < lengthof(opt_defs); i++)
                if (opt_defs[i].context == catalog)
                    appendStringInfo(&valid, "%s%s", valid.len ? ", " : "", opt_defs[i].name);
            ereport(ERROR, (errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
                            errmsg("invalid option \"%s\"", d->defname),
                            valid.len ? errhint("Valid options in this context are: %s", valid.data)
                                      : errhint("There are no valid options in this context.")));
        }
        if (def->superuser && !superuser())
            ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                            errmsg("only a superuser can set option \"%s\"", d->defname)));
        check_option(d);
        if (strcmp(d->defname, "path") == 0)
            has_path = true;
        if (strcmp(d->defname, "coordination") == 0)
            redis = strcmp(defGetString(d), "redis") == 0;
        if (strcmp(d->defname, "redis_host") == 0 || strcmp(d->defname, "redis_port") == 0 ||
            strcmp(d->defname, "lock_ttl_ms") == 0)
            has_redis_host = true;
    }
    if (catalog == ForeignServerRelationId) {
        if (!has_path)
            ereport(ERROR, (errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
                            errmsg("a pg_sop server needs the option \"path\" (the SOP "
                                   "database folder)")));
        if (has_redis_host && !redis)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("redis_host, redis_port and lock_ttl_ms need coordination 'redis'")));
        sop_ec_config ec;
        (void)ec_options(options, &ec);
        (void)passive_option(options);
    }
    if (catalog == ForeignTableRelationId) {
        bool streaming = false, unique = true;
        foreach (lc, options) {
            DefElem *d = lfirst(lc);
            if (strcmp(d->defname, "value_placement") == 0)
                placement_opt(d, &streaming);
            else if (strcmp(d->defname, "unique") == 0)
                unique = bool_opt(d);
        }
        if (streaming && !unique)
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("a streaming table is unique: option \"unique\" cannot be "
                                   "false with value_placement 'streaming'")));
    }
    PG_RETURN_VOID();
}

void pgsop_table_options(Oid relid, PgSopTableOpts *o)
{
    ForeignTable *ft = GetForeignTable(relid);
    memset(o, 0, sizeof(*o));
    o->store = NULL;
    o->slot_length = 500;
    o->unique = true;
    o->placement = SOP_VALUES_IN_NODE;
    ListCell *lc;
    foreach (lc, ft->options) {
        DefElem *d = lfirst(lc);
        check_option(d);
        if (strcmp(d->defname, "store") == 0)
            o->store = defGetString(d);
        else if (strcmp(d->defname, "create_if_missing") == 0)
            o->create_if_missing = bool_opt(d);
        else if (strcmp(d->defname, "slot_length") == 0)
            o->slot_length = int_opt(d, SOP_SLOT_LENGTH_MIN, SOP_SLOT_LENGTH_MAX);
        else if (strcmp(d->defname, "unique") == 0)
            o->unique = bool_opt(d);
        else if (strcmp(d->defname, "value_placement") == 0)
            o->placement = placement_opt(d, &o->streaming);
    }
    if (o->store == NULL) {
        /* the table's name, if it is a valid store name */
        DefElem *d = makeDefElem("store", (Node *)makeString(get_rel_name(relid)), -1);
        check_option(d);
        o->store = defGetString(d);
    }
}

/* ---- connections -------------------------------------------------------- */

static void close_all(int code, Datum arg)
{
    if (conns == NULL)
        return;
    HASH_SEQ_STATUS st;
    PgSopConn *c;
    hash_seq_init(&st, conns);
    while ((c = hash_seq_search(&st)) != NULL) {
        if (c->txn) {
            pgsop_close_handles(c);
            sop_txn_free(c->txn);
            c->txn = NULL;
        }
        if (c->db)
            sop_db_close(c->db);
        c->db = NULL;
    }
}

bool pgsop_resolver_process = false;

/* A user mapping of the server for the resolver, which runs as no
 * particular user: the first one (its Redis credentials). */
static UserMapping *any_user_mapping(Oid serverid)
{
    UserMapping *um = NULL;
    Relation rel = table_open(UserMappingRelationId, AccessShareLock);
    SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
    HeapTuple tup;
    while (um == NULL && HeapTupleIsValid(tup = systable_getnext(scan))) {
        Form_pg_user_mapping m = (Form_pg_user_mapping)GETSTRUCT(tup);
        if (m->umserver == serverid)
            um = GetUserMapping(m->umuser, serverid);
    }
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return um;
}

/* Whether folder `configured` (a server's passive_path, which may not
 * exist) is `recorded` (the engine's resolved path): the same once
 * symbolic links are resolved - of the folder, or of its parent when it is
 * missing. */
static bool same_folder(const char *configured, const char *recorded)
{
    if (recorded == NULL)
        return false;
    if (strcmp(configured, recorded) == 0)
        return true;
    char *real = realpath(configured, NULL);
    if (real != NULL) {
        bool same = strcmp(real, recorded) == 0;
        free(real);
        return same;
    }
    char *parent = pstrdup(configured);
    char *slash = strrchr(parent, '/');
    if (slash == NULL)
        return false;
    *slash = '\0';
    real = realpath(parent[0] ? parent : "/", NULL);
    if (real == NULL)
        return false;
    char *joined = psprintf("%s/%s", strcmp(real, "/") == 0 ? "" : real, slash + 1);
    free(real);
    return strcmp(joined, recorded) == 0;
}

/* Whether a folder holds nothing (or cannot be read). */
static bool folder_empty(const char *path)
{
    DIR *dir = opendir(path);
    struct dirent *e;
    bool empty = true;
    if (dir == NULL)
        return true;
    while (empty && (e = readdir(dir)) != NULL)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(dir);
    return empty;
}

#define LOST_PATH_HINT                                                                             \
    "If the drive of path was replaced after the passive side became the active one, create "      \
    "the empty folder: the database opens from the passive side, and pg_sop_reinstate() fills "    \
    "the folder again. Otherwise restore the folder from a copy of the passive side."
#define PASSIVE_HINT                                                                               \
    "passive_path must be the passive folder the database was created with; a database created "   \
    "without passive_path cannot be opened with it."

/* Opens the server's database; false when the folder does not exist and
 * `create` is not set. */
static bool open_db(PgSopConn *c, bool create)
{
    ForeignServer *srv = GetForeignServer(c->serverid);
    UserMapping *um = NULL;
    sop_db_options o;
    sop_db_options_init(&o);
    const char *path = NULL;
    ListCell *lc;
    static char host[256], user[256], password[256];
    foreach (lc, srv->options) {
        DefElem *d = lfirst(lc);
        check_option(d);
        if (strcmp(d->defname, "path") == 0)
            path = defGetString(d);
        else if (strcmp(d->defname, "coordination") == 0)
            o.coordination =
                strcmp(defGetString(d), "redis") == 0 ? SOP_COORD_REDIS : SOP_COORD_LOCAL;
        else if (strcmp(d->defname, "redis_host") == 0) {
            strlcpy(host, defGetString(d), sizeof(host));
            o.redis.host = host;
        } else if (strcmp(d->defname, "redis_port") == 0)
            o.redis.port = (uint16_t)int_opt(d, 1, 65535);
        else if (strcmp(d->defname, "lock_ttl_ms") == 0)
            o.lock_ttl_ms = (uint32_t)int_opt(d, 1000, 3600000);
        else if (strcmp(d->defname, "registry_hash_mod") == 0)
            o.registry_hash_mod = (uint32_t)int_opt(d, 250, 750000);
    }
    /* replication: sop_db_init sets it up with a new database; on open the
     * engine checks it against the recorded passive path */
    const char *passive = passive_option(srv->options);
    /* erasure coding: the default entry (every store), recorded by
     * sop_db_init; on open it must match the recorded one (its repair flag
     * overrides). Without ec_* options the recorded configuration is used. */
    sop_ec_config ec;
    if (ec_options(srv->options, &ec)) {
        o.ec = &ec;
        o.ec_count = 1;
    }
    if (path == NULL)
        ereport(ERROR, (errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
                        errmsg("server \"%s\" has no option \"path\"", srv->servername)));
    if (pgsop_resolver_process) {
        um = any_user_mapping(c->serverid);
    } else if (SearchSysCacheExists2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(GetUserId()),
                                     ObjectIdGetDatum(c->serverid)) ||
               SearchSysCacheExists2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(InvalidOid),
                                     ObjectIdGetDatum(c->serverid))) {
        um = GetUserMapping(GetUserId(), c->serverid); /* the user's, else PUBLIC */
    }
    if (um) {
        foreach (lc, um->options) {
            DefElem *d = lfirst(lc);
            if (strcmp(d->defname, "redis_password") == 0) {
                strlcpy(password, defGetString(d), sizeof(password));
                o.redis.password = password;
            } else if (strcmp(d->defname, "redis_user") == 0) {
                strlcpy(user, defGetString(d), sizeof(user));
                o.redis.user = user;
            }
        }
    }
    strlcpy(c->path, path, sizeof(c->path));
    sop_err err;
    sop_err_clear(&err);
    struct stat st;
    /* A lost passive drive: the engine refuses a given passive path it
     * cannot resolve, so the database is opened with the recorded one (the
     * engine marks that side stale) and checked against passive_path
     * below. */
    bool passive_missing = passive && stat(passive, &st) != 0 && errno == ENOENT;
    if (stat(path, &st) != 0) {
        if (!create)
            return false;
        /* never a new database over a passive side that may hold this
         * server's data (the drive of path replaced) */
        if (passive && !passive_missing && !folder_empty(passive))
            ereport(ERROR,
                    (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                     errmsg("the SOP database folder \"%s\" of server \"%s\" is missing, but its "
                            "passive_path \"%s\" is not empty",
                            path, srv->servername, passive),
                     errdetail("pg_sop creates a database only when path is missing and "
                               "passive_path is missing or empty."),
                     errhint("%s", LOST_PATH_HINT)));
        /* a new database folder (its parent must exist) */
        o.passive_path = passive;
        sop_rc rc = sop_db_init(path, &o, &err);
        const char *hint = NULL;
        if (o.ec_count)
            hint = "The database folder and each folder of ec_paths are created if their parent "
                   "exists, and must be writable by the server's OS user.";
        else if (passive)
            hint = "The database folder and passive_path are created if their parent exists, and "
                   "must be writable by the server's OS user.";
        if (rc != SOP_IO && rc != SOP_NOTFOUND)
            hint = NULL;
        if (rc != SOP_OK)
            ereport(
                ERROR,
                (errcode(pgsop_sqlstate(rc)),
                 errmsg("could not create the SOP database \"%s\": %s", path, sop_rc_message(rc)),
                 err.msg[0] ? errdetail("%s", err.msg) : 0, hint ? errhint("%s", hint) : 0));
        passive_missing = false; /* made by sop_db_init */
    }
    o.passive_path = passive_missing ? NULL : passive;
    sop_rc rc = sop_db_open(path, &o, &c->db, &err);
    if (rc != SOP_OK) {
        const char *hint = NULL;
        if (o.ec_count && rc == SOP_INVALID)
            hint = "ec_data_shards, ec_parity_shards and ec_paths must be the ones the database "
                   "was created with, the folders in the same order; without them the recorded "
                   "ones are used.";
        else if (passive)
            hint = rc == SOP_NOTFOUND ? LOST_PATH_HINT : PASSIVE_HINT;
        c->db = NULL;
        ereport(ERROR, (errcode(pgsop_sqlstate(rc)),
                        errmsg("could not open the SOP database \"%s\" of server \"%s\": %s", path,
                               srv->servername, sop_rc_message(rc)),
                        err.msg[0] ? errdetail("%s", err.msg) : 0, hint ? errhint("%s", hint) : 0));
    }
    /* The engine checks a given passive path only when it first opens the
     * folder in this process (a second handle shares the first one's
     * replication state), and not at all when it was missing: checked here
     * against the recorded one. */
    if (passive) {
        sop_replication_info ri;
        sop_err_clear(&err);
        rc = sop_db_replication(c->db, &ri, &err);
        if (rc == SOP_OK && !(ri.enabled && same_folder(passive, ri.paths[1]))) {
            char *detail = ri.enabled ? psprintf("%s is replicated to %s, not to %s", path,
                                                 ri.paths[1], passive)
                                      : psprintf("%s is not replicated", path);
            rc = SOP_INVALID;
            sop_db_close(c->db);
            c->db = NULL;
            ereport(ERROR, (errcode(pgsop_sqlstate(rc)),
                            errmsg("could not open the SOP database \"%s\" of server \"%s\": %s",
                                   path, srv->servername, sop_rc_message(rc)),
                            errdetail("%s%s.", detail,
                                      passive_missing ? " (passive_path does not exist)" : ""),
                            errhint(PASSIVE_HINT)));
        }
    }
    return true;
}

PgSopConn *pgsop_conn_db(Oid serverid, bool create)
{
    if (conns == NULL) {
        HASHCTL ctl;
        memset(&ctl, 0, sizeof(ctl));
        ctl.keysize = sizeof(Oid);
        ctl.entrysize = sizeof(PgSopConn);
        conns = hash_create("pg_sop connections", 8, &ctl, HASH_ELEM | HASH_BLOBS);
        on_proc_exit(close_all, 0);
    }
    bool found;
    PgSopConn *c = hash_search(conns, &serverid, HASH_ENTER, &found);
    if (!found) {
        memset((char *)c + sizeof(Oid), 0, sizeof(*c) - sizeof(Oid));
    }
    if (c->db == NULL && !open_db(c, create))
        return NULL;
    return c;
}

PgSopConn *pgsop_conn(Oid serverid)
{
    PgSopConn *c = pgsop_conn_db(serverid, true);
    if (c->poisoned)
        ereport(ERROR, (errcode(ERRCODE_IN_FAILED_SQL_TRANSACTION),
                        errmsg("a savepoint rollback undid changes to pg_sop tables: the "
                               "transaction can only be rolled back")));
    if (c->txn == NULL) {
        sop_err err;
        sop_err_clear(&err);
        sop_rc rc = sop_txn_begin(c->db, SOP_TXN_WRITE, 3600000, &c->txn, &err);
        if (rc != SOP_OK) {
            c->txn = NULL;
            pgsop_error(rc, &err, "could not begin a SOP transaction");
        }
        c->writes = 0;
    }
    return c;
}

void pgsop_note_write(PgSopConn *c)
{
    if (c->writes == 0 && conns) {
        /* one SOP database written per transaction: their commits are not
         * atomic together (two-phase across databases is not done) */
        HASH_SEQ_STATUS st;
        PgSopConn *o;
        hash_seq_init(&st, conns);
        while ((o = hash_seq_search(&st)) != NULL) {
            if (o != c && o->txn && o->writes > 0) {
                hash_seq_term(&st);
                ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                                errmsg("a transaction can change tables of one pg_sop server "
                                       "only"),
                                errdetail("It already changed tables of the server whose "
                                          "database is \"%s\".",
                                          o->path)));
            }
        }
    }
    c->writes++;
}

sop_cursor *pgsop_cursor_open(PgSopConn *c, sop_btree *bt)
{
    sop_cursor *cur;
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc = sop_cursor_open(bt, &cur, &err);
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not open a cursor");
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    c->cursors = lappend(c->cursors, cur);
    c->cursor_trees = lappend(c->cursor_trees, bt);
    MemoryContextSwitchTo(old);
    return cur;
}

void pgsop_cursor_close(PgSopConn *c, sop_cursor *cur)
{
    if (cur == NULL)
        return;
    ListCell *lc;
    foreach (lc, c->cursors) {
        if (lfirst(lc) == cur) {
            int n = foreach_current_index(lc);
            c->cursors = list_delete_nth_cell(c->cursors, n);
            c->cursor_trees = list_delete_nth_cell(c->cursor_trees, n);
            break;
        }
    }
    sop_cursor_close(cur);
}

bool pgsop_tree_in_use(PgSopConn *c, sop_btree *bt)
{
    return list_member_ptr(c->cursor_trees, bt);
}

sop_stream *pgsop_stream_open(PgSopConn *c, const char *store)
{
    sop_stream *s;
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc = sop_stream_open(c->txn, store, &s, &err);
    if (rc == SOP_INVALID)
        ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                        errmsg("store \"%s\" is not a streaming store", store),
                        err.msg[0] ? errdetail("%s", err.msg) : 0));
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not open streaming store \"%s\"", store);
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    c->streams = lappend(c->streams, s);
    MemoryContextSwitchTo(old);
    return s;
}

void pgsop_stream_close(PgSopConn *c, sop_stream *s)
{
    if (s == NULL)
        return;
    c->streams = list_delete_ptr(c->streams, s);
    sop_stream_close(s);
}

/* ---- transactions ------------------------------------------------------- */

void pgsop_close_handles(PgSopConn *c)
{
    ListCell *lc;
    /* a stream still open here was left by an ERROR: one with an open
     * writer poisons the engine transaction, which then only rolls back */
    foreach (lc, c->streams)
        sop_stream_close(lfirst(lc));
    list_free(c->streams);
    c->streams = NIL;
    foreach (lc, c->cursors)
        sop_cursor_close(lfirst(lc));
    list_free(c->cursors);
    c->cursors = NIL;
    list_free(c->cursor_trees);
    c->cursor_trees = NIL;
}

/* Frees the engine transaction handle (a prepared one stays prepared:
 * freeing it decides nothing) and the per-transaction state. */
static void forget_txn(PgSopConn *c)
{
    pgsop_close_handles(c);
    sop_txn_free(c->txn);
    c->txn = NULL;
    c->eprepared = false;
    c->writes = 0;
    c->poisoned = false;
}

/* After PostgreSQL decided (COMMIT, ABORT): never raises (an ERROR here
 * is a PANIC); what fails is left to the resolver. */
static void end_txn(PgSopConn *c, bool commit)
{
    pgsop_close_handles(c);
    if (c->txn == NULL)
        return;
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc;
    if (c->eprepared) {
        if (commit)
            pgsop_pause_point("commit.before_engine_commit");
        rc =
            commit ? sop_db_commit_prepared(c->db, c->etxid, &err) : sop_txn_rollback(c->txn, &err);
        if (rc != SOP_OK && rc != SOP_NOTFOUND) /* NOTFOUND: the resolver did it */
            ereport(WARNING,
                    (errmsg("pg_sop: the SOP transaction is prepared but not yet %s: %s",
                            commit ? "committed" : "rolled back", sop_rc_message(rc)),
                     errdetail("%s", err.msg),
                     errhint("The pg_sop resolver finishes it (pg_sop_in_doubt lists it).")));
    } else if (commit) {
        rc = sop_txn_phase2(c->txn, &err);
        if (rc != SOP_OK)
            ereport(WARNING, (errmsg("pg_sop: the SOP commit is durable but not yet applied: %s",
                                     sop_rc_message(rc)),
                              errdetail("%s", err.msg),
                              errhint("Recovery finishes it when the database is next opened.")));
    } else {
        sop_txn_rollback(c->txn, &err);
    }
    forget_txn(c);
}

/* The connections with an engine transaction, in a list (so a phase that
 * raises leaves no hash scan open). */
static List *active_conns(void)
{
    List *l = NIL;
    HASH_SEQ_STATUS st;
    PgSopConn *c;
    if (conns == NULL)
        return NIL;
    hash_seq_init(&st, conns);
    while ((c = hash_seq_search(&st)) != NULL)
        if (c->txn)
            l = lappend(l, c);
    return l;
}

static void check_poisoned(PgSopConn *c)
{
    if (c->poisoned)
        ereport(ERROR, (errcode(ERRCODE_IN_FAILED_SQL_TRANSACTION),
                        errmsg("a savepoint rollback undid changes to pg_sop tables: "
                               "the transaction was rolled back")));
}

/* A transaction that read but did not write: validated and ended now. */
static void commit_reader(PgSopConn *c)
{
    pgsop_close_handles(c);
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc = sop_txn_commit(c->txn, &err);
    sop_txn_free(c->txn);
    c->txn = NULL;
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not commit the SOP transaction");
}

static void pre_prepare(PgSopConn *c)
{
    check_poisoned(c);
    if (c->writes == 0) {
        commit_reader(c);
        return;
    }
    if (!pgsop_preloaded)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("PREPARE TRANSACTION of a transaction that changed pg_sop tables "
                               "needs pg_sop in shared_preload_libraries"),
                        errhint("Add pg_sop to shared_preload_libraries in postgresql.conf and "
                                "restart the server: its resolver finishes prepared "
                                "transactions after a crash.")));
    if (max_prepared_xacts == 0)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("prepared transactions are disabled"),
                        errhint("Set max_prepared_transactions to a nonzero value.")));
    if (MyXactFlags & XACT_FLAGS_ACCESSEDTEMPNAMESPACE)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("cannot PREPARE a transaction that has operated on temporary "
                               "objects")));
    const char *gid = pgsop_captured_gid();
    if (gid == NULL)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("pg_sop could not learn the GID of this PREPARE TRANSACTION"),
                        errdetail("pg_sop reads it from the PREPARE TRANSACTION statement.")));
    pgsop_prepare_engine(c, gid);
}

static void xact_callback(XactEvent event, void *arg)
{
    if (conns == NULL)
        return;
    HASH_SEQ_STATUS st;
    PgSopConn *c;
    ListCell *lc;
    List *active;
    switch (event) {
    case XACT_EVENT_PRE_COMMIT:
    case XACT_EVENT_PARALLEL_PRE_COMMIT:
        /* a changing transaction is prepared in the engine, and commits
         * there after PostgreSQL's commit record (docs/two_phase_commit.md) */
        active = active_conns();
        foreach (lc, active) {
            c = lfirst(lc);
            check_poisoned(c);
            if (c->writes > 0)
                pgsop_prepare_engine(c, NULL);
            else
                commit_reader(c);
        }
        list_free(active);
        break;
    case XACT_EVENT_PRE_PREPARE:
        active = active_conns();
        foreach (lc, active)
            pre_prepare(lfirst(lc));
        list_free(active);
        break;
    case XACT_EVENT_PREPARE:
        /* the engine transaction now belongs to the prepared transaction:
         * detached, never rolled back by this backend */
        hash_seq_init(&st, conns);
        while ((c = hash_seq_search(&st)) != NULL)
            forget_txn(c);
        list_free(subxact_marks);
        subxact_marks = NIL;
        pgsop_forget_stashes();
        pgsop_forget_gid();
        break;
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT:
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
        hash_seq_init(&st, conns);
        while ((c = hash_seq_search(&st)) != NULL)
            end_txn(c, event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT);
        list_free(subxact_marks);
        subxact_marks = NIL;
        pgsop_forget_stashes();
        pgsop_forget_gid();
        break;
    default:
        break;
    }
}

/* Total engine changes so far in this transaction, over every server. */
static uint64 total_writes(void)
{
    uint64 n = 0;
    HASH_SEQ_STATUS st;
    PgSopConn *c;
    if (conns == NULL)
        return 0;
    hash_seq_init(&st, conns);
    while ((c = hash_seq_search(&st)) != NULL)
        if (c->txn)
            n += c->writes;
    return n;
}

static void subxact_callback(SubXactEvent event, SubTransactionId mine, SubTransactionId parent,
                             void *arg)
{
    MemoryContext old;
    switch (event) {
    case SUBXACT_EVENT_START_SUB:
        old = MemoryContextSwitchTo(TopMemoryContext);
        subxact_marks = lcons(palloc(sizeof(uint64)), subxact_marks);
        *(uint64 *)linitial(subxact_marks) = total_writes();
        MemoryContextSwitchTo(old);
        break;
    case SUBXACT_EVENT_COMMIT_SUB:
    case SUBXACT_EVENT_ABORT_SUB:
        if (subxact_marks == NIL)
            break;
        if (event == SUBXACT_EVENT_ABORT_SUB &&
            *(uint64 *)linitial(subxact_marks) != total_writes() && conns) {
            /* the engine has no savepoints: what the subtransaction wrote
             * cannot be undone alone, so the whole transaction must go */
            HASH_SEQ_STATUS st;
            PgSopConn *c;
            hash_seq_init(&st, conns);
            while ((c = hash_seq_search(&st)) != NULL)
                if (c->txn && c->writes)
                    c->poisoned = true;
        }
        pfree(linitial(subxact_marks));
        subxact_marks = list_delete_first(subxact_marks);
        break;
    default:
        break;
    }
}

void _PG_init(void)
{
    pgsop_twophase_init();
    RegisterXactCallback(xact_callback, NULL);
    RegisterSubXactCallback(subxact_callback, NULL);
}
