/*
 * btree.h - the SOP B-tree as a pure algorithm over a node repository.
 *
 * The tree knows nothing about files, caches or transactions: it asks a
 * repository (sop__repo_ops) for nodes by logical ID, for a writable version
 * of a node before changing it, for new nodes, and tells it which nodes it
 * dropped. The in-memory repository (memrepo.c) and, later, the
 * transactional one both plug in here. docs/btree.md explains the algorithm.
 *
 * Invariants (checked by sop__btree_check):
 *  1. Order: within a node items strictly increase by (key, item ID) in a
 *     duplicate-key tree, by key in a unique tree; every item of kids[i] lies
 *     between items i-1 and i of the parent.
 *  2. Shape: all leaves are at the same depth; an internal node with c items
 *     has c + 1 children; no node holds more than slot_length items.
 *  3. Fill: every non-root node holds at least min_fill = max(1,
 *     slot_length / 4) items, except nodes on the leftmost or rightmost spine,
 *     which hold at least 1 (they are what sequential appends and prepends
 *     fill). Hence height <= 1 + log_{min_fill + 1}(count) + 2.
 *  4. The root keeps its logical ID for the life of the tree: root splits
 *     move its contents down into two new children, root collapses pull its
 *     only child's contents up.
 *  5. count equals the number of items reachable from the root.
 *
 * A tree with a change that failed half way (SOP_NOMEM in a split) is
 * poisoned: every later call returns SOP_POISONED.
 */
#ifndef SOP_BTREE_H
#define SOP_BTREE_H

#include <stdbool.h>
#include <stdint.h>

#include "node.h"
#include "sop.h"

typedef struct sop__repo_ops {
    /* The node with this logical ID. SOP_NOTFOUND only for the root of a
     * tree that has never held an item; a missing child is SOP_CORRUPT. */
    sop_rc (*get)(void *repo, const uint8_t id[16], sop__node **out, sop_err *err);
    /* A version of n the tree may change: n itself, or a private copy that
     * replaces n for this tree from now on (copy-on-write repositories). */
    sop_rc (*writable)(void *repo, sop__node *n, sop__node **out, sop_err *err);
    /* A new, empty node: with a fresh logical ID, or with `id` (the root). */
    sop_rc (*create)(void *repo, const uint8_t *id, bool leaf, uint32_t item_cap, sop__node **out,
                     sop_err *err);
    /* The tree no longer references n. Cannot fail. */
    void (*remove)(void *repo, sop__node *n);
} sop__repo_ops;
/*
 * Node lifetime: a node pointer handed out by get/writable/create stays
 * valid until the tree changes. Cursors keep node pointers between calls, so
 * a repository that evicts cached nodes must first call
 * sop__btree_detach_cursors (cursors then find their place again by key).
 */

#define SOP__BTREE_MAX_HEIGHT 64

typedef struct sop__btree {
    const sop__repo_ops *ops;
    void *repo;
    uint8_t root_id[16];
    uint64_t count;
    uint32_t slot_length;
    uint32_t min_fill;
    bool unique;
    bool llb;
    sop__keycmp kc;
    bool poisoned;
    struct sop_cursor *cursors; /* every open cursor, to keep them valid across changes */
} sop__btree;

typedef enum sop__curstate {
    SOP__CUR_NONE, /* not positioned */
    SOP__CUR_ITEM, /* on an item */
    SOP__CUR_GAP   /* where a removed item was; moves continue from there */
} sop__curstate;

typedef struct sop__pathent {
    sop__node *n;
    uint32_t i; /* child index taken, or (last entry) the item index */
} sop__pathent;

/* Public as sop_cursor. */
struct sop_cursor {
    sop__btree *bt;
    struct sop_cursor *next_cursor, *prev_cursor;
    sop__curstate state;
    /* path[0..depth) runs from the root to the current item; valid only while
     * `live`. When not live, (skey, sid) is the item to find again. */
    bool live;
    uint32_t depth;
    sop__pathent path[SOP__BTREE_MAX_HEIGHT];
    uint8_t *skey;
    uint32_t sklen, skcap;
    uint8_t sid[16];
    bool internal; /* the tree's own cursor for tree-level calls */
};
typedef struct sop_cursor sop__cursor;

sop_rc sop__btree_init(sop__btree *bt, const sop__repo_ops *ops, void *repo,
                       const uint8_t root_id[16], uint64_t count, const sop_store_options *o,
                       sop_err *err);
/* Validates store options as the tree needs them. */
sop_rc sop__btree_check_options(const sop_store_options *o, sop_err *err);

void sop__cursor_init(sop__cursor *c, sop__btree *bt);
void sop__cursor_fini(sop__cursor *c);

sop_rc sop__cursor_first(sop__cursor *c, sop_err *err);
sop_rc sop__cursor_last(sop__cursor *c, sop_err *err);
sop_rc sop__cursor_next(sop__cursor *c, sop_err *err);
sop_rc sop__cursor_prev(sop__cursor *c, sop_err *err);
sop_rc sop__cursor_find(sop__cursor *c, const uint8_t *key, uint32_t klen, sop_err *err);
sop_rc sop__cursor_find_last(sop__cursor *c, const uint8_t *key, uint32_t klen, sop_err *err);
sop_rc sop__cursor_find_id(sop__cursor *c, const uint8_t *key, uint32_t klen, const uint8_t id[16],
                           sop_err *err);
/* The current item's node and index (SOP_NOTFOUND if not on one). */
sop_rc sop__cursor_current(sop__cursor *c, sop__node **n, uint32_t *i, sop_err *err);

/* mode: SOP_ADD, SOP_ADD_IF_NOT_EXISTS or SOP_ADD_UPSERT. id: the new item's
 * ID, or NULL for a fresh time-ordered one. */
sop_rc sop__cursor_add(sop__cursor *c, const uint8_t *key, uint32_t klen, const uint8_t *val,
                       uint32_t vlen, const uint8_t *id, unsigned mode, sop_err *err);
sop_rc sop__cursor_update_value(sop__cursor *c, const uint8_t *val, uint32_t vlen, sop_err *err);
sop_rc sop__cursor_update_key(sop__cursor *c, const uint8_t *key, uint32_t klen, sop_err *err);
sop_rc sop__cursor_remove(sop__cursor *c, sop_err *err);

/* Makes every cursor drop its node pointers (saving its item's key). */
sop_rc sop__btree_detach_cursors(sop__btree *bt, sop_err *err);

sop_rc sop__btree_check(sop__btree *bt, sop_err *err);
sop_rc sop__btree_stats(sop__btree *bt, sop_btree_stats *out, sop_err *err);
/* Calls fn for every node reachable from the root (parents before children). */
sop_rc sop__btree_walk(sop__btree *bt, sop_rc (*fn)(void *ctx, const sop__node *n, uint32_t level),
                       void *ctx, sop_err *err);

#endif
