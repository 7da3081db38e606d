/*
 * test_btree.c - the B-tree's contract case by case: the API and its errors,
 * duplicate order, cursors across changes, tuple keys with carried fields,
 * the fill and shrink policies (docs/btree.md), and allocation failures
 * injected at every allocation of an insert and a remove.
 */
#include <math.h>
#include <stdlib.h>

#include "fault.h"
#include "t.h"

static sop_btree *open_tree(uint32_t slot, bool unique, bool llb)
{
    sop_store_options o;
    sop_store_options_init(&o);
    o.slot_length = slot;
    o.is_unique = unique;
    o.leaf_load_balancing = llb;
    sop_btree *bt = NULL;
    sop_err err = {0};
    CHECK_OK(sop_btree_open_memory(&o, &bt, &err), &err);
    return bt;
}

/* 8-byte big-endian key: memcmp order = numeric order. */
static void be_key(uint64_t v, uint8_t out[8])
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}

static void check_tree(sop_btree *bt)
{
    sop_err err = {0};
    CHECK_OK(sop_btree_check(bt, &err), &err);
}

TEST(options_are_validated)
{
    sop_store_options o;
    sop_store_options_init(&o);
    CHECK_EQ(o.slot_length, 2000);
    CHECK(o.is_unique);
    CHECK(!o.leaf_load_balancing);
    sop_err err = {0};
    sop_btree *bt = NULL;
    uint32_t bad[] = {0, 2, 3, 5, 9999, 10002, 20000};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.slot_length = bad[i];
        CHECK_RC(sop_btree_open_memory(&o, &bt, &err), SOP_INVALID, &err);
        CHECK(strstr(err.msg, "slot_length") != NULL);
        CHECK(bt == NULL);
    }
    o.slot_length = 4;
    CHECK_OK(sop_btree_open_memory(&o, &bt, &err), &err);
    sop_btree_close(bt);
    o.slot_length = 10000;
    CHECK_OK(sop_btree_open_memory(&o, &bt, &err), &err);
    sop_btree_close(bt);
    CHECK_RC(sop_btree_open_memory(NULL, &bt, &err), SOP_INVALID, &err);
    sop_btree_close(NULL); /* no-op */
}

TEST(error_names_come_from_one_table)
{
    CHECK(strcmp(sop_rc_name(SOP_OK), "SOP_OK") == 0);
    CHECK(strcmp(sop_rc_name(SOP_CONFLICT), "SOP_CONFLICT") == 0);
    CHECK(strcmp(sop_rc_message(SOP_NOTFOUND), "not found") == 0);
    CHECK(strcmp(sop_rc_name((sop_rc)999), "SOP_UNKNOWN") == 0);
    sop_err err;
    memset(&err, 0x55, sizeof(err));
    sop_err_clear(&err);
    CHECK_EQ(err.code, SOP_OK);
    CHECK_EQ(err.msg[0], 0);
}

