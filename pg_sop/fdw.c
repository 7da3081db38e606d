/*
 * fdw.c - the foreign-data wrapper callbacks: planning (sizes, key-range
 * pushdown, ordered and parameterized paths), scans, INSERT / UPDATE /
 * DELETE / COPY, TRUNCATE, ANALYZE and IMPORT FOREIGN SCHEMA
 * (docs/pg_sop.md).
 *
 * A scan walks the store's B-tree with a cursor between two bounds built
 * from the pushed key conditions: equalities on leading key columns, then
 * a range (or a LIKE prefix, or = ANY) on the next one. Bounds compare the
 * first N fields of an encoded key (sop_tuple_prefix_length). Every qual
 * is also checked locally, so pushdown only ever narrows the walk.
 *
 * Scans of a table the same statement changes read everything first
 * (materialize), because the engine's cursors see the transaction's own
 * changes and PostgreSQL's statements must not. The target scan of an
 * UPDATE or DELETE remembers each row's key and item ID under a row
 * number it returns as ctid; the modify callbacks find the item by it.
 */
#include "pg_sop.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_opfamily.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "commands/explain.h"
#include "commands/vacuum.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/appendinfo.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/planmain.h"
#include "optimizer/restrictinfo.h"
#include "parser/parsetree.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/sampling.h"
#include "utils/typcache.h"

/* key condition operators (fdw_private) */
enum { KOP_EQ = 1, KOP_LT, KOP_LE, KOP_GT, KOP_GE, KOP_ANY, KOP_LIKE };

#define ROW_COST  0.02 /* per item read and decoded */
#define SEEK_COST 0.05 /* per cursor positioning */

/* ---- planning ----------------------------------------------------------- */

typedef struct PlanInfo {
    Oid relid;
    int nkeys;
    AttrNumber keyatt[32];
    Oid keytype[32];
    Oid keycoll[32];
    double count;
    bool unique;
} PlanInfo;

static void plan_info(Oid relid, PlanInfo *pi)
{
    memset(pi, 0, sizeof(*pi));
    pi->relid = relid;
    Relation rel = table_open(relid, AccessShareLock);
    PgSopShape s;
    pgsop_shape_init(&s, rel);
    if (s.nkeys > 32)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("a pg_sop table has at most 32 key columns")));
    pi->nkeys = s.nkeys;
    pi->unique = s.opts.unique;
    for (int k = 0; k < s.nkeys; k++) {
        Form_pg_attribute a = TupleDescAttr(s.desc, s.keyatt[k] - 1);
        pi->keyatt[k] = s.keyatt[k];
        pi->keytype[k] = a->atttypid;
        pi->keycoll[k] = a->attcollation;
    }
    PgSopConn *c = pgsop_conn(s.serverid);
    sop_store_info info;
    sop_err err;
    sop_err_clear(&err);
    pi->count =
        sop_db_store_info(c->db, s.opts.store, &info, &err) == SOP_OK ? (double)info.count : 0;
    table_close(rel, AccessShareLock);
}

static Oid key_opfamily(Oid type)
{
    TypeCacheEntry *tc = lookup_type_cache(type, TYPECACHE_BTREE_OPFAMILY);
    return tc->btree_opf;
}

/* Whether `e` is a Var of the key column k of this rel. */
static int key_var(PlanInfo *pi, RelOptInfo *baserel, Node *e)
{
    if (e && IsA(e, RelabelType))
        e = (Node *)((RelabelType *)e)->arg;
    if (e == NULL || !IsA(e, Var))
        return -1;
    Var *v = (Var *)e;
    if (v->varno != baserel->relid || v->varlevelsup != 0)
        return -1;
    for (int k = 0; k < pi->nkeys; k++)
        if (pi->keyatt[k] == v->varattno)
            return k;
    return -1;
}

static bool value_side_ok(PlannerInfo *root, RelOptInfo *baserel, Node *e, int kind)
{
    return !bms_is_member(baserel->relid, pull_varnos(root, e)) && !contain_volatile_functions(e) &&
           pgsop_tuple_kind(exprType(e)) == kind;
}

/* A pushable key condition: its key column, operator and value side. */
static bool match_clause(PlannerInfo *root, RelOptInfo *baserel, PlanInfo *pi, Expr *clause,
                         int *key, int *op, Expr **value)
{
    if (IsA(clause, OpExpr) && list_length(((OpExpr *)clause)->args) == 2) {
        OpExpr *o = (OpExpr *)clause;
        Node *l = linitial(o->args), *r = lsecond(o->args);
        bool commuted = false;
        int k = key_var(pi, baserel, l);
        if (k < 0) {
            k = key_var(pi, baserel, r);
            Node *t = l;
            l = r;
            r = t;
            commuted = true;
        }
        if (k < 0)
            return false;
        int kind = pgsop_tuple_kind(pi->keytype[k]);
        if (!value_side_ok(root, baserel, r, kind))
            return false;
        if (o->opno == OID_TEXT_LIKE_OP && !commuted && IsA(r, Const) &&
            pgsop_order_matches(pi->keytype[k], o->inputcollid)) {
            *key = k;
            *op = KOP_LIKE;
            *value = (Expr *)r;
            return true;
        }
        int strat = get_op_opfamily_strategy(o->opno, key_opfamily(pi->keytype[k]));
        if (strat == 0)
            return false;
        if (strat != BTEqualStrategyNumber && !pgsop_order_matches(pi->keytype[k], o->inputcollid))
            return false;
        if (strat == BTEqualStrategyNumber && kind == SOP_TUPLE_TEXT &&
            !(OidIsValid(o->inputcollid) && get_collation_isdeterministic(o->inputcollid)))
            return false;
        static const int map[] = {0, KOP_LT, KOP_LE, KOP_EQ, KOP_GE, KOP_GT};
        static const int flip[] = {0, KOP_EQ, KOP_GT, KOP_GE, KOP_LT, KOP_LE};
        *op = map[strat];
        if (commuted)
            *op = flip[*op];
        *key = k;
        *value = (Expr *)r;
        return true;
    }
    if (IsA(clause, ScalarArrayOpExpr)) {
        ScalarArrayOpExpr *sa = (ScalarArrayOpExpr *)clause;
        if (!sa->useOr || pi->nkeys != 1 || list_length(sa->args) != 2)
            return false;
        int k = key_var(pi, baserel, linitial(sa->args));
        Node *r = lsecond(sa->args);
        if (k != 0)
            return false;
        Oid elem = get_element_type(exprType(r));
        if (!OidIsValid(elem) || pgsop_tuple_kind(elem) != pgsop_tuple_kind(pi->keytype[0]) ||
            bms_is_member(baserel->relid, pull_varnos(root, r)) || contain_volatile_functions(r))
            return false;
        if (get_op_opfamily_strategy(sa->opno, key_opfamily(pi->keytype[0])) !=
            BTEqualStrategyNumber)
            return false;
        if (pgsop_tuple_kind(elem) == SOP_TUPLE_TEXT &&
            !(OidIsValid(sa->inputcollid) && get_collation_isdeterministic(sa->inputcollid)))
            return false;
        *key = 0;
        *op = KOP_ANY;
        *value = (Expr *)r;
        return true;
    }
    return false;
}

