/*
 * test_erasure.c - erasure coding (Reed-Solomon over ISA-L, erasure.h,
 * docs/erasure_coding.md).
 *
 *  1. The codec through the internal API: for 2+1, 4+2 (and a few other
 *     codings) every set of up to p erased shards is rebuilt exactly, p+1
 *     is SOP_CORRUPT; shard headers: the documented layout, and every kind
 *     of damage sop__shard_verify must refuse.
 *  2. Databases erasure coded 2+1 and 4+2 - a store with values in its
 *     nodes and slot length 8 (many nodes), one with separately stored
 *     values (every value a blob too), a few hundred items each: 1..p shards
 *     of random blobs deleted, header / payload / padding byte flipped,
 *     truncated, or replaced by another blob's shard. Every item reads back
 *     right; with repair the damaged files hold their original bytes again;
 *     without, sop_db_check reports each damaged blob and sop_db_scrub
 *     repairs them. Parity rot (which clean reads never see) is found by
 *     check and repaired by scrub. Tiny, empty and large blobs.
 *  3. p+1 damaged shards: SOP_CORRUPT for the items behind them, the others
 *     readable; 4. degraded reads meeting rot in another shard, and shards
 *     forged with valid checksums: SOP_CORRUPT, never wrong bytes.
 *  5. kill -9 during a repair (at ec.shard_repaired, before the temporary
 *     file is written, synced, renamed) and between the shards of a put (at
 *     ec.shard_written, in phase 2 and for an actively persisted value):
 *     harmless after recovery and scrub. Injected read errors on one shard
 *     are read around; injected write errors fail a commit only when fewer
 *     than k shards are left, and recovery then finishes it.
 *  6. Puts that cannot place k shards (drive folders replaced by files) fail
 *     and leave nothing; with one drive broken they succeed and scrub
 *     completes them; a missing drive folder is read around and not
 *     created, a new empty one is marked and filled by scrub.
 *  7. Configuration errors, the recorded configuration and its messages,
 *     per-store entries, stores without an entry, drive markers
 *     (sop_db_ec_drives).
 *  8. Dropping an erasure-coded store removes its folder on every drive.
 *  9. Scrub next to writers must not take their blobs for orphans.
 *
 * Shard files are found and damaged on disk directly: shard i of blob X of
 * store S is <paths[i]>/<S>/<hh>/<uuid of X>, a 64-byte header + payload.
 * The tests that damage a database and undo the damage share one database
 * per coding (see fixture()).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache.h"
#include "crc.h"
#include "erasure.h"
#include "fault.h"
#include "t.h"
#include "uuid.h"

static sop_err err;

/* ---- little helpers ------------------------------------------------------------ */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t popcount32(uint32_t x)
{
    return (uint32_t)__builtin_popcount(x);
}

/* The whole file; false when it does not exist. */
static bool slurp(const char *path, uint8_t **out, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        CHECK_MSG(errno == ENOENT, "open %s: %s", path, strerror(errno));
        return false;
    }
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    size_t n = (size_t)st.st_size;
    uint8_t *b = malloc(n + 1);
    CHECK(b != NULL);
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        CHECK_MSG(r > 0, "read %s: %s", path, strerror(errno));
        got += (size_t)r;
    }
    close(fd);
    *out = b;
    *len = n;
    return true;
}

