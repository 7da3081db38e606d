/*
 * test_corruption.c - corrupted files of every kind (flip, truncate, zero,
 * swap; and a missing blob): an error naming the file, never a crash or a
 * wrong answer (TESTING.md, "Bad input").
 *
 * Fixtures (built once, copied for every case):
 *   main    - stores a (values in nodes), b (separate values, all of one
 *             length, so two can be swapped unnoticed by their size) and c
 *             (actively persisted values), several nodes each, and two
 *             prepared transactions left undecided; closed cleanly.
 *   logs    - the same content written by a child that died without
 *             closing: its txlog/<id>.log holds COMMIT and INTENT records,
 *             all applied.
 *   pending - main's content written the same way, then one more commit
 *             killed at phase1.durable: its record is durable and the lock
 *             file marks it pending, nothing of it is applied.
 *   other   - another database (hash modulus 300): the source of a
 *             swapped header.
 *
 * Each case copies a fixture, corrupts one file and, in a child process
 * (so a crash is a failure, not the end of the test; LeakSanitizer checks
 * the child's heap at its exit), opens the database, lists the prepared
 * transactions, scans every store and gets every key, runs sop_db_check,
 * tries a commit to every store, then closes, reopens and reads everything
 * again. Requirements:
 *   - no crash, no sanitizer report;
 *   - every read that returns SOP_OK returns exactly the fixture's data
 *     (plus the new commit's key if it committed); a key that is there is
 *     never "not found";
 *   - MUST_DETECT files (header, store info, registry segment, node and
 *     value blobs, prepared files): some call fails, or sop_db_check
 *     reports a problem, with a message that names the file (its path or
 *     file name; for a node, its blob or node ID);
 *   - MUST_HEAL files: the lock file (its commit state and checkpoint mark
 *     are checksummed hints: lost, recovery redoes what they described):
 *     everything reads right, the check is clean, the commit succeeds;
 *   - EITHER: the log of a dead process (damage at its tail is a torn
 *     append and heals; damage followed by valid records is refused as
 *     SOP_CORRUPT naming the log, because the records it hides may be
 *     needed - recovery must not take their transactions for abandoned and
 *     delete their values), and the pending fixture's log and lock file
 *     (healed to the state before or after the pending commit): healed, or
 *     detected as above.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault.h"
#include "t.h"

static sop_err err;

/* ---- the content ------------------------------------------------------------ */

#define NSTORE 3
static const char *const snames[NSTORE] = {"a", "b", "c"};
static const sop_value_placement splace[NSTORE] = {SOP_VALUES_IN_NODE, SOP_VALUES_SEPARATE,
                                                   SOP_VALUES_ACTIVE};
static const int scount[NSTORE] = {30, 12, 8};
#define NKEYS_MAX 40

/* Key i of store s; its value (generation gen: 1 initial, 2 updated). The
 * values of b all have one length. */
#define NEW_KEY (NKEYS_MAX - 1) /* the key the exercise commits: sorts first */

static int key_of(int s, int i, char *out, size_t cap)
{
    if (i == NEW_KEY)
        return snprintf(out, cap, "%s-key-!new", snames[s]);
    return snprintf(out, cap, "%s-key-%03d", snames[s], i);
}

static int value_of(int s, int i, int gen, char *out, size_t cap)
{
    if (s == 1)
        return snprintf(out, cap, "val-b-%03d-gen%d-0123456789abcdef", i, gen);
    return snprintf(out, cap, "val-%s-%d-gen%d-%.*s", snames[s], i, gen, i % 17 + 3,
                    "................................");
}

/* The fixture's content: every key, generation 2 for every third key. */
static int gen_of(int i)
{
    return i % 3 == 0 ? 2 : 1;
}

/* The pending commit (pending fixture only): key 5 of store a, generation 3. */
#define PENDING_KEY 5
#define PENDING_GEN 3

static sop_db *open_db(const char *dir)
{
    sop_db_options o;
    sop_db_options_init(&o);
    o.lock_timeout_ms = 2000;
    sop_db *db = NULL;
    CHECK_OK(sop_db_open(dir, &o, &db, &err), &err);
    return db;
}

static void put(sop_btree *bt, int s, int i, int gen)
{
    char k[64], v[128];
    int kl = key_of(s, i, k, sizeof(k));
    int vl = value_of(s, i, gen, v, sizeof(v));
    CHECK_OK(sop_btree_upsert(bt, k, (size_t)kl, v, (size_t)vl, NULL, &err), &err);
}

