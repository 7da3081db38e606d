/*
 * test_db.c - the durable engine's contract: databases, stores created and
 * dropped in transactions, persistence of every value placement across
 * reopen, conflicts and read validation, prepared transactions decided by
 * another handle, rollback leaving no trace, and the integrity check.
 */
#include <stdlib.h>
#include <sys/stat.h>

#include "t.h"

static sop_err err;

static sop_btree *create(sop_txn *t, const char *name, uint32_t slot, bool unique,
                         sop_value_placement vp)
{
    sop_store_options o;
    sop_store_options_init(&o);
    o.slot_length = slot;
    o.is_unique = unique;
    o.value_placement = vp;
    o.description = "test store";
    sop_btree *bt;
    CHECK_OK(sop_store_create(t, name, &o, &bt, &err), &err);
    return bt;
}

static void put_n(sop_btree *bt, int from, int to, const char *tag)
{
    for (int i = from; i < to; i++) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof(k), "key%06d", i);
        int vl = snprintf(v, sizeof(v), "%s-%d", tag, i);
        CHECK_OK(sop_btree_upsert(bt, k, (size_t)kl, v, (size_t)vl, NULL, &err), &err);
    }
}

static void expect_value(sop_btree *bt, int i, const char *tag)
{
    char k[32], v[64];
    int kl = snprintf(k, sizeof(k), "key%06d", i);
    int vl = snprintf(v, sizeof(v), "%s-%d", tag, i);
    sop_item it;
    CHECK_OK(sop_btree_get(bt, k, (size_t)kl, &it, &err), &err);
    CHECK_MSG(it.value_len == (size_t)vl && memcmp(it.value, v, (size_t)vl) == 0,
              "key %d: got %.*s want %s", i, (int)it.value_len, (const char *)it.value, v);
}

TEST(init_is_idempotent_and_hash_mod_is_fixed)
{
    const char *dir = t_db_fresh();
    CHECK_OK(sop_db_init(dir, NULL, &err), &err);
    sop_db_options o;
    sop_db_options_init(&o);
    o.registry_hash_mod = 500;
    CHECK_RC(sop_db_init(dir, &o, &err), SOP_EXISTS, &err);
    CHECK(strstr(err.msg, "hash modulus") != NULL);
    o.registry_hash_mod = 100;
    char other[4200];
    snprintf(other, sizeof(other), "%s-x", dir);
    CHECK_RC(sop_db_init(other, &o, &err), SOP_INVALID, &err);
    sop_db *db;
    snprintf(other, sizeof(other), "%s/nothing-here", t_tmpdir());
    CHECK_RC(sop_db_open(other, NULL, &db, &err), SOP_NOTFOUND, &err);
    db = t_db_open(dir);
    CHECK_EQ(sop_db_hash_mod(db), 250);
    sop_db_close(db);
}

