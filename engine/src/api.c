/*
 * api.c - every public sop_* function of the B-tree and cursor API: argument
 * validation, then a call into the layer that does the work.
 *
 * Invariants:
 *  1. Nothing below this file sees a NULL handle, a NULL buffer with a
 *     non-zero length, or a length that does not fit the engine's limits.
 *  2. Every error leaves err filled (sop__err_set) with the returned code.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "btree.h"
#include "err.h"
#include "mem.h"
#include "memrepo.h"
#include "txn.h"
#include "uuid.h"

void sop_store_options_init(sop_store_options *o)
{
    if (o == NULL)
        return;
    memset(o, 0, sizeof(*o));
    o->slot_length = SOP_SLOT_LENGTH_DEFAULT;
    o->is_unique = true;
    o->value_placement = SOP_VALUES_IN_NODE;
    o->cache.registry_ms = o->cache.node_ms = o->cache.value_ms = o->cache.store_info_ms = -1;
}

static sop_rc bad_arg(sop_err *err, const char *what)
{
    return sop__err_set(err, SOP_INVALID, 0, "%s", what);
}

/* Key and value checks shared by every call that takes them. */
static sop_rc check_kv(const void *key, size_t klen, const void *val, size_t vlen, bool has_val,
                       size_t vmax, sop_err *err)
{
    if (key == NULL || klen == 0)
        return bad_arg(err, "key: must be at least one byte");
    if (klen > SOP_KEY_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "key: %zu bytes exceeds the %u-byte limit", klen,
                            SOP_KEY_MAX);
    if (has_val && val == NULL && vlen != 0)
        return bad_arg(err, "value: NULL with a non-zero length");
    if (has_val && vlen > vmax)
        return sop__err_set(err, SOP_LIMIT, 0, "value: %zu bytes exceeds the %zu-byte limit", vlen,
                            vmax);
    return SOP_OK;
}

static size_t value_max(const sop_btree *bt)
{
    return sop__txstore_refs_values(bt->ts) ? SOP_VALUE_SEPARATE_MAX : SOP_VALUE_INLINE_MAX;
}

/* Calls on a tree are refused once its transaction ended; changes need an
 * active write transaction. */
static sop_rc may_read(const sop_btree *bt, sop_err *err)
{
    return bt->ts ? sop__txn_check_active(bt->ts->txn, err) : SOP_OK;
}

static sop_rc may_write(const sop_btree *bt, sop_err *err)
{
    return bt->ts ? sop__txn_check_write(bt->ts, err) : SOP_OK;
}

/* A change that failed half way poisons the tree, and with it the
 * transaction (only rollback is legal). */
static sop_rc tree_rc(sop_btree *bt, sop_rc rc)
{
    if (rc != SOP_OK && bt->ts && bt->core.poisoned)
        sop__txn_poison(bt->ts->txn);
    return rc;
}

static sop_btree *tree_of(sop__cursor *c)
{
    /* every cursor's tree is the core of a sop_btree */
    return (sop_btree *)((char *)c->bt - offsetof(sop_btree, core));
}

/* The current item's value reference (value-outside-node stores). */
static sop_rc current_ref(sop__cursor *c, uint8_t ref[SOP__VALREF_SIZE], sop_err *err)
{
    sop__node *n;
    uint32_t i;
    SOP__TRY(sop__cursor_current(c, &n, &i, err));
    if (n->items[i].vlen != SOP__VALREF_SIZE)
        return sop__err_set(err, SOP_CORRUPT, 0, "item value is not a value reference");
    memcpy(ref, sop__node_value(n, i), SOP__VALREF_SIZE);
    return SOP_OK;
}

/* ---- the item action log (commit merging, docs/locking.md) ---- */

static bool recording(const sop_btree *bt)
{
    return sop__txstore_recording(bt->ts);
}