static void spit(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK_MSG(fd >= 0, "open %s: %s", path, strerror(errno));
    CHECK_MSG(write(fd, data, len) == (ssize_t)len, "write %s: %s", path, strerror(errno));
    close(fd);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Problem lines from sop_db_check / sop_db_scrub. */
static char problems[1 << 17];
static size_t problems_len;
static int problems_n;

static void collect(void *ctx, const char *msg)
{
    (void)ctx;
    problems_n++;
    int w = snprintf(problems + problems_len, sizeof(problems) - problems_len, "%s\n", msg);
    if (w > 0 && problems_len + (size_t)w < sizeof(problems))
        problems_len += (size_t)w;
}

static void problems_reset(void)
{
    problems[0] = '\0';
    problems_len = 0;
    problems_n = 0;
}

static void check_clean(sop_db *db, const char *what)
{
    sop_check_report rep;
    problems_reset();
    sop_rc rc = sop_db_check(db, collect, NULL, &rep, &err);
    CHECK_MSG(rc == SOP_OK && rep.problems == 0, "%s: check: %s (%llu problems) %s\n%.2000s", what,
              sop_rc_name(rc), (unsigned long long)rep.problems, err.msg, problems);
}

/* ---- an erasure-coded database ------------------------------------------------- */

#define NITEMS 300 /* keys per store in the shared fixtures */
#define NSMALL 80  /* ... and in the databases of tests that change them */

typedef struct blob {
    char text[SOP__UUID_TEXT_LEN + 1];
    uint8_t id[16];
    uint64_t len; /* from its shard's header (0 if unreadable) */
} blob;

typedef struct ecdb {
    uint32_t k, p, n;
    int nitems; /* keys 0..nitems-1 in each store */
    char dir[512];
    char drive[SOP_EC_SHARDS_MAX][512];
    const char *paths[SOP_EC_SHARDS_MAX];
    /* the value blob of each key of store "vals" (value_blob) */
    bool vblobs_known;
    blob vblob[NITEMS];
    bool has_vblob[NITEMS];
} ecdb;

/* <base>/<name>-db and drive folders <base>/<name>-drive<i>. */
static void ecdb_setup_in(ecdb *e, const char *base, const char *name, uint32_t k, uint32_t p)
{
    memset(e, 0, sizeof(*e));
    e->k = k;
    e->p = p;
    e->n = k + p;
    snprintf(e->dir, sizeof(e->dir), "%s/%s-db", base, name);
    for (uint32_t i = 0; i < e->n; i++) {
        snprintf(e->drive[i], sizeof(e->drive[i]), "%s/%s-drive%u", base, name, i);
        e->paths[i] = e->drive[i];
    }
}

static void ecdb_setup(ecdb *e, const char *name, uint32_t k, uint32_t p)
{
    ecdb_setup_in(e, t_tmpdir(), name, k, p);
}

static sop_ec_config ecdb_entry(const ecdb *e, bool repair)
{
    sop_ec_config c;
    memset(&c, 0, sizeof(c));
    c.data_shards = e->k;
    c.parity_shards = e->p;
    c.paths = e->paths;
    c.repair = repair;
    return c;
}

static void ecdb_init(const ecdb *e)
{
    sop_db_options o;
    sop_db_options_init(&o);
    sop_ec_config c = ecdb_entry(e, false);
    o.ec = &c;
    o.ec_count = 1;
    CHECK_OK(sop_db_init(e->dir, &o, &err), &err);
}

/* repair: 0 off, 1 on, -1 the recorded entries (ec_count 0; recorded off) */
static sop_db *ecdb_open(const ecdb *e, int repair)
{
    sop_db_options o;
    sop_db_options_init(&o);
    sop_ec_config c = ecdb_entry(e, repair == 1);
    if (repair >= 0) {
        o.ec = &c;
        o.ec_count = 1;
    }
    sop_db *db = NULL;
    CHECK_OK(sop_db_open(e->dir, &o, &db, &err), &err);
    return db;
}

static void shard_path(const char *drive, const char *store, const char *text, char *out,
                       size_t cap)
{
    snprintf(out, cap, "%s/%s/%.2s/%s", drive, store, text, text);
}

/* ---- the content ---------------------------------------------------------------- */

#define NSTORES 2
static const char *const snames[NSTORES] = {"nodes", "vals"};
static const sop_value_placement splace[NSTORES] = {SOP_VALUES_IN_NODE, SOP_VALUES_SEPARATE};

static int key_of(int i, char *out, size_t cap)
{
    return snprintf(out, cap, "key%06d", i);
}

static bool removed(int i)
{
    return i % 10 == 9;
}

static int gen_of(int i)
{
    return i % 3 == 0 ? 2 : 1;
}

/* Lengths vary, so blob lengths are not all multiples of k. */
static int value_of(int s, int i, int gen, char *out, size_t cap)
{
    int fill = s == 0 ? i % 19 : (i * 7) % 41;
    return snprintf(out, cap, "%s-%06d-gen%d-%.*s", s == 0 ? "node" : "sep", i, gen, fill,
                    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
}

static sop_btree *create_store(sop_txn *t, const char *name, uint32_t slot, sop_value_placement vp)
{
    sop_store_options o;
    sop_store_options_init(&o);
    o.slot_length = slot;
    o.is_unique = true;
    o.value_placement = vp;
    o.description = "erasure-coded";
    sop_btree *bt;
    CHECK_OK(sop_store_create(t, name, &o, &bt, &err), &err);
    return bt;
}

static void put_item(sop_btree *bt, int s, int i, int gen)
{
    char k[32], v[128];
    int kl = key_of(i, k, sizeof(k));
    int vl = value_of(s, i, gen, v, sizeof(v));
    CHECK_OK(sop_btree_upsert(bt, k, (size_t)kl, v, (size_t)vl, NULL, &err), &err);
}

/* Two commits: create both stores and fill them with keys 0..n-1
 * (generation 1); update every third key (generation 2) and remove every
 * tenth. */
static void fill(sop_db *db, int n)
{
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    for (int s = 0; s < NSTORES; s++) {
        sop_btree *bt = create_store(t, snames[s], 8, splace[s]);
        for (int i = 0; i < n; i++)
            put_item(bt, s, i, 1);
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    for (int s = 0; s < NSTORES; s++) {
        sop_btree *bt;
        CHECK_OK(sop_store_open(t, snames[s], &bt, &err), &err);
        for (int i = 0; i < n; i++) {
            if (removed(i)) {
                char k[32];
                int kl = key_of(i, k, sizeof(k));
                CHECK_OK(sop_btree_remove(bt, k, (size_t)kl, &err), &err);
            } else if (gen_of(i) == 2) {
                put_item(bt, s, i, 2);
            }
        }
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
}

static void begin_read(sop_db *db, sop_txn **t, sop_btree **bt)
{
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, t, &err), &err);
    for (int s = 0; s < NSTORES; s++)
        CHECK_OK(sop_store_open(*t, snames[s], &bt[s], &err), &err);
}

/*
 * Reads keys 0..n-1 of both stores from disk (the L1 cache emptied first): a
 * present key must come back with exactly its value, a removed one
 * SOP_NOTFOUND. With failed != NULL, SOP_CORRUPT is accepted too and the
 * key marked in failed[s * NITEMS + i] (the transaction is then replaced
 * by a fresh one); the number of such keys is returned. Any other result,
 * and any wrong byte, fails the test.
 */
static int read_all(sop_db *db, int n, bool *failed, const char *what)
{
    sop__l1_clear();
    if (failed)
        memset(failed, 0, sizeof(bool) * NSTORES * NITEMS);
    int nfailed = 0;
    sop_txn *t;
    sop_btree *bt[NSTORES];
    begin_read(db, &t, bt);
    for (int s = 0; s < NSTORES; s++) {
        for (int i = 0; i < n; i++) {
            char k[32], v[128];
            int kl = key_of(i, k, sizeof(k));
            int vl = value_of(s, i, gen_of(i), v, sizeof(v));
            sop_item it;
            sop_rc rc = sop_btree_get(bt[s], k, (size_t)kl, &it, &err);
            if (rc == SOP_CORRUPT && failed) {
                failed[s * NITEMS + i] = true;
                nfailed++;
                sop_txn_rollback(t, NULL);
                sop_txn_free(t);
                begin_read(db, &t, bt);
                continue;
            }
            if (removed(i)) {
                CHECK_MSG(rc == SOP_NOTFOUND, "%s: store %s key %d (removed): %s %s", what,
                          snames[s], i, sop_rc_name(rc), err.msg);
                continue;
            }
            CHECK_MSG(rc == SOP_OK, "%s: store %s key %d: %s %s", what, snames[s], i,
                      sop_rc_name(rc), err.msg);
            CHECK_MSG(it.value_len == (size_t)vl && memcmp(it.value, v, (size_t)vl) == 0,
                      "%s: store %s key %d: WRONG BYTES: got %.*s want %s", what, snames[s], i,
                      (int)it.value_len, (const char *)it.value, v);
        }
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    return nfailed;
}

/* ---- blobs and shards on disk ------------------------------------------------------ */

#define MAXBLOBS 2048

static int cmp_blob(const void *a, const void *b)
{
    return strcmp(((const blob *)a)->text, ((const blob *)b)->text);
}

/* The shard files of one drive folder of a store, sorted by blob ID; other
 * files (temporary ones) are counted in *others when not NULL. */
static int list_drive(const char *drive, const char *store, blob *out, int cap, int *others)
{
    char root[1024];
    snprintf(root, sizeof(root), "%s/%s", drive, store);
    int n = 0;
    if (others)
        *others = 0;
    DIR *top = opendir(root);
    if (top == NULL)
        return 0;
    struct dirent *de;
    while ((de = readdir(top)) != NULL) {
        if (strlen(de->d_name) != 2 || de->d_name[0] == '.')
            continue;
        char sub[1300];
        snprintf(sub, sizeof(sub), "%s/%s", root, de->d_name);
        DIR *d = opendir(sub);
        CHECK_MSG(d != NULL, "opendir %s: %s", sub, strerror(errno));
        struct dirent *f;
        while ((f = readdir(d)) != NULL) {
            if (f->d_name[0] == '.')
                continue;
            blob b;
            memset(&b, 0, sizeof(b));
            if (strlen(f->d_name) != SOP__UUID_TEXT_LEN || !sop__uuid_parse(f->d_name, b.id)) {
                if (others)
                    (*others)++;
                continue;
            }
            CHECK(n < cap);
            memcpy(b.text, f->d_name, SOP__UUID_TEXT_LEN + 1);
            char path[1600];
            snprintf(path, sizeof(path), "%s/%s", sub, f->d_name);
            uint8_t *buf;
            size_t len;
            if (slurp(path, &buf, &len)) {
                if (len >= SOP__SHARD_HEADER)
                    b.len = le64(buf + 32);
                free(buf);
            }
            out[n++] = b;
        }
        closedir(d);
    }
    closedir(top);
    qsort(out, (size_t)n, sizeof(*out), cmp_blob);
    return n;
}

static int list_blobs(const ecdb *e, const char *store, blob *out, int cap)
{
    return list_drive(e->drive[0], store, out, cap, NULL);
}

/* A shard file as a reader must accept it. */
static void expect_valid_shard(const ecdb *e, const char *store, const blob *b, uint32_t idx,
                               const char *what)
{
    char path[1200];
    shard_path(e->drive[idx], store, b->text, path, sizeof(path));
    uint8_t *buf;
    size_t len;
    CHECK_MSG(slurp(path, &buf, &len), "%s: %s is missing", what, path);
    sop__shard_hdr want, got;
    memset(&want, 0, sizeof(want));
    memcpy(want.blob_id, b->id, 16);
    want.index = idx;
    want.k = e->k;
    want.p = e->p;
    sop_rc rc = sop__shard_verify(buf, len, &want, &got, &err);
    free(buf);
    CHECK_MSG(rc == SOP_OK, "%s: %s: %s", what, path, err.msg);
}

/* The blob's bytes from its k data shards (all of which must be intact). */
static uint8_t *blob_bytes(const ecdb *e, const char *store, const blob *b, size_t *len)
{
    uint8_t *out = malloc(b->len + 1);
    CHECK(out != NULL);
    size_t off = 0;
    for (uint32_t i = 0; i < e->k; i++) {
        char path[1200];
        shard_path(e->drive[i], store, b->text, path, sizeof(path));
        uint8_t *buf;
        size_t n;
        CHECK(slurp(path, &buf, &n));
        size_t sl = n - SOP__SHARD_HEADER;
        size_t take = b->len - off < sl ? b->len - off : sl;
        memcpy(out + off, buf + SOP__SHARD_HEADER, take);
        off += take;
        free(buf);
    }
    *len = b->len;
    return out;
}

/* The blob of a store whose bytes contain needle (the first, in ID order). */
static bool find_blob(const ecdb *e, const char *store, const void *needle, size_t nlen, blob *out)
{
    static blob all[MAXBLOBS];
    int n = list_blobs(e, store, all, MAXBLOBS);
    for (int j = 0; j < n; j++) {
        size_t len;
        uint8_t *bytes = blob_bytes(e, store, &all[j], &len);
        bool hit = memmem(bytes, len, needle, nlen) != NULL;
        free(bytes);
        if (hit) {
            *out = all[j];
            return true;
        }
    }
    return false;
}

/* The value blob of key i of store "vals": the blob whose bytes are its
 * value (found once for all keys, by reading every blob). */
static blob value_blob(ecdb *e, int i)
{
    CHECK(i >= 0 && i < NITEMS);
    if (!e->vblobs_known) {
        static blob all[MAXBLOBS];
        int n = list_blobs(e, "vals", all, MAXBLOBS);
        for (int j = 0; j < n; j++) {
            size_t len;
            uint8_t *bytes = blob_bytes(e, "vals", &all[j], &len);
            bytes[len] = 0;
            int key;
            if (len > 4 && memcmp(bytes, "sep-", 4) == 0 &&
                sscanf((const char *)bytes, "sep-%d", &key) == 1 && key >= 0 && key < NITEMS) {
                char v[128];
                int vl = value_of(1, key, gen_of(key), v, sizeof(v));
                if ((size_t)vl == len && memcmp(bytes, v, len) == 0) {
                    e->vblob[key] = all[j];
                    e->has_vblob[key] = true;
                }
            }
            free(bytes);
        }
        e->vblobs_known = true;
    }
    CHECK_MSG(e->has_vblob[i], "no value blob holds the value of key %d", i);
    return e->vblob[i];
}

/* ---- damage ------------------------------------------------------------------------ */

enum { D_DELETE, D_HEADER, D_DATA, D_PADDING, D_TRUNCATE, D_SWAP, D_FORGE, D_COUNT };
static const char *const dnames[D_COUNT] = {"delete",   "header flip", "data flip", "padding flip",
                                            "truncate", "swap",        "forge"};

/* One damaged shard: its file before and after. */
typedef struct saved {
    int kind;
    char path[1200];
    char store[16];
    blob b;
    uint32_t idx;
    uint8_t *before;
    size_t before_len;
    uint8_t *after; /* NULL: deleted */
    size_t after_len;
} saved;

#define MAXSAVED 96
typedef struct damage {
    saved s[MAXSAVED];
    int n;
} damage;

static void damage_free(damage *d)
{
    for (int i = 0; i < d->n; i++) {
        free(d->s[i].before);
        free(d->s[i].after);
    }
    d->n = 0;
}

/* Damages shard idx of blob b; `other` is the blob whose shard a swap copies. */
static void damage_shard(const ecdb *e, const char *store, const blob *b, uint32_t idx, int kind,
                         const blob *other, t_rng *rng, damage *d)
{
    CHECK(d->n < MAXSAVED);
    saved *s = &d->s[d->n++];
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    shard_path(e->drive[idx], store, b->text, s->path, sizeof(s->path));
    snprintf(s->store, sizeof(s->store), "%s", store);
    s->b = *b;
    s->idx = idx;
    uint8_t *buf;
    size_t len;
    CHECK_MSG(slurp(s->path, &buf, &len), "%s is missing", s->path);
    s->before = malloc(len + 1);
    CHECK(s->before != NULL);
    memcpy(s->before, buf, len);
    s->before_len = len;
    CHECK(len >= SOP__SHARD_HEADER);
    size_t pl = len - SOP__SHARD_HEADER;
    CHECK_MSG(pl > 0 || (kind != D_DATA && kind != D_PADDING && kind != D_FORGE),
              "%s: no payload to damage", s->path);
    uint8_t x = (uint8_t)(1 + t_rng_below(rng, 255));
    switch (kind) {
    case D_DELETE:
        CHECK(unlink(s->path) == 0);
        break;
    case D_HEADER:
        buf[t_rng_below(rng, SOP__SHARD_HEADER)] ^= x;
        spit(s->path, buf, len);
        break;
    case D_DATA:
        buf[SOP__SHARD_HEADER + t_rng_below(rng, pl)] ^= x;
        spit(s->path, buf, len);
        break;
    case D_PADDING: {
        /* the last data shard's bytes past the blob's end */
        CHECK(idx == e->k - 1);
        uint64_t start = (uint64_t)(e->k - 1) * pl;
        uint64_t used = b->len > start ? b->len - start : 0;
        CHECK_MSG(used < pl, "blob %s (%llu bytes) has no padding", b->text,
                  (unsigned long long)b->len);
        buf[SOP__SHARD_HEADER + used + t_rng_below(rng, pl - used)] ^= x;
        spit(s->path, buf, len);
        break;
    }
    case D_TRUNCATE:
        CHECK(truncate(s->path, (off_t)t_rng_below(rng, len)) == 0);
        break;
    case D_SWAP: {
        char op[1200];
        shard_path(e->drive[idx], store, other->text, op, sizeof(op));
        uint8_t *ob;
        size_t ol;
        CHECK(slurp(op, &ob, &ol));
        spit(s->path, ob, ol);
        free(ob);
        break;
    }
    case D_FORGE: {
        /* wrong payload bytes under checksums made to match: the shard
         * verifies on its own; only the blob's checksum can tell */
        buf[SOP__SHARD_HEADER + t_rng_below(rng, pl)] ^= x;
        put32(buf + 48, sop__crc32c(0, buf + SOP__SHARD_HEADER, pl));
        put32(buf + 60, sop__crc32c(0, buf, 60));
        spit(s->path, buf, len);
        break;
    }
    default:
        CHECK(false);
    }
    free(buf);
    if (!slurp(s->path, &s->after, &s->after_len))
        s->after = NULL;
}

/* Puts every damaged file back as it was. */
static void damage_undo(damage *d)
{
    for (int i = 0; i < d->n; i++)
        spit(d->s[i].path, d->s[i].before, d->s[i].before_len);
    damage_free(d);
}

/* Every damaged shard holds exactly its original bytes again. */
static void expect_healed(const ecdb *e, const damage *d, const char *what)
{
    for (int i = 0; i < d->n; i++) {
        const saved *s = &d->s[i];
        uint8_t *buf;
        size_t len;
        bool there = slurp(s->path, &buf, &len);
        CHECK_MSG(there, "%s: shard %u of blob %s (%s, %s) was not rewritten", what, s->idx,
                  s->b.text, dnames[s->kind], s->path);
        bool same = len == s->before_len && memcmp(buf, s->before, len) == 0;
        free(buf);
        CHECK_MSG(same, "%s: shard %u of blob %s (%s, %s) does not hold its original bytes", what,
                  s->idx, s->b.text, dnames[s->kind], s->path);
        expect_valid_shard(e, s->store, &s->b, s->idx, what);
    }
}

/* Every damaged shard is still as damaged (nothing wrote to it). */
static void expect_untouched(const damage *d, const char *what)
{
    for (int i = 0; i < d->n; i++) {
        const saved *s = &d->s[i];
        uint8_t *buf = NULL;
        size_t len = 0;
        bool there = slurp(s->path, &buf, &len);
        bool same = there == (s->after != NULL) &&
                    (!there || (len == s->after_len && memcmp(buf, s->after, len) == 0));
        free(buf);
        CHECK_MSG(same, "%s: shard %u of blob %s (%s) was written without repair", what, s->idx,
                  s->b.text, s->path);
    }
}

/* A damaged shard is damaged or healed, nothing else. */
static int count_healed(const damage *d, const char *what)
{
    int healed = 0;
    for (int i = 0; i < d->n; i++) {
        const saved *s = &d->s[i];
        uint8_t *buf = NULL;
        size_t len = 0;
        bool there = slurp(s->path, &buf, &len);
        bool is_before = there && len == s->before_len && memcmp(buf, s->before, len) == 0;
        bool is_after = there == (s->after != NULL) &&
                        (!there || (len == s->after_len && memcmp(buf, s->after, len) == 0));
        free(buf);
        CHECK_MSG(is_before || is_after,
                  "%s: shard %u of blob %s (%s) holds neither its old nor "
                  "its original bytes",
                  what, s->idx, s->b.text, s->path);
        healed += is_before;
    }
    return healed;
}

/* ---- 1. the codec and shard headers ------------------------------------------------ */

/* Every erasure set of up to p shards (all of them, or `samples` random
 * ones when there are too many) rebuilds exactly; p+1 fails. */
static void codec_case(uint32_t k, uint32_t p, size_t len, int samples, t_rng *rng)
{
    sop__rs *rs;
    CHECK_OK(sop__rs_new(k, p, &rs, &err), &err);
    uint32_t n = k + p;
    uint8_t *orig[SOP_EC_SHARDS_MAX], *work[SOP_EC_SHARDS_MAX];
    for (uint32_t i = 0; i < n; i++) {
        orig[i] = malloc(len + 1);
        work[i] = malloc(len + 1);
        CHECK(orig[i] && work[i]);
        if (i < k)
            for (size_t j = 0; j < len; j++)
                orig[i][j] = (uint8_t)t_rng_next(rng);
    }
    sop__rs_encode(rs, len, orig, orig + k);
    /* deterministic: encoding again gives the same parity */
    for (uint32_t i = 0; i < k; i++)
        memcpy(work[i], orig[i], len);
    sop__rs_encode(rs, len, work, work + k);
    for (uint32_t i = k; i < n; i++)
        CHECK_MSG(memcmp(work[i], orig[i], len) == 0, "%u+%u: parity %u differs between encodes", k,
                  p, i);
    uint32_t full = n == 32 ? 0xffffffffu : (1u << n) - 1u;
    uint64_t total = 1ull << n;
    int tried_ok = 0, tried_bad = 0;
    for (uint64_t step = 0;; step++) {
        uint32_t have;
        if (samples == 0) {
            if (step >= total)
                break;
            have = (uint32_t)step;
        } else {
            if (step >= (uint64_t)samples)
                break;
            /* 1..p+1 erasures at random places */
            uint32_t ne = 1 + (uint32_t)t_rng_below(rng, p + 1);
            uint32_t gone = 0;
            while (popcount32(gone) < ne)
                gone |= 1u << t_rng_below(rng, n);
            have = full & ~gone;
        }
        uint32_t erased = n - popcount32(have);
        if (erased == 0 || erased > p + 1)
            continue;
        for (uint32_t i = 0; i < n; i++) {
            if ((have >> i) & 1u)
                memcpy(work[i], orig[i], len);
            else
                memset(work[i], (int)(0xa5u ^ i), len);
        }
        sop_rc rc = sop__rs_rebuild(rs, len, work, have, &err);
        if (erased > p) {
            CHECK_MSG(rc == SOP_CORRUPT, "%u+%u len %zu: %u erasures (have %#x): %s", k, p, len,
                      erased, have, sop_rc_name(rc));
            tried_bad++;
            continue;
        }
        CHECK_MSG(rc == SOP_OK, "%u+%u len %zu: have %#x: %s %s", k, p, len, have, sop_rc_name(rc),
                  err.msg);
        for (uint32_t i = 0; i < n; i++)
            CHECK_MSG(memcmp(work[i], orig[i], len) == 0,
                      "%u+%u len %zu: have %#x: shard %u rebuilt wrong", k, p, len, have, i);
        tried_ok++;
    }
    CHECK(tried_ok > 0 && tried_bad > 0);

    /* a NULL buffer is a shard not wanted: the others are rebuilt, it is
     * left alone */
    if (p >= 2) {
        for (uint32_t i = 0; i < n; i++)
            memcpy(work[i], orig[i], len);
        memset(work[0], 0, len);
        uint8_t *sh[SOP_EC_SHARDS_MAX];
        for (uint32_t i = 0; i < n; i++)
            sh[i] = work[i];
        sh[n - 1] = NULL;
        CHECK_OK(sop__rs_rebuild(rs, len, sh, full & ~1u & ~(1u << (n - 1)), &err), &err);
        CHECK(memcmp(work[0], orig[0], len) == 0);
    }
    for (uint32_t i = 0; i < n; i++) {
        free(orig[i]);
        free(work[i]);
    }
    sop__rs_free(rs);
}

TEST(codec_rebuilds_every_erasure_set_up_to_p_and_refuses_p_plus_1)
{
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    static const size_t lens[] = {1, 2, 37, 1000, 4096 + 3};
    for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
        codec_case(2, 1, lens[l], 0, &rng);
        codec_case(4, 2, lens[l], 0, &rng);
    }
    /* a few other shapes: parity only (1+1), more parity than data, wide */
    codec_case(1, 1, 100, 0, &rng);
    codec_case(1, 3, 100, 0, &rng);
    codec_case(3, 2, 333, 0, &rng);
    codec_case(6, 3, 257, 0, &rng);
    codec_case(10, 4, 129, 0, &rng);
    codec_case(28, 4, 64, 300, &rng);
    codec_case(16, 16, 64, 200, &rng);

    /* len 0 is nothing to do */
    sop__rs *rs;
    CHECK_OK(sop__rs_new(2, 1, &rs, &err), &err);
    uint8_t a = 1, b = 2, c = 3;
    uint8_t *sh[3] = {&a, &b, &c};
    sop__rs_encode(rs, 0, sh, sh + 2);
    CHECK_RC(sop__rs_rebuild(rs, 0, sh, 1u, &err), SOP_CORRUPT, &err);
    CHECK_OK(sop__rs_rebuild(rs, 0, sh, 3u, &err), &err);
    CHECK(a == 1 && b == 2 && c == 3);
    sop__rs_free(rs);

    /* bad shapes */
    static const uint32_t bad[][2] = {{0, 1}, {1, 0}, {0, 0}, {32, 1}, {31, 2}, {17, 16}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rs = NULL;
        CHECK_RC(sop__rs_new(bad[i][0], bad[i][1], &rs, &err), SOP_INVALID, &err);
        CHECK(rs == NULL);
    }
    CHECK_OK(sop__rs_new(31, 1, &rs, &err), &err);
    sop__rs_free(rs);
}

/* One shard file of a blob, built with the internal encoder. */
static size_t make_shard(const uint8_t id[16], uint32_t idx, uint32_t k, uint32_t p,
                         const uint8_t *blob_data, size_t blob_len, const uint8_t *payload,
                         uint8_t *out)
{
    sop__shard_hdr h;
    memset(&h, 0, sizeof(h));
    memcpy(h.blob_id, id, 16);
    h.index = idx;
    h.k = k;
    h.p = p;
    h.blob_len = blob_len;
    h.payload_len = (uint32_t)sop__shard_len(blob_len, k);
    h.blob_crc = sop__crc32c(0, blob_data, blob_len);
    h.payload_crc = sop__crc32c(0, payload, h.payload_len);
    sop__shard_hdr_encode(&h, out);
    memcpy(out + SOP__SHARD_HEADER, payload, h.payload_len);
    return SOP__SHARD_HEADER + h.payload_len;
}

TEST(shard_header_layout_and_verification)
{
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    static const uint32_t shapes[][2] = {{2, 1}, {4, 2}};
    for (size_t sh = 0; sh < 2; sh++) {
        uint32_t k = shapes[sh][0], p = shapes[sh][1];
        for (size_t blen = 1; blen < 200; blen += 13) {
            CHECK_EQ(sop__shard_len(blen, k), (blen + k - 1) / k);
            uint8_t data[256], id[16], other_id[16];
            for (size_t i = 0; i < blen; i++)
                data[i] = (uint8_t)t_rng_next(&rng);
            sop__uuid_v4(id);
            sop__uuid_v4(other_id);
            size_t sl = sop__shard_len(blen, k);
            uint8_t payload[256];
            memset(payload, 0, sizeof(payload));
            /* the last data shard: its piece of the blob, zero-padded */
            size_t start = (size_t)(k - 1) * sl, take = blen > start ? blen - start : 0;
            memcpy(payload, data + start, take);
            uint32_t idx = k - 1;
            uint8_t file[SOP__SHARD_HEADER + 256];
            size_t len = make_shard(id, idx, k, p, data, blen, payload, file);
            CHECK_EQ(len, SOP__SHARD_HEADER + sl);
            /* the documented layout, little-endian */
            CHECK(memcmp(file, "SOPSHARD", 8) == 0);
            CHECK(file[8] == 1 && file[9] == 0);
            CHECK(file[10] == idx && file[11] == k && file[12] == p);
            CHECK(file[13] == 0 && file[14] == 0 && file[15] == 0);
            CHECK(memcmp(file + 16, id, 16) == 0);
            CHECK_EQ(le64(file + 32), blen);
            CHECK_EQ(le32(file + 40), sl);
            CHECK_EQ(le32(file + 44), sop__crc32c(0, data, blen));
            CHECK_EQ(le32(file + 48), sop__crc32c(0, payload, sl));
            for (int i = 52; i < 60; i++)
                CHECK(file[i] == 0);
            CHECK_EQ(le32(file + 60), sop__crc32c(0, file, 60));

            sop__shard_hdr want, got;
            memset(&want, 0, sizeof(want));
            memcpy(want.blob_id, id, 16);
            want.index = idx;
            want.k = k;
            want.p = p;
            CHECK_OK(sop__shard_verify(file, len, &want, &got, &err), &err);
            CHECK(memcmp(got.blob_id, id, 16) == 0);
            CHECK(got.index == idx && got.k == k && got.p == p);
            CHECK_EQ(got.blob_len, blen);
            CHECK_EQ(got.payload_len, sl);

            uint8_t bad[SOP__SHARD_HEADER + 257];
            /* every header byte flipped */
            for (size_t i = 0; i < SOP__SHARD_HEADER; i++) {
                memcpy(bad, file, len);
                bad[i] ^= (uint8_t)(1 + t_rng_below(&rng, 255));
                CHECK_MSG(sop__shard_verify(bad, len, &want, &got, &err) == SOP_CORRUPT,
                          "header byte %zu flipped was accepted", i);
            }
            /* payload bytes flipped (padding included) */
            for (size_t i = 0; i < sl; i++) {
                memcpy(bad, file, len);
                bad[SOP__SHARD_HEADER + i] ^= 0x40;
                CHECK_MSG(sop__shard_verify(bad, len, &want, &got, &err) == SOP_CORRUPT,
                          "payload byte %zu flipped was accepted", i);
            }
            /* truncated, extended */
            for (size_t l = 0; l < len; l++)
                CHECK_MSG(sop__shard_verify(file, l, &want, &got, &err) == SOP_CORRUPT,
                          "truncated to %zu bytes was accepted", l);
            memcpy(bad, file, len);
            bad[len] = 0;
            CHECK_RC(sop__shard_verify(bad, len + 1, &want, &got, &err), SOP_CORRUPT, &err);
            /* another blob, index, k, p */
            sop__shard_hdr w2 = want;
            memcpy(w2.blob_id, other_id, 16);
            CHECK_RC(sop__shard_verify(file, len, &w2, &got, &err), SOP_CORRUPT, &err);
            CHECK(strstr(err.msg, "another blob") != NULL);
            w2 = want;
            w2.index = 0;
            CHECK_RC(sop__shard_verify(file, len, &w2, &got, &err), SOP_CORRUPT, &err);
            w2 = want;
            w2.k = k + 1;
            CHECK_RC(sop__shard_verify(file, len, &w2, &got, &err), SOP_CORRUPT, &err);
            w2 = want;
            w2.p = p + 1;
            CHECK_RC(sop__shard_verify(file, len, &w2, &got, &err), SOP_CORRUPT, &err);
            /* headers whose checksum is right but whose fields are not */
            static const size_t fields[] = {0, 8, 13, 14, 15, 40, 52, 59};
            for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
                memcpy(bad, file, len);
                bad[fields[f]] ^= 1;
                put32(bad + 60, sop__crc32c(0, bad, 60));
                CHECK_MSG(sop__shard_verify(bad, len, &want, &got, &err) == SOP_CORRUPT,
                          "header byte %zu changed (checksum fixed) was accepted", fields[f]);
            }
        }
    }
}

/* ---- shared fixtures -------------------------------------------------------------------- */

/*
 * Building a database of a few hundred items spread over 3 or 6 drive
 * folders costs thousands of file and folder creations, so the tests that
 * damage a database and undo the damage again (verifying that they did)
 * share one per coding, built once per process in its own folder. A test
 * takes it with fixture() and gives it back with fixture_done(); one that
 * fails in between leaves it taken, and the next fixture() builds it anew.
 * The folder is removed at exit unless a test left a fixture damaged.
 */
static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_tree(const char *path)
{
    if (exists(path))
        CHECK_MSG(nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0, "removing %s", path);
}

typedef struct shared {
    ecdb e;
    bool built, taken;
} shared;
static shared fix21, fix42;
static char fixroot[512];

static void fixroot_cleanup(void)
{
    if (!fixroot[0])
        return;
    if (fix21.taken || fix42.taken)
        printf("#   kept %s (a test left a fixture damaged)\n", fixroot);
    else
        nftw(fixroot, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void build_in(ecdb *e, const char *base, const char *name, uint32_t k, uint32_t p, int n)
{
    ecdb_setup_in(e, base, name, k, p);
    e->nitems = n;
    ecdb_init(e);
    sop_db *db = ecdb_open(e, -1);
    fill(db, n);
    read_all(db, n, NULL, "after fill");
    check_clean(db, "after fill");
    sop_db_close(db);
}

/* A database of its own, in the test's folder (for tests that change it). */
static void build(ecdb *e, const char *name, uint32_t k, uint32_t p, int n)
{
    build_in(e, t_tmpdir(), name, k, p, n);
}

static ecdb *fixture(uint32_t k, uint32_t p)
{
    CHECK((k == 2 && p == 1) || (k == 4 && p == 2));
    shared *f = k == 2 ? &fix21 : &fix42;
    if (!fixroot[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(fixroot, sizeof(fixroot), "%s/soptest-ec.XXXXXX", base && *base ? base : "/tmp");
        CHECK_MSG(mkdtemp(fixroot) != NULL, "mkdtemp: %s", strerror(errno));
        atexit(fixroot_cleanup);
    }
    if (f->built && f->taken) { /* a test failed with it: start again */
        rm_tree(f->e.dir);
        for (uint32_t i = 0; i < f->e.n; i++)
            rm_tree(f->e.drive[i]);
        f->built = false;
    }
    if (!f->built) {
        char name[16];
        snprintf(name, sizeof(name), "ec%u%u", k, p);
        f->taken = true;
        build_in(&f->e, fixroot, name, k, p, NITEMS);
        f->built = true;
    }
    f->taken = true;
    return &f->e;
}

static void fixture_done(ecdb *e)
{
    /* it must be as built: every item right, every shard valid */
    sop_db *db = ecdb_open(e, 0);
    check_clean(db, "fixture given back");
    sop_db_close(db);
    (e == &fix21.e ? &fix21 : &fix42)->taken = false;
}

/* ---- 2. damage of up to p shards ----------------------------------------------------- */

/* Picks `nbad` shard indices of an n-shard blob, with the `forced` ones. */
static uint32_t pick_shards(const ecdb *e, uint32_t nbad, uint32_t forced, t_rng *rng)
{
    uint32_t set = forced;
    while (popcount32(set) < nbad)
        set |= 1u << t_rng_below(rng, e->n);
    return set;
}

#define PER_KIND 2 /* blobs of each store damaged in each way, per case */

/*
 * One case: in each store, PER_KIND random blobs for each kind of damage
 * (every blob damaged one way only), nbad shards of each. With repair one of
 * the bad shards is a data shard, so that the read notices (a clean read
 * never reads parity); padding damage is to the last data shard, the other
 * bad shards of that blob get a payload flip.
 */
static void damage_case(const ecdb *e, uint32_t nbad, bool repair, t_rng *rng)
{
    char what[160];
    snprintf(what, sizeof(what), "%u+%u, %u bad shard(s) per blob, repair %s", e->k, e->p, nbad,
             repair ? "on" : "off");
    static damage dmg;
    dmg.n = 0;
    static blob blobs[MAXBLOBS];
    int live = 0;
    for (int s = 0; s < NSTORES; s++) {
        int nb = list_blobs(e, snames[s], blobs, MAXBLOBS);
        live += nb;
        static int order[MAXBLOBS];
        for (int j = 0; j < nb; j++)
            order[j] = j;
        for (int j = nb - 1; j > 0; j--) {
            int r = (int)t_rng_below(rng, (uint64_t)j + 1);
            int tmp = order[j];
            order[j] = order[r];
            order[r] = tmp;
        }
        int next = 0;
        /* the blob whose shards are swapped in: never damaged itself */
        CHECK(nb > 0);
        const blob *donor = &blobs[order[next++]];
        for (int kind = 0; kind < D_FORGE; kind++) {
            for (int c = 0; c < PER_KIND; c++) {
                /* the next blob in the shuffled order that fits (padding:
                 * a length that is not a multiple of k) */
                int pick = -1;
                for (int j = next; j < nb && pick < 0; j++) {
                    if (kind == D_PADDING && blobs[order[j]].len % e->k == 0)
                        continue;
                    pick = j;
                }
                CHECK_MSG(pick >= 0, "%s: store %s has too few blobs (%d)", what, snames[s], nb);
                int tmp = order[next];
                order[next] = order[pick];
                order[pick] = tmp;
                const blob *b = &blobs[order[next++]];
                uint32_t forced = 0;
                if (kind == D_PADDING)
                    forced = 1u << (e->k - 1);
                else if (repair)
                    forced = 1u << t_rng_below(rng, e->k);
                uint32_t set = pick_shards(e, nbad, forced, rng);
                for (uint32_t i = 0; i < e->n; i++) {
                    if (!((set >> i) & 1u))
                        continue;
                    int kd = kind == D_PADDING && i != e->k - 1 ? D_DATA : kind;
                    damage_shard(e, snames[s], b, i, kd, donor, rng, &dmg);
                }
            }
        }
    }

    sop_db *db = ecdb_open(e, repair ? 1 : 0);
    read_all(db, e->nitems, NULL, what);
    if (repair) {
        expect_healed(e, &dmg, what);
        check_clean(db, what);
    } else {
        expect_untouched(&dmg, what);
        sop_check_report rep;
        problems_reset();
        CHECK_RC(sop_db_check(db, collect, NULL, &rep, &err), SOP_CORRUPT, &err);
        CHECK(rep.problems >= 1);
        for (int i = 0; i < dmg.n; i++)
            CHECK_MSG(strstr(problems, dmg.s[i].b.text) != NULL,
                      "%s: check did not report blob %s (%s of shard %u):\n%.3000s", what,
                      dmg.s[i].b.text, dnames[dmg.s[i].kind], dmg.s[i].idx, problems);
        expect_untouched(&dmg, what); /* check is read-only */
        sop_scrub_report sr;
        problems_reset();
        CHECK_OK(sop_db_scrub(db, true, NULL, collect, NULL, &sr, &err), &err);
        CHECK_EQ(sr.stores, NSTORES);
        CHECK_EQ(sr.blobs, live);
        CHECK_EQ(sr.shards, (uint64_t)live * e->n);
        CHECK_EQ(sr.bad_shards, dmg.n);
        CHECK_EQ(sr.repaired_shards, dmg.n);
        CHECK_EQ(sr.lost_blobs, 0);
        CHECK_EQ(sr.orphan_blobs, 0);
        for (int i = 0; i < dmg.n; i++)
            CHECK_MSG(strstr(problems, dmg.s[i].b.text) != NULL,
                      "%s: scrub did not report blob %s (%s of shard %u)", what, dmg.s[i].b.text,
                      dnames[dmg.s[i].kind], dmg.s[i].idx);
        expect_healed(e, &dmg, what);
        check_clean(db, what);
        read_all(db, e->nitems, NULL, what);
    }
    sop_db_close(db);
    damage_free(&dmg);
}

static void damage_matrix(uint32_t k, uint32_t p, bool repair)
{
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    ecdb *e = fixture(k, p);
    for (uint32_t nbad = 1; nbad <= p; nbad++)
        for (int round = 0; round < 2; round++)
            damage_case(e, nbad, repair, &rng);
    fixture_done(e);
}

TEST(ec_2_1_up_to_p_damaged_shards_read_and_repair)
{
    damage_matrix(2, 1, true);
}

TEST(ec_2_1_up_to_p_damaged_shards_check_and_scrub)
{
    damage_matrix(2, 1, false);
}

TEST(ec_4_2_up_to_p_damaged_shards_read_and_repair)
{
    damage_matrix(4, 2, true);
}

TEST(ec_4_2_up_to_p_damaged_shards_check_and_scrub)
{
    damage_matrix(4, 2, false);
}

/* A clean read uses the data shards only: rotten parity is left for check
 * (which reports it) and scrub (which repairs it). */
TEST(parity_rot_is_found_by_check_and_repaired_by_scrub)
{
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    ecdb *e = fixture(4, 2);
    static blob blobs[MAXBLOBS];
    static damage dmg;
    dmg.n = 0;
    int nb = list_blobs(e, "vals", blobs, MAXBLOBS);
    CHECK(nb > 40);
    for (int j = 0; j < 3; j++)
        damage_shard(e, "vals", &blobs[j * 7], 4 + (uint32_t)(j % 2), D_DATA, NULL, &rng, &dmg);
    damage_shard(e, "vals", &blobs[40], 5, D_DELETE, NULL, &rng, &dmg);
    sop_db *db = ecdb_open(e, 1);
    read_all(db, e->nitems, NULL, "parity rot, repair on");
    expect_untouched(&dmg, "parity rot: a clean read never reads parity");
    sop_check_report rep;
    problems_reset();
    CHECK_RC(sop_db_check(db, collect, NULL, &rep, &err), SOP_CORRUPT, &err);
    CHECK_EQ(rep.problems, 4);
    for (int i = 0; i < dmg.n; i++)
        CHECK(strstr(problems, dmg.s[i].b.text) != NULL);
    expect_untouched(&dmg, "parity rot: check");
    /* scrub without repair: counted, nothing written */
    sop_scrub_report sr;
    problems_reset();
    CHECK_OK(sop_db_scrub(db, false, NULL, collect, NULL, &sr, &err), &err);
    CHECK_EQ(sr.bad_shards, 4);
    CHECK_EQ(sr.repaired_shards, 0);
    expect_untouched(&dmg, "parity rot: scrub without repair");
    /* with repair: rewritten */
    problems_reset();
    CHECK_OK(sop_db_scrub(db, true, NULL, collect, NULL, &sr, &err), &err);
    CHECK_EQ(sr.bad_shards, 4);
    CHECK_EQ(sr.repaired_shards, 4);
    expect_healed(e, &dmg, "parity rot: scrub");
    check_clean(db, "parity rot: after scrub");
    sop_db_close(db);
    damage_free(&dmg);
    fixture_done(e);
}

static uint64_t progress_done, progress_total, progress_calls;

static void on_progress(void *ctx, const char *store, uint64_t done, uint64_t total)
{
    (void)ctx;
    (void)store;
    progress_calls++;
    CHECK(done <= total);
    progress_done += done == total ? done : 0;
    progress_total = total;
}

TEST(scrub_of_a_clean_database_counts_every_shard)
{
    ecdb *e = fixture(2, 1);
    sop_db *db = ecdb_open(e, -1);
    static blob blobs[MAXBLOBS];
    int live = 0;
    for (int s = 0; s < NSTORES; s++)
        live += list_blobs(e, snames[s], blobs, MAXBLOBS);
    sop_scrub_report sr;
    progress_done = progress_total = progress_calls = 0;
    CHECK_OK(sop_db_scrub(db, true, on_progress, NULL, NULL, &sr, &err), &err);
    CHECK_EQ(sr.stores, NSTORES);
    CHECK_EQ(sr.blobs, live);
    CHECK_EQ(sr.shards, (uint64_t)live * 3);
    CHECK_EQ(sr.bad_shards + sr.repaired_shards + sr.lost_blobs + sr.orphan_blobs, 0);
    CHECK(progress_calls >= NSTORES);
    CHECK_EQ(progress_done, live); /* each store's last call has done == total */
    check_clean(db, "clean");
    sop_db_close(db);
    fixture_done(e);
}

/* ---- 3. more damage than the parity covers ------------------------------------------- */

static void beyond_parity(uint32_t k, uint32_t p)
{
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    ecdb *e = fixture(k, p);
    char what[128];
    static bool failed[NSTORES * NITEMS];
    static damage dmg;
    dmg.n = 0;

    /* p+1 shards of the value blob of key 42 */
    blob vb = value_blob(e, 42);
    uint32_t set = pick_shards(e, p + 1, 0, &rng);
    int nk = 0;
    for (uint32_t i = 0; i < e->n; i++)
        if ((set >> i) & 1u)
            damage_shard(e, "vals", &vb, i, nk++ ? D_DATA : D_DELETE, NULL, &rng, &dmg);
    for (int repair = 0; repair < 2; repair++) {
        snprintf(what, sizeof(what), "%u+%u, %u shards of the value of key 42 bad, repair %s", k, p,
                 p + 1, repair ? "on" : "off");
        sop_db *db = ecdb_open(e, repair);
        int nf = read_all(db, e->nitems, failed, what);
        CHECK_MSG(nf == 1 && failed[NITEMS + 42], "%s: %d keys failed", what, nf);
        CHECK_RC(sop_db_check(db, NULL, NULL, NULL, &err), SOP_CORRUPT, &err);
        sop_scrub_report sr;
        problems_reset();
        CHECK_RC(sop_db_scrub(db, true, NULL, collect, NULL, &sr, &err), SOP_CORRUPT, &err);
        CHECK_EQ(sr.lost_blobs, 1);
        CHECK_EQ(sr.repaired_shards, 0);
        CHECK_MSG(strstr(problems, vb.text) != NULL, "%s: scrub does not name %s:\n%s", what,
                  vb.text, problems);
        expect_untouched(&dmg, what); /* nothing rewritten from too few shards */
        sop_db_close(db);
    }
    damage_undo(&dmg);

    /* every shard of a value blob gone */
    vb = value_blob(e, 43);
    for (uint32_t i = 0; i < e->n; i++)
        damage_shard(e, "vals", &vb, i, D_DELETE, NULL, &rng, &dmg);
    sop_db *db = ecdb_open(e, 1);
    snprintf(what, sizeof(what), "%u+%u, every shard of the value of key 43 deleted", k, p);
    int nf = read_all(db, e->nitems, failed, what);
    CHECK_MSG(nf == 1 && failed[NITEMS + 43], "%s: %d keys failed", what, nf);
    CHECK_RC(sop_db_check(db, NULL, NULL, NULL, &err), SOP_CORRUPT, &err);
    expect_untouched(&dmg, what);
    sop_db_close(db);
    damage_undo(&dmg);

    /* p+1 shards of a leaf: the node holding key 2 (the leftmost leaf) */
    blob nb;
    CHECK(find_blob(e, "nodes", "key000002", 9, &nb));
    set = pick_shards(e, p + 1, 0, &rng);
    nk = 0;
    for (uint32_t i = 0; i < e->n; i++)
        if ((set >> i) & 1u)
            damage_shard(e, "nodes", &nb, i, nk++ % 2 ? D_TRUNCATE : D_HEADER, NULL, &rng, &dmg);
    db = ecdb_open(e, 1);
    snprintf(what, sizeof(what), "%u+%u, %u shards of a leaf bad", k, p, p + 1);
    nf = read_all(db, e->nitems, failed, what);
    CHECK_MSG(nf >= 1 && nf <= 8 && failed[2], "%s: %d keys failed (key 2 %s)", what, nf,
              failed[2] ? "among them" : "not among them");
    for (int i = 0; i < NITEMS; i++)
        CHECK_MSG(!failed[NITEMS + i], "%s: key %d of the other store failed", what, i);
    problems_reset();
    CHECK_RC(sop_db_check(db, collect, NULL, NULL, &err), SOP_CORRUPT, &err);
    CHECK_MSG(strstr(problems, nb.text) != NULL, "%s: check does not name %s:\n%s", what, nb.text,
              problems);
    expect_untouched(&dmg, what);
    sop_db_close(db);
    damage_undo(&dmg);

    db = ecdb_open(e, 0);
    read_all(db, e->nitems, NULL, "undone");
    check_clean(db, "undone");
    sop_db_close(db);
    fixture_done(e);
}

TEST(ec_2_1_two_bad_shards_are_a_clean_error)
{
    beyond_parity(2, 1);
}

TEST(ec_4_2_three_bad_shards_are_a_clean_error)
{
    beyond_parity(4, 2);
}

/* ---- 4. degraded reads meeting rot elsewhere; forged shards -------------------------- */

/* Reads key i of the separate store: SOP_OK with the right bytes or
 * SOP_CORRUPT; returns which. */
static sop_rc read_value(sop_db *db, int i, const char *what)
{
    sop__l1_clear();
    sop_txn *t;
    sop_btree *bt[NSTORES];
    begin_read(db, &t, bt);
    char k[32], v[128];
    int kl = key_of(i, k, sizeof(k));
    int vl = value_of(1, i, gen_of(i), v, sizeof(v));
    sop_item it;
    sop_rc rc = sop_btree_get(bt[1], k, (size_t)kl, &it, &err);
    CHECK_MSG(rc == SOP_OK || rc == SOP_CORRUPT, "%s: %s %s", what, sop_rc_name(rc), err.msg);
    if (rc == SOP_OK)
        CHECK_MSG(it.value_len == (size_t)vl && memcmp(it.value, v, (size_t)vl) == 0,
                  "%s: WRONG BYTES: got %.*s want %s", what, (int)it.value_len,
                  (const char *)it.value, v);
    sop_txn_rollback(t, NULL);
    sop_txn_free(t);
    return rc;
}

typedef struct dmgspec {
    uint32_t idx;
    int kind;
} dmgspec;

static void degraded_case(ecdb *e, int key, const dmgspec *spec, int nspec, bool must_fail,
                          t_rng *rng)
{
    char what[200];
    int o = snprintf(what, sizeof(what), "%u+%u, value of key %d:", e->k, e->p, key);
    for (int j = 0; j < nspec && o < (int)sizeof(what); j++)
        o += snprintf(what + o, sizeof(what) - (size_t)o, " %s shard %u", dnames[spec[j].kind],
                      spec[j].idx);
    blob b = value_blob(e, key);
    static damage dmg;
    dmg.n = 0;
    for (int j = 0; j < nspec; j++)
        damage_shard(e, "vals", &b, spec[j].idx, spec[j].kind, NULL, rng, &dmg);
    for (int repair = 0; repair < 2; repair++) {
        sop_db *db = ecdb_open(e, repair);
        sop_rc rc = read_value(db, key, what);
        if (must_fail)
            CHECK_MSG(rc == SOP_CORRUPT, "%s (repair %d): %s", what, repair, sop_rc_name(rc));
        else if (rc != SOP_OK)
            printf("# %s: SOP_CORRUPT (not recovered from the parity, but no wrong bytes)\n", what);
        /* nothing was rewritten from bytes that failed the blob checksum */
        if (rc != SOP_OK)
            expect_untouched(&dmg, what);
        sop_db_close(db);
        if (rc == SOP_OK && repair)
            expect_healed(e, &dmg, what);
    }
    damage_undo(&dmg);
}

TEST(degraded_read_with_rot_in_another_shard_is_an_error_not_wrong_bytes)
{
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    ecdb *e = fixture(2, 1);
    /* 2+1: shard 0 gone, shard 1 rotten */
    degraded_case(e, 10, (dmgspec[]){{0, D_DELETE}, {1, D_DATA}}, 2, true, &rng);
    degraded_case(e, 11, (dmgspec[]){{1, D_DELETE}, {2, D_DATA}}, 2, true, &rng);
    degraded_case(e, 12, (dmgspec[]){{0, D_TRUNCATE}, {2, D_HEADER}}, 2, true, &rng);
    /* a shard forged with valid checksums: only the blob checksum sees it */
    degraded_case(e, 13, (dmgspec[]){{0, D_DELETE}, {1, D_FORGE}}, 2, true, &rng);
    degraded_case(e, 14, (dmgspec[]){{1, D_DELETE}, {2, D_FORGE}}, 2, true, &rng);
    degraded_case(e, 15, (dmgspec[]){{0, D_FORGE}}, 1, false, &rng);
    sop_db *db = ecdb_open(e, 0);
    check_clean(db, "2+1 after the degraded cases");
    sop_db_close(db);
    fixture_done(e);

    ecdb *f = fixture(4, 2);
    /* 4+2: two gone, a third rotten */
    degraded_case(f, 10, (dmgspec[]){{0, D_DELETE}, {3, D_DELETE}, {1, D_DATA}}, 3, true, &rng);
    degraded_case(f, 11, (dmgspec[]){{1, D_DELETE}, {2, D_DELETE}, {5, D_DATA}}, 3, true, &rng);
    degraded_case(f, 13, (dmgspec[]){{0, D_DELETE}, {4, D_DELETE}, {2, D_FORGE}}, 3, true, &rng);
    degraded_case(f, 14, (dmgspec[]){{2, D_DELETE}, {3, D_DELETE}, {4, D_FORGE}}, 3, true, &rng);
    degraded_case(f, 15, (dmgspec[]){{2, D_FORGE}}, 1, false, &rng);
    db = ecdb_open(f, 0);
    check_clean(db, "4+2 after the degraded cases");
    sop_db_close(db);
    fixture_done(f);
}

/* ---- 5. kill -9 in the middle of a repair ----------------------------------------------- */

typedef struct crashspec {
    const char *name;
    bool at_point;  /* the ec.shard_repaired point, else an I/O site */
    sop__site site; /* killed before its nth call */
    unsigned nth;
} crashspec;

static void crash_case(ecdb *e, const crashspec *cs, t_rng *rng)
{
    char what[160];
    snprintf(what, sizeof(what), "%u+%u, killed at %s #%u during repair", e->k, e->p, cs->name,
             cs->nth);
    /* p bad shards (a data shard among them) of 3 values and a node */
    static damage dmg;
    dmg.n = 0;
    static const int keys[] = {20, 50, 80};
    for (int j = 0; j < 3; j++) {
        blob b = value_blob(e, keys[j]);
        uint32_t set = pick_shards(e, e->p, 1u << t_rng_below(rng, e->k), rng);
        for (uint32_t i = 0; i < e->n; i++)
            if ((set >> i) & 1u)
                damage_shard(e, "vals", &b, i, i % 2 ? D_DATA : D_DELETE, NULL, rng, &dmg);
    }
    blob nb;
    CHECK(find_blob(e, "nodes", "key000100", 9, &nb));
    uint32_t set = pick_shards(e, e->p, 1u, rng);
    for (uint32_t i = 0; i < e->n; i++)
        if ((set >> i) & 1u)
            damage_shard(e, "nodes", &nb, i, D_TRUNCATE, NULL, rng, &dmg);

    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        sop__fault_reset();
        if (cs->at_point)
            sop__fault_kill_at(SOP__POINT_EC_SHARD_REPAIRED, cs->nth);
        else
            sop__fault_io(cs->site, cs->nth, SOP__FAULT_KILL, false);
        sop_db *db = ecdb_open(e, 1);
        read_all(db, e->nitems, NULL, what);
        sop_db_close(db);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "%s: the child was not killed (status %#x)", what, status);
    int healed = count_healed(&dmg, what);
    if (cs->at_point)
        CHECK_MSG(healed >= (int)cs->nth, "%s: %d shards healed", what, healed);
    CHECK_MSG(healed < dmg.n, "%s: everything healed before the kill", what);

    sop_db *db = ecdb_open(e, 0);
    read_all(db, e->nitems, NULL, what);
    sop_scrub_report sr;
    CHECK_OK(sop_db_scrub(db, true, NULL, NULL, NULL, &sr, &err), &err);
    CHECK_EQ(sr.lost_blobs, 0);
    CHECK_EQ(sr.orphan_blobs, 0);
    CHECK_EQ(sr.repaired_shards, dmg.n - healed);
    expect_healed(e, &dmg, what);
    check_clean(db, what);
    sop_db_close(db);
    damage_free(&dmg);
    /* a repair killed before its rename leaves its temporary file, which
     * no reader, check or scrub takes for a shard */
    int others = 0;
    for (uint32_t i = 0; i < e->n; i++) {
        static blob tmp[MAXBLOBS];
        int o;
        for (int s = 0; s < NSTORES; s++) {
            list_drive(e->drive[i], snames[s], tmp, MAXBLOBS, &o);
            others += o;
        }
    }
    if (others)
        printf("# %s: %d temporary file(s) left in the drive folders\n", what, others);
}

TEST(kill_during_repair_is_harmless)
{
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    static const crashspec specs[] = {
        {"ec.shard_repaired", true, SOP__SITE_ALL, 1},
        {"ec.shard_repaired", true, SOP__SITE_ALL, 2},
        {"blob.write (temporary file written)", false, SOP__SITE_BLOB_WRITE, 1},
        {"blob.sync (temporary file synced)", false, SOP__SITE_BLOB_SYNC, 1},
        {"blob.write (rename over the bad shard)", false, SOP__SITE_BLOB_WRITE, 3},
    };
    static const uint32_t shapes[][2] = {{2, 1}, {4, 2}};
    for (int sh = 0; sh < 2; sh++) {
        ecdb *e = fixture(shapes[sh][0], shapes[sh][1]);
        for (size_t c = 0; c < sizeof(specs) / sizeof(specs[0]); c++)
            crash_case(e, &specs[c], &rng);
        fixture_done(e);
    }
}

/* ---- 6. puts that cannot place k shards --------------------------------------------------- */

/* The store's folder on a drive replaced by a regular file: every open under
 * it fails with ENOTDIR (chmod would not stop root). */
static void break_folder(const char *drive, const char *store)
{
    char path[1024], away[1100];
    snprintf(path, sizeof(path), "%s/%s", drive, store);
    snprintf(away, sizeof(away), "%s.away", path);
    if (exists(path))
        CHECK(rename(path, away) == 0);
    spit(path, "not a folder", 12);
}

static void fix_folder(const char *drive, const char *store)
{
    char path[1024], away[1100];
    snprintf(path, sizeof(path), "%s/%s", drive, store);
    snprintf(away, sizeof(away), "%s.away", path);
    CHECK(unlink(path) == 0);
    if (exists(away))
        CHECK(rename(away, path) == 0);
}

/* Shard file names on every drive of a store, as one string. */
static void snapshot(const ecdb *e, const char *store, char *out, size_t cap)
{
    static blob b[MAXBLOBS];
    size_t o = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < e->n; i++) {
        char path[1024], away[1100];
        snprintf(path, sizeof(path), "%s/%s", e->drive[i], store);
        snprintf(away, sizeof(away), "%s.away", path);
        struct stat st;
        int others = 0;
        int n = 0;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            n = list_drive(e->drive[i], store, b, MAXBLOBS, &others);
        else if (exists(away))
            n = list_drive(e->drive[i], strrchr(away, '/') + 1, b, MAXBLOBS, &others);
        o += (size_t)snprintf(out + o, cap - o, "drive %u: %d others:", i, others);
        for (int j = 0; j < n && o < cap; j++)
            o += (size_t)snprintf(out + o, cap - o, " %.8s", b[j].text);
        if (o < cap)
            o += (size_t)snprintf(out + o, cap - o, "\n");
        CHECK(o < cap);
    }
}

/* How many of keys from..from+n-1 (generation 1) store s has; a key that
 * is there must have its value. */
static int count_in(sop_db *db, int s, int from, int n)
{
    sop__l1_clear();
    sop_txn *t;
    sop_btree *bt[NSTORES];
    begin_read(db, &t, bt);
    int found = 0;
    for (int i = from; i < from + n; i++) {
        char k[32], v[128];
        int kl = key_of(i, k, sizeof(k));
        int vl = value_of(s, i, 1, v, sizeof(v));
        sop_item it;
        sop_rc rc = sop_btree_get(bt[s], k, (size_t)kl, &it, &err);
        CHECK_MSG(rc == SOP_OK || rc == SOP_NOTFOUND, "store %s key %d: %s %s", snames[s], i,
                  sop_rc_name(rc), err.msg);
        if (rc == SOP_OK) {
            CHECK(it.value_len == (size_t)vl && memcmp(it.value, v, (size_t)vl) == 0);
            found++;
        }
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    return found;
}

static int count_new(sop_db *db, int from, int n)
{
    return count_in(db, 0, from, n);
}

static sop_rc add_new(sop_db *db, int from, int n, int update_old)
{
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "nodes", &bt, &err), &err);
    for (int i = from; i < from + n; i++)
        put_item(bt, 0, i, 1);
    /* update_old > 0: keys 0..update_old-1 rewritten, so node bodies are
     * replaced and their old shards removed */
    for (int i = 0; i < update_old; i += 3)
        if (!removed(i))
            put_item(bt, 0, i, gen_of(i));
    sop_rc rc = sop_txn_commit(t, &err);
    sop_txn_free(t);
    return rc;
}

TEST(a_put_that_cannot_place_k_shards_fails_and_leaves_nothing)
{
    ecdb e;
    build(&e, "place", 2, 1, NSMALL);
    static char before[1 << 16], after[1 << 16];

    /* two of three drives broken: no blob can be placed */
    snapshot(&e, "nodes", before, sizeof(before));
    break_folder(e.drive[1], "nodes");
    break_folder(e.drive[2], "nodes");
    sop_db *db = ecdb_open(&e, 0);
    sop_rc rc = add_new(db, 1000, 40, 0);
    CHECK_MSG(rc != SOP_OK, "a commit with 1 of 3 drives committed");
    CHECK_MSG(rc == SOP_IO, "commit: %s %s", sop_rc_name(rc), err.msg);
    CHECK_MSG(strstr(err.msg, "shards written") != NULL, "commit: %s", err.msg);
    snapshot(&e, "nodes", after, sizeof(after));
    CHECK_MSG(strcmp(before, after) == 0, "shard files changed:\nbefore:\n%s\nafter:\n%s", before,
              after);
    /* the commit is durable but not applied: until the drives are back no
     * other commit can go ahead of it (even in a store on intact folders) */
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "vals", &bt, &err), &err);
    put_item(bt, 1, 5000, 1);
    rc = sop_txn_commit(t, &err);
    sop_txn_free(t);
    CHECK_MSG(rc != SOP_OK, "a commit went ahead of a pending one whose blobs cannot be written");

    /* an actively persisted value is written at once: the put fails */
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    break_folder(e.drive[0], "act");
    break_folder(e.drive[2], "act");
    bt = create_store(t, "act", 4, SOP_VALUES_ACTIVE);
    rc = sop_btree_upsert(bt, "a", 1, "value", 5, NULL, &err);
    CHECK_MSG(rc == SOP_IO, "active value put with 1 of 3 drives: %s %s", sop_rc_name(rc), err.msg);
    sop_txn_rollback(t, NULL);
    sop_txn_free(t);
    static blob b[MAXBLOBS];
    CHECK_EQ(list_drive(e.drive[1], "act", b, MAXBLOBS, NULL), 0);
    sop_db_close(db);

    fix_folder(e.drive[1], "nodes");
    fix_folder(e.drive[2], "nodes");
    fix_folder(e.drive[0], "act");
    fix_folder(e.drive[2], "act");
    db = ecdb_open(&e, 0);
    check_clean(db, "after the failed commit, drives restored");
    read_all(db, e.nitems, NULL, "after the failed commit");
    /* its record was durable: with the drives back, recovery finished it
     * (docs/erasure_coding.md, "Writing") - whole */
    CHECK_EQ(count_new(db, 1000, 40), 40);
    sop_store_info info;
    CHECK_RC(sop_db_store_info(db, "act", &info, &err), SOP_NOTFOUND, &err);

    /* one drive broken: the commit places 2 of 3 shards and succeeds (and
     * the removal of the replaced bodies tolerates the broken drive) */
    break_folder(e.drive[1], "nodes");
    CHECK_OK(add_new(db, 2000, 40, e.nitems), &err);
    CHECK_EQ(count_new(db, 2000, 40), 40);
    sop_db_close(db);
    /* degraded reads, with a repair that cannot write: still right */
    db = ecdb_open(&e, 1);
    read_all(db, e.nitems, NULL, "one drive broken");
    CHECK_EQ(count_new(db, 2000, 40), 40);
    problems_reset();
    CHECK_RC(sop_db_check(db, collect, NULL, NULL, &err), SOP_CORRUPT, &err);
    fix_folder(e.drive[1], "nodes");
    sop_db_close(db);

    db = ecdb_open(&e, 0);
    sop_scrub_report sr;
    /* without repair: counted, nothing changes */
    problems_reset();
    CHECK_OK(sop_db_scrub(db, false, NULL, collect, NULL, &sr, &err), &err);
    CHECK_MSG(sr.bad_shards >= 1 && sr.repaired_shards == 0 && sr.orphan_blobs >= 1,
              "scrub without repair: %llu bad, %llu repaired, %llu orphans\n%s",
              (unsigned long long)sr.bad_shards, (unsigned long long)sr.repaired_shards,
              (unsigned long long)sr.orphan_blobs, problems);
    uint64_t bad = sr.bad_shards, orphans = sr.orphan_blobs;
    problems_reset();
    CHECK_RC(sop_db_check(db, collect, NULL, NULL, &err), SOP_CORRUPT, &err);
    CHECK_MSG(strstr(problems, "orphan") != NULL, "check does not report the orphans:\n%s",
              problems);
    problems_reset();
    CHECK_OK(sop_db_scrub(db, true, NULL, collect, NULL, &sr, &err), &err);
    CHECK_EQ(sr.bad_shards, bad);
    CHECK_EQ(sr.orphan_blobs, orphans);
    CHECK_MSG(sr.repaired_shards >= 1 && sr.repaired_shards == sr.bad_shards,
              "scrub: %llu bad, %llu repaired\n%s", (unsigned long long)sr.bad_shards,
              (unsigned long long)sr.repaired_shards, problems);
    /* the shards of replaced bodies the broken drive kept are orphans */
    CHECK_MSG(sr.orphan_blobs >= 1, "no orphan shard on the restored drive:\n%s", problems);
    CHECK_EQ(sr.lost_blobs, 0);
    check_clean(db, "after scrub");
    CHECK_EQ(count_new(db, 2000, 40), 40);
    sop_db_close(db);
    /* every drive holds exactly the same blobs, every shard valid */
    for (int s = 0; s < NSTORES; s++) {
        static blob d0[MAXBLOBS], di[MAXBLOBS];
        int n0 = list_drive(e.drive[0], snames[s], d0, MAXBLOBS, NULL);
        for (uint32_t i = 0; i < e.n; i++) {
            int ni = list_drive(e.drive[i], snames[s], di, MAXBLOBS, NULL);
            CHECK_EQ(ni, n0);
            for (int j = 0; j < n0; j++) {
                CHECK(strcmp(d0[j].text, di[j].text) == 0);
                expect_valid_shard(&e, snames[s], &d0[j], i, "after scrub");
            }
        }
    }
}

