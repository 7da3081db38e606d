/*
 * txn.c - transactions: the transactional node repository the B-tree runs
 * on, values kept outside nodes, and the commit protocol (docs/commit.md).
 *
 * Reads resolve a node's logical ID through the registry to its current
 * body and remember the handle version they saw. Changes stay in the
 * transaction's memory. Phase 1 takes the commit lock, checks every node
 * the transaction saw is unchanged (and unclaimed by a prepared
 * transaction), builds one redo record with every new body and handle,
 * and makes it durable: the commit point. Phase 2 applies the record.
 *
 * Invariants: see txn.h.
 */
#include "txn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "cache.h"
#include "crc.h"
#include "err.h"
#include "fault.h"
#include "mem.h"
#include "uuid.h"

#define DEFAULT_DURATION_MS (15 * 60 * 1000)
#define MAX_DURATION_MS     (60 * 60 * 1000)

/* ---- a growable byte buffer for the redo record ---------------------- */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
    bool nomem;
} buf;

static uint8_t *buf_room(buf *b, size_t n)
{
    if (b->nomem)
        return NULL;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *g = sop__realloc(b->p, cap);
        if (g == NULL) {
            b->nomem = true;
            return NULL;
        }
        b->p = g;
        b->cap = cap;
    }
    uint8_t *at = b->p + b->len;
    b->len += n;
    return at;
}

static void buf_put(buf *b, const void *p, size_t n)
{
    uint8_t *at = buf_room(b, n);
    if (at && n)
        memcpy(at, p, n);
}

static void buf_u8(buf *b, uint8_t v)
{
    buf_put(b, &v, 1);
}

static void buf_u32(buf *b, uint32_t v)
{
    uint8_t *at = buf_room(b, 4);
    if (at)
        sop__le_put32(at, v);
}

static void buf_u64(buf *b, uint64_t v)
{
    uint8_t *at = buf_room(b, 8);
    if (at)
        sop__le_put64(at, v);
}

static void put_u32_at(buf *b, size_t at, uint32_t v)
{
    sop__le_put32(b->p + at, v);
}

/* ---- transactions ------------------------------------------------------ */

