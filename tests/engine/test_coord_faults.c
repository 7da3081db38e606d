/*
 * test_coord_faults.c - Redis losing its state or stalling in the middle of
 * a commit (docs/commit.md, docs/locking.md): the commit lock is a Redis key
 * with a TTL, but correctness rests on storage (the sequence-number fence
 * and the pending marker in the database lock file). Acceptance: Redis
 * restarted, flushed and paused (CLIENT PAUSE) at named points mid-commit:
 * no acknowledged commit lost, no double apply, the system makes progress
 * afterwards.
 *
 *  - stopped_at_<point>_<event>: a committer is stopped (SIGSTOP) at a
 *    named point of phase 1/2 while Redis is flushed, restarted or paused
 *    (or, as a control, its lock just expires); another process commits
 *    meanwhile (or right after, when the stopped one holds a claim that must
 *    be waited for); the counter then equals the number of acknowledged
 *    increments exactly, the checker is clean, and one more commit works.
 *  - flushed_while_finishing_a_dead_committers_commit: a committer dies
 *    after its commit point; the lock holder redoing its record is stopped
 *    mid-redo while Redis is flushed and another process finishes the
 *    commit and commits on top.
 *  - workload_through_flush_restart_pause: 4 processes transfer money and
 *    count their own acknowledged commits while Redis is flushed, restarted,
 *    paused and then flushed every 10 ms for a second under them.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "t.h"

static sop_err err;

/* ---- helpers ---- */

typedef struct rcfg {
    uint16_t port;
    uint32_t ttl_ms;     /* commit lock TTL */
    uint32_t timeout_ms; /* lock_timeout_ms */
    uint32_t redis_ms;   /* redis.timeout_ms: paused calls time out fast */
    uint64_t checkpoint_bytes;
} rcfg;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static bool retryable(sop_rc rc)
{
    return rc == SOP_CONFLICT || rc == SOP_BUSY || rc == SOP_TIMEOUT || rc == SOP_UNREACHABLE;
}

static sop_rc open_redis(const char *dir, const rcfg *c, sop_db **out, sop_err *e)
{
    sop_db_options o;
    sop_db_options_init(&o);
    o.coordination = SOP_COORD_REDIS;
    o.redis.port = c->port;
    o.redis.timeout_ms = c->redis_ms;
    o.lock_ttl_ms = c->ttl_ms;
    o.lock_timeout_ms = c->timeout_ms;
    if (c->checkpoint_bytes)
        o.checkpoint_bytes = c->checkpoint_bytes;
    return sop_db_open(dir, &o, out, e);
}

/* Opens with Redis coordination, retrying while Redis is down or paused
 * (opening runs recovery, which takes the commit lock). */
static sop_db *open_retry(const char *dir, const rcfg *c, int64_t within_ms)
{
    int64_t limit = now_ms() + within_ms;
    for (;;) {
        sop_db *db;
        sop_rc rc = open_redis(dir, c, &db, &err);
        if (rc == SOP_OK)
            return db;
        CHECK_MSG(retryable(rc) && now_ms() < limit, "open %s: %s %s", dir, sop_rc_name(rc),
                  err.msg);
        sleep_ms(20);
    }
}

static int64_t get_i64(sop_btree *bt, const char *key, sop_rc *rc, sop_err *e)
{
    sop_item it;
    *rc = sop_btree_get(bt, key, strlen(key), &it, e);
    int64_t v = 0;
    if (*rc == SOP_OK && it.value_len == 8)
        memcpy(&v, it.value, 8);
    return v;
}

static sop_rc put_i64(sop_btree *bt, const char *key, int64_t v, sop_err *e)
{
    return sop_btree_upsert(bt, key, strlen(key), &v, 8, NULL, e);
}

/* A database (local coordination to set it up) with store "s": the counter
 * "n" = 0, `fillers` accounts valued `initial` ("a000"...) and a counter per
 * worker ("w0"...) = 0. */