/* The item a cursor is on, as seen before a change. */
typedef struct seen {
    bool ok;
    uint8_t *key;
    uint32_t klen, version;
    uint8_t id[SOP_ID_LEN];
} seen;

static void seen_take(sop_btree *bt, sop__cursor *c, seen *s)
{
    memset(s, 0, sizeof(*s));
    if (!recording(bt))
        return;
    sop__node *n;
    uint32_t i;
    if (sop__cursor_current(c, &n, &i, NULL) != SOP_OK)
        return;
    s->key = sop__malloc(n->items[i].klen ? n->items[i].klen : 1);
    if (s->key == NULL) {
        sop__txstore_note_scan(bt->ts); /* cannot record: validate per node */
        return;
    }
    memcpy(s->key, sop__node_key(n, i), n->items[i].klen);
    s->klen = n->items[i].klen;
    s->version = n->items[i].version;
    memcpy(s->id, n->items[i].id, SOP_ID_LEN);
    s->ok = true;
}

/* Records kind for the item seen (if the change succeeded) and frees it. */
static sop_rc seen_note(sop_btree *bt, seen *s, sop_rc rc, sop__act_kind kind, const void *val,
                        size_t vlen)
{
    if (s->ok && rc == SOP_OK)
        sop__txstore_note(bt->ts, kind, s->key, s->klen, s->id, s->version, val, (uint32_t)vlen);
    sop__free(s->key);
    s->key = NULL;
    return rc;
}

/* Records a read of the cursor's item. */
static void note_read(sop_btree *bt, sop__cursor *c)
{
    seen s;
    seen_take(bt, c, &s);
    seen_note(bt, &s, SOP_OK, SOP__ACT_READ, NULL, 0);
}

/* Records the outcome of looking a key (and maybe an ID) up. */
static sop_rc note_lookup(sop_btree *bt, sop__cursor *c, sop_rc rc, const void *key, size_t klen,
                          const uint8_t *id)
{
    if (!recording(bt))
        return rc;
    if (rc == SOP_OK)
        note_read(bt, c);
    else if (rc == SOP_NOTFOUND)
        sop__txstore_note(bt->ts, SOP__ACT_ABSENT, key, (uint32_t)klen, id, 0, NULL, 0);
    return rc;
}

static void note_scan(sop_btree *bt)
{
    if (recording(bt))
        sop__txstore_note_scan(bt->ts);
}

static sop_rc do_update_value(sop_btree *bt, sop__cursor *c, const void *val, size_t vlen,
                              sop_err *err)
{
    SOP__TRY(may_write(bt, err));
    seen s;
    if (!sop__txstore_refs_values(bt->ts)) {
        seen_take(bt, c, &s);
        sop_rc rc = sop__cursor_update_value(c, val, (uint32_t)vlen, err);
        return tree_rc(bt, seen_note(bt, &s, rc, SOP__ACT_UPDATE, val, vlen));
    }
    uint8_t old[SOP__VALREF_SIZE], ref[SOP__VALREF_SIZE];
    SOP__TRY(current_ref(c, old, err));
    SOP__TRY(sop__txstore_value_put(bt->ts, val, vlen, ref, err));
    seen_take(bt, c, &s);
    sop_rc rc = sop__cursor_update_value(c, ref, SOP__VALREF_SIZE, err);
    seen_note(bt, &s, rc, SOP__ACT_UPDATE, ref, SOP__VALREF_SIZE);
    if (rc != SOP_OK) {
        sop__txstore_value_drop(bt->ts, ref, SOP__VALREF_SIZE, NULL);
        return tree_rc(bt, rc);
    }
    return sop__txstore_value_drop(bt->ts, old, SOP__VALREF_SIZE, err);
}