TEST(every_placement_persists_across_reopen)
{
    const char *dir = t_db_fresh();
    sop_db *db = t_db_open(dir);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    put_n(create(t, "innode", 8, true, SOP_VALUES_IN_NODE), 0, 500, "a");
    put_n(create(t, "separate", 8, true, SOP_VALUES_SEPARATE), 0, 500, "a");
    put_n(create(t, "active", 8, true, SOP_VALUES_ACTIVE), 0, 200, "a");
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    t_db_check_clean(db);
    sop_db_close(db);

    db = t_db_open(dir);
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    const char *names[] = {"innode", "separate", "active"};
    for (int s = 0; s < 3; s++) {
        sop_btree *bt;
        CHECK_OK(sop_store_open(t, names[s], &bt, &err), &err);
        int n = s == 2 ? 200 : 500;
        CHECK_EQ(sop_btree_count(bt), n);
        for (int i = 0; i < n; i += 7)
            expect_value(bt, i, "a");
        /* update half, delete a quarter */
        put_n(bt, 0, n / 2, "b");
        for (int i = n / 2; i < n / 2 + n / 4; i++) {
            char k[32];
            int kl = snprintf(k, sizeof(k), "key%06d", i);
            CHECK_OK(sop_btree_remove(bt, k, (size_t)kl, &err), &err);
        }
        CHECK_OK(sop_btree_check(bt, &err), &err);
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    t_db_check_clean(db); /* replaced and removed values left no orphan */
    sop_db_close(db);

    db = t_db_open(dir);
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    for (int s = 0; s < 3; s++) {
        sop_btree *bt;
        CHECK_OK(sop_store_open(t, names[s], &bt, &err), &err);
        int n = s == 2 ? 200 : 500;
        CHECK_EQ(sop_btree_count(bt), n - n / 4);
        expect_value(bt, 1, "b");
        expect_value(bt, n - 1, "a");
        sop_item it;
        char k[32];
        int kl = snprintf(k, sizeof(k), "key%06d", n / 2);
        CHECK_RC(sop_btree_get(bt, k, (size_t)kl, &it, &err), SOP_NOTFOUND, &err);
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    sop_store_info info;
    CHECK_OK(sop_db_store_info(db, "separate", &info, &err), &err);
    CHECK_EQ(info.count, 375);
    CHECK_EQ(info.options.value_placement, SOP_VALUES_SEPARATE);
    CHECK(strcmp(info.description, "test store") == 0);
    sop_db_close(db);
}

TEST(store_creation_and_drop_are_transactional)
{
    const char *dir = t_db_fresh();
    sop_db *db = t_db_open(dir);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    put_n(create(t, "gone", 4, true, SOP_VALUES_ACTIVE), 0, 50, "x");
    CHECK_OK(sop_txn_rollback(t, &err), &err);
    sop_txn_free(t);
    sop_store_info info;
    CHECK_RC(sop_db_store_info(db, "gone", &info, &err), SOP_NOTFOUND, &err);
    t_db_check_clean(db);

    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    create(t, "kept", 4, true, SOP_VALUES_IN_NODE);
    sop_btree *bt;
    CHECK_RC(sop_store_create(t, "kept", &(sop_store_options){.slot_length = 4}, &bt, &err),
             SOP_EXISTS, &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    CHECK_OK(sop_db_store_info(db, "kept", &info, &err), &err);

    /* bad names never reach the file system */
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    const char *bad[] = {"", "../x", "a/b", ".hidden", "-dash", "sp ace", "nul\x01"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_RC(sop_store_create(t, bad[i], &(sop_store_options){.slot_length = 4}, &bt, &err),
                 SOP_INVALID, &err);
    char longname[200];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[199] = '\0';
    CHECK_RC(sop_store_open(t, longname, &bt, &err), SOP_INVALID, &err);
    CHECK_OK(sop_store_drop(t, "kept", &err), &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    CHECK_RC(sop_db_store_info(db, "kept", &info, &err), SOP_NOTFOUND, &err);
    t_db_check_clean(db);
    sop_db_close(db);
}

TEST(read_only_transactions_refuse_writes)
{
    const char *dir = t_db_fresh();
    sop_db *db = t_db_open(dir);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    put_n(create(t, "s", 4, true, SOP_VALUES_IN_NODE), 0, 10, "a");
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    sop_btree *bt;
    CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
    CHECK_RC(sop_btree_add(bt, "z", 1, "v", 1, NULL, &err), SOP_INVALID, &err);
    CHECK_RC(sop_btree_remove(bt, "key000001", 9, &err), SOP_INVALID, &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    /* the tree belongs to the ended transaction */
    sop_item it;
    CHECK_RC(sop_btree_get(bt, "key000001", 9, &it, &err), SOP_INVALID, &err);
    sop_txn_free(t);
    sop_db_close(db);
}

TEST(conflicting_writers_one_wins_disjoint_both_commit)
{
    const char *dir = t_db_fresh();
    sop_db *a = t_db_open(dir), *b = t_db_open(dir);
    sop_txn *t, *u;
    CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, &t, &err), &err);
    put_n(create(t, "s1", 4, true, SOP_VALUES_IN_NODE), 0, 100, "a");
    put_n(create(t, "s2", 4, true, SOP_VALUES_IN_NODE), 0, 100, "a");
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);

    /* same item from two handles: the second to commit conflicts */
    sop_btree *x, *y;
    CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_txn_begin(b, SOP_TXN_WRITE, 0, &u, &err), &err);
    CHECK_OK(sop_store_open(t, "s1", &x, &err), &err);
    CHECK_OK(sop_store_open(u, "s1", &y, &err), &err);
    put_n(x, 5, 6, "t");
    put_n(y, 5, 6, "u");
    CHECK_OK(sop_txn_commit(t, &err), &err);
    CHECK_RC(sop_txn_commit(u, &err), SOP_CONFLICT, &err);
    sop_txn_free(t);
    sop_txn_free(u);

    /* different stores: both commit */
    CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_txn_begin(b, SOP_TXN_WRITE, 0, &u, &err), &err);
    CHECK_OK(sop_store_open(t, "s1", &x, &err), &err);
    CHECK_OK(sop_store_open(u, "s2", &y, &err), &err);
    put_n(x, 0, 100, "t2");
    put_n(y, 0, 100, "u2");
    CHECK_OK(sop_txn_commit(t, &err), &err);
    CHECK_OK(sop_txn_commit(u, &err), &err);
    sop_txn_free(t);
    sop_txn_free(u);

    /* a reader that saw what a writer then changed fails validation */
    CHECK_OK(sop_txn_begin(a, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s1", &x, &err), &err);
    expect_value(x, 7, "t2");
    CHECK_OK(sop_txn_begin(b, SOP_TXN_WRITE, 0, &u, &err), &err);
    CHECK_OK(sop_store_open(u, "s1", &y, &err), &err);
    put_n(y, 7, 8, "u3");
    CHECK_OK(sop_txn_commit(u, &err), &err);
    sop_txn_free(u);
    CHECK_RC(sop_txn_commit(t, &err), SOP_CONFLICT, &err);
    sop_txn_free(t);

    CHECK_OK(sop_txn_begin(b, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s1", &x, &err), &err);
    expect_value(x, 5, "t2");
    expect_value(x, 7, "u3");
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    t_db_check_clean(a);
    sop_db_close(a);
    sop_db_close(b);
}

static void count_prepared(void *ctx, const sop_prepared_info *info)
{
    int *n = ctx;
    (*n)++;
    CHECK(strcmp(info->owner, "coordinator-7") == 0);
}

TEST(prepared_transactions_are_decided_by_id_from_another_handle)
{
    const char *dir = t_db_fresh();
    sop_db *a = t_db_open(dir), *b = t_db_open(dir);
    sop_txn *t, *u;
    CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, &t, &err), &err);
    put_n(create(t, "s", 4, true, SOP_VALUES_ACTIVE), 0, 50, "a");
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);

    for (int round = 0; round < 2; round++) {
        bool commit = round == 0;
        CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, &t, &err), &err);
        sop_btree *x, *y;
        CHECK_OK(sop_store_open(t, "s", &x, &err), &err);
        put_n(x, 0, 10, commit ? "p" : "q");
        uint8_t txid[16];
        CHECK_OK(sop_txn_prepare(t, "coordinator-7", txid, &err), &err);
        sop_txn_free(t);

        int n = 0;
        CHECK_OK(sop_db_list_prepared(b, count_prepared, &n, &err), &err);
        CHECK_EQ(n, 1);
        /* invisible, and claimed: a conflicting writer cannot commit */
        CHECK_OK(sop_txn_begin(b, SOP_TXN_WRITE, 0, &u, &err), &err);
        CHECK_OK(sop_store_open(u, "s", &y, &err), &err);
        expect_value(y, 3, commit ? "a" : "p"); /* the last committed value */
        put_n(y, 3, 4, "w");
        CHECK_RC(sop_txn_commit(u, &err), SOP_CONFLICT, &err);
        CHECK(strstr(err.msg, "prepared") != NULL);
        sop_txn_free(u);
        /* survives a close and reopen of the preparing handle */
        sop_db_close(a);
        a = t_db_open(dir);
        n = 0;
        CHECK_OK(sop_db_list_prepared(a, count_prepared, &n, &err), &err);
        CHECK_EQ(n, 1);
        if (commit)
            CHECK_OK(sop_db_commit_prepared(b, txid, &err), &err);
        else
            CHECK_OK(sop_db_rollback_prepared(b, txid, &err), &err);
        CHECK_RC(sop_db_commit_prepared(b, txid, &err), SOP_NOTFOUND, &err);
        n = 0;
        CHECK_OK(sop_db_list_prepared(b, count_prepared, &n, &err), &err);
        CHECK_EQ(n, 0);
        CHECK_OK(sop_txn_begin(a, SOP_TXN_READ, 0, &t, &err), &err);
        CHECK_OK(sop_store_open(t, "s", &x, &err), &err);
        expect_value(x, 3, "p"); /* round 1's rollback left round 0's value */
        CHECK_OK(sop_txn_commit(t, &err), &err);
        sop_txn_free(t);
        t_db_check_clean(a); /* no orphaned early-written values either way */
    }
    sop_db_close(a);
    sop_db_close(b);
}

