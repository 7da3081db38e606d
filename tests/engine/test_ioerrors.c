/*
 * test_ioerrors.c - an I/O error at every call site, once and persistent:
 * a clean error, rollback, a database that recovers to all or nothing and
 * checks clean, and no leaks (TESTING.md, "I/O errors at every call site").
 *
 * For every I/O site of fault.h that the engine uses (all but test.a and
 * test.b), for nth = 1, 2, 3, ... (every call up to the 40th, then sparser,
 * until a run injects nothing), for every error kind that makes sense at
 * the site (EIO everywhere; ENOSPC and SHORT_WRITE where the site writes or
 * sizes files; EROFS where it creates, renames or removes them; ENOSPC and
 * EROFS, which take EIO's paths, at the first 12 calls only) and in three
 * modes, on a fresh database holding one store of committed data:
 *   once       the nth call fails; the workload goes on after a failed
 *              transaction (the handle must stay usable), then closes;
 *   persistent the nth and every later call fail; the workload stops at the
 *              first failure and closes;
 *   once+crash the nth call fails; the workload runs in a child that dies
 *              (_exit, no clean-up: as kill -9) right after the first
 *              failure - so a failed commit that left a record behind
 *              would be replayed by recovery.
 * Each case:
 *   1. arms the fault and runs the workload below, which reaches every
 *      site: every API call returns SOP_OK or a clean error (err.code set,
 *      a message, and for SOP_IO a path in the database folder);
 *      transactions are committed with phase 1 and phase 2 separately, so
 *      each outcome is known: failed before its commit point (must not be
 *      applied), after it (must be applied once recovered), or "outcome
 *      unknown" (either);
 *   2. disarms and reopens (recovery): sop_db_check clean, no prepared
 *      transaction left but the workload's own when its decision failed
 *      (committed here), the stores exactly the model of the applied
 *      transactions, a read-only transaction that saw a half-applied commit
 *      not validated, a new commit to every store, and the check clean
 *      again;
 *   3. no descriptor left open by the workload or the recovery; under ASan
 *      LeakSanitizer checks the heap after every site.
 * A failed expectation ends its case, not the test: the failures are
 * counted, the first three per check printed, and the test fails at the
 * end. SOP_IOERR_VERBOSE=1 prints them all; SOP_IOERR_ONLY="log.sync #10
 * EIO once" replays matching cases only; SOP_IOERR_TRACE=1 prints every
 * error and outcome.
 *
 * Durability is not what this test is about, so the runs use an operations
 * table whose fsync/fdatasync/syncfs/directory syncs do nothing and whose
 * fallocate only sets the size (the fault hook still counts and fails those
 * calls: it runs before the table), in /dev/shm when TMPDIR is not set.
 *
 * Workload (stores: base = values in nodes, committed before the fault is
 * armed; sep = separate values; act = actively persisted values; tmp):
 *   T1 write: base changes; creates sep, act, tmp with items.
 *   T2 write: updates and removes in base, sep, act (obsolete blobs).
 *   T3 read-only (SOP_TXN_READ): scans and gets, validated at commit.
 *   T4 prepare + commit_prepared: changes in base, sep, act.
 *   T5 write: drops tmp, changes base and act.
 *   T6 write, rolled back: active values written, then removed.
 *   sop_db_list_prepared, sop_db_check, sop_db_close (checkpoint).
 *
 * Then two focused cases: a failed phase 2 must not leave its store
 * unusable (a SOP_CONFLICT that retrying never clears), and a COMMIT record
 * that commit_prepared could not sync must not count after the prepared
 * transaction was rolled back and the process died.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "os.h"
#include "t.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

static sop_err err;
static char root[4096]; /* every database of the test is under this folder */

/* ---- no-op syncs, sparse preallocation ---- */

static int nosync_fd(int fd)
{
    (void)fd;
    return 0;
}

static int nosync_dir(const char *path)
{
    (void)path;
    return 0;
}

/* fallocate without allocating: only the size (a preallocated 4 MiB log
 * per open would be most of the test's time on tmpfs). */
static int sparse_fallocate(int fd, int mode, off_t off, off_t len)
{
    struct stat st;
    if (mode != 0 || fstat(fd, &st) != 0)
        return sop__os_default_ops()->fallocate(fd, mode, off, len);
    return st.st_size < off + len ? ftruncate(fd, off + len) : 0;
}

static sop__os_ops nosync_ops;

static void install_nosync(void)
{
    nosync_ops = *sop__os_default_ops();
    nosync_ops.fsync = nosync_fd;
    nosync_ops.fdatasync = nosync_fd;
    nosync_ops.syncfs = nosync_fd;
    nosync_ops.fsync_dir = nosync_dir;
    nosync_ops.fallocate = sparse_fallocate;
    sop__os_set_ops(&nosync_ops);
}

/* ---- the model ------------------------------------------------------------ */

enum { S_BASE, S_SEP, S_ACT, S_TMP, NS };
static const char *const snames[NS] = {"base", "sep", "act", "tmp"};
static const sop_value_placement splace[NS] = {SOP_VALUES_IN_NODE, SOP_VALUES_SEPARATE,
                                               SOP_VALUES_ACTIVE, SOP_VALUES_IN_NODE};
#define NK 24

typedef struct model {
    bool exists[NS];
    uint8_t gen[NS][NK]; /* 0: absent; else the generation of the value */
} model;

enum { O_OPEN, O_CREATE, O_DROP, O_PUT, O_DEL, O_END };

typedef struct op {
    uint8_t kind, store, k0, k1, gen;
} op;

enum { T_SETUP, T1, T2, T3, T4, T5, T6, NT };
static const char *const tnames[NT] = {"setup",         "T1", "T2",           "T3 (read)",
                                       "T4 (prepared)", "T5", "T6 (rollback)"};