static void make_db(const char *dir, int fillers, int64_t initial, int workers)
{
    sop_db_options o;
    sop_db_options_init(&o);
    CHECK_OK(sop_db_init(dir, &o, &err), &err);
    sop_db *db;
    CHECK_OK(sop_db_open(dir, &o, &db, &err), &err);
    sop_txn *t;
    sop_btree *bt;
    sop_store_options so;
    sop_store_options_init(&so);
    so.slot_length = 16;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_create(t, "s", &so, &bt, &err), &err);
    CHECK_OK(put_i64(bt, "n", 0, &err), &err);
    for (int i = 0; i < fillers; i++) {
        char k[16];
        snprintf(k, sizeof(k), "a%03d", i);
        CHECK_OK(put_i64(bt, k, initial, &err), &err);
    }
    for (int w = 0; w < workers; w++) {
        char k[16];
        snprintf(k, sizeof(k), "w%d", w);
        CHECK_OK(put_i64(bt, k, 0, &err), &err);
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    sop_db_close(db);
}

/* One transaction: n += 1. */
static sop_rc incr_once(sop_db *db, sop_err *e)
{
    sop_txn *t;
    sop_btree *bt;
    sop_rc rc = sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, e);
    if (rc != SOP_OK)
        return rc;
    rc = sop_store_open(t, "s", &bt, e);
    int64_t v = 0;
    if (rc == SOP_OK)
        v = get_i64(bt, "n", &rc, e);
    if (rc == SOP_OK)
        rc = put_i64(bt, "n", v + 1, e);
    if (rc == SOP_OK)
        rc = sop_txn_commit(t, e);
    sop_txn_free(t);
    return rc;
}

/* n += 1, retrying retryable failures for at most within_ms. SOP_OK or the
 * last failure; *attempts counts the tries. */
static sop_rc incr_retry(sop_db *db, int64_t within_ms, int *attempts)
{
    int64_t limit = now_ms() + within_ms;
    *attempts = 0;
    for (;;) {
        ++*attempts;
        sop_rc rc = incr_once(db, &err);
        if (rc == SOP_OK || !retryable(rc) || now_ms() >= limit)
            return rc;
        sleep_ms(10 + 10 * (*attempts % 4));
    }
}

static int64_t read_n(sop_db *db, const char *key)
{
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_NOCHECK, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "s", &bt, &err), &err);
    sop_rc rc;
    int64_t v = get_i64(bt, key, &rc, &err);
    CHECK_OK(rc, &err);
    sop_txn_free(t);
    return v;
}

static void print_problem(void *ctx, const char *msg)
{
    (void)ctx;
    printf("#   problem: %s\n", msg);
}

/* Fails the test (closing db first: no leak report on top) unless
 * sop_db_check finds nothing wrong. */
static void check_clean(sop_db *db)
{
    sop_check_report rep;
    memset(&rep, 0, sizeof(rep));
    sop_rc rc = sop_db_check(db, print_problem, NULL, &rep, &err);
    if (rc != SOP_OK || rep.problems != 0)
        sop_db_close(db);
    CHECK_MSG(rc == SOP_OK && rep.problems == 0, "check: %s, %llu problems (%s)", sop_rc_name(rc),
              (unsigned long long)rep.problems, err.msg);
}

/* ---- Redis events ---- */

/* EV_EXPIRE is the control: Redis keeps its state, the stopped holder's
 * lock just runs out. */
typedef enum event { EV_FLUSHALL, EV_RESTART, EV_PAUSE, EV_EXPIRE } event;

static const char *event_name(event e)
{
    return e == EV_FLUSHALL  ? "FLUSHALL"
           : e == EV_RESTART ? "restart"
           : e == EV_PAUSE   ? "CLIENT PAUSE"
                             : "lock TTL expiry";
}

#define PAUSE_MS 1500
#define TTL_MS   500 /* the commit lock's, in the one-committer cases */

static void side_do(const t_redis *r, const char *cmd)
{
    redisContext *s = t_redis_connect(r, NULL);
    redisReply *rep = redisCommand(s, cmd);
    CHECK_MSG(rep != NULL, "side command %s: %s", cmd, s->errstr);
    bool ok = rep->type != REDIS_REPLY_ERROR;
    char why[128];
    snprintf(why, sizeof(why), "%s", ok ? "" : rep->str);
    freeReplyObject(rep);
    redisFree(s);
    CHECK_MSG(ok, "side command %s: %s", cmd, why);
}

