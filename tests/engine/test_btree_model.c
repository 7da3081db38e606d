/*
 * test_btree_model.c - the B-tree against a trivial reference (a sorted
 * array), driven by seeded random operations.
 *
 * Every configuration runs a few phases that grow the tree towards a target
 * size and shrink it back (so splits, merges, redistributions and root
 * collapses all happen), with a mix of every tree-level call and cursor
 * walks. Every cursor move is compared with the reference. Structural
 * invariants (sop_btree_check) are checked after every operation while the
 * tree is small and every 500 operations when it is large. Several
 * long-lived cursors are kept across changes and checked against the
 * documented semantics (they keep their item, or sit in its gap).
 *
 * Seeds are printed; replay one with SOP_TEST_SEED=<seed>.
 */
#include <stdlib.h>

#include "t.h"

/* ---- the reference ---------------------------------------------------- */

typedef struct entry {
    char key[16];
    uint8_t klen;
    uint8_t id[16];
    uint32_t version;
    uint32_t vtag; /* value bytes are a pattern of (vtag, vlen) */
    uint32_t vlen;
} entry;

typedef struct model {
    entry *pool;
    uint32_t *order; /* indices into pool, sorted like the tree */
    uint32_t n, cap;
    uint32_t *free_list;
    uint32_t nfree, pool_used;
    bool unique;
} model;

static void model_init(model *m, uint32_t cap, bool unique)
{
    m->pool = calloc(cap, sizeof(entry));
    m->order = calloc(cap, sizeof(uint32_t));
    m->free_list = calloc(cap, sizeof(uint32_t));
    m->n = 0;
    m->cap = cap;
    m->nfree = 0;
    m->pool_used = 0;
    m->unique = unique;
}

static void model_free(model *m)
{
    free(m->pool);
    free(m->order);
    free(m->free_list);
}

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = memcmp(a, b, n);
    if (c)
        return c;
    return (alen > blen) - (alen < blen);
}

/* Full order: key, then (duplicate trees) id. */
static int ent_cmp(const model *m, const entry *e, const char *key, size_t klen, const uint8_t *id)
{
    int c = key_cmp(e->key, e->klen, key, klen);
    if (c || m->unique || id == NULL)
        return c;
    return memcmp(e->id, id, 16);
}

