/*
 * btree.c - the SOP B-tree algorithm (invariants in btree.h, the why and
 * the policies in docs/btree.md).
 *
 * Shape: a classic B-tree (items in internal nodes too, as in SOP): a node
 * has up to slot_length items and, when internal, one more child. No parent
 * pointers: a cursor keeps the path from the root, so a split never rewrites
 * the children it moves (the Go original rewrites every moved child to fix
 * its parent pointer).
 *
 * Insert: descend, insert in the leaf; a node that overflows to
 * slot_length + 1 items is either evened out with a neighbour leaf (leaf load
 * balancing) or split, and the split's middle item moves up, possibly
 * overflowing the parent in turn. A root split moves the root's contents
 * into a new child first, so the root keeps its ID. An insert at the far end
 * of the rightmost (leftmost) spine splits unevenly, keeping the full node
 * full, so sequential loads pack nodes instead of leaving them half empty.
 *
 * Remove: an item in an internal node is replaced by its in-order
 * predecessor, which is then removed from its leaf. A node that falls below
 * min_fill is merged with a neighbour when both fit in one node, otherwise
 * the two are evened out; the parent may underflow in turn. A root left with
 * no items and one child takes that child's contents.
 */
#include "btree.h"

#include <stdint.h>

#include "err.h"
#include "mem.h"
#include "uuid.h"

/* --------------------------------------------------------------------------
 * Targets and searching
 * ------------------------------------------------------------------------ */

/* What a descent looks for. bias breaks ties once key (and, in duplicate
 * trees, id) compare equal: 0 = an exact hit counts, +1 = the target sits
 * just after equal items, -1 = just before them. */
typedef struct target {
    const uint8_t *key;
    uint32_t klen;
    const uint8_t *id; /* NULL: compare keys only */
    int bias;
    uint64_t kpre; /* sop__key_prefix(key) */
} target;

#define TARGET(key, klen, id, bias)                                                                \
    {                                                                                              \
        (key), (klen), (id), (bias), sop__key_prefix((key), (klen))                                \
    }

static int cmp_item(const sop__btree *bt, const sop__node *n, uint32_t i, const target *t)
{
    const sop__item *it = &n->items[i];
    /* memcmp order: differing prefixes decide (node.h, invariant 5) */
    if (bt->kc.order_fields == 0 && it->kpre != t->kpre)
        return it->kpre < t->kpre ? -1 : 1;
    int c = sop__key_cmp(&bt->kc, n->heap + it->koff, it->klen, t->key, t->klen);
    if (c != 0)
        return c;
    if (t->id != NULL && !bt->unique) {
        c = memcmp(it->id, t->id, 16);
        if (c != 0)
            return c;
    }
    return -t->bias;
}

/* First index whose item is >= t; *exact when that item compares equal. */
static uint32_t lower_bound(const sop__btree *bt, const sop__node *n, const target *t, bool *exact)
{
    uint32_t lo = 0, hi = n->count;
    *exact = false;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = cmp_item(bt, n, mid, t);
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
            if (c == 0)
                *exact = true;
        }
    }
    if (*exact && (lo >= n->count || cmp_item(bt, n, lo, t) != 0))
        *exact = false;
    return lo;
}

static sop_rc refuse_if_poisoned(const sop__btree *bt, sop_err *err)
{
    if (SOP__UNLIKELY(bt->poisoned))
        return sop__err_set_const(err, SOP_POISONED,
                                  "btree: unusable after an earlier failed change");
    return SOP_OK;
}

static sop_rc get_node(sop__btree *bt, const uint8_t id[16], sop__node **out, sop_err *err)
{
    sop_rc rc = bt->ops->get(bt->repo, id, out, err);
    if (rc == SOP_NOTFOUND && memcmp(id, bt->root_id, 16) != 0) {
        char text[SOP__UUID_TEXT_LEN + 1];
        sop__uuid_format(id, text);
        return sop__err_set(err, SOP_CORRUPT, 0, "btree: node %s is referenced but missing", text);
    }
    return rc;
}

/* Loads the root into path[0]. SOP_NOTFOUND when the tree has no root yet
 * or it is empty. */
static sop_rc load_root(sop__cursor *c, sop_err *err)
{
    sop__btree *bt = c->bt;
    if (bt->count == 0)
        return SOP_NOTFOUND;
    sop__node *root;
    SOP__TRY(get_node(bt, bt->root_id, &root, err));
    if (root->count == 0)
        return sop__err_set(err, SOP_CORRUPT, 0, "btree: root is empty but count is %llu",
                            (unsigned long long)bt->count);
    c->path[0].n = root;
    c->path[0].i = 0;
    c->depth = 1;
    return SOP_OK;
}

/* Descends from the root towards t, recording the path. Stops at an exact
 * hit (*exact) or at a leaf, whose entry then holds the lower bound (which
 * may equal the leaf's count). */
static sop_rc descend(sop__cursor *c, const target *t, bool *exact, sop_err *err)
{
    sop__btree *bt = c->bt;
    SOP__TRY(load_root(c, err));
    for (;;) {
        sop__pathent *pe = &c->path[c->depth - 1];
        pe->i = lower_bound(bt, pe->n, t, exact);
        if (*exact || pe->n->leaf)
            return SOP_OK;
        if (c->depth == SOP__BTREE_MAX_HEIGHT)
            return sop__err_set(err, SOP_CORRUPT, 0, "btree: deeper than %d levels",
                                SOP__BTREE_MAX_HEIGHT);
        sop__node *kid;
        SOP__TRY(get_node(bt, pe->n->kids[pe->i], &kid, err));
        c->path[c->depth].n = kid;
        c->path[c->depth].i = 0;
        c->depth++;
    }
}