sop_rc sop_txn_begin(sop_db *db, sop_txn_mode mode, uint32_t max_duration_ms, sop_txn **out,
                     sop_err *err)
{
    if (db == NULL || out == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_txn_begin: NULL argument");
    if (mode != SOP_TXN_NOCHECK && mode != SOP_TXN_WRITE && mode != SOP_TXN_READ)
        return sop__err_set(err, SOP_INVALID, 0, "sop_txn_begin: unknown mode %d", (int)mode);
    if (max_duration_ms > MAX_DURATION_MS)
        return sop__err_set(err, SOP_INVALID, 0,
                            "sop_txn_begin: max duration %u ms exceeds one hour", max_duration_ms);
    sop_txn *t = sop__calloc(1, sizeof(*t));
    if (t == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "sop_txn_begin: no memory");
    t->db = db;
    t->mode = mode;
    t->state = SOP__TXN_ACTIVE;
    t->deadline_ms = sop__now_ms() + (max_duration_ms ? max_duration_ms : DEFAULT_DURATION_MS);
    sop__uuid_v7(t->id);
    t->next_open = db->txns;
    db->txns = t;
    *out = t;
    return SOP_OK;
}

void sop_txn_id(const sop_txn *t, uint8_t txid[SOP_ID_LEN])
{
    if (t && txid)
        memcpy(txid, t->id, 16);
}

void sop__txn_poison(sop_txn *t)
{
    if (t)
        t->poisoned = true;
}

sop_rc sop__txn_check_active(const sop_txn *t, sop_err *err)
{
    if (t->state != SOP__TXN_ACTIVE)
        return sop__err_set(err, SOP_INVALID, 0, "transaction: already ended");
    if (t->poisoned)
        return sop__err_set(err, SOP_POISONED, 0,
                            "transaction: unusable after an earlier failed change; roll it back");
    return SOP_OK;
}

void sop__txn_hold(sop_txn *t, int delta)
{
    t->holds = (uint32_t)((int64_t)t->holds + delta);
}

/* Open stream writers have not finished their values (an update writer
 * removes the old chunks past its last one when it closes). */
static sop_rc check_holds(const sop_txn *t, sop_err *err)
{
    if (t->holds == 0)
        return SOP_OK;
    return sop__err_set(err, SOP_INVALID, 0,
                        "transaction: %u stream writer(s) still open; close them "
                        "(sop_stream_writer_close) before committing",
                        t->holds);
}

sop_rc sop__txn_check_write(const sop__txstore *ts, sop_err *err)
{
    SOP__TRY(sop__txn_check_active(ts->txn, err));
    if (ts->txn->mode != SOP_TXN_WRITE)
        return sop__err_set(err, SOP_INVALID, 0, "store %s: read-only transaction", ts->info.name);
    if (ts->dropped)
        return sop__err_set(err, SOP_INVALID, 0, "store %s: dropped in this transaction",
                            ts->info.name);
    return SOP_OK;
}

/* Drops what a store holds for the transaction (nodes, values) but keeps
 * the tree handle, so calls after the transaction ended get SOP_INVALID
 * instead of touching freed memory. Cursors lose their place. */
/* Drops every node the store holds; cursors lose their place. */
static void forget_nodes(sop__txstore *ts)
{
    for (sop__cursor *c = ts->bt.core.cursors; c; c = c->next_cursor) {
        c->live = false;
        c->state = SOP__CUR_NONE;
        c->depth = 0;
    }
    sop__idmap_slot *slot;
    for (size_t pos = 0; (pos = sop__idmap_next(&ts->nodes, pos, &slot)) != 0;) {
        sop__txnode *tn = slot->val;
        sop__l1_release(tn->node);
        sop__free(tn);
    }
    sop__idmap_free(&ts->nodes);
}

static void txstore_clear(sop__txstore *ts)
{
    forget_nodes(ts);
    for (size_t i = 0; i < ts->npending; i++)
        sop__free(ts->pending[i].data);
    sop__free(ts->pending);
    ts->pending = NULL;
    ts->npending = ts->cappending = 0;
    sop__free(ts->dead);
    ts->dead = NULL;
    ts->ndead = ts->capdead = 0;
    sop__free(ts->active);
    ts->active = NULL;
    ts->nactive = ts->capactive = 0;
    sop__free(ts->vbuf);
    ts->vbuf = NULL;
    sop__free(ts->acts);
    ts->acts = NULL;
    ts->nacts = ts->capacts = 0;
}

static void txstore_free(sop__txstore *ts)
{
    txstore_clear(ts);
    sop__cursor_fini(&ts->bt.cur);
    sop__free(ts);
}

/* Forgets everything the transaction holds but the store handles. */
static void release(sop_txn *t)
{
    for (sop__txstore *ts = t->stores; ts; ts = ts->next)
        txstore_clear(ts);
    sop__free(t->redo);
    t->redo = NULL;
    t->redo_len = 0;
    /* leave the open list */
    for (sop_txn **pp = &t->db->txns; *pp; pp = &(*pp)->next_open) {
        if (*pp == t) {
            *pp = t->next_open;
            break;
        }
    }
    t->next_open = NULL;
}

/* Removes values this transaction already wrote (active placement). Those
 * that cannot be removed are handed to the database handle, which retries
 * and, failing that, leaves them to recovery. */
static sop_rc remove_active(sop_txn *t, sop_err *err)
{
    sop_rc first = SOP_OK;
    for (sop__txstore *ts = t->stores; ts; ts = ts->next) {
        if (ts->nactive == 0)
            continue;
        sop__dbstore *st;
        sop_rc rc = sop__db_store(t->db, ts->info.name, &st, err);
        size_t kept = 0;
        for (size_t i = 0; i < ts->nactive; i++) {
            if (rc == SOP_OK && sop__blob_remove(st->blobs, ts->active[i], err) == SOP_OK)
                continue;
            memmove(ts->active[kept++], ts->active[i], 16);
            if (first == SOP_OK)
                first = err ? err->code : SOP_IO;
        }
        if (kept > 0) {
            sop_rc arc = sop__db_abandon(t->db, t->id, ts->info.name,
                                         (const uint8_t(*)[16])ts->active, kept, NULL);
            if (arc != SOP_OK && first == SOP_OK)
                first = arc;
        }
        ts->nactive = 0;
    }
    SOP__CRASH_POINT(RB_ACTIVE_REMOVED);
    return first;
}

sop_rc sop_txn_rollback(sop_txn *t, sop_err *err)
{
    if (t == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_txn_rollback: NULL transaction");
    if (t->state == SOP__TXN_ROLLED_BACK)
        return SOP_OK;
    if (t->state == SOP__TXN_COMMITTED || t->state == SOP__TXN_PHASE1_DONE)
        return sop__err_set(err, SOP_INVALID, 0,
                            "transaction: already committed (phase 1 passed the commit point)");
    if (t->state == SOP__TXN_PREPARED)
        return sop_db_rollback_prepared(t->db, t->id, err);
    sop_rc rc = remove_active(t, err);
    t->state = SOP__TXN_ROLLED_BACK;
    release(t);
    return rc;
}

void sop_txn_free(sop_txn *t)
{
    if (t == NULL)
        return;
    if (t->state == SOP__TXN_ACTIVE)
        sop_txn_rollback(t, NULL);
    else if (t->state == SOP__TXN_PHASE1_DONE)
        sop_txn_phase2(t, NULL); /* committed: finish it (recovery would anyway) */
    release(t);
    while (t->stores) {
        sop__txstore *ts = t->stores;
        t->stores = ts->next;
        txstore_free(ts);
    }
    sop__free(t);
}

/* ---- the transactional node repository --------------------------------- */

static sop__txstore *repo_of(void *repo)
{
    return repo;
}

/* A node or value vanished under a reader: a newer commit replaced it, or
 * one is half applied. Finish the latter so the retry sees a whole state. */
/* where: the file that should have held it (a path), for the message */
static sop_rc vanished(sop__txstore *ts, const uint8_t id[16], const char *what, const char *where,
                       sop_err *err)
{
    sop__db_finish_pending(ts->txn->db, NULL);
    /* Nothing committed to the store since we opened it: then the node or
     * value should be there, and its absence is damage, not a race. */
    sop__storeinfo cur;
    if (!ts->created && sop__repo_read(ts->txn->db->dir, ts->info.name, &cur, NULL) == SOP_OK &&
        cur.seq == ts->info.seq) {
        char text[SOP__UUID_TEXT_LEN + 1];
        sop__uuid_format(id, text);
        return sop__err_set(err, SOP_CORRUPT, 0, "store %s: %s %s is missing from %s",
                            ts->info.name, what, text, where);
    }
    return sop__err_set(err, SOP_CONFLICT, 0,
                        "store %s changed while the transaction read it; retry", ts->info.name);
}

/* The registry's first segment, naming where a handle should be. */
static void registry_where(const sop__txstore *ts, char *out, size_t n)
{
    char dir[SOP__PATH_MAX];
    if (sop__repo_store_dir(ts->txn->db->dir, ts->info.name, dir, NULL) != SOP_OK)
        dir[0] = '\0';
    snprintf(out, n, "the registry %s/%s-1.reg (and later segments)", dir, ts->info.name);
}

static sop_rc txr_get(void *repo, const uint8_t id[16], sop__node **out, sop_err *err)
{
    sop__txstore *ts = repo_of(repo);
    sop__txnode *tn = sop__idmap_get(&ts->nodes, id);
    if (tn) {
        if (tn->state == SOP__TXN_REMOVED)
            return sop__err_set(err, SOP_NOTFOUND, 0, "txrepo: node removed");
        *out = tn->node;
        return SOP_OK;
    }
    if (ts->created)
        return sop__err_set(err, SOP_NOTFOUND, 0, "txrepo: no such node in a new store");
    sop__dbstore *st;
    SOP__TRY(sop__db_store(ts->txn->db, ts->info.name, &st, err));
    sop__handle h;
    bool found;
    bool is_root = memcmp(id, ts->info.root_id, 16) == 0;
    uint8_t *body = NULL;
    size_t len;
    sop_rc rc;
    sop__node *n = NULL;
    /* A node this transaction has not read yet may be read at any version
     * (commit validates or merges); if a commit replaced and removed its
     * body between the handle and the body, read the new handle. */
    sop__l2 *l2 = ts->txn->no_cache ? NULL : &ts->txn->db->l2;
    for (int tries = 0;; tries++) {
        /* the shared cache's handle may be stale: a body it names that is
         * gone sends us to the registry, an old one fails validation */
        bool cached = tries == 0 && l2 && sop__l2_handle_get(l2, &ts->info, id, &h);
        if (!cached) {
            SOP__TRY(sop__registry_get(st->reg, (const uint8_t(*)[16])id, 1, &h, &found, err));
            if (found && !h.deleted && l2)
                sop__l2_handle_put(l2, &ts->info, &h);
        } else {
            found = true;
        }
        if (!found || h.deleted) {
            if (is_root && ts->count_at_open == 0)
                return sop__err_set(err, SOP_NOTFOUND, 0, "txrepo: empty store");
            char where[2 * SOP__PATH_MAX];
            registry_where(ts, where, sizeof(where));
            return vanished(ts, id, "node", where, err);
        }
        n = ts->txn->no_cache ? NULL : sop__l1_get(sop__handle_active(&h), (uint32_t)h.version);
        if (n)
            break;
        if (l2 && sop__l2_node_get(l2, &ts->info, sop__handle_active(&h), &body, &len)) {
            rc = SOP_OK;
            break;
        }
        rc = sop__blob_get(st->blobs, sop__handle_active(&h), &body, &len, err);
        if (rc == SOP_OK && l2)
            sop__l2_node_put(l2, &ts->info, sop__handle_active(&h), body, len);
        if (rc != SOP_NOTFOUND)
            break;
        sop__handle again;
        SOP__TRY(sop__registry_get(st->reg, (const uint8_t(*)[16])id, 1, &again, &found, err));
        if (tries < 16 && found && again.version != h.version)
            continue;
        /* superseded and removed by a commit since we read the handle */
        char where[SOP__BLOB_PATH_MAX];
        sop__blob_path(st->blobs, sop__handle_active(&h), where);
        return vanished(ts, id, "the body of node", where, err);
    }
    if (n == NULL) {
        SOP__TRY(rc);
        char what[SOP__BLOB_PATH_MAX];
        sop__blob_path(st->blobs, sop__handle_active(&h), what);
        rc = sop__node_decode(body, len, what, &n, err);
        sop__free(body);
        SOP__TRY(rc);
        if (memcmp(n->id, id, 16) != 0) {
            sop__node_free(n);
            return sop__err_set(err, SOP_CORRUPT, 0, "%s: body of another node", what);
        }
        n->version = (uint32_t)h.version;
        /* shared from now on: read in place; txr_writable takes it over or
         * clones it before the first change */
        if (!ts->txn->no_cache)
            n = sop__l1_share(sop__handle_active(&h), (uint32_t)h.version, n);
    }
    tn = sop__calloc(1, sizeof(*tn));
    if (tn == NULL) {
        sop__l1_release(n);
        return sop__err_set(err, SOP_NOMEM, 0, "txrepo: no memory");
    }
    tn->node = n;
    tn->h = h;
    tn->state = SOP__TXN_READ;
    rc = sop__idmap_put(&ts->nodes, id, tn, err);
    if (rc != SOP_OK) {
        sop__l1_release(n);
        sop__free(tn);
        return rc;
    }
    *out = n;
    return SOP_OK;
}

static sop_rc txr_writable(void *repo, sop__node *n, sop__node **out, sop_err *err)
{
    sop__txstore *ts = repo_of(repo);
    SOP__TRY(sop__txn_check_write(ts, err));
    sop__txnode *tn = sop__idmap_get(&ts->nodes, n->id);
    if (tn == NULL)
        return sop__err_set(err, SOP_INTERNAL, 0, "txrepo: writable() of a node never read");
    /* The cache's node: take it over when nobody else reads it (the usual
     * case for the node a previous commit of this process wrote), else
     * change a private copy. */
    if (tn->node->shared &&
        !sop__l1_take(sop__handle_active(&tn->h), (uint32_t)tn->h.version, tn->node)) {
        sop__node *copy;
        SOP__TRY(sop__node_clone(tn->node, &copy, err));
        sop__l1_release(tn->node);
        tn->node = copy;
    }
    if (tn->state == SOP__TXN_READ)
        tn->state = SOP__TXN_DIRTY;
    *out = tn->node;
    return SOP_OK;
}

static sop_rc txr_create(void *repo, const uint8_t *id, bool leaf, uint32_t item_cap,
                         sop__node **out, sop_err *err)
{
    sop__txstore *ts = repo_of(repo);
    SOP__TRY(sop__txn_check_write(ts, err));
    uint8_t fresh[16];
    if (id == NULL) {
        sop__uuid_v4(fresh);
        id = fresh;
    }
    sop__node *n;
    SOP__TRY(sop__node_new(id, leaf, item_cap, 0, &n, err));
    sop__txnode *tn = sop__calloc(1, sizeof(*tn));
    if (tn == NULL) {
        sop__node_free(n);
        return sop__err_set(err, SOP_NOMEM, 0, "txrepo: no memory");
    }
    tn->node = n;
    tn->state = SOP__TXN_NEW;
    sop_rc rc = sop__idmap_put(&ts->nodes, id, tn, err);
    if (rc != SOP_OK) {
        sop__node_free(n);
        sop__free(tn);
        return rc;
    }
    *out = n;
    return SOP_OK;
}

static void txr_remove(void *repo, sop__node *n)
{
    sop__txstore *ts = repo_of(repo);
    sop__txnode *tn = sop__idmap_get(&ts->nodes, n->id);
    if (tn == NULL)
        return;
    if (tn->state == SOP__TXN_NEW) {
        sop__idmap_del(&ts->nodes, n->id);
        sop__node_free(tn->node);
        sop__free(tn);
        return;
    }
    tn->state = SOP__TXN_REMOVED;
}

const sop__repo_ops sop__txrepo_ops = {
    .get = txr_get,
    .writable = txr_writable,
    .create = txr_create,
    .remove = txr_remove,
};

/* ---- stores in a transaction ------------------------------------------- */

static sop__txstore *find_open(sop_txn *t, const char *name)
{
    for (sop__txstore *ts = t->stores; ts; ts = ts->next)
        if (strcmp(ts->info.name, name) == 0)
            return ts;
    return NULL;
}

static sop_rc store_attach(sop_txn *t, const sop__storeinfo *info, bool created, sop__txstore **out,
                           sop_err *err)
{
    sop__txstore *ts = sop__calloc(1, sizeof(*ts));
    if (ts == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "transaction: no memory for a store");
    ts->txn = t;
    ts->info = *info;
    ts->created = created;
    ts->count_at_open = info->count;
    sop__idmap_init(&ts->nodes);
    sop_store_options o;
    sop_store_options_init(&o);
    o.slot_length = info->slot_length;
    o.is_unique = info->is_unique;
    o.leaf_load_balancing = info->leaf_load_balancing;
    o.key_order_fields = info->key_order_fields;
    sop_rc rc =
        sop__btree_init(&ts->bt.core, &sop__txrepo_ops, ts, info->root_id, info->count, &o, err);
    if (rc != SOP_OK) {
        sop__free(ts);
        return rc;
    }
    sop__cursor_init(&ts->bt.cur, &ts->bt.core);
    ts->bt.cur.internal = true;
    ts->bt.ts = ts;
    ts->next = t->stores;
    t->stores = ts;
    *out = ts;
    return SOP_OK;
}

sop_rc sop__txn_store_open(sop_txn *t, const char *name, sop__txstore **out, sop_err *err)
{
    SOP__TRY(sop__txn_check_active(t, err));
    SOP__TRY(sop__store_name_check(name, err));
    sop__txstore *ts = find_open(t, name);
    if (ts) {
        if (ts->dropped)
            return sop__err_set(err, SOP_NOTFOUND, 0, "store %s: dropped in this transaction",
                                name);
        *out = ts;
        return SOP_OK;
    }
    sop__storeinfo info;
    sop__l2 *l2 = t->no_cache ? NULL : &t->db->l2;
    sop__dbstore *st = sop__db_store_find(t->db, name);
    if (l2 && st && st->info_ms > 0 &&
        sop__l2_info_get(l2, name, st->info_ms, st->info_sliding, &info)) {
        SOP__TRY(store_attach(t, &info, false, out, err));
        (*out)->info_cached = true;
        return SOP_OK;
    }
    sop_rc rc = sop__repo_read(t->db->dir, name, &info, err);
    if (rc == SOP_NOTFOUND)
        return sop__err_set(err, SOP_NOTFOUND, 0, "no store named %s", name);
    SOP__TRY(rc);
    if (l2 && sop__db_store(t->db, name, &st, NULL) == SOP_OK) {
        st->info_ms = info.storeinfo_cache_ms;
        st->info_sliding = info.storeinfo_cache_sliding;
        sop__l2_info_put(l2, &info);
    }
    return store_attach(t, &info, false, out, err);
}

sop_rc sop__txn_store_create(sop_txn *t, const char *name, const sop_store_options *o,
                             sop__txstore **out, sop_err *err)
{
    SOP__TRY(sop__txn_check_active(t, err));
    if (t->mode != SOP_TXN_WRITE)
        return sop__err_set(err, SOP_INVALID, 0, "store %s: create needs a write transaction",
                            name ? name : "");
    SOP__TRY(sop__store_name_check(name, err));
    SOP__TRY(sop__btree_check_options(o, err));
    if ((unsigned)o->value_placement > SOP_VALUES_ACTIVE)
        return sop__err_set(err, SOP_INVALID, 0, "store %s: unknown value placement %d", name,
                            (int)o->value_placement);
    if (o->description && strlen(o->description) > SOP__STORE_DESC_MAX)
        return sop__err_set(err, SOP_INVALID, 0, "store %s: description longer than %d bytes", name,
                            SOP__STORE_DESC_MAX);
    if (o->streaming &&
        (!o->is_unique || o->key_order_fields != 2 || o->value_placement == SOP_VALUES_IN_NODE))
        return sop__err_set(err, SOP_INVALID, 0,
                            "store %s: a streaming store is unique, has two key fields (key, "
                            "chunk) and keeps values outside its nodes (use sop_stream_create)",
                            name);
    sop__txstore *open = find_open(t, name);
    if (open && !open->dropped)
        return sop__err_set(err, SOP_EXISTS, 0, "store %s already exists", name);
    sop__storeinfo probe;
    sop_rc rc = sop__repo_read(t->db->dir, name, &probe, err);
    if (rc == SOP_OK && !(open && open->dropped))
        return sop__err_set(err, SOP_EXISTS, 0, "store %s already exists", name);
    if (rc != SOP_OK && rc != SOP_NOTFOUND)
        return rc;
    if (open && open->dropped)
        return sop__err_set(err, SOP_UNSUPPORTED, 0,
                            "store %s: re-creating a store dropped in the same transaction", name);
    sop__storeinfo info;
    memset(&info, 0, sizeof(info));
    snprintf(info.name, sizeof(info.name), "%s", name);
    if (o->description)
        snprintf(info.description, sizeof(info.description), "%s", o->description);
    info.slot_length = o->slot_length;
    info.is_unique = o->is_unique;
    info.leaf_load_balancing = o->leaf_load_balancing;
    info.globally_cached = o->globally_cached && o->value_placement != SOP_VALUES_IN_NODE;
    info.placement = (uint8_t)o->value_placement;
    info.key_order_fields = o->key_order_fields;
    info.streaming = o->streaming;
    sop__uuid_v4(info.root_id);
    info.created_ms = info.updated_ms = sop__now_ms();
    info.registry_cache_ms = o->cache.registry_ms;
    info.node_cache_ms = o->cache.node_ms;
    /* values kept in nodes are cached with them, never on their own */
    info.value_cache_ms = o->value_placement == SOP_VALUES_IN_NODE ? -1 : o->cache.value_ms;
    info.storeinfo_cache_ms = o->cache.store_info_ms;
    info.registry_cache_sliding = o->cache.registry_sliding;
    info.node_cache_sliding = o->cache.node_sliding;
    info.value_cache_sliding = o->cache.value_sliding;
    info.storeinfo_cache_sliding = o->cache.store_info_sliding;
    return store_attach(t, &info, true, out, err);
}

sop_rc sop__txn_store_drop(sop_txn *t, const char *name, sop_err *err)
{
    sop__txstore *ts;
    SOP__TRY(sop__txn_store_open(t, name, &ts, err));
    SOP__TRY(sop__txn_check_write(ts, err));
    ts->dropped = true;
    return SOP_OK;
}

/* ---- values outside nodes ----------------------------------------------- */

bool sop__txstore_refs_values(const sop__txstore *ts)
{
    return ts != NULL && ts->info.placement != SOP__VALUES_IN_NODE;
}

static sop_rc push_id(uint8_t (**arr)[16], size_t *n, size_t *cap, const uint8_t id[16],
                      sop_err *err)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        uint8_t(*g)[16] = sop__realloc(*arr, c * 16);
        if (g == NULL)
            return sop__err_set(err, SOP_NOMEM, 0, "transaction: no memory");
        *arr = g;
        *cap = c;
    }
    memcpy((*arr)[(*n)++], id, 16);
    return SOP_OK;
}

