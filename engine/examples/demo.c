/*
 * demo.c - a tour of libsop's in-memory B-tree and tuple keys (make demo).
 *
 * It loads 100,000 people keyed by a typed composite key (city text, id
 * int), runs a range query and a descending scan, shows duplicate keys
 * listing in insertion order, updates and deletes through cursors, and
 * deletes 90% of the items to show the tree shrinking. Every call's result
 * is checked; the first failure ends the demo with its error message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sop.h"

static sop_err err;

static void must(sop_rc rc, const char *what)
{
    if (rc != SOP_OK) {
        fprintf(stderr, "demo: %s failed: %s (%s)\n", what, sop_rc_name(rc), err.msg);
        exit(1);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *cities[] = {"Amsterdam", "Berlin", "Cairo", "Delhi", "Lima", "Oslo", "Quito"};

/* key = (city text, id int) as an order-preserving tuple */
static size_t person_key(uint8_t *buf, size_t cap, const char *city, int64_t id)
{
    sop_tuple_writer w;
    sop_tuple_writer_init(&w, buf, cap);
    sop_tuple_put_text(&w, city, strlen(city));
    sop_tuple_put_int(&w, id);
    return w.len;
}

static void print_person(const sop_item *it)
{
    sop_tuple_reader r;
    sop_tuple_value city, id;
    sop_tuple_reader_init(&r, it->key, it->key_len);
    must(sop_tuple_next(&r, &city, &err), "decode city");
    must(sop_tuple_next(&r, &id, &err), "decode id");
    char name[64];
    sop_tuple_value_copy(&city, name);
    name[city.len] = '\0';
    printf("    (%-9s, %6lld)  %.*s\n", name, (long long)id.i, (int)it->value_len,
           (const char *)it->value);
}

static void print_stats(sop_btree *bt, const char *when)
{
    sop_btree_stats st;
    must(sop_btree_stats_get(bt, &st, &err), "stats");
    printf("  %-22s %8llu items  %6llu nodes  height %u  fill %.0f%%\n", when,
           (unsigned long long)st.count, (unsigned long long)st.nodes, st.height, st.fill * 100);
}

int main(void)
{
    enum { N = 100000 };
    printf("libsop demo: an in-memory SOP B-tree (slot_length 500) with tuple keys\n\n");

    sop_store_options o;
    sop_store_options_init(&o);
    o.slot_length = 500;
    sop_btree *people;
    must(sop_btree_open_memory(&o, &people, &err), "open");

    /* 1. load */
    double t0 = now_s();
    uint8_t key[64];
    char val[64];
    for (int64_t i = 0; i < N; i++) {
        int64_t id = (i * 7919) % N; /* a scrambled order */
        const char *city = cities[id % 7];
        size_t klen = person_key(key, sizeof(key), city, id);
        int vlen = snprintf(val, sizeof(val), "person-%06lld", (long long)id);
        must(sop_btree_add(people, key, klen, val, (size_t)vlen, NULL, &err), "add");
    }
    double t1 = now_s();
    printf("1. Loaded %d people in %.2f s (%.0f adds/s)\n", N, t1 - t0, N / (t1 - t0));
    print_stats(people, "after the load:");
    must(sop_btree_check(people, &err), "check");
    printf("  structural check: clean\n\n");

    /* 2. range query: Lima, ids 700..760 */
    printf("2. Range query: city = 'Lima' AND id BETWEEN 700 AND 760\n");
    sop_cursor *c;
    must(sop_cursor_open(people, &c, &err), "cursor");
    size_t lo = person_key(key, sizeof(key), "Lima", 700);
    sop_rc rc = sop_cursor_find(c, key, lo, &err);
    uint8_t hi[64];
    size_t hilen = person_key(hi, sizeof(hi), "Lima", 760);
    for (; rc == SOP_OK || (rc == SOP_NOTFOUND && sop_cursor_on_item(c));
         rc = sop_cursor_next(c, &err)) {
        sop_item it;
        must(sop_cursor_item(c, &it, &err), "item");
        size_t n = it.key_len < hilen ? it.key_len : hilen;
        int cmp = memcmp(it.key, hi, n);
        if (cmp > 0 || (cmp == 0 && it.key_len > hilen))
            break;
        print_person(&it);
    }

    /* 3. descending scan: the last three Quito ids */
    printf("\n3. Descending: the three highest ids in Quito\n");
    sop_tuple_writer w;
    sop_tuple_writer_init(&w, key, sizeof(key));
    sop_tuple_put_text(&w, "Quito", 5);
    sop_tuple_put_int(&w, INT64_MAX);
    rc = sop_cursor_find_last(c, key, w.len, &err);
    for (int k = 0; k < 3 && sop_cursor_on_item(c); k++) {
        sop_item it;
        must(sop_cursor_item(c, &it, &err), "item");
        print_person(&it);
        rc = sop_cursor_prev(c, &err);
    }

    /* 4. update through a cursor, and a failed add on a unique key */
    printf("\n4. Update (Amsterdam, 42) and try to add it again\n");
    size_t klen = person_key(key, sizeof(key), cities[42 % 7], 42);
    must(sop_cursor_find(c, key, klen, &err), "find");
    must(sop_cursor_update_value(c, "renamed", 7, &err), "update");
    sop_item it;
    must(sop_cursor_item(c, &it, &err), "item");
    print_person(&it);
    printf("    item version is now %u\n", it.version);
    rc = sop_btree_add(people, key, klen, "dup", 3, NULL, &err);
    printf("    add of the same key: %s (%s)\n", sop_rc_name(rc), err.msg);

    /* 5. duplicates */
    printf("\n5. A duplicate-key store lists equal keys in insertion order\n");
    sop_store_options d;
    sop_store_options_init(&d);
    d.slot_length = 4;
    d.is_unique = false;
    sop_btree *tags;
    must(sop_btree_open_memory(&d, &tags, &err), "open tags");
    const char *events[] = {"created", "edited", "shared", "edited again", "archived"};
    for (int k = 0; k < 5; k++) {
        must(sop_btree_add(tags, "doc-7", 5, events[k], strlen(events[k]), NULL, &err), "add");
        must(sop_btree_add(tags, k % 2 ? "doc-3" : "doc-9", 5, "other", 5, NULL, &err), "add");
    }
    sop_cursor *tc;
    must(sop_cursor_open(tags, &tc, &err), "cursor");
    for (rc = sop_cursor_find(tc, "doc-7", 5, &err); rc == SOP_OK; rc = sop_cursor_next(tc, &err)) {
        must(sop_cursor_item(tc, &it, &err), "item");
        if (it.key_len != 5 || memcmp(it.key, "doc-7", 5) != 0)
            break;
        printf("    doc-7: %.*s\n", (int)it.value_len, (const char *)it.value);
    }
    sop_cursor_close(tc);
    sop_btree_close(tags);

    /* 6. delete 90% and watch the tree shrink */
    printf("\n6. Delete 90%% of the people\n");
    t0 = now_s();
    for (int64_t id = 0; id < N; id++) {
        if (id % 10 == 0)
            continue;
        klen = person_key(key, sizeof(key), cities[id % 7], id);
        must(sop_btree_remove(people, key, klen, &err), "remove");
    }
    t1 = now_s();
    printf("  removed %d in %.2f s\n", N - N / 10, t1 - t0);
    print_stats(people, "after the deletes:");
    must(sop_btree_check(people, &err), "check");
    printf("  structural check: clean\n");

    sop_cursor_close(c);
    sop_btree_close(people);
    printf("\nDone.\n");
    return 0;
}