/* From a descent that ended at a leaf lower bound: move to the first item
 * at or after that position. false: there is none. */
static bool settle_forward(sop__cursor *c)
{
    while (c->depth > 0 && c->path[c->depth - 1].i >= c->path[c->depth - 1].n->count)
        c->depth--;
    return c->depth > 0;
}

/* From a descent that ended at a leaf lower bound: move to the last item
 * before that position. false: there is none. */
static bool settle_backward(sop__cursor *c)
{
    while (c->depth > 0 && c->path[c->depth - 1].i == 0)
        c->depth--;
    if (c->depth == 0)
        return false;
    c->path[c->depth - 1].i--;
    return true;
}

/* Descends along the leftmost (rightmost) edge of the subtree at
 * path[depth - 1] down to its first (last) item. */
static sop_rc edge_down(sop__cursor *c, bool rightmost, sop_err *err)
{
    for (;;) {
        sop__pathent *pe = &c->path[c->depth - 1];
        if (pe->n->leaf) {
            pe->i = rightmost ? pe->n->count - 1 : 0;
            return SOP_OK;
        }
        pe->i = rightmost ? pe->n->count : 0;
        if (c->depth == SOP__BTREE_MAX_HEIGHT)
            return sop__err_set(err, SOP_CORRUPT, 0, "btree: deeper than %d levels",
                                SOP__BTREE_MAX_HEIGHT);
        sop__node *kid;
        SOP__TRY(get_node(c->bt, pe->n->kids[pe->i], &kid, err));
        if (kid->count == 0)
            return sop__err_set(err, SOP_CORRUPT, 0, "btree: empty non-root node");
        c->path[c->depth].n = kid;
        c->depth++;
    }
}

/* --------------------------------------------------------------------------
 * Cursor bookkeeping: saving positions across changes
 * ------------------------------------------------------------------------ */

void sop__cursor_init(sop__cursor *c, sop__btree *bt)
{
    memset(c, 0, sizeof(*c));
    c->bt = bt;
    c->state = SOP__CUR_NONE;
    c->next_cursor = bt->cursors;
    if (bt->cursors)
        bt->cursors->prev_cursor = c;
    bt->cursors = c;
}

void sop__cursor_fini(sop__cursor *c)
{
    if (c->prev_cursor)
        c->prev_cursor->next_cursor = c->next_cursor;
    else
        c->bt->cursors = c->next_cursor;
    if (c->next_cursor)
        c->next_cursor->prev_cursor = c->prev_cursor;
    sop__free(c->skey);
    c->skey = NULL;
}

/* Remembers (key, id) as the cursor's item to find again. */
static sop_rc save_pos(sop__cursor *c, const uint8_t *key, uint32_t klen, const uint8_t id[16],
                       sop_err *err)
{
    if (klen > c->skcap) {
        uint32_t cap = klen < 64 ? 64 : klen;
        uint8_t *p = sop__realloc(c->skey, cap);
        if (p == NULL)
            return sop__err_set(err, SOP_NOMEM, 0, "cursor: cannot save a %u-byte key", klen);
        c->skey = p;
        c->skcap = cap;
    }
    if (key != c->skey)
        memmove(c->skey, key, klen);
    c->sklen = klen;
    if (id != c->sid)
        memmove(c->sid, id, 16);
    return SOP_OK;
}

static sop_rc save_current(sop__cursor *c, sop_err *err)
{
    const sop__pathent *pe = &c->path[c->depth - 1];
    const sop__item *it = &pe->n->items[pe->i];
    return save_pos(c, pe->n->heap + it->koff, it->klen, it->id, err);
}

/* Before the tree changes: every other live cursor saves its item and drops
 * its path (node pointers may move or be freed by the change). */
static sop_rc detach_others(sop__btree *bt, sop__cursor *self, sop_err *err)
{
    for (sop__cursor *c = bt->cursors; c; c = c->next_cursor) {
        if (c == self || !c->live)
            continue;
        if (c->state == SOP__CUR_ITEM)
            SOP__TRY(save_current(c, err));
        c->live = false;
    }
    return SOP_OK;
}

static void set_none(sop__cursor *c)
{
    c->state = SOP__CUR_NONE;
    c->live = false;
    c->depth = 0;
}

static sop_rc finish_seek(sop__cursor *c, bool positioned)
{
    if (!positioned) {
        set_none(c);
        return SOP_NOTFOUND;
    }
    c->state = SOP__CUR_ITEM;
    c->live = true;
    return SOP_OK;
}

/* Seek helper: runs a descent, maps "empty tree" to unpositioned. */
static sop_rc seek(sop__cursor *c, const target *t, bool *exact, sop_err *err)
{
    SOP__TRY(refuse_if_poisoned(c->bt, err));
    sop_rc rc = descend(c, t, exact, err);
    if (rc != SOP_OK) {
        set_none(c);
        return rc;
    }
    return SOP_OK;
}

/* Finds the saved item again. Afterwards the cursor is live on it, or in
 * the gap it left (state GAP) if it is gone. */