static const op txops[NT][16] = {
    [T_SETUP] = {{O_CREATE, S_BASE, 0, 0, 0}, {O_PUT, S_BASE, 0, 15, 1}, {O_END, 0, 0, 0, 0}},
    [T1] = {{O_OPEN, S_BASE, 0, 0, 0},
            {O_PUT, S_BASE, 16, 19, 2},
            {O_PUT, S_BASE, 0, 3, 2},
            {O_DEL, S_BASE, 4, 5, 0},
            {O_CREATE, S_SEP, 0, 0, 0},
            {O_PUT, S_SEP, 0, 9, 2},
            {O_CREATE, S_ACT, 0, 0, 0},
            {O_PUT, S_ACT, 0, 7, 2},
            {O_CREATE, S_TMP, 0, 0, 0},
            {O_PUT, S_TMP, 0, 3, 2},
            {O_END, 0, 0, 0, 0}},
    [T2] = {{O_OPEN, S_BASE, 0, 0, 0},
            {O_PUT, S_BASE, 6, 9, 3},
            {O_DEL, S_BASE, 10, 10, 0},
            {O_OPEN, S_SEP, 0, 0, 0},
            {O_PUT, S_SEP, 0, 3, 3},
            {O_DEL, S_SEP, 4, 5, 0},
            {O_OPEN, S_ACT, 0, 0, 0},
            {O_PUT, S_ACT, 0, 2, 3},
            {O_DEL, S_ACT, 3, 3, 0},
            {O_PUT, S_ACT, 8, 10, 3},
            {O_END, 0, 0, 0, 0}},
    [T3] = {{O_OPEN, S_BASE, 0, 0, 0},
            {O_OPEN, S_SEP, 0, 0, 0},
            {O_OPEN, S_ACT, 0, 0, 0},
            {O_END, 0, 0, 0, 0}},
    [T4] = {{O_OPEN, S_BASE, 0, 0, 0},
            {O_PUT, S_BASE, 20, 20, 4},
            {O_OPEN, S_SEP, 0, 0, 0},
            {O_PUT, S_SEP, 10, 10, 4},
            {O_DEL, S_SEP, 6, 6, 0},
            {O_OPEN, S_ACT, 0, 0, 0},
            {O_PUT, S_ACT, 11, 11, 4},
            {O_PUT, S_ACT, 4, 4, 4},
            {O_END, 0, 0, 0, 0}},
    [T5] = {{O_OPEN, S_BASE, 0, 0, 0},
            {O_DEL, S_BASE, 11, 11, 0},
            {O_DROP, S_TMP, 0, 0, 0},
            {O_OPEN, S_ACT, 0, 0, 0},
            {O_PUT, S_ACT, 12, 12, 5},
            {O_END, 0, 0, 0, 0}},
    [T6] = {{O_OPEN, S_ACT, 0, 0, 0},
            {O_PUT, S_ACT, 13, 15, 6},
            {O_OPEN, S_SEP, 0, 0, 0},
            {O_PUT, S_SEP, 11, 11, 6},
            {O_END, 0, 0, 0, 0}},
};

/* Transactions that change the database when they commit. */
static bool writes(int t)
{
    return t == T_SETUP || t == T1 || t == T2 || t == T4 || t == T5;
}

static int value_of(int s, int k, int gen, char *out, size_t cap)
{
    /* values of the blob stores are longer, so they are not trivially small */
    return snprintf(out, cap, "v-%s-%02d-g%d%s", snames[s], k, gen,
                    s == S_SEP || s == S_ACT ? "-................................................"
                                             : "");
}

static int key_of(int k, char *out, size_t cap)
{
    return snprintf(out, cap, "k%02d", k);
}

/* Applies a transaction to the model; one that would fail (a store missing
 * or already there) changes nothing, as the real one fails. */
static void model_apply(model *m, int t)
{
    for (const op *o = txops[t]; o->kind != O_END; o++) {
        if ((o->kind == O_OPEN || o->kind == O_DROP) && !m->exists[o->store])
            return;
        if (o->kind == O_CREATE && m->exists[o->store])
            return;
    }
    for (const op *o = txops[t]; o->kind != O_END; o++) {
        switch (o->kind) {
        case O_CREATE:
            m->exists[o->store] = true;
            memset(m->gen[o->store], 0, NK);
            break;
        case O_DROP:
            m->exists[o->store] = false;
            memset(m->gen[o->store], 0, NK);
            break;
        case O_PUT:
        case O_DEL:
            for (int k = o->k0; k <= o->k1; k++)
                m->gen[o->store][k] = o->kind == O_PUT ? o->gen : 0;
            break;
        default:
            break;
        }
    }
}

static bool model_eq(const model *a, const model *b)
{
    for (int s = 0; s < NS; s++) {
        if (a->exists[s] != b->exists[s])
            return false;
        if (a->exists[s] && memcmp(a->gen[s], b->gen[s], NK) != 0)
            return false;
    }
    return true;
}

static void model_print(const char *label, const model *m)
{
    printf("#     %s:", label);
    for (int s = 0; s < NS; s++) {
        if (!m->exists[s]) {
            printf(" %s=none", snames[s]);
            continue;
        }
        printf(" %s=", snames[s]);
        for (int k = 0; k < NK; k++)
            printf("%c", m->gen[s][k] ? '0' + m->gen[s][k] : '.');
    }
    printf("\n");
}

/* ---- failures ------------------------------------------------------------ */

/*
 * A failed expectation ends its case, not the test: every case runs, each
 * failure is counted and the first few of each kind (source line) printed,
 * and the test fails at the end if any case did. NOTE() records without
 * ending the case.
 */
static jmp_buf case_jmp;
static bool in_case;
/* The database handle a case has open, closed (with its transactions) when
 * the case fails, so a failure leaks nothing LeakSanitizer would report. */
static sop_db *held_db;

/* Counters, shared with the children of M_CRASH cases. */
typedef struct shared {
    unsigned nfailed;
    char first_failure[700];
    struct {
        int line;
        unsigned n;
    } lines_seen[64];
    unsigned long nerrors, nerr_by_rc[16];
} shared;
static shared *sh;

static void shared_init(void)
{
    if (sh != NULL)
        return;
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);
    memset(sh, 0, sizeof(*sh));
}

static void record(int line, bool fatal, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void record(int line, bool fatal, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (sh->nfailed++ == 0)
        snprintf(sh->first_failure, sizeof(sh->first_failure), "line %d: %s", line, msg);
    unsigned i = 0;
    while (i < 64 && sh->lines_seen[i].line != 0 && sh->lines_seen[i].line != line)
        i++;
    if (i < 64) {
        sh->lines_seen[i].line = line;
        if (sh->lines_seen[i].n++ < 3 || getenv("SOP_IOERR_VERBOSE"))
            printf("#   FAIL (line %d): %s\n", line, msg);
        fflush(stdout);
    }
    if (fatal && in_case)
        longjmp(case_jmp, 1);
    if (fatal)
        t_fail(__FILE__, line, "%s", msg);
}

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            record(__LINE__, true, __VA_ARGS__);                                                   \
    } while (0)
