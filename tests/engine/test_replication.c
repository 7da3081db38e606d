/*
 * test_replication.c - active/passive replication (replication.h, the os
 * layer's mirror, docs/replication.md).
 *
 * The workload is a bank: 16 accounts (store "bank", values in the nodes,
 * slot length 4 so transfers touch many nodes) that always hold 16,000 in
 * all, and a ledger (store "ledger", values actively persisted: written
 * before the commit, outside the commit lock) with one entry per transfer.
 * Every fourth transfer goes through prepare + commit_prepared. Checkpoints
 * are forced often (small checkpoint_bytes).
 *
 * A "dead drive" is an operations table that fails every call on a side's
 * files with EIO once armed (the lock file excepted: it is not replicated,
 * docs/replication.md). The tests:
 *  1. a replicated database's two sides are byte for byte the same;
 *  2. the active side failing at the Nth call of every registry, store,
 *     log, blob, prepared-file and sync site (an injected EIO, after which
 *     the whole side is dead): every transfer is acknowledged, the database
 *     has failed over, the bank holds 16,000 and the ledger exactly the
 *     acknowledged transfers - in the same handle and after reopening;
 *  3. the passive side failing first: commits go on and it is marked stale;
 *     then the active side failing: the commit fails with "failover
 *     refused", and once the drive is back nothing acknowledged is lost;
 *  4. a full file system (a 2 MiB tmpfs, where the machine lets us mount
 *     one) under the active side: ENOSPC fails over; failover refused when
 *     the lock file's hint shows a newer state than the readable side
 *     holds (another process marked it stale), and at open unless the hint
 *     proves the other side current;
 *  5. reinstate while another process and a thread commit: afterwards the
 *     two sides are identical and the reinstated side serves reads;
 *  6. kill -9 at the new crash points (state written on one side, copy
 *     synced before the side is marked live) and at mirrored writes: after
 *     recovery the bank balances, nothing acknowledged is lost, and a
 *     clean close leaves the sides identical.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault.h"
#include "os.h"
#include "t.h"

static sop_err err;

#define NACC  16
#define START 1000

/* ---- the dead drive ---- */

static const sop__os_ops *base_ops;
static sop__os_ops dead_ops;
static char dead_prefix[4096];
static size_t dead_len;
static atomic_int dead_now;       /* failing from now on */
static atomic_int dead_on_inject; /* ... or once a fault was injected */
static atomic_uchar fd_dead[65536];

static bool failing(void)
{
    return dead_len > 0 &&
           (atomic_load(&dead_now) || (atomic_load(&dead_on_inject) && sop__fault_injected() > 0));
}

static bool dead_path(const char *p)
{
    return dead_len > 0 && strncmp(p, dead_prefix, dead_len) == 0 &&
           (p[dead_len] == '/' || p[dead_len] == '\0') && strcmp(p + dead_len, "/lock") != 0;
}

static bool dead_fd(int fd)
{
    return fd >= 0 && fd < 65536 && fd_dead[fd] && failing();
}

