/*
 * eng_sqlite.c - bench adapter for SQLite (libsqlite3, <sqlite3.h>, -lsqlite3).
 *
 * Settings: the file cfg->dir/kv.sqlite, sqlite3_open_v2 with
 * READWRITE|CREATE|NOMUTEX, PRAGMA journal_mode=WAL, PRAGMA synchronous=FULL
 * (cfg->sync_mode 2) or NORMAL (1), PRAGMA cache_size=-(cache_bytes/1024),
 * one table kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID,
 * sqlite3_busy_timeout 30000 ms. Everything else is the library default.
 * Every statement is prepared once; blobs are bound with SQLITE_STATIC.
 *
 * Durability: in WAL mode with synchronous=FULL, COMMIT appends the frames to
 * the -wal file and syncs it before returning, so a returned commit survives a
 * power loss. With synchronous=NORMAL the WAL is synced only at checkpoints:
 * a commit survives a crash of the process but NOT a power loss (not durable
 * per commit).
 *
 * Writes: BEGIN IMMEDIATE, INSERT (plain: a duplicate key is a constraint
 * error), COMMIT. SQLITE_BUSY past the busy timeout from BEGIN IMMEDIATE, an
 * INSERT or COMMIT rolls the transaction back (if one is open) and returns
 * B_RETRY, so wbegin can return B_RETRY as well. Reads: one deferred BEGIN ..
 * COMMIT per rbegin..rend; outside it each statement is its own transaction.
 *
 * Processes: each process opens the file itself (CAP_MULTIPROC).
 */
#include "bench.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SQ_NAME "sqlite"

enum { S_BEGIN_W, S_BEGIN_R, S_COMMIT, S_ROLLBACK, S_INSERT, S_GET, S_SCAN_FROM, S_SCAN_ALL, S_N };

static const char *const sq_sql[S_N] = {
    [S_BEGIN_W] = "BEGIN IMMEDIATE",
    [S_BEGIN_R] = "BEGIN",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_INSERT] = "INSERT INTO kv(k,v) VALUES(?1,?2)",
    [S_GET] = "SELECT v FROM kv WHERE k=?1",
    [S_SCAN_FROM] = "SELECT k,v FROM kv WHERE k>=?1 ORDER BY k",
    [S_SCAN_ALL] = "SELECT k,v FROM kv ORDER BY k",
};

struct eng {
    sqlite3 *db;
    sqlite3_stmt *st[S_N];
    bool get_live;     /* S_GET holds a row (its value is still referenced) */
    sqlite3_stmt *it;  /* the scan statement in use, or NULL */
    bool it_row;       /* it sits on a row */
    bool in_read;      /* between rbegin and rend */
    uint8_t *seek_key; /* it_seek's key, owned: bound while the scan runs */
    size_t seek_cap;
};

static int sq_err(eng *e, const char *what)
{
    b_fail(SQ_NAME, "%s: %s", what, sqlite3_errmsg(e->db));
    return B_ERR;
}