/* After an add: record it (the cursor is on the new item). */
static sop_rc note_add(sop_btree *bt, sop__cursor *c, sop_rc rc, const void *key, size_t klen,
                       const void *raw, size_t rawlen)
{
    if (!recording(bt))
        return rc;
    if (rc == SOP_EXISTS) {
        sop__txstore_note(bt->ts, SOP__ACT_PRESENT, key, (uint32_t)klen, NULL, 0, NULL, 0);
    } else if (rc == SOP_OK) {
        sop__node *n;
        uint32_t i;
        if (sop__cursor_current(c, &n, &i, NULL) == SOP_OK)
            sop__txstore_note(bt->ts, SOP__ACT_ADD, key, (uint32_t)klen, n->items[i].id, 0, raw,
                              (uint32_t)rawlen);
        else
            sop__txstore_note_scan(bt->ts);
    }
    return rc;
}

/* A streaming store's keys are (text, int >= 0) tuples (docs/streaming.md):
 * anything else would break every listing of the store. */
static sop_rc check_stream_key(const sop_btree *bt, const void *key, size_t klen, sop_err *err)
{
    sop_tuple_reader r;
    sop_tuple_value a, b;
    sop_tuple_reader_init(&r, key, klen);
    if (sop_tuple_next(&r, &a, NULL) == SOP_OK && a.type == SOP_TUPLE_TEXT && a.len > 0 &&
        sop_tuple_next(&r, &b, NULL) == SOP_OK && b.type == SOP_TUPLE_INT && b.i >= 0 &&
        r.pos == r.len)
        return SOP_OK;
    return sop__err_set(err, SOP_INVALID, 0,
                        "store %s is a streaming store: its keys are (text key, chunk index) "
                        "tuples (use sop_stream_*)",
                        bt->ts->info.name);
}

static sop_rc do_add(sop_btree *bt, sop__cursor *c, const void *key, size_t klen, const void *val,
                     size_t vlen, unsigned mode, sop_err *err)
{
    SOP__TRY(may_write(bt, err));
    if (bt->ts && bt->ts->info.streaming)
        SOP__TRY(check_stream_key(bt, key, klen, err));
    if (bt->ts == NULL)
        return tree_rc(
            bt, sop__cursor_add(c, key, (uint32_t)klen, val, (uint32_t)vlen, NULL, mode, err));
    /* In a store, conditional adds look first: the tree must never replace
     * a reference itself (the old value's blob has to be dropped), and the
     * action log records what really happened (an add or an update). */
    if (mode != SOP_ADD) {
        sop_rc rc = sop__cursor_find(c, key, (uint32_t)klen, err);
        if (rc == SOP_OK && mode == SOP_ADD_IF_NOT_EXISTS) {
            note_read(bt, c);
            return sop__err_set(err, SOP_EXISTS, 0, "btree: key exists");
        }
        if (rc == SOP_OK)
            return do_update_value(bt, c, val, vlen, err);
        if (rc != SOP_NOTFOUND)
            return tree_rc(bt, rc);
    }
    if (!sop__txstore_refs_values(bt->ts)) {
        sop_rc rc =
            sop__cursor_add(c, key, (uint32_t)klen, val, (uint32_t)vlen, NULL, SOP_ADD, err);
        return tree_rc(bt, note_add(bt, c, rc, key, klen, val, vlen));
    }
    uint8_t ref[SOP__VALREF_SIZE];
    SOP__TRY(sop__txstore_value_put(bt->ts, val, vlen, ref, err));
    sop_rc rc = sop__cursor_add(c, key, (uint32_t)klen, ref, SOP__VALREF_SIZE, NULL, SOP_ADD, err);
    note_add(bt, c, rc, key, klen, ref, SOP__VALREF_SIZE);
    if (rc != SOP_OK)
        sop__txstore_value_drop(bt->ts, ref, SOP__VALREF_SIZE, NULL);
    return tree_rc(bt, rc);
}