static sop_rc restore(sop__cursor *c, sop_err *err)
{
    if (c->live || c->state == SOP__CUR_NONE)
        return SOP_OK;
    if (c->state == SOP__CUR_GAP)
        return SOP_OK; /* moves from a gap seek by themselves */
    target t = TARGET(c->skey, c->sklen, c->sid, 0);
    bool exact;
    sop_rc rc = seek(c, &t, &exact, err);
    if (rc == SOP_NOTFOUND)
        exact = false;
    else if (rc != SOP_OK)
        return rc;
    if (exact && c->bt->unique) {
        const sop__pathent *pe = &c->path[c->depth - 1];
        exact = memcmp(pe->n->items[pe->i].id, c->sid, 16) == 0;
    }
    if (exact) {
        c->state = SOP__CUR_ITEM;
        c->live = true;
    } else {
        c->state = SOP__CUR_GAP;
        c->live = false;
    }
    return SOP_OK;
}

/* --------------------------------------------------------------------------
 * Positioning
 * ------------------------------------------------------------------------ */

/* first (rightmost = false) or last item of the tree */
static sop_rc seek_edge(sop__cursor *c, bool rightmost, sop_err *err)
{
    SOP__TRY(refuse_if_poisoned(c->bt, err));
    sop_rc rc = load_root(c, err);
    if (rc == SOP_OK)
        rc = edge_down(c, rightmost, err);
    if (rc != SOP_OK) {
        set_none(c);
        return rc;
    }
    return finish_seek(c, true);
}

sop_rc sop__cursor_first(sop__cursor *c, sop_err *err)
{
    return seek_edge(c, false, err);
}

sop_rc sop__cursor_last(sop__cursor *c, sop_err *err)
{
    return seek_edge(c, true, err);
}

/* From a gap: the first item after (dir > 0) or the last before (dir < 0)
 * the removed item's (key, id). */
static sop_rc move_from_gap(sop__cursor *c, int dir, sop_err *err)
{
    target t = TARGET(c->skey, c->sklen, c->bt->unique ? NULL : c->sid, dir);
    bool exact;
    sop_rc rc = seek(c, &t, &exact, err);
    if (rc != SOP_OK)
        return rc;
    return finish_seek(c, dir > 0 ? settle_forward(c) : settle_backward(c));
}

sop_rc sop__cursor_next(sop__cursor *c, sop_err *err)
{
    SOP__TRY(refuse_if_poisoned(c->bt, err));
    SOP__TRY(restore(c, err));
    if (c->state == SOP__CUR_NONE)
        return SOP_NOTFOUND;
    if (c->state == SOP__CUR_GAP)
        return move_from_gap(c, +1, err);
    sop__pathent *pe = &c->path[c->depth - 1];
    if (!pe->n->leaf) {
        pe->i++;
        sop__node *kid;
        sop_rc rc = get_node(c->bt, pe->n->kids[pe->i], &kid, err);
        if (rc != SOP_OK) {
            set_none(c);
            return rc;
        }
        c->path[c->depth].n = kid;
        c->depth++;
        rc = edge_down(c, false, err);
        if (rc != SOP_OK)
            set_none(c);
        return rc;
    }
    pe->i++;
    return finish_seek(c, settle_forward(c));
}

sop_rc sop__cursor_prev(sop__cursor *c, sop_err *err)
{
    SOP__TRY(refuse_if_poisoned(c->bt, err));
    SOP__TRY(restore(c, err));
    if (c->state == SOP__CUR_NONE)
        return SOP_NOTFOUND;
    if (c->state == SOP__CUR_GAP)
        return move_from_gap(c, -1, err);
    sop__pathent *pe = &c->path[c->depth - 1];
    if (!pe->n->leaf) {
        sop__node *kid;
        sop_rc rc = get_node(c->bt, pe->n->kids[pe->i], &kid, err);
        if (rc != SOP_OK) {
            set_none(c);
            return rc;
        }
        c->path[c->depth].n = kid;
        c->depth++;
        rc = edge_down(c, true, err);
        if (rc != SOP_OK)
            set_none(c);
        return rc;
    }
    return finish_seek(c, settle_backward(c));
}

static bool key_equals(const sop__btree *bt, const sop__cursor *c, const uint8_t *key,
                       uint32_t klen)
{
    const sop__pathent *pe = &c->path[c->depth - 1];
    const sop__item *it = &pe->n->items[pe->i];
    return sop__key_cmp(&bt->kc, pe->n->heap + it->koff, it->klen, key, klen) == 0;
}

sop_rc sop__cursor_find(sop__cursor *c, const uint8_t *key, uint32_t klen, sop_err *err)
{
    /* A unique tree may stop at the first exact hit; a duplicate tree must
     * reach the leftmost duplicate, so it aims just before all of them. */
    target t = TARGET(key, klen, NULL, c->bt->unique ? 0 : -1);
    bool exact;
    sop_rc rc = seek(c, &t, &exact, err);
    if (rc != SOP_OK)
        return rc;
    if (!exact && finish_seek(c, settle_forward(c)) != SOP_OK)
        return SOP_NOTFOUND;
    finish_seek(c, true);
    return key_equals(c->bt, c, key, klen) ? SOP_OK : SOP_NOTFOUND;
}

sop_rc sop__cursor_find_last(sop__cursor *c, const uint8_t *key, uint32_t klen, sop_err *err)
{
    target t = TARGET(key, klen, NULL, +1);
    bool exact;
    sop_rc rc = seek(c, &t, &exact, err);
    if (rc != SOP_OK)
        return rc;
    if (finish_seek(c, settle_backward(c)) != SOP_OK)
        return SOP_NOTFOUND;
    return key_equals(c->bt, c, key, klen) ? SOP_OK : SOP_NOTFOUND;
}