#define NOTE(cond, ...)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            record(__LINE__, false, __VA_ARGS__);                                                  \
    } while (0)

static const char *cur_ctx = "";

#define EXPECT_OK(expr)                                                                            \
    do {                                                                                           \
        sop_rc rc_ = (expr);                                                                       \
        EXPECT(rc_ == SOP_OK, "%s: %s: %s: %s", cur_ctx, #expr, sop_rc_name(rc_), err.msg);        \
    } while (0)

/* ---- clean errors --------------------------------------------------------- */

/* A failed call's error: code set, a message, for an I/O error the file. */
static void expect_clean(const char *what, sop_rc rc, const sop_err *e, const char *ctx)
{
    sh->nerrors++;
    if (getenv("SOP_IOERR_TRACE"))
        printf("#   error %s: %s: %s %s\n", ctx, what, sop_rc_name(rc), e->msg);
    if ((unsigned)rc < 16)
        sh->nerr_by_rc[rc]++;
    NOTE(e->code == rc, "%s: %s returned %s but err.code is %s", ctx, what, sop_rc_name(rc),
         sop_rc_name(e->code));
    NOTE(e->msg[0] != '\0', "%s: %s returned %s with an empty message", ctx, what, sop_rc_name(rc));
    NOTE(rc == SOP_IO || rc == SOP_CONFLICT || rc == SOP_NOTFOUND || rc == SOP_CORRUPT,
         "%s: %s returned %s (%s)", ctx, what, sop_rc_name(rc), e->msg);
    /* every path the engine names is under the database folder */
    if (rc == SOP_IO)
        NOTE(strstr(e->msg, root) != NULL, "%s: %s: an I/O error naming no file: %s", ctx, what,
             e->msg);
}

/* ---- the workload --------------------------------------------------------- */

/* How a case runs the workload. */
typedef enum {
    M_ONCE,    /* the nth call fails; the workload goes on after a failure */
    M_PERSIST, /* the nth and every later call fail; the workload stops, closes */
    M_CRASH,   /* the nth call fails; the process dies right after the failure */
    M_COUNT
} runmode;
static const char *const mnames[M_COUNT] = {"once", "persistent", "once+crash"};

/* What became of a transaction of the workload. */
typedef enum {
    ST_NOTRUN,
    ST_OK,     /* every call succeeded */
    ST_FAILED, /* failed before its commit point: must not be applied */
    ST_LATE,   /* failed after its commit point: must be applied after recovery */
    ST_UNKNOWN /* "outcome unknown until the database is recovered": either */
} tstate;

typedef struct run {
    tstate st[NT];
    bool prepared;    /* T4's prepare succeeded */
    uint8_t txid[16]; /* ... with this ID */
    bool decided;     /* T4's commit_prepared succeeded */
    bool opened;      /* the workload opened the database */
    const char *ctx;  /* for messages */
    model *committed; /* the model after the acknowledged commits, when exact */
    bool exact;       /* no transaction failed so far: reads must match */
    runmode mode;
    bool crashed;           /* M_CRASH: the child died after a failure */
    unsigned long injected; /* faults injected during the workload */
} run;

/* M_CRASH: the workload runs in a child, which dies (as by kill -9: no
 * clean-up, no close) right after the first failed call. */
static void crash_now(run *r)
{
    r->crashed = true;
    r->injected = sop__fault_injected();
    fflush(stdout);
    _exit(0);
}

static const char *run_dir(void);

/* Store "act" is erasure coded 2+1 on three folders inside the database
 * folder, with repair: every blob site also runs through shard writes,
 * reads, repairs and removals, and the ec.* sites are reached. */
static char ec_path[3][4300];
static const char *ec_paths[3] = {ec_path[0], ec_path[1], ec_path[2]};
static sop_ec_config ec_entry = {"act", 2, 1, ec_paths, true};

static sop_db_options db_opts(void)
{
    sop_db_options o;
    sop_db_options_init(&o);
    o.lock_timeout_ms = 2000;
    for (int i = 0; i < 3; i++)
        snprintf(ec_path[i], sizeof(ec_path[i]), "%s/ec%d", run_dir(), i);
    o.ec = &ec_entry;
    o.ec_count = 1;
    return o;
}

static sop_rc apply_ops(sop_txn *t, int tx, sop_btree **trees, sop_err *e, const char **what)
{
    for (const op *o = txops[tx]; o->kind != O_END; o++) {
        sop_rc rc = SOP_OK;
        switch (o->kind) {
        case O_OPEN:
            *what = "sop_store_open";
            rc = sop_store_open(t, snames[o->store], &trees[o->store], e);
            break;
        case O_CREATE: {
            sop_store_options so;
            sop_store_options_init(&so);
            so.slot_length = 4;
            so.value_placement = splace[o->store];
            *what = "sop_store_create";
            rc = sop_store_create(t, snames[o->store], &so, &trees[o->store], e);
            break;
        }
        case O_DROP:
            *what = "sop_store_drop";
            rc = sop_store_drop(t, snames[o->store], e);
            break;
        case O_PUT:
        case O_DEL:
            for (int k = o->k0; k <= o->k1 && rc == SOP_OK; k++) {
                char key[16], val[128];
                int kl = key_of(k, key, sizeof(key));
                if (o->kind == O_PUT) {
                    int vl = value_of(o->store, k, o->gen, val, sizeof(val));
                    *what = "sop_btree_upsert";
                    rc = sop_btree_upsert(trees[o->store], key, (size_t)kl, val, (size_t)vl, NULL,
                                          e);
                } else {
                    *what = "sop_btree_remove";
                    rc = sop_btree_remove(trees[o->store], key, (size_t)kl, e);
                    if (rc == SOP_NOTFOUND)
                        rc = SOP_OK;
                }
            }
            break;
        default:
            break;
        }
        if (rc != SOP_OK)
            return rc;
    }
    return SOP_OK;
}

/* Reads a whole store into m (the store's row). SOP_OK, or the first error.
 * An item that no state of the model can hold (a key twice, a value no
 * transaction wrote) fails the test - or, with torn != NULL (reads in the
 * workload after a failure, which may see a commit half applied), sets
 * *torn. */
static sop_rc read_store(sop_btree *bt, int s, model *m, const char *ctx, sop_err *e,
                         const char **what, bool *torn)
{
    memset(m->gen[s], 0, NK);
    sop_cursor *c;
    *what = "sop_cursor_open";
    sop_rc rc = sop_cursor_open(bt, &c, e);
    if (rc != SOP_OK)
        return rc;
    *what = "sop_cursor_first";
    for (rc = sop_cursor_first(c, e); rc == SOP_OK; rc = sop_cursor_next(c, e)) {
        sop_item it;
        *what = "sop_cursor_item";
        rc = sop_cursor_item(c, &it, e);
        if (rc != SOP_OK)
            break;
        *what = "sop_cursor_next";
        int k = -1, gen = -1;
        char key[16] = "";
        if (it.key_len == 3) {
            memcpy(key, it.key, 3);
            key[3] = '\0';
            if (key[0] != 'k' || sscanf(key + 1, "%2d", &k) != 1 || k < 0 || k >= NK)
                k = -1;
        }
        for (int g = 1; g < 10 && gen < 0 && k >= 0; g++) {
            char val[128];
            int vl = value_of(s, k, g, val, sizeof(val));
            if ((size_t)vl == it.value_len && memcmp(val, it.value, it.value_len) == 0)
                gen = g;
        }
        bool bad = k < 0 || gen < 0 || m->gen[s][k] != 0;
        if (bad && torn) {
            *torn = true;
            continue;
        }
        EXPECT(k >= 0, "%s: store %s: stray key %.*s", ctx, snames[s], (int)it.key_len,
               (const char *)it.key);
        EXPECT(gen > 0, "%s: store %s key %s: a value no transaction wrote: %.*s", ctx, snames[s],
               key, (int)it.value_len, (const char *)it.value);
        EXPECT(m->gen[s][k] == 0, "%s: store %s: key %s twice", ctx, snames[s], key);
        m->gen[s][k] = (uint8_t)gen;
    }
    sop_cursor_close(c);
    if (rc == SOP_NOTFOUND)
        rc = SOP_OK;
    /* a few point reads too */
    for (int k = 0; k < NK && rc == SOP_OK; k += 5) {
        char key[16];
        int kl = key_of(k, key, sizeof(key));
        sop_item it;
        *what = "sop_btree_get";
        rc = sop_btree_get(bt, key, (size_t)kl, &it, e);
        bool agrees = true;
        if (rc == SOP_NOTFOUND) {
            agrees = m->gen[s][k] == 0;
            rc = SOP_OK;
        } else if (rc == SOP_OK) {
            char val[128];
            int vl = value_of(s, k, m->gen[s][k], val, sizeof(val));
            agrees = m->gen[s][k] != 0 && it.value_len == (size_t)vl &&
                     memcmp(it.value, val, (size_t)vl) == 0;
        }
        if (!agrees && torn)
            *torn = true;
        else
            EXPECT(agrees, "%s: store %s: get %s disagrees with the scan", ctx, snames[s], key);
    }
    return rc;
}

/* One transaction of the workload: what became of it. */
static tstate run_txn(sop_db *db, int tx, run *r)
{
    sop_txn *t = NULL;
    sop_btree *trees[NS] = {0};
    const char *what = "sop_txn_begin";
    sop_err e;
    sop_err_clear(&e);
    tstate late = ST_LATE; /* what a failure means once the commit point passed */
    bool committed = false;
    sop_rc rc = sop_txn_begin(db, tx == T3 ? SOP_TXN_READ : SOP_TXN_WRITE, 0, &t, &e);
    if (rc == SOP_OK)
        rc = apply_ops(t, tx, trees, &e, &what);
    bool torn = false;
    if (rc == SOP_OK && tx == T3) {
        model seen;
        memset(&seen, 0, sizeof(seen));
        for (int s = 0; s < NS && rc == SOP_OK; s++)
            if (trees[s])
                rc = read_store(trees[s], s, &seen, r->ctx, &e, &what, r->exact ? NULL : &torn);
        if (rc == SOP_OK && r->exact)
            for (int s = 0; s < NS; s++)
                EXPECT(!trees[s] || memcmp(seen.gen[s], r->committed->gen[s], NK) == 0,
                       "%s: T3 read store %s wrong", r->ctx, snames[s]);
    }
    if (rc == SOP_OK && tx == T3) {
        what = "sop_txn_commit";
        rc = sop_txn_commit(t, &e);
        /* what it read was no state of the database: validation must fail */
        NOTE(!(torn && rc == SOP_OK),
             "%s: a read-only transaction saw a half-applied commit (a key twice or a stale "
             "value) and its commit validated it",
             r->ctx);
    } else if (rc == SOP_OK && tx == T6) {
        what = "sop_txn_rollback";
        rc = sop_txn_rollback(t, &e);
    } else if (rc == SOP_OK && tx == T4) {
        what = "sop_txn_prepare";
        rc = sop_txn_prepare(t, "test_ioerrors", r->txid, &e);
        if (rc == SOP_OK) {
            /* durable from here: a failed decision leaves it prepared (the
             * verification commits it) or commits it */
            committed = true;
            r->prepared = true;
            what = "sop_db_commit_prepared";
            rc = sop_db_commit_prepared(db, r->txid, &e);
            if (rc == SOP_OK)
                r->decided = true;
        }
    } else if (rc == SOP_OK) {
        what = "sop_txn_phase1";
        rc = sop_txn_phase1(t, &e);
        if (rc != SOP_OK && strstr(e.msg, "outcome unknown") != NULL)
            late = ST_UNKNOWN;
        if (rc == SOP_OK) {
            committed = true;
            what = "sop_txn_phase2";
            rc = sop_txn_phase2(t, &e);
        }
    }
    tstate st = rc == SOP_OK         ? ST_OK
                : late == ST_UNKNOWN ? ST_UNKNOWN
                : committed          ? ST_LATE
                                     : ST_FAILED;
    if (rc != SOP_OK) {
        char ctx[512];
        snprintf(ctx, sizeof(ctx), "%s, %s", r->ctx, tnames[tx]);
        expect_clean(what, rc, &e, ctx);
        if (r->mode == M_CRASH) {
            r->st[tx] = st;
            crash_now(r);
        }
    }
    sop_txn_free(t); /* rolls back what is still active */
    return st;
}

static void list_cb(void *ctx, const sop_prepared_info *info)
{
    int *n = ctx;
    (void)info;
    (*n)++;
}

static void run_workload(const char *dir, run *r)
{
    bool stop_at_failure = r->mode != M_ONCE;
    model committed;
    memset(&committed, 0, sizeof(committed));
    model_apply(&committed, T_SETUP);
    r->committed = &committed;
    r->exact = true;
    sop_db_options o = db_opts();
    sop_db *db = NULL;
    sop_err e;
    sop_err_clear(&e);
    sop_rc rc = sop_db_open(dir, &o, &db, &e);
    held_db = db;
    if (rc != SOP_OK) {
        expect_clean("sop_db_open", rc, &e, r->ctx);
        EXPECT(db == NULL, "%s: sop_db_open failed but set its handle", r->ctx);
        if (r->mode == M_CRASH)
            crash_now(r);
        return;
    }
    r->opened = true;
    for (int tx = T1; tx < NT; tx++) {
        r->st[tx] = run_txn(db, tx, r);
        if (r->st[tx] == ST_OK && writes(tx))
            model_apply(&committed, tx);
        if (r->st[tx] != ST_OK) {
            r->exact = false;
            if (stop_at_failure)
                break;
        }
    }
    if (!stop_at_failure || r->exact) {
        int n = 0;
        rc = sop_db_list_prepared(db, list_cb, &n, &e);
        if (rc != SOP_OK) {
            expect_clean("sop_db_list_prepared", rc, &e, r->ctx);
            if (r->mode == M_CRASH)
                crash_now(r);
        }
        sop_check_report rep;
        rc = sop_db_check(db, NULL, NULL, &rep, &e);
        /* a problem found while a fault is armed is allowed only as long as
         * the database checks clean once the fault is gone (below) */
        if (rc != SOP_OK) {
            expect_clean("sop_db_check", rc, &e, r->ctx);
            if (r->mode == M_CRASH)
                crash_now(r);
        }
    }
    held_db = NULL;
    sop_db_close(db);
    r->committed = NULL;
}

/* ---- verification -------------------------------------------------------- */

typedef struct prep_seen {
    int n;
    uint8_t txid[8][16];
} prep_seen;

static void prep_cb(void *ctx, const sop_prepared_info *info)
{
    prep_seen *p = ctx;
    if (p->n < 8)
        memcpy(p->txid[p->n], info->txid, 16);
    p->n++;
}

typedef struct problems {
    int n;
    char first[4][300];
} problems;

static void problem_cb(void *ctx, const char *msg)
{
    problems *p = ctx;
    if (p->n < 4)
        snprintf(p->first[p->n], sizeof(p->first[0]), "%s", msg);
    p->n++;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

static void verify(const char *dir, run *r)
{
    const char *ctx = r->ctx;
    if (getenv("SOP_IOERR_TRACE"))
        for (int tx = T1; tx < NT; tx++)
            printf("#     %s: %d\n", tnames[tx], (int)r->st[tx]);
    sop_db_options o = db_opts();
    sop_db *db = NULL;
    sop_rc rc = sop_db_open(dir, &o, &db, &err);
    held_db = db;
    EXPECT(rc == SOP_OK, "%s: reopening (recovery) failed: %s: %s", ctx, sop_rc_name(rc), err.msg);

    /* in doubt: only the workload's own prepared transaction, and only if
     * its decision failed; it is committed here */
    prep_seen ps;
    memset(&ps, 0, sizeof(ps));
    EXPECT_OK(sop_db_list_prepared(db, prep_cb, &ps, &err));
    EXPECT(ps.n <= 1, "%s: %d prepared transactions left", ctx, ps.n);
    if (ps.n == 1) {
        EXPECT(r->prepared && !r->decided && memcmp(ps.txid[0], r->txid, 16) == 0,
               "%s: a prepared transaction was left although %s", ctx,
               !r->prepared ? "sop_txn_prepare failed" : "it was committed");
        rc = sop_db_commit_prepared(db, r->txid, &err);
        EXPECT(rc == SOP_OK, "%s: committing the left prepared transaction: %s", ctx, err.msg);
    }

    /* a fault may leave the erasure-coded store degraded (a shard not
     * written, an orphan shard on a drive whose unlink failed): scrub heals
     * that, and only that - no blob lost, nothing in the other stores */
    problems pr;
    memset(&pr, 0, sizeof(pr));
    sop_scrub_report sr;
    rc = sop_db_scrub(db, true, NULL, problem_cb, &pr, &sr, &err);
    EXPECT(rc == SOP_OK && sr.lost_blobs == 0, "%s: scrub: %s (%llu lost) %s", ctx, err.msg,
           (unsigned long long)sr.lost_blobs, pr.first[0]);
    for (int i = 0; i < pr.n && i < 4; i++)
        EXPECT(strncmp(pr.first[i], "store act: ", 11) == 0, "%s: scrub found %s", ctx,
               pr.first[i]);
    memset(&pr, 0, sizeof(pr));
    sop_check_report rep;
    rc = sop_db_check(db, problem_cb, &pr, &rep, &err);
    EXPECT(rc == SOP_OK && pr.n == 0, "%s: check: %s (%d problems) %s | %s", ctx, err.msg, pr.n,
           pr.first[0], pr.first[1]);

    /* what is there */
    model real;
    memset(&real, 0, sizeof(real));
    sop_txn *t;
    EXPECT_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err));
    for (int s = 0; s < NS; s++) {
        sop_btree *bt;
        rc = sop_store_open(t, snames[s], &bt, &err);
        if (rc == SOP_NOTFOUND)
            continue;
        EXPECT(rc == SOP_OK, "%s: open %s: %s", ctx, snames[s], err.msg);
        real.exists[s] = true;
        const char *what;
        rc = read_store(bt, s, &real, ctx, &err, &what, NULL);
        EXPECT(rc == SOP_OK, "%s: reading %s: %s: %s", ctx, snames[s], what, err.msg);
        uint64_t n = 0;
        for (int k = 0; k < NK; k++)
            n += real.gen[s][k] != 0;
        EXPECT(sop_btree_count(bt) == n, "%s: store %s counts %llu items, holds %llu", ctx,
               snames[s], (unsigned long long)sop_btree_count(bt), (unsigned long long)n);
    }
    EXPECT_OK(sop_txn_commit(t, &err));
    sop_txn_free(t);

    /* all or nothing: acknowledged commits applied, failed ones each either */
    int amb[NT], namb = 0;
    for (int tx = T1; tx < NT; tx++)
        if (writes(tx) && r->st[tx] == ST_UNKNOWN)
            amb[namb++] = tx;
    bool matched = false;
    for (unsigned mask = 0; mask < (1u << namb) && !matched; mask++) {
        model m;
        memset(&m, 0, sizeof(m));
        model_apply(&m, T_SETUP);
        for (int tx = T1; tx < NT; tx++) {
            bool apply = writes(tx) && (r->st[tx] == ST_OK || r->st[tx] == ST_LATE);
            for (int i = 0; i < namb; i++)
                if (amb[i] == tx && (mask >> i & 1))
                    apply = true;
            if (apply)
                model_apply(&m, tx);
        }
        matched = model_eq(&m, &real);
    }
    if (!matched || getenv("SOP_IOERR_TRACE")) {
        printf("#   %s:\n", ctx);
        model m;
        memset(&m, 0, sizeof(m));
        model_apply(&m, T_SETUP);
        for (int tx = T1; tx < NT; tx++)
            if (writes(tx) && (r->st[tx] == ST_OK || r->st[tx] == ST_LATE))
                model_apply(&m, tx);
        model_print("found", &real);
        model_print("acknowledged", &m);
        for (int tx = T1; tx < NT; tx++)
            printf("#     %s: %s\n", tnames[tx],
                   r->st[tx] == ST_OK        ? "ok"
                   : r->st[tx] == ST_FAILED  ? "failed before its commit point"
                   : r->st[tx] == ST_LATE    ? "failed after its commit point"
                   : r->st[tx] == ST_UNKNOWN ? "outcome unknown"
                                             : "not run");
    }
    EXPECT(matched,
           "%s: the stores differ from the acknowledged commits plus those past their commit "
           "point",
           ctx);

    /* writable again */
    EXPECT_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err));
    for (int s = 0; s < NS; s++) {
        if (!real.exists[s])
            continue;
        sop_btree *bt;
        EXPECT_OK(sop_store_open(t, snames[s], &bt, &err));
        char key[16], val[128];
        int kl = key_of(NK - 1, key, sizeof(key));
        int vl = value_of(s, NK - 1, 9, val, sizeof(val));
        EXPECT_OK(sop_btree_upsert(bt, key, (size_t)kl, val, (size_t)vl, NULL, &err));
    }
    rc = sop_txn_commit(t, &err);
    EXPECT(rc == SOP_OK, "%s: a new commit after recovery: %s: %s", ctx, sop_rc_name(rc), err.msg);
    sop_txn_free(t);
    rc = sop_db_check(db, problem_cb, &pr, &rep, &err);
    EXPECT(rc == SOP_OK && pr.n == 0, "%s: check after the new commit: %s %s", ctx, err.msg,
           pr.first[0]);
    held_db = NULL;
    sop_db_close(db);
}

