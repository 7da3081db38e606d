/*
 * eng_rocksdb.c - bench adapter for RocksDB through its C API (librocksdb,
 * <rocksdb/c.h>, -lrocksdb; a C++ library, libstdc++ comes in as NEEDED).
 *
 * Settings: create_if_missing (on create), compression rocksdb_no_compression,
 * a block-based table with an LRU block cache of cfg->cache_bytes, and every
 * other option at its default (no bloom filter, default background jobs,
 * use_fsync off). WriteOptions sync = 1.
 *
 * Durability: a write transaction is one rocksdb_writebatch_t; wcommit is
 * rocksdb_write with sync = 1, which appends the batch to the WAL and syncs
 * the WAL (fdatasync, since use_fsync is off) before it returns, so a
 * returned commit survives a power loss. Concurrent writers are grouped into
 * one WAL write + sync by RocksDB's write group (group commit).
 *
 * Puts are blind: a put of a key that already exists is NOT detected (it
 * would overwrite). Every workload writes new keys, so no Get is added.
 *
 * Reads: rbegin takes a snapshot (rocksdb_create_snapshot) and sets it in the
 * handle's read options; rend releases it. get uses rocksdb_get_pinned (no
 * copy); the pinned value is kept until the next get / rend / close. One
 * iterator per read batch, re-seeked by every it_seek of the batch; outside
 * a batch it_close destroys it.
 *
 * Processes: single-process (a LOCK file), so CAP_THREADS: W7 runs as two
 * threads. A second thread gets its own handle from eng_rocksdb_clone (same
 * rocksdb_t, own write batch, read options, snapshot and iterator) and frees
 * it with eng_rocksdb_unclone, before close of the original.
 */
#include "bench.h"

#include <errno.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* For W7 as two threads (CAP_THREADS); to be declared in bench.h.
 * eng_rocksdb_clone: a second handle on the same open database, for use by
 * another thread (one thread per handle); NULL on failure (b_fail called).
 * eng_rocksdb_unclone: free a clone; the original stays open. Every clone
 * must be freed before close() of the original. */
eng *eng_rocksdb_clone(eng *e);
void eng_rocksdb_unclone(eng *e);

#define RK_NAME "rocksdb"

struct eng {
    /* Shared by the original and its clones (owned by the original). */
    rocksdb_t *db;
    rocksdb_options_t *opt;
    rocksdb_block_based_table_options_t *bbto;
    rocksdb_cache_t *cache;
    rocksdb_writeoptions_t *wo; /* sync = 1; only read by rocksdb_write */
    bool clone;
    /* Per handle. */
    rocksdb_writebatch_t *wb;
    bool in_write;
    rocksdb_readoptions_t *ro;
    const rocksdb_snapshot_t *snap; /* between rbegin and rend */
    rocksdb_pinnableslice_t *ps;    /* the last get's value */
    rocksdb_iterator_t *it;
    bool it_valid;
};

static int rk_err(const char *what, char *err)
{
    b_fail(RK_NAME, "%s: %s", what, err != NULL ? err : "(no message)");
    rocksdb_free(err);
    return B_ERR;
}

static void rk_drop_ps(eng *e)
{
    if (e->ps != NULL) {
        rocksdb_pinnableslice_destroy(e->ps);
        e->ps = NULL;
    }
}

static void rk_drop_it(eng *e)
{
    if (e->it != NULL) {
        rocksdb_iter_destroy(e->it);
        e->it = NULL;
    }
    e->it_valid = false;
}

/* Free the per-handle state. */
static void rk_free_handle(eng *e)
{
    rk_drop_ps(e);
    rk_drop_it(e);
    if (e->snap != NULL) {
        rocksdb_readoptions_set_snapshot(e->ro, NULL);
        rocksdb_release_snapshot(e->db, e->snap);
        e->snap = NULL;
    }
    if (e->ro != NULL)
        rocksdb_readoptions_destroy(e->ro);
    if (e->wb != NULL)
        rocksdb_writebatch_destroy(e->wb);
    e->ro = NULL;
    e->wb = NULL;
}

static int rk_init_handle(eng *e)
{
    e->wb = rocksdb_writebatch_create();
    e->ro = rocksdb_readoptions_create();
    if (e->wb == NULL || e->ro == NULL) {
        b_fail(RK_NAME, "out of memory");
        return B_ERR;
    }
    return B_OK;
}

static void rk_close(eng *e)
{
    if (e == NULL)
        return;
    if (e->clone) {
        b_fail(RK_NAME, "close called on a clone (use eng_rocksdb_unclone)");
        eng_rocksdb_unclone(e);
        return;
    }
    rk_free_handle(e);
    if (e->db != NULL)
        rocksdb_close(e->db);
    if (e->wo != NULL)
        rocksdb_writeoptions_destroy(e->wo);
    if (e->opt != NULL)
        rocksdb_options_destroy(e->opt);
    if (e->bbto != NULL)
        rocksdb_block_based_options_destroy(e->bbto);
    if (e->cache != NULL)
        rocksdb_cache_destroy(e->cache);
    free(e);
}