sop_rc sop__cursor_find_id(sop__cursor *c, const uint8_t *key, uint32_t klen, const uint8_t id[16],
                           sop_err *err)
{
    target t = TARGET(key, klen, id, 0);
    bool exact;
    sop_rc rc = seek(c, &t, &exact, err);
    if (rc != SOP_OK)
        return rc;
    if (exact) {
        const sop__pathent *pe = &c->path[c->depth - 1];
        exact = memcmp(pe->n->items[pe->i].id, id, 16) == 0;
    }
    if (!exact) {
        set_none(c);
        return SOP_NOTFOUND;
    }
    return finish_seek(c, true);
}

sop_rc sop__cursor_current(sop__cursor *c, sop__node **n, uint32_t *i, sop_err *err)
{
    SOP__TRY(refuse_if_poisoned(c->bt, err));
    SOP__TRY(restore(c, err));
    if (c->state != SOP__CUR_ITEM)
        return SOP_NOTFOUND;
    *n = c->path[c->depth - 1].n;
    *i = c->path[c->depth - 1].i;
    return SOP_OK;
}

/* --------------------------------------------------------------------------
 * Changing the tree
 * ------------------------------------------------------------------------ */

static sop_rc poison(sop__btree *bt, sop_rc rc)
{
    bt->poisoned = true;
    return rc;
}

/* Makes path[lv] writable (the repository may hand back a copy). */
static sop_rc writable_at(sop__cursor *c, uint32_t lv, sop_err *err)
{
    sop__btree *bt = c->bt;
    return bt->ops->writable(bt->repo, c->path[lv].n, &c->path[lv].n, err);
}

static sop_rc writable_kid(sop__btree *bt, const sop__node *parent, uint32_t ci, sop__node **out,
                           sop_err *err)
{
    sop__node *n;
    SOP__TRY(get_node(bt, parent->kids[ci], &n, err));
    return bt->ops->writable(bt->repo, n, out, err);
}

/* Copies kids [from, from + len) of src to position `at` of dst, whose kid
 * count before the call is dst_kids (room reserved). */
static void kids_insert(sop__node *dst, uint32_t dst_kids, uint32_t at, const sop__node *src,
                        uint32_t from, uint32_t len)
{
    memmove(&dst->kids[at + len], &dst->kids[at], 16 * (size_t)(dst_kids - at));
    memcpy(&dst->kids[at], &src->kids[from], 16 * (size_t)len);
}

/* Items [from, from + len) of src inserted at `at` of dst (room reserved). */
static void items_insert(sop__node *dst, uint32_t at, const sop__node *src, uint32_t from,
                         uint32_t len)
{
    for (uint32_t k = 0; k < len; k++)
        sop__node_insert_copy(dst, at + k, src, from + k);
}

/*
 * Splits `n` (the child at index ci of parent p) around item m: items
 * (m, count) and their kids go to a new right sibling, item m goes up into p
 * at ci. Everything that can fail happens before the first change.
 */
static sop_rc split(sop__btree *bt, sop__node *p, uint32_t ci, sop__node *n, uint32_t m,
                    sop_err *err)
{
    uint32_t rcount = n->count - m - 1;
    sop__node *r;
    SOP__TRY(bt->ops->create(bt->repo, NULL, n->leaf, rcount, &r, err));
    sop_rc rc = sop__node_reserve(r, rcount, sop__node_range_bytes(n, m + 1, rcount), err);
    if (rc == SOP_OK)
        rc = sop__node_reserve(p, 1, sop__node_item_bytes(n, m), err);
    if (rc != SOP_OK) {
        bt->ops->remove(bt->repo, r);
        return rc;
    }
    items_insert(r, 0, n, m + 1, rcount);
    if (!n->leaf)
        memcpy(r->kids, &n->kids[m + 1], 16 * ((size_t)rcount + 1));
    sop__node_insert_copy(p, ci, n, m);
    sop__node_insert_kid(p, ci + 1, r->id);
    sop__node_truncate(n, m);
    return SOP_OK;
}

/*
 * Evens out the siblings a = kids[li] and b = kids[li + 1] of p through the
 * separator p->items[li]: afterwards a holds (total - 1) / 2 items and b the
 * rest, total being a + b + 1.
 */
static sop_rc redistribute(sop__node *p, uint32_t li, sop__node *a, sop__node *b, sop_err *err)
{
    uint32_t total = a->count + b->count + 1;
    uint32_t want = (total - 1) / 2;
    if (a->count < want) {
        /* b's first k items move left: the separator comes down to a, b's
         * k-th item goes up, b's first k kids move to a. */
        uint32_t k = want - a->count;
        SOP__TRY(sop__node_reserve(
            a, k, sop__node_item_bytes(p, li) + sop__node_range_bytes(b, 0, k - 1), err));
        SOP__TRY(sop__node_reserve(p, 0, sop__node_item_bytes(b, k - 1), err));
        uint32_t akids = a->count + 1;
        sop__node_insert_copy(a, a->count, p, li);
        items_insert(a, a->count, b, 0, k - 1);
        if (!a->leaf)
            kids_insert(a, akids, akids, b, 0, k);
        sop__node_replace_copy(p, li, b, k - 1);
        sop__node_drop_front(b, k);
    } else if (a->count > want) {
        /* a's last k items move right, mirror image. */
        uint32_t k = a->count - want;
        SOP__TRY(sop__node_reserve(
            b, k, sop__node_item_bytes(p, li) + sop__node_range_bytes(a, want + 1, k - 1), err));
        SOP__TRY(sop__node_reserve(p, 0, sop__node_item_bytes(a, want), err));
        uint32_t bkids = b->count + 1;
        sop__node_insert_copy(b, 0, p, li);
        items_insert(b, 0, a, want + 1, k - 1);
        if (!b->leaf)
            kids_insert(b, bkids, 0, a, want + 1, k);
        sop__node_replace_copy(p, li, a, want);
        sop__node_truncate(a, want);
    }
    return SOP_OK;
}