/* ---- setup and the loops --------------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Where the runs go: $TMPDIR if set (t_tmpdir), else a folder in /dev/shm
 * when there is one - thousands of small databases are created and removed,
 * which costs a disk file system ten times more (removed when the test
 * passes; left for inspection when it fails). */
static const char *run_dir(void)
{
    static char dir[4200];
    if (root[0] == '\0') {
        const char *env = getenv("TMPDIR");
        snprintf(root, sizeof(root), "/dev/shm/soptest-ioerrors.XXXXXX");
        if ((env && *env) || access("/dev/shm", W_OK) != 0 || mkdtemp(root) == NULL)
            snprintf(root, sizeof(root), "%s", t_tmpdir());
    }
    snprintf(dir, sizeof(dir), "%s/run", root);
    return dir;
}

static void run_root_done(void)
{
    if (strncmp(root, "/dev/shm/", 9) == 0)
        rm_rf(root);
    root[0] = '\0';
}

static int stray_files;
static char stray_first[512];

static int stray_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    size_t n = strlen(path);
    if (flag == FTW_F && n > 4 && strcmp(path + n - 4, ".tmp") == 0) {
        if (stray_files++ == 0)
            snprintf(stray_first, sizeof(stray_first), "%s", path);
    }
    return 0;
}