/* ---- 7. configuration ------------------------------------------------------------------ */

static sop_rc init_with(const char *dir, const sop_ec_config *c, uint32_t n)
{
    sop_db_options o;
    sop_db_options_init(&o);
    o.ec = c;
    o.ec_count = n;
    return sop_db_init(dir, &o, &err);
}

static sop_rc open_with(const char *dir, const sop_ec_config *c, uint32_t n, sop_db **db)
{
    sop_db_options o;
    sop_db_options_init(&o);
    o.ec = c;
    o.ec_count = n;
    *db = NULL;
    sop_rc rc = sop_db_open(dir, &o, db, &err);
    if (rc != SOP_OK)
        CHECK(*db == NULL);
    return rc;
}

#define MAXDRIVES 40
typedef struct drives {
    int n;
    sop_ec_drive d[MAXDRIVES];
    char store[MAXDRIVES][32];
    char path[MAXDRIVES][512];
} drives;

static void on_drive(void *ctx, const sop_ec_drive *d)
{
    drives *ds = ctx;
    CHECK(ds->n < MAXDRIVES);
    int i = ds->n++;
    ds->d[i] = *d;
    snprintf(ds->store[i], sizeof(ds->store[i]), "%s", d->store ? d->store : "(default)");
    snprintf(ds->path[i], sizeof(ds->path[i]), "%s", d->path);
    ds->d[i].store = ds->store[i];
    ds->d[i].path = ds->path[i];
}

