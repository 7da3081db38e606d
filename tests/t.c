/*
 * t.c - runner for tests written with t.h (see there for the contract).
 */
#include "t.h"

#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define T_MAX 512

static struct {
    const char *name;
    t_fn fn;
} tests[T_MAX];
static int ntests;
static jmp_buf jump;
static char why[1024];
static char tmpdir[4096];

void t_register(const char *name, t_fn fn)
{
    if (ntests == T_MAX) {
        fprintf(stderr, "t: too many tests\n");
        exit(2);
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
}

static bool in_child;

void t_in_child(void)
{
    in_child = true;
}

void t_fail(const char *file, int line, const char *fmt, ...)
{
    int n = snprintf(why, sizeof(why), "%s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + n, sizeof(why) - (size_t)n, fmt, ap);
    va_end(ap);
    if (in_child) {
        fprintf(stderr, "child: %s\n", why);
        _exit(2);
    }
    longjmp(jump, 1);
}

void t_skip(const char *reason)
{
    snprintf(why, sizeof(why), "%s", reason);
    longjmp(jump, 2);
}

uint64_t t_seed(void)
{
    const char *env = getenv("SOP_TEST_SEED");
    uint64_t seed;
    if (env && *env) {
        seed = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    printf("#   seed %" PRIu64 " (replay: SOP_TEST_SEED=%" PRIu64 ")\n", seed, seed);
    fflush(stdout);
    return seed;
}

const char *t_errmsg(const sop_err *err)
{
    return err ? err->msg : "";
}

bool t_long(void)
{
    const char *env = getenv("SOP_TEST_LONG");
    return env && strcmp(env, "1") == 0;
}

const char *t_tmpdir(void)
{
    if (tmpdir[0])
        return tmpdir;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/soptest.XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(tmpdir) == NULL)
        t_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
    return tmpdir;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void t_rng_seed(t_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) { /* splitmix64 */
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

uint64_t t_rng_next(t_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return result;
}

uint64_t t_rng_below(t_rng *r, uint64_t n)
{
    return n ? t_rng_next(r) % n : 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    const char *filter = argc > 1 ? argv[1] : NULL;
    static int passed, failed, skipped; /* static: survive the longjmp */
    setvbuf(stdout, NULL, _IOLBF, 0);
    static int i;
    for (i = 0; i < ntests; i++) {
        if (filter && !strstr(tests[i].name, filter))
            continue;
        tmpdir[0] = '\0';
        double t0 = now_ms();
        int r = setjmp(jump);
        if (r == 0) {
            tests[i].fn();
            printf("ok - %s (%.0f ms)\n", tests[i].name, now_ms() - t0);
            passed++;
        } else if (r == 1) {
            printf("FAIL - %s: %s\n", tests[i].name, why);
            failed++;
        } else {
            printf("skip - %s: %s\n", tests[i].name, why);
            skipped++;
        }
        if (tmpdir[0] && r != 1)
            nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        else if (tmpdir[0])
            printf("#   kept %s\n", tmpdir);
    }
    printf("# %s: %d passed, %d failed", prog, passed, failed);
    if (skipped)
        printf(", %d skipped", skipped);
    printf("\n");
    return failed ? 1 : 0;
}