static sop_rc do_remove(sop_btree *bt, sop__cursor *c, sop_err *err)
{
    SOP__TRY(may_write(bt, err));
    seen s;
    if (!sop__txstore_refs_values(bt->ts)) {
        seen_take(bt, c, &s);
        sop_rc rc = sop__cursor_remove(c, err);
        return tree_rc(bt, seen_note(bt, &s, rc, SOP__ACT_REMOVE, NULL, 0));
    }
    uint8_t old[SOP__VALREF_SIZE];
    SOP__TRY(current_ref(c, old, err));
    seen_take(bt, c, &s);
    sop_rc rc = sop__cursor_remove(c, err);
    SOP__TRY(tree_rc(bt, seen_note(bt, &s, rc, SOP__ACT_REMOVE, NULL, 0)));
    return sop__txstore_value_drop(bt->ts, old, SOP__VALREF_SIZE, err);
}

sop_rc sop_btree_open_memory(const sop_store_options *opts, sop_btree **out, sop_err *err)
{
    if (opts == NULL || out == NULL)
        return bad_arg(err, "sop_btree_open_memory: NULL argument");
    SOP__TRY(sop__btree_check_options(opts, err));
    sop_btree *bt = sop__calloc(1, sizeof(*bt));
    if (bt == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "btree: cannot allocate a tree");
    uint8_t root_id[16];
    sop__uuid_v4(root_id);
    sop__memrepo_init(&bt->mem);
    sop_rc rc = sop__btree_init(&bt->core, &sop__memrepo_ops, &bt->mem, root_id, 0, opts, err);
    if (rc != SOP_OK) {
        sop__free(bt);
        return rc;
    }
    sop__cursor_init(&bt->cur, &bt->core);
    bt->cur.internal = true;
    *out = bt;
    return SOP_OK;
}

void sop_btree_close(sop_btree *bt)
{
    if (bt == NULL || bt->ts)
        return; /* a store's tree belongs to its transaction */
    sop__cursor_fini(&bt->cur);
    sop__memrepo_fini(&bt->mem);
    sop__free(bt);
}

uint64_t sop_btree_count(const sop_btree *bt)
{
    return bt ? bt->core.count : 0;
}

static sop_rc add_common(sop_btree *bt, const void *key, size_t klen, const void *val, size_t vlen,
                         uint8_t id_out[SOP_ID_LEN], unsigned mode, sop_err *err)
{
    if (bt == NULL)
        return bad_arg(err, "btree: NULL handle");
    SOP__TRY(check_kv(key, klen, val, vlen, true, value_max(bt), err));
    sop_rc rc = do_add(bt, &bt->cur, key, klen, val, vlen, mode, err);
    if (rc == SOP_OK && id_out) {
        sop__node *n;
        uint32_t i;
        SOP__TRY(sop__cursor_current(&bt->cur, &n, &i, err));
        memcpy(id_out, n->items[i].id, SOP_ID_LEN);
    }
    return rc;
}

sop_rc sop_btree_add(sop_btree *bt, const void *key, size_t key_len, const void *value,
                     size_t value_len, uint8_t id_out[SOP_ID_LEN], sop_err *err)
{
    return add_common(bt, key, key_len, value, value_len, id_out, SOP_ADD, err);
}

sop_rc sop_btree_add_if_not_exists(sop_btree *bt, const void *key, size_t key_len,
                                   const void *value, size_t value_len, uint8_t id_out[SOP_ID_LEN],
                                   sop_err *err)
{
    return add_common(bt, key, key_len, value, value_len, id_out, SOP_ADD_IF_NOT_EXISTS, err);
}

sop_rc sop_btree_upsert(sop_btree *bt, const void *key, size_t key_len, const void *value,
                        size_t value_len, uint8_t id_out[SOP_ID_LEN], sop_err *err)
{
    return add_common(bt, key, key_len, value, value_len, id_out, SOP_ADD_UPSERT, err);
}

