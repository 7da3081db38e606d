/*
 * test_coord.c - many processes on one database: commit merging, the bank
 * invariant under local and Redis coordination, lock holders that die or
 * pause past their TTL (docs/locking.md).
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "fault.h"
#include "t.h"
#include "txn.h"

static sop_err err;

typedef struct cfg {
    sop_coordination kind;
    uint16_t port;
    uint32_t ttl_ms;
    uint32_t timeout_ms;
    bool cached; /* stores made with every L2 TTL on */
} cfg;

static const cfg LOCAL = {SOP_COORD_LOCAL, 0, 0, 0, false};

static sop_db *open_cfg(const char *dir, const cfg *c)
{
    sop_db_options o;
    sop_db_options_init(&o);
    o.coordination = c->kind;
    o.redis.port = c->port;
    if (c->ttl_ms)
        o.lock_ttl_ms = c->ttl_ms;
    if (c->timeout_ms)
        o.lock_timeout_ms = c->timeout_ms;
    sop_db *db;
    CHECK_OK(sop_db_open(dir, &o, &db, &err), &err);
    return db;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void key_of(int i, char out[16])
{
    snprintf(out, 16, "k%06d", i);
}

static int64_t get_i64(sop_btree *bt, int i, sop_rc *rc)
{
    char k[16];
    key_of(i, k);
    sop_item it;
    *rc = sop_btree_get(bt, k, strlen(k), &it, &err);
    int64_t v = 0;
    if (*rc == SOP_OK && it.value_len == 8)
        memcpy(&v, it.value, 8);
    return v;
}

static sop_rc put_i64(sop_btree *bt, int i, int64_t v)
{
    char k[16];
    key_of(i, k);
    return sop_btree_upsert(bt, k, strlen(k), &v, 8, NULL, &err);
}

static void make_store_ex(const char *dir, const char *name, int n, uint32_t slot,
                          sop_value_placement placement, int64_t initial, bool cached);

/* A store of n items valued `initial`. */
static void make_store(const char *dir, const char *name, int n, uint32_t slot,
                       sop_value_placement placement, int64_t initial)
{
    make_store_ex(dir, name, n, slot, placement, initial, false);
}

/* cached: every part of the store in the shared (L2) cache for a minute. */
static void make_store_ex(const char *dir, const char *name, int n, uint32_t slot,
                          sop_value_placement placement, int64_t initial, bool cached)
{
    sop_db_options o;
    sop_db_options_init(&o);
    CHECK_OK(sop_db_init(dir, &o, &err), &err);
    sop_db *db = open_cfg(dir, &LOCAL);
    sop_txn *t;
    sop_btree *bt;
    sop_store_options so;
    sop_store_options_init(&so);
    so.slot_length = slot;
    so.is_unique = true;
    so.value_placement = placement;
    if (cached) {
        so.globally_cached = true;
        so.cache.registry_ms = so.cache.node_ms = so.cache.value_ms = so.cache.store_info_ms =
            60000;
        so.cache.node_sliding = true;
    }
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_create(t, name, &so, &bt, &err), &err);
    for (int i = 0; i < n; i++)
        CHECK_OK(put_i64(bt, i, initial), &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    sop_db_close(db);
}

static void check_clean(const char *dir)
{
    sop_db *db = open_cfg(dir, &LOCAL);
    sop_check_report rep;
    CHECK_OK(sop_db_check(db, NULL, NULL, &rep, &err), &err);
    CHECK_EQ(rep.problems, 0);
    sop_db_close(db);
}

/* ---- commit merging, in one process with two handles ---- */

static void begin2(sop_db *a, sop_db *b, sop_txn **t, sop_txn **u, sop_btree **x, sop_btree **y)
{
    CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, t, &err), &err);
    CHECK_OK(sop_txn_begin(b, SOP_TXN_WRITE, 0, u, &err), &err);
    CHECK_OK(sop_store_open(*t, "s", x, &err), &err);
    CHECK_OK(sop_store_open(*u, "s", y, &err), &err);
}

static void end2(sop_txn *t, sop_txn *u, sop_rc want_t, sop_rc want_u)
{
    CHECK_RC(sop_txn_commit(t, &err), want_t, &err);
    CHECK_RC(sop_txn_commit(u, &err), want_u, &err);
    sop_txn_free(t);
    sop_txn_free(u);
}