TEST(crud_on_a_unique_tree)
{
    sop_btree *bt = open_tree(8, true, false);
    sop_err err = {0};
    uint8_t id1[16], id2[16];
    CHECK_OK(sop_btree_add(bt, "apple", 5, "red", 3, id1, &err), &err);
    CHECK_RC(sop_btree_add(bt, "apple", 5, "green", 5, NULL, &err), SOP_EXISTS, &err);
    CHECK_RC(sop_btree_add_if_not_exists(bt, "apple", 5, "x", 1, NULL, &err), SOP_EXISTS, &err);
    CHECK_OK(sop_btree_add_if_not_exists(bt, "pear", 4, "", 0, NULL, &err), &err);
    CHECK_EQ(sop_btree_count(bt), 2);

    sop_item it;
    CHECK_OK(sop_btree_get(bt, "apple", 5, &it, &err), &err);
    CHECK(it.value_len == 3 && memcmp(it.value, "red", 3) == 0);
    CHECK(memcmp(it.id, id1, 16) == 0);
    CHECK_EQ(it.version, 1);

    CHECK_OK(sop_btree_update(bt, "apple", 5, "crimson", 7, &err), &err);
    CHECK_OK(sop_btree_get(bt, "apple", 5, &it, &err), &err);
    CHECK(it.value_len == 7 && memcmp(it.value, "crimson", 7) == 0);
    CHECK_EQ(it.version, 2);
    CHECK_RC(sop_btree_update(bt, "plum", 4, "x", 1, &err), SOP_NOTFOUND, &err);

    CHECK_OK(sop_btree_upsert(bt, "apple", 5, "dark", 4, id2, &err), &err);
    CHECK(memcmp(id1, id2, 16) == 0); /* upsert of an existing key updates it */
    CHECK_OK(sop_btree_upsert(bt, "fig", 3, "purple", 6, id2, &err), &err);
    CHECK(memcmp(id1, id2, 16) != 0);
    CHECK_EQ(sop_btree_count(bt), 3);

    CHECK_OK(sop_btree_remove(bt, "apple", 5, &err), &err);
    CHECK_RC(sop_btree_remove(bt, "apple", 5, &err), SOP_NOTFOUND, &err);
    CHECK_RC(sop_btree_get(bt, "apple", 5, &it, &err), SOP_NOTFOUND, &err);
    CHECK_EQ(sop_btree_count(bt), 2);
    check_tree(bt);
    sop_btree_close(bt);
}

TEST(bad_arguments_are_refused_cleanly)
{
    sop_btree *bt = open_tree(4, true, false);
    sop_err err = {0};
    static uint8_t big[SOP_VALUE_INLINE_MAX + 1];
    CHECK_RC(sop_btree_add(bt, NULL, 3, "v", 1, NULL, &err), SOP_INVALID, &err);
    CHECK_RC(sop_btree_add(bt, "k", 0, "v", 1, NULL, &err), SOP_INVALID, &err);
    CHECK_RC(sop_btree_add(bt, "k", 1, NULL, 1, NULL, &err), SOP_INVALID, &err);
    CHECK_RC(sop_btree_add(bt, big, SOP_KEY_MAX + 1, "v", 1, NULL, &err), SOP_LIMIT, &err);
    CHECK(strstr(err.msg, "key") != NULL);
    CHECK_RC(sop_btree_add(bt, "k", 1, big, sizeof(big), NULL, &err), SOP_LIMIT, &err);
    CHECK_RC(sop_btree_add(NULL, "k", 1, "v", 1, NULL, &err), SOP_INVALID, &err);
    CHECK_OK(sop_btree_add(bt, big, SOP_KEY_MAX, big, SOP_VALUE_INLINE_MAX, NULL, &err), &err);
    CHECK_OK(sop_btree_add(bt, "k", 1, NULL, 0, NULL, &err), &err); /* empty value is fine */
    CHECK_EQ(sop_btree_count(bt), 2);
    sop_cursor *c;
    CHECK_OK(sop_cursor_open(bt, &c, &err), &err);
    CHECK_RC(sop_cursor_add(c, "x", 1, "v", 1, 77, &err), SOP_INVALID, &err);
    CHECK_RC(sop_cursor_find_id(c, "k", 1, NULL, &err), SOP_INVALID, &err);
    CHECK_RC(sop_cursor_item(NULL, NULL, &err), SOP_INVALID, &err);
    CHECK_RC(sop_cursor_remove(c, &err), SOP_NOTFOUND, &err); /* not on an item */
    CHECK_RC(sop_cursor_update_value(c, "v", 1, &err), SOP_NOTFOUND, &err);
    sop_cursor_close(c);
    sop_cursor_close(NULL);
    check_tree(bt);
    sop_btree_close(bt);
}

