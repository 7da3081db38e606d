/*
 * bench.c - the driver of `make bench` (docs/bench/results.md, notes.md).
 *
 * Runs workloads W1..W7 on every configuration (our engine at three slot
 * lengths, over local and Redis coordination; LMDB; SQLite FULL and NORMAL;
 * RocksDB) and W8 (erasure coding), `reps` times, and appends one CSV line
 * per (rep, config, workload) to --csv. `bench --report CSV` (report.c)
 * turns the lines into results.md.
 *
 * Fairness rules, the same for every engine:
 *  - one seeded PRNG; every order (permutations, range starts, new keys) is
 *    built before any timing and shared;
 *  - keys are 16 bytes, key(i) = BE64(i) | BE64(mix(i ^ seed)), so byte order
 *    is the order of i; the loaded set is the even indices, W6/W7 insert odd
 *    ones (new keys at random places that never collide);
 *  - values are 100 incompressible bytes cut from one random pool;
 *  - every answer is checked (a wrong answer voids the run, exit 2);
 *  - each configuration and repetition runs in a child process of its own
 *    (our L1 cache is process-wide, LMDB forbids fork with an open env,
 *    RocksDB locks its folder), repetitions interleaved across configs;
 *  - sync(2) before every timed write phase, so one config's dirty pages are
 *    not flushed during the next one's commits;
 *  - the same cache budget (--cache-mb) for every engine that has a cache.
 * A phase that reaches --cap seconds stops and reports the rate over what it
 * did, flagged `capped` (W1 never: the reads need every key).
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sop.h"

/* RocksDB is single-process: W7 runs as two threads over two handles that
 * share one database (eng_rocksdb.c). */
eng *eng_rocksdb_clone(eng *e);
void eng_rocksdb_unclone(eng *e);

int bench_w8(const char *dir, uint64_t n, int rep, FILE *csv, double cap_s);
int bench_report(const char *csv, const char *md, const char *dat, const char *pgdat);

/* ---- options ---- */

static struct {
    uint64_t n;
    int reps;
    const char *dir, *csv, *configs, *only;
    double w6_secs, w7_secs, cap_s;
    uint64_t cache_bytes;
    uint64_t seed;
    uint16_t redis_port;
} opt = {
    .n = 1000000,
    .reps = 3,
    .dir = "build/bench/tmp",
    .csv = "build/bench/raw.csv",
    .w6_secs = 10,
    .w7_secs = 5,
    .cap_s = 15,
    .cache_bytes = 256ull << 20,
    .seed = 42,
    .redis_port = 0,
};

void b_fail(const char *engine, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: %s: ", engine);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* ---- configurations ---- */

#define W(n)  (1u << (n))
#define W_ALL (W(1) | W(2) | W(3) | W(4) | W(5) | W(6) | W(7))

typedef struct config {
    const char *name;
    const eng_ops *ops;
    uint32_t slot_length;
    bool redis;
    int sync_mode;
    unsigned workloads;
} config;

static const config configs[] = {
    {"sop-64", &eng_sop_ops, 64, false, 0, W_ALL},
    {"sop-500", &eng_sop_ops, 500, false, 0, W_ALL},
    {"sop-2000", &eng_sop_ops, 2000, false, 0, W_ALL},
    /* W1 only loads the tree W6 and W7 write into */
    {"sop-500-redis", &eng_sop_ops, 500, true, 0, W(1) | W(6) | W(7)},
    {"lmdb", &eng_lmdb_ops, 0, false, 0, W_ALL},
    {"sqlite-full", &eng_sqlite_ops, 0, false, 2, W_ALL},
    /* not durable per commit: no reads (the same file and code as FULL) */
    {"sqlite-normal", &eng_sqlite_ops, 0, false, 1, W(1) | W(2) | W(6) | W(7)},
    {"rocksdb", &eng_rocksdb_ops, 0, false, 0, W_ALL},
};
#define NCONFIGS (sizeof configs / sizeof configs[0])

static bool listed(const char *list, const char *name)
{
    if (list == NULL || *list == '\0')
        return true;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0)
            return true;
        p += len + (end != NULL);
    }
    return false;
}