#define DEAD_FD(fd)                                                                                \
    do {                                                                                           \
        if (dead_fd(fd)) {                                                                         \
            errno = EIO;                                                                           \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)
#define DEAD_PATH(p)                                                                               \
    do {                                                                                           \
        if (dead_path(p) && failing()) {                                                           \
            errno = EIO;                                                                           \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

static int d_open(const char *p, int flags, mode_t mode)
{
    DEAD_PATH(p);
    int fd = base_ops->open(p, flags, mode);
    if (fd >= 0 && fd < 65536)
        fd_dead[fd] = dead_path(p);
    return fd;
}
static int d_close(int fd)
{
    if (fd >= 0 && fd < 65536)
        fd_dead[fd] = 0;
    return base_ops->close(fd);
}
static ssize_t d_pread(int fd, void *b, size_t n, off_t o)
{
    DEAD_FD(fd);
    return base_ops->pread(fd, b, n, o);
}
static ssize_t d_pwrite(int fd, const void *b, size_t n, off_t o)
{
    DEAD_FD(fd);
    return base_ops->pwrite(fd, b, n, o);
}
static int d_fsync(int fd)
{
    DEAD_FD(fd);
    return base_ops->fsync(fd);
}
static int d_fdatasync(int fd)
{
    DEAD_FD(fd);
    return base_ops->fdatasync(fd);
}
static int d_syncfs(int fd)
{
    DEAD_FD(fd);
    return base_ops->syncfs(fd);
}
static int d_ftruncate(int fd, off_t l)
{
    DEAD_FD(fd);
    return base_ops->ftruncate(fd, l);
}
static int d_fallocate(int fd, int m, off_t o, off_t l)
{
    DEAD_FD(fd);
    return base_ops->fallocate(fd, m, o, l);
}
static int d_rename(const char *a, const char *b)
{
    DEAD_PATH(a);
    return base_ops->rename(a, b);
}
static int d_unlink(const char *p)
{
    DEAD_PATH(p);
    return base_ops->unlink(p);
}
static int d_mkdir(const char *p, mode_t m)
{
    DEAD_PATH(p);
    return base_ops->mkdir(p, m);
}
static int d_rmdir(const char *p)
{
    DEAD_PATH(p);
    return base_ops->rmdir(p);
}
static int d_fsync_dir(const char *p)
{
    DEAD_PATH(p);
    return base_ops->fsync_dir(p);
}
static int d_lock(int fd, int type, off_t o, off_t l, bool w)
{
    DEAD_FD(fd);
    return base_ops->lock(fd, type, o, l, w);
}
static int d_fstat(int fd, struct stat *st)
{
    DEAD_FD(fd);
    return base_ops->fstat(fd, st);
}
static int d_stat(const char *p, struct stat *st)
{
    DEAD_PATH(p);
    return base_ops->stat(p, st);
}
static int d_opendir(const char *p, void **d)
{
    DEAD_PATH(p);
    return base_ops->opendir(p, d);
}

static void dead_install(void)
{
    base_ops = sop__os_default_ops();
    dead_ops = *base_ops;
    dead_ops.open = d_open;
    dead_ops.close = d_close;
    dead_ops.pread = d_pread;
    dead_ops.pwrite = d_pwrite;
    dead_ops.fsync = d_fsync;
    dead_ops.fdatasync = d_fdatasync;
    dead_ops.syncfs = d_syncfs;
    dead_ops.ftruncate = d_ftruncate;
    dead_ops.fallocate = d_fallocate;
    dead_ops.rename = d_rename;
    dead_ops.unlink = d_unlink;
    dead_ops.mkdir = d_mkdir;
    dead_ops.rmdir = d_rmdir;
    dead_ops.fsync_dir = d_fsync_dir;
    dead_ops.lock = d_lock;
    dead_ops.fstat = d_fstat;
    dead_ops.stat = d_stat;
    dead_ops.opendir = d_opendir;
    memset(fd_dead, 0, sizeof(fd_dead));
    sop__os_set_ops(&dead_ops);
}

/* Which folder dies, and when: now, or at the first injected fault. */
static void dead_arm(const char *prefix, bool now, bool on_inject)
{
    snprintf(dead_prefix, sizeof(dead_prefix), "%s", prefix ? prefix : "");
    dead_len = prefix ? strlen(prefix) : 0;
    atomic_store(&dead_now, now);
    atomic_store(&dead_on_inject, on_inject);
}

static void dead_off(void)
{
    dead_arm(NULL, false, false);
    sop__os_set_ops(NULL);
}

/* ---- the database and the bank ---- */

typedef struct rdb {
    char a[4096], b[4096];
} rdb;

static sop_db_options opts_of(const rdb *r)
{
    sop_db_options o;
    sop_db_options_init(&o);
    o.passive_path = r->b;
    o.checkpoint_bytes = 64u << 10;
    o.lock_timeout_ms = 20000;
    return o;
}

static sop_db *open_db(const rdb *r)
{
    sop_db_options o = opts_of(r);
    sop_db *db;
    CHECK_OK(sop_db_open(r->a, &o, &db, &err), &err);
    return db;
}

/* The bank's accounts and an empty ledger. */
static void rdb_fill(const rdb *r)
{
    sop_db *db = open_db(r);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_store_options so;
    sop_store_options_init(&so);
    so.slot_length = 4;
    sop_btree *bank, *ledger;
    CHECK_OK(sop_store_create(t, "bank", &so, &bank, &err), &err);
    so.slot_length = 8;
    so.value_placement = SOP_VALUES_ACTIVE;
    CHECK_OK(sop_store_create(t, "ledger", &so, &ledger, &err), &err);
    for (int i = 0; i < NACC; i++) {
        char k[16], v[16];
        snprintf(k, sizeof(k), "acct%02d", i);
        int n = snprintf(v, sizeof(v), "%d", START);
        CHECK_OK(sop_btree_add(bank, k, strlen(k), v, (size_t)n, NULL, &err), &err);
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    sop_db_close(db);
}

static void rdb_make(rdb *r, const char *root, const char *name)
{
    snprintf(r->a, sizeof(r->a), "%s/%s-a", root, name);
    snprintf(r->b, sizeof(r->b), "%s/%s-b", root, name);
    sop_db_options o = opts_of(r);
    CHECK_OK(sop_db_init(r->a, &o, &err), &err);
    rdb_fill(r);
}

static int balance(sop_btree *bank, int i, sop_err *e, sop_rc *rc)
{
    char k[16];
    snprintf(k, sizeof(k), "acct%02d", i);
    sop_item it;
    *rc = sop_btree_get(bank, k, strlen(k), &it, e);
    if (*rc != SOP_OK)
        return 0;
    char v[32];
    size_t n = it.value_len < sizeof(v) - 1 ? it.value_len : sizeof(v) - 1;
    memcpy(v, it.value, n);
    v[n] = '\0';
    return atoi(v);
}

/* Transfer number `tx` (deterministic accounts and amount). Returns the
 * commit's result; e says why it failed. */
static sop_rc transfer(sop_db *db, int tx, sop_err *e)
{
    sop_txn *t;
    sop_rc rc = sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, e);
    if (rc != SOP_OK)
        return rc;
    sop_btree *bank = NULL, *ledger = NULL;
    rc = sop_store_open(t, "bank", &bank, e);
    if (rc == SOP_OK)
        rc = sop_store_open(t, "ledger", &ledger, e);
    int from = (tx * 7) % NACC, to = (tx * 7 + 1 + tx % (NACC - 1)) % NACC, amt = 1 + tx % 50;
    if (to == from)
        to = (to + 1) % NACC;
    int bf = 0, bt = 0;
    if (rc == SOP_OK)
        bf = balance(bank, from, e, &rc);
    if (rc == SOP_OK)
        bt = balance(bank, to, e, &rc);
    char k[16], v[32], entry[2048];
    int n;
    if (rc == SOP_OK) {
        snprintf(k, sizeof(k), "acct%02d", from);
        n = snprintf(v, sizeof(v), "%d", bf - amt);
        rc = sop_btree_update(bank, k, strlen(k), v, (size_t)n, e);
    }
    if (rc == SOP_OK) {
        snprintf(k, sizeof(k), "acct%02d", to);
        n = snprintf(v, sizeof(v), "%d", bt + amt);
        rc = sop_btree_update(bank, k, strlen(k), v, (size_t)n, e);
    }
    if (rc == SOP_OK) {
        snprintf(k, sizeof(k), "tx%06d", tx);
        memset(entry, 'a' + tx % 26, sizeof(entry));
        n = snprintf(entry, 64, "%d>%d:%d;", from, to, amt);
        entry[n] = '#';
        rc = sop_btree_add(ledger, k, strlen(k), entry, sizeof(entry), NULL, e);
    }
    if (rc == SOP_OK && tx % 4 == 3) {
        uint8_t txid[SOP_ID_LEN];
        rc = sop_txn_prepare(t, "test", txid, e);
        if (rc == SOP_OK)
            rc = sop_db_commit_prepared(db, txid, e);
    } else if (rc == SOP_OK) {
        rc = sop_txn_commit(t, e);
    }
    sop_txn_free(t);
    return rc;
}

/* The bank holds NACC * START; the ledger has exactly the transfers in
 * acked[0..n) (and, with `maybe`, perhaps the others below `upto`). */
static void verify(sop_db *db, const bool *acked, int upto, bool maybe, const char *what)
{
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    sop_btree *bank, *ledger;
    CHECK_OK(sop_store_open(t, "bank", &bank, &err), &err);
    CHECK_OK(sop_store_open(t, "ledger", &ledger, &err), &err);
    long sum = 0;
    for (int i = 0; i < NACC; i++) {
        sop_rc rc;
        sum += balance(bank, i, &err, &rc);
        CHECK_MSG(rc == SOP_OK, "%s: account %d: %s", what, i, t_errmsg(&err));
    }
    CHECK_MSG(sum == (long)NACC * START, "%s: the bank holds %ld, not %d", what, sum, NACC * START);
    int in_ledger = 0, want = 0;
    for (int tx = 0; tx < upto; tx++) {
        char k[16];
        snprintf(k, sizeof(k), "tx%06d", tx);
        sop_item it;
        sop_rc rc = sop_btree_get(ledger, k, strlen(k), &it, &err);
        CHECK_MSG(rc == SOP_OK || rc == SOP_NOTFOUND, "%s: ledger %s: %s", what, k, t_errmsg(&err));
        if (acked[tx])
            want++;
        if (rc == SOP_OK) {
            in_ledger++;
            CHECK_MSG(acked[tx] || maybe, "%s: transfer %d was not acknowledged but is there", what,
                      tx);
            CHECK_MSG(it.value_len == 2048 && ((const char *)it.value)[2047] == 'a' + tx % 26,
                      "%s: ledger %s has the wrong value", what, k);
        } else {
            CHECK_MSG(!acked[tx], "%s: acknowledged transfer %d is lost", what, tx);
        }
    }
    CHECK_MSG(in_ledger == want || maybe, "%s: ledger has %d, %d acknowledged", what, in_ledger,
              want);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
}

/* Every acknowledged transfer below upto is in the ledger (the one in
 * flight when a process died may or may not be). */
static void verify_acked(sop_db *db, const bool *acked, int upto, const char *what)
{
    sop_txn *t;
    sop_btree *l;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_store_open(t, "ledger", &l, &err), &err);
    for (int i = 0; i < upto; i++) {
        if (!acked[i])
            continue;
        char k[16];
        snprintf(k, sizeof(k), "tx%06d", i);
        sop_item it;
        CHECK_MSG(sop_btree_get(l, k, strlen(k), &it, &err) == SOP_OK, "%s: acknowledged %s lost",
                  what, k);
    }
    sop_txn_free(t);
}

static char problems[8192];
static void problem_cb(void *ctx, const char *msg)
{
    (void)ctx;
    size_t l = strlen(problems);
    snprintf(problems + l, sizeof(problems) - l, "%s\n", msg);
}

static void check_clean(sop_db *db, const char *what)
{
    problems[0] = '\0';
    sop_check_report rep;
    sop_rc rc = sop_db_check(db, problem_cb, NULL, &rep, &err);
    CHECK_MSG(rc == SOP_OK, "%s: check: %s %s\n%s", what, sop_rc_name(rc), t_errmsg(&err),
              problems);
}

static sop_replication_info info_of(sop_db *db)
{
    sop_replication_info ri;
    CHECK_OK(sop_db_replication(db, &ri, &err), &err);
    CHECK(ri.enabled);
    return ri;
}

/* ---- comparing the two sides ---- */

static char diffs[16384];

static void diff_note(const char *what, const char *path)
{
    size_t l = strlen(diffs);
    if (l + 300 < sizeof(diffs))
        snprintf(diffs + l, sizeof(diffs) - l, "%s: %.250s\n", what, path);
}

static void cmp_tree(const char *a, const char *b, bool top)
{
    DIR *d = opendir(a);
    CHECK_MSG(d != NULL, "opendir %s: %s", a, strerror(errno));
    struct dirent *de;
    int na = 0;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (top && !strcmp(de->d_name, "lock"))
            continue;
        na++;
        char pa[4096], pb[4096];
        snprintf(pa, sizeof(pa), "%s/%s", a, de->d_name);
        snprintf(pb, sizeof(pb), "%s/%s", b, de->d_name);
        struct stat sa, sb;
        CHECK(lstat(pa, &sa) == 0);
        if (lstat(pb, &sb) != 0) {
            diff_note("only in side 0", pa);
            continue;
        }
        if (S_ISDIR(sa.st_mode)) {
            cmp_tree(pa, pb, false);
            continue;
        }
        bool same = sa.st_size == sb.st_size;
        if (same) {
            FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
            CHECK(fa && fb);
            int ca, cb;
            do {
                ca = getc(fa);
                cb = getc(fb);
            } while (ca == cb && ca != EOF);
            same = ca == cb;
            fclose(fa);
            fclose(fb);
        }
        if (!same) {
            diff_note("differs", pa);
        }
    }
    closedir(d);
    d = opendir(b);
    CHECK(d != NULL);
    int nb = 0;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            !(top && !strcmp(de->d_name, "lock")))
            nb++;
    closedir(d);
    if (nb != na) {
        diff_note("a different number of entries in", b);
    }
}

