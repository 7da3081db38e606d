/*
 * eng_lmdb.c - bench adapter for LMDB (liblmdb, <lmdb.h>, -llmdb).
 *
 * Settings: mdb_env_open flags 0 (the defaults), mapsize 8 GiB (a sparse
 * file), one unnamed DBI, mdb_put with MDB_NOOVERWRITE so that a put of an
 * existing key fails (MDB_KEYEXIST).
 *
 * Durability: with flags 0 (no MDB_NOSYNC, MDB_NOMETASYNC or MDB_WRITEMAP),
 * mdb_txn_commit writes the dirty pages with pwrite, calls fdatasync on the
 * data file, then writes the meta page through a second descriptor opened
 * with O_DSYNC. When mdb_txn_commit returns, the transaction survives a
 * power loss. Two writers (processes or threads) are serialised by the writer
 * mutex in lock.mdb, so B_RETRY is never returned.
 *
 * Reads: one MDB_RDONLY transaction per rbegin..rend (allocated once, then
 * mdb_txn_reset / mdb_txn_renew); get and the iterator must be called inside
 * rbegin..rend. One cursor, allocated once and renewed per read transaction.
 *
 * Processes: an MDB_env must not cross fork(). Each process opens the
 * environment itself (CAP_MULTIPROC).
 */
#include "bench.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LM_NAME    "lmdb"
#define LM_MAPSIZE (8ull << 30)

struct eng {
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *wtxn;   /* the open write txn, or NULL */
    MDB_txn *rtxn;   /* the read txn (kept across batches, reset between) */
    bool rlive;      /* rtxn is active (between rbegin and rend) */
    MDB_cursor *cur; /* the read cursor (kept across batches) */
    bool cur_bound;  /* cur belongs to the current read txn */
    bool cur_valid;  /* cur sits on an item */
    MDB_val ck, cv;  /* the current item */
};

static int lm_err(const char *what, int rc)
{
    b_fail(LM_NAME, "%s: %s", what, mdb_strerror(rc));
    return B_ERR;
}

static void lm_close(eng *e)
{
    if (e == NULL)
        return;
    if (e->cur != NULL)
        mdb_cursor_close(e->cur);
    if (e->rtxn != NULL)
        mdb_txn_abort(e->rtxn);
    if (e->wtxn != NULL)
        mdb_txn_abort(e->wtxn);
    if (e->env != NULL)
        mdb_env_close(e->env);
    free(e);
}

static int lm_open(eng **out, const eng_cfg *c, bool create)
{
    *out = NULL;
    if (!create) {
        char path[4096];
        struct stat st;
        int n = snprintf(path, sizeof path, "%s/data.mdb", c->dir);
        if (n < 0 || (size_t)n >= sizeof path) {
            b_fail(LM_NAME, "open: path too long: %s", c->dir);
            return B_ERR;
        }
        if (stat(path, &st) != 0) {
            b_fail(LM_NAME, "open: %s: %s (no database to open)", path, strerror(errno));
            return B_ERR;
        }
    }
    eng *e = calloc(1, sizeof *e);
    if (e == NULL) {
        b_fail(LM_NAME, "open: out of memory");
        return B_ERR;
    }
    int rc = mdb_env_create(&e->env);
    if (rc != 0) {
        e->env = NULL;
        lm_close(e);
        return lm_err("mdb_env_create", rc);
    }
    rc = mdb_env_set_mapsize(e->env, (size_t)LM_MAPSIZE);
    if (rc == 0)
        rc = mdb_env_open(e->env, c->dir, 0, 0664);
    if (rc != 0) {
        lm_close(e);
        return lm_err("mdb_env_open", rc);
    }
    MDB_txn *t;
    rc = mdb_txn_begin(e->env, NULL, 0, &t);
    if (rc != 0) {
        lm_close(e);
        return lm_err("mdb_txn_begin (dbi)", rc);
    }
    rc = mdb_dbi_open(t, NULL, 0, &e->dbi);
    if (rc != 0) {
        mdb_txn_abort(t);
        lm_close(e);
        return lm_err("mdb_dbi_open", rc);
    }
    rc = mdb_txn_commit(t);
    if (rc != 0) {
        lm_close(e);
        return lm_err("mdb_txn_commit (dbi)", rc);
    }
    *out = e;
    return B_OK;
}

static int lm_wbegin(eng *e)
{
    if (e->wtxn != NULL) {
        b_fail(LM_NAME, "wbegin: a write transaction is already open");
        return B_ERR;
    }
    int rc = mdb_txn_begin(e->env, NULL, 0, &e->wtxn);
    if (rc != 0) {
        e->wtxn = NULL;
        return lm_err("mdb_txn_begin", rc);
    }
    return B_OK;
}

static int lm_put(eng *e, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    if (e->wtxn == NULL) {
        b_fail(LM_NAME, "put: no write transaction");
        return B_ERR;
    }
    MDB_val key = {.mv_size = kl, .mv_data = (void *)(uintptr_t)k};
    MDB_val val = {.mv_size = vl, .mv_data = (void *)(uintptr_t)v};
    int rc = mdb_put(e->wtxn, e->dbi, &key, &val, MDB_NOOVERWRITE);
    if (rc != 0) {
        mdb_txn_abort(e->wtxn);
        e->wtxn = NULL;
        return lm_err("mdb_put", rc);
    }
    return B_OK;
}

static int lm_wcommit(eng *e)
{
    if (e->wtxn == NULL) {
        b_fail(LM_NAME, "wcommit: no write transaction");
        return B_ERR;
    }
    int rc = mdb_txn_commit(e->wtxn); /* frees the txn, even on failure */
    e->wtxn = NULL;
    if (rc != 0)
        return lm_err("mdb_txn_commit", rc);
    return B_OK;
}