/* Moves the separator p->items[li] and all of b = kids[li + 1] into
 * a = kids[li], and drops b. */
static sop_rc merge(sop__btree *bt, sop__node *p, uint32_t li, sop__node *a, sop__node *b,
                    sop_err *err)
{
    SOP__TRY(sop__node_reserve(
        a, b->count + 1, sop__node_item_bytes(p, li) + sop__node_range_bytes(b, 0, b->count), err));
    uint32_t akids = a->count + 1;
    sop__node_insert_copy(a, a->count, p, li);
    items_insert(a, a->count, b, 0, b->count);
    if (!a->leaf)
        kids_insert(a, akids, akids, b, 0, b->count + 1);
    sop__node_delete(p, li);
    sop__node_delete_kid(p, li + 1);
    bt->ops->remove(bt->repo, b);
    return SOP_OK;
}

/* true when every ancestor of path[lv] took its last (first) child. */
static bool on_spine(const sop__cursor *c, uint32_t lv, bool right)
{
    for (uint32_t k = 0; k < lv; k++) {
        const sop__pathent *pe = &c->path[k];
        if (pe->i != (right ? pe->n->count : 0))
            return false;
    }
    return true;
}

/* Leaf load balancing: evens the overflowing leaf path[lv] out with a
 * neighbour that has room. *done when it did. */
static sop_rc balance_leaf(sop__cursor *c, uint32_t lv, bool *done, sop_err *err)
{
    sop__btree *bt = c->bt;
    sop__node *p = c->path[lv - 1].n, *n = c->path[lv].n, *s;
    uint32_t ci = c->path[lv - 1].i;
    *done = false;
    if (ci > 0) {
        SOP__TRY(get_node(bt, p->kids[ci - 1], &s, err));
        if (s->count < bt->slot_length) {
            SOP__TRY(bt->ops->writable(bt->repo, s, &s, err));
            SOP__TRY(redistribute(p, ci - 1, s, n, err));
            *done = true;
            return SOP_OK;
        }
    }
    if (ci < p->count) {
        SOP__TRY(get_node(bt, p->kids[ci + 1], &s, err));
        if (s->count < bt->slot_length) {
            SOP__TRY(bt->ops->writable(bt->repo, s, &s, err));
            SOP__TRY(redistribute(p, ci, n, s, err));
            *done = true;
        }
    }
    return SOP_OK;
}

/*
 * path[lv] holds slot_length + 1 items after an insert at index `at`: fix
 * it, and its ancestors in turn. *moved tells whether items changed nodes.
 */
static sop_rc fix_overflow(sop__cursor *c, uint32_t lv, uint32_t at, bool *moved, sop_err *err)
{
    sop__btree *bt = c->bt;
    uint32_t L = bt->slot_length;
    while (c->path[lv].n->count > L) {
        *moved = true;
        if (lv == 0) {
            /* Root split: the contents move into a new child so the root
             * keeps its logical ID; then that child splits as any other. */
            if (c->depth == SOP__BTREE_MAX_HEIGHT)
                return sop__err_set(err, SOP_LIMIT, 0, "btree: more than %d levels",
                                    SOP__BTREE_MAX_HEIGHT);
            sop__node *root = c->path[0].n, *kid;
            SOP__TRY(bt->ops->create(bt->repo, NULL, root->leaf, 4, &kid, err));
            sop__node_swap_contents(root, kid);
            sop_rc rc = root->leaf ? sop__node_make_internal(root, err) : SOP_OK;
            if (rc != SOP_OK) {
                sop__node_swap_contents(root, kid);
                bt->ops->remove(bt->repo, kid);
                return rc;
            }
            memcpy(root->kids[0], kid->id, 16);
            memmove(&c->path[1], &c->path[0], sizeof(c->path[0]) * c->depth);
            c->depth++;
            c->path[0].n = root;
            c->path[0].i = 0;
            c->path[1].n = kid;
            lv = 1;
        }
        sop__node *n = c->path[lv].n;
        SOP__TRY(writable_at(c, lv - 1, err));
        sop__node *p = c->path[lv - 1].n;
        uint32_t ci = c->path[lv - 1].i;
        if (n->leaf && bt->llb) {
            bool done;
            SOP__TRY(balance_leaf(c, lv, &done, err));
            if (done)
                return SOP_OK;
        }
        uint32_t m = L / 2;
        if (at == L && on_spine(c, lv, true))
            m = L - 1; /* append: keep the left node full */
        else if (at == 0 && on_spine(c, lv, false))
            m = 1; /* prepend: keep the right node full */
        SOP__TRY(split(bt, p, ci, n, m, err));
        at = ci;
        lv--;
    }
    return SOP_OK;
}

static sop_rc check_sizes(const sop__btree *bt, uint32_t klen, size_t vlen, sop_err *err)
{
    SOP__TRY(refuse_if_poisoned(bt, err));
    if (klen == 0)
        return sop__err_set(err, SOP_INVALID, 0, "btree: empty key");
    if (klen > SOP_KEY_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "btree: key of %u bytes exceeds %u", klen,
                            SOP_KEY_MAX);
    if (vlen > SOP_VALUE_INLINE_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "btree: value of %zu bytes exceeds %u", vlen,
                            SOP_VALUE_INLINE_MAX);
    return SOP_OK;
}