/* Two commits: create and fill; update every third key. */
static void fill(sop_db *db)
{
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    for (int s = 0; s < NSTORE; s++) {
        sop_store_options o;
        sop_store_options_init(&o);
        o.slot_length = 4;
        o.value_placement = splace[s];
        o.description = "corruption fixture";
        sop_btree *bt;
        CHECK_OK(sop_store_create(t, snames[s], &o, &bt, &err), &err);
        for (int i = 0; i < scount[s]; i++)
            put(bt, s, i, 1);
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    for (int s = 0; s < NSTORE; s++) {
        sop_btree *bt;
        CHECK_OK(sop_store_open(t, snames[s], &bt, &err), &err);
        for (int i = 0; i < scount[s]; i += 3)
            put(bt, s, i, 2);
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_txn_free(t);
}

/* A prepared transaction left undecided: an update of the last key of store
 * s (it claims the last leaf only; the exercise commits to the first). */
static void leave_prepared(sop_db *db, int s, uint8_t txid[16])
{
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_btree *bt;
    CHECK_OK(sop_store_open(t, snames[s], &bt, &err), &err);
    put(bt, s, scount[s] - 1, 5);
    CHECK_OK(sop_txn_prepare(t, "corruption fixture", txid, &err), &err);
    sop_txn_free(t);
}

/* ---- files ------------------------------------------------------------------ */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

static void write_file(const char *path, const uint8_t *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK_MSG(fd >= 0, "create %s: %s", path, strerror(errno));
    /* sparse: skip all-zero 4 KiB blocks (registry segments are mostly holes) */
    for (size_t off = 0; off < len; off += 4096) {
        size_t n = len - off < 4096 ? len - off : 4096;
        bool zero = true;
        for (size_t i = 0; i < n && zero; i++)
            zero = data[off + i] == 0;
        if (!zero)
            CHECK(pwrite(fd, data + off, n, (off_t)off) == (ssize_t)n);
    }
    CHECK(ftruncate(fd, (off_t)len) == 0);
    close(fd);
}

static void copy_tree(const char *from, const char *to)
{
    CHECK_MSG(mkdir(to, 0700) == 0, "mkdir %s: %s", to, strerror(errno));
    DIR *d = opendir(from);
    CHECK(d != NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char a[4096], b[4096];
        snprintf(a, sizeof(a), "%s/%s", from, e->d_name);
        snprintf(b, sizeof(b), "%s/%s", to, e->d_name);
        struct stat st;
        CHECK(lstat(a, &st) == 0);
        if (S_ISDIR(st.st_mode)) {
            copy_tree(a, b);
        } else if (S_ISREG(st.st_mode)) {
            size_t len;
            uint8_t *data = read_file(a, &len);
            write_file(b, data, len);
            free(data);
        }
    }
    closedir(d);
}

/* Paths of the regular files under dir whose name passes `want`, sorted. */
typedef struct filelist {
    char (*path)[4096];
    size_t n;
} filelist;

static filelist list_found;
static const char *list_suffix;

static int list_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    size_t n = strlen(path), k = strlen(list_suffix);
    if (flag == FTW_F && n >= k && strcmp(path + n - k, list_suffix) == 0) {
        list_found.path = realloc(list_found.path, (list_found.n + 1) * sizeof(*list_found.path));
        snprintf(list_found.path[list_found.n++], 4096, "%s", path);
    }
    return 0;
}

static int by_path(const void *a, const void *b)
{
    return strcmp(a, b);
}

static filelist list_files(const char *dir, const char *suffix)
{
    list_found.path = NULL;
    list_found.n = 0;
    list_suffix = suffix;
    nftw(dir, list_one, 16, FTW_PHYS);
    if (list_found.n)
        qsort(list_found.path, list_found.n, sizeof(*list_found.path), by_path);
    return list_found;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static void uuid_text(const uint8_t *id, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[id[i] >> 4];
        out[o++] = hex[id[i] & 15];
    }
    out[o] = '\0';
}

/* ---- fixtures --------------------------------------------------------------- */

static char fix[4096];  /* the fixtures' folder */
static char work[4096]; /* the case's copy */
static uint8_t prep_txid[2][16];

static void make_fixtures(void)
{
    snprintf(fix, sizeof(fix), "%s/fixtures", t_tmpdir());
    CHECK(mkdir(fix, 0700) == 0);
    char dir[4200];

    snprintf(dir, sizeof(dir), "%s/main", fix);
    CHECK_OK(sop_db_init(dir, NULL, &err), &err);
    sop_db *db = open_db(dir);
    fill(db);
    leave_prepared(db, 0, prep_txid[0]);
    leave_prepared(db, 1, prep_txid[1]);
    sop_db_close(db);

    sop_db_options o;
    sop_db_options_init(&o);
    o.registry_hash_mod = 300;
    snprintf(dir, sizeof(dir), "%s/other", fix);
    CHECK_OK(sop_db_init(dir, &o, &err), &err);
    db = open_db(dir);
    fill(db);
    sop_db_close(db);

    for (int k = 0; k < 2; k++) {
        snprintf(dir, sizeof(dir), "%s/%s", fix, k == 0 ? "logs" : "pending");
        CHECK_OK(sop_db_init(dir, NULL, &err), &err);
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            t_in_child();
            sop__fault_reset();
            db = open_db(dir);
            fill(db);
            if (k == 1) {
                /* the third commit dies at its commit point */
                sop__fault_kill_at(SOP__POINT_P1_DURABLE, 1);
                sop_txn *t;
                CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
                sop_btree *bt;
                CHECK_OK(sop_store_open(t, "a", &bt, &err), &err);
                put(bt, 0, PENDING_KEY, PENDING_GEN);
                sop_txn_commit(t, &err);
                _exit(3); /* not reached */
            }
            _exit(0); /* dies without closing: the log stays */
        }
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        if (k == 0)
            CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "logs fixture: status %d",
                      status);
        else
            CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                      "pending fixture: status %d", status);
        char txlog[4300];
        snprintf(txlog, sizeof(txlog), "%s/txlog", dir);
        filelist l = list_files(txlog, ".log");
        CHECK_MSG(l.n == 1, "%s: %zu logs", dir, l.n);
        free(l.path);
    }
}

/* ---- corruptions -------------------------------------------------------------- */

typedef enum {
    C_FLIP,  /* xor 0xff into the byte at off */
    C_TRUNC, /* truncate to off bytes */
    C_ZERO,  /* zero [off, off + len) */
    C_SWAP,  /* replace with the content of another file */
    C_DELETE /* remove the file */
} ctype;

