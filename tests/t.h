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

/* xoshiro256** - a small, fast, seedable PRNG for tests. */
typedef struct t_rng {
    uint64_t s[4];
} t_rng;
void t_rng_seed(t_rng *r, uint64_t seed);
uint64_t t_rng_next(t_rng *r);
/* uniform in [0, n) */
uint64_t t_rng_below(t_rng *r, uint64_t n);

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