static int rk_open(eng **out, const eng_cfg *c, bool create)
{
    *out = NULL;
    if (!create) {
        char path[4096];
        struct stat st;
        int n = snprintf(path, sizeof path, "%s/CURRENT", c->dir);
        if (n < 0 || (size_t)n >= sizeof path) {
            b_fail(RK_NAME, "open: path too long: %s", c->dir);
            return B_ERR;
        }
        if (stat(path, &st) != 0) {
            b_fail(RK_NAME, "open: %s: %s (no database to open)", path, strerror(errno));
            return B_ERR;
        }
    }
    eng *e = calloc(1, sizeof *e);
    if (e == NULL) {
        b_fail(RK_NAME, "open: out of memory");
        return B_ERR;
    }
    e->opt = rocksdb_options_create();
    e->bbto = rocksdb_block_based_options_create();
    e->wo = rocksdb_writeoptions_create();
    if (c->cache_bytes > 0)
        e->cache = rocksdb_cache_create_lru((size_t)c->cache_bytes);
    if (e->opt == NULL || e->bbto == NULL || e->wo == NULL ||
        (c->cache_bytes > 0 && e->cache == NULL) || rk_init_handle(e) != B_OK) {
        b_fail(RK_NAME, "open: out of memory");
        rk_close(e);
        return B_ERR;
    }
    rocksdb_options_set_create_if_missing(e->opt, 1);
    rocksdb_options_set_compression(e->opt, rocksdb_no_compression);
    if (e->cache != NULL)
        rocksdb_block_based_options_set_block_cache(e->bbto, e->cache);
    rocksdb_options_set_block_based_table_factory(e->opt, e->bbto);
    rocksdb_writeoptions_set_sync(e->wo, 1);

    char *err = NULL;
    e->db = rocksdb_open(e->opt, c->dir, &err);
    if (err != NULL || e->db == NULL) {
        e->db = NULL;
        rk_err("rocksdb_open", err);
        rk_close(e);
        return B_ERR;
    }
    *out = e;
    return B_OK;
}

eng *eng_rocksdb_clone(eng *e)
{
    eng *c = calloc(1, sizeof *c);
    if (c == NULL) {
        b_fail(RK_NAME, "clone: out of memory");
        return NULL;
    }
    c->db = e->db;
    c->opt = e->opt;
    c->bbto = e->bbto;
    c->cache = e->cache;
    c->wo = e->wo;
    c->clone = true;
    if (rk_init_handle(c) != B_OK) {
        rk_free_handle(c);
        free(c);
        return NULL;
    }
    return c;
}

void eng_rocksdb_unclone(eng *e)
{
    if (e == NULL)
        return;
    if (!e->clone) {
        b_fail(RK_NAME, "eng_rocksdb_unclone called on the original handle (use close)");
        return;
    }
    rk_free_handle(e);
    free(e);
}

static int rk_wbegin(eng *e)
{
    if (e->in_write) {
        b_fail(RK_NAME, "wbegin: a write transaction is already open");
        return B_ERR;
    }
    rocksdb_writebatch_clear(e->wb);
    e->in_write = true;
    return B_OK;
}

static int rk_put(eng *e, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    if (!e->in_write) {
        b_fail(RK_NAME, "put: no write transaction");
        return B_ERR;
    }
    rocksdb_writebatch_put(e->wb, (const char *)k, kl, (const char *)v, vl);
    return B_OK;
}

static int rk_wcommit(eng *e)
{
    if (!e->in_write) {
        b_fail(RK_NAME, "wcommit: no write transaction");
        return B_ERR;
    }
    char *err = NULL;
    rocksdb_write(e->db, e->wo, e->wb, &err);
    rocksdb_writebatch_clear(e->wb);
    e->in_write = false;
    if (err != NULL)
        return rk_err("rocksdb_write", err);
    return B_OK;
}

static int rk_rbegin(eng *e)
{
    if (e->snap != NULL) {
        b_fail(RK_NAME, "rbegin: a read batch is already open");
        return B_ERR;
    }
    rk_drop_ps(e);
    rk_drop_it(e); /* an iterator from outside a batch reads no snapshot */
    e->snap = rocksdb_create_snapshot(e->db);
    if (e->snap == NULL) {
        b_fail(RK_NAME, "rocksdb_create_snapshot failed");
        return B_ERR;
    }
    rocksdb_readoptions_set_snapshot(e->ro, e->snap);
    return B_OK;
}