typedef enum { MUST_DETECT, MUST_HEAL, EITHER } expectation;

typedef struct corruption {
    ctype type;
    size_t off, len;
    const char *other; /* C_SWAP: the file whose content goes in */
} corruption;

/* Applies c to path. false if it would change nothing (the bytes to zero
 * already are, the file to swap in is identical). */
static bool corrupt(const char *path, const corruption *c)
{
    size_t len;
    uint8_t *data = read_file(path, &len);
    bool changed = true;
    switch (c->type) {
    case C_FLIP:
        CHECK_MSG(c->off < len, "flip at %zu of a %zu-byte %s", c->off, len, path);
        data[c->off] ^= 0xff;
        write_file(path, data, len);
        break;
    case C_TRUNC:
        CHECK_MSG(c->off < len, "truncate to %zu of a %zu-byte %s", c->off, len, path);
        CHECK(truncate(path, (off_t)c->off) == 0);
        break;
    case C_ZERO: {
        CHECK(c->off + c->len <= len);
        changed = false;
        for (size_t i = c->off; i < c->off + c->len; i++)
            changed = changed || data[i] != 0;
        memset(data + c->off, 0, c->len);
        write_file(path, data, len);
        break;
    }
    case C_SWAP: {
        size_t olen;
        uint8_t *odata = read_file(c->other, &olen);
        changed = olen != len || memcmp(odata, data, len) != 0;
        write_file(path, odata, olen);
        free(odata);
        break;
    }
    case C_DELETE:
        CHECK(unlink(path) == 0);
        break;
    }
    free(data);
    return changed;
}

static const char *describe(const corruption *c, char *out, size_t cap)
{
    switch (c->type) {
    case C_FLIP:
        snprintf(out, cap, "flip byte %zu", c->off);
        break;
    case C_TRUNC:
        snprintf(out, cap, "truncate to %zu", c->off);
        break;
    case C_ZERO:
        snprintf(out, cap, "zero %zu..%zu", c->off, c->off + c->len);
        break;
    case C_SWAP:
        snprintf(out, cap, "swap with %s", base_name(c->other));
        break;
    case C_DELETE:
        snprintf(out, cap, "delete");
        break;
    }
    return out;
}

/* ---- exercising a database ------------------------------------------------------- */

/* What the child saw; in shared memory. */
typedef struct report {
    bool done;
    unsigned nerrors; /* calls that failed */
    unsigned named;   /* ... with a message naming the file */
    char first_error[400];
    char first_named[400];
    unsigned problems, problems_named;
    unsigned problems_orphan; /* check lines about leaked (unreferenced) blobs */
    char first_problem[400];
    unsigned conflicts; /* SOP_CONFLICT ("retry"): never right here, nothing runs alongside */
    char first_conflict[400];
    unsigned wrong; /* reads that returned SOP_OK with wrong data, or NOTFOUND */
    char first_wrong[400];
    bool committed;    /* the commit to every store succeeded */
    unsigned reads_ok; /* items read correctly */
    int pending_state; /* pending fixture: 0 unknown, 1 before, 2 after */
} report;

static report *rep;
static const char *const *names; /* tokens that name the corrupted file */
static bool pending_fixture, main_fixture;

static bool names_file(const char *msg)
{
    for (const char *const *n = names; *n; n++)
        if (strstr(msg, *n))
            return true;
    return false;
}

static void failed_call(const char *what, sop_rc rc, const sop_err *e)
{
    (void)rc;
    rep->nerrors++;
    char line[400];
    snprintf(line, sizeof(line), "%s: %s: %s", what, sop_rc_name(rc), e->msg);
    const char *trace = getenv("SOP_CORRUPTION_TRACE");
    if (trace && strcmp(trace, "2") == 0)
        printf("#     %s%s\n", line, names_file(e->msg) ? " [names the file]" : "");
    if (rep->first_error[0] == '\0')
        snprintf(rep->first_error, sizeof(rep->first_error), "%s", line);
    if (rc == SOP_CONFLICT && rep->conflicts++ == 0)
        snprintf(rep->first_conflict, sizeof(rep->first_conflict), "%s", line);
    if (names_file(e->msg)) {
        if (rep->named++ == 0)
            snprintf(rep->first_named, sizeof(rep->first_named), "%s", line);
    }
}

static void wrong(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void wrong(const char *fmt, ...)
{
    if (rep->wrong++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rep->first_wrong, sizeof(rep->first_wrong), fmt, ap);
        va_end(ap);
    }
}

/* The generation the data should have for key i of store s (0: absent). */
static int want_gen(int s, int i, bool with_new)
{
    if (i == NEW_KEY)
        return with_new ? 9 : 0; /* the key the exercise commits */
    if (i >= scount[s])
        return 0;
    if (pending_fixture && s == 0 && i == PENDING_KEY && rep->pending_state == 2)
        return PENDING_GEN;
    return gen_of(i);
}

static void problem_cb(void *ctx, const char *msg)
{
    (void)ctx;
    rep->problems++;
    const char *trace = getenv("SOP_CORRUPTION_TRACE");
    if (trace && strcmp(trace, "2") == 0)
        printf("#     check: %s%s\n", msg, names_file(msg) ? " [names the file]" : "");
    if (rep->first_problem[0] == '\0')
        snprintf(rep->first_problem, sizeof(rep->first_problem), "%s", msg);
    if (names_file(msg))
        rep->problems_named++;
    if (strstr(msg, "(orphan)"))
        rep->problems_orphan++;
}