static bool wanted(const config *c, int w)
{
    char name[8];
    snprintf(name, sizeof name, "W%d", w);
    return (c->workloads & W(w)) && listed(opt.only, name);
}

/* ---- keys, values, orders ---- */

uint64_t b_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t rng_s[4];

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void) /* xoshiro256** */
{
    uint64_t r = rotl(rng_s[1] * 5, 7) * 9, t = rng_s[1] << 17;
    rng_s[2] ^= rng_s[0];
    rng_s[3] ^= rng_s[1];
    rng_s[1] ^= rng_s[2];
    rng_s[0] ^= rng_s[3];
    rng_s[2] ^= t;
    rng_s[3] = rotl(rng_s[3], 45);
    return r;
}

static uint64_t rng_below(uint64_t n)
{
    return n ? rng_next() % n : 0;
}

static void rng_seed(uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        rng_s[i] = seed = b_mix(seed + (uint64_t)i);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void make_key(uint64_t i, uint8_t k[B_KEY_LEN])
{
    put_be64(k, i);
    put_be64(k + 8, b_mix(i ^ opt.seed));
}

#define POOL_LEN (1u << 20)
static uint8_t *pool;

static const uint8_t *value_of(uint64_t i)
{
    return pool + b_mix(i ^ 0x5bd1e995u) % (POOL_LEN - 128);
}

static uint32_t *perm_new(uint64_t n)
{
    uint32_t *p = malloc(n * sizeof *p);
    if (p == NULL)
        die("no memory for a permutation of %" PRIu64, n);
    for (uint64_t i = 0; i < n; i++)
        p[i] = (uint32_t)i;
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = rng_below(i);
        uint32_t t = p[i - 1];
        p[i - 1] = p[j];
        p[j] = t;
    }
    return p;
}

static struct {
    uint32_t *w2;     /* W2 insert order */
    uint32_t *w3;     /* W3 lookup order */
    uint32_t *w5;     /* W5 range starts */
    uint32_t *fresh;  /* odd keys 2*fresh[i]+1: W6 from 0, W7 from n/2 */
    uint64_t nranges; /* W5 scans */
} ord;

static void orders_build(void)
{
    rng_seed(opt.seed);
    pool = malloc(POOL_LEN);
    if (pool == NULL)
        die("no memory");
    for (size_t i = 0; i < POOL_LEN; i += 8) {
        uint64_t r = rng_next();
        memcpy(pool + i, &r, 8);
    }
    ord.w2 = perm_new(opt.n);
    ord.w3 = perm_new(opt.n);
    ord.fresh = perm_new(opt.n);
    ord.nranges = opt.n / 100 ? opt.n / 100 : 1;
    ord.w5 = malloc(ord.nranges * sizeof *ord.w5);
    if (ord.w5 == NULL)
        die("no memory");
    for (uint64_t i = 0; i < ord.nranges; i++)
        ord.w5[i] = (uint32_t)rng_below(opt.n > 100 ? opt.n - 99 : 1);
}

/* ---- clocks, I/O counters, results ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void io_bytes(uint64_t *rd, uint64_t *wr)
{
    *rd = *wr = 0;
    FILE *f = fopen("/proc/self/io", "r");
    if (f == NULL)
        return;
    char line[128];
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "read_bytes: %llu", &v) == 1)
            *rd = v;
        else if (sscanf(line, "write_bytes: %llu", &v) == 1)
            *wr = v;
    }
    fclose(f);
}

typedef struct result {
    uint64_t ops;
    double secs, setup_s;
    bool capped;
    uint64_t rd0, wr0, rd1, wr1;
    double p50_us, p99_us;
    uint64_t retries;
    char note[96];
} result;

static FILE *csv;

static void result_start(result *r)
{
    memset(r, 0, sizeof *r);
    r->p50_us = r->p99_us = -1;
    io_bytes(&r->rd0, &r->wr0);
}

static void emit(int rep, const char *cfg, const char *w, result *r)
{
    io_bytes(&r->rd1, &r->wr1);
    double rate = r->secs > 0 ? (double)r->ops / r->secs : 0;
    double ops = r->ops ? (double)r->ops : 1;
    fprintf(csv, "%d,%s,%s,%" PRIu64 ",%.6f,%.1f,%d,%.3f,%.1f,%.1f,", rep, cfg, w, r->ops, r->secs,
            rate, r->capped, r->setup_s, (double)(r->wr1 - r->wr0) / ops,
            (double)(r->rd1 - r->rd0) / ops);
    if (r->p50_us >= 0)
        fprintf(csv, "%.1f,%.1f,", r->p50_us, r->p99_us);
    else
        fputs(",,", csv);
    fprintf(csv, "%" PRIu64 ",%s\n", r->retries, r->note);
    fflush(csv);
    fprintf(stderr, "  rep %d %-14s %-3s %12.0f ops/s %8.2f s%s\n", rep, cfg, w, rate, r->secs,
            r->capped ? " (capped)" : "");
}

/* ---- the workloads ---- */