static void merging_in(sop_value_placement placement)
{
    const char *dir = t_tmpdir();
    make_store(dir, "s", 40, 64, placement, 0); /* one leaf */
    sop_db *a = open_cfg(dir, &LOCAL), *b = open_cfg(dir, &LOCAL);
    sop_txn *t, *u;
    sop_btree *x, *y;
    sop_rc rc;

    /* different items of one node: both commit (the second replays) */
    begin2(a, b, &t, &u, &x, &y);
    CHECK_OK(put_i64(x, 1, get_i64(x, 1, &rc) + 10), &err);
    CHECK_OK(put_i64(y, 2, get_i64(y, 2, &rc) + 20), &err);
    end2(t, u, SOP_OK, SOP_OK);

    /* the same item: the second conflicts */
    begin2(a, b, &t, &u, &x, &y);
    CHECK_OK(put_i64(x, 3, 1), &err);
    CHECK_OK(put_i64(y, 3, 2), &err);
    end2(t, u, SOP_OK, SOP_CONFLICT);

    /* one reads an item the other changes, and writes another: conflict */
    begin2(a, b, &t, &u, &x, &y);
    CHECK_OK(put_i64(x, 5, get_i64(x, 4, &rc)), &err);
    CHECK_OK(put_i64(y, 4, 99), &err);
    end2(u, t, SOP_OK, SOP_CONFLICT);

    /* adds of new keys into the node, and removes of others: both commit */
    begin2(a, b, &t, &u, &x, &y);
    CHECK_OK(put_i64(x, 100, 7), &err);
    CHECK_OK(put_i64(x, 101, 7), &err);
    CHECK_OK(sop_btree_remove(y, "k000010", 7, &err), &err);
    CHECK_OK(put_i64(y, 102, 8), &err);
    end2(t, u, SOP_OK, SOP_OK);

    /* the same new key added by both: the second conflicts */
    begin2(a, b, &t, &u, &x, &y);
    CHECK_OK(put_i64(x, 200, 1), &err);
    CHECK_OK(put_i64(y, 200, 2), &err);
    end2(t, u, SOP_OK, SOP_CONFLICT);

    /* a key one found missing is added by the other: conflict */
    begin2(a, b, &t, &u, &x, &y);
    get_i64(x, 300, &rc);
    CHECK_EQ(rc, SOP_NOTFOUND);
    CHECK_OK(put_i64(x, 301, 1), &err);
    CHECK_OK(put_i64(y, 300, 1), &err);
    end2(u, t, SOP_OK, SOP_CONFLICT);

    /* removed by one, updated by the other: conflict */
    begin2(a, b, &t, &u, &x, &y);
    CHECK_OK(sop_btree_remove(x, "k000011", 7, &err), &err);
    CHECK_OK(put_i64(y, 11, 5), &err);
    end2(t, u, SOP_OK, SOP_CONFLICT);

    /* a scan is validated per node: a change anywhere in it conflicts */
    begin2(a, b, &t, &u, &x, &y);
    sop_cursor *c;
    CHECK_OK(sop_cursor_open(x, &c, &err), &err);
    CHECK_OK(sop_cursor_first(c, &err), &err);
    sop_cursor_close(c);
    CHECK_OK(put_i64(x, 12, 1), &err);
    CHECK_OK(put_i64(y, 13, 1), &err);
    end2(u, t, SOP_OK, SOP_CONFLICT);

    /* the outcome */
    CHECK_OK(sop_txn_begin(a, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &x, &err), &err);
    CHECK_EQ(get_i64(x, 1, &rc), 10);
    CHECK_EQ(get_i64(x, 2, &rc), 20);
    CHECK_EQ(get_i64(x, 3, &rc), 1);
    CHECK_EQ(get_i64(x, 4, &rc), 99);
    CHECK_EQ(get_i64(x, 5, &rc), 0);
    CHECK_EQ(get_i64(x, 100, &rc), 7);
    CHECK_EQ(get_i64(x, 102, &rc), 8);
    CHECK_EQ(get_i64(x, 200, &rc), 1);
    CHECK_EQ(get_i64(x, 300, &rc), 1);
    CHECK_EQ(get_i64(x, 301, &rc), 0);
    CHECK_EQ(rc, SOP_NOTFOUND);
    get_i64(x, 10, &rc);
    CHECK_EQ(rc, SOP_NOTFOUND);
    get_i64(x, 11, &rc);
    CHECK_EQ(rc, SOP_NOTFOUND);
    CHECK_EQ(get_i64(x, 13, &rc), 1);
    CHECK_EQ(get_i64(x, 12, &rc), 0);
    CHECK_EQ(sop_btree_count(x), 40 + 3 - 2 + 1 + 1);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    sop_db_close(a);
    sop_db_close(b);
    check_clean(dir);
}

TEST(merging_values_in_nodes)
{
    merging_in(SOP_VALUES_IN_NODE);
}

TEST(merging_separate_values)
{
    merging_in(SOP_VALUES_SEPARATE);
}

TEST(merging_active_values)
{
    merging_in(SOP_VALUES_ACTIVE);
}

/* A merge that splits the node it replays into. */
TEST(merging_across_a_split)
{
    const char *dir = t_tmpdir();
    make_store(dir, "s", 8, 8, SOP_VALUES_IN_NODE, 0);
    sop_db *a = open_cfg(dir, &LOCAL), *b = open_cfg(dir, &LOCAL);
    sop_txn *t, *u;
    sop_btree *x, *y;
    begin2(a, b, &t, &u, &x, &y);
    for (int i = 100; i < 140; i++)
        CHECK_OK(put_i64(x, i, i), &err);
    for (int i = 200; i < 240; i++)
        CHECK_OK(put_i64(y, i, i), &err);
    end2(t, u, SOP_OK, SOP_OK);
    CHECK_OK(sop_txn_begin(a, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &x, &err), &err);
    CHECK_EQ(sop_btree_count(x), 88);
    sop_rc rc;
    for (int i = 200; i < 240; i++)
        CHECK_EQ(get_i64(x, i, &rc), i);
    CHECK_OK(sop_btree_check(x, &err), &err);
    sop_txn_free(t);
    sop_db_close(a);
    sop_db_close(b);
    check_clean(dir);
}

/* ---- processes ---- */

typedef struct stats {
    uint64_t commits, conflicts, audits, audit_conflicts;
} stats;

static pid_t spawn(void (*fn)(int id, void *arg, int fd), int id, void *arg, int *rfd)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        close(p[0]);
        fn(id, arg, p[1]);
        _exit(0);
    }
    close(p[1]);
    *rfd = p[0];
    return pid;
}

static void reap(pid_t pid, int fd, stats *s)
{
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d ended with status %#x", (int)pid,
              st);
    CHECK(read(fd, s, sizeof(*s)) == (ssize_t)sizeof(*s));
    close(fd);
}

static bool retryable(sop_rc rc)
{
    return rc == SOP_CONFLICT || rc == SOP_BUSY || rc == SOP_TIMEOUT || rc == SOP_UNREACHABLE;
}

typedef struct bank {
    const char *dir;
    cfg c;
    int accounts, ntx;
    uint64_t seed;
} bank;

#define BALANCE 1000

/* Sums every account in one read-only transaction: SOP_OK with the sum, or
 * the commit's error (a sum seen by a failed reader proves nothing). */