TEST(empty_tree_navigation)
{
    sop_btree *bt = open_tree(4, true, false);
    sop_err err = {0};
    sop_cursor *c;
    CHECK_OK(sop_cursor_open(bt, &c, &err), &err);
    CHECK_RC(sop_cursor_first(c, &err), SOP_NOTFOUND, &err);
    CHECK_RC(sop_cursor_last(c, &err), SOP_NOTFOUND, &err);
    CHECK_RC(sop_cursor_next(c, &err), SOP_NOTFOUND, &err);
    CHECK_RC(sop_cursor_prev(c, &err), SOP_NOTFOUND, &err);
    CHECK_RC(sop_cursor_find(c, "a", 1, &err), SOP_NOTFOUND, &err);
    CHECK(!sop_cursor_on_item(c));
    /* fill, empty again, and reuse */
    for (int round = 0; round < 2; round++) {
        for (uint64_t k = 0; k < 100; k++) {
            uint8_t key[8];
            be_key(k, key);
            CHECK_OK(sop_btree_add(bt, key, 8, "v", 1, NULL, &err), &err);
        }
        for (uint64_t k = 0; k < 100; k++) {
            uint8_t key[8];
            be_key(k * 37 % 100, key);
            CHECK_OK(sop_btree_remove(bt, key, 8, &err), &err);
            check_tree(bt);
        }
        CHECK_EQ(sop_btree_count(bt), 0);
        CHECK_RC(sop_cursor_first(c, &err), SOP_NOTFOUND, &err);
    }
    sop_cursor_close(c);
    sop_btree_close(bt);
}

TEST(duplicates_list_in_insertion_order)
{
    sop_btree *bt = open_tree(4, false, false);
    sop_err err = {0};
    uint8_t ids[20][16];
    /* interleave other keys so the duplicates straddle node boundaries */
    for (int i = 0; i < 20; i++) {
        char v[8];
        int n = snprintf(v, sizeof(v), "v%d", i);
        CHECK_OK(sop_btree_add(bt, "dup", 3, v, (size_t)n, ids[i], &err), &err);
        CHECK_OK(sop_btree_add(bt, i % 2 ? "aaa" : "zzz", 3, v, (size_t)n, NULL, &err), &err);
    }
    CHECK_RC(sop_btree_add_if_not_exists(bt, "dup", 3, "x", 1, NULL, &err), SOP_EXISTS, &err);
    check_tree(bt);

    sop_cursor *c;
    CHECK_OK(sop_cursor_open(bt, &c, &err), &err);
    CHECK_OK(sop_cursor_find(c, "dup", 3, &err), &err);
    for (int i = 0; i < 20; i++) {
        sop_item it;
        CHECK_OK(sop_cursor_item(c, &it, &err), &err);
        CHECK(it.key_len == 3 && memcmp(it.key, "dup", 3) == 0);
        CHECK_MSG(memcmp(it.id, ids[i], 16) == 0, "duplicate %d out of insertion order", i);
        char v[8];
        int n = snprintf(v, sizeof(v), "v%d", i);
        CHECK(it.value_len == (size_t)n && memcmp(it.value, v, (size_t)n) == 0);
        sop_rc rc = sop_cursor_next(c, &err);
        CHECK_OK(rc, &err);
    }
    sop_item it;
    CHECK_OK(sop_cursor_item(c, &it, &err), &err);
    CHECK(memcmp(it.key, "zzz", 3) == 0);

    /* find_last lands on the newest duplicate; prev walks back in order */
    CHECK_OK(sop_cursor_find_last(c, "dup", 3, &err), &err);
    for (int i = 19; i >= 0; i--) {
        CHECK_OK(sop_cursor_item(c, &it, &err), &err);
        CHECK(memcmp(it.id, ids[i], 16) == 0);
        CHECK_OK(sop_cursor_prev(c, &err), &err);
    }
    /* find_id reaches each one directly */
    for (int i = 0; i < 20; i++) {
        CHECK_OK(sop_cursor_find_id(c, "dup", 3, ids[i], &err), &err);
        CHECK_OK(sop_cursor_item(c, &it, &err), &err);
        CHECK(memcmp(it.id, ids[i], 16) == 0);
    }
    /* remove by key takes the first (oldest); upsert updates the first */
    CHECK_OK(sop_btree_remove(bt, "dup", 3, &err), &err);
    CHECK_OK(sop_btree_get(bt, "dup", 3, &it, &err), &err);
    CHECK(memcmp(it.id, ids[1], 16) == 0);
    uint8_t upid[16];
    CHECK_OK(sop_btree_upsert(bt, "dup", 3, "new", 3, upid, &err), &err);
    CHECK(memcmp(upid, ids[1], 16) == 0);
    CHECK_EQ(sop_btree_count(bt), 39);
    check_tree(bt);
    sop_cursor_close(c);
    sop_btree_close(bt);
}