/* A fresh database with the setup transaction committed. */
static void make_db(const char *dir)
{
    sop_db_options o = db_opts();
    /* the drive folders are inside the database folder: their parent must
     * exist before sop_db_init marks them */
    EXPECT(mkdir(dir, 0700) == 0 || errno == EEXIST, "mkdir %s: %s", dir, strerror(errno));
    EXPECT_OK(sop_db_init(dir, &o, &err));
    sop_db *db;
    EXPECT_OK(sop_db_open(dir, &o, &db, &err));
    sop_txn *t;
    EXPECT_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err));
    sop_btree *trees[NS] = {0};
    const char *what;
    EXPECT_OK(apply_ops(t, T_SETUP, trees, &err, &what));
    EXPECT_OK(sop_txn_commit(t, &err));
    sop_txn_free(t);
    sop_db_close(db);
}

static unsigned nruns;

/* One (site, nth, kind, mode) case. Returns whether a fault was injected. */
static bool one_case(sop__site site, unsigned nth, sop__fault_kind kind, runmode mode)
{
    static char ctx[256];
    const char *dir = run_dir();
    snprintf(ctx, sizeof(ctx), "%s #%u %s %s", sop__fault_site_name(site), nth,
             sop__fault_kind_name(kind), mnames[mode]);
    /* SOP_IOERR_ONLY="registry.lock #29 EIO once" replays one case */
    const char *only = getenv("SOP_IOERR_ONLY");
    if (only && *only && strncmp(ctx, only, strlen(only)) != 0)
        return nth < 400;
    rm_rf(dir);
    sop__fault_reset();
    make_db(dir);
    static int fds;
    fds = count_fds();
    /* shared with the child of M_CRASH */
    static run *r;
    if (r == NULL) {
        r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CHECK(r != MAP_FAILED);
    }
    memset(r, 0, sizeof(*r));
    r->ctx = ctx;
    r->mode = mode;
    cur_ctx = ctx;
    in_case = true;
    if (setjmp(case_jmp) != 0) {
        /* failed (recorded) */
        in_case = false;
        sop__fault_reset();
        sop_db_close(held_db);
        held_db = NULL;
        sop__fault_reset();
        nruns++;
        return true;
    }
    sop__fault_reset();
    if (mode == M_CRASH) {
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            in_case = false;
            t_in_child();
            sop__fault_io(site, nth, kind, false);
            run_workload(dir, r);
            r->injected = sop__fault_injected();
            fflush(stdout);
            _exit(0);
        }
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: the child %s %d", ctx,
               WIFSIGNALED(status) ? "died of signal" : "exited with status",
               WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    } else {
        sop__fault_io(site, nth, kind, mode == M_PERSIST);
        run_workload(dir, r);
        r->injected = sop__fault_injected();
    }
    sop__fault_reset();
    EXPECT(count_fds() == fds, "%s: %d descriptors left open by the workload", ctx,
           count_fds() - fds);
    if (r->injected == 0) {
        in_case = false;
        return false;
    }
    nruns++;
    verify(dir, r);
    EXPECT(count_fds() == fds, "%s: %d descriptors left open after recovery", ctx,
           count_fds() - fds);
    nftw(dir, stray_one, 16, FTW_PHYS);
    in_case = false;
    return true;
}

