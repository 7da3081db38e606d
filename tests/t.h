/*
 * t.h - the engine's unit-test framework.
 *
 * A test file defines tests with TEST(name) { ... } and links t.o, which has
 * main(). Each binary runs its tests in definition order (or those whose name
 * contains argv[1]), prints "ok - name (ms)" or "FAIL - name: file:line: why"
 * per test and a last line "<binary>: N passed, N failed[, N skipped]"; it
 * exits 1 if any test failed. tests/run adds the binaries up.
 *
 * CHECK* abort the current test (longjmp back to the runner) and count it
 * failed; T_SKIP("why") ends it as skipped. Randomised tests take their seed
 * from t_seed(), which prints it and honours SOP_TEST_SEED for replays.
 */
#ifndef SOP_T_H
#define SOP_T_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sop.h"

typedef void (*t_fn)(void);
void t_register(const char *name, t_fn fn);
_Noreturn void t_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
_Noreturn void t_skip(const char *why);
/* In a fork()ed child: a failing CHECK prints its message and _exit(2)s
 * instead of returning into the parent's copy of the runner. */
void t_in_child(void);
/* Seed for a randomised test: SOP_TEST_SEED if set, else time-based; printed. */
uint64_t t_seed(void);
/* err->msg, or "" for NULL. */
const char *t_errmsg(const sop_err *err);
/* true when SOP_TEST_LONG=1 (make test-long): use the large sizes. */
bool t_long(void);
/* A fresh empty directory under $TMPDIR for this test; removed if it passes. */
const char *t_tmpdir(void);
/* Database helpers for tests: a new database folder (default options) under
 * t_tmpdir(), in a static buffer the next call reuses; sop_db_open with
 * default options; sop_db_check finding no problem (returns the blob files
 * it saw). Each fails the current test on error. */
const char *t_db_fresh(void);
sop_db *t_db_open(const char *dir);
uint64_t t_db_check_clean(sop_db *db);

/* xoshiro256** - a small, fast, seedable PRNG for tests. */
typedef struct t_rng {
    uint64_t s[4];
} t_rng;
void t_rng_seed(t_rng *r, uint64_t seed);
uint64_t t_rng_next(t_rng *r);
/* uniform in [0, n) */
uint64_t t_rng_below(t_rng *r, uint64_t n);

/*
 * A private redis-server for one test (coordination tests, the bank test).
 *
 * t_redis_start picks a free port on 127.0.0.1 and runs
 *   redis-server --port P --bind 127.0.0.1 --save '' --appendonly no
 *                --dir <t_tmpdir()> <extra_args>
 * extra_args: NULL, or words separated by spaces (no quoting), e.g.
 * "--requirepass secret" or "--user alice on >pw ~* &* +@all". It returns
 * once the server answers PING (at most 5 s). Any failure fails the current
 * test: redis-server not installed (CI installs it: a missing one is an
 * error, never a skip), the server exiting (its output is in
 * <t_tmpdir()>/redis-<port>.log, whose last line the message quotes), no
 * answer in time.
 *
 * t_redis_stop sends SIGTERM and waits (SIGKILL after 5 s); a stopped
 * t_redis can be started again. t_redis_restart stops the server and starts
 * a new one on the same port with the same arguments: empty, with a new
 * run_id, and every client connection broken. Servers still running when a
 * test ends (a failed CHECK) are killed by the runner, and the kernel kills
 * them if the test process dies (PR_SET_PDEATHSIG: start them from the
 * test's main thread). At most 8 at once.
 *
 * t_redis_connect gives a plain hiredis connection to it (AUTH with
 * `password` if not NULL), for commands a test issues on the side
 * (FLUSHALL, CLIENT PAUSE...); the test fails if it cannot connect. Free it
 * with redisFree. Tests that use it include <hiredis/hiredis.h>.
 */
typedef struct t_redis {
    int pid;       /* 0 when not running */
    uint16_t port; /* kept across stop/restart */
    char extra[512];
    char log[4200];
} t_redis;
void t_redis_start(t_redis *r, const char *extra_args);
void t_redis_stop(t_redis *r);
void t_redis_restart(t_redis *r);
struct redisContext;
struct redisContext *t_redis_connect(const t_redis *r, const char *password);
/* A port on 127.0.0.1 nothing listens on (just now). */
uint16_t t_free_port(void);

#define TEST(name)                                                                                 \
    static void name(void);                                                                        \
    __attribute__((constructor)) static void t_reg_##name(void)                                    \
    {                                                                                              \
        t_register(#name, name);                                                                   \
    }                                                                                              \
    static void name(void)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            t_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            t_fail(__FILE__, __LINE__, __VA_ARGS__);                                               \
    } while (0)

#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);                                    \
        if (t_a_ != t_b_)                                                                          \
            t_fail(__FILE__, __LINE__, "%s == %lld, expected %s == %lld", #a, t_a_, #b, t_b_);     \
    } while (0)

/* Expect a sop_rc; on mismatch print both names and the error message. */
#define CHECK_RC(expr, want, errp)                                                                 \
    do {                                                                                           \
        sop_rc t_rc_ = (expr);                                                                     \
        if (t_rc_ != (want))                                                                       \
            t_fail(__FILE__, __LINE__, "%s returned %s, expected %s (%s)", #expr,                  \
                   sop_rc_name(t_rc_), sop_rc_name(want), t_errmsg(errp));                         \
    } while (0)

#define CHECK_OK(expr, errp) CHECK_RC(expr, SOP_OK, errp)

#define T_SKIP(why) t_skip(why)

#endif