TEST(find_positions_for_range_scans)
{
    sop_btree *bt = open_tree(4, true, false);
    sop_err err = {0};
    for (uint64_t k = 10; k <= 100; k += 10) {
        uint8_t key[8];
        be_key(k, key);
        CHECK_OK(sop_btree_add(bt, key, 8, key, 8, NULL, &err), &err);
    }
    sop_cursor *c;
    CHECK_OK(sop_cursor_open(bt, &c, &err), &err);
    uint8_t key[8];
    sop_item it;
    be_key(35, key); /* between 30 and 40 */
    CHECK_RC(sop_cursor_find(c, key, 8, &err), SOP_NOTFOUND, &err);
    CHECK_OK(sop_cursor_item(c, &it, &err), &err);
    be_key(40, key);
    CHECK(memcmp(it.key, key, 8) == 0);
    be_key(35, key);
    CHECK_RC(sop_cursor_find_last(c, key, 8, &err), SOP_NOTFOUND, &err);
    CHECK_OK(sop_cursor_item(c, &it, &err), &err);
    be_key(30, key);
    CHECK(memcmp(it.key, key, 8) == 0);
    be_key(500, key); /* past the end: unpositioned */
    CHECK_RC(sop_cursor_find(c, key, 8, &err), SOP_NOTFOUND, &err);
    CHECK(!sop_cursor_on_item(c));
    CHECK_RC(sop_cursor_find_last(c, key, 8, &err), SOP_NOTFOUND, &err);
    CHECK_OK(sop_cursor_item(c, &it, &err), &err);
    be_key(100, key);
    CHECK(memcmp(it.key, key, 8) == 0);
    be_key(1, key); /* before the start */
    CHECK_RC(sop_cursor_find_last(c, key, 8, &err), SOP_NOTFOUND, &err);
    CHECK(!sop_cursor_on_item(c));
    sop_cursor_close(c);
    sop_btree_close(bt);
}