typedef struct Chosen {
    List *exprs; /* value sides */
    List *ops;   /* key * 16 + op */
    List *clauses;
    int eq;     /* leading key columns with an equality */
    bool range; /* a condition on key column eq */
} Chosen;

/* Picks the conditions that bound the walk: equalities on leading key
 * columns, then a lower and an upper bound (or LIKE, or = ANY). */
static void choose(PlannerInfo *root, RelOptInfo *baserel, PlanInfo *pi, List *rinfos, Chosen *ch)
{
    memset(ch, 0, sizeof(*ch));
    int n = list_length(rinfos), m = 0;
    int *keys = palloc(sizeof(int) * (n + 1)), *ops = palloc(sizeof(int) * (n + 1));
    Expr **vals = palloc(sizeof(Expr *) * (n + 1));
    Expr **cls = palloc(sizeof(Expr *) * (n + 1));
    ListCell *lc;
    foreach (lc, rinfos) {
        RestrictInfo *ri = lfirst(lc);
        if (match_clause(root, baserel, pi, ri->clause, &keys[m], &ops[m], &vals[m])) {
            cls[m] = ri->clause;
            m++;
        }
    }
    for (int k = 0; k < pi->nkeys; k++) {
        int eq = -1, lo = -1, hi = -1, other = -1;
        for (int i = 0; i < m; i++) {
            if (keys[i] != k)
                continue;
            if (ops[i] == KOP_EQ && eq < 0)
                eq = i;
            else if ((ops[i] == KOP_GT || ops[i] == KOP_GE) && lo < 0)
                lo = i;
            else if ((ops[i] == KOP_LT || ops[i] == KOP_LE) && hi < 0)
                hi = i;
            else if ((ops[i] == KOP_ANY || ops[i] == KOP_LIKE) && other < 0)
                other = i;
        }
        int pick[2] = {-1, -1};
        if (eq >= 0) {
            pick[0] = eq;
        } else if (lo >= 0 || hi >= 0) {
            pick[0] = lo;
            pick[1] = hi;
        } else if (other >= 0) {
            pick[0] = other;
        }
        for (int j = 0; j < 2; j++) {
            if (pick[j] < 0)
                continue;
            int i = pick[j];
            ch->exprs = lappend(ch->exprs, vals[i]);
            ch->ops = lappend_int(ch->ops, keys[i] * 16 + ops[i]);
            ch->clauses = lappend(ch->clauses, cls[i]);
        }
        if (eq >= 0) {
            ch->eq++;
            continue;
        }
        break;
    }
}

static void GetForeignRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid relid)
{
    PlanInfo *pi = palloc(sizeof(*pi));
    plan_info(relid, pi);
    baserel->fdw_private = pi;
    baserel->tuples = pi->count;
    Selectivity sel = clauselist_selectivity(root, baserel->baserestrictinfo, 0, JOIN_INNER, NULL);
    baserel->rows = clamp_row_est(pi->count * sel);
}

/* Pathkeys for the key columns in key order, ascending or descending; NIL
 * when the engine's order is not PostgreSQL's for some key column. */
static List *key_pathkeys(PlannerInfo *root, RelOptInfo *baserel, PlanInfo *pi, bool desc)
{
    List *pks = NIL;
    for (int k = 0; k < pi->nkeys; k++) {
        if (!pgsop_order_matches(pi->keytype[k], pi->keycoll[k]))
            return NIL;
        TypeCacheEntry *tc = lookup_type_cache(pi->keytype[k], TYPECACHE_LT_OPR | TYPECACHE_GT_OPR);
        Oid opno = desc ? tc->gt_opr : tc->lt_opr;
        if (!OidIsValid(opno))
            return NIL;
        Var *v = makeVar(baserel->relid, pi->keyatt[k], pi->keytype[k], -1, pi->keycoll[k], 0);
        List *pk = build_expression_pathkey(root, (Expr *)v, NULL, opno, baserel->relids, true);
        /* a column fixed by an equality to a constant orders nothing */
        if (pk != NIL && ((PathKey *)linitial(pk))->pk_eclass->ec_has_const)
            continue;
        pks = list_concat(pks, pk);
    }
    return pks;
}

static double seek_cost(PlanInfo *pi)
{
    return SEEK_COST + log2(pi->count + 2) * 0.005;
}

static double pushed_rows(PlannerInfo *root, RelOptInfo *baserel, PlanInfo *pi, Chosen *ch)
{
    if (ch->eq == pi->nkeys && pi->unique)
        return 1;
    List *ris = NIL;
    ListCell *lc;
    foreach (lc, ch->clauses)
        ris = lappend(ris, make_simple_restrictinfo(root, lfirst(lc)));
    return clamp_row_est(pi->count *
                         clauselist_selectivity(root, ris, baserel->relid, JOIN_INNER, NULL));
}

typedef struct EcArg {
    PlanInfo *pi;
    RelOptInfo *baserel;
} EcArg;

static bool ec_is_leading_key(PlannerInfo *root, RelOptInfo *rel, EquivalenceClass *ec,
                              EquivalenceMember *em, void *arg)
{
    EcArg *a = arg;
    return key_var(a->pi, a->baserel, (Node *)em->em_expr) == 0;
}