/* A value reference (in the node, 24 bytes): blob ID, length (u32) and the
 * CRC-32C of the value, so a damaged or swapped value blob is detected. */
static void put_ref(uint8_t ref[SOP__VALREF_SIZE], const uint8_t id[16], uint32_t len, uint32_t crc)
{
    memcpy(ref, id, 16);
    sop__le_put32(ref + 16, len);
    sop__le_put32(ref + 20, crc);
}

sop_rc sop__valref_parse(const char *store, const uint8_t *ref, size_t reflen, const uint8_t **id,
                         uint32_t *len, uint32_t *crc, sop_err *err)
{
    if (reflen != SOP__VALREF_SIZE)
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "store %s: a value reference of %zu bytes (expected %d)", store, reflen,
                            SOP__VALREF_SIZE);
    *id = ref;
    *len = sop__le_get32(ref + 16);
    *crc = sop__le_get32(ref + 20);
    return SOP_OK;
}

sop_rc sop__txstore_value_put(sop__txstore *ts, const void *val, size_t len,
                              uint8_t ref[SOP__VALREF_SIZE], sop_err *err)
{
    if (len > SOP_VALUE_SEPARATE_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "value: %zu bytes exceeds the %u-byte limit", len,
                            SOP_VALUE_SEPARATE_MAX);
    uint8_t id[16];
    sop__uuid_v4(id);
    if (ts->info.placement == SOP__VALUES_SEPARATE) {
        if (ts->npending == ts->cappending) {
            size_t c = ts->cappending ? ts->cappending * 2 : 16;
            sop__pending_value *g = sop__realloc(ts->pending, c * sizeof(*g));
            if (g == NULL)
                return sop__err_set(err, SOP_NOMEM, 0, "transaction: no memory");
            ts->pending = g;
            ts->cappending = c;
        }
        uint8_t *copy = sop__malloc(len ? len : 1);
        if (copy == NULL)
            return sop__err_set(err, SOP_NOMEM, 0, "transaction: no memory for a %zu-byte value",
                                len);
        if (len)
            memcpy(copy, val, len);
        sop__pending_value *pv = &ts->pending[ts->npending++];
        memcpy(pv->id, id, 16);
        pv->data = copy;
        pv->len = len;
    } else {
        /* active: announce, then write and sync the blob now, so commit
         * only has to reference it */
        sop_db *db = ts->txn->db;
        SOP__TRY(sop__db_append_intent(db, ts->txn->id, ts->info.name, (const uint8_t(*)[16])id, 1,
                                       err));
        SOP__TRY(sop__log_sync(db->log, err));
        SOP__TRY(push_id(&ts->active, &ts->nactive, &ts->capactive, id, err));
        if (ts->created) {
            /* The store appears only at commit, but its early values need
             * its folder now. A rollback removes the values, never the
             * folder (a concurrent creator may own it); a folder without
             * info is not a store (repo.h invariant 2). */
            SOP__TRY(sop__repo_ensure_dir(db->dir, ts->info.name, err));
        }
        sop__dbstore *st;
        SOP__TRY(sop__db_store(db, ts->info.name, &st, err));
        SOP__TRY(sop__blob_put(st->blobs, id, val, len, SOP__BLOB_SYNC, err));
    }
    put_ref(ref, id, (uint32_t)len, sop__crc32c(0, val, len));
    return SOP_OK;
}