static void apply_event(t_redis *r, event e)
{
    switch (e) {
    case EV_FLUSHALL:
        side_do(r, "FLUSHALL");
        break;
    case EV_RESTART:
        t_redis_restart(r);
        break;
    case EV_PAUSE: {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "CLIENT PAUSE %d ALL", PAUSE_MS);
        side_do(r, cmd);
        break;
    }
    case EV_EXPIRE:
        sleep_ms(TTL_MS + 100);
        break;
    }
}

/* ---- 1: one committer stopped at each named point, each Redis event ---- */

typedef struct child_arg {
    const char *dir;
    rcfg c;
    sop__point point;
} child_arg;

/* Increments n in one transaction, stopping at `point` on the way. Sends
 * its sop_err through fd and exits with the commit's sop_rc (100+: the
 * set-up failed). */
static void counter_child(const child_arg *a, int fd)
{
    sop_err e;
    memset(&e, 0, sizeof(e));
    sop_db *db;
    if (open_redis(a->dir, &a->c, &db, &e) != SOP_OK) {
        fprintf(stderr, "child: open: %s\n", e.msg);
        _exit(100);
    }
    sop_txn *t;
    sop_btree *bt;
    sop_rc rc;
    if (sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &e) != SOP_OK ||
        sop_store_open(t, "s", &bt, &e) != SOP_OK) {
        fprintf(stderr, "child: begin: %s\n", e.msg);
        _exit(101);
    }
    int64_t v = get_i64(bt, "n", &rc, &e);
    if (rc != SOP_OK || v != 0 || put_i64(bt, "n", v + 1, &e) != SOP_OK) {
        fprintf(stderr, "child: n = %lld: %s\n", (long long)v, e.msg);
        _exit(102);
    }
    sop__fault_stop_at(a->point, 1);
    rc = sop_txn_commit(t, &e);
    sop_txn_free(t);
    sop__fault_reset();
    if (write(fd, &e, sizeof(e)) != (ssize_t)sizeof(e))
        _exit(103);
    sop_db_close(db);
    _exit((int)rc);
}

static void wait_stopped(pid_t pid)
{
    int st;
    CHECK(waitpid(pid, &st, WUNTRACED) == pid);
    CHECK_MSG(WIFSTOPPED(st), "the committer did not stop at its point (status %#x)", st);
}

static sop_rc wait_child_rc(pid_t pid, int fd, sop_err *e)
{
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) < 100, "the committer ended with status %#x", st);
    CHECK(read(fd, e, sizeof(*e)) == (ssize_t)sizeof(*e));
    close(fd);
    return (sop_rc)WEXITSTATUS(st);
}

