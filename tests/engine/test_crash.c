/*
 * test_crash.c - kill -9 at every named crash point of phase 1, phase 2,
 * rollback, prepare, checkpoints and recovery, over several workloads.
 *
 * A forked child runs a deterministic workload (transactions of adds,
 * updates and removes over one or two stores; some roll back) and reports
 * every acknowledged commit on a pipe; it is killed (SIGKILL, as kill -9)
 * at the Nth pass of one crash point. The parent then opens the database
 * (recovery runs), and requires:
 *   - every acknowledged commit is present;
 *   - the interrupted transaction is all or nothing (the stores equal the
 *     model after the acknowledged ones, or after one more);
 *   - sop_db_check is clean (no orphaned blob, leaked node, bad count);
 *   - the database accepts a new commit.
 * The model is the same operations applied to in-memory trees. A point the
 * child never reached is a failure (TESTING.md).
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault.h"
#include "t.h"

static sop_err err;

enum { W_INSERTS, W_UPDATES, W_DELETES, W_MIXED, W_ACTIVE, W_PREPARED, W_COUNT };
static const char *wnames[] = {"inserts", "updates", "deletes", "mixed", "active", "prepared"};
#define NTXN 12

typedef struct storedef {
    const char *name;
    uint32_t slot;
    bool unique;
    sop_value_placement vp;
} storedef;

static int nstores(int w)
{
    return w == W_MIXED ? 2 : 1;
}

static storedef store_of(int w, int s)
{
    if (w == W_MIXED && s == 1)
        return (storedef){"second", 4, false, SOP_VALUES_SEPARATE};
    if (w == W_ACTIVE)
        return (storedef){"first", 4, true, SOP_VALUES_ACTIVE};
    return (storedef){"first", 8, true, SOP_VALUES_IN_NODE};
}

/* Every fifth transaction rolls back instead of committing. */
static bool commits(int i)
{
    return i % 5 != 4;
}

/* Transaction i of workload w applied to trees (real or model). The ops are
 * a function of (w, i) only. Returns false when the transaction is to be
 * rolled back instead of committed. */
static bool apply_txn(int w, int i, sop_btree **trees)
{
    t_rng rng;
    t_rng_seed(&rng, 1000003u * (uint64_t)w + (uint64_t)i);
    int n = i == 0 ? 300 : 30;
    for (int s = 0; s < nstores(w); s++) {
        for (int k = 0; k < n; k++) {
            char key[32], val[64];
            uint64_t r = t_rng_below(&rng, 1000);
            int kl = snprintf(key, sizeof(key), "k%06u", (unsigned)(i == 0 ? (uint64_t)k * 3 : r));
            int vl = snprintf(val, sizeof(val), "v%d.%d.%u", i, k, (unsigned)t_rng_below(&rng, 99));
            uint64_t op = i == 0 ? 0 : t_rng_below(&rng, 10);
            sop_rc rc;
            if (w == W_DELETES && i > 0)
                op = 9;
            if (w == W_UPDATES && i > 0)
                op = 5;
            if (op < 5)
                rc = sop_btree_add(trees[s], key, (size_t)kl, val, (size_t)vl, NULL, &err);
            else if (op < 8)
                rc = sop_btree_upsert(trees[s], key, (size_t)kl, val, (size_t)vl, NULL, &err);
            else
                rc = sop_btree_remove(trees[s], key, (size_t)kl, &err);
            CHECK_MSG(rc == SOP_OK || rc == SOP_EXISTS || rc == SOP_NOTFOUND, "op: %s %s",
                      sop_rc_name(rc), err.msg);
        }
    }
    return commits(i);
}

/* model[s] after transactions 0..upto-1 (rolled-back ones skipped) */
static void build_model(int w, int upto, sop_btree **model)
{
    for (int s = 0; s < nstores(w); s++) {
        storedef d = store_of(w, s);
        sop_store_options o;
        sop_store_options_init(&o);
        o.slot_length = d.slot;
        o.is_unique = d.unique;
        CHECK_OK(sop_btree_open_memory(&o, &model[s], &err), &err);
    }
    for (int i = 0; i < upto; i++)
        if (commits(i))
            apply_txn(w, i, model);
}

static const char *current; /* the crash case being verified, for messages */