sop_rc sop__txstore_value_get(sop__txstore *ts, const uint8_t *ref, size_t reflen,
                              const uint8_t **val, size_t *len, sop_err *err)
{
    const uint8_t *id = NULL;
    uint32_t want = 0, crc = 0;
    SOP__TRY(sop__valref_parse(ts->info.name, ref, reflen, &id, &want, &crc, err));
    for (size_t i = 0; i < ts->npending; i++) {
        if (memcmp(ts->pending[i].id, id, 16) == 0) {
            *val = ts->pending[i].data;
            *len = ts->pending[i].len;
            return SOP_OK;
        }
    }
    sop__dbstore *st;
    SOP__TRY(sop__db_store(ts->txn->db, ts->info.name, &st, err));
    char path[SOP__BLOB_PATH_MAX];
    sop__blob_path(st->blobs, id, path);
    uint8_t *data;
    size_t got;
    sop__l2 *l2 = ts->txn->no_cache ? NULL : &ts->txn->db->l2;
    if (l2 && sop__l2_value_get(l2, &ts->info, id, &data, &got)) {
        if (got == want && sop__crc32c(0, data, got) == crc)
            goto found;
        sop__free(data); /* not this value: read the blob */
    }
    sop_rc rc = sop__blob_get(st->blobs, id, &data, &got, err);
    if (rc == SOP_NOTFOUND)
        return vanished(ts, id, "value blob", path, err); /* replaced since read? */
    SOP__TRY(rc);
    if (l2 && got == want && sop__crc32c(0, data, got) == crc)
        sop__l2_value_put(l2, &ts->info, id, data, got);
    if (got != want || sop__crc32c(0, data, got) != crc) {
        sop__free(data);
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "store %s: value blob %s does not match its reference (%zu bytes, "
                            "expected %u with another checksum)",
                            ts->info.name, path, got, want);
    }