static void matrix_case(t_redis *r, sop__point point, event ev)
{
    int64_t t0 = now_ms();
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/%s-%d", t_tmpdir(), sop__fault_point_name(point), (int)ev);
    make_db(dir, 20, 0, 0);
    rcfg c = {r->port, TTL_MS, 5000, 300, 0};
    child_arg a = {dir, c, point};

    int p[2];
    CHECK(pipe(p) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        close(p[0]);
        counter_child(&a, p[1]);
    }
    close(p[1]);
    wait_stopped(pid);

    apply_event(r, ev);

    /* Before its claim the stopped committer holds only a Redis lock, which
     * the event removed (or which ran out): another commit goes ahead, and
     * the stopped one, overtaken, must fail. From its claim on (a pending
     * marker naming its live log), nobody may decide for it before its
     * commit point: others wait (BUSY). After its commit point another
     * process may either finish the commit for it or wait for it (this
     * engine waits: a second applier could bring back blobs a later commit
     * removed); either way nothing is lost or applied twice. */
    bool claimed = point != SOP__POINT_P1_LOCKED && point != SOP__POINT_P1_VALIDATED;
    bool past_commit_point = claimed && point != SOP__POINT_P1_RECORD_WRITTEN;
    sop_rc probe_rc = SOP_INTERNAL; /* not run */
    if (claimed) {
        rcfg pc = c;
        pc.timeout_ms = 600;
        sop_db *db = open_retry(dir, &pc, 10000);
        int64_t limit = now_ms() + 10000;
        /* UNREACHABLE while Redis is paused; then BUSY (waited for it) */
        while ((probe_rc = incr_once(db, &err)) == SOP_UNREACHABLE || probe_rc == SOP_CONFLICT) {
            CHECK_MSG(now_ms() < limit, "a commit while another's claim is in flight: %s (%s)",
                      sop_rc_name(probe_rc), err.msg);
            sleep_ms(20);
        }
        CHECK_MSG(probe_rc == SOP_BUSY || probe_rc == SOP_TIMEOUT ||
                      (probe_rc == SOP_OK && past_commit_point),
                  "a commit while another's claim is in flight: %s (%s)", sop_rc_name(probe_rc),
                  err.msg);
        sop_db_close(db);
    }

    sop_db *db = NULL;
    sop_rc parent_rc = SOP_INTERNAL;
    int attempts = 0;
    if (!claimed) {
        db = open_retry(dir, &c, 10000);
        parent_rc = incr_retry(db, 15000, &attempts);
        CHECK_MSG(parent_rc == SOP_OK, "the other commit (while stopped): %s after %d tries (%s)",
                  sop_rc_name(parent_rc), attempts, err.msg);
    }

    CHECK(kill(pid, SIGCONT) == 0);
    sop_err cerr;
    sop_rc child_rc = wait_child_rc(pid, p[0], &cerr);

    if (claimed) {
        db = open_retry(dir, &c, 10000);
        parent_rc = incr_retry(db, 15000, &attempts);
        CHECK_MSG(parent_rc == SOP_OK, "the other commit (after resume): %s after %d tries (%s)",
                  sop_rc_name(parent_rc), attempts, err.msg);
    }
    sop_db_close(db);

    int64_t want = (child_rc == SOP_OK) + (probe_rc == SOP_OK) + (parent_rc == SOP_OK);

    /* a fresh handle: the exact count, a clean database, and progress */
    db = open_retry(dir, &c, 10000);
    int64_t n = read_n(db, "n");
    char probe[64] = "";
    if (claimed)
        snprintf(probe, sizeof(probe), "a commit while stopped %s, ", sop_rc_name(probe_rc));
    printf("# %s + %s: %schild %s, other %s (%d tries, %s resuming), counter %lld, %lld ms\n",
           sop__fault_point_name(point), event_name(ev), probe, sop_rc_name(child_rc),
           sop_rc_name(parent_rc), attempts, claimed ? "after" : "before", (long long)n,
           (long long)(now_ms() - t0));
    if (child_rc != SOP_OK)
        printf("#   child: %s\n", cerr.msg);
    CHECK_MSG(n == want, "%s + %s: counter %lld, but %lld acknowledged increments",
              sop__fault_point_name(point), event_name(ev), (long long)n, (long long)want);
    if (claimed)
        CHECK_MSG(child_rc == SOP_OK, "%s + %s: the stopped committer got %s (%s)",
                  sop__fault_point_name(point), event_name(ev), sop_rc_name(child_rc), cerr.msg);
    else
        CHECK_MSG(child_rc == SOP_CONFLICT,
                  "%s + %s: the stopped committer, overtaken, got %s (%s)",
                  sop__fault_point_name(point), event_name(ev), sop_rc_name(child_rc), cerr.msg);
    check_clean(db);
    CHECK_OK(incr_retry(db, 10000, &attempts), &err);
    CHECK_EQ(read_n(db, "n"), want + 1);
    sop_db_close(db);
}

static void one_case(sop__point point, event ev)
{
    t_redis r;
    t_redis_start(&r, NULL);
    matrix_case(&r, point, ev);
    t_redis_stop(&r);
}