sop_rc sop_btree_update(sop_btree *bt, const void *key, size_t key_len, const void *value,
                        size_t value_len, sop_err *err)
{
    if (bt == NULL)
        return bad_arg(err, "btree: NULL handle");
    SOP__TRY(check_kv(key, key_len, value, value_len, true, value_max(bt), err));
    SOP__TRY(may_write(bt, err));
    sop_rc rc = sop__cursor_find(&bt->cur, key, (uint32_t)key_len, err);
    if (rc == SOP_NOTFOUND) {
        note_lookup(bt, &bt->cur, rc, key, key_len, NULL);
        return sop__err_set_const(err, SOP_NOTFOUND, "btree: no item with that key");
    }
    if (rc != SOP_OK)
        return tree_rc(bt, rc);
    return do_update_value(bt, &bt->cur, value, value_len, err);
}

sop_rc sop_btree_remove(sop_btree *bt, const void *key, size_t key_len, sop_err *err)
{
    if (bt == NULL)
        return bad_arg(err, "btree: NULL handle");
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, 0, err));
    SOP__TRY(may_write(bt, err));
    sop_rc rc = sop__cursor_find(&bt->cur, key, (uint32_t)key_len, err);
    if (rc == SOP_NOTFOUND) {
        note_lookup(bt, &bt->cur, rc, key, key_len, NULL);
        return sop__err_set_const(err, SOP_NOTFOUND, "btree: no item with that key");
    }
    if (rc != SOP_OK)
        return tree_rc(bt, rc);
    return do_remove(bt, &bt->cur, err);
}

/* fetch false: a value kept outside the node is not read (value NULL,
 * value_len its length from the reference). */
static sop_rc fill_item(sop_btree *bt, const sop__node *n, uint32_t i, bool fetch, sop_item *out,
                        sop_err *err)
{
    const sop__item *it = &n->items[i];
    out->key = n->heap + it->koff;
    out->key_len = it->klen;
    out->value = n->heap + it->voff;
    out->value_len = it->vlen;
    memcpy(out->id, it->id, SOP_ID_LEN);
    out->version = it->version;
    if (sop__txstore_refs_values(bt->ts)) {
        const uint8_t *v;
        size_t vlen;
        if (fetch) {
            SOP__TRY(sop__txstore_value_get(bt->ts, n->heap + it->voff, it->vlen, &v, &vlen, err));
        } else {
            uint32_t len, crc;
            SOP__TRY(sop__valref_parse(bt->ts->info.name, n->heap + it->voff, it->vlen, &v, &len,
                                       &crc, err));
            v = NULL;
            vlen = len;
        }
        out->value = v;
        out->value_len = vlen;
    }
    return SOP_OK;
}

sop_rc sop_btree_get(sop_btree *bt, const void *key, size_t key_len, sop_item *out, sop_err *err)
{
    if (bt == NULL || out == NULL)
        return bad_arg(err, "sop_btree_get: NULL argument");
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, 0, err));
    SOP__TRY(may_read(bt, err));
    sop_rc rc = note_lookup(bt, &bt->cur, sop__cursor_find(&bt->cur, key, (uint32_t)key_len, err),
                            key, key_len, NULL);
    if (rc == SOP_NOTFOUND)
        return sop__err_set_const(err, SOP_NOTFOUND, "btree: no item with that key");
    if (rc != SOP_OK)
        return rc;
    sop__node *n;
    uint32_t i;
    SOP__TRY(sop__cursor_current(&bt->cur, &n, &i, err));
    return fill_item(bt, n, i, true, out, err);
}

sop_rc sop_btree_check(sop_btree *bt, sop_err *err)
{
    if (bt == NULL)
        return bad_arg(err, "btree: NULL handle");
    SOP__TRY(may_read(bt, err));
    SOP__TRY(sop__btree_check(&bt->core, err));
    if (bt->ts)
        return SOP_OK;
    sop_btree_stats st;
    SOP__TRY(sop__btree_stats(&bt->core, &st, err));
    size_t held = sop__memrepo_nodes(&bt->mem);
    /* An emptied tree keeps its root leaf; stats then reports 0 nodes. */
    if (held != st.nodes && !(st.nodes == 0 && held <= 1))
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "btree check: %zu nodes held but %llu reachable (leak)", held,
                            (unsigned long long)st.nodes);
    return SOP_OK;
}