static bool sq_busy(int rc)
{
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

/* Run a prepared statement that returns no rows (BEGIN, COMMIT, ...). */
static int sq_run(eng *e, int which)
{
    sqlite3_stmt *s = e->st[which];
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc;
}

/* Reset the statements whose results the caller may still reference. */
static void sq_release_get(eng *e)
{
    if (e->get_live) {
        sqlite3_reset(e->st[S_GET]);
        e->get_live = false;
    }
}

static void sq_release_it(eng *e)
{
    if (e->it != NULL) {
        sqlite3_reset(e->it);
        e->it = NULL;
    }
    e->it_row = false;
}

/* Roll back the open transaction, if any (after a failed write). */
static void sq_rollback(eng *e)
{
    sq_release_get(e);
    sq_release_it(e);
    if (!sqlite3_get_autocommit(e->db))
        (void)sq_run(e, S_ROLLBACK);
    e->in_read = false;
}

static void sq_close(eng *e)
{
    if (e == NULL)
        return;
    if (e->db != NULL) {
        sq_rollback(e);
        for (int i = 0; i < S_N; i++)
            sqlite3_finalize(e->st[i]);
        if (sqlite3_close(e->db) != SQLITE_OK)
            b_fail(SQ_NAME, "sqlite3_close: %s", sqlite3_errmsg(e->db));
    }
    free(e->seek_key);
    free(e);
}

static int sq_exec(eng *e, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(e->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        b_fail(SQ_NAME, "%s: %s", sql, msg != NULL ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return B_ERR;
    }
    return B_OK;
}

static int sq_open(eng **out, const eng_cfg *c, bool create)
{
    *out = NULL;
    if (c->sync_mode != 1 && c->sync_mode != 2) {
        b_fail(SQ_NAME, "open: sync_mode %d (want 2 = FULL or 1 = NORMAL)", c->sync_mode);
        return B_ERR;
    }
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/kv.sqlite", c->dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        b_fail(SQ_NAME, "open: path too long: %s", c->dir);
        return B_ERR;
    }
    if (!create) {
        struct stat st;
        if (stat(path, &st) != 0) {
            b_fail(SQ_NAME, "open: %s: %s (no database to open)", path, strerror(errno));
            return B_ERR;
        }
    }
    eng *e = calloc(1, sizeof *e);
    if (e == NULL) {
        b_fail(SQ_NAME, "open: out of memory");
        return B_ERR;
    }
    int rc = sqlite3_open_v2(
        path, &e->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        if (e->db == NULL)
            b_fail(SQ_NAME, "sqlite3_open_v2 %s: %s", path, sqlite3_errstr(rc));
        else
            sq_err(e, "sqlite3_open_v2");
        sq_close(e);
        return B_ERR;
    }
    rc = sqlite3_busy_timeout(e->db, 30000);
    if (rc != SQLITE_OK) {
        sq_err(e, "sqlite3_busy_timeout");
        sq_close(e);
        return B_ERR;
    }
    /* journal_mode answers with the mode in force: check that it is WAL. */
    sqlite3_stmt *jm = NULL;
    rc = sqlite3_prepare_v2(e->db, "PRAGMA journal_mode=WAL", -1, &jm, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(jm);
    if (rc != SQLITE_ROW) {
        sq_err(e, "PRAGMA journal_mode=WAL");
        sqlite3_finalize(jm);
        sq_close(e);
        return B_ERR;
    }
    const unsigned char *mode = sqlite3_column_text(jm, 0);
    if (mode == NULL || strcmp((const char *)mode, "wal") != 0) {
        b_fail(SQ_NAME, "PRAGMA journal_mode=WAL: the mode is %s",
               mode != NULL ? (const char *)mode : "(null)");
        sqlite3_finalize(jm);
        sq_close(e);
        return B_ERR;
    }
    sqlite3_finalize(jm);

    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", c->sync_mode == 2 ? "FULL" : "NORMAL");
    if (sq_exec(e, sql) != B_OK)
        goto fail;
    if (c->cache_bytes / 1024 > 0) {
        snprintf(sql, sizeof sql, "PRAGMA cache_size=-%llu",
                 (unsigned long long)(c->cache_bytes / 1024));
        if (sq_exec(e, sql) != B_OK)
            goto fail;
    }
    if (sq_exec(e, "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) "
                   "WITHOUT ROWID") != B_OK)
        goto fail;
    for (int i = 0; i < S_N; i++) {
        rc = sqlite3_prepare_v2(e->db, sq_sql[i], -1, &e->st[i], NULL);
        if (rc != SQLITE_OK) {
            sq_err(e, sq_sql[i]);
            goto fail;
        }
    }
    *out = e;
    return B_OK;
fail:
    sq_close(e);
    return B_ERR;
}

static int sq_wbegin(eng *e)
{
    sq_release_get(e);
    if (!sqlite3_get_autocommit(e->db)) {
        b_fail(SQ_NAME, "wbegin: a transaction is already open");
        return B_ERR;
    }
    int rc = sq_run(e, S_BEGIN_W);
    if (rc == SQLITE_DONE)
        return B_OK;
    if (sq_busy(rc)) {
        sq_rollback(e);
        return B_RETRY;
    }
    return sq_err(e, "BEGIN IMMEDIATE");
}

static int sq_put(eng *e, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    sqlite3_stmt *s = e->st[S_INSERT];
    int rc = sqlite3_bind_blob(s, 1, k, (int)kl, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob(s, 2, v, (int)vl, SQLITE_STATIC);
    if (rc != SQLITE_OK) {
        sq_err(e, "INSERT (bind)");
        sq_rollback(e);
        return B_ERR;
    }
    rc = sqlite3_step(s); /* the binds are not read after this step */
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return B_OK;
    if (sq_busy(rc)) {
        sq_rollback(e);
        return B_RETRY;
    }
    sq_err(e, "INSERT");
    sq_rollback(e);
    return B_ERR;
}

static int sq_wcommit(eng *e)
{
    if (sqlite3_get_autocommit(e->db)) {
        b_fail(SQ_NAME, "wcommit: no transaction is open");
        return B_ERR;
    }
    int rc = sq_run(e, S_COMMIT);
    if (rc == SQLITE_DONE)
        return B_OK;
    if (sq_busy(rc)) {
        sq_rollback(e);
        return B_RETRY;
    }
    sq_err(e, "COMMIT");
    sq_rollback(e);
    return B_ERR;
}

static int sq_rbegin(eng *e)
{
    sq_release_get(e);
    sq_release_it(e);
    if (e->in_read || !sqlite3_get_autocommit(e->db)) {
        b_fail(SQ_NAME, "rbegin: a transaction is already open");
        return B_ERR;
    }
    int rc = sq_run(e, S_BEGIN_R);
    if (rc != SQLITE_DONE)
        return sq_err(e, "BEGIN");
    e->in_read = true;
    return B_OK;
}

static int sq_rend(eng *e)
{
    sq_release_get(e);
    sq_release_it(e);
    if (!e->in_read) {
        b_fail(SQ_NAME, "rend: no read transaction");
        return B_ERR;
    }
    e->in_read = false;
    int rc = sq_run(e, S_COMMIT);
    if (rc != SQLITE_DONE) {
        sq_err(e, "COMMIT (read)");
        sq_rollback(e);
        return B_ERR;
    }
    return B_OK;
}

static int sq_get(eng *e, const uint8_t *k, size_t kl, const uint8_t **v, size_t *vl)
{
    sq_release_get(e);
    sqlite3_stmt *s = e->st[S_GET];
    int rc = sqlite3_bind_blob(s, 1, k, (int)kl, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return sq_err(e, "SELECT v (bind)");
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const void *p = sqlite3_column_blob(s, 0);
        int n = sqlite3_column_bytes(s, 0);
        e->get_live = true; /* p stays valid until the next reset */
        *v = p;
        *vl = (size_t)n;
        return B_OK;
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        b_fail(SQ_NAME, "get: key not found");
        return B_ERR;
    }
    return sq_err(e, "SELECT v");
}

/* Step the scan: B_OK on a row, 1 at the end, B_ERR. */
static int sq_it_step(eng *e)
{
    int rc = sqlite3_step(e->it);
    if (rc == SQLITE_ROW) {
        e->it_row = true;
        return B_OK;
    }
    e->it_row = false;
    if (rc == SQLITE_DONE)
        return 1;
    sq_err(e, "SELECT k,v (step)");
    sq_release_it(e);
    return B_ERR;
}

static int sq_it_seek(eng *e, const uint8_t *k, size_t kl)
{
    sq_release_it(e);
    if (k == NULL) {
        e->it = e->st[S_SCAN_ALL];
        return sq_it_step(e);
    }
    /* The key stays bound while the scan runs: bind a copy we own. */
    if (kl > e->seek_cap) {
        uint8_t *p = realloc(e->seek_key, kl);
        if (p == NULL) {
            b_fail(SQ_NAME, "it_seek: out of memory");
            return B_ERR;
        }
        e->seek_key = p;
        e->seek_cap = kl;
    }
    if (kl > 0)
        memcpy(e->seek_key, k, kl);
    sqlite3_stmt *s = e->st[S_SCAN_FROM];
    int rc =
        sqlite3_bind_blob(s, 1, kl > 0 ? (const void *)e->seek_key : "", (int)kl, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return sq_err(e, "SELECT k,v (bind)");
    e->it = s;
    return sq_it_step(e);
}

static int sq_it_next(eng *e)
{
    if (e->it == NULL || !e->it_row) {
        b_fail(SQ_NAME, "it_next: the iterator is not on an item");
        return B_ERR;
    }
    return sq_it_step(e);
}

static void sq_it_cur(eng *e, const uint8_t **k, size_t *kl, const uint8_t **v, size_t *vl)
{
    /* Fetch both pointers before any length: column_bytes may convert. */
    *k = sqlite3_column_blob(e->it, 0);
    *kl = (size_t)sqlite3_column_bytes(e->it, 0);
    *v = sqlite3_column_blob(e->it, 1);
    *vl = (size_t)sqlite3_column_bytes(e->it, 1);
}

static void sq_it_close(eng *e)
{
    sq_release_it(e);
}

static int sq_settle(eng *e)
{
    sq_release_get(e);
    sq_release_it(e);
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(e->db, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &s, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sq_err(e, "PRAGMA wal_checkpoint(TRUNCATE)");
        sqlite3_finalize(s);
        return B_ERR;
    }
    int busy = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    if (busy != 0) {
        b_fail(SQ_NAME, "PRAGMA wal_checkpoint(TRUNCATE): busy, the checkpoint did not finish");
        return B_ERR;
    }
    return B_OK;
}

static void sq_describe(const eng_cfg *c, char *buf, size_t cap)
{
    char cache[64];
    if (c->cache_bytes / 1024 > 0)
        snprintf(cache, sizeof cache, "cache_size=-%llu (%llu MiB)",
                 (unsigned long long)(c->cache_bytes / 1024),
                 (unsigned long long)(c->cache_bytes >> 20));
    else
        snprintf(cache, sizeof cache, "cache_size default");
    snprintf(buf, cap,
             "SQLite %s (sqlite3_libversion), open READWRITE|CREATE|NOMUTEX, journal_mode=WAL, "
             "synchronous=%s, %s, table kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID, "
             "busy_timeout 30000 ms, writes BEGIN IMMEDIATE + INSERT + COMMIT, read batches "
             "deferred BEGIN..COMMIT, prepared statements with SQLITE_STATIC binds, other "
             "settings default (page_size, wal_autocheckpoint, mmap_size), settle: "
             "wal_checkpoint(TRUNCATE)",
             sqlite3_libversion(),
             c->sync_mode == 2 ? "FULL (WAL synced at every commit: durable)"
                               : "NORMAL (WAL synced only at checkpoints: survives a process "
                                 "crash, NOT power loss; not durable per commit)",
             cache);
}

const eng_ops eng_sqlite_ops = {
    .name = SQ_NAME,
    .caps = CAP_MULTIPROC,
    .open = sq_open,
    .close = sq_close,
    .wbegin = sq_wbegin,
    .put = sq_put,
    .wcommit = sq_wcommit,
    .rbegin = sq_rbegin,
    .rend = sq_rend,
    .get = sq_get,
    .it_seek = sq_it_seek,
    .it_next = sq_it_next,
    .it_cur = sq_it_cur,
    .it_close = sq_it_close,
    .settle = sq_settle,
    .describe = sq_describe,
};