found:
    sop__free(ts->vbuf);
    ts->vbuf = data;
    *val = data;
    *len = got;
    return SOP_OK;
}

void *sop__txstore_value_take(sop__txstore *ts, const void *val)
{
    if (val == NULL || val != ts->vbuf)
        return NULL;
    void *p = ts->vbuf;
    ts->vbuf = NULL;
    return p;
}

sop_rc sop__txstore_value_drop(sop__txstore *ts, const uint8_t *ref, size_t reflen, sop_err *err)
{
    const uint8_t *id = NULL;
    uint32_t len = 0, crc = 0;
    SOP__TRY(sop__valref_parse(ts->info.name, ref, reflen, &id, &len, &crc, err));
    for (size_t i = 0; i < ts->npending; i++) {
        if (memcmp(ts->pending[i].id, id, 16) == 0) {
            sop__free(ts->pending[i].data);
            ts->pending[i] = ts->pending[--ts->npending];
            return SOP_OK;
        }
    }
    return push_id(&ts->dead, &ts->ndead, &ts->capdead, id, err);
}

/* ---- the item action log and commit merging ------------------------------ */

#define ACT_HEAD 29u /* kind 1, id 16, version 4, klen 4, vlen 4 */

void sop__txstore_note_scan(sop__txstore *ts)
{
    ts->unmergeable = true;
    sop__free(ts->acts);
    ts->acts = NULL;
    ts->nacts = ts->capacts = 0;
}

bool sop__txstore_recording(const sop__txstore *ts)
{
    return ts != NULL && !ts->unmergeable && ts->txn->mode == SOP_TXN_WRITE;
}

void sop__txstore_note(sop__txstore *ts, sop__act_kind kind, const uint8_t *key, uint32_t klen,
                       const uint8_t *id, uint32_t version, const uint8_t *val, uint32_t vlen)
{
    if (!sop__txstore_recording(ts))
        return;
    size_t need = ACT_HEAD + (size_t)klen + vlen;
    if (ts->nacts + need > SOP__ACTS_MAX) {
        sop__txstore_note_scan(ts);
        return;
    }
    if (ts->nacts + need > ts->capacts) {
        size_t c = ts->capacts ? ts->capacts : 4096;
        while (c < ts->nacts + need)
            c *= 2;
        uint8_t *g = sop__realloc(ts->acts, c);
        if (g == NULL) {
            sop__txstore_note_scan(ts);
            return;
        }
        ts->acts = g;
        ts->capacts = c;
    }
    uint8_t *p = ts->acts + ts->nacts;
    p[0] = (uint8_t)kind;
    if (id)
        memcpy(p + 1, id, 16);
    else
        memset(p + 1, 0, 16);
    sop__le_put32(p + 17, version);
    sop__le_put32(p + 21, klen);
    sop__le_put32(p + 25, vlen);
    if (klen)
        memcpy(p + ACT_HEAD, key, klen);
    if (vlen)
        memcpy(p + ACT_HEAD + klen, val, vlen);
    ts->nacts += need;
}

static bool id_zero(const uint8_t id[16])
{
    for (int i = 0; i < 16; i++)
        if (id[i])
            return false;
    return true;
}

static sop_rc item_conflict(const sop__txstore *ts, const char *what, sop_err *err)
{
    return sop__err_set(err, SOP_CONFLICT, 0,
                        "store %s: %s by another transaction since this one read it; retry",
                        ts->info.name, what);
}

/* Replays one action on the fresh tree. */
static sop_rc replay_one(sop__txstore *ts, sop__cursor *c, const uint8_t *p, sop_err *err)
{
    sop__act_kind kind = (sop__act_kind)p[0];
    const uint8_t *id = p + 1;
    uint32_t version = sop__le_get32(p + 17), klen = sop__le_get32(p + 21),
             vlen = sop__le_get32(p + 25);
    const uint8_t *key = p + ACT_HEAD, *val = p + ACT_HEAD + klen;
    sop_rc rc;
    switch (kind) {
    case SOP__ACT_ADD:
        rc = sop__cursor_add(c, key, klen, val, vlen, id, SOP_ADD, err);
        return rc == SOP_EXISTS ? item_conflict(ts, "a key it added was added", err) : rc;
    case SOP__ACT_ABSENT:
        rc = id_zero(id) ? sop__cursor_find(c, key, klen, err)
                         : sop__cursor_find_id(c, key, klen, id, err);
        if (rc == SOP_OK)
            return item_conflict(ts, "a key it found missing was added", err);
        return rc == SOP_NOTFOUND ? SOP_OK : rc;
    case SOP__ACT_PRESENT:
        rc = sop__cursor_find(c, key, klen, err);
        return rc == SOP_NOTFOUND ? item_conflict(ts, "a key it found was removed", err) : rc;
    case SOP__ACT_UPDATE:
    case SOP__ACT_REMOVE:
    case SOP__ACT_UPDATE_KEY:
    case SOP__ACT_READ:
        break;
    default:
        return sop__err_set(err, SOP_INTERNAL, 0, "store %s: bad item action %d", ts->info.name,
                            (int)kind);
    }
    rc = sop__cursor_find_id(c, key, klen, id, err);
    if (rc == SOP_NOTFOUND)
        return item_conflict(ts, "an item it used was removed", err);
    SOP__TRY(rc);
    sop__node *n;
    uint32_t i;
    SOP__TRY(sop__cursor_current(c, &n, &i, err));
    if (n->items[i].version != version)
        return item_conflict(ts, "an item it used was changed", err);
    switch (kind) {
    case SOP__ACT_UPDATE:
        return sop__cursor_update_value(c, val, vlen, err);
    case SOP__ACT_REMOVE:
        return sop__cursor_remove(c, err);
    case SOP__ACT_UPDATE_KEY:
        return sop__cursor_update_key(c, val, vlen, err);
    default:
        return SOP_OK;
    }
}

/*
 * Commit merging (under the commit lock): nodes this store's part read
 * were changed by commits since. Forget every node, start from the store's
 * current state and replay the item actions on it; each checks that the
 * items it depends on are as they were (SOP_CONFLICT otherwise). Values
 * need nothing: references replay as they are, and the blobs of replaced
 * values are the same ones (the same item version means the same value).
 */
static sop_rc merge_store(sop__txstore *ts, sop_err *err)
{
    sop__storeinfo cur;
    sop_rc rc = sop__repo_read(ts->txn->db->dir, ts->info.name, &cur, err);
    if (rc == SOP_NOTFOUND || (rc == SOP_OK && memcmp(cur.root_id, ts->info.root_id, 16) != 0))
        return sop__err_set(err, SOP_CONFLICT, 0, "store %s was dropped by another transaction",
                            ts->info.name);
    SOP__TRY(rc);
    forget_nodes(ts);
    ts->info_cached = false;
    ts->info.seq = cur.seq;
    ts->info.count = cur.count;
    ts->count_at_open = cur.count;
    ts->bt.core.count = cur.count;
    ts->bt.core.poisoned = false;
    sop__cursor c;
    sop__cursor_init(&c, &ts->bt.core);
    c.internal = true;
    for (size_t at = 0; rc == SOP_OK && at < ts->nacts;) {
        const uint8_t *p = ts->acts + at;
        rc = replay_one(ts, &c, p, err);
        at += ACT_HEAD + (size_t)sop__le_get32(p + 21) + sop__le_get32(p + 25);
    }
    sop__cursor_fini(&c);
    if (rc != SOP_OK && rc != SOP_CONFLICT)
        sop__txn_poison(ts->txn);
    return rc;
}