sop_rc sop_btree_stats_get(sop_btree *bt, sop_btree_stats *out, sop_err *err)
{
    if (bt == NULL || out == NULL)
        return bad_arg(err, "sop_btree_stats_get: NULL argument");
    return sop__btree_stats(&bt->core, out, err);
}

/* ---- cursors ---- */

sop_rc sop_cursor_open(sop_btree *bt, sop_cursor **out, sop_err *err)
{
    if (bt == NULL || out == NULL)
        return bad_arg(err, "sop_cursor_open: NULL argument");
    sop_cursor *c = sop__malloc(sizeof(*c));
    if (c == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "cursor: cannot allocate");
    sop__cursor_init(c, &bt->core);
    *out = c;
    return SOP_OK;
}

void sop_cursor_close(sop_cursor *c)
{
    if (c == NULL)
        return;
    sop__cursor_fini(c);
    sop__free(c);
}

/* Positioning calls report SOP_NOTFOUND through err too (convention 1). */
static sop_rc moved(sop_rc rc, sop_err *err, const char *what)
{
    return rc == SOP_NOTFOUND ? sop__err_set_const(err, rc, what) : rc;
}

#define CURSOR_CHECK(c)                                                                            \
    do {                                                                                           \
        if ((c) == NULL)                                                                           \
            return bad_arg(err, "cursor: NULL handle");                                            \
        SOP__TRY(may_read(tree_of(c), err));                                                       \
    } while (0)

sop_rc sop_cursor_first(sop_cursor *c, sop_err *err)
{
    CURSOR_CHECK(c);
    note_scan(tree_of(c));
    return moved(sop__cursor_first(c, err), err, "cursor: the tree is empty");
}

sop_rc sop_cursor_last(sop_cursor *c, sop_err *err)
{
    CURSOR_CHECK(c);
    note_scan(tree_of(c));
    return moved(sop__cursor_last(c, err), err, "cursor: the tree is empty");
}

sop_rc sop_cursor_next(sop_cursor *c, sop_err *err)
{
    CURSOR_CHECK(c);
    note_scan(tree_of(c));
    return moved(sop__cursor_next(c, err), err, "cursor: no next item");
}

sop_rc sop_cursor_prev(sop_cursor *c, sop_err *err)
{
    CURSOR_CHECK(c);
    note_scan(tree_of(c));
    return moved(sop__cursor_prev(c, err), err, "cursor: no previous item");
}

sop_rc sop_cursor_find(sop_cursor *c, const void *key, size_t key_len, sop_err *err)
{
    CURSOR_CHECK(c);
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, 0, err));
    return moved(note_lookup(tree_of(c), c, sop__cursor_find(c, key, (uint32_t)key_len, err), key,
                             key_len, NULL),
                 err, "cursor: no item with that key");
}

sop_rc sop_cursor_find_last(sop_cursor *c, const void *key, size_t key_len, sop_err *err)
{
    CURSOR_CHECK(c);
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, 0, err));
    note_scan(tree_of(c));
    return moved(sop__cursor_find_last(c, key, (uint32_t)key_len, err), err,
                 "cursor: no item with that key");
}

sop_rc sop_cursor_find_id(sop_cursor *c, const void *key, size_t key_len,
                          const uint8_t id[SOP_ID_LEN], sop_err *err)
{
    CURSOR_CHECK(c);
    if (id == NULL)
        return bad_arg(err, "sop_cursor_find_id: NULL id");
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, 0, err));
    return moved(note_lookup(tree_of(c), c, sop__cursor_find_id(c, key, (uint32_t)key_len, id, err),
                             key, key_len, id),
                 err, "cursor: no item with that key and ID");
}