/* One test per (point, event), so that one failure hides no other. */
#define MATRIX(point, tag)                                                                         \
    TEST(stopped_at_##tag##_redis_flushall)                                                        \
    {                                                                                              \
        one_case(SOP__POINT_##point, EV_FLUSHALL);                                                 \
    }                                                                                              \
    TEST(stopped_at_##tag##_redis_restart)                                                         \
    {                                                                                              \
        one_case(SOP__POINT_##point, EV_RESTART);                                                  \
    }                                                                                              \
    TEST(stopped_at_##tag##_redis_paused)                                                          \
    {                                                                                              \
        one_case(SOP__POINT_##point, EV_PAUSE);                                                    \
    }                                                                                              \
    TEST(stopped_at_##tag##_lock_expired)                                                          \
    {                                                                                              \
        one_case(SOP__POINT_##point, EV_EXPIRE);                                                   \
    }

MATRIX(P1_LOCKED, phase1_locked)
MATRIX(P1_VALIDATED, phase1_validated)
MATRIX(P1_RECORD_WRITTEN, phase1_record_written)
MATRIX(P1_DURABLE, phase1_durable)
MATRIX(P2_REGISTRY_HALF, phase2_registry_half)
MATRIX(P2_DONE, phase2_done)

/* ---- 1b: Redis flushed while a lock holder finishes a dead one's commit ---- */

/*
 * D commits (n += 1, and creates store "a") and is killed right after its
 * commit point: its marker is left for the next lock holder. B takes the
 * lock and starts redoing D's record, and is stopped after creating "a",
 * before writing any of D's blobs. Redis is flushed: the parent takes the
 * lock too, finishes D's commit itself and commits n += 1 on top (which
 * makes D's node body of "s" obsolete and removes it). B resumes: it must
 * not bring back what the later commit removed, nor undo anything.
 */
static void dead_committer(const char *dir, const rcfg *c)
{
    sop_err e;
    sop_db *db;
    if (open_redis(dir, c, &db, &e) != SOP_OK)
        _exit(100);
    sop_txn *t;
    sop_btree *bt, *nb;
    sop_rc rc;
    sop_store_options so;
    sop_store_options_init(&so);
    so.slot_length = 16;
    if (sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &e) != SOP_OK ||
        sop_store_open(t, "s", &bt, &e) != SOP_OK)
        _exit(101);
    int64_t v = get_i64(bt, "n", &rc, &e);
    if (rc != SOP_OK || put_i64(bt, "n", v + 1, &e) != SOP_OK)
        _exit(102);
    /* opened last: first in the record, so replaying it creates "a" before
     * writing the blobs of "s" */
    if (sop_store_create(t, "a", &so, &nb, &e) != SOP_OK || put_i64(nb, "x", 7, &e) != SOP_OK)
        _exit(103);
    sop__fault_kill_at(SOP__POINT_P1_DURABLE, 1);
    sop_txn_commit(t, &e);
    _exit(104); /* not reached */
}

static void late_finisher(const char *dir, const rcfg *c, int go, int fd)
{
    sop_err e;
    memset(&e, 0, sizeof(e));
    sop_db *db;
    if (open_redis(dir, c, &db, &e) != SOP_OK)
        _exit(100);
    char b = 1;
    if (write(fd, &b, 1) != 1 || read(go, &b, 1) != 1) /* ready; wait for D's death */
        _exit(101);
    sop_txn *t;
    sop_btree *bt;
    if (sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &e) != SOP_OK ||
        sop_store_open(t, "s", &bt, &e) != SOP_OK || put_i64(bt, "a005", 5, &e) != SOP_OK)
        _exit(102);
    /* its commit lock, then the redo of D's record: stop there */
    sop__fault_stop_at(SOP__POINT_P2_STORES_CREATED, 1);
    sop_rc rc = sop_txn_commit(t, &e);
    sop_txn_free(t);
    sop__fault_reset();
    if (write(fd, &e, sizeof(e)) != (ssize_t)sizeof(e))
        _exit(103);
    sop_db_close(db);
    _exit((int)rc);
}

TEST(flushed_while_finishing_a_dead_committers_commit)
{
    t_redis r;
    t_redis_start(&r, NULL);
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/late", t_tmpdir());
    make_db(dir, 20, 0, 0);
    rcfg c = {r.port, TTL_MS, 5000, 300, 0};

    int ready[2], go[2];
    CHECK(pipe(ready) == 0 && pipe(go) == 0);
    fflush(NULL);
    pid_t b = fork();
    CHECK(b >= 0);
    if (b == 0) {
        t_in_child();
        close(ready[0]);
        close(go[1]);
        late_finisher(dir, &c, go[0], ready[1]);
    }
    close(ready[1]);
    close(go[0]);
    char ch;
    CHECK(read(ready[0], &ch, 1) == 1);

    pid_t d = fork();
    CHECK(d >= 0);
    if (d == 0) {
        t_in_child();
        dead_committer(dir, &c);
    }
    int st;
    CHECK(waitpid(d, &st, 0) == d);
    CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the committer was not killed (%#x)", st);

    CHECK(write(go[1], &ch, 1) == 1);
    close(go[1]);
    wait_stopped(b);
    apply_event(&r, EV_FLUSHALL);

    sop_db *db = open_retry(dir, &c, 10000);
    int attempts;
    sop_rc prc = incr_retry(db, 15000, &attempts);
    printf("# the other commit, B stopped mid-redo: %s after %d tries\n", sop_rc_name(prc),
           attempts);
    CHECK_MSG(prc == SOP_OK || prc == SOP_BUSY || prc == SOP_TIMEOUT, "%s (%s)", sop_rc_name(prc),
              err.msg);
    sop_db_close(db);

    CHECK(kill(b, SIGCONT) == 0);
    sop_err berr;
    sop_rc brc = wait_child_rc(b, ready[0], &berr);
    printf("# B (redo of the dead one's commit, then its own): %s %s\n", sop_rc_name(brc),
           brc == SOP_OK ? "" : berr.msg);
    CHECK_MSG(brc == SOP_OK || retryable(brc), "B: %s (%s)", sop_rc_name(brc), berr.msg);

    db = open_retry(dir, &c, 10000);
    int64_t want = 1 + (prc == SOP_OK);
    CHECK_EQ(read_n(db, "n"), want);
    {
        sop_txn *t;
        sop_btree *bt;
        CHECK_OK(sop_txn_begin(db, SOP_TXN_NOCHECK, 0, &t, &err), &err);
        CHECK_OK(sop_store_open(t, "a", &bt, &err), &err); /* D's store exists */
        sop_txn_free(t);
    }
    check_clean(db);
    CHECK_OK(incr_retry(db, 10000, &attempts), &err);
    CHECK_EQ(read_n(db, "n"), want + 1);
    sop_db_close(db);
    t_redis_stop(&r);
}

/* ---- 2: a workload through flush, restart and pause ---- */

#define WORKERS  4
#define ACCOUNTS 60
#define BALANCE  1000

typedef struct wl {
    const char *dir;
    rcfg c;
    int64_t start_ms, end_ms, late_ms; /* CLOCK_MONOTONIC: shared across fork */
    uint64_t seed;
} wl;

typedef struct wstats {
    int64_t acked, late_acked, retries, unreachable, audits, audits_ok;
    char last_err[SOP_ERR_MSG_MAX];
} wstats;

/* Sums the accounts in one validated read-only transaction. */
static sop_rc audit(sop_db *db, int64_t *sum, int *n, sop_err *e)
{
    sop_txn *t;
    sop_btree *bt;
    sop_cursor *cur;
    sop_rc rc = sop_txn_begin(db, SOP_TXN_READ, 0, &t, e);
    if (rc != SOP_OK)
        return rc;
    *sum = 0;
    *n = 0;
    rc = sop_store_open(t, "s", &bt, e);
    if (rc == SOP_OK)
        rc = sop_cursor_open(bt, &cur, e);
    if (rc == SOP_OK) {
        for (rc = sop_cursor_first(cur, e); rc == SOP_OK; rc = sop_cursor_next(cur, e)) {
            sop_item it;
            if ((rc = sop_cursor_item(cur, &it, e)) != SOP_OK)
                break;
            if (((const char *)it.key)[0] != 'a')
                continue;
            int64_t v;
            memcpy(&v, it.value, 8);
            *sum += v;
            ++*n;
        }
        if (rc == SOP_NOTFOUND)
            rc = SOP_OK;
        sop_cursor_close(cur);
    }
    if (rc == SOP_OK)
        rc = sop_txn_commit(t, e);
    sop_txn_free(t);
    return rc;
}

static void wl_worker(int id, const wl *w, int fd)
{
    sop_err e;
    memset(&e, 0, sizeof(e));
    wstats s;
    memset(&s, 0, sizeof(s));
    t_rng rng;
    t_rng_seed(&rng, w->seed * 100 + (uint64_t)id);
    sop_db *db = NULL;
    /* Opens are staggered: concurrent opens race in log creation (a known
     * engine issue, unrelated to coordination). */
    while (now_ms() < w->start_ms + 80 * id)
        sleep_ms(5);
    for (;;) {
        sop_rc rc = open_redis(w->dir, &w->c, &db, &e);
        if (rc == SOP_OK)
            break;
        CHECK_MSG(retryable(rc) && now_ms() < w->end_ms, "worker %d: open: %s %s", id,
                  sop_rc_name(rc), e.msg);
        sleep_ms(20);
    }
    char mine[16];
    snprintf(mine, sizeof(mine), "w%d", id);
    for (int i = 0; now_ms() < w->end_ms; i++) {
        if (i % 25 == 0) {
            int64_t sum;
            int n;
            sop_rc rc = audit(db, &sum, &n, &e);
            s.audits++;
            if (rc == SOP_OK) {
                s.audits_ok++;
                CHECK_MSG(sum == (int64_t)ACCOUNTS * BALANCE && n == ACCOUNTS,
                          "worker %d: a validated audit saw %lld in %d accounts", id,
                          (long long)sum, n);
            } else {
                CHECK_MSG(retryable(rc), "worker %d: audit: %s %s", id, sop_rc_name(rc), e.msg);
            }
        }
        char from[16], to[16];
        int f = (int)t_rng_below(&rng, ACCOUNTS);
        int g = (int)t_rng_below(&rng, ACCOUNTS - 1);
        if (g >= f)
            g++;
        snprintf(from, sizeof(from), "a%03d", f);
        snprintf(to, sizeof(to), "a%03d", g);
        int64_t amount = (int64_t)t_rng_below(&rng, 50) + 1;
        sop_txn *t;
        sop_btree *bt;
        sop_rc rc = sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &e);
        CHECK_MSG(rc == SOP_OK, "worker %d: begin: %s %s", id, sop_rc_name(rc), e.msg);
        rc = sop_store_open(t, "s", &bt, &e);
        int64_t fb = 0, tb = 0, cnt = 0;
        if (rc == SOP_OK)
            fb = get_i64(bt, from, &rc, &e);
        if (rc == SOP_OK)
            tb = get_i64(bt, to, &rc, &e);
        if (rc == SOP_OK)
            cnt = get_i64(bt, mine, &rc, &e);
        if (rc == SOP_OK && fb >= amount) {
            rc = put_i64(bt, from, fb - amount, &e);
            if (rc == SOP_OK)
                rc = put_i64(bt, to, tb + amount, &e);
        }
        /* every acknowledged commit counts exactly once */
        if (rc == SOP_OK)
            rc = put_i64(bt, mine, cnt + 1, &e);
        if (rc == SOP_OK)
            rc = sop_txn_commit(t, &e);
        sop_txn_free(t);
        if (rc == SOP_OK) {
            s.acked++;
            if (now_ms() >= w->late_ms)
                s.late_acked++;
        } else {
            CHECK_MSG(retryable(rc), "worker %d: transfer: %s %s", id, sop_rc_name(rc), e.msg);
            s.retries++;
            if (rc == SOP_UNREACHABLE)
                s.unreachable++;
            snprintf(s.last_err, sizeof(s.last_err), "%s", e.msg);
            sleep_ms(1 + (int)t_rng_below(&rng, 5));
        }
    }
    sop_db_close(db);
    CHECK(write(fd, &s, sizeof(s)) == (ssize_t)sizeof(s));
    _exit(0);
}

TEST(workload_through_flush_restart_pause)
{
    t_redis r;
    t_redis_start(&r, NULL);
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/bank", t_tmpdir());
    make_db(dir, ACCOUNTS, BALANCE, WORKERS);
    /* a small checkpoint size: checkpoints run while locks are lost too */
    rcfg c = {r.port, 1000, 5000, 300, 128u << 10};
    int64_t t0 = now_ms() + 300;
    wl w = {dir, c, t0, t0 + 7500, t0 + 6500, t_seed()}; /* late: after the storm */

    pid_t pids[WORKERS];
    int fds[WORKERS];
    fflush(NULL);
    for (int i = 0; i < WORKERS; i++) {
        int p[2];
        CHECK(pipe(p) == 0);
        pids[i] = fork();
        CHECK(pids[i] >= 0);
        if (pids[i] == 0) {
            t_in_child();
            close(p[0]);
            for (int j = 0; j < i; j++)
                close(fds[j]);
            wl_worker(i, &w, p[1]);
        }
        close(p[1]);
        fds[i] = p[0];
    }

    /* the events, while the workers commit; then a storm of FLUSHALLs
     * (every lock lost every few ms: holders overlap all the time) */
    static const struct {
        int at_ms;
        event ev;
    } plan[] = {{1000, EV_FLUSHALL}, {2000, EV_RESTART}, {3000, EV_PAUSE}, {5000, EV_RESTART}};
    for (size_t i = 0; i < sizeof(plan) / sizeof(plan[0]); i++) {
        int64_t wait = t0 + plan[i].at_ms - now_ms();
        if (wait > 0)
            sleep_ms((int)wait);
        apply_event(&r, plan[i].ev);
        printf("# %5lld ms: %s\n", (long long)(now_ms() - t0), event_name(plan[i].ev));
    }
    int storm = 0;
    if (t0 + 5500 > now_ms())
        sleep_ms((int)(t0 + 5500 - now_ms()));
    redisContext *side = t_redis_connect(&r, NULL);
    while (now_ms() < t0 + 6500) {
        redisReply *rep = redisCommand(side, "FLUSHALL");
        CHECK_MSG(rep && rep->type != REDIS_REPLY_ERROR, "FLUSHALL: %s",
                  rep ? rep->str : side->errstr);
        freeReplyObject(rep);
        storm++;
        sleep_ms(10);
    }
    redisFree(side);
    printf("# %5lld ms: %d FLUSHALLs since 5500 ms\n", (long long)(now_ms() - t0), storm);

    wstats s[WORKERS];
    int64_t acked = 0, late = 0, retries = 0;
    for (int i = 0; i < WORKERS; i++) {
        int st;
        CHECK(waitpid(pids[i], &st, 0) == pids[i]);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d ended with status %#x", i, st);
        CHECK(read(fds[i], &s[i], sizeof(s[i])) == (ssize_t)sizeof(s[i]));
        close(fds[i]);
        acked += s[i].acked;
        late += s[i].late_acked;
        retries += s[i].retries;
        printf("# worker %d: %lld acknowledged (%lld in the last second), %lld retries (%lld "
               "unreachable), %lld/%lld audits validated%s%s\n",
               i, (long long)s[i].acked, (long long)s[i].late_acked, (long long)s[i].retries,
               (long long)s[i].unreachable, (long long)s[i].audits_ok, (long long)s[i].audits,
               s[i].last_err[0] ? "; last retry: " : "", s[i].last_err);
    }
    printf("# workload: %lld acknowledged commits in %lld ms, %lld retries\n", (long long)acked,
           (long long)(w.end_ms - w.start_ms), (long long)retries);
    CHECK_MSG(late > 0, "no commit was acknowledged after the last event");

    sop_db *db = open_retry(dir, &c, 10000);
    int64_t sum;
    int n;
    CHECK_OK(audit(db, &sum, &n, &err), &err);
    CHECK_EQ(n, ACCOUNTS);
    CHECK_EQ(sum, (int64_t)ACCOUNTS * BALANCE);
    for (int i = 0; i < WORKERS; i++) {
        char k[16];
        snprintf(k, sizeof(k), "w%d", i);
        int64_t got = read_n(db, k);
        CHECK_MSG(got == s[i].acked, "worker %d: counter %lld, %lld acknowledged commits", i,
                  (long long)got, (long long)s[i].acked);
    }
    check_clean(db);
    int attempts;
    CHECK_OK(incr_retry(db, 10000, &attempts), &err);
    CHECK_EQ(read_n(db, "n"), 1);
    sop_db_close(db);
    t_redis_stop(&r);
}