/* ---- phase 1 --------------------------------------------------------------- */

/* Whether a store has anything to write. */
static bool store_changed(const sop__txstore *ts)
{
    if (ts->created || ts->dropped || ts->npending || ts->ndead || ts->nactive ||
        ts->bt.core.count != ts->count_at_open)
        return true;
    sop__idmap_slot *slot;
    for (size_t pos = 0; (pos = sop__idmap_next(&ts->nodes, pos, &slot)) != 0;)
        if (((sop__txnode *)slot->val)->state != SOP__TXN_READ)
            return true;
    return false;
}

/* Every node this store's part read or changed still has the version it
 * read (and brand-new nodes do not exist yet). */
static sop_rc validate_store(sop__txstore *ts, sop_err *err)
{
    if (ts->created) {
        sop__storeinfo probe;
        sop_rc rc = sop__repo_read(ts->txn->db->dir, ts->info.name, &probe, err);
        if (rc == SOP_OK)
            return sop__err_set(err, SOP_CONFLICT, 0, "store %s was created by another transaction",
                                ts->info.name);
        return rc == SOP_NOTFOUND ? SOP_OK : rc;
    }
    sop__storeinfo cur;
    sop_rc rc = sop__repo_read(ts->txn->db->dir, ts->info.name, &cur, err);
    if (rc == SOP_NOTFOUND || (rc == SOP_OK && memcmp(cur.root_id, ts->info.root_id, 16) != 0))
        return sop__err_set(err, SOP_CONFLICT, 0, "store %s was dropped by another transaction",
                            ts->info.name);
    SOP__TRY(rc);
    /* a cached info may be older than the nodes read (its count too) */
    if (ts->info_cached && cur.seq != ts->info.seq)
        return sop__err_set(err, SOP_CONFLICT, 0,
                            "store %s changed since its cached information was read; retry",
                            ts->info.name);
    size_t n = ts->nodes.count;
    if (n == 0) {
        /* nothing read: only an empty store's emptiness can have changed */
        if (ts->count_at_open == 0 && cur.count != 0 && store_changed(ts))
            return sop__err_set(err, SOP_CONFLICT, 0, "store %s changed; retry", ts->info.name);
        return SOP_OK;
    }
    uint8_t(*lids)[16] = sop__malloc(n * 16);
    sop__handle *hs = sop__malloc(n * sizeof(*hs));
    bool *found = sop__malloc(n);
    sop__txnode **tns = sop__malloc(n * sizeof(*tns));
    if (!lids || !hs || !found || !tns) {
        rc = sop__err_set(err, SOP_NOMEM, 0, "commit: no memory");
        goto out;
    }
    size_t k = 0;
    sop__idmap_slot *slot;
    for (size_t pos = 0; (pos = sop__idmap_next(&ts->nodes, pos, &slot)) != 0;) {
        memcpy(lids[k], slot->id, 16);
        tns[k++] = slot->val;
    }
    bool root_seen = false;
    for (size_t i = 0; i < k; i++)
        if (memcmp(lids[i], ts->info.root_id, 16) == 0)
            root_seen = true;
    sop__dbstore *st;
    rc = sop__db_store(ts->txn->db, ts->info.name, &st, err);
    if (rc == SOP_OK)
        rc = sop__registry_get(st->reg, (const uint8_t(*)[16])lids, k, hs, found, err);
    for (size_t i = 0; rc == SOP_OK && i < k; i++) {
        sop__txnode *tn = tns[i];
        bool ok = tn->state == SOP__TXN_NEW
                      ? !found[i]
                      : found[i] && hs[i].version == tn->h.version && !hs[i].deleted;
        if (!ok)
            rc = sop__err_set(err, SOP_CONFLICT, 0,
                              "store %s: a node the transaction used was changed by another "
                              "transaction; retry",
                              ts->info.name);
    }
    /* an empty store whose root we never loaded: someone may have filled it */
    if (rc == SOP_OK && !root_seen && ts->count_at_open == 0 && cur.count != 0)
        rc = sop__err_set(err, SOP_CONFLICT, 0, "store %s changed; retry", ts->info.name);
out:
    sop__free(lids);
    sop__free(hs);
    sop__free(found);
    sop__free(tns);
    return rc;
}

/* Validation found something this store's part read stale: whatever the
 * shared cache says of the store's handles and info may be why, so it goes
 * (the retry reads storage and fills the cache again). */
static void l2_forget(sop__txstore *ts)
{
    sop__l2 *l2 = &ts->txn->db->l2;
    if (ts->created || !sop__l2_available(l2) ||
        (ts->info.registry_cache_ms <= 0 && ts->info.storeinfo_cache_ms <= 0))
        return;
    sop__l2_batch *b = sop__malloc(sizeof(*b));
    if (b == NULL)
        return;
    sop__l2_batch_init(b, l2);
    sop__l2_batch_info(b, &ts->info);
    sop__idmap_slot *slot;
    for (size_t pos = 0; (pos = sop__idmap_next(&ts->nodes, pos, &slot)) != 0;)
        sop__l2_batch_handle(b, &ts->info, slot->id);
    sop__l2_batch_flush(b);
    sop__free(b);
}

typedef struct claim_check {
    sop_txn *t;
    sop_err *err;
} claim_check;

/* lid NULL: the prepared transaction creates or drops the store. A
 * transaction that drops a store conflicts with any claim in it. */
static sop_rc claim_hit(void *ctx, const char *store, const uint8_t lid[16])
{
    claim_check *c = ctx;
    sop__txstore *ts = find_open(c->t, store);
    if (ts && (lid == NULL || ts->dropped || sop__idmap_get(&ts->nodes, lid)))
        return sop__err_set(c->err, SOP_CONFLICT, 0,
                            "store %s: a node the transaction used is claimed by a prepared "
                            "transaction; retry after it is decided",
                            store);
    return SOP_OK;
}

static sop_rc validate(sop_txn *t, sop_err *err)
{
    for (sop__txstore *ts = t->stores; ts; ts = ts->next) {
        sop_rc rc = validate_store(ts, err);
        if (rc == SOP_CONFLICT)
            l2_forget(ts);
        if (rc == SOP_CONFLICT && !ts->unmergeable && !ts->created && !ts->dropped &&
            t->mode == SOP_TXN_WRITE) {
            /* different items of the same nodes: replay ours on theirs */
            rc = merge_store(ts, err);
            if (rc == SOP_OK)
                rc = validate_store(ts, err);
        }
        SOP__TRY(rc);
    }
    claim_check c = {t, err};
    return sop__db_prepared_claims(t->db, claim_hit, &c, err);
}