static sop_rc cursor_item(sop_cursor *c, bool fetch, sop_item *out, sop_err *err)
{
    CURSOR_CHECK(c);
    if (out == NULL)
        return bad_arg(err, "sop_cursor_item: NULL item");
    sop__node *n;
    uint32_t i;
    sop_rc rc = sop__cursor_current(c, &n, &i, err);
    if (rc == SOP_NOTFOUND)
        return sop__err_set_const(err, SOP_NOTFOUND, "cursor: not on an item");
    if (rc != SOP_OK)
        return rc;
    note_read(tree_of(c), c);
    SOP__TRY(sop__cursor_current(c, &n, &i, err));
    return fill_item(tree_of(c), n, i, fetch, out, err);
}

sop_rc sop_cursor_item(sop_cursor *c, sop_item *out, sop_err *err)
{
    return cursor_item(c, true, out, err);
}

sop_rc sop_cursor_item_meta(sop_cursor *c, sop_item *out, sop_err *err)
{
    return cursor_item(c, false, out, err);
}

bool sop_cursor_on_item(const sop_cursor *c)
{
    return c != NULL && c->state == SOP__CUR_ITEM;
}

sop_rc sop_cursor_add(sop_cursor *c, const void *key, size_t key_len, const void *value,
                      size_t value_len, unsigned flags, sop_err *err)
{
    CURSOR_CHECK(c);
    if (flags > SOP_ADD_UPSERT)
        return bad_arg(err, "sop_cursor_add: unknown flags");
    SOP__TRY(check_kv(key, key_len, value, value_len, true, value_max(tree_of(c)), err));
    return do_add(tree_of(c), c, key, key_len, value, value_len, flags, err);
}

sop_rc sop_cursor_update_value(sop_cursor *c, const void *value, size_t value_len, sop_err *err)
{
    CURSOR_CHECK(c);
    if (value == NULL && value_len != 0)
        return bad_arg(err, "value: NULL with a non-zero length");
    if (value_len > value_max(tree_of(c)))
        return sop__err_set(err, SOP_LIMIT, 0, "value: %zu bytes exceeds the %zu-byte limit",
                            value_len, value_max(tree_of(c)));
    sop__node *n;
    uint32_t i;
    sop_rc rc = sop__cursor_current(c, &n, &i, err);
    if (rc == SOP_NOTFOUND)
        return sop__err_set_const(err, SOP_NOTFOUND, "cursor: not on an item");
    SOP__TRY(rc);
    return do_update_value(tree_of(c), c, value, value_len, err);
}

sop_rc sop_cursor_update_key(sop_cursor *c, const void *key, size_t key_len, sop_err *err)
{
    CURSOR_CHECK(c);
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, 0, err));
    SOP__TRY(may_write(tree_of(c), err));
    if (tree_of(c)->ts && tree_of(c)->ts->info.streaming) /* carried fields would break it */
        SOP__TRY(check_stream_key(tree_of(c), key, key_len, err));
    seen s;
    seen_take(tree_of(c), c, &s);
    sop_rc rc = sop__cursor_update_key(c, key, (uint32_t)key_len, err);
    return tree_rc(tree_of(c), seen_note(tree_of(c), &s, rc, SOP__ACT_UPDATE_KEY, key, key_len));
}

sop_rc sop_cursor_remove(sop_cursor *c, sop_err *err)
{
    CURSOR_CHECK(c);
    sop__node *n;
    uint32_t i;
    sop_rc rc = sop__cursor_current(c, &n, &i, err);
    if (rc == SOP_NOTFOUND)
        return sop__err_set_const(err, SOP_NOTFOUND, "cursor: not on an item");
    SOP__TRY(rc);
    return do_remove(tree_of(c), c, err);
}

/* ---- persistent stores ---- */

