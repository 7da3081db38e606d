/*
 * check.c - sop_db_check: the whole-database integrity check (TESTING.md
 * item 3; docs/recovery.md, "Checking").
 *
 * For every store: every registry block's checksum (through the registry
 * scan); every handle's shape (a live body ID, no stale second ID); the
 * tree walked from its root through the transactional repository, so every
 * node body is read and decoded (checksum, layout) and must belong to its
 * handle; the B-tree invariants (sop__btree_check); the item count against
 * the store's info; every handle reached by the walk (else the node leaked);
 * every blob file accounted for as a live node body or a live value (else an
 * orphan). Problems are reported one per line and counted; the check goes
 * on to the next store after a problem that stops a store's walk.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "crc.h"
#include "err.h"
#include "mem.h"
#include "txn.h"
#include "uuid.h"

typedef struct checker {
    void (*problem)(void *ctx, const char *msg);
    void *ctx;
    sop_check_report *rep;
    /* scrub (sop_db_scrub): every blob read shard by shard, with repair;
     * otherwise only erasure-coded stores get the shard pass, read-only */
    sop_scrub_report *scrub;
    bool repair;
    void (*progress)(void *ctx, const char *store, uint64_t done, uint64_t total);
} checker;

static void say(checker *k, bool problem, const char *fmt, va_list ap) SOP__PRINTF(3, 0);
static void say(checker *k, bool problem, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (problem)
        k->rep->problems++;
    if (k->problem)
        k->problem(k->ctx, msg);
}

/* A problem: counted, and the check fails. */
static void report(checker *k, const char *fmt, ...) SOP__PRINTF(2, 3);
static void report(checker *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(k, true, fmt, ap);
    va_end(ap);
}

/* A line for the caller that is not a problem (scrub's repaired shards). */
static void note(checker *k, const char *fmt, ...) SOP__PRINTF(2, 3);
static void note(checker *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(k, false, fmt, ap);
    va_end(ap);
}

/* Marks for ID sets (the value is never NULL). */
static int mark_live, mark_seen;

typedef struct store_check {
    checker *k;
    const char *name;
    sop__idmap handles; /* lid -> sop__handle copy */
    sop__idmap bodies;  /* active physical ID -> &mark_live */
    sop__idmap reached; /* lid -> &mark_seen */
    sop__idmap values;  /* value blob ID -> &mark_live */
    sop__idmap orphans; /* scrub with repair: unreferenced blob IDs to remove */
    bool refs_values;
    sop__blobstore *blobs;
    uint64_t items, nodes;
    sop_err *err;
} store_check;