typedef struct listed {
    int n;
    uint8_t txid[4][16];
} listed;

static void list_cb(void *ctx, const sop_prepared_info *info)
{
    listed *l = ctx;
    if (l->n < 4)
        memcpy(l->txid[l->n], info->txid, 16);
    l->n++;
}

/* Bytes for a message: printable ones as they are, others as \xHH. */
static const char *printable(const void *p, size_t n, char *out, size_t cap)
{
    const unsigned char *b = p;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        if (b[i] >= 0x20 && b[i] < 0x7f)
            out[o++] = (char)b[i];
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", b[i]);
    }
    out[o] = '\0';
    return out;
}

/* Scans store s and gets each of its keys; every OK read must be right. */
static void read_store(sop_txn *t, int s, bool with_new)
{
    sop_err e;
    sop_err_clear(&e);
    sop_btree *bt;
    sop_rc rc = sop_store_open(t, snames[s], &bt, &e);
    if (rc != SOP_OK) {
        failed_call("sop_store_open", rc, &e);
        if (rc == SOP_NOTFOUND)
            wrong("store %s: not found", snames[s]);
        return;
    }
    /* the pending commit decides itself on the first read of a.005 */
    if (pending_fixture && s == 0 && rep->pending_state == 0) {
        char k[64];
        int kl = key_of(0, PENDING_KEY, k, sizeof(k));
        sop_item it;
        if (sop_btree_get(bt, k, (size_t)kl, &it, &e) == SOP_OK) {
            char v[128];
            int vl = value_of(0, PENDING_KEY, PENDING_GEN, v, sizeof(v));
            rep->pending_state =
                it.value_len == (size_t)vl && memcmp(it.value, v, (size_t)vl) == 0 ? 2 : 1;
        }
    }
    /* the scan: items in order, each one right */
    sop_cursor *c;
    rc = sop_cursor_open(bt, &c, &e);
    if (rc != SOP_OK) {
        failed_call("sop_cursor_open", rc, &e);
        return;
    }
    /* the order of the keys: the new one first, then 0, 1, ... */
    int order[NKEYS_MAX], norder = 0;
    if (want_gen(s, NEW_KEY, with_new))
        order[norder++] = NEW_KEY;
    for (int i = 0; i < NEW_KEY; i++)
        if (want_gen(s, i, with_new))
            order[norder++] = i;
    int pos = 0, next = 0; /* the next key the scan must return */
    const char *what = "sop_cursor_first";
    for (rc = sop_cursor_first(c, &e); rc == SOP_OK; rc = sop_cursor_next(c, &e)) {
        what = "sop_cursor_next";
        next = pos < norder ? order[pos] : NKEYS_MAX;
        sop_item it;
        rc = sop_cursor_item(c, &it, &e);
        if (rc != SOP_OK) {
            what = "sop_cursor_item";
            break;
        }
        char k[64], v[128];
        int kl = 0, vl = 0;
        if (next < NKEYS_MAX) {
            kl = key_of(s, next, k, sizeof(k));
            vl = value_of(s, next, want_gen(s, next, with_new), v, sizeof(v));
        }
        char got[300], gk[100], gv[180];
        snprintf(got, sizeof(got), "%s = %s", printable(it.key, it.key_len, gk, sizeof(gk)),
                 printable(it.value, it.value_len, gv, sizeof(gv)));
        if (next >= NKEYS_MAX || it.key_len != (size_t)kl || memcmp(it.key, k, (size_t)kl) != 0 ||
            it.value_len != (size_t)vl || memcmp(it.value, v, (size_t)vl) != 0) {
            wrong("scan returned %s, expected %s", got, next < NKEYS_MAX ? k : "the end");
            break;
        }
        rep->reads_ok++;
        pos++;
    }
    sop_cursor_close(c);
    if (rc == SOP_NOTFOUND) {
        if (pos < norder) {
            char k[64];
            key_of(s, order[pos], k, sizeof(k));
            wrong("the scan of store %s ended before %s", snames[s], k);
        }
    } else if (rc != SOP_OK) {
        failed_call(what, rc, &e);
    }
    /* gets */
    for (int i = 0; i < NKEYS_MAX; i++) {
        int g = want_gen(s, i, with_new);
        char k[64], v[128];
        int kl = key_of(s, i, k, sizeof(k));
        sop_item it;
        rc = sop_btree_get(bt, k, (size_t)kl, &it, &e);
        if (rc == SOP_NOTFOUND) {
            if (g != 0)
                wrong("get %s: not found", k);
            continue;
        }
        if (rc != SOP_OK) {
            failed_call("sop_btree_get", rc, &e);
            continue;
        }
        int vl = g ? value_of(s, i, g, v, sizeof(v)) : 0;
        if (g == 0 || it.value_len != (size_t)vl || memcmp(it.value, v, (size_t)vl) != 0) {
            char got[180];
            wrong("get %s returned %s", k, printable(it.value, it.value_len, got, sizeof(got)));
        } else {
            rep->reads_ok++;
        }
    }
    uint64_t n = 0;
    for (int i = 0; i < NKEYS_MAX; i++)
        n += want_gen(s, i, with_new) != 0;
    if (sop_btree_count(bt) != n)
        wrong("store %s: the count is wrong", snames[s]);
}

