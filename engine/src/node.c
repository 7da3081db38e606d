/*
 * node.c - B-tree node storage and primitive edits (see node.h for the
 * layout and invariants). Everything here is I/O-free.
 */
#include "node.h"

#include <stdint.h>

#include "err.h"
#include "mem.h"

sop_rc sop__node_new(const uint8_t id[16], bool leaf, uint32_t item_cap, uint32_t heap_cap,
                     sop__node **out, sop_err *err)
{
    if (item_cap < 4)
        item_cap = 4;
    if (heap_cap < 64)
        heap_cap = 64;
    sop__node *n = sop__calloc(1, sizeof(*n));
    if (n == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "node: cannot allocate a node");
    memcpy(n->id, id, 16);
    n->leaf = leaf;
    n->item_cap = item_cap;
    n->items = sop__malloc(sizeof(sop__item) * item_cap);
    n->heap = sop__malloc(heap_cap);
    n->heap_cap = heap_cap;
    if (!leaf)
        n->kids = sop__malloc(16 * ((size_t)item_cap + 1));
    if (n->items == NULL || n->heap == NULL || (!leaf && n->kids == NULL)) {
        sop__node_free(n);
        return sop__err_set(err, SOP_NOMEM, 0, "node: cannot allocate a node of %u items",
                            item_cap);
    }
    *out = n;
    return SOP_OK;
}

void sop__node_free(sop__node *n)
{
    if (n == NULL)
        return;
    sop__free(n->items);
    sop__free(n->kids);
    sop__free(n->heap);
    sop__free(n);
}

size_t sop__node_range_bytes(const sop__node *n, uint32_t from, uint32_t len)
{
    size_t total = 0;
    for (uint32_t i = from; i < from + len; i++)
        total += sop__node_item_bytes(n, i);
    return total;
}

/* Rewrites the heap into a fresh buffer of `cap` bytes holding only live
 * bytes, in item order. */
static sop_rc compact(sop__node *n, size_t cap, sop_err *err)
{
    uint8_t *heap = sop__malloc(cap);
    if (heap == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "node: cannot allocate a heap of %zu bytes", cap);
    uint32_t used = 0;
    for (uint32_t i = 0; i < n->count; i++) {
        sop__item *it = &n->items[i];
        memcpy(heap + used, n->heap + it->koff, it->klen);
        it->koff = used;
        used += it->klen;
        memcpy(heap + used, n->heap + it->voff, it->vlen);
        it->voff = used;
        used += it->vlen;
    }
    sop__free(n->heap);
    n->heap = heap;
    n->heap_cap = (uint32_t)cap;
    n->heap_used = used;
    n->heap_dead = 0;
    return SOP_OK;
}

sop_rc sop__node_reserve(sop__node *n, uint32_t items, size_t bytes, sop_err *err)
{
    if ((size_t)n->count + items > n->item_cap) {
        size_t cap = (size_t)n->item_cap * 2;
        if (cap < (size_t)n->count + items)
            cap = (size_t)n->count + items;
        if (cap > UINT32_MAX - 1)
            return sop__err_set(err, SOP_LIMIT, 0, "node: more than %u items", UINT32_MAX - 1);
        sop__item *it = sop__realloc(n->items, sizeof(sop__item) * cap);
        if (it == NULL)
            return sop__err_set(err, SOP_NOMEM, 0, "node: cannot grow to %zu items", cap);
        n->items = it;
        if (n->kids) {
            uint8_t(*kids)[16] = sop__realloc(n->kids, 16 * (cap + 1));
            if (kids == NULL)
                return sop__err_set(err, SOP_NOMEM, 0, "node: cannot grow to %zu children",
                                    cap + 1);
            n->kids = kids;
        }
        n->item_cap = (uint32_t)cap; /* only after both arrays hold cap */
    }
    if ((size_t)n->heap_used + bytes <= n->heap_cap)
        return SOP_OK;
    size_t live = (size_t)n->heap_used - n->heap_dead;
    if (live + bytes > UINT32_MAX)
        return sop__err_set(err, SOP_LIMIT, 0,
                            "node: %zu bytes of keys and values exceed the %u-byte node limit",
                            live + bytes, UINT32_MAX);
    /* Compact when at least a quarter is dead (or growing in place cannot fit):
     * the copy costs what a realloc would, and dead space stays bounded. */
    bool compacting = n->heap_dead >= n->heap_used / 4 || (size_t)n->heap_used + bytes > UINT32_MAX;
    size_t need = (compacting ? live : n->heap_used) + bytes;
    size_t want = (size_t)n->heap_cap * 2;
    if (want < need)
        want = need;
    if (want > UINT32_MAX)
        want = UINT32_MAX;
    if (compacting)
        return compact(n, want, err);
    uint8_t *heap = sop__realloc(n->heap, want);
    if (heap == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "node: cannot grow the heap to %zu bytes", want);
    n->heap = heap;
    n->heap_cap = (uint32_t)want;
    return SOP_OK;
}

static uint32_t heap_put(sop__node *n, const void *p, uint32_t len)
{
    uint32_t off = n->heap_used;
    if (len)
        memcpy(n->heap + off, p, len);
    n->heap_used += len;
    return off;
}