TEST(cursors_survive_changes_made_elsewhere)
{
    sop_btree *bt = open_tree(4, true, false);
    sop_err err = {0};
    uint8_t key[8];
    for (uint64_t k = 0; k < 200; k += 2) {
        be_key(k, key);
        CHECK_OK(sop_btree_add(bt, key, 8, "v", 1, NULL, &err), &err);
    }
    sop_cursor *a, *b;
    CHECK_OK(sop_cursor_open(bt, &a, &err), &err);
    CHECK_OK(sop_cursor_open(bt, &b, &err), &err);
    be_key(100, key);
    CHECK_OK(sop_cursor_find(a, key, 8, &err), &err);

    /* b inserts around a's item, splitting its node many times */
    for (uint64_t k = 1; k < 200; k += 2) {
        be_key(k, key);
        CHECK_OK(sop_cursor_add(b, key, 8, "w", 1, SOP_ADD, &err), &err);
    }
    sop_item it;
    CHECK_OK(sop_cursor_item(a, &it, &err), &err);
    be_key(100, key);
    CHECK(memcmp(it.key, key, 8) == 0);
    CHECK_OK(sop_cursor_next(a, &err), &err);
    CHECK_OK(sop_cursor_item(a, &it, &err), &err);
    be_key(101, key);
    CHECK(memcmp(it.key, key, 8) == 0);

    /* b removes a's item: a sits in the gap */
    CHECK_OK(sop_cursor_find(b, key, 8, &err), &err);
    CHECK_OK(sop_cursor_remove(b, &err), &err);
    CHECK_RC(sop_cursor_item(a, &it, &err), SOP_NOTFOUND, &err);
    CHECK(!sop_cursor_on_item(b));
    CHECK_OK(sop_cursor_next(a, &err), &err);
    CHECK_OK(sop_cursor_item(a, &it, &err), &err);
    be_key(102, key);
    CHECK(memcmp(it.key, key, 8) == 0);
    /* b continues from its own gap in both directions */
    CHECK_OK(sop_cursor_prev(b, &err), &err);
    CHECK_OK(sop_cursor_item(b, &it, &err), &err);
    be_key(100, key);
    CHECK(memcmp(it.key, key, 8) == 0);

    /* delete everything from 50 to 150 through b while a walks */
    be_key(50, key);
    CHECK_OK(sop_cursor_find(b, key, 8, &err), &err);
    for (int i = 0; i < 100; i++) {
        CHECK_OK(sop_cursor_item(b, &it, &err), &err);
        if (memcmp(it.key, (uint8_t[8]){0, 0, 0, 0, 0, 0, 0, 150}, 8) > 0)
            break;
        CHECK_OK(sop_cursor_remove(b, &err), &err);
        CHECK_OK(sop_cursor_next(b, &err), &err);
    }
    CHECK_RC(sop_cursor_item(a, &it, &err), SOP_NOTFOUND, &err);
    CHECK_OK(sop_cursor_prev(a, &err), &err);
    CHECK_OK(sop_cursor_item(a, &it, &err), &err);
    be_key(49, key);
    CHECK(memcmp(it.key, key, 8) == 0);
    check_tree(bt);
    sop_cursor_close(a);
    sop_cursor_close(b);
    sop_btree_close(bt);
}

/* Tuple keys (id int, note text) ordered by the first field only: the note
 * is carried data that update_key may change. */
TEST(tuple_keys_with_carried_fields)
{
    sop_store_options o;
    sop_store_options_init(&o);
    o.slot_length = 4;
    o.key_order_fields = 1;
    sop_btree *bt;
    sop_err err = {0};
    CHECK_OK(sop_btree_open_memory(&o, &bt, &err), &err);
    uint8_t buf[64];
    sop_tuple_writer w;
    for (int64_t id = 20; id >= -20; id--) {
        sop_tuple_writer_init(&w, buf, sizeof(buf));
        sop_tuple_put_int(&w, id);
        sop_tuple_put_text(&w, "note", 4);
        CHECK_OK(sop_btree_add(bt, buf, w.len, "v", 1, NULL, &err), &err);
    }
    check_tree(bt);
    /* a key with a different note but the same id is the same key */
    sop_tuple_writer_init(&w, buf, sizeof(buf));
    sop_tuple_put_int(&w, 5);
    sop_tuple_put_text(&w, "other", 5);
    CHECK_RC(sop_btree_add(bt, buf, w.len, "v", 1, NULL, &err), SOP_EXISTS, &err);
    /* find by the ordering prefix alone */
    sop_cursor *c;
    CHECK_OK(sop_cursor_open(bt, &c, &err), &err);
    uint8_t probe[16];
    sop_tuple_writer pw;
    sop_tuple_writer_init(&pw, probe, sizeof(probe));
    sop_tuple_put_int(&pw, 5);
    CHECK_OK(sop_cursor_find(c, probe, pw.len, &err), &err);
    /* change the carried note */
    CHECK_OK(sop_cursor_update_key(c, buf, w.len, &err), &err);
    sop_item it;
    CHECK_OK(sop_cursor_item(c, &it, &err), &err);
    CHECK(it.key_len == w.len && memcmp(it.key, buf, w.len) == 0);
    CHECK_EQ(it.version, 2);
    /* changing the ordering field is refused */
    sop_tuple_writer_init(&w, buf, sizeof(buf));
    sop_tuple_put_int(&w, 6);
    sop_tuple_put_text(&w, "note", 4);
    CHECK_RC(sop_cursor_update_key(c, buf, w.len, &err), SOP_INVALID, &err);
    /* negative ids sort first */
    CHECK_OK(sop_cursor_first(c, &err), &err);
    CHECK_OK(sop_cursor_item(c, &it, &err), &err);
    sop_tuple_reader r;
    sop_tuple_value v;
    sop_tuple_reader_init(&r, it.key, it.key_len);
    CHECK_OK(sop_tuple_next(&r, &v, &err), &err);
    CHECK_EQ(v.i, -20);
    check_tree(bt);
    sop_cursor_close(c);
    sop_btree_close(bt);
}