static void sides_identical(const rdb *r, const char *what)
{
    diffs[0] = '\0';
    cmp_tree(r->a, r->b, true);
    CHECK_MSG(diffs[0] == '\0', "%s: the sides differ:\n%s", what, diffs);
}

/* ---- 1 ---- */

TEST(both_sides_are_byte_for_byte_the_same)
{
    rdb r;
    rdb_make(&r, t_tmpdir(), "same");
    sop_db *db = open_db(&r);
    bool acked[40] = {false};
    for (int tx = 0; tx < 40; tx++) {
        CHECK_OK(transfer(db, tx, &err), &err);
        acked[tx] = true;
    }
    verify(db, acked, 40, false, "mirrored");
    sop_replication_info ri = info_of(db);
    CHECK(ri.active == 0 && !ri.stale[0] && !ri.stale[1] && ri.generation == 1);
    check_clean(db, "mirrored");
    sop_db_close(db);
    sides_identical(&r, "after a clean close");
    /* a planned switch-over and back: reads from the other side */
    db = open_db(&r);
    CHECK_OK(sop_db_failover(db, &err), &err);
    ri = info_of(db);
    CHECK(ri.active == 1 && ri.generation == 2);
    verify(db, acked, 40, false, "switched over");
    CHECK_OK(transfer(db, 40, &err), &err);
    CHECK_OK(sop_db_failover(db, &err), &err);
    CHECK_EQ(info_of(db).active, 0);
    sop_db_close(db);
    sides_identical(&r, "after switching over and back");
    /* the passive path is fixed */
    sop_db_options o = opts_of(&r);
    o.passive_path = r.a;
    sop_db *x;
    CHECK_RC(sop_db_open(r.a, &o, &x, &err), SOP_INVALID, &err);
    /* a database that is not replicated */
    char plain[4200];
    snprintf(plain, sizeof(plain), "%s/plain", t_tmpdir());
    CHECK_OK(sop_db_init(plain, NULL, &err), &err);
    CHECK_OK(sop_db_open(plain, NULL, &x, &err), &err);
    sop_replication_info none;
    CHECK_OK(sop_db_replication(x, &none, &err), &err);
    CHECK(!none.enabled);
    CHECK_RC(sop_db_failover(x, &err), SOP_INVALID, &err);
    CHECK_RC(sop_db_reinstate(x, NULL, NULL, &err), SOP_INVALID, &err);
    sop_db_close(x);
}