static void GetForeignPaths(PlannerInfo *root, RelOptInfo *baserel, Oid relid)
{
    PlanInfo *pi = baserel->fdw_private;
    Chosen ch;
    choose(root, baserel, pi, baserel->baserestrictinfo, &ch);
    double rows = ch.exprs ? pushed_rows(root, baserel, pi, &ch) : pi->count;
    double startup = ch.exprs ? seek_cost(pi) : SEEK_COST;
    double total = startup + rows * ROW_COST;
    for (int desc = 0; desc < 2; desc++) {
        List *pks = key_pathkeys(root, baserel, pi, desc);
        if (desc && pks == NIL)
            break;
        add_path(baserel,
                 (Path *)create_foreignscan_path(root, baserel, NULL, baserel->rows, startup,
                                                 total + (desc ? 0.001 : 0), pks, NULL, NULL,
                                                 list_make1(makeInteger(desc ? -1 : 1))));
    }
    /* joins: key = outer.col as a seek per outer row */
    EcArg arg = {pi, baserel};
    List *clauses = generate_implied_equalities_for_column(root, baserel, ec_is_leading_key, &arg,
                                                           baserel->lateral_referencers);
    ListCell *lc;
    foreach (lc, baserel->joininfo) {
        RestrictInfo *ri = lfirst(lc);
        int k, op;
        Expr *v;
        if (match_clause(root, baserel, pi, ri->clause, &k, &op, &v) && k == 0 && op == KOP_EQ)
            clauses = lappend(clauses, ri);
    }
    foreach (lc, clauses) {
        RestrictInfo *ri = lfirst(lc);
        int k, op;
        Expr *v;
        if (!match_clause(root, baserel, pi, ri->clause, &k, &op, &v) || k != 0 || op != KOP_EQ)
            continue;
        Relids outer = bms_union(ri->clause_relids, baserel->lateral_relids);
        outer = bms_del_member(outer, baserel->relid);
        if (bms_is_empty(outer))
            continue;
        ParamPathInfo *ppi = get_baserel_parampathinfo(root, baserel, outer);
        double prow = pi->nkeys == 1 && pi->unique ? 1 : ppi->ppi_rows;
        add_path(baserel, (Path *)create_foreignscan_path(root, baserel, NULL, prow, seek_cost(pi),
                                                          seek_cost(pi) + prow * ROW_COST,
                                                          key_pathkeys(root, baserel, pi, false),
                                                          outer, NULL, list_make1(makeInteger(1))));
    }
}

/* Whether this statement also changes the table (so the scan must not
 * see those changes: materialize). */
static bool changed_by_statement(PlannerInfo *root, Oid relid)
{
    Query *q = root->parse;
    if (q->hasModifyingCTE)
        return true;
    for (PlannerInfo *r = root; r; r = r->parent_root) {
        Query *pq = r->parse;
        if (pq->commandType != CMD_SELECT && pq->resultRelation > 0 &&
            rt_fetch(pq->resultRelation, pq->rtable)->relid == relid)
            return true;
    }
    return false;
}

static const char *op_text(int op)
{
    static const char *t[] = {"", "=", "<", "<=", ">", ">=", "= ANY", "LIKE"};
    return t[op];
}

/* Whether the scan needs only the key columns: then a streaming table's
 * scan does not read the chunks (their blobs). */
static bool keys_only(RelOptInfo *baserel, PlanInfo *pi, List *scan_clauses)
{
    Bitmapset *attrs = NULL;
    pull_varattnos((Node *)baserel->reltarget->exprs, baserel->relid, &attrs);
    pull_varattnos((Node *)extract_actual_clauses(scan_clauses, false), baserel->relid, &attrs);
    int x = -1;
    while ((x = bms_next_member(attrs, x)) >= 0) {
        AttrNumber att = x + FirstLowInvalidHeapAttributeNumber;
        if (att == 0)
            return false; /* the whole row */
        if (att < 0)
            continue; /* system columns: none is read from the item */
        bool key = false;
        for (int k = 0; k < pi->nkeys; k++)
            key = key || pi->keyatt[k] == att;
        if (!key)
            return false;
    }
    return true;
}

static ForeignScan *GetForeignPlan(PlannerInfo *root, RelOptInfo *baserel, Oid relid,
                                   ForeignPath *best_path, List *tlist, List *scan_clauses,
                                   Plan *outer_plan)
{
    PlanInfo *pi = baserel->fdw_private;
    Chosen ch;
    choose(root, baserel, pi, scan_clauses, &ch);
    int dir = intVal(linitial(best_path->fdw_private));
    bool target = root->parse->resultRelation == (int)baserel->relid &&
                  root->parse->commandType != CMD_SELECT;
    bool mat = changed_by_statement(root, relid);
    /* the key conditions, for EXPLAIN */
    StringInfoData cond;
    initStringInfo(&cond);
    ListCell *lo, *le;
    forboth(lo, ch.ops, le, ch.exprs)
    {
        int k = lfirst_int(lo) / 16, op = lfirst_int(lo) % 16;
        Expr *e = lfirst(le);
        char *val;
        if (IsA(e, Const) && !((Const *)e)->constisnull) {
            Oid outfn;
            bool vl;
            getTypeOutputInfo(((Const *)e)->consttype, &outfn, &vl);
            val = quote_literal_cstr(OidOutputFunctionCall(outfn, ((Const *)e)->constvalue));
        } else {
            val = pstrdup("$param");
        }
        appendStringInfo(&cond, "%s%s %s %s", cond.len ? " AND " : "",
                         quote_identifier(get_attname(relid, pi->keyatt[k], false)), op_text(op),
                         val);
    }
    List *priv = list_make4(makeInteger(dir), makeInteger(mat || target), makeInteger(target),
                            makeString(cond.data));
    priv = lappend(priv, ch.ops);
    priv = lappend(priv, makeInteger(keys_only(baserel, pi, scan_clauses)));
    return make_foreignscan(tlist, extract_actual_clauses(scan_clauses, false), baserel->relid,
                            ch.exprs, priv, NIL, NIL, outer_plan);
}

/* ---- scans -------------------------------------------------------------- */

/* Row identities of an UPDATE/DELETE target scan, by row number. */
typedef struct Stash {
    Oid relid;
    int n, cap;
    char **keys;
    int *klens;
    uint8 (*ids)[SOP_ID_LEN];
} Stash;

static List *stashes; /* Stash *, of the statements running (query memory) */

typedef struct Bound {
    bool set;
    StringInfoData key;
    int nfields;
    bool incl;
} Bound;

typedef struct Range {
    Bound lo, hi;
    bool empty;
    bool point; /* one key of a unique store: a seek, no walk (mergeable) */
} Range;

typedef struct SopScan {
    PgSopShape shape;
    PgSopConn *conn;
    sop_btree *bt;
    sop_cursor *cur;
    int dir;
    bool mat, target;
    bool keys_only; /* a streaming table's chunks are not read */
    List *ops;
    List *exprstates;
    char *cond;
    /* the walk */
    bool started;  /* the current range's walk has begun */
    bool begun;    /* the ranges are built (and, materialized, read) */
    Range *ranges; /* one per = ANY value, else one */
    int nranges, at;
    /* materialized items */
    int nitems, next;
    char **mkeys, **mvals;
    size_t *mklen, *mvlen;
    uint8 (*mids)[SOP_ID_LEN];
    Stash *stash;
    uint64 read;
    MemoryContext cxt; /* the query's: what outlives a row */
} SopScan;

/* The current item with its value (never NULL: an empty value is "", so
 * a NULL value means "not read" to pgsop_decode). */
static sop_rc item_full(sop_cursor *cur, sop_item *it, sop_err *err)
{
    sop_rc rc = sop_cursor_item(cur, it, err);
    if (rc == SOP_OK && it->value == NULL)
        it->value = "";
    return rc;
}