static uint64_t store_count(sop_db *db, const char *name)
{
    sop_store_info info;
    CHECK_OK(sop_db_store_info(db, name, &info, &err), &err);
    return info.count;
}

static void del_n(sop_btree *bt, int from, int to)
{
    for (int i = from; i < to; i++) {
        char k[32];
        int kl = snprintf(k, sizeof(k), "key%06d", i);
        CHECK_OK(sop_btree_remove(bt, k, (size_t)kl, &err), &err);
    }
}

/* A prepared transaction is decided after other commits to the same store
 * (other nodes): its count is applied as a change to theirs, not over it,
 * and a store it creates or drops is claimed by name. */
TEST(prepared_transactions_commit_after_others_in_the_same_store)
{
    const char *dir = t_db_fresh();
    sop_db *a = t_db_open(dir), *b = t_db_open(dir);
    sop_txn *t, *u;
    sop_btree *x, *y;
    CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, &t, &err), &err);
    put_n(create(t, "s", 4, true, SOP_VALUES_IN_NODE), 0, 400, "a");
    create(t, "gone", 4, true, SOP_VALUES_IN_NODE);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);

    /* prepared: 3 inserts at the right end */
    uint8_t txid[16];
    CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &x, &err), &err);
    put_n(x, 1000, 1003, "p");
    CHECK_OK(sop_txn_prepare(t, "coordinator-7", txid, &err), &err);
    sop_txn_free(t);
    /* meanwhile, others commit at the left end: 5 removals, 1 insert */
    for (int i = 0; i < 5; i++) {
        CHECK_OK(sop_txn_begin(b, SOP_TXN_WRITE, 0, &u, &err), &err);
        CHECK_OK(sop_store_open(u, "s", &y, &err), &err);
        del_n(y, i, i + 1);
        if (i == 4)
            put_n(y, 4, 5, "b");
        CHECK_OK(sop_txn_commit(u, &err), &err);
        sop_txn_free(u);
    }
    CHECK_EQ(store_count(b, "s"), 396);
    CHECK_OK(sop_db_commit_prepared(b, txid, &err), &err);
    CHECK_EQ(store_count(a, "s"), 399);
    CHECK_OK(sop_txn_begin(a, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &x, &err), &err);
    expect_value(x, 1002, "p");
    expect_value(x, 4, "b");
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    t_db_check_clean(a); /* the count equals the items */

    /* a prepared create claims the name; a prepared drop the store */
    CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, &t, &err), &err);
    create(t, "new", 4, true, SOP_VALUES_IN_NODE);
    CHECK_OK(sop_store_drop(t, "gone", &err), &err);
    CHECK_OK(sop_txn_prepare(t, "coordinator-7", txid, &err), &err);
    sop_txn_free(t);
    CHECK_OK(sop_txn_begin(b, SOP_TXN_WRITE, 0, &u, &err), &err);
    put_n(create(u, "new", 4, true, SOP_VALUES_IN_NODE), 0, 3, "u");
    CHECK_RC(sop_txn_commit(u, &err), SOP_CONFLICT, &err);
    sop_txn_free(u);
    CHECK_OK(sop_txn_begin(b, SOP_TXN_WRITE, 0, &u, &err), &err);
    CHECK_OK(sop_store_open(u, "gone", &y, &err), &err);
    put_n(y, 0, 3, "u");
    CHECK_RC(sop_txn_commit(u, &err), SOP_CONFLICT, &err);
    sop_txn_free(u);
    CHECK_OK(sop_db_commit_prepared(b, txid, &err), &err);
    CHECK_OK(sop_txn_begin(b, SOP_TXN_READ, 0, &u, &err), &err);
    CHECK_RC(sop_store_open(u, "gone", &y, &err), SOP_NOTFOUND, &err);
    CHECK_OK(sop_store_open(u, "new", &y, &err), &err);
    sop_txn_free(u);
    t_db_check_clean(b);
    sop_db_close(a);
    sop_db_close(b);
}