/* The stores' contents equal the model's (keys and values, in order). */
static bool same_contents(sop_btree *real, sop_btree *model)
{
    sop_cursor *a, *b;
    CHECK_OK(sop_cursor_open(real, &a, &err), &err);
    CHECK_OK(sop_cursor_open(model, &b, &err), &err);
    sop_rc ra = sop_cursor_first(a, &err), rb = sop_cursor_first(b, &err);
    bool same = true;
    while (ra == SOP_OK && rb == SOP_OK) {
        sop_item x, y;
        sop_rc rc = sop_cursor_item(a, &x, &err);
        CHECK_MSG(rc == SOP_OK, "%s: reading back: %s", current, err.msg);
        CHECK_OK(sop_cursor_item(b, &y, &err), &err);
        if (x.key_len != y.key_len || memcmp(x.key, y.key, x.key_len) != 0 ||
            x.value_len != y.value_len || memcmp(x.value, y.value, x.value_len) != 0) {
            same = false;
            break;
        }
        ra = sop_cursor_next(a, &err);
        rb = sop_cursor_next(b, &err);
    }
    if (same && (ra == SOP_OK) != (rb == SOP_OK))
        same = false;
    sop_cursor_close(a);
    sop_cursor_close(b);
    return same;
}

static sop_db *open_db(const char *dir)
{
    sop_db_options o;
    sop_db_options_init(&o);
    o.checkpoint_bytes = 24 * 1024; /* checkpoints happen within the workload */
    sop_db *db = NULL;
    CHECK_OK(sop_db_open(dir, &o, &db, &err), &err);
    return db;
}

/* The child: run the workload, acknowledging commits on fd. */
static void child_run(const char *dir, int w, int fd, sop__point point, unsigned nth)
{
    sop__fault_reset();
    if (point != SOP__POINT_COUNT)
        sop__fault_kill_at(point, nth);
    sop_db *db = open_db(dir);
    for (int i = 0; i < NTXN; i++) {
        sop_txn *t;
        CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
        sop_btree *trees[2];
        for (int s = 0; s < nstores(w); s++) {
            storedef d = store_of(w, s);
            if (i == 0) {
                sop_store_options o;
                sop_store_options_init(&o);
                o.slot_length = d.slot;
                o.is_unique = d.unique;
                o.value_placement = d.vp;
                CHECK_OK(sop_store_create(t, d.name, &o, &trees[s], &err), &err);
            } else {
                CHECK_OK(sop_store_open(t, d.name, &trees[s], &err), &err);
            }
        }
        bool commit = apply_txn(w, i, trees);
        if (!commit) {
            CHECK_OK(sop_txn_rollback(t, &err), &err);
        } else if (w == W_PREPARED && i > 0) {
            uint8_t txid[16];
            CHECK_OK(sop_txn_prepare(t, "crash-test", txid, &err), &err);
            CHECK_OK(sop_db_commit_prepared(db, txid, &err), &err);
        } else {
            CHECK_OK(sop_txn_commit(t, &err), &err);
        }
        sop_txn_free(t);
        int32_t ack = i;
        if (write(fd, &ack, sizeof(ack)) != sizeof(ack))
            _exit(3);
    }
    sop_db_close(db);
}

/* Forks a child that runs fn; returns its wait status and the last
 * acknowledged transaction (-1: none). */