static sop_rc collect_handle(void *ctx, const sop__handle *h)
{
    store_check *s = ctx;
    char text[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_format(h->lid, text);
    sop__handle *copy = sop__malloc(sizeof(*copy));
    if (copy == NULL)
        return sop__err_set(s->err, SOP_NOMEM, 0, "check: no memory");
    *copy = *h;
    SOP__TRY(sop__idmap_put(&s->handles, h->lid, copy, s->err));
    const uint8_t *active = sop__handle_active(h);
    const uint8_t *other = h->active_b ? h->pa : h->pb;
    if (h->deleted)
        report(s->k, "store %s: node %s is marked deleted in the registry", s->name, text);
    if (sop__uuid_is_nil(active))
        report(s->k, "store %s: node %s has no live body ID", s->name, text);
    else
        SOP__TRY(sop__idmap_put(&s->bodies, active, &mark_live, s->err));
    if (!sop__uuid_is_nil(other))
        report(s->k, "store %s: node %s keeps a stale second body ID", s->name, text);
    return SOP_OK;
}

static sop_rc visit(void *ctx, const sop__node *n, uint32_t level)
{
    store_check *s = ctx;
    (void)level;
    s->nodes++;
    s->items += n->count;
    SOP__TRY(sop__idmap_put(&s->reached, n->id, &mark_seen, s->err));
    if (!s->refs_values)
        return SOP_OK;
    for (uint32_t i = 0; i < n->count; i++) {
        if (n->items[i].vlen != SOP__VALREF_SIZE) {
            char text[SOP__UUID_TEXT_LEN + 1];
            sop__uuid_format(n->id, text);
            report(s->k, "store %s: node %s item %u holds no value reference", s->name, text, i);
            continue;
        }
        const uint8_t *id;
        uint32_t len, crc;
        if (sop__valref_parse(s->name, sop__node_value(n, i), SOP__VALREF_SIZE, &id, &len, &crc,
                              NULL) != SOP_OK)
            continue;
        SOP__TRY(sop__idmap_put(&s->values, id, &mark_live, s->err));
        /* read and verify the value itself */
        uint8_t *data;
        size_t got;
        sop_err e;
        char path[SOP__BLOB_PATH_MAX];
        sop__blob_path(s->blobs, id, path);
        sop_rc rc = sop__blob_get(s->blobs, id, &data, &got, &e);
        if (rc == SOP_NOTFOUND) {
            report(s->k, "store %s: value blob %s is missing", s->name, path);
            continue;
        }
        if (rc != SOP_OK) {
            report(s->k, "store %s: %s", s->name, e.msg);
            continue;
        }
        if (got != len || sop__crc32c(0, data, got) != crc)
            report(s->k, "store %s: value blob %s does not match its reference", s->name, path);
        sop__free(data);
    }
    return SOP_OK;
}

static sop_rc check_blob(void *ctx, const uint8_t id[16])
{
    store_check *s = ctx;
    s->k->rep->blobs++;
    if (sop__idmap_get(&s->bodies, id) || sop__idmap_get(&s->values, id))
        return SOP_OK;
    char text[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_format(id, text);
    if (s->k->scrub == NULL) {
        report(s->k, "store %s: blob %s is not referenced (orphan)", s->name, text);
        return SOP_OK;
    }
    s->k->scrub->orphan_blobs++;
    if (!s->k->repair) {
        note(s->k, "store %s: blob %s is not referenced (orphan)", s->name, text);
        return SOP_OK;
    }
    return sop__idmap_put(&s->orphans, id, &mark_live, s->err);
}

static int mark_reg;

static sop_rc collect_active(void *ctx, const sop__handle *h)
{
    store_check *s = ctx;
    return sop__idmap_put(&s->reached, sop__handle_active(h), &mark_reg, s->err);
}

/*
 * Scrub with repair removes the unreferenced blobs it listed - but a blob
 * unreferenced when the tree was walked may be a commit's that landed
 * since, or an early-written value of a transaction still open. So under
 * the commit lock (no commit can land), liveness is taken again from the
 * registry and the tree, and every value an INTENT record of any log names
 * is kept; while any transaction is prepared, values are not removed at
 * all (its early values are its coordinator's to keep or drop).
 */
static sop_rc remove_orphans(sop_db *db, store_check *s)
{
    if (s->orphans.count == 0)
        return SOP_OK;
    sop_err *err = s->err;
    sop__idmap_free(&s->reached);
    sop__idmap_init(&s->reached);
    sop__idmap refs, intents;
    sop__idmap_init(&refs);
    sop__idmap_init(&intents);
    bool prepared = false;
    sop__dbstore *st;
    SOP__TRY(sop__db_lock(db, 0, err));
    sop_rc rc = sop__db_store(db, s->name, &st, err);
    if (rc == SOP_OK)
        rc = sop__registry_scan(st->reg, collect_active, s, err);
    if (rc == SOP_OK)
        rc = sop__db_store_refs(db, s->name, &refs, err);
    if (rc == SOP_OK)
        rc = sop__db_unfinished_values(db, &intents, &prepared, err);
    sop__idmap_slot *slot;
    for (size_t pos = 0; rc == SOP_OK && (pos = sop__idmap_next(&s->orphans, pos, &slot)) != 0;) {
        char text[SOP__UUID_TEXT_LEN + 1];
        sop__uuid_format(slot->id, text);
        if (sop__idmap_get(&s->reached, slot->id) || sop__idmap_get(&refs, slot->id))
            continue; /* became live meanwhile */
        if (sop__idmap_get(&intents, slot->id) || (prepared && s->refs_values)) {
            note(s->k,
                 "store %s: blob %s is not referenced yet (kept: a transaction may still "
                 "commit it)",
                 s->name, text);
            continue;
        }
        sop_err e;
        if (sop__blob_remove_all(st->blobs, slot->id, &e) != SOP_OK)
            report(s->k, "store %s: orphan blob %s: %s", s->name, text, e.msg);
        else
            note(s->k, "store %s: blob %s was not referenced (orphan): removed", s->name, text);
    }
    sop__db_unlock(db);
    sop__idmap_free(&refs);
    sop__idmap_free(&intents);
    return rc;
}

static void shard_problem(void *ctx, const char *msg)
{
    store_check *s = ctx;
    if (s->k->scrub != NULL)
        note(s->k, "store %s: %s", s->name, msg); /* counted in the scrub report */
    else
        report(s->k, "store %s: %s", s->name, msg);
}

/* Every shard of every live blob (the tree walk read only what a reader
 * reads: k data shards). */
static sop_rc shard_pass(store_check *s)
{
    checker *k = s->k;
    sop_scrub_report sink;
    memset(&sink, 0, sizeof(sink));
    sop_scrub_report *sr = k->scrub ? k->scrub : &sink;
    uint64_t total = s->bodies.count + s->values.count, done = 0;
    sop__idmap *maps[2] = {&s->bodies, &s->values};
    for (int m = 0; m < 2; m++) {
        sop__idmap_slot *slot;
        for (size_t pos = 0; (pos = sop__idmap_next(maps[m], pos, &slot)) != 0;) {
            sop_err e;
            sop_err_clear(&e);
            sr->blobs++;
            sop_rc rc = sop__blob_scrub(s->blobs, slot->id, k->repair, &sr->shards, &sr->bad_shards,
                                        &sr->repaired_shards, shard_problem, s, &e);
            if (rc == SOP_NOMEM) {
                *s->err = e;
                return rc;
            }
            if (rc != SOP_OK) {
                sr->lost_blobs++;
                report(k, "store %s: %s", s->name, e.msg);
            }
            if (k->progress != NULL && (++done % 64 == 0 || done == total))
                k->progress(k->ctx, s->name, done, total);
        }
    }
    return SOP_OK;
}

static void free_map(sop__idmap *m, bool values)
{
    sop__idmap_slot *slot;
    if (values)
        for (size_t pos = 0; (pos = sop__idmap_next(m, pos, &slot)) != 0;)
            sop__free(slot->val);
    sop__idmap_free(m);
}

static sop_rc check_store(sop_db *db, checker *k, const char *name, sop_err *err)
{
    store_check s;
    memset(&s, 0, sizeof(s));
    s.k = k;
    s.name = name;
    s.err = err;
    sop__idmap_init(&s.handles);
    sop__idmap_init(&s.bodies);
    sop__idmap_init(&s.reached);
    sop__idmap_init(&s.values);
    sop__idmap_init(&s.orphans);
    sop_err e;
    sop_err_clear(&e);

    sop__dbstore *st;
    sop_rc rc = sop__db_store(db, name, &st, err);
    if (rc == SOP_OK)
        s.blobs = st->blobs;
    if (rc == SOP_OK) {
        rc = sop__registry_scan(st->reg, collect_handle, &s, &e);
        if (rc == SOP_CORRUPT) {
            report(k, "store %s: %s", name, e.msg);
            rc = SOP_OK;
            goto out; /* without the registry the rest means nothing */
        }
        if (rc != SOP_OK)
            *err = e;
    }
    if (rc != SOP_OK)
        goto out;

    sop_txn *t;
    rc = sop_txn_begin(db, SOP_TXN_NOCHECK, 0, &t, err);
    if (rc == SOP_OK)
        t->no_cache = true; /* the disk, not what this process remembers */
    if (rc != SOP_OK)
        goto out;
    sop__txstore *ts;
    rc = sop__txn_store_open(t, name, &ts, &e);
    if (rc == SOP_OK) {
        s.refs_values = sop__txstore_refs_values(ts);
        sop_rc wrc = sop__btree_walk(&ts->bt.core, visit, &s, &e);
        if (wrc == SOP_OK)
            wrc = sop__btree_check(&ts->bt.core, &e);
        if (wrc == SOP_CORRUPT || wrc == SOP_CONFLICT) {
            report(k, "store %s: %s", name, e.msg);
        } else if (wrc != SOP_OK) {
            rc = wrc;
            *err = e;
        } else if (s.items != ts->info.count) {
            report(k, "store %s: %llu items in the tree but the store's count is %llu", name,
                   (unsigned long long)s.items, (unsigned long long)ts->info.count);
        }
    } else if (rc == SOP_CORRUPT) {
        report(k, "store %s: %s", name, e.msg);
        rc = SOP_OK;
    } else {
        *err = e;
    }
    sop_txn_free(t);
    if (rc != SOP_OK)
        goto out;

    /* every registered node was reached */
    sop__idmap_slot *slot;
    for (size_t pos = 0; (pos = sop__idmap_next(&s.handles, pos, &slot)) != 0;) {
        if (sop__idmap_get(&s.reached, slot->id))
            continue;
        char text[SOP__UUID_TEXT_LEN + 1];
        sop__uuid_format(slot->id, text);
        report(k, "store %s: node %s is registered but not in the tree (leaked)", name, text);
    }
    /* every shard of every live blob */
    if (k->scrub != NULL || sop__blob_is_ec(st->blobs))
        rc = shard_pass(&s);
    /* every blob is a live body or value */
    if (rc == SOP_OK) {
        rc = sop__blob_list(st->blobs, check_blob, &s, &e);
        if (rc != SOP_OK)
            *err = e;
    }
    if (rc == SOP_OK)
        rc = remove_orphans(db, &s);
    k->rep->items += s.items;
    k->rep->nodes += s.nodes;
out:
    free_map(&s.handles, true);
    sop__idmap_free(&s.bodies);
    sop__idmap_free(&s.reached);
    sop__idmap_free(&s.values);
    sop__idmap_free(&s.orphans);
    return rc;
}

static sop_rc run(sop_db *db, checker *kk, sop_err *err)
{
    checker k = *kk;
    sop_check_report rep;
    memset(&rep, 0, sizeof(rep));
    k.rep = &rep;
    SOP__TRY(sop_db_recover(db, err));
    char **names;
    size_t n;
    sop_rc rc = sop__repo_list(db->dir, &names, &n, err);
    if (rc == SOP_CORRUPT) {
        report(&k, "store list: %s", err->msg);
        n = 0;
        names = NULL;
        rc = SOP_OK;
    }
    SOP__TRY(rc);
    for (size_t i = 0; i < n && rc == SOP_OK; i++) {
        rep.stores++;
        rc = check_store(db, &k, names[i], err);
    }
    sop__repo_list_free(names, n);
    if (kk->rep)
        *kk->rep = rep;
    if (k.scrub)
        k.scrub->stores = rep.stores;
    if (rc != SOP_OK)
        return rc;
    if (rep.problems)
        return sop__err_set(err, SOP_CORRUPT, 0, "%s: %llu problems found",
                            k.scrub ? "scrub" : "check", (unsigned long long)rep.problems);
    return SOP_OK;
}

sop_rc sop_db_check(sop_db *db, void (*problem)(void *ctx, const char *msg), void *ctx,
                    sop_check_report *report_out, sop_err *err)
{
    if (db == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_check: NULL database");
    checker k = {problem, ctx, report_out, NULL, false, NULL};
    return run(db, &k, err);
}

sop_rc sop_db_scrub(sop_db *db, bool repair,
                    void (*progress)(void *ctx, const char *store, uint64_t done, uint64_t total),
                    void (*problem)(void *ctx, const char *msg), void *ctx,
                    sop_scrub_report *report_out, sop_err *err)
{
    if (db == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_scrub: NULL database");
    sop_scrub_report sr;
    memset(&sr, 0, sizeof(sr));
    checker k = {problem, ctx, NULL, &sr, repair, progress};
    sop_rc rc = run(db, &k, err);
    if (report_out)
        *report_out = sr;
    return rc;
}
