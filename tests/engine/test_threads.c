/*
 * test_threads.c - threads of one process, each with its own database
 * handle (the documented model: a handle and what it opened belong to one
 * thread at a time), sharing the L1 cache and the process-wide state of
 * the engine. `make tsan` runs this under ThreadSanitizer.
 */
#include <pthread.h>

#include "t.h"

#define THREADS  4
#define ACCOUNTS 50
#define BALANCE  1000

typedef struct worker {
    const char *dir;
    int id, ntx;
    uint64_t seed;
    int commits, conflicts;
    char fail[512];
} worker;

static sop_rc get_i64(sop_btree *bt, int i, int64_t *v, sop_err *err)
{
    char k[16];
    snprintf(k, sizeof(k), "a%04d", i);
    sop_item it;
    sop_rc rc = sop_btree_get(bt, k, strlen(k), &it, err);
    if (rc == SOP_OK)
        memcpy(v, it.value, 8);
    return rc;
}

static sop_rc put_i64(sop_btree *bt, int i, int64_t v, sop_err *err)
{
    char k[16];
    snprintf(k, sizeof(k), "a%04d", i);
    return sop_btree_upsert(bt, k, strlen(k), &v, 8, NULL, err);
}

/* Sums the accounts in one read-only transaction. */
static sop_rc audit(sop_db *db, int64_t *sum, sop_err *err)
{
    sop_txn *t;
    sop_btree *bt;
    sop_rc rc = sop_txn_begin(db, SOP_TXN_READ, 0, &t, err);
    if (rc != SOP_OK)
        return rc;
    rc = sop_store_open(t, "acct", &bt, err);
    *sum = 0;
    for (int i = 0; rc == SOP_OK && i < ACCOUNTS; i++) {
        int64_t v = 0;
        rc = get_i64(bt, i, &v, err);
        *sum += v;
    }
    if (rc == SOP_OK)
        rc = sop_txn_commit(t, err);
    sop_txn_free(t);
    return rc;
}

static void *run(void *arg)
{
    worker *w = arg;
    sop_err err = {0};
    sop_db *db;
    if (sop_db_open(w->dir, NULL, &db, &err) != SOP_OK) {
        snprintf(w->fail, sizeof(w->fail), "open: %.200s", err.msg);
        return NULL;
    }
    t_rng r;
    t_rng_seed(&r, w->seed + (uint64_t)w->id);
    for (int i = 0; i < w->ntx && !w->fail[0];) {
        if (i % 25 == 0) {
            int64_t sum;
            sop_rc rc = audit(db, &sum, &err);
            if (rc == SOP_OK && sum != (int64_t)ACCOUNTS * BALANCE)
                snprintf(w->fail, sizeof(w->fail), "a committed audit saw %lld", (long long)sum);
            else if (rc != SOP_OK && rc != SOP_CONFLICT)
                snprintf(w->fail, sizeof(w->fail), "audit: %.200s", err.msg);
        }
        int a = (int)t_rng_below(&r, ACCOUNTS), b = (int)t_rng_below(&r, ACCOUNTS - 1);
        if (b >= a)
            b++;
        sop_txn *t;
        sop_btree *bt;
        sop_rc rc = sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err);
        if (rc == SOP_OK)
            rc = sop_store_open(t, "acct", &bt, &err);
        int64_t va = 0, vb = 0;
        if (rc == SOP_OK)
            rc = get_i64(bt, a, &va, &err);
        if (rc == SOP_OK)
            rc = get_i64(bt, b, &vb, &err);
        if (rc == SOP_OK && va > 0)
            rc = put_i64(bt, a, va - 1, &err);
        if (rc == SOP_OK && va > 0)
            rc = put_i64(bt, b, vb + 1, &err);
        if (rc == SOP_OK)
            rc = sop_txn_commit(t, &err);
        sop_txn_free(t);
        if (rc == SOP_OK) {
            w->commits++;
            i++;
        } else if (rc == SOP_CONFLICT) {
            w->conflicts++;
        } else {
            snprintf(w->fail, sizeof(w->fail), "transfer: %s %.200s", sop_rc_name(rc), err.msg);
        }
    }
    sop_db_close(db);
    return NULL;
}

TEST(threads_with_their_own_handles_keep_the_bank_invariant)
{
    const char *dir = t_tmpdir();
    sop_err err = {0};
    CHECK_OK(sop_db_init(dir, NULL, &err), &err);
    sop_db *db;
    CHECK_OK(sop_db_open(dir, NULL, &db, &err), &err);
    sop_txn *t;
    sop_btree *bt;
    sop_store_options so;
    sop_store_options_init(&so);
    so.slot_length = 16;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_create(t, "acct", &so, &bt, &err), &err);
    for (int i = 0; i < ACCOUNTS; i++)
        CHECK_OK(put_i64(bt, i, BALANCE, &err), &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);

    worker w[THREADS];
    pthread_t th[THREADS];
    uint64_t seed = t_seed();
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){dir, i, t_long() ? 5000 : 500, seed, 0, 0, ""};
        CHECK(pthread_create(&th[i], NULL, run, &w[i]) == 0);
    }
    int commits = 0, conflicts = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_MSG(w[i].fail[0] == '\0', "thread %d: %s", i, w[i].fail);
        commits += w[i].commits;
        conflicts += w[i].conflicts;
    }
    printf("# %d threads: %d transfers, %d conflicts\n", THREADS, commits, conflicts);
    int64_t sum;
    CHECK_OK(audit(db, &sum, &err), &err);
    CHECK_EQ(sum, (int64_t)ACCOUNTS * BALANCE);
    sop_check_report rep;
    CHECK_OK(sop_db_check(db, NULL, NULL, &rep, &err), &err);
    sop_db_close(db);
}
