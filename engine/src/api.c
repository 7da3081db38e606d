/*
 * api.c - every public sop_* function of the B-tree and cursor API: argument
 * validation, then a call into the layer that does the work.
 *
 * Invariants:
 *  1. Nothing below this file sees a NULL handle, a NULL buffer with a
 *     non-zero length, or a length that does not fit the engine's limits.
 *  2. Every error leaves err filled (sop__err_set) with the returned code.
 */
#include <stdlib.h>
#include <string.h>

#include "btree.h"
#include "err.h"
#include "mem.h"
#include "memrepo.h"
#include "uuid.h"

struct sop_btree {
    sop__btree core;
    sop__memrepo repo;
    sop__cursor cur; /* for the tree-level calls */
};

void sop_store_options_init(sop_store_options *o)
{
    if (o == NULL)
        return;
    memset(o, 0, sizeof(*o));
    o->slot_length = SOP_SLOT_LENGTH_DEFAULT;
    o->is_unique = true;
}

static sop_rc bad_arg(sop_err *err, const char *what)
{
    return sop__err_set(err, SOP_INVALID, 0, "%s", what);
}

/* Key and value checks shared by every call that takes them. */
static sop_rc check_kv(const void *key, size_t klen, const void *val, size_t vlen, bool has_val,
                       sop_err *err)
{
    if (key == NULL || klen == 0)
        return bad_arg(err, "key: must be at least one byte");
    if (klen > SOP_KEY_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "key: %zu bytes exceeds the %u-byte limit", klen,
                            SOP_KEY_MAX);
    if (has_val && val == NULL && vlen != 0)
        return bad_arg(err, "value: NULL with a non-zero length");
    if (has_val && vlen > SOP_VALUE_INLINE_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "value: %zu bytes exceeds the %u-byte limit", vlen,
                            SOP_VALUE_INLINE_MAX);
    return SOP_OK;
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
    sop__memrepo_init(&bt->repo);
    sop_rc rc = sop__btree_init(&bt->core, &sop__memrepo_ops, &bt->repo, root_id, 0, opts, err);
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
    if (bt == NULL)
        return;
    sop__cursor_fini(&bt->cur);
    sop__memrepo_fini(&bt->repo);
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
    SOP__TRY(check_kv(key, klen, val, vlen, true, err));
    sop_rc rc =
        sop__cursor_add(&bt->cur, key, (uint32_t)klen, val, (uint32_t)vlen, NULL, mode, err);
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
    SOP__TRY(check_kv(key, key_len, value, value_len, true, err));
    sop_rc rc = sop__cursor_find(&bt->cur, key, (uint32_t)key_len, err);
    if (rc == SOP_NOTFOUND)
        return sop__err_set_const(err, SOP_NOTFOUND, "btree: no item with that key");
    if (rc != SOP_OK)
        return rc;
    return sop__cursor_update_value(&bt->cur, value, (uint32_t)value_len, err);
}

sop_rc sop_btree_remove(sop_btree *bt, const void *key, size_t key_len, sop_err *err)
{
    if (bt == NULL)
        return bad_arg(err, "btree: NULL handle");
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, err));
    sop_rc rc = sop__cursor_find(&bt->cur, key, (uint32_t)key_len, err);
    if (rc == SOP_NOTFOUND)
        return sop__err_set_const(err, SOP_NOTFOUND, "btree: no item with that key");
    if (rc != SOP_OK)
        return rc;
    return sop__cursor_remove(&bt->cur, err);
}

static void fill_item(const sop__node *n, uint32_t i, sop_item *out)
{
    const sop__item *it = &n->items[i];
    out->key = n->heap + it->koff;
    out->key_len = it->klen;
    out->value = n->heap + it->voff;
    out->value_len = it->vlen;
    memcpy(out->id, it->id, SOP_ID_LEN);
    out->version = it->version;
}