/* ---- 2 ---- */

#define NTX 24

/* Arms the fault, opens, runs NTX transfers, checks; reopens and checks.
 * Returns whether the fault was injected. */
static bool failover_case(const char *root, sop__site site, unsigned nth, int no)
{
    char what[160], name[32];
    snprintf(what, sizeof(what), "%s #%u", sop__fault_site_name(site), nth);
    snprintf(name, sizeof(name), "fo%d", no);
    rdb r;
    rdb_make(&r, root, name);
    dead_install();
    dead_arm(r.a, false, true);
    sop__fault_reset();
    sop__fault_io(site, nth, SOP__FAULT_EIO, false);
    bool acked[NTX] = {false};
    sop_db_options o = opts_of(&r);
    sop_db *db;
    sop_rc rc = sop_db_open(r.a, &o, &db, &err);
    CHECK_MSG(rc == SOP_OK, "%s: open: %s", what, t_errmsg(&err));
    for (int tx = 0; tx < NTX; tx++) {
        rc = transfer(db, tx, &err);
        CHECK_MSG(rc == SOP_OK, "%s: transfer %d: %s %s", what, tx, sop_rc_name(rc),
                  t_errmsg(&err));
        acked[tx] = true;
    }
    bool injected = sop__fault_injected() > 0;
    sop__fault_reset();
    verify(db, acked, NTX, false, what);
    sop_replication_info ri = info_of(db);
    if (injected)
        CHECK_MSG(ri.active == 1 && ri.stale[0] && !ri.stale[1] && ri.reason[0],
                  "%s: not failed over (active %d, stale %d/%d)", what, ri.active, ri.stale[0],
                  ri.stale[1]);
    else
        CHECK(ri.active == 0 && !ri.stale[0] && !ri.stale[1]);
    sop_db_close(db);
    /* the dead side stays dead: a new handle works from the other one */
    CHECK_OK(sop_db_open(r.a, &o, &db, &err), &err);
    verify(db, acked, NTX, false, what);
    check_clean(db, what);
    CHECK_OK(transfer(db, NTX, &err), &err);
    sop_db_close(db);
    dead_off();
    return injected;
}