static void get_drives(sop_db *db, drives *ds)
{
    memset(ds, 0, sizeof(*ds));
    CHECK_OK(sop_db_ec_drives(db, on_drive, ds, &err), &err);
}

static void expect_invalid(sop_rc rc, const char *what, const char *needle)
{
    CHECK_MSG(rc == SOP_INVALID, "%s: %s (%s), expected SOP_INVALID", what, sop_rc_name(rc),
              err.msg);
    CHECK_MSG(needle == NULL || strstr(err.msg, needle) != NULL,
              "%s: the message \"%s\" does not say \"%s\"", what, err.msg, needle);
}

TEST(config_errors_are_refused_at_init)
{
    ecdb e;
    ecdb_setup(&e, "cfg", 2, 1);
    sop_ec_config c = ecdb_entry(&e, false);
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/bad-db", t_tmpdir());
    c.data_shards = 0;
    expect_invalid(init_with(dir, &c, 1), "k = 0", "shards");
    c.data_shards = 2;
    c.parity_shards = 0;
    expect_invalid(init_with(dir, &c, 1), "p = 0", "shards");
    /* k + p > 32 (paths enough for 33) */
    static char many[40][64];
    const char *mp[40];
    for (int i = 0; i < 40; i++) {
        snprintf(many[i], sizeof(many[i]), "%s/m%d", t_tmpdir(), i);
        mp[i] = many[i];
    }
    sop_ec_config w = {NULL, 30, 3, mp, false};
    expect_invalid(init_with(dir, &w, 1), "30+3", "32");
    c.parity_shards = 1;
    /* duplicate paths, also through a trailing slash */
    const char *dup[3] = {e.drive[0], e.drive[1], e.drive[0]};
    c.paths = dup;
    expect_invalid(init_with(dir, &c, 1), "duplicate path", "both");
    char slash[600];
    snprintf(slash, sizeof(slash), "%s/", e.drive[1]);
    const char *dup2[3] = {e.drive[0], e.drive[1], slash};
    c.paths = dup2;
    expect_invalid(init_with(dir, &c, 1), "duplicate path with a trailing slash", "both");
    /* NULL paths, a NULL path, an empty path */
    c.paths = NULL;
    expect_invalid(init_with(dir, &c, 1), "paths NULL", "path");
    const char *nul[3] = {e.drive[0], NULL, e.drive[2]};
    c.paths = nul;
    expect_invalid(init_with(dir, &c, 1), "path 1 NULL", "NULL");
    const char *empty[3] = {e.drive[0], "", e.drive[2]};
    c.paths = empty;
    expect_invalid(init_with(dir, &c, 1), "path 1 empty", "empty");
    /* two default entries; a bad store name; entries but no array */
    c.paths = e.paths;
    sop_ec_config two[2] = {c, c};
    expect_invalid(init_with(dir, two, 2), "two default entries", "two entries");
    sop_ec_config named = c;
    named.store = "../x";
    expect_invalid(init_with(dir, &named, 1), "bad store name", "store");
    expect_invalid(init_with(dir, NULL, 1), "ec NULL, ec_count 1", NULL);
    /* nothing of the refused inits was left behind */
    CHECK_MSG(!exists(dir), "a refused init created %s", dir);
    for (uint32_t i = 0; i < e.n; i++) {
        char m[700];
        snprintf(m, sizeof(m), "%s/.sop-ec", e.drive[i]);
        CHECK_MSG(!exists(m), "a refused init wrote the marker %s", m);
    }

    /* a drive folder that cannot be created (its parent is missing): the
     * init fails and no database is there */
    char deep[600];
    snprintf(deep, sizeof(deep), "%s/no/such/parent", t_tmpdir());
    const char *dp[3] = {e.drive[0], e.drive[1], deep};
    c.paths = dp;
    sop_rc rc = init_with(dir, &c, 1);
    CHECK_MSG(rc == SOP_IO, "init with a drive folder under a missing parent: %s %s",
              sop_rc_name(rc), err.msg);
    char hdr[700];
    snprintf(hdr, sizeof(hdr), "%s/sop.db", dir);
    CHECK(!exists(hdr));

    /* 29+3 = 32 shards: the most there may be */
    w.data_shards = 29;
    w.parity_shards = 3;
    CHECK_OK(init_with(dir, &w, 1), &err);
    sop_db *db;
    CHECK_OK(open_with(dir, NULL, 0, &db), &err);
    drives ds;
    get_drives(db, &ds);
    CHECK_EQ(ds.n, 32);
    for (int i = 0; i < 32; i++)
        CHECK_MSG(ds.d[i].state == SOP_OK, "drive %d: %s", i, ds.d[i].detail);
    sop_db_close(db);
}