typedef struct run {
    const config *c;
    eng_cfg ec;
    eng *e;
    int rep;
    char dir[4096];
} run;

static void check(int rc, const run *r, const char *what)
{
    if (rc != B_OK)
        die("%s: %s failed (rc %d)", r->c->name, what, rc);
}

/* One write transaction of keys idx[0..n) (indices into the key space),
 * redone while the engine asks for a retry. */
static uint64_t write_txn(const run *r, eng *e, const uint64_t *idx, size_t n)
{
    uint64_t retries = 0;
    for (;;) {
        uint8_t k[B_KEY_LEN];
        int rc = r->c->ops->wbegin(e);
        if (rc == B_RETRY) {
            retries++;
            continue;
        }
        check(rc, r, "begin");
        size_t i;
        for (i = 0; i < n; i++) {
            make_key(idx[i], k);
            rc = r->c->ops->put(e, k, B_KEY_LEN, value_of(idx[i]), B_VAL_LEN);
            if (rc != B_OK)
                break;
        }
        if (rc == B_OK)
            rc = r->c->ops->wcommit(e);
        if (rc == B_RETRY) {
            retries++;
            continue;
        }
        check(rc, r, "put/commit");
        return retries;
    }
}

/* W1 / W2: n keys 2*order(i), 1000 per transaction. */
__attribute__((noinline)) static void phase_load(run *r, const uint32_t *order, bool cap,
                                                 result *res)
{
    uint64_t idx[1000];
    double t0 = now_s(), deadline = t0 + opt.cap_s;
    uint64_t done = 0;
    while (done < opt.n) {
        size_t b = opt.n - done < 1000 ? (size_t)(opt.n - done) : 1000;
        for (size_t i = 0; i < b; i++)
            idx[i] = 2 * (uint64_t)(order ? order[done + i] : done + i);
        res->retries += write_txn(r, r->e, idx, b);
        done += b;
        if (cap && done < opt.n && now_s() > deadline) {
            res->capped = true;
            break;
        }
    }
    res->secs = now_s() - t0;
    res->ops = done;
}

static void check_value(const run *r, uint64_t i, const uint8_t *v, size_t vl)
{
    if (vl != B_VAL_LEN || memcmp(v, value_of(i), B_VAL_LEN) != 0)
        die("%s: wrong value for key %" PRIu64, r->c->name, i);
}

/* W3: N gets of loaded keys in random order, 1000 per read transaction. */
__attribute__((noinline)) static void phase_w3(run *r, uint64_t n, result *res)
{
    const eng_ops *o = r->c->ops;
    double t0 = now_s(), deadline = t0 + opt.cap_s;
    uint64_t done = 0;
    while (done < n) {
        check(o->rbegin(r->e), r, "read begin");
        uint64_t end = done + 1000 < n ? done + 1000 : n;
        for (; done < end; done++) {
            uint8_t k[B_KEY_LEN];
            uint64_t i = 2 * (uint64_t)ord.w3[done % opt.n];
            make_key(i, k);
            const uint8_t *v;
            size_t vl;
            if (o->get(r->e, k, B_KEY_LEN, &v, &vl) != B_OK)
                die("%s: key %" PRIu64 " not found", r->c->name, i);
            check_value(r, i, v, vl);
        }
        check(o->rend(r->e), r, "read end");
        if (res && done < n && now_s() > deadline) {
            res->capped = true;
            break;
        }
    }
    if (res) {
        res->secs = now_s() - t0;
        res->ops = done;
    }
}