sop_rc sop__node_clone(const sop__node *n, sop__node **out, sop_err *err)
{
    /* A clone is made to be changed: leave room for a few edits so the
     * first insert does not reallocate what was just copied. */
    size_t live = (size_t)n->heap_used - n->heap_dead;
    size_t icap = (size_t)n->count + n->count / 8 + 4, hcap = live + live / 8 + 256;
    if (icap > UINT32_MAX - 1)
        icap = UINT32_MAX - 1;
    if (hcap > UINT32_MAX)
        hcap = UINT32_MAX;
    sop__node *c;
    SOP__TRY(sop__node_new(n->id, n->leaf, (uint32_t)icap, (uint32_t)hcap, &c, err));
    memcpy(c->items, n->items, sizeof(sop__item) * n->count);
    c->count = n->count;
    if (n->heap_dead == 0) { /* offsets stay valid */
        memcpy(c->heap, n->heap, n->heap_used);
        c->heap_used = n->heap_used;
    } else {
        for (uint32_t i = 0; i < n->count; i++) {
            sop__item *it = &c->items[i];
            it->koff = heap_put(c, n->heap + it->koff, it->klen);
            it->voff = heap_put(c, n->heap + it->voff, it->vlen);
        }
    }
    if (!n->leaf)
        memcpy(c->kids, n->kids, 16 * ((size_t)n->count + 1));
    c->version = n->version;
    *out = c;
    return SOP_OK;
}

sop_rc sop__node_make_internal(sop__node *n, sop_err *err)
{
    if (!n->leaf)
        return SOP_OK;
    n->kids = sop__malloc(16 * ((size_t)n->item_cap + 1));
    if (n->kids == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "node: cannot allocate children");
    n->leaf = false;
    return SOP_OK;
}

void sop__node_insert(sop__node *n, uint32_t i, const void *key, uint32_t klen, const void *val,
                      uint32_t vlen, const uint8_t id[16], uint32_t version, uint32_t flags)
{
    memmove(&n->items[i + 1], &n->items[i], sizeof(sop__item) * (n->count - i));
    sop__item *it = &n->items[i];
    it->kpre = sop__key_prefix(key, klen);
    it->koff = heap_put(n, key, klen);
    it->klen = klen;
    it->voff = heap_put(n, val, vlen);
    it->vlen = vlen;
    it->version = version;
    it->flags = flags;
    memcpy(it->id, id, 16);
    n->count++;
}

void sop__node_insert_copy(sop__node *n, uint32_t i, const sop__node *src, uint32_t si)
{
    const sop__item *s = &src->items[si];
    sop__node_insert(n, i, src->heap + s->koff, s->klen, src->heap + s->voff, s->vlen, s->id,
                     s->version, s->flags);
}

void sop__node_replace_copy(sop__node *n, uint32_t i, const sop__node *src, uint32_t si)
{
    const sop__item *s = &src->items[si];
    sop__item *it = &n->items[i];
    n->heap_dead += it->klen + it->vlen;
    it->kpre = s->kpre;
    it->koff = heap_put(n, src->heap + s->koff, s->klen);
    it->klen = s->klen;
    it->voff = heap_put(n, src->heap + s->voff, s->vlen);
    it->vlen = s->vlen;
    it->version = s->version;
    it->flags = s->flags;
    memcpy(it->id, s->id, 16);
}

void sop__node_delete(sop__node *n, uint32_t i)
{
    n->heap_dead += n->items[i].klen + n->items[i].vlen;
    memmove(&n->items[i], &n->items[i + 1], sizeof(sop__item) * (n->count - i - 1));
    n->count--;
}

void sop__node_truncate(sop__node *n, uint32_t keep)
{
    n->heap_dead += (uint32_t)sop__node_range_bytes(n, keep, n->count - keep);
    n->count = keep;
}

void sop__node_drop_front(sop__node *n, uint32_t drop)
{
    n->heap_dead += (uint32_t)sop__node_range_bytes(n, 0, drop);
    memmove(&n->items[0], &n->items[drop], sizeof(sop__item) * (n->count - drop));
    if (!n->leaf)
        memmove(&n->kids[0], &n->kids[drop], 16 * ((size_t)n->count - drop + 1));
    n->count -= drop;
}

void sop__node_set_value(sop__node *n, uint32_t i, const void *val, uint32_t vlen)
{
    sop__item *it = &n->items[i];
    n->heap_dead += it->vlen;
    it->voff = heap_put(n, val, vlen);
    it->vlen = vlen;
}

void sop__node_set_key(sop__node *n, uint32_t i, const void *key, uint32_t klen)
{
    sop__item *it = &n->items[i];
    n->heap_dead += it->klen;
    it->kpre = sop__key_prefix(key, klen);
    it->koff = heap_put(n, key, klen);
    it->klen = klen;
}

void sop__node_insert_kid(sop__node *n, uint32_t i, const uint8_t id[16])
{
    /* Called after the matching item insert, so count already includes it:
     * kids [i, count) move to [i + 1, count + 1). */
    memmove(&n->kids[i + 1], &n->kids[i], 16 * ((size_t)n->count - i));
    memcpy(n->kids[i], id, 16);
}

void sop__node_delete_kid(sop__node *n, uint32_t i)
{
    /* Called after the matching item delete: kids [i + 1, count + 2) move
     * to [i, count + 1). */
    memmove(&n->kids[i], &n->kids[i + 1], 16 * ((size_t)n->count + 1 - i));
}

void sop__node_swap_contents(sop__node *a, sop__node *b)
{
    sop__node t = *a;
    a->leaf = b->leaf;
    a->count = b->count;
    a->item_cap = b->item_cap;
    a->items = b->items;
    a->kids = b->kids;
    a->heap = b->heap;
    a->heap_used = b->heap_used;
    a->heap_cap = b->heap_cap;
    a->heap_dead = b->heap_dead;
    b->leaf = t.leaf;
    b->count = t.count;
    b->item_cap = t.item_cap;
    b->items = t.items;
    b->kids = t.kids;
    b->heap = t.heap;
    b->heap_used = t.heap_used;
    b->heap_cap = t.heap_cap;
    b->heap_dead = t.heap_dead;
}