TEST(the_active_side_failing_at_every_site_fails_over_and_loses_nothing)
{
    static const sop__site sites[] = {
        SOP__SITE_REG_SEGMENT_OPEN, SOP__SITE_REG_SEGMENT_CREATE,
        SOP__SITE_REG_BLOCK_READ,   SOP__SITE_REG_BLOCK_WRITE,
        SOP__SITE_REG_LOCK,         SOP__SITE_REG_SYNC,
        SOP__SITE_REPO_READ,        SOP__SITE_REPO_WRITE,
        SOP__SITE_LOG_OPEN,         SOP__SITE_LOG_WRITE,
        SOP__SITE_LOG_SYNC,         SOP__SITE_LOG_READ,
        SOP__SITE_LOG_RESET,        SOP__SITE_BLOB_OPEN,
        SOP__SITE_BLOB_WRITE,       SOP__SITE_BLOB_READ,
        SOP__SITE_BLOB_SYNC,        SOP__SITE_BLOB_MKDIR,
        SOP__SITE_BLOB_REMOVE,      SOP__SITE_PREP_WRITE,
        SOP__SITE_PREP_READ,        SOP__SITE_PREP_REMOVE,
        SOP__SITE_DB_SYNC,          SOP__SITE_DB_HEADER,
    };
    const char *root = t_tmpdir();
    int no = 0, cases = 0, injected = 0;
    for (size_t i = 0; i < sizeof(sites) / sizeof(sites[0]); i++) {
        unsigned nths[] = {1, 2, 3, 5, 9, 17, 33, 65, 129};
        for (size_t j = 0; j < sizeof(nths) / sizeof(nths[0]); j++) {
            cases++;
            if (!failover_case(root, sites[i], nths[j], no++))
                break; /* the site has fewer calls */
            injected++;
        }
    }
    printf("# %d cases, %d failovers\n", cases, injected);
    CHECK(injected >= 40);
}

/* ---- 3 ---- */

TEST(the_passive_failing_first_then_the_active_refuses_failover_and_loses_nothing)
{
    rdb r;
    rdb_make(&r, t_tmpdir(), "pfirst");
    bool acked[60] = {false};
    dead_install();
    sop_db *db = open_db(&r);
    for (int tx = 0; tx < 10; tx++) {
        CHECK_OK(transfer(db, tx, &err), &err);
        acked[tx] = true;
    }
    dead_arm(r.b, true, false); /* the passive drive dies */
    for (int tx = 10; tx < 20; tx++) {
        CHECK_OK(transfer(db, tx, &err), &err);
        acked[tx] = true;
    }
    sop_replication_info ri = info_of(db);
    CHECK(ri.active == 0 && !ri.stale[0] && ri.stale[1]);
    CHECK_MSG(strstr(ri.reason, "Input/output error") != NULL, "reason: %s", ri.reason);
    CHECK_RC(sop_db_failover(db, &err), SOP_INVALID, &err);
    CHECK_MSG(strstr(err.msg, "stale") != NULL, "%s", err.msg);
    dead_arm(r.a, true, false); /* then the active one */
    int tx = 20;
    sop_rc rc = transfer(db, tx, &err);
    CHECK_MSG(rc != SOP_OK, "a commit succeeded with both sides dead");
    CHECK_MSG(strstr(err.msg, "failover refused") != NULL, "%s: %s", sop_rc_name(rc), err.msg);
    sop_db_close(db);
    /* the active drive comes back: everything acknowledged is there */
    dead_arm(NULL, false, false);
    db = open_db(&r);
    ri = info_of(db);
    CHECK(ri.active == 0 && ri.stale[1]);
    verify(db, acked, 21, true, "after the active drive came back");
    verify(db, acked, 20, false, "after the active drive came back");
    check_clean(db, "after the active drive came back");
    CHECK_OK(sop_db_reinstate(db, NULL, NULL, &err), &err);
    ri = info_of(db);
    CHECK(!ri.stale[0] && !ri.stale[1]);
    sop_db_close(db);
    dead_off();
    sides_identical(&r, "after reinstate");
}

/* ---- 4 ---- */

TEST(a_full_file_system_under_the_active_side_fails_over)
{
    const char *root = t_tmpdir();
    char mnt[3000];
    snprintf(mnt, sizeof(mnt), "%.2900s/small", root);
    CHECK(mkdir(mnt, 0700) == 0);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=2m") != 0)
        T_SKIP("cannot mount a tmpfs here (needs root)");
    rdb r;
    snprintf(r.a, sizeof(r.a), "%s/db", mnt);
    snprintf(r.b, sizeof(r.b), "%.3000s/full-b", root);
    sop_db_options o = opts_of(&r);
    sop_rc rc = sop_db_init(r.a, &o, &err);
    if (rc != SOP_OK)
        umount(mnt);
    CHECK_OK(rc, &err);
    rdb_fill(&r);
    sop_db *db = open_db(&r);
    static bool acked[2000];
    memset(acked, 0, sizeof(acked));
    /* until the file system fills and the database fails over, then 20
     * transfers more on the other side */
    int tx, failed_over_at = -1;
    for (tx = 0; tx < 2000 && (failed_over_at < 0 || tx < failed_over_at + 20); tx++) {
        rc = transfer(db, tx, &err);
        if (rc != SOP_OK)
            break;
        acked[tx] = true;
        if (failed_over_at < 0 && info_of(db).active == 1)
            failed_over_at = tx;
    }
    sop_replication_info ri = info_of(db);
    bool ok =
        rc == SOP_OK && ri.active == 1 && ri.stale[0] && strstr(ri.reason, "No space left") != NULL;
    char why[512];
    snprintf(why, sizeof(why), "after %d transfers: %s %s; active %d; reason %s", tx,
             sop_rc_name(rc), t_errmsg(&err), ri.active, ri.reason);
    if (ok)
        verify(db, acked, tx, false, "after the file system filled");
    sop_db_close(db);
    umount(mnt);
    CHECK_MSG(ok, "%s", why);
}