/* Length of the first n fields of an encoded key (raw: all of it). */
static size_t prefix_len(SopScan *st, const void *key, size_t len, int n)
{
    if (st->shape.raw)
        return len;
    size_t out;
    sop_err err;
    if (sop_tuple_prefix_length(key, len, (uint32_t)n, &out, &err) != SOP_OK)
        pgsop_error(SOP_CORRUPT, &err, "store \"%s\": a malformed key", st->shape.opts.store);
    return out;
}

static int cmp_bound(SopScan *st, const sop_item *it, Bound *b)
{
    size_t pl = prefix_len(st, it->key, it->key_len, b->nfields);
    size_t bl = (size_t)b->key.len;
    int c = memcmp(it->key, b->key.data, Min(pl, bl));
    if (c != 0)
        return c;
    return pl < bl ? -1 : pl > bl ? 1 : 0;
}

static void encode_value(SopScan *st, StringInfo out, Oid type, Datum v)
{
    if (st->shape.raw) {
        bytea *b = DatumGetByteaPP(v);
        appendBinaryStringInfo(out, VARDATA_ANY(b), (int)VARSIZE_ANY_EXHDR(b));
    } else {
        pgsop_encode_field(out, type, v);
    }
}

/* The smallest string greater than every string starting with p (C
 * order): p with its last byte below 0xFF incremented; false if none. */
static bool prefix_successor(char *p, int *len)
{
    while (*len > 0) {
        unsigned char c = (unsigned char)p[*len - 1];
        if (c < 0xFF) {
            p[*len - 1] = (char)(c + 1);
            return true;
        }
        (*len)--;
    }
    return false;
}