static sop_rc create_root(sop__cursor *c, sop_err *err)
{
    sop__btree *bt = c->bt;
    sop__node *root;
    sop_rc rc = bt->ops->get(bt->repo, bt->root_id, &root, err);
    if (rc == SOP_NOTFOUND)
        rc = bt->ops->create(bt->repo, bt->root_id, true, 4, &root, err);
    else if (rc == SOP_OK)
        rc = bt->ops->writable(bt->repo, root, &root, err);
    if (rc != SOP_OK)
        return rc;
    if (root->count != 0)
        return sop__err_set(err, SOP_CORRUPT, 0, "btree: count is 0 but the root holds %u items",
                            root->count);
    c->path[0].n = root;
    c->path[0].i = 0;
    c->depth = 1;
    return SOP_OK;
}

sop_rc sop__cursor_add(sop__cursor *c, const uint8_t *key, uint32_t klen, const uint8_t *val,
                       uint32_t vlen, const uint8_t *id, unsigned mode, sop_err *err)
{
    sop__btree *bt = c->bt;
    SOP__TRY(check_sizes(bt, klen, vlen, err));
    uint8_t new_id[16];
    if (id)
        memcpy(new_id, id, 16);
    else
        sop__uuid_v7(new_id);

    if (mode != SOP_ADD && !bt->unique) {
        sop_rc rc = sop__cursor_find(c, key, klen, err);
        if (rc == SOP_OK) {
            if (mode == SOP_ADD_UPSERT)
                return sop__cursor_update_value(c, val, vlen, err);
            return sop__err_set(err, SOP_EXISTS, 0, "btree: key exists");
        }
        if (rc != SOP_NOTFOUND)
            return rc;
    }

    /* Unique: the key alone places the item. Duplicates: (key, new id). */
    target t = TARGET(key, klen, bt->unique ? NULL : new_id, 0);
    bool exact = false;
    sop_rc rc = seek(c, &t, &exact, err);
    if (rc == SOP_NOTFOUND)
        rc = create_root(c, err);
    if (rc != SOP_OK)
        return rc;
    if (exact) {
        finish_seek(c, true);
        if (mode == SOP_ADD_UPSERT)
            return sop__cursor_update_value(c, val, vlen, err);
        return sop__err_set(err, SOP_EXISTS, 0, "btree: key exists");
    }

    /* Nothing has changed yet: failures up to the insert leave the tree as
     * it was. */
    uint32_t lv = c->depth - 1, at = c->path[lv].i;
    SOP__TRY(detach_others(bt, c, err));
    SOP__TRY(save_pos(c, key, klen, new_id, err));
    SOP__TRY(writable_at(c, lv, err));
    SOP__TRY(sop__node_reserve(c->path[lv].n, 1, (size_t)klen + vlen, err));
    sop__node_insert(c->path[lv].n, at, key, klen, val, vlen, new_id, 1, 0);
    bt->count++;

    bool moved = false;
    rc = fix_overflow(c, lv, at, &moved, err);
    if (rc != SOP_OK)
        return poison(bt, rc);
    c->state = SOP__CUR_ITEM;
    c->live = !moved; /* after a split the item is found again by (key, id) */
    if (!moved)
        c->path[lv].i = at;
    c->depth = moved ? 0 : lv + 1;
    return SOP_OK;
}

sop_rc sop__cursor_update_value(sop__cursor *c, const uint8_t *val, uint32_t vlen, sop_err *err)
{
    sop__btree *bt = c->bt;
    SOP__TRY(check_sizes(bt, 1, vlen, err));
    SOP__TRY(restore(c, err));
    if (c->state != SOP__CUR_ITEM)
        return sop__err_set(err, SOP_NOTFOUND, 0, "cursor: not on an item");
    uint32_t lv = c->depth - 1;
    SOP__TRY(detach_others(bt, c, err));
    SOP__TRY(writable_at(c, lv, err));
    sop__node *n = c->path[lv].n;
    uint32_t i = c->path[lv].i;
    SOP__TRY(sop__node_reserve(n, 0, vlen, err));
    sop__node_set_value(n, i, val, vlen);
    n->items[i].version++;
    return SOP_OK;
}

sop_rc sop__cursor_update_key(sop__cursor *c, const uint8_t *key, uint32_t klen, sop_err *err)
{
    sop__btree *bt = c->bt;
    SOP__TRY(check_sizes(bt, klen, 0, err));
    SOP__TRY(restore(c, err));
    if (c->state != SOP__CUR_ITEM)
        return sop__err_set(err, SOP_NOTFOUND, 0, "cursor: not on an item");
    uint32_t lv = c->depth - 1;
    sop__node *n = c->path[lv].n;
    uint32_t i = c->path[lv].i;
    if (sop__key_cmp(&bt->kc, sop__node_key(n, i), n->items[i].klen, key, klen) != 0)
        return sop__err_set(err, SOP_INVALID, 0,
                            "btree: a new key must order equal to the old one (change the "
                            "ordering fields by remove + add)");
    SOP__TRY(detach_others(bt, c, err));
    SOP__TRY(writable_at(c, lv, err));
    n = c->path[lv].n;
    SOP__TRY(sop__node_reserve(n, 0, klen, err));
    sop__node_set_key(n, i, key, klen);
    n->items[i].version++;
    return SOP_OK;
}