/* A process whose view is older than the newest state: another process
 * marked the passive side stale, on the active side only (the passive was
 * dead then); then the passive comes back and the active dies. The side
 * it can read says "both live", but the lock file's hint says a newer
 * state exists: failover must be refused. */
TEST(failover_is_refused_when_a_newer_state_exists_only_on_the_failed_side)
{
    rdb r;
    rdb_make(&r, t_tmpdir(), "hint");
    int go[2];
    CHECK(pipe(go) == 0);
    fflush(stdout);
    pid_t pid = fork(); /* before this process opens anything */
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(3);
        dead_install();
        dead_arm(r.b, true, false);
        sop_db *db;
        sop_db_options o = opts_of(&r);
        sop_err e = {0};
        if (sop_db_open(r.a, &o, &db, &e) != SOP_OK)
            _exit(4);
        sop_replication_info ri;
        if (sop_db_replication(db, &ri, &e) != SOP_OK || !ri.stale[1])
            _exit(5);
        sop_db_close(db);
        _exit(0);
    }
    dead_install();
    sop_db *db = open_db(&r); /* sees generation 1: both live */
    bool acked[2] = {true, false};
    CHECK_OK(transfer(db, 0, &err), &err);
    CHECK(write(go[1], "g", 1) == 1);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
    dead_arm(r.a, true, false); /* the passive is back, the active dies */
    sop_rc rc = transfer(db, 1, &err);
    CHECK_MSG(rc == SOP_IO && strstr(err.msg, "failover refused") != NULL &&
                  strstr(err.msg, "may be stale") != NULL,
              "%s: %s", sop_rc_name(rc), t_errmsg(&err));
    sop_db_close(db);
    dead_arm(NULL, false, false);
    db = open_db(&r);
    sop_replication_info ri = info_of(db);
    CHECK(ri.active == 0 && ri.stale[1] && ri.generation == 2);
    verify(db, acked, 2, false, "after the active drive came back");
    check_clean(db, "after the active drive came back");
    sop_db_close(db);
    dead_off();
}

/* Opening with the active side dead fails over only when the lock file's
 * hint proves the other side current; after a reboot (no hint) it is
 * refused and nothing is written. */
TEST(opening_with_the_active_side_dead_fails_over_only_when_provably_safe)
{
    rdb r;
    rdb_make(&r, t_tmpdir(), "atopen");
    char lock[4200];
    snprintf(lock, sizeof(lock), "%s/lock", r.a);
    int fd = open(lock, O_WRONLY);
    CHECK(fd >= 0);
    static const uint8_t zero[32];
    CHECK(pwrite(fd, zero, sizeof(zero), 12288) ==
          (ssize_t)sizeof(zero)); /* the hint, as after a reboot */
    close(fd);
    dead_install();
    dead_arm(r.a, true, false);
    sop_db_options o = opts_of(&r);
    sop_db *db;
    CHECK_RC(sop_db_open(r.a, &o, &db, &err), SOP_IO, &err);
    CHECK_MSG(strstr(err.msg, "failover refused") != NULL, "%s", err.msg);
    dead_arm(NULL, false, false);
    db = open_db(&r); /* healthy again: nothing changed, the hint is back */
    sop_replication_info ri = info_of(db);
    CHECK(ri.active == 0 && !ri.stale[0] && !ri.stale[1] && ri.generation == 1);
    sop_db_close(db);
    dead_arm(r.a, true, false);
    CHECK_OK(sop_db_open(r.a, &o, &db, &err), &err); /* the hint proves side 1 current */
    ri = info_of(db);
    CHECK(ri.active == 1 && ri.stale[0] && ri.generation == 2);
    bool acked[1] = {true};
    CHECK_OK(transfer(db, 0, &err), &err);
    verify(db, acked, 1, false, "failed over at open");
    sop_db_close(db);
    dead_off();
}

/* ---- 5 ---- */

/* Marks the passive side stale the way a replaced drive does: its folder
 * emptied, then a write. */
static void replace_passive(const rdb *r, sop_db *db, int tx)
{
    char cmd[8500];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir '%s'", r->b, r->b);
    CHECK(system(cmd) == 0);
    CHECK_OK(transfer(db, tx, &err), &err);
    sop_replication_info ri = info_of(db);
    CHECK_MSG(ri.active == 0 && ri.stale[1], "the emptied passive side is not stale");
}

typedef struct writer {
    const rdb *r;
    int from, n;
    atomic_int *stop;
    int done;
    char msg[300];
} writer;

static void *writer_thread(void *arg)
{
    writer *w = arg;
    sop_err e = {0};
    sop_db_options o = opts_of(w->r);
    sop_db *db;
    if (sop_db_open(w->r->a, &o, &db, &e) != SOP_OK) {
        snprintf(w->msg, sizeof(w->msg), "open: %s", e.msg);
        return NULL;
    }
    for (int i = 0; i < w->n && !atomic_load(w->stop); i++) {
        sop_rc rc;
        do {
            rc = transfer(db, w->from + i, &e);
        } while (rc == SOP_CONFLICT);
        if (rc != SOP_OK) {
            snprintf(w->msg, sizeof(w->msg), "transfer %d: %s %s", w->from + i, sop_rc_name(rc),
                     e.msg);
            break;
        }
        w->done = i + 1;
    }
    sop_db_close(db);
    return NULL;
}