static int cmp_strings(const void *a, const void *b)
{
    const StringInfo x = *(const StringInfo *)a, y = *(const StringInfo *)b;
    int c = memcmp(x->data, y->data, Min(x->len, y->len));
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Builds the walk's ranges from the key conditions' current values. */
static void build_ranges(SopScan *st, ExprContext *econtext)
{
    StringInfoData prefix;
    initStringInfo(&prefix);
    int nfields = 0;
    List *any = NIL;
    Range r;
    memset(&r, 0, sizeof(r));
    ListCell *lo, *le;
    forboth(lo, st->ops, le, st->exprstates)
    {
        int op = lfirst_int(lo) % 16;
        ExprState *es = lfirst(le);
        bool isnull;
        Datum v = ExecEvalExpr(es, econtext, &isnull);
        Oid type = exprType((Node *)es->expr);
        if (isnull) {
            r.empty = true; /* nothing equals or orders against NULL */
            break;
        }
        if (op == KOP_EQ) {
            encode_value(st, &prefix, type, v);
            nfields++;
            continue;
        }
        Bound *b = (op == KOP_GT || op == KOP_GE || op == KOP_LIKE) ? &r.lo : &r.hi;
        if (op == KOP_ANY) {
            ArrayType *arr = DatumGetArrayTypeP(v);
            Oid et = ARR_ELEMTYPE(arr);
            int16 elen;
            bool ebyval;
            char ealign;
            get_typlenbyvalalign(et, &elen, &ebyval, &ealign);
            Datum *ev;
            bool *en;
            int n;
            deconstruct_array(arr, et, elen, ebyval, ealign, &ev, &en, &n);
            for (int i = 0; i < n; i++) {
                if (en[i])
                    continue;
                StringInfo s = makeStringInfo();
                appendBinaryStringInfo(s, prefix.data, prefix.len);
                encode_value(st, s, et, ev[i]);
                any = lappend(any, s);
            }
            if (any == NIL)
                r.empty = true;
            continue;
        }
        b->set = true;
        initStringInfo(&b->key);
        appendBinaryStringInfo(&b->key, prefix.data, prefix.len);
        b->nfields = nfields + 1;
        if (op == KOP_LIKE) {
            /* the pattern's fixed prefix: [p, successor(p)) */
            text *pat = DatumGetTextPP(v);
            const char *p = VARDATA_ANY(pat);
            int len = 0, plen = VARSIZE_ANY_EXHDR(pat);
            while (len < plen && p[len] != '%' && p[len] != '_' && p[len] != '\\')
                len++;
            char *fixed = pnstrdup(p, len);
            pgsop_encode_field(&b->key, TEXTOID,
                               PointerGetDatum(cstring_to_text_with_len(fixed, len)));
            b->incl = true;
            if (len == 0) {
                b->set = false; /* no fixed prefix: no bound */
            } else if (prefix_successor(fixed, &len)) {
                r.hi.set = true;
                initStringInfo(&r.hi.key);
                appendBinaryStringInfo(&r.hi.key, prefix.data, prefix.len);
                pgsop_encode_field(&r.hi.key, TEXTOID,
                                   PointerGetDatum(cstring_to_text_with_len(fixed, len)));
                r.hi.nfields = nfields + 1;
                r.hi.incl = false;
            }
            continue;
        }
        encode_value(st, &b->key, type, v);
        b->incl = op == KOP_GE || op == KOP_LE;
    }
    r.point = !r.empty && nfields == st->shape.nkeys && st->shape.opts.unique && st->dir > 0;
    if (!r.empty && nfields > 0) {
        /* equalities bound both ends of what the range does not */
        Bound *ends[2] = {&r.lo, &r.hi};
        for (int i = 0; i < 2; i++) {
            if (ends[i]->set)
                continue;
            ends[i]->set = true;
            initStringInfo(&ends[i]->key);
            appendBinaryStringInfo(&ends[i]->key, prefix.data, prefix.len);
            ends[i]->nfields = nfields;
            ends[i]->incl = true;
        }
    }
    if (any != NIL && !r.empty) {
        int n = list_length(any), m = 0;
        StringInfo *keys = palloc(sizeof(StringInfo) * n);
        ListCell *lc;
        foreach (lc, any)
            keys[m++] = lfirst(lc);
        qsort(keys, n, sizeof(StringInfo), cmp_strings);
        st->ranges = palloc0(sizeof(Range) * n);
        st->nranges = 0;
        for (int i = 0; i < n; i++) {
            if (i > 0 && cmp_strings(&keys[i - 1], &keys[i]) == 0)
                continue;
            Range *x = &st->ranges[st->nranges++];
            x->lo.set = x->hi.set = true;
            x->lo.key = x->hi.key = *keys[i];
            x->lo.nfields = x->hi.nfields = nfields + 1;
            x->lo.incl = x->hi.incl = true;
            x->point = nfields + 1 == st->shape.nkeys && st->shape.opts.unique && st->dir > 0;
        }
        if (st->dir < 0) {
            for (int i = 0; i < st->nranges / 2; i++) {
                Range t = st->ranges[i];
                st->ranges[i] = st->ranges[st->nranges - 1 - i];
                st->ranges[st->nranges - 1 - i] = t;
            }
        }
        return;
    }
    st->ranges = palloc(sizeof(Range));
    st->ranges[0] = r;
    st->nranges = r.empty ? 0 : 1;
}

static void check(sop_rc rc, sop_err *err, SopScan *st)
{
    if (rc != SOP_OK && rc != SOP_NOTFOUND)
        pgsop_error(rc, err, "could not read store \"%s\"", st->shape.opts.store);
}

/* Positions the cursor at the start of range r in the scan's direction. */
static void range_start(SopScan *st, Range *r)
{
    sop_err err;
    sop_err_clear(&err);
    sop_item it;
    if (st->dir > 0) {
        if (r->lo.set) {
            check(sop_cursor_find(st->cur, r->lo.key.data, r->lo.key.len, &err), &err, st);
            while (!r->lo.incl && sop_cursor_on_item(st->cur) &&
                   sop_cursor_item_meta(st->cur, &it, &err) == SOP_OK &&
                   cmp_bound(st, &it, &r->lo) == 0)
                check(sop_cursor_next(st->cur, &err), &err, st);
        } else {
            check(sop_cursor_first(st->cur, &err), &err, st);
        }
    } else {
        if (r->hi.set) {
            StringInfoData seek;
            initStringInfo(&seek);
            appendBinaryStringInfo(&seek, r->hi.key.data, r->hi.key.len);
            if (r->hi.incl && !st->shape.raw)
                appendStringInfoChar(&seek, (char)0xFF); /* after every key with this prefix */
            check(sop_cursor_find_last(st->cur, seek.data, seek.len, &err), &err, st);
            while (sop_cursor_on_item(st->cur) &&
                   sop_cursor_item_meta(st->cur, &it, &err) == SOP_OK) {
                int c = cmp_bound(st, &it, &r->hi);
                if (c < 0 || (c == 0 && r->hi.incl))
                    break;
                check(sop_cursor_prev(st->cur, &err), &err, st);
            }
        } else {
            check(sop_cursor_last(st->cur, &err), &err, st);
        }
    }
}

/* Whether the current item is past the end of range r. */
static bool past_end(SopScan *st, Range *r, const sop_item *it)
{
    Bound *b = st->dir > 0 ? &r->hi : &r->lo;
    if (!b->set)
        return false;
    int c = cmp_bound(st, it, b);
    if (st->dir < 0)
        c = -c;
    return c > 0 || (c == 0 && !b->incl);
}

/* The next item of the walk, or false at its end. */
static bool walk_next(SopScan *st, sop_item *it)
{
    sop_err err;
    sop_err_clear(&err);
    for (;;) {
        if (st->at >= st->nranges)
            return false;
        if (!st->started) {
            range_start(st, &st->ranges[st->at]);
            st->started = true;
        } else if (st->ranges[st->at].point) {
            /* a point read by seek only: the engine can then merge this
             * transaction with others changing other keys of the node */
            st->at++;
            st->started = false;
            continue;
        } else {
            check(st->dir > 0 ? sop_cursor_next(st->cur, &err) : sop_cursor_prev(st->cur, &err),
                  &err, st);
        }
        if (sop_cursor_on_item(st->cur)) {
            /* a keys-only scan of a streaming table reads no chunk (blob);
             * one read per item either way (each is noted for validation) */
            bool meta = st->keys_only && st->shape.stream;
            sop_rc rc =
                meta ? sop_cursor_item_meta(st->cur, it, &err) : item_full(st->cur, it, &err);
            check(rc, &err, st);
            if (rc == SOP_OK && !past_end(st, &st->ranges[st->at], it)) {
                if (meta) {
                    it->value = NULL; /* not read: the chunk decodes as NULL */
                    it->value_len = 0;
                }
                st->read++;
                return true;
            }
        }
        st->at++;
        st->started = false;
    }
}

static char *copy_bytes(const void *p, size_t n)
{
    char *c = palloc(n + 1);
    if (n)
        memcpy(c, p, n);
    return c;
}

static void materialize(SopScan *st)
{
    int cap = 64;
    st->mkeys = palloc(sizeof(char *) * cap);
    st->mvals = palloc(sizeof(char *) * cap);
    st->mklen = palloc(sizeof(size_t) * cap);
    st->mvlen = palloc(sizeof(size_t) * cap);
    st->mids = palloc(SOP_ID_LEN * cap);
    sop_item it;
    while (walk_next(st, &it)) {
        if (st->nitems == cap) {
            cap *= 2;
            st->mkeys = repalloc_huge(st->mkeys, sizeof(char *) * cap);
            st->mvals = repalloc_huge(st->mvals, sizeof(char *) * cap);
            st->mklen = repalloc_huge(st->mklen, sizeof(size_t) * cap);
            st->mvlen = repalloc_huge(st->mvlen, sizeof(size_t) * cap);
            st->mids = repalloc_huge(st->mids, (Size)SOP_ID_LEN * cap);
        }
        int i = st->nitems++;
        st->mkeys[i] = copy_bytes(it.key, it.key_len);
        st->mklen[i] = it.key_len;
        st->mvals[i] = it.value ? copy_bytes(it.value, it.value_len) : NULL;
        st->mvlen[i] = it.value_len;
        memcpy(st->mids[i], it.id, SOP_ID_LEN);
    }
}

static Stash *find_stash(Oid relid)
{
    ListCell *lc;
    foreach (lc, stashes) {
        Stash *s = lfirst(lc);
        if (s->relid == relid)
            return s;
    }
    return NULL;
}

static void BeginForeignScan(ForeignScanState *node, int eflags)
{
    ForeignScan *fs = (ForeignScan *)node->ss.ps.plan;
    SopScan *st = palloc0(sizeof(*st));
    node->fdw_state = st;
    st->dir = intVal(list_nth(fs->fdw_private, 0));
    st->mat = intVal(list_nth(fs->fdw_private, 1));
    st->target = intVal(list_nth(fs->fdw_private, 2));
    st->cond = strVal(list_nth(fs->fdw_private, 3));
    st->ops = list_nth(fs->fdw_private, 4);
    st->keys_only = intVal(list_nth(fs->fdw_private, 5));
    pgsop_shape_init(&st->shape, node->ss.ss_currentRelation);
    if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
        return;
    st->exprstates = ExecInitExprList(fs->fdw_exprs, (PlanState *)node);
    st->conn = pgsop_conn(st->shape.serverid);
    st->bt = pgsop_store(&st->shape, st->conn);
    st->cxt = CurrentMemoryContext;
    if (st->target) {
        st->stash = palloc0(sizeof(Stash));
        st->stash->relid = st->shape.relid;
        MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
        stashes = lappend(stashes, st->stash);
        MemoryContextSwitchTo(old);
    }
}

static void stash_row(Stash *s, const void *key, size_t klen, const uint8 *id, ItemPointer tid)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->keys = s->keys ? repalloc_huge(s->keys, sizeof(char *) * s->cap)
                          : palloc(sizeof(char *) * s->cap);
        s->klens =
            s->klens ? repalloc_huge(s->klens, sizeof(int) * s->cap) : palloc(sizeof(int) * s->cap);
        s->ids = s->ids ? repalloc_huge(s->ids, (Size)SOP_ID_LEN * s->cap)
                        : palloc((Size)SOP_ID_LEN * s->cap);
    }
    int n = s->n++;
    s->keys[n] = copy_bytes(key, klen);
    s->klens[n] = (int)klen;
    memcpy(s->ids[n], id, SOP_ID_LEN);
    ItemPointerSet(tid, (BlockNumber)(n / 65535), (OffsetNumber)(n % 65535 + 1));
}