static int rk_rend(eng *e)
{
    if (e->snap == NULL) {
        b_fail(RK_NAME, "rend: no read batch");
        return B_ERR;
    }
    rk_drop_ps(e);
    rk_drop_it(e);
    rocksdb_readoptions_set_snapshot(e->ro, NULL);
    rocksdb_release_snapshot(e->db, e->snap);
    e->snap = NULL;
    return B_OK;
}

static int rk_get(eng *e, const uint8_t *k, size_t kl, const uint8_t **v, size_t *vl)
{
    rk_drop_ps(e);
    char *err = NULL;
    e->ps = rocksdb_get_pinned(e->db, e->ro, (const char *)k, kl, &err);
    if (err != NULL)
        return rk_err("rocksdb_get_pinned", err);
    if (e->ps == NULL) {
        b_fail(RK_NAME, "get: key not found");
        return B_ERR;
    }
    size_t n = 0;
    *v = (const uint8_t *)rocksdb_pinnableslice_value(e->ps, &n);
    *vl = n;
    return B_OK;
}

/* After a seek or next: B_OK on an item, 1 at the end, B_ERR. */
static int rk_it_state(eng *e, const char *what)
{
    if (rocksdb_iter_valid(e->it)) {
        e->it_valid = true;
        return B_OK;
    }
    e->it_valid = false;
    char *err = NULL;
    rocksdb_iter_get_error(e->it, &err);
    if (err != NULL)
        return rk_err(what, err);
    return 1;
}

static int rk_it_seek(eng *e, const uint8_t *k, size_t kl)
{
    if (e->it == NULL) {
        e->it = rocksdb_create_iterator(e->db, e->ro);
        if (e->it == NULL) {
            b_fail(RK_NAME, "rocksdb_create_iterator failed");
            return B_ERR;
        }
    }
    if (k == NULL) {
        rocksdb_iter_seek_to_first(e->it);
        return rk_it_state(e, "rocksdb_iter_seek_to_first");
    }
    rocksdb_iter_seek(e->it, (const char *)k, kl);
    return rk_it_state(e, "rocksdb_iter_seek");
}

static int rk_it_next(eng *e)
{
    if (e->it == NULL || !e->it_valid) {
        b_fail(RK_NAME, "it_next: the iterator is not on an item");
        return B_ERR;
    }
    rocksdb_iter_next(e->it);
    return rk_it_state(e, "rocksdb_iter_next");
}

static void rk_it_cur(eng *e, const uint8_t **k, size_t *kl, const uint8_t **v, size_t *vl)
{
    *k = (const uint8_t *)rocksdb_iter_key(e->it, kl);
    *v = (const uint8_t *)rocksdb_iter_value(e->it, vl);
}

static void rk_it_close(eng *e)
{
    if (e->snap != NULL)
        e->it_valid = false; /* kept for the next it_seek of this batch */
    else
        rk_drop_it(e);
}

static int rk_settle(eng *e)
{
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    if (fo == NULL) {
        b_fail(RK_NAME, "settle: out of memory");
        return B_ERR;
    }
    rocksdb_flushoptions_set_wait(fo, 1);
    char *err = NULL;
    rocksdb_flush(e->db, fo, &err);
    rocksdb_flushoptions_destroy(fo);
    if (err != NULL)
        return rk_err("rocksdb_flush", err);
    rocksdb_compact_range(e->db, NULL, 0, NULL, 0); /* reports no error */
    return B_OK;
}

static void rk_describe(const eng_cfg *c, char *buf, size_t cap)
{
    char cache[64];
    if (c->cache_bytes > 0)
        snprintf(cache, sizeof cache, "LRU block cache %llu MiB",
                 (unsigned long long)(c->cache_bytes >> 20));
    else
        snprintf(cache, sizeof cache, "default block cache");
    snprintf(buf, cap,
             "RocksDB 7.8.3 (Debian librocksdb 7.8.3; the C API has no version call), "
             "create_if_missing, compression none, block-based table with %s, no bloom filter, "
             "other options default (use_fsync off), WriteOptions sync=1 (WAL fdatasync per "
             "write, group commit), one WriteBatch per txn (blind puts: a duplicate key is not "
             "detected), read batches on a snapshot, get via rocksdb_get_pinned, one iterator "
             "per read batch, settle: flush(wait=1) + compact_range(all)",
             cache);
}

const eng_ops eng_rocksdb_ops = {
    .name = RK_NAME,
    .caps = CAP_THREADS,
    .open = rk_open,
    .close = rk_close,
    .wbegin = rk_wbegin,
    .put = rk_put,
    .wcommit = rk_wcommit,
    .rbegin = rk_rbegin,
    .rend = rk_rend,
    .get = rk_get,
    .it_seek = rk_it_seek,
    .it_next = rk_it_next,
    .it_cur = rk_it_cur,
    .it_close = rk_it_close,
    .settle = rk_settle,
    .describe = rk_describe,
};