static int lm_rbegin(eng *e)
{
    if (e->rlive) {
        b_fail(LM_NAME, "rbegin: a read transaction is already open");
        return B_ERR;
    }
    int rc;
    if (e->rtxn == NULL) {
        rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &e->rtxn);
        if (rc != 0) {
            e->rtxn = NULL;
            return lm_err("mdb_txn_begin (read)", rc);
        }
    } else {
        rc = mdb_txn_renew(e->rtxn);
        if (rc != 0)
            return lm_err("mdb_txn_renew", rc);
    }
    e->rlive = true;
    e->cur_bound = false;
    e->cur_valid = false;
    return B_OK;
}

static int lm_rend(eng *e)
{
    if (!e->rlive) {
        b_fail(LM_NAME, "rend: no read transaction");
        return B_ERR;
    }
    mdb_txn_reset(e->rtxn);
    e->rlive = false;
    e->cur_bound = false;
    e->cur_valid = false;
    return B_OK;
}

static int lm_get(eng *e, const uint8_t *k, size_t kl, const uint8_t **v, size_t *vl)
{
    if (!e->rlive) {
        b_fail(LM_NAME, "get: called outside rbegin..rend");
        return B_ERR;
    }
    MDB_val key = {.mv_size = kl, .mv_data = (void *)(uintptr_t)k};
    MDB_val val;
    int rc = mdb_get(e->rtxn, e->dbi, &key, &val);
    if (rc != 0)
        return lm_err("mdb_get", rc); /* MDB_NOTFOUND included */
    *v = val.mv_data;
    *vl = val.mv_size;
    return B_OK;
}

/* Position result of mdb_cursor_get: B_OK on an item, 1 at the end. */
static int lm_cur_rc(eng *e, int rc, const char *what)
{
    if (rc == 0) {
        e->cur_valid = true;
        return B_OK;
    }
    e->cur_valid = false;
    if (rc == MDB_NOTFOUND)
        return 1;
    return lm_err(what, rc);
}

static int lm_it_seek(eng *e, const uint8_t *k, size_t kl)
{
    if (!e->rlive) {
        b_fail(LM_NAME, "it_seek: called outside rbegin..rend");
        return B_ERR;
    }
    int rc;
    if (e->cur == NULL) {
        rc = mdb_cursor_open(e->rtxn, e->dbi, &e->cur);
        if (rc != 0) {
            e->cur = NULL;
            return lm_err("mdb_cursor_open", rc);
        }
        e->cur_bound = true;
    } else if (!e->cur_bound) {
        rc = mdb_cursor_renew(e->rtxn, e->cur);
        if (rc != 0)
            return lm_err("mdb_cursor_renew", rc);
        e->cur_bound = true;
    }
    if (k == NULL)
        return lm_cur_rc(e, mdb_cursor_get(e->cur, &e->ck, &e->cv, MDB_FIRST),
                         "mdb_cursor_get(MDB_FIRST)");
    e->ck.mv_size = kl;
    e->ck.mv_data = (void *)(uintptr_t)k;
    return lm_cur_rc(e, mdb_cursor_get(e->cur, &e->ck, &e->cv, MDB_SET_RANGE),
                     "mdb_cursor_get(MDB_SET_RANGE)");
}

static int lm_it_next(eng *e)
{
    if (!e->cur_valid) {
        b_fail(LM_NAME, "it_next: the iterator is not on an item");
        return B_ERR;
    }
    return lm_cur_rc(e, mdb_cursor_get(e->cur, &e->ck, &e->cv, MDB_NEXT),
                     "mdb_cursor_get(MDB_NEXT)");
}

static void lm_it_cur(eng *e, const uint8_t **k, size_t *kl, const uint8_t **v, size_t *vl)
{
    *k = e->ck.mv_data;
    *kl = e->ck.mv_size;
    *v = e->cv.mv_data;
    *vl = e->cv.mv_size;
}

static void lm_it_close(eng *e)
{
    /* The cursor is kept for the next it_seek (renewed per read txn). */
    e->cur_valid = false;
}

static int lm_settle(eng *e)
{
    (void)e; /* a B-tree with no deferred work: nothing to do */
    return B_OK;
}

static void lm_describe(const eng_cfg *c, char *buf, size_t cap)
{
    (void)c;
    int maj, min, pat;
    (void)mdb_version(&maj, &min, &pat);
    snprintf(buf, cap,
             "LMDB %d.%d.%d (mdb_version), mdb_env_open flags 0 (defaults: per commit "
             "fdatasync of data.mdb + meta page written through an O_DSYNC fd; no "
             "MDB_NOSYNC/MDB_NOMETASYNC/MDB_WRITEMAP), mapsize %llu GiB, one unnamed DBI, "
             "mdb_put MDB_NOOVERWRITE, one MDB_RDONLY txn per read batch (reset/renew), "
             "one cursor (MDB_SET_RANGE/MDB_FIRST/MDB_NEXT), cache: OS page cache via mmap, "
             "settle: none",
             maj, min, pat, LM_MAPSIZE >> 30);
}

const eng_ops eng_lmdb_ops = {
    .name = LM_NAME,
    .caps = CAP_MULTIPROC,
    .open = lm_open,
    .close = lm_close,
    .wbegin = lm_wbegin,
    .put = lm_put,
    .wcommit = lm_wcommit,
    .rbegin = lm_rbegin,
    .rend = lm_rend,
    .get = lm_get,
    .it_seek = lm_it_seek,
    .it_next = lm_it_next,
    .it_cur = lm_it_cur,
    .it_close = lm_it_close,
    .settle = lm_settle,
    .describe = lm_describe,
};