/* Reads `want` items from the iterator's position on (all when want is 0),
 * checking order and, when `first` is not UINT64_MAX, that the items are
 * exactly the loaded keys first, first+2, ... Returns the count. */
static uint64_t walk(const run *r, uint64_t want, uint64_t first, bool loaded_only)
{
    const eng_ops *o = r->c->ops;
    uint64_t count = 0, prev = 0;
    for (;;) {
        const uint8_t *k, *v;
        size_t kl, vl;
        o->it_cur(r->e, &k, &kl, &v, &vl);
        if (k == NULL || kl != B_KEY_LEN)
            die("%s: bad key in a scan", r->c->name);
        uint64_t i = get_be64(k);
        if (count > 0 && i <= prev)
            die("%s: scan out of order at %" PRIu64, r->c->name, i);
        if (first != UINT64_MAX && i != first + 2 * count)
            die("%s: scan from %" PRIu64 " found %" PRIu64 " as item %" PRIu64, r->c->name, first,
                i, count);
        if (loaded_only && (i & 1))
            die("%s: unexpected key %" PRIu64, r->c->name, i);
        check_value(r, i, v, vl);
        prev = i;
        if (++count == want)
            break;
        int rc = o->it_next(r->e);
        if (rc == 1)
            break;
        if (rc != B_OK)
            die("%s: scan failed after %" PRIu64 " items", r->c->name, count);
    }
    return count;
}

/* W4: one full ordered scan. */
__attribute__((noinline)) static uint64_t phase_w4(run *r, bool loaded_only)
{
    const eng_ops *o = r->c->ops;
    check(o->rbegin(r->e), r, "read begin");
    int rc = o->it_seek(r->e, NULL, 0);
    uint64_t count = rc == B_OK ? walk(r, 0, loaded_only ? 0 : UINT64_MAX, loaded_only) : 0;
    if (rc != B_OK && rc != 1)
        die("%s: seek failed", r->c->name);
    o->it_close(r->e);
    check(o->rend(r->e), r, "read end");
    return count;
}

/* W5: N/100 scans of 100 items from random loaded keys, 100 scans per read
 * transaction. */
__attribute__((noinline)) static void phase_w5(run *r, result *res)
{
    const eng_ops *o = r->c->ops;
    double t0 = now_s(), deadline = t0 + opt.cap_s;
    uint64_t done = 0, want = opt.n < 100 ? opt.n : 100;
    while (done < ord.nranges) {
        check(o->rbegin(r->e), r, "read begin");
        uint64_t end = done + 100 < ord.nranges ? done + 100 : ord.nranges;
        for (; done < end; done++) {
            uint8_t k[B_KEY_LEN];
            uint64_t first = 2 * (uint64_t)ord.w5[done];
            make_key(first, k);
            if (o->it_seek(r->e, k, B_KEY_LEN) != B_OK)
                die("%s: range seek failed", r->c->name);
            if (walk(r, want, first, true) != want)
                die("%s: short range scan from %" PRIu64, r->c->name, first);
        }
        o->it_close(r->e);
        check(o->rend(r->e), r, "read end");
        if (done < ord.nranges && now_s() > deadline) {
            res->capped = true;
            break;
        }
    }
    res->secs = now_s() - t0;
    res->ops = done;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* W6: single-item durable commits of new keys for `secs`; latencies. */
__attribute__((noinline)) static void phase_w6(run *r, result *res)
{
    uint64_t max = opt.n / 2;
    size_t cap_lat = (size_t)(opt.w6_secs * 100000) + 16;
    double *lat = malloc(cap_lat * sizeof *lat);
    if (lat == NULL)
        die("no memory");
    double t0 = now_s(), deadline = t0 + opt.w6_secs, t = t0;
    uint64_t done = 0;
    while (done < max && t < deadline) {
        uint64_t idx = 2 * (uint64_t)ord.fresh[done] + 1;
        res->retries += write_txn(r, r->e, &idx, 1);
        double t1 = now_s();
        if (done < cap_lat)
            lat[done] = (t1 - t) * 1e6;
        t = t1;
        done++;
    }
    res->secs = t - t0;
    res->ops = done;
    size_t nl = done < cap_lat ? (size_t)done : cap_lat;
    if (nl) {
        qsort(lat, nl, sizeof *lat, cmp_double);
        res->p50_us = lat[nl / 2];
        res->p99_us = lat[nl * 99 / 100];
    }
    free(lat);
}

/* W7: a writer (process or thread) committing odd keys fresh[base + 2j + p]
 * until the deadline. */
typedef struct writer {
    const run *r;
    eng *e;
    int p;
    double deadline;
    uint64_t commits, retries;
} writer;

static void *writer_loop(void *arg)
{
    writer *w = arg;
    uint64_t base = opt.n / 2, max = (opt.n - base) / 2;
    while (w->commits < max && now_s() < w->deadline) {
        uint64_t idx = 2 * (uint64_t)ord.fresh[base + 2 * w->commits + (uint64_t)w->p] + 1;
        w->retries += write_txn(w->r, w->e, &idx, 1);
        w->commits++;
    }
    return NULL;
}

static void full_read(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t got = read(fd, p, n);
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            die("a W7 writer died (pipe read: %s)", got ? strerror(errno) : "end of file");
        }
        p += got;
        n -= (size_t)got;
    }
}