static TupleTableSlot *IterateForeignScan(ForeignScanState *node)
{
    SopScan *st = node->fdw_state;
    TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
    ExecClearTuple(slot);
    if (!st->begun) {
        st->cur = pgsop_cursor_open(st->conn, st->bt);
        MemoryContext old = MemoryContextSwitchTo(st->cxt);
        build_ranges(st, node->ss.ps.ps_ExprContext);
        MemoryContextSwitchTo(old);
        st->begun = true;
        if (st->mat) {
            MemoryContext old = MemoryContextSwitchTo(st->cxt);
            materialize(st);
            MemoryContextSwitchTo(old);
            pgsop_cursor_close(st->conn, st->cur);
            st->cur = NULL;
        }
    }
    const void *key, *val;
    size_t klen, vlen;
    const uint8 *id;
    sop_item it;
    if (st->mat) {
        if (st->next >= st->nitems)
            return slot;
        int i = st->next++;
        key = st->mkeys[i];
        klen = st->mklen[i];
        val = st->mvals[i];
        vlen = st->mvlen[i];
        id = st->mids[i];
    } else {
        if (st->cur == NULL || !walk_next(st, &it)) {
            /* done: the cursor is not needed until a rescan */
            pgsop_cursor_close(st->conn, st->cur);
            st->cur = NULL;
            return slot;
        }
        key = it.key;
        klen = it.key_len;
        val = it.value;
        vlen = it.value_len;
        id = it.id;
    }
    pgsop_decode(&st->shape, key, klen, val, vlen, slot->tts_values, slot->tts_isnull);
    ExecStoreVirtualTuple(slot);
    if (st->stash) {
        MemoryContext old = MemoryContextSwitchTo(st->cxt);
        stash_row(st->stash, key, klen, id, &slot->tts_tid);
        MemoryContextSwitchTo(old);
    }
    return slot;
}

static void ReScanForeignScan(ForeignScanState *node)
{
    SopScan *st = node->fdw_state;
    if (st->cur)
        pgsop_cursor_close(st->conn, st->cur);
    st->cur = NULL;
    st->started = st->begun = false;
    st->at = 0;
    st->nitems = st->next = 0;
}

static void EndForeignScan(ForeignScanState *node)
{
    SopScan *st = node->fdw_state;
    if (st == NULL)
        return;
    if (st->cur)
        pgsop_cursor_close(st->conn, st->cur);
    st->cur = NULL;
    if (st->stash)
        stashes = list_delete_ptr(stashes, st->stash);
}

static void ExplainForeignScan(ForeignScanState *node, ExplainState *es)
{
    SopScan *st = node->fdw_state;
    ExplainPropertyText("Store", st->shape.opts.store, es);
    if (st->cond[0])
        ExplainPropertyText("Key Cond", st->cond, es);
    ExplainPropertyText("Direction", st->dir > 0 ? "Forward" : "Backward", es);
    if (st->mat)
        ExplainPropertyText("Materialized", "true", es);
    if (es->analyze)
        ExplainPropertyInteger("Items Read", NULL, (int64)st->read, es);
}

/* ---- changes ------------------------------------------------------------ */

typedef struct ModState {
    PgSopShape shape;
    PgSopConn *conn;
    sop_btree *bt;
    sop_cursor *cur;
    AttrNumber ctid;
    Stash *stash;
    StringInfoData key, row;
} ModState;

static void AddForeignUpdateTargets(PlannerInfo *root, Index rtindex, RangeTblEntry *target_rte,
                                    Relation target_relation)
{
    Var *var = makeVar(rtindex, SelfItemPointerAttributeNumber, TIDOID, -1, InvalidOid, 0);
    add_row_identity_var(root, var, rtindex, "ctid");
}

static List *PlanForeignModify(PlannerInfo *root, ModifyTable *plan, Index rti, int subplan)
{
    return NIL;
}

static ModState *mod_begin(ResultRelInfo *rinfo)
{
    ModState *ms = palloc0(sizeof(*ms));
    pgsop_shape_init(&ms->shape, rinfo->ri_RelationDesc);
    ms->conn = pgsop_conn(ms->shape.serverid);
    ms->bt = pgsop_store(&ms->shape, ms->conn);
    ms->cur = pgsop_cursor_open(ms->conn, ms->bt);
    initStringInfo(&ms->key);
    initStringInfo(&ms->row);
    rinfo->ri_FdwState = ms;
    return ms;
}

static void BeginForeignModify(ModifyTableState *mtstate, ResultRelInfo *rinfo, List *fdw_private,
                               int subplan_index, int eflags)
{
    if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
        return;
    ModState *ms = mod_begin(rinfo);
    CmdType op = mtstate->operation;
    if (op == CMD_UPDATE || op == CMD_DELETE) {
        Plan *sub = outerPlanState(mtstate)->plan;
        ms->ctid = ExecFindJunkAttributeInTlist(sub->targetlist, "ctid");
        if (!AttributeNumberIsValid(ms->ctid))
            elog(ERROR, "pg_sop: the row identity column is missing");
        ms->stash = find_stash(ms->shape.relid);
        if (ms->stash == NULL)
            ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                            errmsg("pg_sop cannot find the rows this %s changes",
                                   op == CMD_UPDATE ? "UPDATE" : "DELETE")));
    }
}

static void unique_violation(ModState *ms, Datum *values, bool *isnull)
{
    StringInfoData cols, vals;
    initStringInfo(&cols);
    initStringInfo(&vals);
    for (int k = 0; k < ms->shape.nkeys; k++) {
        int i = ms->shape.keyatt[k] - 1;
        Form_pg_attribute a = TupleDescAttr(ms->shape.desc, i);
        Oid outfn;
        bool vl;
        getTypeOutputInfo(a->atttypid, &outfn, &vl);
        appendStringInfo(&cols, "%s%s", k ? ", " : "", NameStr(a->attname));
        appendStringInfo(&vals, "%s%s", k ? ", " : "", OidOutputFunctionCall(outfn, values[i]));
    }
    ereport(ERROR, (errcode(ERRCODE_UNIQUE_VIOLATION),
                    errmsg("duplicate key value violates the unique key of store \"%s\"",
                           ms->shape.opts.store),
                    errdetail("Key (%s)=(%s) already exists.", cols.data, vals.data)));
}