/* After a remove left path[lv] short of items: merge or even out with a
 * neighbour, level by level up; collapse an empty root. */
static sop_rc fix_underflow(sop__cursor *c, uint32_t lv, sop_err *err)
{
    sop__btree *bt = c->bt;
    /* lv < depth <= SOP__BTREE_MAX_HEIGHT, which cppcheck cannot see */
    // cppcheck-suppress arrayIndexOutOfBoundsCond
    for (; lv > 0 && c->path[lv].n->count < bt->min_fill; lv--) {
        SOP__TRY(writable_at(c, lv - 1, err));
        sop__node *p = c->path[lv - 1].n, *n = c->path[lv].n, *a, *b;
        uint32_t ci = c->path[lv - 1].i;
        uint32_t li = ci > 0 ? ci - 1 : ci;
        if (ci > 0) {
            SOP__TRY(writable_kid(bt, p, li, &a, err));
            b = n;
        } else {
            a = n;
            SOP__TRY(writable_kid(bt, p, li + 1, &b, err));
        }
        if (a->count + b->count + 1 <= bt->slot_length)
            SOP__TRY(merge(bt, p, li, a, b, err));
        else
            SOP__TRY(redistribute(p, li, a, b, err));
    }
    sop__node *root = c->path[0].n;
    if (lv == 0 && root->count == 0 && !root->leaf) {
        SOP__TRY(writable_at(c, 0, err));
        root = c->path[0].n;
        sop__node *kid;
        SOP__TRY(writable_kid(bt, root, 0, &kid, err));
        sop__node_swap_contents(root, kid);
        bt->ops->remove(bt->repo, kid);
    }
    return SOP_OK;
}

sop_rc sop__cursor_remove(sop__cursor *c, sop_err *err)
{
    sop__btree *bt = c->bt;
    SOP__TRY(refuse_if_poisoned(bt, err));
    SOP__TRY(restore(c, err));
    if (c->state != SOP__CUR_ITEM)
        return sop__err_set(err, SOP_NOTFOUND, 0, "cursor: not on an item");

    /* Nothing changes until the first delete: save positions, make the
     * nodes writable, and for an internal item find its predecessor (the
     * last item of the subtree to its left) and make room for it. */
    SOP__TRY(detach_others(bt, c, err));
    SOP__TRY(save_current(c, err));
    uint32_t lv = c->depth - 1, i = c->path[lv].i;
    SOP__TRY(writable_at(c, lv, err));
    if (c->path[lv].n->leaf) {
        sop__node_delete(c->path[lv].n, i);
    } else {
        sop__node *kid;
        SOP__TRY(get_node(bt, c->path[lv].n->kids[i], &kid, err));
        c->path[c->depth].n = kid;
        c->depth++;
        SOP__TRY(edge_down(c, true, err));
        uint32_t leaf_lv = c->depth - 1;
        SOP__TRY(writable_at(c, leaf_lv, err));
        sop__node *n = c->path[lv].n, *leaf = c->path[leaf_lv].n;
        uint32_t li = c->path[leaf_lv].i;
        SOP__TRY(sop__node_reserve(n, 0, sop__node_item_bytes(leaf, li), err));
        sop__node_replace_copy(n, i, leaf, li);
        sop__node_delete(leaf, li);
        lv = leaf_lv;
    }
    bt->count--;
    sop_rc rc = fix_underflow(c, lv, err);
    if (rc != SOP_OK)
        return poison(bt, rc);
    c->state = SOP__CUR_GAP;
    c->live = false;
    c->depth = 0;
    return SOP_OK;
}

sop_rc sop__btree_detach_cursors(sop__btree *bt, sop_err *err)
{
    return detach_others(bt, NULL, err);
}

/* --------------------------------------------------------------------------
 * Set-up, checking and statistics
 * ------------------------------------------------------------------------ */

sop_rc sop__btree_check_options(const sop_store_options *o, sop_err *err)
{
    if (o->slot_length < SOP_SLOT_LENGTH_MIN || o->slot_length > SOP_SLOT_LENGTH_MAX ||
        o->slot_length % 2 != 0)
        return sop__err_set(err, SOP_INVALID, 0,
                            "store options: slot_length %u must be an even number from %u to %u",
                            o->slot_length, SOP_SLOT_LENGTH_MIN, SOP_SLOT_LENGTH_MAX);
    return SOP_OK;
}

sop_rc sop__btree_init(sop__btree *bt, const sop__repo_ops *ops, void *repo,
                       const uint8_t root_id[16], uint64_t count, const sop_store_options *o,
                       sop_err *err)
{
    SOP__TRY(sop__btree_check_options(o, err));
    memset(bt, 0, sizeof(*bt));
    bt->ops = ops;
    bt->repo = repo;
    memcpy(bt->root_id, root_id, 16);
    bt->count = count;
    bt->slot_length = o->slot_length;
    bt->min_fill = o->slot_length / 4 > 1 ? o->slot_length / 4 : 1;
    bt->unique = o->is_unique;
    bt->llb = o->leaf_load_balancing;
    bt->kc.order_fields = o->key_order_fields;
    return SOP_OK;
}

/* Full order of two items (key, then ID in duplicate trees). */
static int cmp_items(const sop__btree *bt, const sop__node *a, uint32_t ai, const sop__node *b,
                     uint32_t bi)
{
    const sop__item *x = &a->items[ai], *y = &b->items[bi];
    int c = sop__key_cmp(&bt->kc, a->heap + x->koff, x->klen, b->heap + y->koff, y->klen);
    if (c != 0 || bt->unique)
        return c;
    return memcmp(x->id, y->id, 16);
}