static void read_all(sop_db *db, bool with_new)
{
    sop_err e;
    sop_err_clear(&e);
    sop_txn *t;
    sop_rc rc = sop_txn_begin(db, SOP_TXN_READ, 0, &t, &e);
    if (rc != SOP_OK) {
        failed_call("sop_txn_begin", rc, &e);
        return;
    }
    for (int s = 0; s < NSTORE; s++)
        read_store(t, s, with_new);
    rc = sop_txn_commit(t, &e);
    if (rc != SOP_OK)
        failed_call("sop_txn_commit (read)", rc, &e);
    sop_txn_free(t);
}

static void exercise(const char *dir)
{
    sop_db_options o;
    sop_db_options_init(&o);
    o.lock_timeout_ms = 2000;
    sop_err e;
    sop_err_clear(&e);
    sop_db *db = NULL;
    sop_rc rc = sop_db_open(dir, &o, &db, &e);
    if (rc != SOP_OK) {
        failed_call("sop_db_open", rc, &e);
        return;
    }
    /* the prepared transactions: exactly the fixture's */
    listed l;
    memset(&l, 0, sizeof(l));
    rc = sop_db_list_prepared(db, list_cb, &l, &e);
    if (rc != SOP_OK) {
        failed_call("sop_db_list_prepared", rc, &e);
    } else {
        int want = main_fixture ? 2 : 0;
        bool same = l.n == want;
        for (int i = 0; i < want && same; i++) {
            bool found = false;
            for (int j = 0; j < l.n && j < 4; j++)
                found = found || memcmp(l.txid[j], prep_txid[i], 16) == 0;
            same = found;
        }
        if (!same)
            wrong("sop_db_list_prepared listed %d transactions, not the %d prepared ones", l.n,
                  want);
    }
    read_all(db, false);
    sop_check_report cr;
    rc = sop_db_check(db, problem_cb, NULL, &cr, &e);
    if (rc != SOP_OK && rc != SOP_CORRUPT)
        failed_call("sop_db_check", rc, &e);
    if (rc == SOP_OK && rep->problems)
        wrong("sop_db_check returned SOP_OK with %u problems", rep->problems);
    /* a commit to every store */
    sop_txn *t;
    rc = sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &e);
    const char *what = "sop_txn_begin";
    for (int s = 0; s < NSTORE && rc == SOP_OK; s++) {
        sop_btree *bt;
        what = "sop_store_open (write)";
        rc = sop_store_open(t, snames[s], &bt, &e);
        char k[64], v[128];
        int kl = key_of(s, NEW_KEY, k, sizeof(k));
        int vl = value_of(s, NEW_KEY, 9, v, sizeof(v));
        if (rc == SOP_OK) {
            what = "sop_btree_upsert";
            rc = sop_btree_upsert(bt, k, (size_t)kl, v, (size_t)vl, NULL, &e);
        }
    }
    if (rc == SOP_OK) {
        what = "sop_txn_commit";
        rc = sop_txn_commit(t, &e);
        rep->committed = rc == SOP_OK;
    }
    if (rc != SOP_OK)
        failed_call(what, rc, &e);
    sop_txn_free(t);
    sop_db_close(db);
    /* reopened: the same, plus the commit if it went through */
    rc = sop_db_open(dir, &o, &db, &e);
    if (rc != SOP_OK) {
        failed_call("sop_db_open (again)", rc, &e);
        return;
    }
    read_all(db, rep->committed);
    sop_db_close(db);
}

/* ---- cases ----------------------------------------------------------------------- */

static unsigned ncases, nfailed, nskipped, by_outcome[3];
static char first_failure[1200];