static void progress_cb(void *ctx, uint64_t bytes, uint64_t files)
{
    uint64_t *p = ctx;
    p[0] = bytes;
    p[1] = files;
}

TEST(reinstate_under_load_from_another_process_and_a_thread_makes_the_sides_equal)
{
    rdb r;
    rdb_make(&r, t_tmpdir(), "rein");
    /* the other process first, before this one opens anything */
    int go[2], res[2];
    CHECK(pipe(go) == 0 && pipe(res) == 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(3);
        /* stop when the parent closes its end of `go` */
        int fl = fcntl(go[0], F_GETFL);
        fcntl(go[0], F_SETFL, fl | O_NONBLOCK);
        sop_err e = {0};
        sop_db_options o = opts_of(&r);
        sop_db *db;
        if (sop_db_open(r.a, &o, &db, &e) != SOP_OK)
            _exit(4);
        int i;
        for (i = 0; i < 400; i++) {
            if (read(go[0], &c, 1) == 0)
                break;
            sop_rc rc;
            do {
                rc = transfer(db, 10000 + i, &e);
            } while (rc == SOP_CONFLICT);
            if (rc != SOP_OK) {
                fprintf(stderr, "child transfer: %s\n", e.msg);
                _exit(5);
            }
        }
        sop_db_close(db);
        if (write(res[1], &i, sizeof(i)) != sizeof(i))
            _exit(6);
        _exit(0);
    }
    close(res[1]);
    sop_db *db = open_db(&r);
    replace_passive(&r, db, 0);
    CHECK(write(go[1], "g", 1) == 1);
    atomic_int stop = 0;
    writer w = {&r, 20000, 400, &stop, 0, ""};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, writer_thread, &w) == 0);
    usleep(150 * 1000);
    uint64_t prog[2] = {0, 0};
    sop_rc rc = sop_db_reinstate(db, progress_cb, prog, &err);
    usleep(150 * 1000);
    atomic_store(&stop, 1);
    close(go[1]);
    pthread_join(th, NULL);
    int child_done = -1;
    CHECK(read(res[0], &child_done, sizeof(child_done)) == sizeof(child_done));
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_OK(rc, &err);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
    CHECK_MSG(w.msg[0] == '\0', "thread: %s", w.msg);
    CHECK_MSG(prog[1] > 5 && prog[0] > 0, "progress: %llu bytes, %llu files",
              (unsigned long long)prog[0], (unsigned long long)prog[1]);
    printf("# reinstated %llu bytes in %llu files while the thread made %d and the other "
           "process %d transfers\n",
           (unsigned long long)prog[0], (unsigned long long)prog[1], w.done, child_done);
    CHECK(w.done > 0 && child_done > 0);
    sop_replication_info ri = info_of(db);
    CHECK(ri.active == 0 && !ri.stale[0] && !ri.stale[1]);
    sop_db_close(db);
    sides_identical(&r, "after reinstate under load");
    /* the reinstated side serves */
    db = open_db(&r);
    CHECK_OK(sop_db_failover(db, &err), &err);
    static bool acked[30000];
    memset(acked, 0, sizeof(acked));
    acked[0] = true;
    for (int i = 0; i < w.done; i++)
        acked[20000 + i] = true;
    for (int i = 0; i < child_done; i++)
        acked[10000 + i] = true;
    verify(db, acked, 30000, false, "on the reinstated side");
    check_clean(db, "on the reinstated side");
    sop_db_close(db);
}

/* ---- 6 ---- */

/* Runs transfers [from, from+n) in a child that is killed by the armed
 * fault; each acknowledged one is reported through a pipe. Returns the
 * acknowledged count (the child must have been killed). */