static sop_rc audit(sop_db *db, int accounts, int64_t *sum)
{
    sop_txn *t;
    sop_btree *bt;
    sop_cursor *c;
    sop_rc rc = sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err);
    if (rc != SOP_OK)
        return rc;
    rc = sop_store_open(t, "acct", &bt, &err);
    *sum = 0;
    int n = 0;
    if (rc == SOP_OK)
        rc = sop_cursor_open(bt, &c, &err);
    if (rc == SOP_OK) {
        for (rc = sop_cursor_first(c, &err); rc == SOP_OK; rc = sop_cursor_next(c, &err)) {
            sop_item it;
            if ((rc = sop_cursor_item(c, &it, &err)) != SOP_OK)
                break;
            if (it.key_len != 7)
                continue; /* a worker's commit counter */
            int64_t v;
            memcpy(&v, it.value, 8);
            *sum += v;
            n++;
        }
        if (rc == SOP_NOTFOUND)
            rc = SOP_OK;
        sop_cursor_close(c);
    }
    if (rc == SOP_OK)
        rc = sop_txn_commit(t, &err);
    sop_txn_free(t);
    if (rc == SOP_OK && n != accounts)
        CHECK_MSG(false, "an audit saw %d items", n);
    return rc;
}

static void bank_worker(int id, void *arg, int fd)
{
    bank *b = arg;
    sop_db *db = open_cfg(b->dir, &b->c);
    t_rng r;
    t_rng_seed(&r, b->seed * 1000 + (uint64_t)id);
    stats s = {0};
    int64_t total = (int64_t)b->accounts * BALANCE;
    for (int i = 0; i < b->ntx;) {
        if (i % 50 == 0 && s.audits <= (uint64_t)i / 50) {
            int64_t sum;
            sop_rc rc = audit(db, b->accounts, &sum);
            s.audits++;
            if (rc == SOP_OK)
                CHECK_MSG(sum == total, "worker %d: a committed audit saw %lld, not %lld", id,
                          (long long)sum, (long long)total);
            else if (retryable(rc))
                s.audit_conflicts++;
            else
                CHECK_MSG(false, "audit: %s %s", sop_rc_name(rc), err.msg);
        }
        int from = (int)t_rng_below(&r, (uint64_t)b->accounts);
        int to = (int)t_rng_below(&r, (uint64_t)b->accounts - 1);
        if (to >= from)
            to++;
        int64_t amount = (int64_t)t_rng_below(&r, 50) + 1;
        sop_txn *t;
        sop_btree *bt;
        sop_rc rc = sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err);
        CHECK_OK(rc, &err);
        rc = sop_store_open(t, "acct", &bt, &err);
        int64_t fb = 0, tb = 0, mine = 0;
        if (rc == SOP_OK)
            fb = get_i64(bt, from, &rc);
        if (rc == SOP_OK)
            tb = get_i64(bt, to, &rc);
        if (rc == SOP_OK)
            mine = get_i64(bt, 1000000 + id, &rc);
        if (rc == SOP_OK && fb >= amount) {
            rc = put_i64(bt, from, fb - amount);
            if (rc == SOP_OK)
                rc = put_i64(bt, to, tb + amount);
        }
        /* every acknowledged commit counts once: lost or doubled ones show */
        if (rc == SOP_OK)
            rc = put_i64(bt, 1000000 + id, mine + 1);
        if (rc == SOP_OK)
            rc = sop_txn_commit(t, &err);
        sop_txn_free(t);
        if (rc == SOP_OK) {
            s.commits++;
            i++;
        } else if (retryable(rc)) {
            s.conflicts++;
        } else {
            CHECK_MSG(false, "worker %d: transfer failed: %s %s", id, sop_rc_name(rc), err.msg);
        }
    }
    sop_db_close(db);
    CHECK(write(fd, &s, sizeof(s)) == (ssize_t)sizeof(s));
}

static void run_bank(const cfg *c, int workers, int ntx)
{
    const char *dir = t_tmpdir();
    bank b = {dir, *c, 100, ntx, t_seed()};
    make_store_ex(dir, "acct", b.accounts, 64, SOP_VALUES_IN_NODE, BALANCE, c->cached);
    {
        sop_db *db = open_cfg(dir, &LOCAL);
        sop_txn *t;
        sop_btree *bt;
        CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
        CHECK_OK(sop_store_open(t, "acct", &bt, &err), &err);
        for (int w = 0; w < 8; w++)
            CHECK_OK(put_i64(bt, 1000000 + w, 0), &err);
        CHECK_OK(sop_txn_commit(t, &err), &err);
        sop_txn_free(t);
        sop_db_close(db);
    }
    pid_t pids[16];
    int fds[16];
    int64_t t0 = now_ms();
    for (int w = 0; w < workers; w++)
        pids[w] = spawn(bank_worker, w, &b, &fds[w]);
    stats all = {0}, s[16];
    for (int w = 0; w < workers; w++) {
        reap(pids[w], fds[w], &s[w]);
        all.commits += s[w].commits;
        all.conflicts += s[w].conflicts;
        all.audits += s[w].audits;
        all.audit_conflicts += s[w].audit_conflicts;
    }
    int64_t ms = now_ms() - t0;
    printf("# bank (%s%s): %d workers, %llu transfers in %lld ms (%.0f/s), %llu retries "
           "(%.2f%%), %llu audits (%llu retried)\n",
           c->kind == SOP_COORD_REDIS ? "redis" : "local", c->cached ? ", L2 cache" : "", workers,
           (unsigned long long)all.commits, (long long)ms,
           (double)all.commits * 1000.0 / (double)(ms ? ms : 1), (unsigned long long)all.conflicts,
           100.0 * (double)all.conflicts / (double)(all.commits + all.conflicts),
           (unsigned long long)all.audits, (unsigned long long)all.audit_conflicts);
    int64_t sum;
    sop_db *db = open_cfg(dir, &LOCAL);
    CHECK_OK(audit(db, b.accounts, &sum), &err);
    CHECK_EQ(sum, (int64_t)b.accounts * BALANCE);
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "acct", &bt, &err), &err);
    for (int w = 0; w < workers; w++) {
        sop_rc rc;
        CHECK_EQ(get_i64(bt, 1000000 + w, &rc), (int64_t)s[w].commits);
    }
    sop_txn_free(t);
    sop_db_close(db);
    check_clean(dir);
}