/* The replication sites are only called for a replicated database, which
 * this workload's is not: test_replication injects errors there (its
 * failover matrix and io_errors_at_the_replication_sites_are_clean). */
static bool replication_site(sop__site s)
{
    return s == SOP__SITE_REPL_STATE || s == SOP__SITE_REPL_LOCK || s == SOP__SITE_REPL_COPY;
}

/* Which kinds make sense where. */
static bool site_writes(sop__site s)
{
    switch (s) {
    case SOP__SITE_BLOB_WRITE:
    case SOP__SITE_DB_LOCK:
    case SOP__SITE_DB_HEADER:
    case SOP__SITE_LOG_OPEN:
    case SOP__SITE_LOG_WRITE:
    case SOP__SITE_LOG_RESET:
    case SOP__SITE_PREP_WRITE:
    case SOP__SITE_REPO_WRITE:
    case SOP__SITE_REG_SEGMENT_CREATE:
    case SOP__SITE_REG_BLOCK_WRITE:
        return true;
    default:
        return false;
    }
}

static bool site_creates(sop__site s)
{
    switch (s) {
    case SOP__SITE_BLOB_OPEN:
    case SOP__SITE_BLOB_MKDIR:
    case SOP__SITE_BLOB_REMOVE:
    case SOP__SITE_DB_LOCK:
    case SOP__SITE_LOG_OPEN:
    case SOP__SITE_PREP_WRITE:
    case SOP__SITE_PREP_REMOVE:
    case SOP__SITE_REPO_WRITE:
    case SOP__SITE_REPO_DROP:
    case SOP__SITE_REG_SEGMENT_CREATE:
    case SOP__SITE_REG_SEGMENT_OPEN:
        return true;
    default:
        return false;
    }
}

