/*
 * w8.c - W8 of `make bench`: 1 MiB values written (one durable transaction
 * each) and read back (after a reopen, in random order, every byte checked)
 * in a store with values kept outside the node, with no erasure coding and
 * with Reed-Solomon 2+1 and 4+2; and the encode throughput of raw ISA-L
 * (ec_encode_data over k buffers already cut) against the engine's whole
 * CPU path for one blob (sop__ec_encode: cut into shards, encode, checksum
 * the blob and every shard, build the shard headers).
 *
 * All shard folders are on one disk here: the write and read rates measure
 * the CPU and the extra bytes written, not the parallelism of several drives.
 */
#include <errno.h>
#include <inttypes.h>
#include <isa-l/erasure_code.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "erasure.h"
#include "sop.h"

#define MIB (1u << 20)

int bench_w8(const char *dir, uint64_t n, int rep, FILE *csv, double cap_s);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t written_bytes(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    unsigned long long v = 0;
    char line[128];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "write_bytes: %llu", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static void row(FILE *csv, int rep, const char *cfg, const char *w, uint64_t mib, double secs,
                bool capped, double wbytes, const char *note)
{
    fprintf(csv, "%d,%s,%s,%" PRIu64 ",%.6f,%.1f,%d,,%.1f,,,,0,%s\n", rep, cfg, w, mib, secs,
            secs > 0 ? (double)mib / secs : 0, capped, wbytes, note);
    fflush(csv);
    fprintf(stderr, "  rep %d %-14s %-9s %10.1f MiB/s %8.2f s%s\n", rep, cfg, w,
            secs > 0 ? (double)mib / secs : 0, secs, capped ? " (capped)" : "");
}

/* The bytes of value i: a window of the 2 MiB random pool. */
static const uint8_t *value(const uint8_t *pool, uint64_t i)
{
    return pool + (b_mix(i) % MIB & ~(uint64_t)63);
}

static void key_of(uint64_t i, uint8_t k[8])
{
    for (int b = 7; b >= 0; b--, i >>= 8)
        k[b] = (uint8_t)i;
}

static int fail(const char *what, const sop_err *err)
{
    fprintf(stderr, "bench: W8: %s: %s: %s\n", what, sop_rc_name(err->code), err->msg);
    return -1;
}

/* Writes m values, reopens, reads them back in a shuffled order. */
static int ec_run(const char *base, int rep, FILE *csv, const uint8_t *pool, uint64_t m, uint32_t k,
                  uint32_t p, double cap_s)
{
    char name[32], db[4096], paths[SOP_EC_SHARDS_MAX][4160], cmd[4200];
    const char *pp[SOP_EC_SHARDS_MAX];
    if (k)
        snprintf(name, sizeof name, "ec-%u+%u", k, p);
    else
        snprintf(name, sizeof name, "ec-none");
    snprintf(db, sizeof db, "%s/w8-%s-r%d", base, name, rep);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", db);
    if (system(cmd) != 0 || mkdir(db, 0700) != 0)
        return -1;
    sop_ec_config ec = {.data_shards = k, .parity_shards = p, .paths = pp};
    for (uint32_t i = 0; i < k + p; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/d%u", db, i);
        pp[i] = paths[i];
    }
    char dbdir[4160];
    snprintf(dbdir, sizeof dbdir, "%s/db", db);
    sop_db_options o;
    sop_db_options_init(&o);
    if (k) {
        o.ec = &ec;
        o.ec_count = 1;
    }
    sop_err err = {0};
    sop_db *d;
    if (sop_db_init(dbdir, &o, &err) != SOP_OK || sop_db_open(dbdir, &o, &d, &err) != SOP_OK)
        return fail("open", &err);
    sop_store_options so;
    sop_store_options_init(&so);
    so.slot_length = 500;
    so.value_placement = SOP_VALUES_SEPARATE;
    sop_txn *t;
    sop_btree *bt;
    if (sop_txn_begin(d, SOP_TXN_WRITE, 0, &t, &err) != SOP_OK ||
        sop_store_create(t, "big", &so, &bt, &err) != SOP_OK || sop_txn_commit(t, &err) != SOP_OK)
        return fail("create", &err);
    sop_txn_free(t);

    sync();
    uint64_t w0 = written_bytes(), done = 0;
    double t0 = now_s();
    bool capped = false;
    for (; done < m; done++) {
        uint8_t key[8];
        key_of(done, key);
        if (sop_txn_begin(d, SOP_TXN_WRITE, 0, &t, &err) != SOP_OK ||
            sop_store_open(t, "big", &bt, &err) != SOP_OK ||
            sop_btree_add(bt, key, 8, value(pool, done), MIB, NULL, &err) != SOP_OK ||
            sop_txn_commit(t, &err) != SOP_OK)
            return fail("write", &err);
        sop_txn_free(t);
        if (now_s() - t0 > cap_s) {
            capped = ++done < m;
            break;
        }
    }
    double ws = now_s() - t0;
    row(csv, rep, name, "W8-write", done, ws, capped,
        (double)(written_bytes() - w0) / (double)(done ? done : 1),
        "1 MiB values; one durable txn each");
    sop_db_close(d);
    m = done;

    if (sop_db_open(dbdir, &o, &d, &err) != SOP_OK)
        return fail("reopen", &err);
    uint64_t *order = malloc(m * sizeof *order);
    if (order == NULL)
        return -1;
    for (uint64_t i = 0; i < m; i++)
        order[i] = i;
    for (uint64_t i = m; i > 1; i--) {
        uint64_t j = b_mix(i + (uint64_t)rep) % i, x = order[i - 1];
        order[i - 1] = order[j];
        order[j] = x;
    }
    t0 = now_s();
    if (sop_txn_begin(d, SOP_TXN_NOCHECK, 0, &t, &err) != SOP_OK ||
        sop_store_open(t, "big", &bt, &err) != SOP_OK)
        return fail("read begin", &err);
    for (uint64_t i = 0; i < m; i++) {
        uint8_t key[8];
        key_of(order[i], key);
        sop_item it;
        if (sop_btree_get(bt, key, 8, &it, &err) != SOP_OK)
            return fail("read", &err);
        if (it.value_len != MIB || memcmp(it.value, value(pool, order[i]), MIB) != 0) {
            fprintf(stderr, "bench: W8: value %" PRIu64 " read back wrong\n", order[i]);
            return -1;
        }
    }
    if (sop_txn_commit(t, &err) != SOP_OK)
        return fail("read end", &err);
    sop_txn_free(t);
    row(csv, rep, name, "W8-read", m, now_s() - t0, false, 0,
        "after a reopen; random order; every byte checked");
    sop_db_close(d);
    free(order);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", db);
    return system(cmd) == 0 ? 0 : -1;
}

/* Encodes 1 MiB blobs for about a second, checking the clock every 16. */
static int encode_run(FILE *csv, int rep, const uint8_t *pool, uint32_t k, uint32_t p, bool raw)
{
    char name[32];
    snprintf(name, sizeof name, "%s-%u+%u", raw ? "isal" : "sop", k, p);
    size_t len = MIB / k, file = SOP__SHARD_HEADER + sop__shard_len(MIB, k);
    uint8_t *buf = NULL;
    /* raw: k + p shard buffers; engine: k + p shard files with headers */
    if (posix_memalign((void **)&buf, 64, (k + p) * (file > len ? file : len)) != 0)
        return -1;
    uint8_t *shard[SOP_EC_SHARDS_MAX];
    for (uint32_t i = 0; i < k + p; i++)
        shard[i] = buf + i * len;
    uint8_t a[SOP_EC_SHARDS_MAX * SOP_EC_SHARDS_MAX],
        tbl[32 * SOP_EC_SHARDS_MAX * SOP_EC_SHARDS_MAX];
    sop__rs *rs = NULL;
    sop_err err = {0};
    if (raw) {
        gf_gen_cauchy1_matrix(a, (int)(k + p), (int)k);
        ec_init_tables((int)k, (int)p, &a[k * k], tbl);
        for (uint32_t i = 0; i < k; i++)
            memcpy(shard[i], pool + i * len, len);
    } else if (sop__rs_new(k, p, &rs, &err) != SOP_OK) {
        free(buf);
        return fail("codec", &err);
    }
    uint8_t id[16] = {1};
    uint64_t calls = 0;
    double t0 = now_s(), secs;
    do {
        for (int i = 0; i < 16; i++, calls++) {
            if (raw)
                ec_encode_data((int)len, (int)k, (int)p, tbl, shard, shard + k);
            else
                sop__ec_encode(rs, id, pool + (calls % 8) * 4096, MIB, buf);
        }
        secs = now_s() - t0;
    } while (secs < 1.0);
    row(csv, rep, name, "W8-encode", calls, secs, false, 0,
        raw ? "ec_encode_data over k ready shards" : "sop__ec_encode: split + encode + CRCs");
    sop__rs_free(rs);
    free(buf);
    return 0;
}

int bench_w8(const char *dir, uint64_t n, int rep, FILE *csv, double cap_s)
{
    uint8_t *pool = malloc(2 * MIB);
    if (pool == NULL)
        return -1;
    for (size_t i = 0; i < 2 * MIB; i += 8) {
        uint64_t r = b_mix(i ^ 0xabcdefu);
        memcpy(pool + i, &r, 8);
    }
    uint64_t m = n / 4000 < 32 ? 32 : n / 4000;
    static const uint32_t kp[3][2] = {{0, 0}, {2, 1}, {4, 2}};
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = ec_run(dir, rep, csv, pool, m, kp[i][0], kp[i][1], cap_s);
    for (int i = 1; i < 3 && rc == 0; i++) {
        rc = encode_run(csv, rep, pool, kp[i][0], kp[i][1], true);
        if (rc == 0)
            rc = encode_run(csv, rep, pool, kp[i][0], kp[i][1], false);
    }
    free(pool);
    return rc;
}