/* One store's part of the redo record (db.c reads it back). */
static sop_rc build_store(sop__txstore *ts, buf *b, sop_err *err)
{
    size_t nl = strlen(ts->info.name);
    buf_u32(b, (uint32_t)nl);
    buf_put(b, ts->info.name, nl);
    if (ts->dropped) {
        buf_u8(b, 2); /* drop: state and lists empty */
        buf_u64(b, 0);
        buf_u64(b, 0);
        buf_u64(b, 0);
        for (int i = 0; i < 4; i++)
            buf_u32(b, 0);
        return SOP_OK;
    }
    sop__storeinfo cur = ts->info;
    uint64_t count = ts->bt.core.count;
    if (ts->created) {
        buf_u8(b, 1);
        size_t fl = sop__storeinfo_fixed_size();
        buf_u32(b, (uint32_t)fl);
        uint8_t *at = buf_room(b, fl);
        if (at)
            sop__storeinfo_encode_fixed(&ts->info, at);
        cur.seq = 0;
    } else if (ts->txn->preparing) {
        /* decided later, maybe after other commits to the store: the
         * state is relative (the count is our delta, two's complement)
         * and made absolute under the lock that commits it (db.c) */
        SOP__TRY(sop__repo_read(ts->txn->db->dir, ts->info.name, &cur, err));
        count = ts->bt.core.count - ts->count_at_open;
        buf_u8(b, 4);
    } else {
        /* under the commit lock: the latest state, plus our change */
        SOP__TRY(sop__repo_read(ts->txn->db->dir, ts->info.name, &cur, err));
        count = cur.count + ts->bt.core.count - ts->count_at_open;
        buf_u8(b, 0);
    }
    buf_u64(b, cur.seq + 1);
    buf_u64(b, count);
    buf_u64(b, (uint64_t)sop__now_ms());

    /* handles: new bodies go in the inactive slot and become active; the
     * old body's slot is cleared (its blob is removed after the commit) */
    size_t at_n = b->len;
    uint32_t n = 0;
    buf_u32(b, 0);
    sop__idmap_slot *slot;
    for (size_t pos = 0; (pos = sop__idmap_next(&ts->nodes, pos, &slot)) != 0;) {
        sop__txnode *tn = slot->val;
        if (tn->state == SOP__TXN_READ)
            continue;
        sop__handle nh;
        memset(&nh, 0, sizeof(nh));
        memcpy(nh.lid, slot->id, 16);
        if (tn->state == SOP__TXN_REMOVED) {
            nh = tn->h;
            nh.version = tn->h.version + 1;
        } else {
            sop__uuid_v4(tn->newphys);
            bool to_b = tn->state == SOP__TXN_DIRTY && !tn->h.active_b;
            memcpy(to_b ? nh.pb : nh.pa, tn->newphys, 16);
            nh.active_b = to_b;
            nh.version = tn->state == SOP__TXN_DIRTY ? tn->h.version + 1 : 1;
        }
        buf_u8(b, tn->state == SOP__TXN_REMOVED ? 1 : 0);
        uint8_t *op = buf_room(b, SOP__HANDLE_SIZE);
        if (op)
            sop__handle_encode(&nh, op);
        n++;
    }
    if (!b->nomem)
        put_u32_at(b, at_n, n);

    /* blobs: node bodies, then separately stored values */
    at_n = b->len;
    n = 0;
    buf_u32(b, 0);
    for (size_t pos = 0; (pos = sop__idmap_next(&ts->nodes, pos, &slot)) != 0;) {
        sop__txnode *tn = slot->val;
        if (tn->state != SOP__TXN_DIRTY && tn->state != SOP__TXN_NEW)
            continue;
        size_t sz = sop__node_encoded_size(tn->node);
        buf_put(b, tn->newphys, 16);
        buf_u32(b, (uint32_t)sz);
        uint8_t *at = buf_room(b, sz);
        if (at)
            sop__node_encode(tn->node, at);
        n++;
    }
    for (size_t i = 0; i < ts->npending; i++) {
        buf_put(b, ts->pending[i].id, 16);
        buf_u32(b, (uint32_t)ts->pending[i].len);
        buf_put(b, ts->pending[i].data, ts->pending[i].len);
        n++;
    }
    if (!b->nomem)
        put_u32_at(b, at_n, n);

    /* blobs the commit makes obsolete: replaced and removed bodies, values */
    at_n = b->len;
    n = 0;
    buf_u32(b, 0);
    for (size_t pos = 0; (pos = sop__idmap_next(&ts->nodes, pos, &slot)) != 0;) {
        sop__txnode *tn = slot->val;
        if (tn->state != SOP__TXN_DIRTY && tn->state != SOP__TXN_REMOVED)
            continue;
        buf_put(b, sop__handle_active(&tn->h), 16);
        n++;
    }
    for (size_t i = 0; i < ts->ndead; i++, n++)
        buf_put(b, ts->dead[i], 16);
    if (!b->nomem)
        put_u32_at(b, at_n, n);

    /* values written early: referenced by the commit, removed if a
     * prepared transaction is rolled back */
    buf_u32(b, (uint32_t)ts->nactive);
    for (size_t i = 0; i < ts->nactive; i++)
        buf_put(b, ts->active[i], 16);
    return SOP_OK;
}

static sop_rc build_redo(sop_txn *t, sop_err *err)
{
    buf b = {0};
    buf_u32(&b, 0x4f445253u); /* "SRDO" */
    size_t at_n = b.len;
    buf_u32(&b, 0);
    uint32_t n = 0;
    sop_rc rc = SOP_OK;
    for (sop__txstore *ts = t->stores; ts && rc == SOP_OK; ts = ts->next) {
        if (!store_changed(ts) || (ts->created && ts->dropped))
            continue;
        rc = build_store(ts, &b, err);
        n++;
    }
    if (rc == SOP_OK && b.nomem)
        rc = sop__err_set(err, SOP_NOMEM, 0, "commit: no memory for a %zu-byte redo record", b.len);
    if (rc != SOP_OK) {
        sop__free(b.p);
        return rc;
    }
    put_u32_at(&b, at_n, n);
    sop__free(t->redo);
    t->redo = b.p;
    t->redo_len = b.len;
    return SOP_OK;
}

static bool txn_changed(const sop_txn *t)
{
    for (const sop__txstore *ts = t->stores; ts; ts = ts->next)
        if (store_changed(ts))
            return true;
    return false;
}

static sop_rc check_deadline(sop_txn *t, sop_err *err)
{
    if (sop__now_ms() > t->deadline_ms)
        return sop__err_set(err, SOP_TIMEOUT, 0,
                            "transaction: older than its maximum duration; roll it back");
    return SOP_OK;
}

/*
 * Read-only commit: what was read is unchanged. No lock: the versions are
 * read between two looks at the state sector, and count only if no commit
 * was claimed or in flight in between (a seqlock; docs/locking.md). A
 * commit left half applied by a dead process is finished first; one in
 * flight is waited out.
 */
static sop_rc commit_reader(sop_txn *t, sop_err *err)
{
    sop_db *db = t->db;
    for (unsigned backoff = 1;;) {
        uint64_t seq, seq2;
        bool pending, pending2;
        SOP__TRY(sop__db_state(db, &seq, &pending, err));
        if (pending) {
            /* our own, or a dead process's: finish it; a live one: wait */
            SOP__TRY(sop__db_finish_pending(db, err));
        } else {
            for (sop__txstore *ts = t->stores; ts; ts = ts->next) {
                sop_rc rc = validate_store(ts, err);
                if (rc == SOP_CONFLICT)
                    l2_forget(ts);
                SOP__TRY(rc);
            }
            SOP__TRY(sop__db_state(db, &seq2, &pending2, err));
            if (seq2 == seq && !pending2)
                return SOP_OK;
        }
        SOP__TRY(check_deadline(t, err));
        struct timespec ts = {0, (long)backoff * 100000L}; /* 0.1 .. 1.6 ms */
        nanosleep(&ts, NULL);
        if (backoff < 16)
            backoff *= 2;
    }
}

/* Shared by phase 1 and prepare: lock, validate, build. On failure the
 * lock is released and the transaction rolled back. */
static sop_rc lock_and_validate(sop_txn *t, sop_err *err)
{
    sop_db *db = t->db;
    SOP__TRY(sop__db_lock(db, t->deadline_ms, err));
    SOP__CRASH_POINT(P1_LOCKED);
    sop_rc rc = sop__db_recover_pending(db, err);
    if (rc == SOP_OK)
        rc = validate(t, err);
    if (rc == SOP_OK)
        rc = build_redo(t, err);
    if (rc != SOP_OK)
        sop__db_unlock(db);
    else
        SOP__CRASH_POINT(P1_VALIDATED);
    return rc;
}