static unsigned long clean_calls[SOP__SITE_COUNT];

TEST(workload_reaches_every_io_site)
{
    shared_init();
    install_nosync();
    const char *dir = run_dir();
    rm_rf(dir);
    sop__fault_reset();
    make_db(dir);
    run r;
    memset(&r, 0, sizeof(r));
    r.ctx = "no fault";
    r.mode = M_PERSIST;
    sop__fault_reset();
    run_workload(dir, &r);
    for (int s = 0; s < SOP__SITE_COUNT; s++)
        clean_calls[s] = sop__fault_site_calls((sop__site)s);
    for (int tx = T1; tx < NT; tx++)
        CHECK_MSG(r.st[tx] == ST_OK, "%s failed without a fault", tnames[tx]);
    CHECK(r.decided);
    verify(dir, &r);
    printf("#   calls per site in one workload:");
    for (int s = SOP__SITE_TEST_B + 1; s < SOP__SITE_COUNT; s++)
        printf(" %s=%lu", sop__fault_site_name((sop__site)s), clean_calls[s]);
    printf("\n");
    for (int s = SOP__SITE_TEST_B + 1; s < SOP__SITE_COUNT; s++)
        CHECK_MSG(clean_calls[s] > 0 || replication_site((sop__site)s),
                  "the workload never reaches %s", sop__fault_site_name((sop__site)s));
    run_root_done();
}

/* Every call up to the 40th, then sparser (a dozen more for a site called
 * 250 times per workload). */
static unsigned next_nth(unsigned nth)
{
    if (nth < 40)
        return nth + 1;
    return nth + 1 + nth / 5;
}

TEST(io_error_at_every_site_once_and_persistent)
{
    shared_init();
    install_nosync();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned per_kind[8] = {0};
    for (int s = SOP__SITE_TEST_B + 1; s < SOP__SITE_COUNT; s++) {
        sop__site site = (sop__site)s;
        if (replication_site(site))
            continue;
        sop__fault_kind kinds[4];
        int nk = 0;
        kinds[nk++] = SOP__FAULT_EIO;
        if (site_writes(site)) {
            kinds[nk++] = SOP__FAULT_ENOSPC;
            kinds[nk++] = SOP__FAULT_SHORT_WRITE;
        }
        if (site_creates(site))
            kinds[nk++] = SOP__FAULT_EROFS;
        unsigned before = nruns;
        for (int mode = 0; mode < M_COUNT; mode++) {
            for (int k = 0; k < nk; k++) {
                /* ENOSPC and EROFS take the paths EIO takes (only the errno
                 * differs): fewer points; a short write tears what it writes:
                 * all of them */
                unsigned limit =
                    kinds[k] == SOP__FAULT_ENOSPC || kinds[k] == SOP__FAULT_EROFS ? 12 : ~0u;
                for (unsigned nth = 1; nth <= limit; nth = next_nth(nth)) {
                    if (!one_case(site, nth, kinds[k], (runmode)mode))
                        break;
                    per_kind[kinds[k]]++;
                }
            }
        }
        const char *only = getenv("SOP_IOERR_ONLY");
        CHECK_MSG(nruns > before || (only && *only), "no fault was ever injected at %s",
                  sop__fault_site_name(site));
#ifdef __SANITIZE_ADDRESS__
        NOTE(__lsan_do_recoverable_leak_check() == 0, "memory leaked with faults at %s",
             sop__fault_site_name(site));
#endif
    }
    run_root_done();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("#   %u (site, nth, mode, kind) combinations injected a fault and were verified "
           "(EIO %u, ENOSPC %u, SHORT_WRITE %u, EROFS %u) in %.1f s\n",
           nruns, per_kind[SOP__FAULT_EIO], per_kind[SOP__FAULT_ENOSPC],
           per_kind[SOP__FAULT_SHORT_WRITE], per_kind[SOP__FAULT_EROFS],
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    printf("#   %lu API errors: IO %lu, CONFLICT %lu, NOTFOUND %lu, CORRUPT %lu\n", sh->nerrors,
           sh->nerr_by_rc[SOP_IO], sh->nerr_by_rc[SOP_CONFLICT], sh->nerr_by_rc[SOP_NOTFOUND],
           sh->nerr_by_rc[SOP_CORRUPT]);
    if (stray_files)
        printf("#   note: %d temporary files left behind, first %s\n", stray_files, stray_first);
    CHECK_MSG(sh->nfailed == 0, "%u failures; the first: %s", sh->nfailed, sh->first_failure);
}

/* ---- focused cases ----------------------------------------------------------- */

/* Upserts key k (value of generation gen) in store base and commits.
 * Returns the commit's (or the first failing call's) result. */
static sop_rc put_base(sop_db *db, int k, int gen, sop_err *e)
{
    sop_txn *t;
    sop_rc rc = sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, e);
    if (rc != SOP_OK)
        return rc;
    sop_btree *bt;
    rc = sop_store_open(t, "base", &bt, e);
    char key[16], val[128];
    int kl = key_of(k, key, sizeof(key));
    int vl = value_of(S_BASE, k, gen, val, sizeof(val));
    if (rc == SOP_OK)
        rc = sop_btree_upsert(bt, key, (size_t)kl, val, (size_t)vl, NULL, e);
    if (rc == SOP_OK)
        rc = sop_txn_commit(t, e);
    sop_txn_free(t);
    return rc;
}