typedef struct bound {
    const sop__node *n; /* NULL: unbounded */
    uint32_t i;
} bound;

typedef struct walk_state {
    sop__btree *bt;
    sop_rc (*fn)(void *ctx, const sop__node *n, uint32_t level);
    void *ctx;
    bool check;
    int32_t leaf_level; /* -1 until the first leaf */
    uint64_t items, nodes, leaves;
    uint32_t height;
} walk_state;

static sop_rc bad(sop_err *err, const sop__node *n, const char *what, uint32_t level)
{
    char text[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_format(n->id, text);
    return sop__err_set(err, SOP_CORRUPT, 0, "btree check: node %s at level %u: %s", text, level,
                        what);
}

static sop_rc walk_node(walk_state *w, const uint8_t id[16], uint32_t level, bound lo, bound hi,
                        bool lspine, bool rspine, sop_err *err)
{
    sop__btree *bt = w->bt;
    if (level >= SOP__BTREE_MAX_HEIGHT)
        return sop__err_set(err, SOP_CORRUPT, 0, "btree check: deeper than %d levels",
                            SOP__BTREE_MAX_HEIGHT);
    sop__node *n;
    SOP__TRY(get_node(bt, id, &n, err));
    w->nodes++;
    w->items += n->count;
    if (level + 1 > w->height)
        w->height = level + 1;
    if (w->fn)
        SOP__TRY(w->fn(w->ctx, n, level));
    if (w->check) {
        if (n->count > bt->slot_length)
            return bad(err, n, "more items than slot_length", level);
        uint32_t min = (lspine || rspine) ? 1 : bt->min_fill;
        if (level > 0 && n->count < min)
            return bad(err, n, "fewer items than the minimum fill", level);
        if (level == 0 && n->count == 0 && !n->leaf)
            return bad(err, n, "empty internal root", level);
        for (uint32_t k = 1; k < n->count; k++)
            if (cmp_items(bt, n, k - 1, n, k) >= 0)
                return bad(err, n, "items out of order", level);
        for (uint32_t k = 0; k < n->count; k++)
            if (n->items[k].kpre != sop__key_prefix(sop__node_key(n, k), n->items[k].klen))
                return bad(err, n, "an item's key prefix does not match its key", level);
        if (n->count > 0 && lo.n && cmp_items(bt, lo.n, lo.i, n, 0) >= 0)
            return bad(err, n, "first item not above the parent's separator", level);
        if (n->count > 0 && hi.n && cmp_items(bt, n, n->count - 1, hi.n, hi.i) >= 0)
            return bad(err, n, "last item not below the parent's separator", level);
    }
    if (n->leaf) {
        w->leaves++;
        if (w->check && w->leaf_level >= 0 && (uint32_t)w->leaf_level != level)
            return bad(err, n, "leaves at different depths", level);
        w->leaf_level = (int32_t)level;
        return SOP_OK;
    }
    for (uint32_t k = 0; k <= n->count; k++) {
        bound klo = k > 0 ? (bound){n, k - 1} : lo;
        bound khi = k < n->count ? (bound){n, k} : hi;
        SOP__TRY(walk_node(w, n->kids[k], level + 1, klo, khi, lspine && k == 0,
                           rspine && k == n->count, err));
    }
    return SOP_OK;
}

static sop_rc walk(walk_state *w, sop_err *err)
{
    sop__btree *bt = w->bt;
    w->leaf_level = -1;
    SOP__TRY(refuse_if_poisoned(bt, err));
    sop__node *root;
    sop_rc rc = bt->ops->get(bt->repo, bt->root_id, &root, err);
    if (rc == SOP_NOTFOUND) {
        if (w->check && bt->count != 0)
            return sop__err_set(err, SOP_CORRUPT, 0, "btree check: no root but count is %llu",
                                (unsigned long long)bt->count);
        return SOP_OK;
    }
    if (rc != SOP_OK)
        return rc;
    bound none = {NULL, 0};
    SOP__TRY(walk_node(w, bt->root_id, 0, none, none, true, true, err));
    if (w->check && w->items != bt->count)
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "btree check: %llu items reachable but count is %llu",
                            (unsigned long long)w->items, (unsigned long long)bt->count);
    return SOP_OK;
}

sop_rc sop__btree_check(sop__btree *bt, sop_err *err)
{
    walk_state w = {.bt = bt, .check = true};
    return walk(&w, err);
}

sop_rc sop__btree_walk(sop__btree *bt, sop_rc (*fn)(void *ctx, const sop__node *n, uint32_t level),
                       void *ctx, sop_err *err)
{
    walk_state w = {.bt = bt, .fn = fn, .ctx = ctx};
    return walk(&w, err);
}

sop_rc sop__btree_stats(sop__btree *bt, sop_btree_stats *out, sop_err *err)
{
    walk_state w = {.bt = bt};
    SOP__TRY(walk(&w, err));
    memset(out, 0, sizeof(*out));
    out->count = w.items;
    out->slot_length = bt->slot_length;
    if (w.items == 0)
        return SOP_OK; /* an emptied root leaf is not a level of data */
    out->nodes = w.nodes;
    out->leaves = w.leaves;
    out->height = w.height;
    out->fill = (double)w.items / ((double)w.nodes * bt->slot_length);
    return SOP_OK;
}