static int bank_ntx(void)
{
    return t_long() ? 20000 : 2500; /* per worker: 8 x 2500 = 20,000 in CI */
}

TEST(bank_local_8_processes)
{
    run_bank(&LOCAL, 8, bank_ntx());
}

TEST(bank_redis_8_processes)
{
    t_redis r;
    t_redis_start(&r, NULL);
    cfg c = {SOP_COORD_REDIS, r.port, 0, 0, false};
    run_bank(&c, 8, bank_ntx());
    t_redis_stop(&r);
}

/* The same with every part of the store in the shared cache: stale entries
 * may be read, never committed on. */
TEST(bank_redis_l2_cache_8_processes)
{
    t_redis r;
    t_redis_start(&r, NULL);
    cfg c = {SOP_COORD_REDIS, r.port, 0, 0, true};
    run_bank(&c, 8, bank_ntx() / 2);
    t_redis_stop(&r);
}

/* ---- disjoint keys in one node: no conflicts at all ---- */

typedef struct disjoint {
    const char *dir;
    cfg c;
    int procs, keys, ntx;
} disjoint;

static void disjoint_worker(int id, void *arg, int fd)
{
    disjoint *d = arg;
    sop_db *db = open_cfg(d->dir, &d->c);
    stats s = {0};
    for (int i = 0; i < d->ntx;) {
        int k = id + d->procs * (i % (d->keys / d->procs)); /* interleaved: shared nodes */
        sop_txn *t;
        sop_btree *bt;
        CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
        sop_rc rc = sop_store_open(t, "s", &bt, &err);
        int64_t v = 0;
        if (rc == SOP_OK)
            v = get_i64(bt, k, &rc);
        if (rc == SOP_OK)
            rc = put_i64(bt, k, v + 1);
        if (rc == SOP_OK)
            rc = sop_txn_commit(t, &err);
        sop_txn_free(t);
        if (rc == SOP_OK) {
            s.commits++;
            i++;
        } else if (rc == SOP_CONFLICT) {
            s.conflicts++;
        } else {
            CHECK_MSG(false, "worker %d: %s %s", id, sop_rc_name(rc), err.msg);
        }
    }
    sop_db_close(db);
    CHECK(write(fd, &s, sizeof(s)) == (ssize_t)sizeof(s));
}

static void run_disjoint(const cfg *c)
{
    const char *dir = t_tmpdir();
    disjoint d = {dir, *c, 4, 64, t_long() ? 5000 : 1000};
    make_store(dir, "s", d.keys, 500, SOP_VALUES_IN_NODE, 0); /* all in one leaf */
    pid_t pids[4];
    int fds[4];
    for (int w = 0; w < d.procs; w++)
        pids[w] = spawn(disjoint_worker, w, &d, &fds[w]);
    stats all = {0};
    for (int w = 0; w < d.procs; w++) {
        stats s;
        reap(pids[w], fds[w], &s);
        all.commits += s.commits;
        all.conflicts += s.conflicts;
    }
    printf("# disjoint keys in one node (%s): %d processes, %llu commits, %llu conflicts, abort "
           "rate %.4f%%\n",
           c->kind == SOP_COORD_REDIS ? "redis" : "local", d.procs, (unsigned long long)all.commits,
           (unsigned long long)all.conflicts,
           100.0 * (double)all.conflicts / (double)(all.commits + all.conflicts));
    CHECK_EQ(all.conflicts, 0);
    sop_db *db = open_cfg(dir, &LOCAL);
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
    int64_t sum = 0;
    for (int k = 0; k < d.keys; k++) {
        sop_rc rc;
        sum += get_i64(bt, k, &rc);
    }
    CHECK_EQ(sum, (int64_t)d.procs * d.ntx);
    sop_txn_free(t);
    sop_db_close(db);
    check_clean(dir);
}

TEST(disjoint_keys_same_node_never_conflict_local)
{
    run_disjoint(&LOCAL);
}

TEST(disjoint_keys_same_node_never_conflict_redis)
{
    t_redis r;
    t_redis_start(&r, NULL);
    cfg c = {SOP_COORD_REDIS, r.port, 0, 0, false};
    run_disjoint(&c);
    t_redis_stop(&r);
}

/* ---- lock holders that die or pause ---- */

typedef struct holder {
    const char *dir;
    cfg c;
    sop__point point;
    sop__fault_kind kind;
    int64_t value;
} holder;

/* Commits key 1 = value, dying or pausing at a point on the way; exits
 * 0 committed, 10 conflict, 11 anything else. */
static void holder_child(int id, void *arg, int fd)
{
    (void)id;
    (void)fd;
    holder *h = arg;
    sop_db *db = open_cfg(h->dir, &h->c);
    if (h->kind == SOP__FAULT_KILL)
        sop__fault_kill_at(h->point, 1);
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
    sop_rc rc;
    get_i64(bt, 1, &rc);
    CHECK_OK(rc, &err);
    CHECK_OK(put_i64(bt, 1, h->value), &err);
    if (h->kind == SOP__FAULT_STOP)
        sop__fault_stop_at(h->point, 1);
    rc = sop_txn_commit(t, &err);
    sop_txn_free(t);
    sop_db_close(db);
    _exit(rc == SOP_OK ? 0 : rc == SOP_CONFLICT ? 10 : 11);
}

static sop_rc commit_value(sop_db *db, int64_t v)
{
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
    sop_rc rc;
    get_i64(bt, 1, &rc);
    if (rc == SOP_OK)
        rc = put_i64(bt, 1, v);
    if (rc == SOP_OK)
        rc = sop_txn_commit(t, &err);
    sop_txn_free(t);
    return rc;
}