static int run_child(const char *dir, int w, sop__point point, unsigned nth, int *last_ack)
{
    int p[2];
    CHECK(pipe(p) == 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        close(p[0]);
        child_run(dir, w, p[1], point, nth);
        _exit(0);
    }
    close(p[1]);
    *last_ack = -1;
    int32_t ack;
    while (read(p[0], &ack, sizeof(ack)) == sizeof(ack))
        *last_ack = ack;
    close(p[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    return status;
}

static void decide_leftovers(sop_db *db, int *extra);

static void verify(const char *dir, int w, int last_ack, const char *what)
{
    current = what;
    sop_db *db = open_db(dir); /* recovery */
    int extra = 0;
    if (w == W_PREPARED)
        decide_leftovers(db, &extra); /* an in-doubt one: commit it */
    sop_check_report rep;
    sop_rc crc = sop_db_check(db, NULL, NULL, &rep, &err);
    CHECK_MSG(crc == SOP_OK, "%s: check: %s", what, err.msg);
    int nst = nstores(w);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    sop_btree *real[2];
    bool exists = true;
    for (int s = 0; s < nst; s++) {
        sop_rc rc = sop_store_open(t, store_of(w, s).name, &real[s], &err);
        if (rc == SOP_NOTFOUND)
            exists = false;
        else
            CHECK_OK(rc, &err);
    }
    /* acknowledged: 0..last_ack; the one in flight: last_ack + 1 */
    bool matched = false;
    for (int upto = last_ack + 1; upto <= last_ack + 2 && upto <= NTXN && !matched; upto++) {
        if (upto == 0) {
            matched = !exists;
            continue;
        }
        if (!exists)
            continue;
        sop_btree *model[2];
        build_model(w, upto, model);
        bool all = true;
        for (int s = 0; s < nst; s++)
            all = all && same_contents(real[s], model[s]);
        for (int s = 0; s < nst; s++)
            sop_btree_close(model[s]);
        matched = all;
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    CHECK_MSG(matched, "%s: the stores match neither the acknowledged commits (0..%d) nor one more",
              what, last_ack);
    /* writable again */
    if (exists) {
        CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
        CHECK_OK(sop_store_open(t, store_of(w, 0).name, &real[0], &err), &err);
        CHECK_OK(sop_btree_upsert(real[0], "after-crash", 11, "yes", 3, NULL, &err), &err);
        CHECK_OK(sop_txn_commit(t, &err), &err);
        sop_txn_free(t);
    }
    sop_db_close(db);
}

static void decide_one(void *ctx, const sop_prepared_info *info)
{
    uint8_t *ids = ctx;
    memcpy(ids, info->txid, 16);
}

static void decide_leftovers(sop_db *db, int *extra)
{
    uint8_t txid[16];
    memset(txid, 0, sizeof(txid));
    CHECK_OK(sop_db_list_prepared(db, decide_one, txid, &err), &err);
    static const uint8_t nil[16];
    if (memcmp(txid, nil, 16) != 0) {
        CHECK_OK(sop_db_commit_prepared(db, txid, &err), &err);
        (*extra)++;
    }
}

/* With use_ec, new databases keep every store's blobs erasure coded 2+1
 * (folders next to the database's), so crashes hit shard writes. */
static bool use_ec;

static const char *new_dir(void)
{
    static char dir[4096];
    static int n;
    snprintf(dir, sizeof(dir), "%s/crash%d", t_tmpdir(), n++);
    sop_db_options o;
    sop_db_options_init(&o);
    char paths[3][4200];
    const char *pp[3] = {paths[0], paths[1], paths[2]};
    sop_ec_config ec = {NULL, 2, 1, pp, true};
    if (use_ec) {
        for (int i = 0; i < 3; i++)
            snprintf(paths[i], sizeof(paths[i]), "%s-d%d", dir, i);
        o.ec = &ec;
        o.ec_count = 1;
    }
    CHECK_OK(sop_db_init(dir, &o, &err), &err);
    return dir;
}

static void crash_at(int w, sop__point point, unsigned nth)
{
    const char *dir = new_dir();
    int last;
    int status = run_child(dir, w, point, nth, &last);
    char what[256];
    snprintf(what, sizeof(what), "%s at %s #%u", wnames[w], sop__fault_point_name(point), nth);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "%s: the child was not killed (status %d): the point was never reached", what,
              status);
    verify(dir, w, last, what);
}

/* Erasure coding: a kill after any shard of any blob (nodes written in
 * phase 2 and by redo, actively persisted values written before the
 * commit), and at the phase 2 points around blob writes. */
TEST(kill_at_shard_writes_over_every_workload)
{
    use_ec = true;
    unsigned runs = 0;
    for (int w = 0; w < W_COUNT; w++) {
        unsigned nths[] = {1, 2, 5, 13, 31, 77};
        for (size_t k = 0; k < (t_long() ? 6u : 4u); k++) {
            crash_at(w, SOP__POINT_EC_SHARD_WRITTEN, nths[k]);
            runs++;
        }
        crash_at(w, SOP__POINT_P2_BLOBS_WRITTEN, 2);
        crash_at(w, SOP__POINT_P2_DEAD_REMOVED, 2);
        runs += 2;
    }
    use_ec = false;
    printf("#   %u crash runs\n", runs);
}

/* Every point of the commit protocol, over every workload. */
TEST(kill_at_every_commit_point_over_every_workload)
{
    static const sop__point points[] = {
        SOP__POINT_P1_LOCKED,         SOP__POINT_P1_VALIDATED,     SOP__POINT_P1_RECORD_WRITTEN,
        SOP__POINT_P1_DURABLE,        SOP__POINT_P2_BLOBS_WRITTEN, SOP__POINT_P2_REGISTRY_HALF,
        SOP__POINT_P2_STATE_WRITTEN,  SOP__POINT_P2_DEAD_REMOVED,  SOP__POINT_P2_DONE,
        SOP__POINT_RB_ACTIVE_REMOVED, SOP__POINT_CKPT_SYNCED};
    unsigned runs = 0;
    for (int w = 0; w < W_COUNT; w++) {
        for (size_t p = 0; p < sizeof(points) / sizeof(points[0]); p++) {
            unsigned nths[] = {1, 3, 7};
            for (int k = 0; k < (t_long() ? 3 : 2); k++) {
                unsigned nth = nths[k];
                bool direct_commit_only = points[p] == SOP__POINT_P1_RECORD_WRITTEN ||
                                          points[p] == SOP__POINT_P1_DURABLE ||
                                          points[p] == SOP__POINT_P2_DONE;
                if (points[p] == SOP__POINT_RB_ACTIVE_REMOVED ||
                    points[p] == SOP__POINT_CKPT_SYNCED)
                    nth = (unsigned)k + 1; /* rarer points */
                /* the prepared workload commits through prepare + commit
                 * prepared after its first transaction */
                if (w == W_PREPARED && direct_commit_only)
                    nth = 1;
                crash_at(w, points[p], nth);
                runs++;
            }
        }
        crash_at(w, SOP__POINT_P2_STORES_CREATED, 1);
        runs++;
    }
    printf("#   %u crash runs\n", runs);
}

TEST(kill_at_every_prepared_transaction_point)
{
    static const sop__point points[] = {SOP__POINT_PREP_DURABLE, SOP__POINT_PREP_COMMIT_LOGGED,
                                        SOP__POINT_PREP_FILE_REMOVED};
    for (size_t p = 0; p < sizeof(points) / sizeof(points[0]); p++)
        for (unsigned nth = 1; nth <= 3; nth += 2)
            crash_at(W_PREPARED, points[p], nth);
}

/* A crash, then a crash during the recovery of the first, then recovery. */
TEST(kill_during_recovery)
{
    static const sop__point first[] = {SOP__POINT_P2_BLOBS_WRITTEN, SOP__POINT_P2_REGISTRY_HALF,
                                       SOP__POINT_P1_VALIDATED};
    static const sop__point during[] = {SOP__POINT_REC_LOG_REDONE, SOP__POINT_REC_LOG_REDONE,
                                        SOP__POINT_REC_ORPHANS_REMOVED};
    for (int w = 0; w < W_COUNT; w++) {
        for (size_t k = 0; k < 3; k++) {
            if (during[k] == SOP__POINT_REC_ORPHANS_REMOVED && w != W_ACTIVE)
                continue; /* orphans need early-written values */
            const char *dir = new_dir();
            int last;
            int status = run_child(dir, w, first[k], 3, &last);
            CHECK(WIFSIGNALED(status));
            /* a second child only opens the database: killed mid-recovery */
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) {
                t_in_child();
                sop__fault_reset();
                sop__fault_kill_at(during[k], 1);
                sop_db *db = open_db(dir);
                sop_db_close(db);
                _exit(0);
            }
            int st2;
            CHECK(waitpid(pid, &st2, 0) == pid);
            char what[256];
            snprintf(what, sizeof(what), "%s: %s then %s", wnames[w],
                     sop__fault_point_name(first[k]), sop__fault_point_name(during[k]));
            CHECK_MSG(WIFSIGNALED(st2) && WTERMSIG(st2) == SIGKILL,
                      "%s: recovery did not reach the point (status %d)", what, st2);
            verify(dir, w, last, what);
        }
    }
}

/* Without faults every workload runs to the end and matches its model. */
TEST(workloads_run_clean_without_faults)
{
    for (int w = 0; w < W_COUNT; w++) {
        const char *dir = new_dir();
        int last;
        int status = run_child(dir, w, SOP__POINT_COUNT, 0, &last);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: child status %d", wnames[w],
                  status);
        CHECK_EQ(last, NTXN - 1);
        verify(dir, w, last, wnames[w]);
    }
}