/* Encodes the new row into ms->key and ms->row, about to be written. */
static void encode_slot(ModState *ms, TupleTableSlot *slot)
{
    slot_getallattrs(slot);
    pgsop_encode_key(&ms->shape, slot->tts_values, slot->tts_isnull, &ms->key);
    pgsop_encode_row(&ms->shape, slot->tts_values, slot->tts_isnull, &ms->row);
    pgsop_note_write(ms->conn);
}

static void insert_row(ModState *ms, TupleTableSlot *slot)
{
    encode_slot(ms, slot);
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc =
        sop_btree_add(ms->bt, ms->key.data, ms->key.len, ms->row.data, ms->row.len, NULL, &err);
    if (rc == SOP_EXISTS)
        unique_violation(ms, slot->tts_values, slot->tts_isnull);
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not insert into store \"%s\"", ms->shape.opts.store);
}

static TupleTableSlot *ExecForeignInsert(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
                                         TupleTableSlot *planSlot)
{
    insert_row(rinfo->ri_FdwState, slot);
    return slot;
}

static TupleTableSlot **ExecForeignBatchInsert(EState *estate, ResultRelInfo *rinfo,
                                               TupleTableSlot **slots, TupleTableSlot **planSlots,
                                               int *numSlots)
{
    for (int i = 0; i < *numSlots; i++)
        insert_row(rinfo->ri_FdwState, slots[i]);
    return slots;
}

static int GetForeignModifyBatchSize(ResultRelInfo *rinfo)
{
    if (rinfo->ri_projectReturning ||
        (rinfo->ri_TrigDesc &&
         (rinfo->ri_TrigDesc->trig_insert_before_row || rinfo->ri_TrigDesc->trig_insert_after_row)))
        return 1;
    return 100;
}

/* Puts the cursor on the item a target scan returned as `planSlot`'s row. */
static bool find_target(ModState *ms, TupleTableSlot *planSlot, int *row)
{
    bool isnull;
    Datum d = ExecGetJunkAttribute(planSlot, ms->ctid, &isnull);
    if (isnull)
        elog(ERROR, "pg_sop: the row identity is NULL");
    ItemPointer tid = (ItemPointer)DatumGetPointer(d);
    int n = (int)(ItemPointerGetBlockNumber(tid) * 65535 + ItemPointerGetOffsetNumber(tid) - 1);
    if (n < 0 || n >= ms->stash->n)
        elog(ERROR, "pg_sop: row identity %d out of range", n);
    *row = n;
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc = sop_cursor_find_id(ms->cur, ms->stash->keys[n], ms->stash->klens[n],
                                   ms->stash->ids[n], &err);
    if (rc == SOP_NOTFOUND)
        return false; /* changed already by this statement */
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not find a row of store \"%s\"", ms->shape.opts.store);
    return true;
}

static TupleTableSlot *ExecForeignUpdate(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
                                         TupleTableSlot *planSlot)
{
    ModState *ms = rinfo->ri_FdwState;
    int n;
    if (!find_target(ms, planSlot, &n))
        return NULL;
    encode_slot(ms, slot);
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc;
    if (ms->key.len == ms->stash->klens[n] &&
        memcmp(ms->key.data, ms->stash->keys[n], ms->key.len) == 0) {
        rc = sop_cursor_update_value(ms->cur, ms->row.data, ms->row.len, &err);
    } else {
        /* a new key: delete + insert in the same engine transaction */
        rc = sop_cursor_remove(ms->cur, &err);
        if (rc == SOP_OK) {
            rc = sop_btree_add(ms->bt, ms->key.data, ms->key.len, ms->row.data, ms->row.len, NULL,
                               &err);
            if (rc == SOP_EXISTS)
                unique_violation(ms, slot->tts_values, slot->tts_isnull);
        }
    }
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not update store \"%s\"", ms->shape.opts.store);
    return slot;
}

static TupleTableSlot *ExecForeignDelete(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
                                         TupleTableSlot *planSlot)
{
    ModState *ms = rinfo->ri_FdwState;
    int n;
    if (!find_target(ms, planSlot, &n))
        return NULL;
    sop_err err;
    sop_err_clear(&err);
    if (rinfo->ri_projectReturning) {
        sop_item it;
        sop_rc rc = item_full(ms->cur, &it, &err);
        if (rc != SOP_OK)
            pgsop_error(rc, &err, "could not read store \"%s\"", ms->shape.opts.store);
        ExecClearTuple(slot);
        pgsop_decode(&ms->shape, it.key, it.key_len, it.value, it.value_len, slot->tts_values,
                     slot->tts_isnull);
        ExecStoreVirtualTuple(slot);
    }
    pgsop_note_write(ms->conn);
    sop_rc rc = sop_cursor_remove(ms->cur, &err);
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not delete from store \"%s\"", ms->shape.opts.store);
    return slot;
}

static void mod_end(ResultRelInfo *rinfo)
{
    ModState *ms = rinfo->ri_FdwState;
    if (ms && ms->cur)
        pgsop_cursor_close(ms->conn, ms->cur);
    if (ms)
        ms->cur = NULL;
}

static void EndForeignModify(EState *estate, ResultRelInfo *rinfo)
{
    mod_end(rinfo);
}

static void BeginForeignInsert(ModifyTableState *mtstate, ResultRelInfo *rinfo)
{
    mod_begin(rinfo);
}

static void EndForeignInsert(EState *estate, ResultRelInfo *rinfo)
{
    mod_end(rinfo);
}

static int IsForeignRelUpdatable(Relation rel)
{
    return (1 << CMD_INSERT) | (1 << CMD_UPDATE) | (1 << CMD_DELETE);
}

/* TRUNCATE: every item removed in the transaction (undone by its rollback). */
static void ExecForeignTruncate(List *rels, DropBehavior behavior, bool restart_seqs)
{
    ListCell *lc;
    foreach (lc, rels) {
        Relation rel = lfirst(lc);
        PgSopShape s;
        pgsop_shape_init(&s, rel);
        PgSopConn *c = pgsop_conn(s.serverid);
        sop_btree *bt = pgsop_store(&s, c);
        sop_cursor *cur = pgsop_cursor_open(c, bt);
        sop_err err;
        sop_err_clear(&err);
        sop_rc rc = sop_cursor_first(cur, &err);
        while (rc == SOP_OK) {
            CHECK_FOR_INTERRUPTS();
            pgsop_note_write(c);
            rc = sop_cursor_remove(cur, &err);
            if (rc == SOP_OK)
                rc = sop_cursor_next(cur, &err);
        }
        pgsop_cursor_close(c, cur);
        if (rc != SOP_NOTFOUND)
            pgsop_error(rc, &err, "could not truncate store \"%s\"", s.opts.store);
    }
}