static int64_t value_now(const char *dir)
{
    sop_db *db = open_cfg(dir, &LOCAL);
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
    sop_rc rc;
    int64_t v = get_i64(bt, 1, &rc);
    CHECK_OK(rc, &err);
    sop_txn_free(t);
    sop_db_close(db);
    return v;
}

static void killed_holder(const cfg *c, sop__point point, int64_t bound_ms)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/%s", t_tmpdir(), sop__fault_point_name(point));
    make_store(dir, "s", 10, 16, SOP_VALUES_IN_NODE, 0);
    holder h = {dir, *c, point, SOP__FAULT_KILL, 111};
    int fd;
    pid_t pid = spawn(holder_child, 0, &h, &fd);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the holder was not killed (%#x)", st);
    close(fd);
    int64_t t0 = now_ms(); /* opening runs recovery, which takes the lock too */
    sop_db *db = open_cfg(dir, c);
    sop_rc rc;
    while ((rc = commit_value(db, 222)) != SOP_OK)
        CHECK_MSG(retryable(rc), "%s %s", sop_rc_name(rc), err.msg);
    int64_t took = now_ms() - t0;
    printf("# %s: next commit %lld ms after kill -9 at %s\n",
           c->kind == SOP_COORD_REDIS ? "redis" : "local", (long long)took,
           sop__fault_point_name(point));
    CHECK_MSG(took <= bound_ms, "took %lld ms, bound %lld", (long long)took, (long long)bound_ms);
    sop_db_close(db);
    CHECK_EQ(value_now(dir), 222);
    check_clean(dir);
}

TEST(killed_lock_holder_local_others_proceed_at_once)
{
    killed_holder(&LOCAL, SOP__POINT_P1_VALIDATED, 1000);
    killed_holder(&LOCAL, SOP__POINT_P1_DURABLE, 1000);
    killed_holder(&LOCAL, SOP__POINT_P2_REGISTRY_HALF, 1000);
}

TEST(killed_lock_holder_redis_others_proceed_after_ttl)
{
    t_redis r;
    t_redis_start(&r, NULL);
    cfg c = {SOP_COORD_REDIS, r.port, 1000, 0, false};
    killed_holder(&c, SOP__POINT_P1_VALIDATED, 1000 + 1500);
    killed_holder(&c, SOP__POINT_P1_DURABLE, 1000 + 1500);
    killed_holder(&c, SOP__POINT_P2_REGISTRY_HALF, 1000 + 1500);
    t_redis_stop(&r);
}

static void wait_stopped(pid_t pid)
{
    int st;
    CHECK(waitpid(pid, &st, WUNTRACED) == pid);
    CHECK_MSG(WIFSTOPPED(st), "the holder did not stop (%#x)", st);
}

static int wait_exit(pid_t pid)
{
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFEXITED(st), "the holder died (%#x)", st);
    return WEXITSTATUS(st);
}

/* Paused after validating, past its lock's TTL: another process commits
 * the same item; the paused one resumes and must not overwrite it. */
TEST(paused_holder_past_ttl_cannot_overwrite_a_newer_commit)
{
    t_redis r;
    t_redis_start(&r, NULL);
    cfg c = {SOP_COORD_REDIS, r.port, 300, 0, false};
    const char *dir = t_tmpdir();
    make_store(dir, "s", 10, 16, SOP_VALUES_IN_NODE, 0);
    holder h = {dir, c, SOP__POINT_P1_VALIDATED, SOP__FAULT_STOP, 111};
    int fd;
    pid_t pid = spawn(holder_child, 0, &h, &fd);
    wait_stopped(pid);
    usleep(600 * 1000); /* past the TTL */
    sop_db *db = open_cfg(dir, &c);
    CHECK_OK(commit_value(db, 222), &err);
    kill(pid, SIGCONT);
    CHECK_EQ(wait_exit(pid), 10); /* SOP_CONFLICT: the stale write lost */
    close(fd);
    CHECK_EQ(value_now(dir), 222);
    /* and the system goes on */
    CHECK_OK(commit_value(db, 333), &err);
    sop_db_close(db);
    CHECK_EQ(value_now(dir), 333);
    check_clean(dir);
    t_redis_stop(&r);
}

/* Paused after claiming its sequence number (before its commit point):
 * others wait for it (never decide for a live committer), it finishes when
 * resumed, and later commits apply over it. */
TEST(paused_holder_after_its_claim_is_waited_for)
{
    t_redis r;
    t_redis_start(&r, NULL);
    cfg c = {SOP_COORD_REDIS, r.port, 300, 800, false};
    const char *dir = t_tmpdir();
    make_store(dir, "s", 10, 16, SOP_VALUES_IN_NODE, 0);
    holder h = {dir, c, SOP__POINT_P1_RECORD_WRITTEN, SOP__FAULT_STOP, 111};
    int fd;
    pid_t pid = spawn(holder_child, 0, &h, &fd);
    wait_stopped(pid);
    usleep(600 * 1000);
    sop_db *db = open_cfg(dir, &c);
    sop_rc rc = commit_value(db, 222);
    CHECK_MSG(rc == SOP_BUSY || rc == SOP_TIMEOUT, "got %s (%s)", sop_rc_name(rc), err.msg);
    kill(pid, SIGCONT);
    CHECK_EQ(wait_exit(pid), 0);
    close(fd);
    CHECK_EQ(value_now(dir), 111);
    CHECK_OK(commit_value(db, 222), &err);
    sop_db_close(db);
    CHECK_EQ(value_now(dir), 222);
    check_clean(dir);
    t_redis_stop(&r);
}

/* ---- the L1 node cache ---- */

