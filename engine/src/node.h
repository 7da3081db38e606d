/*
 * node.h - the in-memory form of a B-tree node, and the primitive edits the
 * B-tree algorithm makes to it.
 *
 * A node holds `count` items (key, value, 16-byte item ID, version, flags)
 * in order and, when it is internal, count + 1 child logical IDs. Item
 * descriptors live in one array; key and value bytes live in one heap per
 * node, so a decoded node costs three allocations however many items it has,
 * and lookups are binary searches over the descriptor array.
 *
 * Invariants:
 *  1. items[0..count) are valid; for an internal node kids[0..count] are.
 *     Leaves have kids == NULL.
 *  2. Every item's key and value bytes lie inside heap[0..heap_used).
 *     Bytes of removed or replaced items stay behind as dead bytes
 *     (heap_dead counts them) until sop__node_reserve compacts the heap.
 *  3. Only sop__node_reserve allocates. The edit functions below never fail:
 *     each states the capacity it needs, and the caller reserves it first.
 *     So an edit sequence either cannot start (SOP_NOMEM, nothing changed) or
 *     runs to the end.
 *  4. The heap never exceeds UINT32_MAX bytes (offsets are 32-bit); a
 *     reservation that would need more returns SOP_LIMIT.
 *  5. items[i].kpre == sop__key_prefix(key of item i) at all times. When
 *     two zero-padded prefixes differ they order as their keys do in
 *     memcmp order (shorter first): the keys differ at that byte, or the
 *     one that ended there is a proper prefix of the other.
 */
#ifndef SOP_NODE_H
#define SOP_NODE_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "sop.h"
#include "tuple.h"

typedef struct sop__item {
    /* The key's first 8 bytes as a big-endian number, zero-padded
     * (sop__key_prefix): in memcmp-ordered trees most comparisons of a
     * search end here, without touching the heap (docs/btree.md). */
    uint64_t kpre;
    uint32_t koff, klen;
    uint32_t voff, vlen;
    uint32_t version;
    uint32_t flags; /* owned by the layer above the tree (e.g. "value is a reference") */
    uint8_t id[16];
} sop__item;

typedef struct sop__node {
    uint8_t id[16]; /* logical ID */
    bool leaf;
    uint32_t count;
    uint32_t item_cap; /* capacity of items; kids (if any) hold item_cap + 1 */
    sop__item *items;
    uint8_t (*kids)[16];
    uint8_t *heap;
    uint32_t heap_used, heap_cap, heap_dead;
    /* For the node repository that owns the node; the tree ignores them. */
    uint32_t version;
    /* Set once when the L1 cache shares the node (cache.c): it is then
     * immutable and freed by the last of its `refs` (counted under the
     * cache's mutex). false: a private node. */
    bool shared;
    uint32_t refs;
#ifdef SOP_FAULT_INJECTION
    uint64_t shared_sum; /* test builds: the contents when shared (cache.c) */
#endif
    uint32_t repo_flags;
    void *repo_data;
} sop__node;

/* How keys order (sop_store_options.key_order_fields). */
typedef struct sop__keycmp {
    uint32_t order_fields; /* 0: memcmp, shorter first; N: first N tuple fields */
} sop__keycmp;

static inline uint64_t sop__key_prefix(const uint8_t *k, size_t len)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v = v << 8 | (i < len ? k[i] : 0);
    return v;
}

static inline int sop__key_cmp(const sop__keycmp *kc, const uint8_t *a, size_t alen,
                               const uint8_t *b, size_t blen)
{
    if (kc->order_fields != 0)
        return sop__tuple_cmp_prefix(a, alen, b, blen, kc->order_fields);
    size_t n = alen < blen ? alen : blen;
    int c = memcmp(a, b, n);
    if (c != 0)
        return c;
    return (alen > blen) - (alen < blen);
}

/* Creates an empty node with room for item_cap items (and item_cap + 1 kids
 * when internal) and heap_cap bytes. */
sop_rc sop__node_new(const uint8_t id[16], bool leaf, uint32_t item_cap, uint32_t heap_cap,
                     sop__node **out, sop_err *err);
void sop__node_free(sop__node *n);
/* Deep copy (same ID), compacted. */
sop_rc sop__node_clone(const sop__node *n, sop__node **out, sop_err *err);

/* Ensures room for `items` more items (and kids) and `bytes` more heap bytes;
 * may compact the heap (item offsets change, contents do not). */
sop_rc sop__node_reserve(sop__node *n, uint32_t items, size_t bytes, sop_err *err);
/* Makes an internal node of a leaf (allocates kids); no-op if internal. */
sop_rc sop__node_make_internal(sop__node *n, sop_err *err);

static inline const uint8_t *sop__node_key(const sop__node *n, uint32_t i)
{
    return n->heap + n->items[i].koff;
}

static inline const uint8_t *sop__node_value(const sop__node *n, uint32_t i)
{
    return n->heap + n->items[i].voff;
}

/* Heap bytes item i occupies. */
static inline size_t sop__node_item_bytes(const sop__node *n, uint32_t i)
{
    return (size_t)n->items[i].klen + n->items[i].vlen;
}

/* Heap bytes of items [from, from + len). */
size_t sop__node_range_bytes(const sop__node *n, uint32_t from, uint32_t len);

/* Inserts an item at index i (shifting the rest right). Needs 1 item and
 * klen + vlen bytes reserved. kid handling is separate. */
void sop__node_insert(sop__node *n, uint32_t i, const void *key, uint32_t klen, const void *val,
                      uint32_t vlen, const uint8_t id[16], uint32_t version, uint32_t flags);
/* Inserts a copy of src's item si at index i; needs 1 item + its bytes. */
void sop__node_insert_copy(sop__node *n, uint32_t i, const sop__node *src, uint32_t si);
/* Overwrites item i with a copy of src's item si; needs its bytes. */
void sop__node_replace_copy(sop__node *n, uint32_t i, const sop__node *src, uint32_t si);
/* Removes item i (shifting left); its bytes become dead. */
void sop__node_delete(sop__node *n, uint32_t i);
/* Keeps items [0, keep); the rest (and kids past keep) are dropped. */
void sop__node_truncate(sop__node *n, uint32_t keep);
/* Removes items [0, drop) and kids [0, drop) of an internal node. */
void sop__node_drop_front(sop__node *n, uint32_t drop);
/* Replaces item i's value (needs vlen bytes) / key (needs klen bytes). */
void sop__node_set_value(sop__node *n, uint32_t i, const void *val, uint32_t vlen);
void sop__node_set_key(sop__node *n, uint32_t i, const void *key, uint32_t klen);

/* Kids: insert at position i (shifting right; needs the item reservation
 * that made room), delete at i, copy. */
void sop__node_insert_kid(sop__node *n, uint32_t i, const uint8_t id[16]);
void sop__node_delete_kid(sop__node *n, uint32_t i);

/* Exchanges everything but the IDs and repository fields of a and b: how the
 * root keeps its logical ID while its contents move down or up a level. */
void sop__node_swap_contents(sop__node *a, sop__node *b);

#endif