/*
 * A phase 2 that fails (the transaction is committed; the pending marker
 * stays for the next holder of the commit lock) must not block the store:
 * a transaction that reads and changes it must commit after a few retries
 * - a SOP_CONFLICT that repeats forever is a livelock. For each registry
 * block write of the failing phase 2.
 */
TEST(a_failed_phase_2_does_not_block_the_store)
{
    shared_init();
    install_nosync();
    unsigned cases = 0, stuck = 0;
    char first[512] = "";
    for (unsigned nth = 1; nth <= 30; nth++) {
        const char *dir = run_dir();
        rm_rf(dir);
        sop__fault_reset();
        make_db(dir);
        sop_db_options o = db_opts();
        sop_db *db;
        CHECK_OK(sop_db_open(dir, &o, &db, &err), &err);
        /* a transaction that changes every node of base and splits some */
        sop_txn *t;
        CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
        sop_btree *bt;
        CHECK_OK(sop_store_open(t, "base", &bt, &err), &err);
        for (int k = 0; k < NK - 1; k++) {
            char key[16], val[128];
            int kl = key_of(k, key, sizeof(key));
            int vl = value_of(S_BASE, k, 7, val, sizeof(val));
            CHECK_OK(sop_btree_upsert(bt, key, (size_t)kl, val, (size_t)vl, NULL, &err), &err);
        }
        CHECK_OK(sop_txn_phase1(t, &err), &err);
        sop__fault_io(SOP__SITE_REG_BLOCK_WRITE, nth, SOP__FAULT_EIO, false);
        sop_rc rc = sop_txn_phase2(t, &err);
        bool injected = sop__fault_injected() > 0;
        sop__fault_reset();
        sop_txn_free(t);
        if (!injected) {
            CHECK_OK(rc, &err);
            sop_db_close(db);
            break;
        }
        CHECK_RC(rc, SOP_IO, &err);
        cases++;
        /* another transaction on the store, retried as the API says */
        int tries = 0;
        sop_err e;
        sop_err_clear(&e);
        do
            rc = put_base(db, NK - 1, 8, &e);
        while (rc == SOP_CONFLICT && ++tries < 5);
        if (rc != SOP_OK && stuck++ == 0)
            snprintf(first, sizeof(first),
                     "registry.block_write #%u failed in phase 2: %d retries: %s: %s", nth, tries,
                     sop_rc_name(rc), e.msg);
        sop_db_close(db);
        /* and after recovery everything is there */
        CHECK_OK(sop_db_open(dir, &o, &db, &err), &err);
        CHECK_OK(put_base(db, NK - 1, 9, &err), &err);
        sop_db_close(db);
    }
    run_root_done();
    printf("#   %u failed phase 2s, %u left the store unusable\n", cases, stuck);
    CHECK(cases > 0);
    CHECK_MSG(stuck == 0, "%u of %u: the first: %s", stuck, cases, first);
}

/*
 * A COMMIT record that commit_prepared appended but could not sync must
 * never count later: the caller was told the decision failed and may roll
 * the prepared transaction back; a crash afterwards must not resurrect it
 * (phase 1 retracts such a record for the same reason).
 */
TEST(a_failed_commit_prepared_does_not_count_after_a_rollback_and_a_crash)
{
    shared_init();
    install_nosync();
    const char *dir = run_dir();
    rm_rf(dir);
    sop__fault_reset();
    make_db(dir);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        sop_db_options o = db_opts();
        sop_db *db;
        CHECK_OK(sop_db_open(dir, &o, &db, &err), &err);
        sop_txn *t;
        CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
        sop_btree *bt;
        CHECK_OK(sop_store_open(t, "base", &bt, &err), &err);
        char key[16], val[128];
        int kl = key_of(20, key, sizeof(key));
        int vl = value_of(S_BASE, 20, 7, val, sizeof(val));
        CHECK_OK(sop_btree_upsert(bt, key, (size_t)kl, val, (size_t)vl, NULL, &err), &err);
        uint8_t txid[16];
        CHECK_OK(sop_txn_prepare(t, "test", txid, &err), &err);
        sop_txn_free(t);
        sop__fault_io(SOP__SITE_LOG_SYNC, 1, SOP__FAULT_EIO, false);
        sop_rc rc = sop_db_commit_prepared(db, txid, &err);
        CHECK_MSG(sop__fault_injected() == 1 && rc == SOP_IO, "commit_prepared: %s %s",
                  sop_rc_name(rc), err.msg);
        sop__fault_reset();
        CHECK_OK(sop_db_rollback_prepared(db, txid, &err), &err);
        _exit(0); /* dies: no close */
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    sop_db_options o = db_opts();
    sop_db *db;
    CHECK_OK(sop_db_open(dir, &o, &db, &err), &err);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    sop_btree *bt;
    CHECK_OK(sop_store_open(t, "base", &bt, &err), &err);
    sop_item it;
    sop_rc rc = sop_btree_get(bt, "k20", 3, &it, &err);
    sop_txn_free(t);
    sop_db_close(db);
    run_root_done();
    CHECK_MSG(rc == SOP_NOTFOUND,
              "a prepared transaction rolled back after its commit_prepared failed is committed "
              "after a crash (get k20: %s)",
              sop_rc_name(rc));
}