static void shuffle(uint64_t *a, size_t n, t_rng *rng)
{
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)t_rng_below(rng, i + 1);
        uint64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* The Go original never merges nodes, so deletes leave a sparse tree. Ours
 * must shrink: after deleting 90% of a million items the node count falls
 * in proportion and the height stays logarithmic. */
static void shrink_case(uint32_t slot, size_t n, t_rng *rng)
{
    sop_btree *bt = open_tree(slot, true, false);
    sop_err err = {0};
    uint64_t *keys = malloc(n * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        keys[i] = i * 7919u;
    shuffle(keys, n, rng);
    uint8_t key[8];
    for (size_t i = 0; i < n; i++) {
        be_key(keys[i], key);
        CHECK_OK(sop_btree_add(bt, key, 8, "0123456789", 10, NULL, &err), &err);
    }
    check_tree(bt);
    sop_btree_stats full;
    CHECK_OK(sop_btree_stats_get(bt, &full, &err), &err);
    shuffle(keys, n, rng);
    size_t keep = n / 10;
    for (size_t i = keep; i < n; i++) {
        be_key(keys[i], key);
        CHECK_OK(sop_btree_remove(bt, key, 8, &err), &err);
    }
    check_tree(bt);
    sop_btree_stats after;
    CHECK_OK(sop_btree_stats_get(bt, &after, &err), &err);
    uint32_t min_fill = slot / 4 > 1 ? slot / 4 : 1;
    double bound_nodes = (double)keep / min_fill + 2.0 * after.height;
    double bound_height = 2 + log((double)keep) / log((double)min_fill + 1);
    printf("#   slot %u: %zu items %llu nodes height %u fill %.2f -> %zu items %llu nodes "
           "height %u fill %.2f\n",
           slot, n, (unsigned long long)full.nodes, full.height, full.fill, keep,
           (unsigned long long)after.nodes, after.height, after.fill);
    CHECK_MSG(after.nodes <= bound_nodes, "%llu nodes for %zu items (bound %.0f)",
              (unsigned long long)after.nodes, keep, bound_nodes);
    CHECK_MSG(after.nodes * 3 < full.nodes, "node count did not shrink: %llu -> %llu",
              (unsigned long long)full.nodes, (unsigned long long)after.nodes);
    CHECK_MSG(after.height <= full.height && after.height <= bound_height,
              "height %u (was %u, bound %.1f)", after.height, full.height, bound_height);
    /* the survivors are all there, in order */
    for (size_t i = 0; i < keep; i += 97) {
        be_key(keys[i], key);
        sop_item it;
        CHECK_OK(sop_btree_get(bt, key, 8, &it, &err), &err);
    }
    free(keys);
    sop_btree_close(bt);
}

TEST(deleting_90_percent_of_a_million_shrinks_the_tree)
{
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    shrink_case(64, 1000000, &rng);
    /* big nodes cost a memmove of up to slot_length descriptors per random
     * insert: the full million for them runs in make test-long */
    shrink_case(4, t_long() ? 1000000 : 200000, &rng);
    shrink_case(500, t_long() ? 1000000 : 300000, &rng);
    shrink_case(2000, t_long() ? 1000000 : 200000, &rng);
}

static double fill_after(uint32_t slot, bool llb, int order, size_t n, t_rng *rng)
{
    sop_btree *bt = open_tree(slot, true, llb);
    sop_err err = {0};
    uint64_t *keys = malloc(n * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        keys[i] = order >= 0 ? i : n - 1 - i;
    if (order == 2)
        shuffle(keys, n, rng);
    for (size_t i = 0; i < n; i++) {
        uint8_t key[8];
        be_key(keys[i], key);
        CHECK_OK(sop_btree_add(bt, key, 8, "v", 1, NULL, &err), &err);
    }
    check_tree(bt);
    sop_btree_stats st;
    CHECK_OK(sop_btree_stats_get(bt, &st, &err), &err);
    free(keys);
    sop_btree_close(bt);
    return st.fill;
}

TEST(sequential_loads_pack_nodes_and_llb_fills_random_ones)
{
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    double asc = fill_after(64, false, 1, 100000, &rng);
    double desc = fill_after(64, false, -1, 100000, &rng);
    double rnd = fill_after(64, false, 2, 100000, &rng);
    double rnd_llb = fill_after(64, true, 2, 100000, &rng);
    printf("#   fill: ascending %.3f descending %.3f random %.3f random+llb %.3f\n", asc, desc, rnd,
           rnd_llb);
    CHECK(asc > 0.95);
    CHECK(desc > 0.95);
    CHECK(rnd > 0.5 && rnd < 0.85);
    CHECK(rnd_llb > rnd + 0.05);
}

/* Fail every allocation of an operation in turn (N = 1, 2, ... until it
 * succeeds): each failure must be SOP_NOMEM and leave the tree either as it
 * was and fully usable, or poisoned - never corrupt, never leaking (ASan).
 * The operation is tried on many keys of a randomly built slot-4 tree so
 * that some of them split or merge all the way up to the root. */
static sop_btree *build_random_tree(uint64_t seed, uint32_t slot, uint64_t *keys, size_t n,
                                    bool thin)
{
    t_rng rng;
    t_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++)
        keys[i] = 2 * i;
    shuffle(keys, n, &rng);
    sop_btree *bt = open_tree(slot, true, false);
    sop_err err = {0};
    static char filler[256];
    for (size_t i = 0; i < n; i++) {
        uint8_t key[8];
        be_key(keys[i], key);
        /* varying sizes so merges must grow node heaps */
        size_t vlen = 1 + (size_t)t_rng_below(&rng, sizeof(filler));
        CHECK_OK(sop_btree_add(bt, key, 8, filler, vlen, NULL, &err), &err);
    }
    /* thin: remove three quarters so nodes sit near the minimum fill and
     * further removes merge */
    for (size_t i = n / 4; thin && i < n; i++) {
        uint8_t key[8];
        be_key(keys[i], key);
        CHECK_OK(sop_btree_remove(bt, key, 8, &err), &err);
    }
    return bt;
}

static void alloc_failure_case(bool remove_op, uint64_t seed)
{
    enum { N = 300 };
    uint64_t keys[N];
    sop_err err = {0};
    unsigned poisoned = 0, clean = 0, ops = 0;
    for (unsigned cand = 0; cand < 40; cand++) {
        bool succeeded = false;
        for (unsigned nth = 1; nth < 200 && !succeeded; nth++) {
            /* slot 4 splits up to the root; removes merge more often at 16 */
            sop_btree *bt = build_random_tree(seed, remove_op ? 16 : 4, keys, N, remove_op);
            sop_cursor *other;
            CHECK_OK(sop_cursor_open(bt, &other, &err), &err);
            uint8_t key[8];
            be_key(keys[N / 8], key);
            CHECK_OK(sop_cursor_find(other, key, 8, &err), &err);
            uint64_t before = sop_btree_count(bt);
            /* adds: new odd keys spread over the range; removes: existing ones */
            be_key(remove_op ? keys[cand * 7 % (N / 4)] : (cand * 15 % N) * 2 + 1, key);
            sop__fault_alloc(nth, false);
            sop_rc rc = remove_op ? sop_btree_remove(bt, key, 8, &err)
                                  : sop_btree_add(bt, key, 8, "v", 1, NULL, &err);
            sop__fault_reset();
            if (rc == SOP_OK) {
                succeeded = true;
                check_tree(bt);
                CHECK_EQ(sop_btree_count(bt), remove_op ? before - 1 : before + 1);
            } else {
                CHECK_RC(rc, SOP_NOMEM, &err);
                sop_rc crc = sop_btree_check(bt, &err);
                if (crc == SOP_POISONED) {
                    poisoned++;
                    CHECK_RC(sop_btree_add(bt, "z", 1, "v", 1, NULL, &err), SOP_POISONED, &err);
                    CHECK_RC(sop_cursor_next(other, &err), SOP_POISONED, &err);
                } else {
                    clean++;
                    CHECK_OK(crc, &err);
                    CHECK_EQ(sop_btree_count(bt), before);
                    sop_item it;
                    CHECK_OK(sop_cursor_item(other, &it, &err), &err);
                    CHECK_OK(sop_btree_add(bt, "z", 1, "v", 1, NULL, &err), &err);
                    check_tree(bt);
                }
            }
            sop_cursor_close(other);
            sop_btree_close(bt);
        }
        CHECK(succeeded);
        ops++;
    }
    printf("#   %s: %u keys, %u clean failures, %u poisoned\n", remove_op ? "remove" : "add", ops,
           clean, poisoned);
    CHECK(clean > 0);
    /* Adds reach allocations in the middle of a split cascade. Removes
     * rarely do: merges fit in the heaps nodes already have. */
    CHECK(remove_op || poisoned > 0);
}

TEST(allocation_failures_in_add_and_remove)
{
    uint64_t seed = t_seed();
    alloc_failure_case(false, seed);
    alloc_failure_case(true, seed);
}

TEST(not_found_always_fills_err)
{
    sop_btree *bt = open_tree(4, true, false);
    sop_err err = {0};
    CHECK_OK(sop_btree_add(bt, "b", 1, "v", 1, NULL, &err), &err);
    sop_cursor *c;
    CHECK_OK(sop_cursor_open(bt, &c, &err), &err);
    sop_item it;
#define EXPECT_NOTFOUND(call)                                                                      \
    do {                                                                                           \
        snprintf(err.msg, sizeof(err.msg), "stale");                                               \
        err.code = SOP_OK;                                                                         \
        CHECK_RC(call, SOP_NOTFOUND, &err);                                                        \
        CHECK_EQ(err.code, SOP_NOTFOUND);                                                          \
        CHECK(strcmp(err.msg, "stale") != 0);                                                      \
    } while (0)
    EXPECT_NOTFOUND(sop_cursor_find(c, "a", 1, &err));
    EXPECT_NOTFOUND(sop_cursor_find_last(c, "a", 1, &err));
    EXPECT_NOTFOUND(sop_cursor_find_id(c, "b", 1, (uint8_t[16]){0}, &err));
    EXPECT_NOTFOUND(sop_cursor_item(c, &it, &err));
    EXPECT_NOTFOUND(sop_cursor_next(c, &err));
    CHECK_OK(sop_cursor_last(c, &err), &err);
    EXPECT_NOTFOUND(sop_cursor_next(c, &err));
    CHECK_OK(sop_cursor_first(c, &err), &err);
    EXPECT_NOTFOUND(sop_cursor_prev(c, &err));
    EXPECT_NOTFOUND(sop_btree_get(bt, "x", 1, &it, &err));
    EXPECT_NOTFOUND(sop_btree_update(bt, "x", 1, "v", 1, &err));
    EXPECT_NOTFOUND(sop_btree_remove(bt, "x", 1, &err));
    CHECK_OK(sop_btree_remove(bt, "b", 1, &err), &err);
    EXPECT_NOTFOUND(sop_cursor_first(c, &err));
    EXPECT_NOTFOUND(sop_cursor_last(c, &err));
    sop_cursor_close(c);
    sop_btree_close(bt);
}