/* ---- ANALYZE ------------------------------------------------------------ */

static int acquire_sample_rows(Relation rel, int elevel, HeapTuple *rows, int targrows,
                               double *totalrows, double *totaldeadrows)
{
    PgSopShape s;
    pgsop_shape_init(&s, rel);
    PgSopConn *c = pgsop_conn(s.serverid);
    sop_btree *bt = pgsop_store(&s, c);
    sop_cursor *cur = pgsop_cursor_open(c, bt);
    int natts = s.desc->natts;
    Datum *values = palloc(sizeof(Datum) * natts);
    bool *nulls = palloc(sizeof(bool) * natts);
    MemoryContext tmp =
        AllocSetContextCreate(CurrentMemoryContext, "pg_sop analyze", ALLOCSET_DEFAULT_SIZES);
    ReservoirStateData rs;
    reservoir_init_selection_state(&rs, targrows);
    double seen = 0, skip = -1;
    int numrows = 0;
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc;
    for (rc = sop_cursor_first(cur, &err); rc == SOP_OK; rc = sop_cursor_next(cur, &err)) {
        vacuum_delay_point();
        sop_item it;
        if ((rc = sop_cursor_item_meta(cur, &it, &err)) != SOP_OK)
            break;
        int slot = -1;
        if (numrows < targrows) {
            slot = numrows++;
        } else {
            if (skip < 0)
                skip = reservoir_get_next_S(&rs, seen, targrows);
            if (skip <= 0) {
                slot = (int)(targrows * sampler_random_fract(&rs.randstate));
                heap_freetuple(rows[slot]);
            }
            skip -= 1;
        }
        if (slot >= 0) {
            /* only a sampled item's value is read (from its blob, if it has
             * one); a streaming table's chunks not at all (up to 1 GB each):
             * its rows are sampled with empty chunks */
            if (s.stream) {
                it.value = "";
                it.value_len = 0;
            } else if ((rc = item_full(cur, &it, &err)) != SOP_OK) {
                break;
            }
            MemoryContext old = MemoryContextSwitchTo(tmp);
            pgsop_decode(&s, it.key, it.key_len, it.value, it.value_len, values, nulls);
            MemoryContextSwitchTo(old);
            rows[slot] = heap_form_tuple(s.desc, values, nulls);
            MemoryContextReset(tmp);
        }
        seen += 1;
    }
    pgsop_cursor_close(c, cur);
    if (rc != SOP_NOTFOUND)
        pgsop_error(rc, &err, "could not read store \"%s\"", s.opts.store);
    *totalrows = seen;
    *totaldeadrows = 0;
    ereport(elevel, (errmsg("\"%s\": store \"%s\" holds %.0f rows; %d rows in sample",
                            RelationGetRelationName(rel), s.opts.store, seen, numrows)));
    return numrows;
}

static bool AnalyzeForeignTable(Relation rel, AcquireSampleRowsFunc *func, BlockNumber *pages)
{
    *func = acquire_sample_rows;
    *pages = 1;
    return true;
}

/* ---- IMPORT FOREIGN SCHEMA ---------------------------------------------- */

static void collect_store(void *ctx, const sop_store_info *info)
{
    List **l = ctx;
    sop_store_info *copy = palloc(sizeof(*copy));
    *copy = *info;
    copy->options.description = copy->description;
    *l = lappend(*l, copy);
}

static bool import_wanted(ImportForeignSchemaStmt *stmt, const char *name)
{
    if (stmt->list_type == FDW_IMPORT_SCHEMA_ALL)
        return true;
    bool listed = false;
    ListCell *lc;
    foreach (lc, stmt->table_list)
        if (strcmp(((RangeVar *)lfirst(lc))->relname, name) == 0)
            listed = true;
    return stmt->list_type == FDW_IMPORT_SCHEMA_LIMIT_TO ? listed : !listed;
}

static List *sop_import_schema(ImportForeignSchemaStmt *stmt, Oid serverOid)
{
    PgSopConn *c = pgsop_conn(serverOid);
    ForeignServer *srv = GetForeignServer(serverOid);
    List *stores = NIL, *cmds = NIL;
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc = sop_db_stores(c->db, collect_store, &stores, &err);
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not list the stores of \"%s\"", c->path);
    ListCell *lc;
    foreach (lc, stores) {
        sop_store_info *info = lfirst(lc);
        if (!import_wanted(stmt, info->name))
            continue;
        sop_btree *bt;
        rc = sop_store_open(c->txn, info->name, &bt, &err);
        if (rc != SOP_OK)
            pgsop_error(rc, &err, "could not open store \"%s\"", info->name);
        char *cols = pgsop_import_columns(info, bt);
        cmds = lappend(cmds,
                       psprintf("CREATE FOREIGN TABLE %s.%s (%s) SERVER %s OPTIONS (store %s%s)",
                                quote_identifier(stmt->local_schema), quote_identifier(info->name),
                                cols, quote_identifier(srv->servername),
                                quote_literal_cstr(info->name), pgsop_import_options(info)));
    }
    return cmds;
}

/* ---- the handler -------------------------------------------------------- */

PG_FUNCTION_INFO_V1(pg_sop_handler);

Datum pg_sop_handler(PG_FUNCTION_ARGS)
{
    FdwRoutine *r = makeNode(FdwRoutine);
    r->GetForeignRelSize = GetForeignRelSize;
    r->GetForeignPaths = GetForeignPaths;
    r->GetForeignPlan = GetForeignPlan;
    r->BeginForeignScan = BeginForeignScan;
    r->IterateForeignScan = IterateForeignScan;
    r->ReScanForeignScan = ReScanForeignScan;
    r->EndForeignScan = EndForeignScan;
    r->ExplainForeignScan = ExplainForeignScan;
    r->AddForeignUpdateTargets = AddForeignUpdateTargets;
    r->PlanForeignModify = PlanForeignModify;
    r->BeginForeignModify = BeginForeignModify;
    r->ExecForeignInsert = ExecForeignInsert;
    r->ExecForeignBatchInsert = ExecForeignBatchInsert;
    r->GetForeignModifyBatchSize = GetForeignModifyBatchSize;
    r->ExecForeignUpdate = ExecForeignUpdate;
    r->ExecForeignDelete = ExecForeignDelete;
    r->EndForeignModify = EndForeignModify;
    r->BeginForeignInsert = BeginForeignInsert;
    r->EndForeignInsert = EndForeignInsert;
    r->IsForeignRelUpdatable = IsForeignRelUpdatable;
    r->ExecForeignTruncate = ExecForeignTruncate;
    r->AnalyzeForeignTable = AnalyzeForeignTable;
    r->ImportForeignSchema = sop_import_schema;
    PG_RETURN_POINTER(r);
}

void pgsop_forget_stashes(void)
{
    stashes = NIL;
}