TEST(reopen_must_name_the_recorded_config)
{
    ecdb e;
    build(&e, "reopen", 2, 1, NSMALL);
    sop_db *db;
    sop_ec_config c = ecdb_entry(&e, false);
    /* other shard counts over the same three paths */
    c.data_shards = 1;
    c.parity_shards = 2;
    expect_invalid(open_with(e.dir, &c, 1, &db), "open as 1+2",
                   "the database was created with 2+1 shards, not 1+2");
    expect_invalid(init_with(e.dir, &c, 1), "init again as 1+2",
                   "the database was created with 2+1 shards, not 1+2");
    /* other paths */
    c = ecdb_entry(&e, false);
    char other[600];
    snprintf(other, sizeof(other), "%s/elsewhere", t_tmpdir());
    const char *op[3] = {e.drive[0], other, e.drive[2]};
    c.paths = op;
    char want[1400];
    snprintf(want, sizeof(want), "path 1 is %s in the database, not %s", e.drive[1], other);
    expect_invalid(open_with(e.dir, &c, 1, &db), "open with another path", want);
    CHECK(!exists(other));
    /* the same paths in another order */
    const char *swapped[3] = {e.drive[1], e.drive[0], e.drive[2]};
    c.paths = swapped;
    snprintf(want, sizeof(want), "path 0 is %s in the database, not %s", e.drive[0], e.drive[1]);
    expect_invalid(open_with(e.dir, &c, 1, &db), "open with paths swapped", want);
    expect_invalid(init_with(e.dir, &c, 1), "init again with paths swapped", want);
    /* an entry the database does not have; an entry missing */
    c = ecdb_entry(&e, false);
    sop_ec_config extra[2] = {c, c};
    extra[1].store = "vals";
    expect_invalid(open_with(e.dir, extra, 2, &db), "open with an extra entry",
                   "created without an entry for vals");
    /* a database created without erasure coding */
    char plain[600];
    snprintf(plain, sizeof(plain), "%s/plain-db", t_tmpdir());
    CHECK_OK(sop_db_init(plain, NULL, &err), &err);
    expect_invalid(open_with(plain, &c, 1, &db), "open a plain database with an entry", NULL);
    expect_invalid(init_with(plain, &c, 1), "init a plain database again with an entry", NULL);

    /* the recorded configuration damaged: the open refuses, naming it */
    char conf[700];
    snprintf(conf, sizeof(conf), "%s/erasure", e.dir);
    uint8_t *cb;
    size_t cl;
    CHECK(slurp(conf, &cb, &cl));
    cb[cl / 2] ^= 0x10;
    spit(conf, cb, cl);
    CHECK_RC(sop_db_open(e.dir, NULL, &db, &err), SOP_CORRUPT, &err);
    CHECK_MSG(strstr(err.msg, conf) != NULL, "the message does not name %s: %s", conf, err.msg);
    cb[cl / 2] ^= 0x10;
    spit(conf, cb, cl);
    free(cb);

    /* ec_count 0: the recorded config; the same entry with repair: fine */
    db = ecdb_open(&e, -1);
    drives ds;
    get_drives(db, &ds);
    CHECK_EQ(ds.n, 3);
    for (int i = 0; i < 3; i++) {
        CHECK(strcmp(ds.d[i].store, "(default)") == 0);
        CHECK_EQ(ds.d[i].index, i);
        CHECK_EQ(ds.d[i].data_shards, 2);
        CHECK_EQ(ds.d[i].parity_shards, 1);
        CHECK(strcmp(ds.d[i].path, e.drive[i]) == 0);
        CHECK(!ds.d[i].repair);
        CHECK_MSG(ds.d[i].state == SOP_OK, "drive %d: %s %s", i, sop_rc_name(ds.d[i].state),
                  ds.d[i].detail);
    }
    read_all(db, e.nitems, NULL, "opened with the recorded config");
    sop_db_close(db);
    db = ecdb_open(&e, 1);
    get_drives(db, &ds);
    for (int i = 0; i < 3; i++)
        CHECK(ds.d[i].repair);
    sop_db_close(db);
    /* a trailing slash names the same folder */
    char slash[600];
    snprintf(slash, sizeof(slash), "%s/", e.drive[2]);
    const char *sl[3] = {e.drive[0], e.drive[1], slash};
    c = ecdb_entry(&e, false);
    c.paths = sl;
    CHECK_OK(open_with(e.dir, &c, 1, &db), &err);
    sop_db_close(db);
    /* init again with the same config is fine */
    CHECK_OK(init_with(e.dir, (sop_ec_config[]){ecdb_entry(&e, true)}, 1), &err);
}