static void fail_case(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail_case(const char *what, const char *fmt, ...)
{
    char msg[1100];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    printf("#   FAIL %s: %s\n", what, msg);
    if (nfailed++ == 0)
        snprintf(first_failure, sizeof(first_failure), "%s: %s", what, msg);
}

/* Runs one case: fixture copy, corruption of `file` (relative to the
 * database folder), the exercise in a child, the verdict. */
static void run_case(const char *fixture, const char *file, const corruption *c, expectation expect,
                     const char *const *name_tokens)
{
    char what[600], d[200];
    snprintf(what, sizeof(what), "%s/%s: %s", fixture, file, describe(c, d, sizeof(d)));
    snprintf(work, sizeof(work), "%s/case", t_tmpdir());
    rm_rf(work);
    char src[4300];
    snprintf(src, sizeof(src), "%s/%s", fix, fixture);
    copy_tree(src, work);
    char path[4700];
    snprintf(path, sizeof(path), "%s/%s", work, file);
    corruption cc = *c;
    char other[4700];
    if (c->type == C_SWAP) {
        /* the other file, from the same copy or another fixture */
        if (c->other[0] == '@')
            snprintf(other, sizeof(other), "%s/%s", fix, c->other + 1);
        else
            snprintf(other, sizeof(other), "%s/%s", work, c->other);
        cc.other = other;
    }
    if (!corrupt(path, &cc)) {
        nskipped++;
        printf("#   skipped (changes nothing): %s\n", what);
        return;
    }
    ncases++;
    names = name_tokens;
    pending_fixture = strcmp(fixture, "pending") == 0;
    main_fixture = strcmp(fixture, "main") == 0;
    memset(rep, 0, sizeof(*rep));
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        exercise(work);
        rep->done = true;
        exit(0); /* exit, not _exit: LeakSanitizer checks the child */
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    char st[64];
    snprintf(st, sizeof(st), "%s %d", WIFSIGNALED(status) ? "signal" : "status",
             WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !rep->done) {
        fail_case(what, "the child died (%s)%s", st, rep->done ? " after the exercise" : "");
        return;
    }
    if (rep->wrong) {
        fail_case(what, "a wrong answer: %s", rep->first_wrong);
        return;
    }
    /* a damaged file reported as a conflict: the caller retries forever */
    if (rep->conflicts) {
        fail_case(what,
                  "SOP_CONFLICT (\"retry\") for a damaged file, with nothing running alongside: %s",
                  rep->first_conflict);
        return;
    }
    bool detected = rep->named > 0 || rep->problems_named > 0;
    bool healed = rep->nerrors == 0 && rep->problems == 0 && rep->committed;
    bool noticed = rep->nerrors > 0 || rep->problems > 0;
    by_outcome[healed ? 0 : detected ? 1 : 2]++;
    if (getenv("SOP_CORRUPTION_TRACE"))
        printf("#   %s: %s; first error: %s; first problem: %s\n", what,
               healed     ? "healed"
               : detected ? "detected"
                          : "neither",
               rep->first_error, rep->first_problem);
    /* A dead process's log damaged in its last COMMIT record looks exactly
     * like a torn append, so recovery cannot replay that commit; if it was
     * half applied (killed before removing the bodies it made obsolete),
     * what is left is leaked blobs, each reported by path - no read is
     * wrong, and nothing else can be known. */
    if (expect == EITHER && rep->wrong == 0 && rep->nerrors == 0 && rep->committed &&
        rep->problems > 0 && rep->problems == rep->problems_orphan)
        detected = true;
    switch (expect) {
    case MUST_HEAL:
        if (!healed)
            fail_case(what, "should recover silently, but: %s %s",
                      rep->first_error[0] ? rep->first_error : "check:", rep->first_problem);
        break;
    case MUST_DETECT:
    case EITHER:
        if (expect == EITHER && healed)
            break;
        if (!noticed)
            fail_case(what, "undetected: every read right, check clean");
        else if (!detected)
            fail_case(what, "noticed, but no message names the file: %s %s",
                      rep->first_error[0] ? rep->first_error : "check:", rep->first_problem);
        break;
    }
}

/* The flip / truncate / zero set for a file of `len` bytes: the start, the
 * middle and the end (where the checksums are). */
static void standard_cases(const char *fixture, const char *file, expectation expect,
                           const char *const *tokens, size_t len, size_t zero_off, size_t zero_len)
{
    const corruption cs[] = {
        {C_FLIP, 0, 0, NULL},
        {C_FLIP, len / 2, 0, NULL},
        {C_FLIP, len - 1, 0, NULL},
        {C_TRUNC, 0, 0, NULL},
        {C_TRUNC, len / 2, 0, NULL},
        {C_TRUNC, len - 1, 0, NULL},
        {C_ZERO, zero_off, zero_len, NULL},
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
        run_case(fixture, file, &cs[i], expect, tokens);
}

static size_t file_size(const char *fixture, const char *file)
{
    char path[8300];
    snprintf(path, sizeof(path), "%s/%s/%s", fix, fixture, file);
    struct stat st;
    CHECK_MSG(stat(path, &st) == 0, "%s: %s", path, strerror(errno));
    return (size_t)st.st_size;
}

/* Relative path (from the database folder) of a fixture file. */
static const char *rel(const char *fixture, const char *abs)
{
    size_t n = strlen(fix) + 1 + strlen(fixture) + 1;
    CHECK(strlen(abs) > n);
    return abs + n;
}

/* The blobs of store s in the main fixture: node bodies (SOPN) or values. */
static filelist blobs_of(int s, bool nodes)
{
    char dir[4300];
    snprintf(dir, sizeof(dir), "%s/main/stores/%s/blob", fix, snames[s]);
    filelist all = list_files(dir, "");
    filelist out = {NULL, 0};
    for (size_t i = 0; i < all.n; i++) {
        size_t len;
        uint8_t *data = read_file(all.path[i], &len);
        bool is_node = len >= 4 && memcmp(data, "SOPN", 4) == 0;
        free(data);
        if (is_node != nodes)
            continue;
        out.path = realloc(out.path, (out.n + 1) * sizeof(*out.path));
        memcpy(out.path[out.n++], all.path[i], 4096);
    }
    free(all.path);
    return out;
}

static report *shared_report(void)
{
    if (rep == NULL) {
        rep = mmap(NULL, sizeof(*rep), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CHECK(rep != MAP_FAILED);
    }
    return rep;
}

static void summary(const char *kind)
{
    printf("#   %s: %u cases (%u healed, %u detected naming the file, %u neither), %u skipped, "
           "%u failed\n",
           kind, ncases, by_outcome[0], by_outcome[1], by_outcome[2], nskipped, nfailed);
    unsigned f = nfailed;
    char first[1200];
    snprintf(first, sizeof(first), "%s", first_failure);
    ncases = nfailed = nskipped = 0;
    memset(by_outcome, 0, sizeof(by_outcome));
    first_failure[0] = '\0';
    CHECK_MSG(f == 0, "%u cases failed; the first: %s", f, first);
}

static void setup(void)
{
    ncases = nfailed = nskipped = 0;
    memset(by_outcome, 0, sizeof(by_outcome));
    first_failure[0] = '\0';
    shared_report();
    sop__fault_reset();
    make_fixtures();
}

/* ---- the tests, one per kind of file ------------------------------------------------ */

TEST(database_header)
{
    setup();
    static const char *const tok[] = {"sop.db", NULL};
    standard_cases("main", "sop.db", MUST_DETECT, tok, file_size("main", "sop.db"), 16, 16);
    /* another database's header (another hash modulus): the registry no
     * longer fits, which names the segment */
    static const char *const tok2[] = {"sop.db", ".reg", NULL};
    corruption sw = {C_SWAP, 0, 0, "@other/sop.db"};
    run_case("main", "sop.db", &sw, MUST_DETECT, tok2);
    summary("sop.db");
}

TEST(lock_file)
{
    setup();
    static const char *const tok[] = {"lock", NULL};
    /* the commit state at 4096 (64 bytes), the checkpoint mark's slots at
     * 8192 and 8704 (32 bytes each; the pending fixture never wrote one) */
    for (int f = 0; f < 2; f++) {
        const char *fixture = f == 0 ? "main" : "pending";
        size_t len = file_size(fixture, "lock");
        const corruption cs[] = {
            {C_FLIP, 4096 + 8, 0, NULL},   {C_FLIP, 4096 + 16, 0, NULL},
            {C_FLIP, 4096 + 60, 0, NULL},  {C_FLIP, 8192 + 16, 0, NULL},
            {C_FLIP, 8704 + 16, 0, NULL},  {C_TRUNC, 0, 0, NULL},
            {C_TRUNC, 4096, 0, NULL},      {C_TRUNC, len - 1, 0, NULL},
            {C_ZERO, 4096, 64, NULL},      {C_ZERO, 8192, 544, NULL},
            {C_SWAP, 0, 0, "@other/lock"},
        };
        for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
            if (cs[i].type != C_SWAP && cs[i].off + (cs[i].type == C_ZERO ? cs[i].len : 1) > len)
                continue;
            /* main: nothing pending, the hints only; pending: the marker
             * lost, full recovery redoes the log anyway */
            run_case(fixture, "lock", &cs[i], f == 0 ? MUST_HEAL : EITHER, tok);
        }
    }
    summary("lock");
}

TEST(store_info)
{
    setup();
    static const char *const tok[] = {"stores/a/info", NULL};
    const char *file = "stores/a/info";
    size_t len = file_size("main", file);
    CHECK_EQ(len, 1232);
    const corruption cs[] = {
        {C_FLIP, 0, 0, NULL},    {C_FLIP, 16, 0, NULL},           {C_FLIP, 508, 0, NULL},
        {C_FLIP, 512, 0, NULL},  {C_FLIP, 540, 0, NULL},          {C_FLIP, 589, 0, NULL},
        {C_FLIP, 1231, 0, NULL}, {C_TRUNC, 0, 0, NULL},           {C_TRUNC, 512, 0, NULL},
        {C_TRUNC, 616, 0, NULL}, {C_TRUNC, 1231, 0, NULL},        {C_ZERO, 0, 32, NULL},
        {C_ZERO, 512, 64, NULL}, {C_SWAP, 0, 0, "stores/b/info"},
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
        run_case("main", file, &cs[i], MUST_DETECT, tok);
    summary("store info");
}

TEST(registry_segment)
{
    setup();
    static const char *const tok[] = {"a-1.reg", NULL};
    const char *file = "stores/a/a-1.reg";
    char path[4300];
    snprintf(path, sizeof(path), "%s/main/%s", fix, file);
    size_t len;
    uint8_t *data = read_file(path, &len);
    /* the first block with handles, and its first used slot */
    size_t block = len, slot = 0;
    for (size_t b = 0; b + 4096 <= len && block == len; b += 4096)
        for (size_t sl = 0; sl < 66; sl++) {
            bool used = false;
            for (size_t i = 0; i < 62 && !used; i++)
                used = data[b + sl * 62 + i] != 0;
            if (used) {
                block = b;
                slot = sl;
                break;
            }
        }
    free(data);
    CHECK_MSG(block < len, "no handle in %s", path);
    size_t h = block + slot * 62;
    const corruption cs[] = {
        {C_FLIP, h, 0, NULL},            /* a logical ID */
        {C_FLIP, h + 20, 0, NULL},       /* a physical ID */
        {C_FLIP, h + 49, 0, NULL},       /* a version */
        {C_FLIP, block + 4092, 0, NULL}, /* the checksum */
        {C_TRUNC, 0, 0, NULL},
        {C_TRUNC, len / 2, 0, NULL},
        {C_TRUNC, len - 1, 0, NULL},
        {C_ZERO, h, 62, NULL},       /* one handle */
        {C_ZERO, block, 4096, NULL}, /* the whole block */
        {C_SWAP, 0, 0, "stores/b/b-1.reg"},
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
        run_case("main", file, &cs[i], MUST_DETECT, tok);
    summary("registry segment");
}

TEST(node_blob)
{
    setup();
    filelist nodes = blobs_of(0, true);
    CHECK_MSG(nodes.n >= 3, "store a has %zu nodes", nodes.n);
    for (size_t k = 0; k < 2; k++) {
        const char *abs = nodes.path[k];
        size_t len;
        uint8_t *data = read_file(abs, &len);
        char lid[37];
        uuid_text(data + 8, lid);
        free(data);
        const char *tok[] = {base_name(abs), lid, NULL};
        char file[4096];
        snprintf(file, sizeof(file), "%s", rel("main", abs));
        standard_cases("main", file, MUST_DETECT, tok, len, 28, 36);
        corruption sw = {C_SWAP, 0, 0, NULL};
        char other[4096];
        snprintf(other, sizeof(other), "%s", rel("main", nodes.path[k + 1]));
        sw.other = other;
        run_case("main", file, &sw, MUST_DETECT, tok);
        corruption del = {C_DELETE, 0, 0, NULL};
        run_case("main", file, &del, MUST_DETECT, tok);
    }
    free(nodes.path);
    summary("node blobs");
}

static void value_blob_cases(int s)
{
    filelist vals = blobs_of(s, false);
    CHECK_MSG(vals.n >= 2, "store %s has %zu value blobs", snames[s], vals.n);
    const char *abs = vals.path[0];
    size_t len = 0;
    free(read_file(abs, &len));
    const char *tok[] = {base_name(abs), NULL};
    char file[4096];
    snprintf(file, sizeof(file), "%s", rel("main", abs));
    standard_cases("main", file, MUST_DETECT, tok, len, 0, 8);
    /* another value of the same length (b) or not (c) */
    size_t pick = 1;
    for (size_t i = 1; i < vals.n; i++) {
        size_t l2 = 0;
        free(read_file(vals.path[i], &l2));
        if (l2 == len) {
            pick = i;
            break;
        }
    }
    corruption sw = {C_SWAP, 0, 0, NULL};
    char other[4096];
    snprintf(other, sizeof(other), "%s", rel("main", vals.path[pick]));
    sw.other = other;
    run_case("main", file, &sw, MUST_DETECT, tok);
    corruption del = {C_DELETE, 0, 0, NULL};
    run_case("main", file, &del, MUST_DETECT, tok);
    free(vals.path);
}

TEST(separate_value_blob)
{
    setup();
    value_blob_cases(1);
    summary("separate value blobs");
}

TEST(active_value_blob)
{
    setup();
    value_blob_cases(2);
    summary("active value blobs");
}

/* The records of a log: offsets of their headers and payload lengths. */
typedef struct logrecs {
    size_t off[64], len[64];
    size_t n, end;
} logrecs;

static logrecs parse_log(const char *path)
{
    size_t len;
    uint8_t *data = read_file(path, &len);
    logrecs r;
    memset(&r, 0, sizeof(r));
    size_t off = 4096;
    while (off + 48 <= len && r.n < 64 && memcmp(data + off, "SREC", 4) == 0) {
        size_t pl = (size_t)data[off + 40] | (size_t)data[off + 41] << 8 |
                    (size_t)data[off + 42] << 16 | (size_t)data[off + 43] << 24;
        r.off[r.n] = off;
        r.len[r.n++] = pl;
        off += 48 + pl;
    }
    r.end = off;
    free(data);
    return r;
}

static void log_cases(const char *fixture, expectation expect)
{
    char txlog[4300];
    snprintf(txlog, sizeof(txlog), "%s/%s/txlog", fix, fixture);
    filelist l = list_files(txlog, ".log");
    CHECK(l.n == 1);
    logrecs r = parse_log(l.path[0]);
    CHECK_MSG(r.n >= 2, "%s: %zu records", l.path[0], r.n);
    const char *tok[] = {base_name(l.path[0]), NULL};
    char file[4096];
    snprintf(file, sizeof(file), "%s", rel(fixture, l.path[0]));
    size_t first = r.off[0], mid = r.off[r.n / 2], last = r.off[r.n - 1];
    const corruption cs[] = {
        {C_FLIP, 0, 0, NULL},                             /* header magic */
        {C_FLIP, 32, 0, NULL},                            /* header epoch */
        {C_FLIP, 48, 0, NULL},                            /* header checksum */
        {C_FLIP, first, 0, NULL},                         /* first record's magic */
        {C_FLIP, first + 16, 0, NULL},                    /* its sequence number */
        {C_FLIP, mid + 48 + r.len[r.n / 2] / 2, 0, NULL}, /* a payload */
        {C_FLIP, last + 44, 0, NULL},                     /* the last record's checksum */
        {C_FLIP, last + 48 + r.len[r.n - 1] - 1, 0, NULL},
        {C_TRUNC, 0, 0, NULL},
        {C_TRUNC, 4096, 0, NULL},
        {C_TRUNC, mid + 20, 0, NULL},             /* torn in a record header */
        {C_TRUNC, r.end - 1, 0, NULL},            /* torn last record */
        {C_ZERO, mid, 48 + r.len[r.n / 2], NULL}, /* a whole record */
        {C_ZERO, 0, 4096, NULL},                  /* the header */
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
        run_case(fixture, file, &cs[i], expect, tok);
    free(l.path);
}

TEST(transaction_log_of_a_dead_process)
{
    setup();
    /* every record applied: whatever is lost with the log, the data is there */
    log_cases("logs", EITHER);
    /* the last record is a durable commit not yet applied: losing it (as a
     * torn tail) leaves the state before it */
    log_cases("pending", EITHER);
    summary("transaction logs");
}

TEST(prepared_transaction_file)
{
    setup();
    char txt[2][37], file[2][128];
    for (int k = 0; k < 2; k++) {
        uuid_text(prep_txid[k], txt[k]);
        snprintf(file[k], sizeof(file[k]), "txlog/%s.prep", txt[k]);
    }
    const char *tok[] = {txt[0], NULL};
    size_t len = file_size("main", file[0]);
    standard_cases("main", file[0], MUST_DETECT, tok, len, 32, 64);
    corruption cs[] = {
        {C_FLIP, 8, 0, NULL},   /* the transaction ID */
        {C_FLIP, 288, 0, NULL}, /* the payload length */
        {C_FLIP, 300, 0, NULL}, /* the payload */
        {C_SWAP, 0, 0, file[1]},
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
        run_case("main", file[0], &cs[i], MUST_DETECT, tok);
    summary("prepared files");
}