/*
 * lock_and_validate, then claim the next commit sequence number. A claim
 * that finds the fence moved - this process's Redis lock expired while it
 * worked and another commit went in - is retried from the lock, a bounded
 * number of times with jittered backoff: the retry validates (and merges)
 * against the newer commit, so only a real conflict fails. Returns with
 * the lock held and the claim made.
 */
#define FENCE_RETRIES 3

static sop_rc lock_validate_claim(sop_txn *t, sop_err *err)
{
    for (unsigned attempt = 0;; attempt++) {
        SOP__TRY(lock_and_validate(t, err));
        sop__db_lock_keepalive(t->db);
        sop_rc rc = sop__db_claim_seq(t->db, &t->seq, err);
        if (rc == SOP_OK)
            return SOP_OK;
        sop__db_unlock(t->db);
        if (rc != SOP_CONFLICT || attempt == FENCE_RETRIES)
            return rc;
        unsigned ms = 1 + (unsigned)(sop__random64() % (4u << attempt));
        struct timespec ts = {0, (long)ms * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Nothing durable happened: roll back, keeping the first error. */
static sop_rc fail_phase1(sop_txn *t, sop_rc rc, sop_err *err)
{
    (void)err;
    t->state = SOP__TXN_ACTIVE;
    sop_txn_rollback(t, NULL);
    return rc;
}

sop_rc sop_txn_phase1(sop_txn *t, sop_err *err)
{
    if (t == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_txn_phase1: NULL transaction");
    SOP__TRY(sop__txn_check_active(t, err));
    SOP__TRY(check_holds(t, err));
    sop_rc rc = check_deadline(t, err);
    if (rc != SOP_OK)
        return fail_phase1(t, rc, err);
    if (t->mode == SOP_TXN_NOCHECK) {
        t->state = SOP__TXN_PHASE1_DONE;
        return SOP_OK;
    }
    if (t->mode == SOP_TXN_READ || !txn_changed(t)) {
        rc = t->mode == SOP_TXN_READ || t->stores ? commit_reader(t, err) : SOP_OK;
        if (rc != SOP_OK)
            return fail_phase1(t, rc, err);
        t->state = SOP__TXN_PHASE1_DONE;
        return SOP_OK;
    }
    sop_db *db = t->db;
    /* The claim sets the marker first: if we die after the record is
     * durable, whoever takes the lock next finds it and redoes the record. */
    rc = lock_validate_claim(t, err);
    if (rc != SOP_OK)
        return fail_phase1(t, rc, err);
    rc = sop__log_append(db->log, SOP__LOG_COMMIT, t->id, t->seq, t->redo, t->redo_len, err);
    if (rc == SOP_OK) {
        SOP__CRASH_POINT(P1_RECORD_WRITTEN);
        rc = sop__log_sync(db->log, err);
    }
    if (rc != SOP_OK) {
        /* Not durable, so not committed - provided the record can never
         * count later: retract it. If even that fails the outcome is
         * unknown until recovery, and the log refuses further commits. */
        sop_err rerr;
        if (sop__log_retract(db->log, &rerr) != SOP_OK)
            sop__err_prefix(err, "commit outcome unknown until the database is recovered");
        sop__db_clear_pending(db, t->seq, NULL);
        sop__db_unlock(db);
        return fail_phase1(t, rc, err);
    }
    db->log_max_seq = t->seq;
    SOP__CRASH_POINT(P1_DURABLE);
    t->state = SOP__TXN_PHASE1_DONE;
    return SOP_OK;
}

/* After a commit is applied: the nodes it wrote, already decoded here, go
 * to the L1 cache under their new bodies' IDs and versions, so the next
 * transaction does not read and decode what this one just wrote. */
static void cache_committed(sop_txn *t)
{
    if (t->no_cache)
        return;
    for (sop__txstore *ts = t->stores; ts; ts = ts->next) {
        sop__idmap_slot *slot;
        for (size_t pos = 0; (pos = sop__idmap_next(&ts->nodes, pos, &slot)) != 0;) {
            sop__txnode *tn = slot->val;
            if (tn->state != SOP__TXN_DIRTY && tn->state != SOP__TXN_NEW)
                continue;
            uint32_t version = tn->state == SOP__TXN_DIRTY ? (uint32_t)tn->h.version + 1 : 1;
            tn->node->version = version;
            tn->node = sop__l1_share(tn->newphys, version, tn->node);
        }
    }
}

sop_rc sop_txn_phase2(sop_txn *t, sop_err *err)
{
    if (t == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_txn_phase2: NULL transaction");
    if (t->state == SOP__TXN_COMMITTED)
        return SOP_OK;
    if (t->state != SOP__TXN_PHASE1_DONE)
        return sop__err_set(err, SOP_INVALID, 0, "transaction: phase 2 before phase 1");
    sop_db *db = t->db;
    sop_rc rc = SOP_OK;
    if (t->redo) {
        sop__db_lock_keepalive(db);
        rc = sop__redo_apply(db, t->redo, t->redo_len, false, err);
        if (rc == SOP_OK) {
            SOP__CRASH_POINT(P2_DONE);
            cache_committed(t);
            rc = sop__db_clear_pending(db, t->seq, err);
        } else {
            /* Failed: the marker stays, handed off: the next holder of the
             * lock (or recovery) finishes the commit from our log. */
            sop__db_hand_off(db, t->seq);
        }
        if (rc == SOP_OK)
            rc = sop__db_maybe_checkpoint(db, err);
        sop__db_unlock(db);
    }
    t->state = SOP__TXN_COMMITTED;
    release(t);
    return rc;
}

sop_rc sop_txn_commit(sop_txn *t, sop_err *err)
{
    SOP__TRY(sop_txn_phase1(t, err));
    return sop_txn_phase2(t, err);
}

sop_rc sop_txn_prepare(sop_txn *t, const char *owner, uint8_t txid_out[SOP_ID_LEN], sop_err *err)
{
    if (t == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_txn_prepare: NULL transaction");
    SOP__TRY(sop__txn_check_active(t, err));
    SOP__TRY(check_holds(t, err));
    if (t->mode != SOP_TXN_WRITE)
        return sop__err_set(err, SOP_INVALID, 0, "sop_txn_prepare: not a write transaction");
    if (owner && strlen(owner) > 255)
        return sop__err_set(err, SOP_INVALID, 0, "sop_txn_prepare: owner tag over 255 bytes");
    sop_rc rc = check_deadline(t, err);
    if (rc != SOP_OK)
        return fail_phase1(t, rc, err);
    /* The claim fences the prepare like a commit: nobody commits over the
     * nodes it validated before its file (and claims) exist. */
    t->preparing = true;
    rc = lock_validate_claim(t, err);
    t->preparing = false;
    if (rc != SOP_OK)
        return fail_phase1(t, rc, err);
    rc = sop__db_prepared_write(t->db, t->id, owner, t->redo, t->redo_len, err);
    /* Once the file is durable the transaction is prepared, whatever
     * happens to the marker: one that cannot be cleared is handed off (it
     * has no record, so whoever finds it clears it). */
    if (sop__db_clear_pending(t->db, t->seq, NULL) != SOP_OK)
        sop__db_hand_off(t->db, t->seq);
    sop__db_unlock(t->db);
    if (rc != SOP_OK)
        return fail_phase1(t, rc, err);
    SOP__CRASH_POINT(PREP_DURABLE);
    if (txid_out)
        memcpy(txid_out, t->id, 16);
    t->state = SOP__TXN_PREPARED;
    /* its early-written values now belong to the prepared file */
    for (sop__txstore *ts = t->stores; ts; ts = ts->next)
        ts->nactive = 0;
    release(t);
    return SOP_OK;
}