TEST(drive_markers_catch_swapped_folders_and_are_rewritten_when_missing)
{
    ecdb e;
    build(&e, "marker", 2, 1, NSMALL);
    sop_db *db = ecdb_open(&e, 0);
    drives ds;
    get_drives(db, &ds);
    for (int i = 0; i < 3; i++)
        CHECK(ds.d[i].state == SOP_OK);
    char m1[700];
    snprintf(m1, sizeof(m1), "%s/.sop-ec", e.drive[1]);
    CHECK(exists(m1));

    /* a marker deleted (a replaced drive): SOP_NOTFOUND; written again on
     * the next open */
    CHECK(unlink(m1) == 0);
    get_drives(db, &ds);
    CHECK(ds.d[0].state == SOP_OK && ds.d[2].state == SOP_OK);
    CHECK_MSG(ds.d[1].state == SOP_NOTFOUND, "drive 1 without its marker: %s",
              sop_rc_name(ds.d[1].state));
    CHECK(ds.d[1].detail[0] != '\0');
    sop_db_close(db);
    db = ecdb_open(&e, 0);
    CHECK(exists(m1));
    get_drives(db, &ds);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(ds.d[i].state == SOP_OK, "drive %d: %s", i, ds.d[i].detail);
    read_all(db, e.nitems, NULL, "after the marker came back");
    check_clean(db, "after the marker came back");
    /* a damaged marker: SOP_CORRUPT, and written again on the next open */
    spit(m1, "garbage", 7);
    get_drives(db, &ds);
    CHECK_MSG(ds.d[1].state == SOP_CORRUPT, "damaged marker: %s", sop_rc_name(ds.d[1].state));
    sop_db_close(db);
    db = ecdb_open(&e, 0);
    get_drives(db, &ds);
    CHECK_MSG(ds.d[1].state == SOP_OK, "damaged marker after reopen: %s", ds.d[1].detail);

    /* the folders of drives 0 and 1 swapped under an open handle: the
     * markers say so */
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s/swap-tmp", t_tmpdir());
    CHECK(rename(e.drive[0], tmp) == 0);
    CHECK(rename(e.drive[1], e.drive[0]) == 0);
    CHECK(rename(tmp, e.drive[1]) == 0);
    get_drives(db, &ds);
    CHECK(ds.d[0].state == SOP_INVALID && ds.d[1].state == SOP_INVALID);
    CHECK(ds.d[2].state == SOP_OK);
    CHECK_MSG(strstr(ds.d[0].detail, "shard 1") != NULL, "%s", ds.d[0].detail);
    sop_db_close(db);
    /* ... and the open refuses them */
    sop_db *db2;
    expect_invalid(open_with(e.dir, NULL, 0, &db2), "open with folders swapped", "order");
    CHECK(rename(e.drive[0], tmp) == 0);
    CHECK(rename(e.drive[1], e.drive[0]) == 0);
    CHECK(rename(tmp, e.drive[1]) == 0);

    /* another database over the same folders */
    char other[600];
    snprintf(other, sizeof(other), "%s/other-db", t_tmpdir());
    expect_invalid(init_with(other, (sop_ec_config[]){ecdb_entry(&e, false)}, 1),
                   "a second database on the same drive folders", "another database");

    db = ecdb_open(&e, 0);
    read_all(db, e.nitems, NULL, "folders back in order");
    check_clean(db, "folders back in order");
    sop_db_close(db);
}

TEST(a_per_store_entry_overrides_the_default)
{
    ecdb def, s2;
    ecdb_setup(&def, "ovr-default", 2, 1);
    ecdb_setup(&s2, "ovr-s2", 4, 2);
    sop_ec_config c[2] = {ecdb_entry(&def, false), ecdb_entry(&s2, false)};
    c[1].store = "s2";
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/ovr-db", t_tmpdir());
    CHECK_OK(init_with(dir, c, 2), &err);
    for (uint32_t i = 0; i < 3; i++) {
        char m[700];
        snprintf(m, sizeof(m), "%s/.sop-ec", def.drive[i]);
        CHECK_MSG(exists(m), "%s", m);
    }
    for (uint32_t i = 0; i < 6; i++) {
        char m[700];
        snprintf(m, sizeof(m), "%s/.sop-ec-s2", s2.drive[i]);
        CHECK_MSG(exists(m), "%s", m);
    }
    /* entries in the other order, with repair on */
    sop_ec_config r[2] = {c[1], c[0]};
    r[0].repair = r[1].repair = true;
    sop_db *db;
    CHECK_OK(open_with(dir, r, 2, &db), &err);
    drives ds;
    get_drives(db, &ds);
    CHECK_EQ(ds.n, 9);
    int ndef = 0, ns2 = 0;
    for (int i = 0; i < ds.n; i++) {
        CHECK_MSG(ds.d[i].state == SOP_OK, "%s", ds.d[i].detail);
        CHECK(ds.d[i].repair);
        if (strcmp(ds.d[i].store, "s2") == 0) {
            CHECK(ds.d[i].data_shards == 4 && ds.d[i].parity_shards == 2);
            CHECK(strcmp(ds.d[i].path, s2.drive[ds.d[i].index]) == 0);
            ns2++;
        } else {
            CHECK(strcmp(ds.d[i].store, "(default)") == 0);
            CHECK(ds.d[i].data_shards == 2 && ds.d[i].parity_shards == 1);
            CHECK(strcmp(ds.d[i].path, def.drive[ds.d[i].index]) == 0);
            ndef++;
        }
    }
    CHECK(ndef == 3 && ns2 == 6);
    /* only the default entry: the database has one for s2 as well */
    sop_db *db2;
    expect_invalid(open_with(dir, c, 1, &db2), "open without the s2 entry",
                   "created with an entry for s2");

    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_btree *a = create_store(t, "s1", 8, SOP_VALUES_SEPARATE);
    sop_btree *b = create_store(t, "s2", 8, SOP_VALUES_SEPARATE);
    for (int i = 0; i < 50; i++) {
        put_item(a, 1, i, 1);
        put_item(b, 1, i, 1);
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    check_clean(db, "per-store entry");
    sop_db_close(db);

    static blob bl[MAXBLOBS];
    /* s1 on the default drives, 2+1; s2 on its own, 4+2; neither in the
     * database folder or on the other's drives */
    int n1 = list_blobs(&def, "s1", bl, MAXBLOBS);
    CHECK(n1 > 50);
    for (uint32_t i = 0; i < 3; i++)
        expect_valid_shard(&def, "s1", &bl[0], i, "s1");
    int n2 = list_blobs(&s2, "s2", bl, MAXBLOBS);
    CHECK(n2 > 50);
    for (uint32_t i = 0; i < 6; i++)
        expect_valid_shard(&s2, "s2", &bl[0], i, "s2");
    CHECK_EQ(list_blobs(&def, "s2", bl, MAXBLOBS), 0);
    CHECK_EQ(list_blobs(&s2, "s1", bl, MAXBLOBS), 0);
    char plainblobs[700];
    snprintf(plainblobs, sizeof(plainblobs), "%s/stores/s1/blob", dir);
    CHECK_EQ(list_drive(plainblobs, "", bl, MAXBLOBS, NULL), 0);

    /* ec_count 0: both entries as recorded */
    CHECK_OK(open_with(dir, NULL, 0, &db), &err);
    get_drives(db, &ds);
    CHECK_EQ(ds.n, 9);
    for (int i = 0; i < ds.n; i++)
        CHECK(!ds.d[i].repair);
    check_clean(db, "per-store entry, reopened");
    /* dropping s2 removes its folder from its own drives only */
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_drop(t, "s2", &err), &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    for (uint32_t i = 0; i < 6; i++) {
        char path[700];
        snprintf(path, sizeof(path), "%s/s2", s2.drive[i]);
        CHECK_MSG(!exists(path), "the drop left %s", path);
        snprintf(path, sizeof(path), "%s/.sop-ec-s2", s2.drive[i]);
        CHECK(exists(path));
    }
    CHECK(list_blobs(&def, "s1", bl, MAXBLOBS) == n1);
    check_clean(db, "s2 dropped");
    sop_db_close(db);
}

/* ---- 8. drop ------------------------------------------------------------------------------ */

static bool any_dropped_leftover(const char *drive)
{
    DIR *d = opendir(drive);
    CHECK(d != NULL);
    bool found = false;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, ".dropped", 8) == 0)
            found = true;
    closedir(d);
    return found;
}