static void full_write(int fd, const void *buf, size_t n)
{
    if (write(fd, buf, n) != (ssize_t)n)
        die("pipe write: %s", strerror(errno));
}

/* Two writer processes, each opening the database itself; both start when
 * both are ready. The caller's handle is closed meanwhile. */
__attribute__((noinline)) static void phase_w7(run *r, result *res)
{
    writer w[2] = {{.r = r, .p = 0}, {.r = r, .p = 1}};
    double t0;
    if (r->c->ops->caps & CAP_THREADS) {
        w[0].e = r->e;
        w[1].e = eng_rocksdb_clone(r->e);
        if (w[1].e == NULL)
            die("%s: clone failed", r->c->name);
        pthread_t th[2];
        t0 = now_s();
        for (int p = 0; p < 2; p++) {
            w[p].deadline = t0 + opt.w7_secs;
            if (pthread_create(&th[p], NULL, writer_loop, &w[p]) != 0)
                die("pthread_create failed");
        }
        for (int p = 0; p < 2; p++)
            pthread_join(th[p], NULL);
        eng_rocksdb_unclone(w[1].e);
        snprintf(res->note, sizeof res->note, "2 threads over one handle (single-process engine)");
    } else {
        r->c->ops->close(r->e);
        r->e = NULL;
        int ready[2], go[2], back[2];
        if (pipe(ready) || pipe(go) || pipe(back))
            die("pipe: %s", strerror(errno));
        pid_t pid[2];
        fflush(NULL);
        for (int p = 0; p < 2; p++) {
            pid[p] = fork();
            if (pid[p] < 0)
                die("fork: %s", strerror(errno));
            if (pid[p] == 0) {
                if (r->c->ops->open(&w[p].e, &r->ec, false) != B_OK)
                    _exit(3);
                char b = 'r';
                full_write(ready[1], &b, 1);
                double deadline;
                full_read(go[0], &deadline, sizeof deadline);
                w[p].deadline = deadline;
                writer_loop(&w[p]);
                uint64_t out[2] = {w[p].commits, w[p].retries};
                r->c->ops->close(w[p].e);
                full_write(back[1], out, sizeof out);
                _exit(0);
            }
        }
        char b[2];
        full_read(ready[0], b, 2);
        t0 = now_s();
        double deadline = t0 + opt.w7_secs;
        for (int p = 0; p < 2; p++)
            full_write(go[1], &deadline, sizeof deadline);
        for (int p = 0; p < 2; p++) {
            uint64_t in[2];
            full_read(back[0], in, sizeof in);
            w[p].commits = in[0];
            w[p].retries = in[1];
        }
        for (int p = 0; p < 2; p++) {
            int st;
            waitpid(pid[p], &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                die("%s: a W7 writer failed", r->c->name);
        }
        close(ready[0]);
        close(ready[1]);
        close(go[0]);
        close(go[1]);
        close(back[0]);
        close(back[1]);
        snprintf(res->note, sizeof res->note, "2 processes");
        check(r->c->ops->open(&r->e, &r->ec, false), r, "reopen");
    }
    res->secs = now_s() - t0;
    res->ops = w[0].commits + w[1].commits;
    res->retries = w[0].retries + w[1].retries;
}

/* ---- one configuration, one repetition ---- */

static void rmrf(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        die("cannot remove %s", dir);
}

static void fresh_dir(run *r, const char *suffix)
{
    snprintf(r->dir, sizeof r->dir, "%s/%s-r%d%s", opt.dir, r->c->name, r->rep, suffix);
    rmrf(r->dir);
    if (mkdir(r->dir, 0700) != 0)
        die("mkdir %s: %s", r->dir, strerror(errno));
    r->ec.dir = r->dir;
}

static void reopen(run *r, result *res)
{
    double t0 = now_s();
    r->c->ops->close(r->e);
    check(r->c->ops->open(&r->e, &r->ec, false), r, "reopen");
    check(r->c->ops->settle(r->e), r, "settle");
    res->setup_s += now_s() - t0;
}

static void run_config(const config *c, int rep)
{
    run r = {.c = c, .rep = rep};
    r.ec.cache_bytes = opt.cache_bytes;
    r.ec.slot_length = c->slot_length;
    r.ec.redis = c->redis;
    r.ec.redis_port = opt.redis_port;
    r.ec.sync_mode = c->sync_mode;
    result res;
    uint64_t extra = 0; /* keys added by W6 and W7 */

    if (wanted(c, 2)) { /* W2 first, in a folder of its own, then removed */
        fresh_dir(&r, "-w2");
        check(c->ops->open(&r.e, &r.ec, true), &r, "create");
        sync();
        result_start(&res);
        phase_load(&r, ord.w2, true, &res);
        emit(rep, c->name, "W2", &res);
        c->ops->close(r.e);
        rmrf(r.dir);
    }
    if (!(c->workloads & W(1)))
        return;
    fresh_dir(&r, "");
    check(c->ops->open(&r.e, &r.ec, true), &r, "create");
    sync();
    result_start(&res);
    phase_load(&r, NULL, false, &res);
    if (wanted(c, 1))
        emit(rep, c->name, "W1", &res);

    if (wanted(c, 3) || wanted(c, 4) || wanted(c, 5)) {
        /* warm: reopen, settle, one full scan and N/10 gets, untimed */
        result warm = {0};
        reopen(&r, &warm);
        double t0 = now_s();
        if (phase_w4(&r, true) != opt.n)
            die("%s: the warm-up scan did not find %" PRIu64 " keys", c->name, opt.n);
        phase_w3(&r, opt.n / 10, NULL);
        double warm_s = now_s() - t0;
        if (wanted(c, 3)) {
            result_start(&res);
            res.setup_s = warm.setup_s + warm_s;
            phase_w3(&r, opt.n, &res);
            emit(rep, c->name, "W3", &res);
        }
        if (wanted(c, 4)) {
            result_start(&res);
            double t = now_s();
            res.ops = phase_w4(&r, true);
            res.secs = now_s() - t;
            if (res.ops != opt.n)
                die("%s: W4 found %" PRIu64 " of %" PRIu64 " keys", c->name, res.ops, opt.n);
            emit(rep, c->name, "W4", &res);
        }
        if (wanted(c, 5)) {
            result_start(&res);
            phase_w5(&r, &res);
            emit(rep, c->name, "W5", &res);
        }
    }
    if (wanted(c, 6)) {
        sync();
        result_start(&res);
        phase_w6(&r, &res);
        extra += res.ops;
        emit(rep, c->name, "W6", &res);
    }
    if (wanted(c, 7)) {
        sync();
        result_start(&res);
        phase_w7(&r, &res);
        extra += res.ops;
        emit(rep, c->name, "W7", &res);
    }
    if (extra) { /* every commit is there, untimed */
        uint64_t have = phase_w4(&r, false);
        if (have != opt.n + extra)
            die("%s: %" PRIu64 " keys after W6/W7, expected %" PRIu64, c->name, have,
                opt.n + extra);
    }
    c->ops->close(r.e);
    rmrf(r.dir);
}

/* ---- main ---- */

static void usage(void)
{
    fputs("usage: bench [--n N] [--reps R] [--dir DIR] [--csv FILE] [--config a,b] [--only W1,W8]\n"
          "             [--w6-secs S] [--w7-secs S] [--cap S] [--cache-mb M] [--seed X]\n"
          "             [--redis-port P]\n"
          "       bench --report CSV MD DAT PGDAT\n"
          "       bench --list-configs\n",
          stderr);
    exit(2);
}

static double num(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0)
        die("not a number: %s", s);
    return v;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--report") == 0) {
            if (argc - i != 5)
                usage();
            return bench_report(argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4]);
        }
        if (strcmp(a, "--list-configs") == 0) {
            for (size_t c = 0; c < NCONFIGS; c++) {
                eng_cfg ec = {.slot_length = configs[c].slot_length,
                              .redis = configs[c].redis,
                              .sync_mode = configs[c].sync_mode,
                              .cache_bytes = opt.cache_bytes};
                char d[1024];
                configs[c].ops->describe(&ec, d, sizeof d);
                printf("%s\t%s\n", configs[c].name, d);
            }
            return 0;
        }
        if (v == NULL)
            usage();
        i++;
        if (strcmp(a, "--n") == 0)
            opt.n = (uint64_t)num(v);
        else if (strcmp(a, "--reps") == 0)
            opt.reps = (int)num(v);
        else if (strcmp(a, "--dir") == 0)
            opt.dir = v;
        else if (strcmp(a, "--csv") == 0)
            opt.csv = v;
        else if (strcmp(a, "--config") == 0)
            opt.configs = v;
        else if (strcmp(a, "--only") == 0)
            opt.only = v;
        else if (strcmp(a, "--w6-secs") == 0)
            opt.w6_secs = num(v);
        else if (strcmp(a, "--w7-secs") == 0)
            opt.w7_secs = num(v);
        else if (strcmp(a, "--cap") == 0)
            opt.cap_s = num(v);
        else if (strcmp(a, "--cache-mb") == 0)
            opt.cache_bytes = (uint64_t)num(v) << 20;
        else if (strcmp(a, "--seed") == 0)
            opt.seed = (uint64_t)num(v);
        else if (strcmp(a, "--redis-port") == 0)
            opt.redis_port = (uint16_t)num(v);
        else
            usage();
    }
    /* report.c keeps at most 16 repetitions per (config, workload) */
    if (opt.n < 200 || opt.n > UINT32_MAX || opt.reps < 1 || opt.reps > 16)
        die("--n must be 200..2^32-1 and --reps 1..16");
    if (mkdir(opt.dir, 0700) != 0 && errno != EEXIST)
        die("mkdir %s: %s", opt.dir, strerror(errno));
    csv = fopen(opt.csv, "a");
    if (csv == NULL)
        die("%s: %s", opt.csv, strerror(errno));
    orders_build();

    for (int rep = 1; rep <= opt.reps; rep++) {
        for (size_t c = 0; c < NCONFIGS; c++) {
            const config *cf = &configs[c];
            if (!listed(opt.configs, cf->name) || (cf->redis && opt.redis_port == 0))
                continue;
            bool any = false;
            for (int w = 1; w <= 7; w++)
                any |= wanted(cf, w);
            if (!any)
                continue;
            fflush(NULL);
            pid_t pid = fork();
            if (pid < 0)
                die("fork: %s", strerror(errno));
            if (pid == 0) {
                run_config(cf, rep);
                fflush(NULL);
                _exit(0);
            }
            int st;
            waitpid(pid, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                die("%s rep %d failed (status %d)", cf->name, rep, st);
        }
        if (listed(opt.only, "W8") && listed(opt.configs, "w8")) {
            fflush(NULL);
            pid_t pid = fork();
            if (pid < 0)
                die("fork: %s", strerror(errno));
            if (pid == 0)
                _exit(bench_w8(opt.dir, opt.n, rep, csv, opt.cap_s) ? 2 : 0);
            int st;
            waitpid(pid, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                die("W8 rep %d failed", rep);
        }
    }
    fclose(csv);
    return 0;
}