sop_rc sop_store_create(sop_txn *t, const char *name, const sop_store_options *opts,
                        sop_btree **out, sop_err *err)
{
    if (t == NULL || name == NULL || opts == NULL || out == NULL)
        return bad_arg(err, "sop_store_create: NULL argument");
    sop__txstore *ts;
    SOP__TRY(sop__txn_store_create(t, name, opts, &ts, err));
    *out = &ts->bt;
    return SOP_OK;
}

sop_rc sop_store_open(sop_txn *t, const char *name, sop_btree **out, sop_err *err)
{
    if (t == NULL || name == NULL || out == NULL)
        return bad_arg(err, "sop_store_open: NULL argument");
    sop__txstore *ts;
    SOP__TRY(sop__txn_store_open(t, name, &ts, err));
    *out = &ts->bt;
    return SOP_OK;
}

sop_rc sop_store_drop(sop_txn *t, const char *name, sop_err *err)
{
    if (t == NULL || name == NULL)
        return bad_arg(err, "sop_store_drop: NULL argument");
    return sop__txn_store_drop(t, name, err);
}

static void info_out(const sop__storeinfo *s, sop_store_info *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", s->name);
    snprintf(out->description, sizeof(out->description), "%s", s->description);
    sop_store_options_init(&out->options);
    out->options.slot_length = s->slot_length;
    out->options.is_unique = s->is_unique;
    out->options.leaf_load_balancing = s->leaf_load_balancing;
    out->options.key_order_fields = s->key_order_fields;
    out->options.value_placement = (sop_value_placement)s->placement;
    out->options.globally_cached = s->globally_cached;
    out->options.streaming = s->streaming;
    out->options.description = out->description;
    out->options.cache = (sop_cache_config){
        .registry_ms = s->registry_cache_ms,
        .node_ms = s->node_cache_ms,
        .value_ms = s->value_cache_ms,
        .store_info_ms = s->storeinfo_cache_ms,
        .registry_sliding = s->registry_cache_sliding,
        .node_sliding = s->node_cache_sliding,
        .value_sliding = s->value_cache_sliding,
        .store_info_sliding = s->storeinfo_cache_sliding,
    };
    out->count = s->count;
    out->created_ms = s->created_ms;
    out->updated_ms = s->updated_ms;
    memcpy(out->root_id, s->root_id, 16);
}

sop_rc sop_db_store_info(sop_db *db, const char *name, sop_store_info *out, sop_err *err)
{
    if (db == NULL || name == NULL || out == NULL)
        return bad_arg(err, "sop_db_store_info: NULL argument");
    SOP__TRY(sop__store_name_check(name, err));
    sop__storeinfo s;
    sop_rc rc = sop__repo_read(db->dir, name, &s, err);
    if (rc == SOP_NOTFOUND)
        return sop__err_set(err, SOP_NOTFOUND, 0, "no store named %s", name);
    SOP__TRY(rc);
    info_out(&s, out);
    return SOP_OK;
}

sop_rc sop_db_stores(sop_db *db, void (*fn)(void *ctx, const sop_store_info *info), void *ctx,
                     sop_err *err)
{
    if (db == NULL || fn == NULL)
        return bad_arg(err, "sop_db_stores: NULL argument");
    char **names;
    size_t n;
    SOP__TRY(sop__repo_list(db->dir, &names, &n, err));
    sop_rc rc = SOP_OK;
    for (size_t i = 0; i < n && rc == SOP_OK; i++) {
        sop__storeinfo s;
        rc = sop__repo_read(db->dir, names[i], &s, err);
        if (rc == SOP_NOTFOUND) {
            rc = SOP_OK; /* dropped meanwhile */
            continue;
        }
        if (rc == SOP_OK) {
            sop_store_info info;
            info_out(&s, &info);
            fn(ctx, &info);
        }
    }
    sop__repo_list_free(names, n);
    return rc;
}