TEST(large_transaction_then_many_small_ones_with_checkpoints)
{
    const char *dir = t_db_fresh();
    sop_db_options o;
    sop_db_options_init(&o);
    o.checkpoint_bytes = 64 * 1024; /* checkpoint often */
    sop_db *db;
    CHECK_OK(sop_db_open(dir, &o, &db, &err), &err);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    put_n(create(t, "s", 64, false, SOP_VALUES_IN_NODE), 0, 20000, "a");
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    for (int i = 0; i < 200; i++) {
        CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
        sop_btree *bt;
        CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
        char k[32];
        int kl = snprintf(k, sizeof(k), "extra%04d", i);
        CHECK_OK(sop_btree_add(bt, k, (size_t)kl, "v", 1, NULL, &err), &err);
        CHECK_OK(sop_txn_commit(t, &err), &err);
        sop_txn_free(t);
    }
    t_db_check_clean(db);
    sop_db_close(db);
    db = t_db_open(dir);
    sop_store_info info;
    CHECK_OK(sop_db_store_info(db, "s", &info, &err), &err);
    CHECK_EQ(info.count, 20200);
    sop_db_close(db);
}

TEST(store_options_are_kept_with_the_store)
{
    const char *dir = t_db_fresh();
    sop_db *db = t_db_open(dir);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_store_options o;
    sop_store_options_init(&o);
    CHECK_EQ(o.cache.node_ms, -1);
    o.slot_length = 64;
    o.is_unique = false;
    o.leaf_load_balancing = true;
    o.value_placement = SOP_VALUES_SEPARATE;
    o.globally_cached = true;
    o.key_order_fields = 2;
    o.description = "orders by customer";
    o.cache = (sop_cache_config){.registry_ms = 60000,
                                 .node_ms = 300000,
                                 .value_ms = 5000,
                                 .store_info_ms = -1,
                                 .node_sliding = true};
    sop_btree *bt;
    CHECK_OK(sop_store_create(t, "orders", &o, &bt, &err), &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    sop_db_close(db);
    db = t_db_open(dir);
    sop_store_info info;
    CHECK_OK(sop_db_store_info(db, "orders", &info, &err), &err);
    CHECK_EQ(info.options.slot_length, 64);
    CHECK(!info.options.is_unique);
    CHECK(info.options.leaf_load_balancing);
    CHECK_EQ(info.options.value_placement, SOP_VALUES_SEPARATE);
    CHECK(info.options.globally_cached);
    CHECK_EQ(info.options.key_order_fields, 2);
    CHECK(strcmp(info.description, "orders by customer") == 0);
    CHECK_EQ(info.options.cache.registry_ms, 60000);
    CHECK_EQ(info.options.cache.node_ms, 300000);
    CHECK_EQ(info.options.cache.value_ms, 5000);
    CHECK_EQ(info.options.cache.store_info_ms, -1);
    CHECK(info.options.cache.node_sliding && !info.options.cache.value_sliding);
    CHECK(info.created_ms > 0 && info.updated_ms >= info.created_ms);
    sop_db_close(db);
}