TEST(l1_cache_shares_nodes_and_keeps_its_budget)
{
    sop__l1_clear();
    sop__l1_reserve(1u << 20);
    sop__node *n;
    uint8_t id[16] = {1}, phys[16] = {2};
    /* 60 KB bodies: 5000 of them are far more than any budget here */
    static char big[60000];
    memcpy(big, "value", 5);
    CHECK_OK(sop__node_new(id, true, 8, 64 + sizeof(big), &n, &err), &err);
    sop__node_insert(n, 0, "key", 3, big, sizeof(big), id, 1, 0);
    CHECK(sop__l1_get(phys, 1) == NULL);
    sop__l1_put(phys, 1, n); /* a copy: n stays the caller's */
    CHECK(!n->shared);
    CHECK(sop__l1_get(phys, 2) == NULL); /* another version: a miss */
    sop__node *c = sop__l1_get(phys, 1);
    CHECK(c != NULL && c != n && c->shared && c->count == 1);
    CHECK(memcmp(sop__node_key(c, 0), "key", 3) == 0);
    sop__node *d = sop__l1_get(phys, 1);
    CHECK(d == c); /* shared, not copied */
    sop__l1_release(d);
    /* sharing a second body of the same (phys, version) gives the first */
    sop__node *twin;
    CHECK_OK(sop__node_clone(n, &twin, &err), &err);
    CHECK(sop__l1_share(phys, 1, twin) == c);
    sop__l1_release(c);
    /* many more bodies than fit: the budget holds, the newest stay; a node
     * still referenced survives its eviction */
    for (int i = 0; i < 5000; i++) {
        uint8_t p[16] = {0};
        memcpy(p, &i, sizeof(i));
        p[15] = 9;
        sop__l1_put(p, 1, n);
    }
    sop__l1_stats st;
    sop__l1_stats_get(&st);
    CHECK(st.bytes <= st.budget);
    CHECK(st.entries > 0 && st.entries < 5000);
    CHECK(sop__l1_get(phys, 1) == NULL);                   /* the oldest went first */
    CHECK(memcmp(sop__node_value(c, 0), "value", 5) == 0); /* still ours */
    sop__l1_release(c);
    uint8_t last[16] = {0};
    int i = 4999;
    memcpy(last, &i, sizeof(i));
    last[15] = 9;
    sop__node *e = sop__l1_get(last, 1);
    CHECK(e != NULL);
    sop__l1_release(e);
    /* a node too large to cache stays private */
    sop__node *huge;
    CHECK_OK(sop__node_new(id, true, 8, (uint32_t)(st.budget / 4 + 1), &huge, &err), &err);
    CHECK(sop__l1_share(last, 7, huge) == huge && !huge->shared);
    sop__l1_release(huge);
    sop__node_free(n);
}

/* A writer takes a cached node over only when nobody else holds it. */
TEST(l1_cache_hands_over_nodes_nobody_else_reads)
{
    sop__l1_clear();
    sop__l1_reserve(1u << 20);
    uint8_t id[16] = {3}, phys[16] = {4};
    sop__node *n;
    CHECK_OK(sop__node_new(id, true, 8, 64, &n, &err), &err);
    sop__node_insert(n, 0, "k", 1, "v", 1, id, 1, 0);
    sop__l1_put(phys, 1, n);
    sop__node *a = sop__l1_get(phys, 1), *b = sop__l1_get(phys, 1);
    CHECK(a != NULL && a == b && a->shared);
    CHECK(!sop__l1_take(phys, 1, a)); /* b reads it too */
    sop__l1_release(b);
    CHECK(!sop__l1_take(phys, 2, a)); /* not the body of that version */
    CHECK(sop__l1_take(phys, 1, a));  /* only the cache and a: handed over */
    CHECK(!a->shared);
    CHECK(sop__l1_get(phys, 1) == NULL);              /* gone from the cache */
    sop__node_insert(a, 1, "l", 1, "w", 1, id, 1, 0); /* a private node now */
    sop__l1_release(a);                               /* frees it */
    sop__l1_stats st;
    sop__l1_stats_get(&st);
    CHECK_EQ(st.entries, 0);
    sop__node_free(n);
}

/* Reads in a second transaction come from the cache, not the blobs. */
TEST(l1_cache_hits_across_transactions)
{
    const char *dir = t_tmpdir();
    make_store(dir, "s", 500, 16, SOP_VALUES_IN_NODE, 5);
    sop__l1_clear();
    sop_db *db = open_cfg(dir, &LOCAL);
    for (int round = 0; round < 2; round++) {
        sop_txn *t;
        sop_btree *bt;
        CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
        CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
        sop_rc rc;
        for (int i = 0; i < 500; i++)
            CHECK_EQ(get_i64(bt, i, &rc), 5);
        CHECK_OK(sop_txn_commit(t, &err), &err);
        sop_txn_free(t);
    }
    sop__l1_stats st;
    sop__l1_stats_get(&st);
    printf("# l1: %llu hits, %llu misses, %llu entries\n", (unsigned long long)st.hits,
           (unsigned long long)st.misses, (unsigned long long)st.entries);
    CHECK(st.hits >= st.misses); /* the second round hit every node the first read */
    CHECK(st.misses > 0);
    sop_db_close(db);
}

TEST(unknown_coordination_kind_is_refused)
{
    const char *dir = t_tmpdir();
    CHECK_OK(sop_db_init(dir, NULL, &err), &err);
    sop_db_options o;
    sop_db_options_init(&o);
    o.coordination = (sop_coordination)7;
    sop_db *db = NULL;
    CHECK_RC(sop_db_open(dir, &o, &db, &err), SOP_INVALID, &err);
    CHECK(db == NULL);
}

/* ---- the L2 (shared) cache in Redis ---- */

static long redis_count(const t_redis *r, const char *pattern)
{
    redisContext *s = t_redis_connect(r, NULL);
    redisReply *rep = redisCommand(s, "KEYS %s", pattern);
    CHECK(rep && rep->type == REDIS_REPLY_ARRAY);
    long n = (long)rep->elements;
    freeReplyObject(rep);
    redisFree(s);
    return n;
}

