/*
 * eng_sop.c - the harness adapter for libsop (engine/include/sop.h).
 *
 * One unique store "kv" with values in the node, slot_length from the config,
 * local (flock) or Redis coordination. A write transaction is SOP_TXN_WRITE;
 * sop_txn_commit returns after the commit record of the log is fdatasynced
 * (docs/commit.md), which is the engine's durability point. A read batch is a
 * SOP_TXN_NOCHECK transaction: reads see committed data and validate nothing
 * at commit, like a read-only snapshot in the peers.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>

#include "sop.h"

struct eng {
    sop_db *db;
    sop_txn *t;
    sop_btree *bt;
    sop_cursor *c;
    uint32_t slot_length;
};

static int fail(const sop_err *err, const char *what)
{
    b_fail("sop", "%s: %s: %s", what, sop_rc_name(err->code), err->msg);
    return B_ERR;
}

static void options(const eng_cfg *c, sop_db_options *o)
{
    sop_db_options_init(o);
    o->l1_cache_bytes = c->cache_bytes;
    if (c->redis) {
        o->coordination = SOP_COORD_REDIS;
        o->redis.host = "127.0.0.1";
        o->redis.port = c->redis_port;
    }
}

static int txn_open(eng *e, sop_txn_mode mode)
{
    sop_err err = {0};
    if (sop_txn_begin(e->db, mode, 0, &e->t, &err) != SOP_OK)
        return fail(&err, "begin");
    if (sop_store_open(e->t, "kv", &e->bt, &err) != SOP_OK) {
        sop_txn_rollback(e->t, NULL);
        sop_txn_free(e->t);
        e->t = NULL;
        return fail(&err, "store open");
    }
    return B_OK;
}

/* Ends the transaction; a conflict asks the driver to redo it. */
static int txn_end(eng *e)
{
    sop_err err = {0};
    sop_rc rc = sop_txn_commit(e->t, &err);
    sop_txn_free(e->t);
    e->t = NULL;
    e->bt = NULL;
    if (rc == SOP_CONFLICT)
        return B_RETRY;
    return rc == SOP_OK ? B_OK : fail(&err, "commit");
}

static int s_open(eng **out, const eng_cfg *c, bool create)
{
    sop_db_options o;
    sop_err err = {0};
    options(c, &o);
    eng *e = calloc(1, sizeof *e);
    if (e == NULL)
        return B_ERR;
    e->slot_length = c->slot_length;
    if (create && sop_db_init(c->dir, &o, &err) != SOP_OK)
        goto failed;
    if (sop_db_open(c->dir, &o, &e->db, &err) != SOP_OK)
        goto failed;
    if (create) {
        sop_store_options so;
        sop_store_options_init(&so);
        so.slot_length = c->slot_length;
        so.is_unique = true;
        sop_txn *t;
        if (sop_txn_begin(e->db, SOP_TXN_WRITE, 0, &t, &err) != SOP_OK)
            goto failed;
        sop_btree *bt;
        sop_rc rc = sop_store_create(t, "kv", &so, &bt, &err);
        if (rc == SOP_OK)
            rc = sop_txn_commit(t, &err);
        sop_txn_free(t);
        if (rc != SOP_OK)
            goto failed;
    }
    *out = e;
    return B_OK;
failed:
    fail(&err, create ? "create" : "open");
    if (e->db != NULL)
        sop_db_close(e->db);
    free(e);
    return B_ERR;
}

static void s_close(eng *e)
{
    sop_db_close(e->db);
    free(e);
}

static int s_wbegin(eng *e)
{
    return txn_open(e, SOP_TXN_WRITE);
}

static int s_put(eng *e, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    sop_err err = {0};
    if (sop_btree_add(e->bt, k, kl, v, vl, NULL, &err) == SOP_OK)
        return B_OK;
    if (err.code == SOP_CONFLICT) {
        sop_txn_rollback(e->t, NULL);
        sop_txn_free(e->t);
        e->t = NULL;
        return B_RETRY;
    }
    return fail(&err, "add");
}

static int s_wcommit(eng *e)
{
    return txn_end(e);
}

static int s_rbegin(eng *e)
{
    return txn_open(e, SOP_TXN_NOCHECK);
}

static int s_rend(eng *e)
{
    return txn_end(e);
}

static int s_get(eng *e, const uint8_t *k, size_t kl, const uint8_t **v, size_t *vl)
{
    sop_item it;
    sop_err err = {0};
    if (sop_btree_get(e->bt, k, kl, &it, &err) != SOP_OK)
        return fail(&err, "get");
    *v = it.value;
    *vl = it.value_len;
    return B_OK;
}

static int s_it_seek(eng *e, const uint8_t *k, size_t kl)
{
    sop_err err = {0};
    if (e->c == NULL && sop_cursor_open(e->bt, &e->c, &err) != SOP_OK)
        return fail(&err, "cursor open");
    sop_rc rc = k == NULL ? sop_cursor_first(e->c, &err) : sop_cursor_find(e->c, k, kl, &err);
    if (rc == SOP_OK || (rc == SOP_NOTFOUND && k != NULL && sop_cursor_on_item(e->c)))
        return B_OK;
    return rc == SOP_NOTFOUND ? 1 : fail(&err, "seek");
}

static int s_it_next(eng *e)
{
    sop_err err = {0};
    sop_rc rc = sop_cursor_next(e->c, &err);
    if (rc == SOP_OK)
        return B_OK;
    return rc == SOP_NOTFOUND ? 1 : fail(&err, "next");
}

static void s_it_cur(eng *e, const uint8_t **k, size_t *kl, const uint8_t **v, size_t *vl)
{
    sop_item it;
    sop_err err = {0};
    if (sop_cursor_item(e->c, &it, &err) != SOP_OK) {
        fail(&err, "cursor item");
        *k = *v = NULL;
        *kl = *vl = 0;
        return;
    }
    *k = it.key;
    *kl = it.key_len;
    *v = it.value;
    *vl = it.value_len;
}

static void s_it_close(eng *e)
{
    sop_cursor_close(e->c);
    e->c = NULL;
}

static int s_settle(eng *e)
{
    (void)e;
    return B_OK;
}

static void s_describe(const eng_cfg *c, char *buf, size_t cap)
{
    snprintf(buf, cap,
             "libsop (this tree), unique store, values in the node, slot_length %u, "
             "coordination %s, L1 cache %llu MiB, checkpoint every 16 MiB of log (default), "
             "commit = fdatasync of the log's commit record",
             c->slot_length, c->redis ? "Redis 127.0.0.1" : "local (flock)",
             (unsigned long long)(c->cache_bytes >> 20));
}

const eng_ops eng_sop_ops = {
    .name = "sop",
    .caps = CAP_MULTIPROC,
    .open = s_open,
    .close = s_close,
    .wbegin = s_wbegin,
    .put = s_put,
    .wcommit = s_wcommit,
    .rbegin = s_rbegin,
    .rend = s_rend,
    .get = s_get,
    .it_seek = s_it_seek,
    .it_next = s_it_next,
    .it_cur = s_it_cur,
    .it_close = s_it_close,
    .settle = s_settle,
    .describe = s_describe,
};