static int killed_child(const rdb *r, const char *dead, const char *spec, int from, int n,
                        bool reinstate, bool *acked, const char *what)
{
    int p[2];
    CHECK(pipe(p) == 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        close(p[0]);
        if (dead) {
            dead_install();
            dead_arm(dead, true, false);
        }
        sop__fault_reset();
        sop_err pe = {0};
        if (sop__fault_parse(spec, &pe) != SOP_OK)
            _exit(7);
        sop_err e = {0};
        sop_db_options o = opts_of(r);
        sop_db *db;
        if (sop_db_open(r->a, &o, &db, &e) != SOP_OK)
            _exit(4);
        if (reinstate) {
            if (dead)
                dead_arm(NULL, false, false);
            (void)sop_db_reinstate(db, NULL, NULL, &e);
        }
        for (int i = from; i < from + n; i++) {
            if (transfer(db, i, &e) == SOP_OK && write(p[1], &i, sizeof(i)) != sizeof(i))
                _exit(6);
        }
        sop_db_close(db);
        _exit(0);
    }
    close(p[1]);
    int got = 0, i;
    while (read(p[0], &i, sizeof(i)) == sizeof(i)) {
        acked[i] = true;
        got++;
    }
    close(p[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "%s: the child was not killed (status %#x)", what, status);
    return got;
}

TEST(kill_at_every_replication_step_is_recovered)
{
    static const struct {
        const char *spec;
        bool dead_b, reinstate;
    } cases[] = {
        {"point=replication.failed_over:nth=1:action=kill", true, false},
        {"point=replication.failed_over:nth=1:action=kill", false, false}, /* active dead */
        {"point=replication.copied:nth=1:action=kill", true, true},
        {"point=replication.failed_over:nth=1:action=kill", true, true},
        {"site=log.write:nth=3:action=kill", false, false},
        {"site=log.sync:nth=4:action=kill", false, false},
        {"site=registry.block_write:nth=7:action=kill", false, false},
        {"site=blob.write:nth=5:action=kill", false, false},
        {"site=repo.write:nth=2:action=kill", false, false},
        {"site=db.sync:nth=1:action=kill", false, false},
        {"point=phase1.durable:nth=3:action=kill", false, false},
        {"point=phase2.registry_half:nth=2:action=kill", false, false},
    };
    static bool acked[2000];
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        rdb r;
        char name[32];
        snprintf(name, sizeof(name), "kill%zu", c);
        rdb_make(&r, t_tmpdir(), name);
        memset(acked, 0, sizeof(acked));
        char what[200];
        snprintf(what, sizeof(what), "%s%s%s", cases[c].spec,
                 cases[c].dead_b ? " (passive dead)" : "",
                 cases[c].reinstate ? " (reinstating)" : "");
        if (cases[c].reinstate) {
            /* make the passive stale first */
            dead_install();
            dead_arm(r.b, true, false);
            sop_db *db = open_db(&r);
            CHECK_OK(transfer(db, 1999, &err), &err);
            acked[1999] = true;
            sop_db_close(db);
            dead_off();
        }
        const char *dead = cases[c].dead_b && !cases[c].reinstate ? r.b : NULL;
        if (c == 1)
            dead = r.a;
        killed_child(&r, dead, cases[c].spec, 0, 200, cases[c].reinstate, acked, what);
        sop_db *db = open_db(&r);
        verify(db, acked, 2000, true, what);
        verify_acked(db, acked, 2000, what);
        check_clean(db, what);
        sop_replication_info ri = info_of(db);
        if (ri.stale[0] || ri.stale[1])
            CHECK_OK(sop_db_reinstate(db, NULL, NULL, &err), &err);
        ri = info_of(db);
        CHECK_MSG(!ri.stale[0] && !ri.stale[1], "%s: a side is still stale", what);
        CHECK_OK(transfer(db, 1500, &err), &err);
        sop_db_close(db);
        sides_identical(&r, what);
    }
}

/* ---- 7 ---- */

/* An I/O error at the Nth call of each replication site (the state files,
 * the lock file's barrier and hint, reinstate's copy), once and
 * persistent, through open, commits, a passive side dying and being
 * reinstated: every call succeeds or fails cleanly, and once the fault is
 * gone the database opens, the bank balances, nothing acknowledged is lost,
 * and after a reinstate the sides are identical. */
static bool repl_site_case(const char *root, sop__site site, unsigned nth, bool persist, int no)
{
    char what[160], name[32];
    snprintf(what, sizeof(what), "%s #%u%s", sop__fault_site_name(site), nth,
             persist ? " persistent" : "");
    snprintf(name, sizeof(name), "rs%d", no);
    rdb r;
    rdb_make(&r, root, name);
    dead_install();
    sop__fault_reset();
    sop__fault_io(site, nth, SOP__FAULT_EIO, persist);
    bool acked[16] = {false};
    sop_db_options o = opts_of(&r);
    sop_db *db = NULL;
    sop_err e = {0};
    sop_rc rc = sop_db_open(r.a, &o, &db, &e);
    CHECK_MSG(rc == SOP_OK || (e.code == rc && e.msg[0]), "%s: open: unclean error", what);
    for (int tx = 0; db && tx < 12; tx++) {
        if (tx == 4)
            dead_arm(r.b, true, false);
        if (tx == 8) {
            dead_arm(NULL, false, false);
            rc = sop_db_reinstate(db, NULL, NULL, &e);
            CHECK_MSG(rc == SOP_OK || (e.code == rc && e.msg[0]), "%s: reinstate: unclean error",
                      what);
        }
        rc = transfer(db, tx, &e);
        CHECK_MSG(rc == SOP_OK || (e.code == rc && e.msg[0]), "%s: transfer: unclean error", what);
        acked[tx] = rc == SOP_OK;
    }
    bool injected = sop__fault_injected() > 0;
    sop__fault_reset();
    dead_arm(NULL, false, false);
    sop_db_close(db);
    db = open_db(&r);
    verify(db, acked, 12, true, what);
    verify_acked(db, acked, 12, what);
    check_clean(db, what);
    sop_replication_info ri = info_of(db);
    if (ri.stale[0] || ri.stale[1])
        CHECK_OK(sop_db_reinstate(db, NULL, NULL, &err), &err);
    CHECK_OK(transfer(db, 14, &err), &err);
    sop_db_close(db);
    dead_off();
    sides_identical(&r, what);
    return injected;
}

TEST(io_errors_at_the_replication_sites_are_clean)
{
    static const sop__site sites[] = {SOP__SITE_REPL_STATE, SOP__SITE_REPL_LOCK,
                                      SOP__SITE_REPL_COPY};
    const char *root = t_tmpdir();
    int no = 0, injected = 0;
    for (size_t i = 0; i < sizeof(sites) / sizeof(sites[0]); i++) {
        int here = 0;
        for (int persist = 0; persist < 2; persist++) {
            for (unsigned nth = 1; nth < 400; nth = nth < 8 ? nth + 1 : nth * 2) {
                if (!repl_site_case(root, sites[i], nth, persist, no++))
                    break;
                here++;
            }
        }
        CHECK_MSG(here > 0, "no fault was ever injected at %s", sop__fault_site_name(sites[i]));
        injected += here;
    }
    printf("# %d faults injected at the replication sites\n", injected);
}