/* First position whose entry is > (bias +1), >= (bias 0 / -1) the target. */
static uint32_t model_bound(const model *m, const char *key, size_t klen, const uint8_t *id,
                            int bias)
{
    uint32_t lo = 0, hi = m->n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        int c = ent_cmp(m, &m->pool[m->order[mid]], key, klen, id);
        if (c == 0)
            c = -bias;
        if (c < 0 || (c == 0 && bias > 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static entry *model_at(const model *m, uint32_t pos)
{
    return &m->pool[m->order[pos]];
}

/* Position of the first entry with key, or -1. */
static int64_t model_find_first(const model *m, const char *key, size_t klen)
{
    uint32_t pos = model_bound(m, key, klen, NULL, -1);
    if (pos < m->n && key_cmp(model_at(m, pos)->key, model_at(m, pos)->klen, key, klen) == 0)
        return pos;
    return -1;
}

static int64_t model_find_exact(const model *m, const char *key, size_t klen, const uint8_t *id)
{
    for (uint32_t pos = model_bound(m, key, klen, NULL, -1); pos < m->n; pos++) {
        entry *e = model_at(m, pos);
        if (key_cmp(e->key, e->klen, key, klen) != 0)
            break;
        if (memcmp(e->id, id, 16) == 0)
            return pos;
    }
    return -1;
}

static void model_insert(model *m, const char *key, size_t klen, const uint8_t id[16],
                         uint32_t vtag, uint32_t vlen)
{
    CHECK(m->n < m->cap);
    uint32_t slot = m->nfree ? m->free_list[--m->nfree] : m->pool_used++;
    entry *e = &m->pool[slot];
    memcpy(e->key, key, klen);
    e->klen = (uint8_t)klen;
    memcpy(e->id, id, 16);
    e->version = 1;
    e->vtag = vtag;
    e->vlen = vlen;
    uint32_t pos = model_bound(m, key, klen, id, 0);
    memmove(&m->order[pos + 1], &m->order[pos], sizeof(uint32_t) * (m->n - pos));
    m->order[pos] = slot;
    m->n++;
}

static void model_remove_at(model *m, uint32_t pos)
{
    m->free_list[m->nfree++] = m->order[pos];
    memmove(&m->order[pos], &m->order[pos + 1], sizeof(uint32_t) * (m->n - pos - 1));
    m->n--;
}

/* ---- values ------------------------------------------------------------ */

static uint8_t *value_buf;

static const uint8_t *make_value(uint32_t vtag, uint32_t vlen)
{
    for (uint32_t i = 0; i < vlen; i++)
        value_buf[i] = (uint8_t)(vtag + i * 31u + (i >> 3));
    return value_buf;
}

static bool value_matches(const sop_item *it, const entry *e)
{
    return it->value_len == e->vlen &&
           memcmp(it->value, make_value(e->vtag, e->vlen), e->vlen) == 0;
}

/* ---- one run ------------------------------------------------------------ */

typedef struct shadow_cursor {
    sop_cursor *c;
    int state; /* 0 none, 1 on item, 2 gap */
    char key[16];
    size_t klen;
    uint8_t id[16];
} shadow_cursor;

typedef struct run {
    t_rng rng;
    sop_btree *bt;
    model m;
    uint32_t keyspace;
    uint64_t ops, moves;
    uint32_t max_items, max_height;
    shadow_cursor sc[3];
} run;

static size_t gen_key(run *r, char *out)
{
    uint32_t k = (uint32_t)t_rng_below(&r->rng, r->keyspace);
    return (size_t)snprintf(out, 16, "k%u", k);
}

static void gen_value(run *r, uint32_t *vtag, uint32_t *vlen)
{
    *vtag = (uint32_t)t_rng_next(&r->rng);
    uint64_t p = t_rng_below(&r->rng, 100);
    *vlen =
        p < 2 ? 1000 + (uint32_t)t_rng_below(&r->rng, 3000) : (uint32_t)t_rng_below(&r->rng, 41);
}

static void check_item(const sop_item *it, const entry *e)
{
    CHECK_MSG(key_cmp(it->key, it->key_len, e->key, e->klen) == 0,
              "key mismatch: got %.*s want %.*s", (int)it->key_len, (const char *)it->key,
              (int)e->klen, e->key);
    CHECK_MSG(memcmp(it->id, e->id, 16) == 0, "id mismatch at key %.*s", (int)e->klen, e->key);
    CHECK_MSG(value_matches(it, e), "value mismatch at key %.*s", (int)e->klen, e->key);
    CHECK_MSG(it->version == e->version, "version %u want %u at key %.*s", it->version, e->version,
              (int)e->klen, e->key);
}

/* The cursor must be on reference position pos (or unpositioned if pos is
 * outside the array). */
static void expect_at(sop_cursor *c, sop_rc rc, const model *m, int64_t pos)
{
    sop_err err = {0};
    if (pos < 0 || pos >= m->n) {
        CHECK_MSG(rc == SOP_NOTFOUND, "expected the end, got %s", sop_rc_name(rc));
        CHECK(!sop_cursor_on_item(c));
        return;
    }
    CHECK_MSG(rc == SOP_OK, "expected an item at %lld of %u, got %s", (long long)pos, m->n,
              sop_rc_name(rc));
    sop_item it;
    CHECK_OK(sop_cursor_item(c, &it, &err), &err);
    check_item(&it, model_at(m, (uint32_t)pos));
}

/* Walks up to `steps` moves in direction dir from reference position pos. */
static void walk(run *r, sop_cursor *c, int64_t pos, int dir, uint32_t steps)
{
    sop_err err = {0};
    for (uint32_t s = 0; s < steps && pos >= 0 && pos < r->m.n; s++) {
        sop_rc rc = dir > 0 ? sop_cursor_next(c, &err) : sop_cursor_prev(c, &err);
        pos += dir;
        expect_at(c, rc, &r->m, pos);
        r->moves++;
    }
}

static void shadow_set(shadow_cursor *s, const entry *e)
{
    s->state = 1;
    memcpy(s->key, e->key, e->klen);
    s->klen = e->klen;
    memcpy(s->id, e->id, 16);
}

/* Where a long-lived cursor's next/prev must land, from its shadow. */
static int64_t shadow_next_pos(const run *r, const shadow_cursor *s, int dir)
{
    const model *m = &r->m;
    if (s->state == 0)
        return -1;
    int64_t at = s->state == 1 ? model_find_exact(m, s->key, s->klen, s->id) : -1;
    if (at >= 0)
        return at + dir;
    /* gap: first after / last before the vanished item */
    const uint8_t *id = m->unique ? NULL : s->id;
    if (dir > 0)
        return model_bound(m, s->key, s->klen, id, +1);
    return (int64_t)model_bound(m, s->key, s->klen, id, -1) - 1;
}

static void exercise_shadows(run *r)
{
    sop_err err = {0};
    for (int k = 0; k < 3; k++) {
        shadow_cursor *s = &r->sc[k];
        uint64_t what = t_rng_below(&r->rng, 4);
        if (what == 0 || s->state == 0) {
            /* (re)position on a random existing item */
            if (r->m.n == 0)
                continue;
            uint32_t pos = (uint32_t)t_rng_below(&r->rng, r->m.n);
            entry *e = model_at(&r->m, pos);
            CHECK_OK(sop_cursor_find_id(s->c, e->key, e->klen, e->id, &err), &err);
            shadow_set(s, e);
            continue;
        }
        if (what == 1) {
            /* current item: present unless it was removed */
            sop_item it;
            sop_rc rc = sop_cursor_item(s->c, &it, &err);
            int64_t at = s->state == 1 ? model_find_exact(&r->m, s->key, s->klen, s->id) : -1;
            if (at < 0) {
                CHECK_MSG(rc == SOP_NOTFOUND, "item of a removed position: %s", sop_rc_name(rc));
                s->state = 2;
            } else {
                CHECK_OK(rc, &err);
                check_item(&it, model_at(&r->m, (uint32_t)at));
            }
            continue;
        }
        int dir = what == 2 ? +1 : -1;
        int64_t want = shadow_next_pos(r, s, dir);
        sop_rc rc = dir > 0 ? sop_cursor_next(s->c, &err) : sop_cursor_prev(s->c, &err);
        expect_at(s->c, rc, &r->m, want);
        r->moves++;
        if (want >= 0 && want < r->m.n)
            shadow_set(s, model_at(&r->m, (uint32_t)want));
        else
            s->state = 0;
    }
}

static void one_op(run *r, uint32_t grow_bias)
{
    sop_err err = {0};
    model *m = &r->m;
    char key[16];
    size_t klen = gen_key(r, key);
    uint32_t vtag, vlen;
    gen_value(r, &vtag, &vlen);
    uint8_t id[16];
    uint64_t op = t_rng_below(&r->rng, 100);
    int64_t first = model_find_first(m, key, klen);

    if (op < grow_bias) { /* one of the three adds */
        uint64_t kind = t_rng_below(&r->rng, 3);
        sop_rc rc;
        if (kind == 0)
            rc = sop_btree_add(r->bt, key, klen, make_value(vtag, vlen), vlen, id, &err);
        else if (kind == 1)
            rc = sop_btree_add_if_not_exists(r->bt, key, klen, make_value(vtag, vlen), vlen, id,
                                             &err);
        else
            rc = sop_btree_upsert(r->bt, key, klen, make_value(vtag, vlen), vlen, id, &err);
        bool blocked = first >= 0 && (m->unique || kind == 1);
        if (kind == 2 && first >= 0) {
            CHECK_OK(rc, &err);
            entry *e = model_at(m, (uint32_t)first);
            CHECK(memcmp(id, e->id, 16) == 0);
            e->vtag = vtag, e->vlen = vlen, e->version++;
        } else if (blocked) {
            CHECK_RC(rc, SOP_EXISTS, &err);
        } else {
            CHECK_OK(rc, &err);
            model_insert(m, key, klen, id, vtag, vlen);
        }
    } else if (op < grow_bias + 10) { /* update */
        sop_rc rc = sop_btree_update(r->bt, key, klen, make_value(vtag, vlen), vlen, &err);
        if (first < 0) {
            CHECK_RC(rc, SOP_NOTFOUND, &err);
        } else {
            CHECK_OK(rc, &err);
            entry *e = model_at(m, (uint32_t)first);
            e->vtag = vtag, e->vlen = vlen, e->version++;
        }
    } else if (op < grow_bias + 10 + (100 - grow_bias - 10) / 2) { /* remove */
        sop_rc rc = sop_btree_remove(r->bt, key, klen, &err);
        if (first < 0) {
            CHECK_RC(rc, SOP_NOTFOUND, &err);
        } else {
            CHECK_OK(rc, &err);
            model_remove_at(m, (uint32_t)first);
        }
    } else { /* reads and cursor walks */
        uint64_t kind = t_rng_below(&r->rng, 7);
        uint32_t which = (uint32_t)t_rng_below(&r->rng, 3);
        sop_cursor *c = r->sc[which].c;
        sop_rc rc;
        switch (kind) {
        case 0: { /* get */
            sop_item it;
            rc = sop_btree_get(r->bt, key, klen, &it, &err);
            if (first < 0) {
                CHECK_RC(rc, SOP_NOTFOUND, &err);
            } else {
                CHECK_OK(rc, &err);
                check_item(&it, model_at(m, (uint32_t)first));
            }
            break;
        }
        case 1: { /* find + walk forward */
            rc = sop_cursor_find(c, key, klen, &err);
            uint32_t pos = model_bound(m, key, klen, NULL, -1);
            if (first >= 0) {
                CHECK_OK(rc, &err);
            } else {
                CHECK_RC(rc, SOP_NOTFOUND, &err);
                CHECK(sop_cursor_on_item(c) == (pos < m->n));
            }
            if (pos < m->n) {
                sop_item it;
                CHECK_OK(sop_cursor_item(c, &it, &err), &err);
                check_item(&it, model_at(m, pos));
                walk(r, c, pos, t_rng_below(&r->rng, 2) ? 1 : -1,
                     (uint32_t)t_rng_below(&r->rng, 40));
            }
            break;
        }
        case 2: { /* find_last + walk backward */
            rc = sop_cursor_find_last(c, key, klen, &err);
            int64_t pos = (int64_t)model_bound(m, key, klen, NULL, +1) - 1;
            bool hit = pos >= 0 && key_cmp(model_at(m, (uint32_t)pos)->key,
                                           model_at(m, (uint32_t)pos)->klen, key, klen) == 0;
            CHECK_RC(rc, hit ? SOP_OK : SOP_NOTFOUND, &err);
            CHECK(sop_cursor_on_item(c) == (pos >= 0));
            if (pos >= 0) {
                sop_item it;
                CHECK_OK(sop_cursor_item(c, &it, &err), &err);
                check_item(&it, model_at(m, (uint32_t)pos));
                walk(r, c, pos, -1, (uint32_t)t_rng_below(&r->rng, 40));
            }
            break;
        }
        case 3: { /* first/last + walk */
            bool fwd = t_rng_below(&r->rng, 2);
            rc = fwd ? sop_cursor_first(c, &err) : sop_cursor_last(c, &err);
            int64_t pos = fwd ? 0 : (int64_t)m->n - 1;
            expect_at(c, rc, m, m->n ? pos : -1);
            walk(r, c, pos, fwd ? 1 : -1, (uint32_t)t_rng_below(&r->rng, 60));
            break;
        }
        case 4: { /* find_id of a real item and of a made-up id */
            if (m->n == 0)
                break;
            uint32_t pos = (uint32_t)t_rng_below(&r->rng, m->n);
            entry *e = model_at(m, pos);
            CHECK_OK(sop_cursor_find_id(c, e->key, e->klen, e->id, &err), &err);
            expect_at(c, SOP_OK, m, pos);
            uint8_t bogus[16];
            memcpy(bogus, e->id, 16);
            bogus[15] ^= 0x5a;
            CHECK_RC(sop_cursor_find_id(c, e->key, e->klen, bogus, &err), SOP_NOTFOUND, &err);
            CHECK(!sop_cursor_on_item(c));
            break;
        }
        case 5: { /* walk, removing the current item now and then */
            if (m->n == 0)
                break;
            uint32_t pos = (uint32_t)t_rng_below(&r->rng, m->n);
            entry *e = model_at(m, pos);
            CHECK_OK(sop_cursor_find_id(c, e->key, e->klen, e->id, &err), &err);
            int dir = t_rng_below(&r->rng, 2) ? 1 : -1;
            for (int s = 0; s < 20 && m->n > 0; s++) {
                if (t_rng_below(&r->rng, 3) == 0) {
                    CHECK_OK(sop_cursor_remove(c, &err), &err);
                    model_remove_at(m, pos);
                    sop_item it;
                    CHECK_RC(sop_cursor_item(c, &it, &err), SOP_NOTFOUND, &err);
                    /* from the gap, next lands on what followed (now at
                     * pos), prev on what preceded (pos - 1) */
                    int64_t np = dir > 0 ? (int64_t)pos : (int64_t)pos - 1;
                    rc = dir > 0 ? sop_cursor_next(c, &err) : sop_cursor_prev(c, &err);
                    expect_at(c, rc, m, np);
                    if (np < 0 || np >= m->n)
                        break;
                    pos = (uint32_t)np;
                } else {
                    rc = dir > 0 ? sop_cursor_next(c, &err) : sop_cursor_prev(c, &err);
                    int64_t np = (int64_t)pos + dir;
                    expect_at(c, rc, m, np);
                    if (np < 0 || np >= m->n)
                        break;
                    pos = (uint32_t)np;
                }
                r->moves++;
            }
            break;
        }
        default: { /* update the value (and, same order, the key) through a cursor */
            if (m->n == 0)
                break;
            uint32_t pos = (uint32_t)t_rng_below(&r->rng, m->n);
            entry *e = model_at(m, pos);
            CHECK_OK(sop_cursor_find_id(c, e->key, e->klen, e->id, &err), &err);
            CHECK_OK(sop_cursor_update_value(c, make_value(vtag, vlen), vlen, &err), &err);
            e->vtag = vtag, e->vlen = vlen, e->version++;
            CHECK_OK(sop_cursor_update_key(c, e->key, e->klen, &err), &err);
            e->version++;
            if (klen != e->klen || memcmp(key, e->key, klen) != 0)
                CHECK_RC(sop_cursor_update_key(c, key, klen, &err), SOP_INVALID, &err);
            expect_at(c, SOP_OK, m, pos);
            break;
        }
        }
        /* that shadow's cursor was used: it gets a fresh position later */
        r->sc[which].state = 0;
    }
    CHECK_EQ(sop_btree_count(r->bt), m->n);
}

static void run_config(uint64_t seed, uint32_t slot, bool unique, bool llb, uint32_t keyspace,
                       uint64_t nops)
{
    run r;
    memset(&r, 0, sizeof(r));
    t_rng_seed(&r.rng, seed);
    r.keyspace = keyspace;
    sop_store_options o;
    sop_store_options_init(&o);
    o.slot_length = slot;
    o.is_unique = unique;
    o.leaf_load_balancing = llb;
    sop_err err = {0};
    CHECK_OK(sop_btree_open_memory(&o, &r.bt, &err), &err);
    model_init(&r.m, keyspace * (unique ? 1 : 4) + 64, unique);
    for (int k = 0; k < 3; k++)
        CHECK_OK(sop_cursor_open(r.bt, &r.sc[k].c, &err), &err);

    /* Phases: grow to ~70% of the key space (duplicate trees: ~2 items per
     * key), shrink to almost nothing, grow again, shrink to empty. */
    uint32_t target_hi = unique ? keyspace * 7 / 10 : keyspace * 2;
    uint64_t ops_done = 0;
    for (int phase = 0; ops_done < nops; phase++) {
        bool grow = phase % 2 == 0;
        uint64_t phase_ops = 0;
        while (ops_done < nops) {
            if (grow && r.m.n >= target_hi)
                break;
            if (!grow && r.m.n <= (phase % 4 == 3 ? 0u : keyspace / 50))
                break;
            if (phase_ops > nops / 2 + 1000)
                break;
            uint32_t bias = grow ? 60 : 12;
            one_op(&r, bias);
            exercise_shadows(&r);
            ops_done++, phase_ops++;
            if (r.m.n > r.max_items)
                r.max_items = r.m.n;
            if (r.m.n < 256 || ops_done % 500 == 0) {
                CHECK_OK(sop_btree_check(r.bt, &err), &err);
                sop_btree_stats st;
                CHECK_OK(sop_btree_stats_get(r.bt, &st, &err), &err);
                if (st.height > r.max_height)
                    r.max_height = st.height;
            }
        }
        /* drain completely now and then so the empty tree is exercised */
        if (!grow && phase % 4 == 3) {
            while (r.m.n > 0) {
                entry *e = model_at(&r.m, 0);
                CHECK_OK(sop_btree_remove(r.bt, e->key, e->klen, &err), &err);
                model_remove_at(&r.m, 0);
                ops_done++;
            }
            CHECK_OK(sop_btree_check(r.bt, &err), &err);
            sop_btree_stats st;
            CHECK_OK(sop_btree_stats_get(r.bt, &st, &err), &err);
            CHECK_EQ(st.count, 0);
        }
    }
    CHECK_OK(sop_btree_check(r.bt, &err), &err);
    printf("#   slot %u %s%s: %llu ops, %llu cursor moves, up to %u items and %u levels\n", slot,
           unique ? "unique" : "duplicates", llb ? " llb" : "", (unsigned long long)ops_done,
           (unsigned long long)r.moves, r.max_items, r.max_height);
    CHECK(r.max_height >= 2); /* the run must have split nodes */
    for (int k = 0; k < 3; k++)
        sop_cursor_close(r.sc[k].c);
    sop_btree_close(r.bt);
    model_free(&r.m);
}

static uint64_t scale(uint64_t n)
{
    return t_long() ? n * 10 : n;
}

/* 1,000,000+ operations in the default suite, spread over the configs. */
#define CONFIG_TEST(name, slot, unique, llb, keyspace, nops)                                       \
    TEST(name)                                                                                     \
    {                                                                                              \
        value_buf = value_buf ? value_buf : malloc(8192);                                          \
        run_config(t_seed(), slot, unique, llb, keyspace, scale(nops));                            \
    }

CONFIG_TEST(model_slot4_unique, 4, true, false, 1500, 110000)
CONFIG_TEST(model_slot4_dup, 4, false, false, 400, 110000)
CONFIG_TEST(model_slot8_unique_llb, 8, true, true, 3000, 110000)
CONFIG_TEST(model_slot8_dup, 8, false, false, 800, 100000)
CONFIG_TEST(model_slot64_unique, 64, true, false, 20000, 110000)
CONFIG_TEST(model_slot64_dup_llb, 64, false, true, 4000, 100000)
CONFIG_TEST(model_slot500_unique_llb, 500, true, true, 30000, 100000)
CONFIG_TEST(model_slot500_dup, 500, false, false, 8000, 90000)
CONFIG_TEST(model_slot2000_unique, 2000, true, false, 30000, 90000)
CONFIG_TEST(model_slot2000_dup_llb, 2000, false, true, 10000, 90000)