TEST(dropping_an_erasure_coded_store_removes_its_folder_on_every_drive)
{
    ecdb e;
    build(&e, "drop", 4, 2, NSMALL);
    sop_db *db = ecdb_open(&e, 0);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_drop(t, "vals", &err), &err);
    CHECK_OK(sop_txn_rollback(t, &err), &err);
    sop_txn_free(t);
    for (uint32_t i = 0; i < e.n; i++) {
        char path[700];
        snprintf(path, sizeof(path), "%s/vals", e.drive[i]);
        CHECK_MSG(exists(path), "a rolled-back drop removed %s", path);
    }
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_drop(t, "vals", &err), &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    for (uint32_t i = 0; i < e.n; i++) {
        char path[700], marker[700];
        snprintf(path, sizeof(path), "%s/vals", e.drive[i]);
        snprintf(marker, sizeof(marker), "%s/.sop-ec", e.drive[i]);
        CHECK_MSG(!exists(path), "the drop left %s", path);
        CHECK_MSG(!any_dropped_leftover(e.drive[i]), "the drop left a .dropped folder in %s",
                  e.drive[i]);
        CHECK(exists(marker));
        snprintf(path, sizeof(path), "%s/nodes", e.drive[i]);
        CHECK(exists(path));
    }
    check_clean(db, "after the drop");
    /* the name can be used again */
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_btree *bt = create_store(t, "vals", 8, SOP_VALUES_SEPARATE);
    put_item(bt, 1, 1, 1);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    check_clean(db, "the name again");
    static blob bl[MAXBLOBS];
    CHECK_EQ(list_blobs(&e, "vals", bl, MAXBLOBS), 2); /* a root node and a value */
    sop_db_close(db);
}

/* ---- a missing drive, a new empty drive ------------------------------------------------- */

TEST(a_missing_drive_is_read_around_and_a_new_empty_one_is_filled_by_scrub)
{
    ecdb e;
    build(&e, "newdrive", 2, 1, NSMALL);
    /* drive 0 (data shards) unmounted: its folder is gone */
    char away[700];
    snprintf(away, sizeof(away), "%s.unmounted", e.drive[0]);
    CHECK(rename(e.drive[0], away) == 0);
    sop_db *db = ecdb_open(&e, 1);
    CHECK_MSG(!exists(e.drive[0]), "the open created the missing drive folder");
    drives ds;
    get_drives(db, &ds);
    CHECK_EQ(ds.n, 3);
    CHECK_MSG(ds.d[0].state == SOP_NOTFOUND, "missing drive: %s", sop_rc_name(ds.d[0].state));
    CHECK(ds.d[1].state == SOP_OK && ds.d[2].state == SOP_OK);
    read_all(db, e.nitems, NULL, "drive 0 missing, repair on");
    /* commits go on with 2 of 3 shards */
    CHECK_OK(add_new(db, 3000, 20, e.nitems), &err);
    CHECK_EQ(count_new(db, 3000, 20), 20);
    sop_scrub_report sr;
    CHECK_OK(sop_db_scrub(db, true, NULL, NULL, NULL, &sr, &err), &err);
    CHECK_EQ(sr.bad_shards, sr.blobs); /* shard 0 of every blob */
    CHECK_EQ(sr.repaired_shards, 0);
    CHECK_EQ(sr.lost_blobs, 0);
    CHECK_MSG(!exists(e.drive[0]), "a repair created the missing drive folder");
    sop_db_close(db);

    /* a new, empty drive mounted there: marked on open, filled by scrub */
    CHECK(mkdir(e.drive[0], 0700) == 0);
    db = ecdb_open(&e, 0);
    get_drives(db, &ds);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(ds.d[i].state == SOP_OK, "drive %d: %s", i, ds.d[i].detail);
    read_all(db, e.nitems, NULL, "new drive 0");
    CHECK_RC(sop_db_check(db, NULL, NULL, NULL, &err), SOP_CORRUPT, &err);
    CHECK_OK(sop_db_scrub(db, true, NULL, NULL, NULL, &sr, &err), &err);
    CHECK_EQ(sr.bad_shards, sr.blobs);
    CHECK_EQ(sr.repaired_shards, sr.blobs);
    CHECK_EQ(sr.lost_blobs, 0);
    check_clean(db, "new drive 0 filled");
    CHECK_EQ(count_new(db, 3000, 20), 20);
    sop_db_close(db);
    for (int s = 0; s < NSTORES; s++) {
        static blob d0[MAXBLOBS], d1[MAXBLOBS];
        int n0 = list_drive(e.drive[0], snames[s], d0, MAXBLOBS, NULL);
        int n1 = list_drive(e.drive[1], snames[s], d1, MAXBLOBS, NULL);
        CHECK_EQ(n0, n1);
        for (int j = 0; j < n0; j++) {
            CHECK(strcmp(d0[j].text, d1[j].text) == 0);
            expect_valid_shard(&e, snames[s], &d1[j], 0, "new drive 0");
        }
    }
}

/* ---- kill -9 between the shards of a put --------------------------------------------- */

/* Keys from..from+n-1 (generation 1) into both stores, one commit. */
static void add_both(sop_db *db, int from, int n)
{
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    for (int s = 0; s < NSTORES; s++) {
        sop_btree *bt;
        CHECK_OK(sop_store_open(t, snames[s], &bt, &err), &err);
        for (int i = from; i < from + n; i++)
            put_item(bt, s, i, 1);
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
}

/* Three new values of the actively persisted store "act": each is written
 * (all its shards) when it is added. */
static void add_active(sop_db *db, int from)
{
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "act", &bt, &err), &err);
    for (int i = from; i < from + 3; i++)
        put_item(bt, 1, i, 1);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
}

/* Runs fn in a child killed at the nth shard written. */
static void kill_child(const ecdb *e, unsigned nth, void (*fn)(sop_db *db, int from), int from,
                       const char *what)
{
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        sop__fault_reset();
        sop__fault_kill_at(SOP__POINT_EC_SHARD_WRITTEN, nth);
        sop_db *db = ecdb_open(e, 0);
        fn(db, from);
        sop_db_close(db);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "%s: the child was not killed (status %#x)", what, status);
}

/* How many of the three values add_active(from) adds "act" has. */
static int count_in_act(sop_db *db, int from)
{
    sop__l1_clear();
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "act", &bt, &err), &err);
    int found = 0;
    for (int i = from; i < from + 3; i++) {
        char k[32];
        int kl = key_of(i, k, sizeof(k));
        sop_item it;
        sop_rc rc = sop_btree_get(bt, k, (size_t)kl, &it, &err);
        CHECK_MSG(rc == SOP_OK || rc == SOP_NOTFOUND, "act key %d: %s", i, err.msg);
        found += rc == SOP_OK;
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    return found;
}

static void add_both40(sop_db *db, int from)
{
    add_both(db, from, 40);
}

TEST(kill_between_the_shards_of_a_put_is_recovered)
{
    static const uint32_t shapes[][2] = {{2, 1}, {4, 2}};
    for (int sh = 0; sh < 2; sh++) {
        ecdb e;
        char name[32];
        snprintf(name, sizeof(name), "wkill%u%u", shapes[sh][0], shapes[sh][1]);
        build(&e, name, shapes[sh][0], shapes[sh][1], NSMALL);
        sop_db *db = ecdb_open(&e, 0);
        sop_txn *t;
        CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
        sop_btree *bt = create_store(t, "act", 4, SOP_VALUES_ACTIVE);
        put_item(bt, 1, 0, 1);
        CHECK_OK(sop_txn_commit(t, &err), &err);
        sop_txn_free(t);
        sop_db_close(db);

        /* phase 2 of a commit (node bodies, separate values): the commit
         * record is durable, so recovery writes every blob again in full */
        unsigned nths[] = {1, e.n + 1, 3 * e.n - 1};
        for (int c = 0; c < 3; c++) {
            char what[128];
            snprintf(what, sizeof(what), "%u+%u, commit killed at ec.shard_written #%u", e.k, e.p,
                     nths[c]);
            int from = 1000 + 100 * c;
            kill_child(&e, nths[c], add_both40, from, what);
            db = ecdb_open(&e, 0);
            for (int s = 0; s < NSTORES; s++)
                CHECK_MSG(count_in(db, s, from, 40) == 40, "%s: store %s lost the commit", what,
                          snames[s]);
            read_all(db, e.nitems, NULL, what);
            sop_scrub_report sr;
            CHECK_OK(sop_db_scrub(db, false, NULL, NULL, NULL, &sr, &err), &err);
            CHECK_MSG(sr.bad_shards == 0 && sr.orphan_blobs == 0 && sr.lost_blobs == 0,
                      "%s: scrub: %llu bad shards, %llu orphans", what,
                      (unsigned long long)sr.bad_shards, (unsigned long long)sr.orphan_blobs);
            check_clean(db, what);
            sop_db_close(db);
        }
        /* an actively persisted value being written: its transaction never
         * committed, so recovery removes every shard it left */
        unsigned anths[] = {1, e.k, e.n};
        static char before[1 << 14], after[1 << 14];
        snapshot(&e, "act", before, sizeof(before));
        for (int c = 0; c < 3; c++) {
            char what[128];
            snprintf(what, sizeof(what), "%u+%u, active value put killed at ec.shard_written #%u",
                     e.k, e.p, anths[c]);
            kill_child(&e, anths[c], add_active, 500 + 10 * c, what);
            db = ecdb_open(&e, 0);
            CHECK_EQ(count_in_act(db, 500 + 10 * c), 0);
            sop_scrub_report sr;
            CHECK_OK(sop_db_scrub(db, false, NULL, NULL, NULL, &sr, &err), &err);
            CHECK_MSG(sr.bad_shards == 0 && sr.orphan_blobs == 0,
                      "%s: scrub: %llu bad shards, %llu orphans", what,
                      (unsigned long long)sr.bad_shards, (unsigned long long)sr.orphan_blobs);
            check_clean(db, what);
            sop_db_close(db);
            snapshot(&e, "act", after, sizeof(after));
            CHECK_MSG(strcmp(before, after) == 0,
                      "%s: shards of the uncommitted value are left:\nbefore:\n%s\nafter:\n%s",
                      what, before, after);
        }
    }
}

/* ---- blob sizes at the edges --------------------------------------------------------------- */

/* Values of 0, 1, k-1, k, k+1 bytes (tiny blobs: whole data shards of
 * padding, or none at all) and large ones, separately stored: every single
 * shard deleted or rotten in turn, read back, repaired. */
TEST(tiny_empty_and_large_blobs_survive_every_single_bad_shard)
{
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    static const uint32_t shapes[][2] = {{2, 1}, {4, 2}};
    for (int sh = 0; sh < 2; sh++) {
        ecdb e;
        char name[32];
        snprintf(name, sizeof(name), "sizes%u%u", shapes[sh][0], shapes[sh][1]);
        ecdb_setup(&e, name, shapes[sh][0], shapes[sh][1]);
        ecdb_init(&e);
        size_t sizes[] = {0, 1, e.k - 1, e.k, e.k + 1, 4096 * e.k + 1, 200003};
        enum { NS = sizeof(sizes) / sizeof(sizes[0]) };
        uint8_t *vals[NS];
        sop_db *db = ecdb_open(&e, 1);
        sop_txn *t;
        CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
        sop_btree *bt = create_store(t, "sizes", 8, SOP_VALUES_SEPARATE);
        for (int i = 0; i < NS; i++) {
            vals[i] = malloc(sizes[i] + 1);
            CHECK(vals[i] != NULL);
            for (size_t j = 0; j < sizes[i]; j++)
                vals[i][j] = (uint8_t)t_rng_next(&rng);
            char k[8] = {'v', (char)('a' + i), 0};
            CHECK_OK(sop_btree_upsert(bt, k, 2, vals[i], sizes[i], NULL, &err), &err);
        }
        CHECK_OK(sop_txn_commit(t, &err), &err);
        sop_txn_free(t);
        static blob bl[MAXBLOBS];
        int nb = list_blobs(&e, "sizes", bl, MAXBLOBS);
        CHECK_EQ(nb, NS + 1); /* the values and one root node */
        for (int j = 0; j < nb; j++) {
            for (uint32_t idx = 0; idx < e.n; idx++) {
                for (int kind = 0; kind < 3; kind++) { /* delete, header flip, payload flip */
                    int kd = kind == 0 ? D_DELETE : kind == 1 ? D_HEADER : D_DATA;
                    if (kd == D_DATA && bl[j].len == 0)
                        kd = D_TRUNCATE; /* no payload to flip */
                    static damage dmg;
                    dmg.n = 0;
                    damage_shard(&e, "sizes", &bl[j], idx, kd, NULL, &rng, &dmg);
                    char what[160];
                    snprintf(what, sizeof(what), "%u+%u, blob of %llu bytes, %s of shard %u", e.k,
                             e.p, (unsigned long long)bl[j].len, dnames[kd], idx);
                    /* read everything (repair on) */
                    sop__l1_clear();
                    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
                    CHECK_OK(sop_store_open(t, "sizes", &bt, &err), &err);
                    for (int i = 0; i < NS; i++) {
                        char k[8] = {'v', (char)('a' + i), 0};
                        sop_item it;
                        sop_rc rc = sop_btree_get(bt, k, 2, &it, &err);
                        CHECK_MSG(rc == SOP_OK, "%s: value %d: %s", what, i, err.msg);
                        CHECK_MSG(it.value_len == sizes[i] &&
                                      (sizes[i] == 0 || memcmp(it.value, vals[i], sizes[i]) == 0),
                                  "%s: value %d: WRONG BYTES", what, i);
                    }
                    CHECK_OK(sop_txn_commit(t, &err), &err);
                    sop_txn_free(t);
                    if (idx < e.k) { /* a data shard: the read repaired it */
                        expect_healed(&e, &dmg, what);
                        damage_free(&dmg);
                    } else { /* parity: scrub does */
                        sop_scrub_report sr;
                        CHECK_OK(sop_db_scrub(db, true, NULL, NULL, NULL, &sr, &err), &err);
                        CHECK_MSG(sr.repaired_shards == 1, "%s: scrub repaired %llu", what,
                                  (unsigned long long)sr.repaired_shards);
                        expect_healed(&e, &dmg, what);
                        damage_free(&dmg);
                    }
                }
            }
        }
        check_clean(db, "sizes");
        sop_db_close(db);
        for (int i = 0; i < NS; i++)
            free(vals[i]);
    }
}

/* ---- injected I/O errors ----------------------------------------------------------------- */

/* A get of one separately stored value (the L1 cache emptied): SOP_OK with
 * the right bytes, or the error. */
static sop_rc get_one(sop_db *db, int i, const char *what)
{
    sop__l1_clear();
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    sop_rc rc = sop_store_open(t, "vals", &bt, &err);
    if (rc == SOP_OK) {
        char k[32], v[128];
        int kl = key_of(i, k, sizeof(k));
        int vl = value_of(1, i, gen_of(i), v, sizeof(v));
        sop_item it;
        rc = sop_btree_get(bt, k, (size_t)kl, &it, &err);
        if (rc == SOP_OK)
            CHECK_MSG(it.value_len == (size_t)vl && memcmp(it.value, v, (size_t)vl) == 0,
                      "%s: WRONG BYTES", what);
    }
    sop_err keep = err;
    sop_txn_rollback(t, NULL);
    sop_txn_free(t);
    err = keep;
    return rc;
}

/* Every single read failing once (a bad sector on one drive) is read
 * around; a drive that keeps failing from some call on is an error at
 * worst, never wrong bytes. */