/* Reads items 0..n-1 in one read-only transaction; each must be `want`
 * (or want + i when step). Returns the commit's result. */
static sop_rc read_all(sop_db *db, int n, int64_t want, sop_rc *first_read)
{
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
    *first_read = SOP_OK;
    for (int i = 0; i < n; i++) {
        sop_rc rc;
        int64_t v = get_i64(bt, i, &rc);
        CHECK_OK(rc, &err);
        if (v != want && *first_read == SOP_OK)
            *first_read = SOP_CONFLICT; /* a stale read: the commit must fail */
    }
    sop_rc rc = sop_txn_commit(t, &err);
    sop_txn_free(t);
    return rc;
}

static void set_all(sop_db *db, int n, int64_t v)
{
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
    for (int i = 0; i < n; i++)
        CHECK_OK(put_i64(bt, i, v), &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
}

static void rm_rf(const char *path)
{
    char cmd[4300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    CHECK(system(cmd) == 0);
}

/* A private Redis, a configuration using it, and a store "s" of n items
 * valued v with every L2 TTL on. */
static const char *l2_fixture(t_redis *r, cfg *c, int n, sop_value_placement placement, int64_t v)
{
    t_redis_start(r, NULL);
    *c = (cfg){SOP_COORD_REDIS, r->port, 0, 0, true};
    const char *dir = t_tmpdir();
    make_store_ex(dir, "s", n, 16, placement, v, true);
    return dir;
}

/* One process fills the cache; another, with nothing of its own cached,
 * reads every node and value from Redis - proved by removing the blobs. */
TEST(l2_cache_serves_other_processes)
{
    t_redis r;
    cfg c;
    const char *dir = l2_fixture(&r, &c, 300, SOP_VALUES_SEPARATE, 7);
    sop__l1_clear();
    sop_db *a = open_cfg(dir, &c);
    sop_rc first;
    CHECK_OK(read_all(a, 300, 7, &first), &err); /* fills the cache */
    CHECK_OK(read_all(a, 300, 7, &first), &err); /* the info is cached from the 2nd open */
    CHECK(a->l2.stats.puts > 0 && a->l2.stats.errors == 0);
    CHECK(redis_count(&r, "sop:*:H*") > 0);
    CHECK(redis_count(&r, "sop:*:N*") > 0);
    CHECK_EQ(redis_count(&r, "sop:*:V*"), 300);
    CHECK_EQ(redis_count(&r, "sop:*:Ss"), 1);
    sop_db_close(a);

    char blobs[4200];
    snprintf(blobs, sizeof(blobs), "%s/stores/s/blob", dir);
    rm_rf(blobs);
    sop__l1_clear();
    sop_db *b = open_cfg(dir, &c);
    CHECK_OK(read_all(b, 300, 7, &first), &err);
    CHECK_OK(first, &err);
    printf("# l2: %llu hits, %llu misses, %llu puts\n", (unsigned long long)b->l2.stats.hits,
           (unsigned long long)b->l2.stats.misses, (unsigned long long)b->l2.stats.puts);
    CHECK(b->l2.stats.hits > 300);
    sop_db_close(b);
    t_redis_stop(&r);
}

/* A commit removes the handles and info it changed before it returns, so
 * another process reads the new state at once, without a failed
 * validation. */
TEST(l2_commit_removes_what_it_made_stale)
{
    t_redis r;
    cfg c;
    const char *dir = l2_fixture(&r, &c, 200, SOP_VALUES_IN_NODE, 0);
    sop_db *a = open_cfg(dir, &c);
    sop_db *b = open_cfg(dir, &c);
    sop_rc first;
    for (int round = 1; round <= 20; round++) {
        for (int twice = 0; twice < 2; twice++) { /* the second from the cache */
            CHECK_OK(read_all(b, 200, round - 1, &first), &err);
            CHECK_OK(first, &err);
        }
        set_all(a, 200, round);
    }
    CHECK_OK(read_all(b, 200, 20, &first), &err);
    CHECK_OK(first, &err);
    CHECK(b->l2.stats.hits > 0);
    CHECK(a->l2.stats.removed > 0);
    sop_db_close(a);
    sop_db_close(b);
    check_clean(dir);
    t_redis_stop(&r);
}

/* Commits set_all(a, n, v) and then puts back every handle and info entry
 * of before: as if the commit's removal had been lost. */
static void commit_behind_the_cache(redisContext *s, sop_db *a, int n, int64_t v)
{
    redisReply *keys = redisCommand(s, "KEYS sop:*:[HS]*");
    CHECK(keys && keys->type == REDIS_REPLY_ARRAY && keys->elements > 1);
    redisReply **vals = calloc(keys->elements, sizeof(*vals));
    CHECK(vals != NULL);
    for (size_t i = 0; i < keys->elements; i++)
        vals[i] = redisCommand(s, "GET %s", keys->element[i]->str);
    set_all(a, n, v);
    for (size_t i = 0; i < keys->elements; i++) {
        CHECK(vals[i]->type == REDIS_REPLY_STRING);
        freeReplyObject(
            redisCommand(s, "SET %s %b", keys->element[i]->str, vals[i]->str, vals[i]->len));
        freeReplyObject(vals[i]);
    }
    free(vals);
    freeReplyObject(keys);
}

/* A reader in db that holds every node of store s in the L1 cache while
 * it is open: a writer of the same process must then clone them instead of
 * taking them out of the cache, so their old bodies stay readable there. */
static sop_txn *pin_nodes(sop_db *db, int n)
{
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_NOCHECK, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
    for (int i = 0; i < n; i++) {
        sop_rc rc;
        get_i64(bt, i, &rc);
        CHECK_OK(rc, &err);
    }
    return t;
}

static void unpin_nodes(sop_txn *t)
{
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
}

/* Stale entries (a commit's removal lost): a reader may read the old state
 * (here from the L1 cache, which still holds the old bodies: pin_nodes)
 * but cannot commit on it; its failed validation drops the entries and the
 * retry reads the new state. A writer merges on the fresh tree. */
TEST(l2_stale_entries_fail_validation_and_are_dropped)
{
    t_redis r;
    cfg c;
    const char *dir = l2_fixture(&r, &c, 100, SOP_VALUES_IN_NODE, 1);
    sop_db *a = open_cfg(dir, &c);
    sop_db *b = open_cfg(dir, &c);
    sop_rc first;
    CHECK_OK(read_all(b, 100, 1, &first), &err);
    CHECK_OK(read_all(b, 100, 1, &first), &err); /* info cached too */
    redisContext *s = t_redis_connect(&r, NULL);
    sop_txn *pin = pin_nodes(b, 100);
    commit_behind_the_cache(s, a, 100, 2);
    unpin_nodes(pin);
    CHECK_RC(read_all(b, 100, 2, &first), SOP_CONFLICT, &err);
    CHECK_RC(first, SOP_CONFLICT, &err); /* it did read the stale state */
    CHECK_OK(read_all(b, 100, 2, &first), &err);
    CHECK_OK(first, &err);

    /* again, with a writer in b: its commit merges on the fresh tree */
    pin = pin_nodes(b, 100);
    commit_behind_the_cache(s, a, 100, 3);
    unpin_nodes(pin);
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(b, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
    CHECK_OK(put_i64(bt, 1000, 42), &err); /* a blind insert, into a stale tree */
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    /* the entries the writer did not use are still stale: one more retry */
    sop_rc rc = read_all(b, 100, 3, &first);
    if (rc == SOP_CONFLICT)
        rc = read_all(b, 100, 3, &first);
    CHECK_OK(rc, &err);
    CHECK_OK(first, &err);
    redisFree(s);
    sop_db_close(a);
    sop_db_close(b);
    check_clean(dir);
    t_redis_stop(&r);
}

/* Corrupt or foreign entries are misses, never data. */
TEST(l2_damaged_entries_are_misses)
{
    t_redis r;
    cfg c;
    const char *dir = l2_fixture(&r, &c, 100, SOP_VALUES_SEPARATE, 4);
    sop_db *a = open_cfg(dir, &c);
    sop_rc first;
    CHECK_OK(read_all(a, 100, 4, &first), &err);
    CHECK_OK(read_all(a, 100, 4, &first), &err);
    redisContext *s = t_redis_connect(&r, NULL);
    redisReply *keys = redisCommand(s, "KEYS sop:*");
    CHECK(keys && keys->type == REDIS_REPLY_ARRAY);
    size_t n = 0;
    for (size_t i = 0; i < keys->elements; i++) {
        const char *k = keys->element[i]->str;
        const char *kind = strrchr(k, ':') + 1;
        if (strchr("HNVS", kind[0]) == NULL)
            continue; /* the lock and the epoch */
        /* flip a byte of the payload, or cut it short, or replace it */
        redisReply *v = redisCommand(s, "GET %s", k);
        CHECK(v->type == REDIS_REPLY_STRING && v->len > 4);
        if (i % 3 == 0)
            v->str[v->len - 1] ^= 0x40;
        else if (i % 3 == 1)
            v->len = 3;
        else
            v->str[0] ^= 1;
        freeReplyObject(redisCommand(s, "SET %s %b", k, v->str, v->len));
        freeReplyObject(v);
        n++;
    }
    CHECK(n > 100);
    freeReplyObject(keys);
    redisFree(s);
    sop_db_close(a);
    sop__l1_clear();
    sop_db *b = open_cfg(dir, &c);
    CHECK_OK(read_all(b, 100, 4, &first), &err);
    CHECK_OK(first, &err);
    CHECK_EQ(b->l2.stats.hits, 0);
    sop_db_close(b);
    check_clean(dir);
    t_redis_stop(&r);
}

/* Redis gone: reads fall back to storage (without a timeout per read),
 * commits fail with a clear error, and all is well once it is back. */
TEST(l2_unreachable_redis_reads_from_storage)
{
    t_redis r;
    t_redis_start(&r, NULL);
    const char *dir = t_tmpdir();
    make_store_ex(dir, "s", 300, 16, SOP_VALUES_SEPARATE, 9, true);
    sop_db_options o;
    sop_db_options_init(&o);
    o.coordination = SOP_COORD_REDIS;
    o.redis.port = r.port;
    o.redis.timeout_ms = 200;
    sop_db *a;
    CHECK_OK(sop_db_open(dir, &o, &a, &err), &err);
    sop_rc first;
    CHECK_OK(read_all(a, 300, 9, &first), &err);
    t_redis_stop(&r);
    sop__l1_clear();
    int64_t t0 = now_ms();
    CHECK_OK(read_all(a, 300, 9, &first), &err);
    CHECK_OK(first, &err);
    int64_t ms = now_ms() - t0;
    printf("# 300 reads with Redis down: %lld ms, %llu cache errors\n", (long long)ms,
           (unsigned long long)a->l2.stats.errors);
    CHECK(a->l2.stats.errors >= 1);
    CHECK_MSG(ms < 5000, "reads waited on a dead cache: %lld ms", (long long)ms);
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
    CHECK_OK(put_i64(bt, 1, 10), &err);
    CHECK_RC(sop_txn_commit(t, &err), SOP_UNREACHABLE, &err);
    sop_txn_free(t);
    t_redis_restart(&r);
    struct timespec pause = {1, 100000000L}; /* past the cache's back-off */
    nanosleep(&pause, NULL);
    set_all(a, 300, 11);
    CHECK_OK(read_all(a, 300, 11, &first), &err);
    CHECK_OK(first, &err);
    CHECK(redis_count(&r, "sop:*:V*") > 0);
    sop_db_close(a);
    check_clean(dir);
    t_redis_stop(&r);
}