sop_rc sop_btree_get(sop_btree *bt, const void *key, size_t key_len, sop_item *out, sop_err *err)
{
    if (bt == NULL || out == NULL)
        return bad_arg(err, "sop_btree_get: NULL argument");
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, err));
    sop_rc rc = sop__cursor_find(&bt->cur, key, (uint32_t)key_len, err);
    if (rc == SOP_NOTFOUND)
        return sop__err_set_const(err, SOP_NOTFOUND, "btree: no item with that key");
    if (rc != SOP_OK)
        return rc;
    sop__node *n;
    uint32_t i;
    SOP__TRY(sop__cursor_current(&bt->cur, &n, &i, err));
    fill_item(n, i, out);
    return SOP_OK;
}

sop_rc sop_btree_check(sop_btree *bt, sop_err *err)
{
    if (bt == NULL)
        return bad_arg(err, "btree: NULL handle");
    SOP__TRY(sop__btree_check(&bt->core, err));
    sop_btree_stats st;
    SOP__TRY(sop__btree_stats(&bt->core, &st, err));
    size_t held = sop__memrepo_nodes(&bt->repo);
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
    } while (0)

sop_rc sop_cursor_first(sop_cursor *c, sop_err *err)
{
    CURSOR_CHECK(c);
    return moved(sop__cursor_first(c, err), err, "cursor: the tree is empty");
}

sop_rc sop_cursor_last(sop_cursor *c, sop_err *err)
{
    CURSOR_CHECK(c);
    return moved(sop__cursor_last(c, err), err, "cursor: the tree is empty");
}

sop_rc sop_cursor_next(sop_cursor *c, sop_err *err)
{
    CURSOR_CHECK(c);
    return moved(sop__cursor_next(c, err), err, "cursor: no next item");
}

sop_rc sop_cursor_prev(sop_cursor *c, sop_err *err)
{
    CURSOR_CHECK(c);
    return moved(sop__cursor_prev(c, err), err, "cursor: no previous item");
}

sop_rc sop_cursor_find(sop_cursor *c, const void *key, size_t key_len, sop_err *err)
{
    CURSOR_CHECK(c);
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, err));
    return moved(sop__cursor_find(c, key, (uint32_t)key_len, err), err,
                 "cursor: no item with that key");
}

sop_rc sop_cursor_find_last(sop_cursor *c, const void *key, size_t key_len, sop_err *err)
{
    CURSOR_CHECK(c);
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, err));
    return moved(sop__cursor_find_last(c, key, (uint32_t)key_len, err), err,
                 "cursor: no item with that key");
}

sop_rc sop_cursor_find_id(sop_cursor *c, const void *key, size_t key_len,
                          const uint8_t id[SOP_ID_LEN], sop_err *err)
{
    CURSOR_CHECK(c);
    if (id == NULL)
        return bad_arg(err, "sop_cursor_find_id: NULL id");
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, err));
    return moved(sop__cursor_find_id(c, key, (uint32_t)key_len, id, err), err,
                 "cursor: no item with that key and ID");
}

sop_rc sop_cursor_item(sop_cursor *c, sop_item *out, sop_err *err)
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
    fill_item(n, i, out);
    return SOP_OK;
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
    SOP__TRY(check_kv(key, key_len, value, value_len, true, err));
    return sop__cursor_add(c, key, (uint32_t)key_len, value, (uint32_t)value_len, NULL, flags, err);
}

sop_rc sop_cursor_update_value(sop_cursor *c, const void *value, size_t value_len, sop_err *err)
{
    CURSOR_CHECK(c);
    if (value == NULL && value_len != 0)
        return bad_arg(err, "value: NULL with a non-zero length");
    if (value_len > SOP_VALUE_INLINE_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "value: %zu bytes exceeds the %u-byte limit",
                            value_len, SOP_VALUE_INLINE_MAX);
    return sop__cursor_update_value(c, value, (uint32_t)value_len, err);
}

sop_rc sop_cursor_update_key(sop_cursor *c, const void *key, size_t key_len, sop_err *err)
{
    CURSOR_CHECK(c);
    SOP__TRY(check_kv(key, key_len, NULL, 0, false, err));
    return sop__cursor_update_key(c, key, (uint32_t)key_len, err);
}

sop_rc sop_cursor_remove(sop_cursor *c, sop_err *err)
{
    CURSOR_CHECK(c);
    return sop__cursor_remove(c, err);
}