TEST(read_errors_on_one_shard_are_read_around)
{
    ecdb e;
    build(&e, "rdfail", 4, 2, NSMALL);
    sop_db *db = ecdb_open(&e, 0);
    static const sop__site sites[] = {SOP__SITE_BLOB_OPEN, SOP__SITE_BLOB_READ};
    for (size_t si = 0; si < 2; si++) {
        for (int persistent = 0; persistent < 2; persistent++) {
            for (unsigned nth = 1;; nth++) {
                char what[128];
                snprintf(what, sizeof(what), "%s call %u fails%s", sop__fault_site_name(sites[si]),
                         nth, persistent ? " from then on" : "");
                sop__fault_reset();
                sop__fault_io(sites[si], nth, SOP__FAULT_EIO, persistent);
                sop_rc rc = get_one(db, 42, what);
                unsigned long injected = sop__fault_injected();
                sop__fault_reset();
                if (injected == 0) {
                    CHECK_OK(rc, &err);
                    break;
                }
                if (!persistent)
                    CHECK_MSG(rc == SOP_OK, "%s: %s %s", what, sop_rc_name(rc), err.msg);
                else
                    CHECK_MSG(rc == SOP_OK || rc == SOP_IO || rc == SOP_CORRUPT, "%s: %s %s", what,
                              sop_rc_name(rc), err.msg);
                CHECK(nth < 200);
            }
        }
    }
    check_clean(db, "after the read faults");
    sop_db_close(db);
}

/* Shard writes failing (once, or from some call on) during a commit: one
 * failed shard still leaves k, so the commit succeeds and scrub completes
 * the blob; more is a failed phase 2 that recovery finishes. Either way the
 * database ends whole and clean. */
TEST(write_errors_on_shards_during_a_commit)
{
    ecdb e;
    build(&e, "wrfail", 2, 1, 30);
    int from = 1000, failed_commits = 0;
    static const unsigned nths[] = {1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144};
    for (int persistent = 0; persistent < 2; persistent++) {
        for (size_t c = 0; c < sizeof(nths) / sizeof(nths[0]); c++) {
            char what[128];
            snprintf(what, sizeof(what), "blob.write call %u fails%s", nths[c],
                     persistent ? " from then on" : "");
            sop_db *db = ecdb_open(&e, 0);
            sop__fault_reset();
            sop__fault_io(SOP__SITE_BLOB_WRITE, nths[c], SOP__FAULT_EIO, persistent);
            sop_txn *t;
            CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
            for (int s = 0; s < NSTORES; s++) {
                sop_btree *bt;
                CHECK_OK(sop_store_open(t, snames[s], &bt, &err), &err);
                for (int i = from; i < from + 10; i++)
                    put_item(bt, s, i, 1);
            }
            sop_rc rc = sop_txn_commit(t, &err);
            sop_err keep = err;
            sop_txn_free(t);
            unsigned long injected = sop__fault_injected();
            sop__fault_reset();
            if (injected == 0) {
                CHECK_OK(rc, &keep);
                sop_db_close(db);
                break;
            }
            if (!persistent)
                CHECK_MSG(rc == SOP_OK, "%s: one failed shard failed the commit: %s", what,
                          keep.msg);
            else
                CHECK_MSG(rc == SOP_OK || rc == SOP_IO, "%s: %s %s", what, sop_rc_name(rc),
                          keep.msg);
            failed_commits += rc != SOP_OK;
            sop_db_close(db);
            db = ecdb_open(&e, 0); /* recovery finishes a failed phase 2 */
            for (int s = 0; s < NSTORES; s++)
                CHECK_MSG(count_in(db, s, from, 10) == 10, "%s: store %s: the commit is not whole",
                          what, snames[s]);
            read_all(db, e.nitems, NULL, what);
            sop_scrub_report sr;
            CHECK_OK(sop_db_scrub(db, true, NULL, NULL, NULL, &sr, &err), &err);
            CHECK_EQ(sr.lost_blobs, 0);
            check_clean(db, what);
            sop_db_close(db);
            from += 10;
        }
    }
    CHECK_MSG(failed_commits > 0, "no commit lost more than p shards of a blob");
}

/* ---- a store without an entry ------------------------------------------------------------- */

TEST(a_store_without_an_entry_keeps_plain_blobs_and_scrub_reads_them_too)
{
    ecdb v;
    ecdb_setup(&v, "mix-vals", 2, 1);
    v.nitems = 40;
    sop_ec_config c = ecdb_entry(&v, false);
    c.store = "vals"; /* no default: "nodes" is plain */
    snprintf(v.dir, sizeof(v.dir), "%s/mix-db", t_tmpdir());
    CHECK_OK(init_with(v.dir, &c, 1), &err);
    sop_db *db = ecdb_open(&v, -1);
    fill(db, v.nitems);
    drives ds;
    get_drives(db, &ds);
    CHECK_EQ(ds.n, 3);
    for (int i = 0; i < 3; i++)
        CHECK(strcmp(ds.d[i].store, "vals") == 0 && ds.d[i].state == SOP_OK);
    static blob pb[MAXBLOBS], vb[MAXBLOBS];
    char plain[700];
    snprintf(plain, sizeof(plain), "%s/stores/nodes", v.dir);
    int pn = list_drive(plain, "blob", pb, MAXBLOBS, NULL);
    int vn = list_blobs(&v, "vals", vb, MAXBLOBS);
    CHECK(pn > 0 && vn > 0);
    CHECK_EQ(list_blobs(&v, "nodes", pb + pn, MAXBLOBS - pn), 0);
    char vplain[700];
    snprintf(vplain, sizeof(vplain), "%s/stores/vals", v.dir);
    CHECK_EQ(list_drive(vplain, "blob", vb + vn, MAXBLOBS - vn, NULL), 0);
    sop_scrub_report sr;
    CHECK_OK(sop_db_scrub(db, false, NULL, NULL, NULL, &sr, &err), &err);
    CHECK_EQ(sr.blobs, pn + vn);
    CHECK_EQ(sr.shards, pn + 3 * vn); /* a plain blob counts as one shard */
    CHECK_EQ(sr.bad_shards, 0);
    /* a plain blob lost: nothing to rebuild it from */
    char path[1200];
    snprintf(path, sizeof(path), "%s/blob/%.2s/%s", plain, pb[0].text, pb[0].text);
    uint8_t *bytes;
    size_t len;
    CHECK(slurp(path, &bytes, &len));
    CHECK(unlink(path) == 0);
    CHECK_RC(sop_db_scrub(db, true, NULL, NULL, NULL, &sr, &err), SOP_CORRUPT, &err);
    CHECK_EQ(sr.lost_blobs, 1);
    CHECK_EQ(sr.repaired_shards, 0);
    spit(path, bytes, len);
    free(bytes);
    read_all(db, v.nitems, NULL, "mixed");
    check_clean(db, "mixed");
    sop_db_close(db);
}

/* ---- scrub next to writers ----------------------------------------------------------------- */

/*
 * sop_db_scrub(repair) removes blobs that nothing refers to. A blob that a
 * writer has put but not yet made reachable is not an orphan: an actively
 * persisted value of an open transaction (written when added, referenced at
 * commit), or the blobs of a commit that lands while the scrub runs (the
 * scrub reads the registry and the trees first and lists the blob files
 * much later). Removing them loses committed data.
 */
static sop_db *race_db;
static int race_state; /* 0 not yet, 1 committed, -1 the commit failed */
static sop_err race_err;

static void commit_during_scrub(void *ctx, const char *store, uint64_t done, uint64_t total)
{
    (void)ctx;
    if (race_state != 0 || strcmp(store, "vals") != 0 || done != total)
        return;
    /* between the scrub's walk of "vals" and its listing of the blob files */
    sop_txn *t;
    sop_btree *bt;
    race_state = -1;
    if (sop_txn_begin(race_db, SOP_TXN_WRITE, 0, &t, &race_err) != SOP_OK)
        return;
    sop_rc rc = sop_store_open(t, "vals", &bt, &race_err);
    for (int i = 5000; rc == SOP_OK && i < 5010; i++) {
        char k[32], v[128];
        int kl = key_of(i, k, sizeof(k));
        int vl = value_of(1, i, 1, v, sizeof(v));
        rc = sop_btree_upsert(bt, k, (size_t)kl, v, (size_t)vl, NULL, &race_err);
    }
    if (rc == SOP_OK)
        rc = sop_txn_commit(t, &race_err);
    else
        sop_txn_rollback(t, NULL);
    sop_txn_free(t);
    if (rc == SOP_OK)
        race_state = 1;
}

/* Keys from..from+n-1 of "vals": every one there with its value; else the
 * first failure's message in `why`. */
static bool all_there(sop_db *db, int from, int n, char *why, size_t cap)
{
    sop__l1_clear();
    sop_txn *t;
    sop_btree *bt[NSTORES];
    begin_read(db, &t, bt);
    bool ok = true;
    for (int i = from; i < from + n && ok; i++) {
        char k[32], v[128];
        int kl = key_of(i, k, sizeof(k));
        int vl = value_of(1, i, 1, v, sizeof(v));
        sop_item it;
        sop_rc rc = sop_btree_get(bt[1], k, (size_t)kl, &it, &err);
        if (rc != SOP_OK) {
            snprintf(why, cap, "key %d: %s: %s", i, sop_rc_name(rc), err.msg);
            ok = false;
        } else {
            CHECK_MSG(it.value_len == (size_t)vl && memcmp(it.value, v, (size_t)vl) == 0,
                      "key %d: WRONG BYTES", i);
        }
    }
    sop_txn_rollback(t, NULL);
    sop_txn_free(t);
    return ok;
}

TEST(scrub_repair_keeps_the_blobs_of_a_commit_that_lands_while_it_runs)
{
    ecdb e;
    build(&e, "race", 2, 1, NSMALL);
    sop_db *a = ecdb_open(&e, 0), *b = ecdb_open(&e, 0);
    race_db = a;
    race_state = 0;
    sop_scrub_report sr;
    problems_reset();
    sop_rc rc = sop_db_scrub(b, true, commit_during_scrub, collect, NULL, &sr, &err);
    /* the handles are closed before any verdict (no leak reports on failure) */
    char why[600] = "";
    bool ok = race_state == 1 && all_there(a, 5000, 10, why, sizeof(why));
    if (ok)
        check_clean(a, "after the scrub");
    sop_db_close(a);
    sop_db_close(b);
    CHECK_MSG(race_state == 1, "the commit during the scrub failed: %s", race_err.msg);
    CHECK_MSG(rc == SOP_OK || rc == SOP_CORRUPT, "scrub: %s %s", sop_rc_name(rc), err.msg);
    CHECK_MSG(ok,
              "ENGINE BUG (check.c, sop_db_scrub -> check_store/check_blob): a commit that "
              "landed while sop_db_scrub(repair) ran lost its blobs - the scrub took them for "
              "orphans (%llu removed) because it lists blob files long after it read the "
              "registry and walked the tree, without the commit lock: %s",
              (unsigned long long)sr.orphan_blobs, why);
}

TEST(scrub_repair_keeps_the_active_values_of_an_open_transaction)
{
    ecdb e;
    build(&e, "inflight", 2, 1, NSMALL);
    sop_db *a = ecdb_open(&e, 0), *b = ecdb_open(&e, 0);
    sop_txn *t;
    sop_btree *bt;
    CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, &t, &err), &err);
    create_store(t, "act", 4, SOP_VALUES_ACTIVE);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    /* a value added (its blob written at once), not yet committed */
    CHECK_OK(sop_txn_begin(a, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "act", &bt, &err), &err);
    CHECK_OK(sop_btree_upsert(bt, "new", 3, "in flight", 9, NULL, &err), &err);
    sop_scrub_report sr;
    problems_reset();
    CHECK_OK(sop_db_scrub(b, true, NULL, collect, NULL, &sr, &err), &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    sop__l1_clear();
    CHECK_OK(sop_txn_begin(b, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "act", &bt, &err), &err);
    sop_item it;
    sop_rc rc = sop_btree_get(bt, "new", 3, &it, &err);
    char why[400];
    snprintf(why, sizeof(why), "%s", err.msg);
    bool ok = rc == SOP_OK && it.value_len == 9 && memcmp(it.value, "in flight", 9) == 0;
    sop_txn_rollback(t, NULL);
    sop_txn_free(t);
    sop_db_close(a);
    sop_db_close(b);
    CHECK_MSG(ok,
              "ENGINE BUG (check.c, sop_db_scrub -> check_blob): sop_db_scrub(repair) removed "
              "the blob of an actively persisted value of an open transaction as an orphan "
              "(%llu orphans removed: %s); the transaction then committed and its value is "
              "gone: get -> %s %s",
              (unsigned long long)sr.orphan_blobs, problems, sop_rc_name(rc), why);
}

/* ---- wide codings ------------------------------------------------------------------------ */

static void wide_case(uint32_t k, uint32_t p, t_rng *rng)
{
    ecdb e;
    char name[32];
    snprintf(name, sizeof(name), "wide%u", k + p);
    build(&e, name, k, p, 12);
    for (int key = 0; key < 2; key++) {
        char what[128];
        snprintf(what, sizeof(what), "%u+%u, %u bad shards of the value of key %d", e.k, e.p, e.p,
                 key);
        blob b = value_blob(&e, key);
        static damage dmg;
        dmg.n = 0;
        /* shard 0, the last shard, and others */
        uint32_t set = pick_shards(&e, e.p, 1u | 1u << (e.n - 1), rng);
        for (uint32_t i = 0; i < e.n; i++)
            if ((set >> i) & 1u)
                damage_shard(&e, "vals", &b, i, i % 2 ? D_DATA : D_DELETE, NULL, rng, &dmg);
        if (key == 0) { /* a read with repair heals them */
            sop_db *db = ecdb_open(&e, 1);
            read_all(db, e.nitems, NULL, what);
            expect_healed(&e, &dmg, what);
            check_clean(db, what);
            sop_db_close(db);
        } else { /* check reports them, scrub heals them */
            sop_db *db = ecdb_open(&e, 0);
            read_all(db, e.nitems, NULL, what);
            CHECK_RC(sop_db_check(db, NULL, NULL, NULL, &err), SOP_CORRUPT, &err);
            sop_scrub_report sr;
            CHECK_OK(sop_db_scrub(db, true, NULL, NULL, NULL, &sr, &err), &err);
            CHECK_EQ(sr.bad_shards, e.p);
            CHECK_EQ(sr.repaired_shards, e.p);
            expect_healed(&e, &dmg, what);
            check_clean(db, what);
            sop_db_close(db);
        }
        damage_free(&dmg);
    }
}

/* 10+4, and 29+3: 32 shards, the most - every bit of a 32-bit shard mask in
 * use. p shards of a value deleted or rotten, read with repair, scrubbed.
 * The 32-shard case runs in a child process, so that a crash is this test's
 * failure rather than the end of the binary. */
TEST(wide_codings_up_to_32_shards_rebuild_and_repair)
{
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    wide_case(10, 4, &rng);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        wide_case(29, 3, &rng);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "29+3: the child %s %d. ENGINE BUG (erasure.c, gather()): `want = all ? (1u << "
              "es->n) - 1u : ...` shifts a 32-bit 1 by 32 when k + p = 32 (undefined; 0 on "
              "x86-64), so a read of all shards (scrub, or a degraded read with repair) "
              "returns before rebuilding anything and assemble()/repair() use the NULL "
              "payloads of the bad shards (SIGSEGV in crc32c)",
              WIFEXITED(status) ? "exited with status" : "was killed by signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}
