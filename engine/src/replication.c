/*
 * replication.c - the policy of active/passive replication: state files,
 * failover, stale marking, switch-over and reinstate (replication.h,
 * docs/replication.md). The mechanism - doing every write on both sides -
 * is the os layer's mirror (os.h).
 */
#include "replication.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bytes.h"
#include "crc.h"
#include "err.h"
#include "fault.h"
#include "mem.h"

#define STATE_NAME    "replication"
#define STATE_MAGIC   "SOPREPL1"
#define STATE_VERSION 1u
#define STATE_FIXED   218u /* bytes before the passive path */
#define REASON_MAX    160u
#define PATH_MAX_     4096u
#define HINT_OFF      12288u
#define HINT_MAGIC    0x4c504552u /* "REPL" */
#define BARRIER_BYTE  2u
#define STATE_BYTE    3u

typedef struct rstate {
    uint8_t id[16];
    uint64_t gen;
    int primary;
    unsigned stale; /* bit s: side s is stale */
    int64_t changed_ms;
    char reason[REASON_MAX];
    char passive[PATH_MAX_];
} rstate;

struct sop__repl {
    char side[2][PATH_MAX_];
    char lockpath[PATH_MAX_];
    int lock_fd;
    rstate st; /* the newest state this process has seen */
    sop__os_mirror *mirror;
    pthread_mutex_t mu; /* inside and the barrier */
    int inside;         /* mutating calls in flight in this process */
    /* sides found failing whose staleness could not be recorded yet: not
     * written by this process, and every mutating call fails until it is
     * recorded (a commit must never count on a side that silently missed
     * writes) */
    unsigned pending;
    char pending_reason[REASON_MAX];
    int refs;
    sop__repl *next;
};

static pthread_mutex_t list_mu = PTHREAD_MUTEX_INITIALIZER;
static sop__repl *list;

static const char *const skip_names[] = {"lock", STATE_NAME, STATE_NAME ".tmp", NULL};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the state file ---- */

static size_t state_encode(const rstate *st, uint8_t *b)
{
    size_t n = strlen(st->passive);
    size_t total = STATE_FIXED + n + 4;
    memset(b, 0, total);
    memcpy(b, STATE_MAGIC, 8);
    sop__le_put32(b + 8, STATE_VERSION);
    sop__le_put32(b + 12, (uint32_t)total);
    memcpy(b + 16, st->id, 16);
    sop__le_put64(b + 32, st->gen);
    b[40] = (uint8_t)st->primary;
    b[41] = (uint8_t)st->stale;
    sop__le_put64(b + 48, (uint64_t)st->changed_ms);
    memcpy(b + 56, st->reason, strnlen(st->reason, REASON_MAX - 1));
    b[216] = (uint8_t)(n & 0xff);
    b[217] = (uint8_t)(n >> 8);
    memcpy(b + STATE_FIXED, st->passive, n);
    sop__le_put32(b + STATE_FIXED + n, sop__crc32c(0, b, STATE_FIXED + n));
    return total;
}

/* SOP_NOTFOUND: no file; SOP_CORRUPT: not a valid state file. */
static sop_rc state_read(const char *side, rstate *st, sop_err *err)
{
    char path[PATH_MAX_ + 32];
    snprintf(path, sizeof(path), "%s/" STATE_NAME, side);
    uint8_t b[STATE_FIXED + PATH_MAX_ + 4];
    int fd;
    sop__os_mirror_bypass(1);
    sop_rc rc = sop__os_open(SOP__SITE_REPL_STATE, path, O_RDONLY, 0, &fd, err);
    size_t got = 0;
    if (rc == SOP_OK) {
        rc = sop__os_pread_full(SOP__SITE_REPL_STATE, fd, b, sizeof(b), 0, &got, path, err);
        sop__os_close(SOP__SITE_REPL_STATE, fd, path, NULL);
    }
    sop__os_mirror_bypass(-1);
    SOP__TRY(rc);
    size_t n = got >= STATE_FIXED ? (size_t)b[216] | (size_t)b[217] << 8 : 0;
    if (got < STATE_FIXED + 4 || memcmp(b, STATE_MAGIC, 8) != 0 || n >= PATH_MAX_ ||
        got != STATE_FIXED + n + 4 || sop__le_get32(b + 12) != got ||
        sop__le_get32(b + STATE_FIXED + n) != sop__crc32c(0, b, STATE_FIXED + n))
        return sop__err_set(err, SOP_CORRUPT, 0, "%s: not a valid replication state file", path);
    if (sop__le_get32(b + 8) != STATE_VERSION || b[40] > 1 || b[41] > 3)
        return sop__err_set(err, SOP_CORRUPT, 0, "%s: unsupported replication state", path);
    memset(st, 0, sizeof(*st));
    memcpy(st->id, b + 16, 16);
    st->gen = sop__le_get64(b + 32);
    st->primary = b[40];
    st->stale = b[41];
    st->changed_ms = (int64_t)sop__le_get64(b + 48);
    memcpy(st->reason, b + 56, REASON_MAX - 1);
    memcpy(st->passive, b + STATE_FIXED, n);
    return SOP_OK;
}

static sop_rc state_write(const char *side, const rstate *st, sop_err *err)
{
    uint8_t b[STATE_FIXED + PATH_MAX_ + 4];
    size_t n = state_encode(st, b);
    sop__os_mirror_bypass(1);
    sop_rc rc = sop__os_write_durably(SOP__SITE_REPL_STATE, side, STATE_NAME, b, n, err);
    sop__os_mirror_bypass(-1);
    return rc;
}

/* The valid state with the highest generation among the sides (`seen`:
 * which sides gave one). */
static sop_rc state_best(const sop__repl *r, rstate *best, unsigned *seen, sop_err *err)
{
    *seen = 0;
    sop_err first = {0};
    for (int s = 0; s < 2; s++) {
        rstate st;
        sop_err e = {0};
        if (state_read(r->side[s], &st, &e) != SOP_OK) {
            if (first.code == SOP_OK)
                first = e;
            continue;
        }
        if (*seen == 0 || st.gen > best->gen)
            *best = st;
        *seen |= 1u << s;
    }
    if (*seen == 0) {
        if (err)
            *err = first;
        return first.code;
    }
    return SOP_OK;
}

/* ---- the lock file: barrier, state lock, generation hint ---- */

static sop_rc byte_lock(sop__repl *r, uint64_t byte, bool exclusive, sop_err *err)
{
    return sop__os_lock(SOP__SITE_REPL_LOCK, r->lock_fd,
                        exclusive ? SOP__OS_LOCK_EXCLUSIVE : SOP__OS_LOCK_SHARED, byte, 1, true,
                        r->lockpath, err);
}

static void byte_unlock(sop__repl *r, uint64_t byte)
{
    sop__os_unlock(SOP__SITE_REPL_LOCK, r->lock_fd, byte, 1, r->lockpath, NULL);
}

static uint64_t hint_read(sop__repl *r)
{
    uint8_t b[32];
    size_t got = 0;
    if (sop__os_pread_full(SOP__SITE_REPL_LOCK, r->lock_fd, b, sizeof(b), HINT_OFF, &got,
                           r->lockpath, NULL) != SOP_OK ||
        got < sizeof(b) || sop__le_get32(b) != HINT_MAGIC ||
        sop__le_get32(b + 28) != sop__crc32c(0, b, 28))
        return 0;
    return sop__le_get64(b + 8);
}

static void hint_write(sop__repl *r, uint64_t gen)
{
    uint8_t b[32];
    memset(b, 0, sizeof(b));
    sop__le_put32(b, HINT_MAGIC);
    sop__le_put64(b + 8, gen);
    sop__le_put32(b + 28, sop__crc32c(0, b, 28));
    /* not synced: only meaningful while the machine is up */
    (void)sop__os_pwrite_all(SOP__SITE_REPL_LOCK, r->lock_fd, b, sizeof(b), HINT_OFF, r->lockpath,
                             NULL);
}

static void view_from(const rstate *st, sop__os_mirror_view *v)
{
    sop__os_mirror_view old = *v;
    v->gen = st->gen;
    v->primary = st->primary;
    for (int s = 0; s < 2; s++) {
        v->live[s] = !(st->stale & (1u << s));
        /* a side that came back (or may have, if generations were
         * skipped) is reopened: descriptors from before may be stale */
        if (v->live[s] && (!old.live[s] || st->gen > old.gen + 1))
            v->since[s] = st->gen;
    }
}

/* The view of r's state, with the sides pending staleness left out. */
static void view_update(sop__repl *r, sop__os_mirror_view *v)
{
    view_from(&r->st, v);
    pthread_mutex_lock(&r->mu);
    for (int s = 0; s < 2; s++)
        if (r->pending & (1u << s))
            v->live[s] = false;
    pthread_mutex_unlock(&r->mu);
}

/* Under the state lock: the newest durable state, adopted. */
static sop_rc reload(sop__repl *r, sop_err *err)
{
    rstate best;
    unsigned seen;
    SOP__TRY(state_best(r, &best, &seen, err));
    if (memcmp(best.id, r->st.id, 16) != 0)
        return sop__err_set(err, SOP_INVALID, 0,
                            "replication: %s or %s holds the state of another database", r->side[0],
                            r->side[1]);
    if (best.gen > r->st.gen)
        r->st = best;
    return SOP_OK;
}

/* Writes r->st to every live side (must succeed) and, best effort, to the
 * stale ones; then the hint. */
static sop_rc publish(sop__repl *r, sop_err *err)
{
    for (int s = 0; s < 2; s++) {
        sop_err e = {0};
        sop_rc rc = state_write(r->side[s], &r->st, &e);
        if (rc != SOP_OK && !(r->st.stale & (1u << s))) {
            if (err)
                *err = e;
            sop__err_prefix(err, "replication: cannot record the new state (generation %llu)",
                            (unsigned long long)r->st.gen);
            return rc;
        }
        if (!(r->st.stale & (1u << s)))
            SOP__CRASH_POINT(REPL_FAILED_OVER);
    }
    hint_write(r, r->st.gen);
    return SOP_OK;
}

/* ---- the mirror's policy ---- */

/* Records the pending stale sides (under the state lock). */
static sop_rc record_pending(sop__repl *r, sop_err *err)
{
    SOP__TRY(byte_lock(r, STATE_BYTE, true, err));
    sop_rc rc = reload(r, err);
    pthread_mutex_lock(&r->mu);
    unsigned pending = r->pending & ~r->st.stale;
    pthread_mutex_unlock(&r->mu);
    if (rc == SOP_OK && pending) {
        rstate prev = r->st;
        r->st.gen++;
        r->st.stale |= pending;
        r->st.changed_ms = now_ms();
        memcpy(r->st.reason, r->pending_reason, sizeof(r->st.reason));
        rc = publish(r, err);
        if (rc != SOP_OK)
            r->st = prev;
    }
    if (rc == SOP_OK) {
        pthread_mutex_lock(&r->mu);
        r->pending = 0;
        pthread_mutex_unlock(&r->mu);
    }
    byte_unlock(r, STATE_BYTE);
    return rc;
}

static void pol_leave(void *ctx);

static sop_rc pol_enter(void *ctx, uint64_t *gen, sop_err *err)
{
    sop__repl *r = ctx;
    pthread_mutex_lock(&r->mu);
    if (r->inside == 0) {
        sop_rc rc = byte_lock(r, BARRIER_BYTE, false, err);
        if (rc != SOP_OK) {
            pthread_mutex_unlock(&r->mu);
            return rc;
        }
    }
    r->inside++;
    bool pending = r->pending != 0;
    pthread_mutex_unlock(&r->mu);
    if (pending) {
        sop_rc rc = record_pending(r, err);
        if (rc != SOP_OK) {
            pol_leave(r);
            sop__err_prefix(err,
                            "a failed side of %s is not yet recorded as stale, so nothing "
                            "is written",
                            r->side[0]);
            return rc;
        }
    }
    *gen = hint_read(r);
    return SOP_OK;
}

static void pol_leave(void *ctx)
{
    sop__repl *r = ctx;
    pthread_mutex_lock(&r->mu);
    if (--r->inside == 0)
        byte_unlock(r, BARRIER_BYTE);
    pthread_mutex_unlock(&r->mu);
}

static sop_rc pol_refresh(void *ctx, sop__os_mirror_view *v, sop_err *err)
{
    sop__repl *r = ctx;
    SOP__TRY(byte_lock(r, STATE_BYTE, true, err));
    sop_rc rc = reload(r, err);
    if (rc == SOP_OK && hint_read(r) != r->st.gen)
        hint_write(r, r->st.gen);
    byte_unlock(r, STATE_BYTE);
    if (rc == SOP_OK)
        view_update(r, v);
    return rc;
}

static sop_rc pol_failed(void *ctx, int side, int e, const char *what, sop__os_mirror_view *v,
                         sop_err *err)
{
    sop__repl *r = ctx;
    SOP__TRY(byte_lock(r, STATE_BYTE, true, err));
    uint64_t hint = hint_read(r);
    sop_rc rc = reload(r, err);
    if (rc == SOP_OK) {
        view_update(r, v);
        if (!v->live[side]) {
            rc = SOP_OK; /* someone recorded it already */
        } else if (side == r->st.primary && (!v->live[1 - side] || hint > r->st.gen)) {
            const char *why = !v->live[1 - side] ? "is stale" : "may be stale";
            rc = sop__err_set(err, SOP_IO, e,
                              "failover refused: the passive side %s %s (%s%s%s); the active "
                              "side %s is unchanged",
                              r->side[1 - side], why,
                              hint > r->st.gen ? "a newer replication state than it holds was "
                                                 "announced"
                                               : "",
                              hint > r->st.gen ? "" : "since: ",
                              hint > r->st.gen ? "" : r->st.reason, r->side[side]);
        } else {
            rstate prev = r->st;
            r->st.gen++;
            r->st.stale |= 1u << side;
            if (side == r->st.primary)
                r->st.primary = 1 - side;
            r->st.changed_ms = now_ms();
            snprintf(r->st.reason, sizeof(r->st.reason), "%s: %s", what, strerror(e));
            rc = publish(r, err);
            if (rc != SOP_OK) {
                r->st = prev;
                if (side != r->st.primary) {
                    /* not written from now on; recorded before any
                     * further write (pol_enter) */
                    pthread_mutex_lock(&r->mu);
                    r->pending |= 1u << side;
                    snprintf(r->pending_reason, sizeof(r->pending_reason), "%s: %s", what,
                             strerror(e));
                    pthread_mutex_unlock(&r->mu);
                }
            }
            view_update(r, v);
        }
    }
    byte_unlock(r, STATE_BYTE);
    return rc;
}

/* ---- attach / setup ---- */

sop_rc sop__repl_present(const char *dir, sop_err *err)
{
    char path[PATH_MAX_ + 32];
    snprintf(path, sizeof(path), "%s/" STATE_NAME, dir);
    struct stat st;
    sop__os_mirror_bypass(1);
    sop_rc rc = sop__os_stat(SOP__SITE_REPL_STATE, path, &st, err);
    sop__os_mirror_bypass(-1);
    return rc;
}

static sop_rc abs_path(const char *p, char out[PATH_MAX_], sop_err *err)
{
    char *rp = realpath(p, NULL);
    if (rp == NULL)
        return sop__err_set(err, errno == ENOENT ? SOP_NOTFOUND : SOP_IO, errno,
                            "replication: cannot resolve passive path %s", p);
    size_t n = strlen(rp);
    if (n >= PATH_MAX_ - 256) {
        free(rp);
        return sop__err_set(err, SOP_LIMIT, 0, "replication: passive path %s is too long", p);
    }
    memcpy(out, rp, n + 1);
    free(rp);
    return SOP_OK;
}

sop_rc sop__repl_setup(const char *dir, const char *passive, const uint8_t id[16], bool fresh,
                       sop_err *err)
{
    rstate cur;
    sop_rc rc = state_read(dir, &cur, err);
    if (rc != SOP_NOTFOUND && rc != SOP_OK)
        return rc;
    struct stat sb;
    if (sop__os_stat(SOP__SITE_REPL_STATE, passive, &sb, NULL) == SOP_NOTFOUND)
        SOP__TRY(sop__os_mkdir(SOP__SITE_REPL_STATE, passive, 0700, err));
    char abs[PATH_MAX_], absdir[PATH_MAX_];
    SOP__TRY(abs_path(passive, abs, err));
    SOP__TRY(abs_path(dir, absdir, err));
    size_t la = strlen(abs), ld = strlen(absdir);
    if (strcmp(abs, absdir) == 0 || (la > ld && strncmp(abs, absdir, ld) == 0 && abs[ld] == '/') ||
        (ld > la && strncmp(abs, absdir, la) == 0 && absdir[la] == '/'))
        return sop__err_set(err, SOP_INVALID, 0,
                            "replication: the passive path %s and the database folder %s must be "
                            "separate folders (neither inside the other)",
                            passive, dir);
    if (rc == SOP_OK) {
        if (strcmp(cur.passive, abs) != 0)
            return sop__err_set(err, SOP_INVALID, 0,
                                "%s is replicated to %s, not to %s (the passive path is fixed "
                                "when replication is set up)",
                                dir, cur.passive, abs);
        return SOP_OK;
    }
    rstate other;
    if (state_read(passive, &other, NULL) == SOP_OK && memcmp(other.id, id, 16) != 0)
        return sop__err_set(err, SOP_INVALID, 0,
                            "replication: %s is the passive side of another database", passive);
    rstate st;
    memset(&st, 0, sizeof(st));
    memcpy(st.id, id, 16);
    st.gen = 1;
    st.primary = 0;
    st.stale = fresh ? 0u : 2u;
    st.changed_ms = now_ms();
    if (!fresh)
        snprintf(st.reason, sizeof(st.reason), "passive side added: not yet reinstated");
    memcpy(st.passive, abs, strlen(abs) + 1);
    /* the passive side first: a database folder that names a passive side
     * always has one that knows it */
    rc = state_write(passive, &st, err);
    if (rc != SOP_OK && fresh)
        return rc;
    return state_write(dir, &st, err);
}

static sop__repl *find_attached(const char *dir)
{
    for (sop__repl *r = list; r; r = r->next)
        if (strcmp(r->side[0], dir) == 0)
            return r;
    return NULL;
}

static void repl_free(sop__repl *r)
{
    if (r->lock_fd >= 0)
        sop__os_close(SOP__SITE_REPL_LOCK, r->lock_fd, r->lockpath, NULL);
    pthread_mutex_destroy(&r->mu);
    sop__free(r);
}

sop_rc sop__repl_attach(const char *dir, const char *passive, sop__repl **out, sop_err *err)
{
    if (strlen(dir) >= PATH_MAX_ - 256)
        return sop__err_set(err, SOP_LIMIT, 0, "database path too long");
    pthread_mutex_lock(&list_mu);
    sop__repl *r = find_attached(dir);
    if (r) {
        r->refs++;
        pthread_mutex_unlock(&list_mu);
        *out = r;
        return SOP_OK;
    }
    r = sop__calloc(1, sizeof(*r));
    if (r == NULL) {
        pthread_mutex_unlock(&list_mu);
        return sop__err_set(err, SOP_NOMEM, 0, "replication: no memory");
    }
    r->lock_fd = -1;
    r->refs = 1;
    pthread_mutex_init(&r->mu, NULL);
    memcpy(r->side[0], dir, strlen(dir) + 1);
    snprintf(r->lockpath, sizeof(r->lockpath), "%s/lock", dir);
    sop_rc rc = SOP_OK;
    rstate s0;
    sop_err e0 = {0};
    sop_rc rc0 = state_read(dir, &s0, &e0);
    char given[PATH_MAX_] = "";
    if (passive && passive[0])
        rc = abs_path(passive, given, err);
    if (rc == SOP_OK && rc0 == SOP_OK) {
        if (given[0] && strcmp(given, s0.passive) != 0)
            rc = sop__err_set(err, SOP_INVALID, 0,
                              "%s is replicated to %s, not to %s (the passive path is fixed "
                              "when replication is set up)",
                              dir, s0.passive, given);
        memcpy(r->side[1], s0.passive, strlen(s0.passive) + 1);
    } else if (rc == SOP_OK && given[0]) {
        memcpy(r->side[1], given, strlen(given) + 1); /* side 0's state is unreadable */
    } else if (rc == SOP_OK) {
        if (err)
            *err = e0;
        rc = rc0;
    }
    unsigned seen = 0;
    if (rc == SOP_OK)
        rc = state_best(r, &r->st, &seen, err);
    for (int s = 0; rc == SOP_OK && s < 2; s++) {
        rstate st;
        if ((seen & (1u << s)) && state_read(r->side[s], &st, NULL) == SOP_OK &&
            memcmp(st.id, r->st.id, 16) != 0)
            rc = sop__err_set(err, SOP_INVALID, 0,
                              "replication: %s and %s belong to different databases", r->side[0],
                              r->side[1]);
    }
    if (rc == SOP_OK)
        rc = sop__os_open(SOP__SITE_REPL_LOCK, r->lockpath, O_RDWR | O_CREAT, 0600, &r->lock_fd,
                          err);
    if (rc == SOP_OK) {
        /* a live side that missed the last state write (a crash between
         * the two) gets it now; one that cannot is marked stale */
        rc = byte_lock(r, STATE_BYTE, true, err);
        if (rc == SOP_OK) {
            rc = reload(r, err);
            for (int s = 0; rc == SOP_OK && s < 2; s++) {
                rstate st;
                if ((r->st.stale & (1u << s)) ||
                    (state_read(r->side[s], &st, NULL) == SOP_OK && st.gen == r->st.gen))
                    continue;
                if (state_write(r->side[s], &r->st, NULL) == SOP_OK)
                    continue;
                int o = 1 - s;
                if (s == r->st.primary && ((r->st.stale & (1u << o)) || !(seen & (1u << o)) ||
                                           hint_read(r) != r->st.gen)) {
                    /* the other side may have missed a newer state that
                     * only this one holds: only an operator can decide */
                    rc = sop__err_set(err, SOP_IO, 0,
                                      "replication: the active side %s cannot be used (its state "
                                      "cannot be read or written) and %s cannot be shown to be "
                                      "current: failover refused",
                                      r->side[s], r->side[o]);
                    break;
                }
                r->st.gen++;
                r->st.stale |= 1u << s;
                if (s == r->st.primary)
                    r->st.primary = o;
                r->st.changed_ms = now_ms();
                snprintf(r->st.reason, sizeof(r->st.reason),
                         "%s: its replication state could not be written at open", r->side[s]);
                rc = publish(r, err);
            }
            if (rc == SOP_OK && hint_read(r) != r->st.gen)
                hint_write(r, r->st.gen);
            byte_unlock(r, STATE_BYTE);
        }
    }
    if (rc == SOP_OK) {
        sop__os_mirror_policy pol = {r, pol_enter, pol_leave, pol_refresh, pol_failed};
        sop__os_mirror_view v;
        memset(&v, 0, sizeof(v));
        view_from(&r->st, &v);
        rc = sop__os_mirror_add(r->side[0], r->side[1], skip_names, &pol, &v, &r->mirror, err);
    }
    if (rc != SOP_OK) {
        pthread_mutex_unlock(&list_mu);
        repl_free(r);
        return rc;
    }
    r->next = list;
    list = r;
    pthread_mutex_unlock(&list_mu);
    *out = r;
    return SOP_OK;
}

void sop__repl_detach(sop__repl *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&list_mu);
    if (--r->refs > 0) {
        pthread_mutex_unlock(&list_mu);
        return;
    }
    for (sop__repl **pp = &list; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    pthread_mutex_unlock(&list_mu);
    sop__os_mirror_release(r->mirror);
    repl_free(r);
}

void sop__repl_id(const sop__repl *r, uint8_t id[16])
{
    memcpy(id, r->st.id, 16);
}

sop_rc sop__repl_check(sop__repl *r, sop_err *err)
{
    return sop__os_mirror_check(r->mirror, err);
}

/* ---- switch-over ---- */

static sop_rc do_switch(void *ctx, sop__os_mirror_view *v, sop_err *err)
{
    sop__repl *r = ctx;
    SOP__TRY(byte_lock(r, STATE_BYTE, true, err));
    sop_rc rc = reload(r, err);
    if (rc == SOP_OK) {
        int other = 1 - r->st.primary;
        if (r->st.stale & (1u << other)) {
            rc = sop__err_set(err, SOP_INVALID, 0,
                              "failover refused: %s is stale (%s); reinstate it first",
                              r->side[other], r->st.reason);
        } else {
            rstate prev = r->st;
            r->st.gen++;
            r->st.primary = other;
            r->st.changed_ms = now_ms();
            rc = publish(r, err);
            if (rc != SOP_OK)
                r->st = prev;
        }
        view_update(r, v);
    }
    byte_unlock(r, STATE_BYTE);
    return rc;
}

sop_rc sop__repl_switch(sop__repl *r, sop_err *err)
{
    return sop__os_mirror_exclusive(r->mirror, do_switch, r, err);
}

/* ---- reinstate ---- */

typedef struct copy_ctx {
    sop__repl *r;
    void (*progress)(void *ctx, uint64_t bytes, uint64_t files);
    void *pctx;
    uint64_t bytes, files;
    uint8_t *buf;
    bool copied;
} copy_ctx;

#define COPY_CHUNK (1u << 20)

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* Copies one file, leaving holes where the source has zeros. */
static sop_rc copy_file(copy_ctx *c, const char *from, const char *to, sop_err *err)
{
    int in, out;
    SOP__TRY(sop__os_open(SOP__SITE_REPL_COPY, from, O_RDONLY, 0, &in, err));
    sop_rc rc =
        sop__os_open(SOP__SITE_REPL_COPY, to, O_WRONLY | O_CREAT | O_TRUNC, 0600, &out, err);
    if (rc != SOP_OK) {
        sop__os_close(SOP__SITE_REPL_COPY, in, from, NULL);
        return rc;
    }
    uint64_t off = 0;
    for (;;) {
        size_t got = 0;
        rc = sop__os_pread_full(SOP__SITE_REPL_COPY, in, c->buf, COPY_CHUNK, off, &got, from, err);
        if (rc != SOP_OK || got == 0)
            break;
        if (!all_zero(c->buf, got))
            rc = sop__os_pwrite_all(SOP__SITE_REPL_COPY, out, c->buf, got, off, to, err);
        if (rc != SOP_OK)
            break;
        off += got;
        c->bytes += got;
        if (got < COPY_CHUNK)
            break;
    }
    if (rc == SOP_OK)
        rc = sop__os_ftruncate(SOP__SITE_REPL_COPY, out, off, to, err);
    sop_rc rc2 = sop__os_close(SOP__SITE_REPL_COPY, out, to, err);
    if (rc == SOP_OK)
        rc = rc2;
    sop__os_close(SOP__SITE_REPL_COPY, in, from, NULL);
    c->files++;
    if (c->progress && rc == SOP_OK)
        c->progress(c->pctx, c->bytes, c->files);
    return rc;
}

static bool skipped_top(const char *rel)
{
    for (int i = 0; skip_names[i]; i++)
        if (strcmp(rel, skip_names[i]) == 0)
            return true;
    return false;
}

/* Removes everything under path (a file or a folder). */
static sop_rc remove_tree(const char *path, sop_err *err)
{
    struct stat st;
    sop_rc rc = sop__os_stat(SOP__SITE_REPL_COPY, path, &st, err);
    if (rc == SOP_NOTFOUND)
        return SOP_OK;
    SOP__TRY(rc);
    if (!S_ISDIR(st.st_mode))
        return sop__os_unlink(SOP__SITE_REPL_COPY, path, err);
    sop__os_dir d = {0};
    SOP__TRY(sop__os_dir_open(SOP__SITE_REPL_COPY, path, &d, err));
    const char *name;
    while ((rc = sop__os_dir_next(&d, &name, err)) == SOP_OK) {
        char sub[PATH_MAX_];
        if (snprintf(sub, sizeof(sub), "%s/%s", path, name) >= (int)sizeof(sub)) {
            rc = sop__err_set(err, SOP_LIMIT, 0, "path under %s too long", path);
            break;
        }
        if ((rc = remove_tree(sub, err)) != SOP_OK)
            break;
    }
    sop__os_dir_close(&d);
    if (rc != SOP_NOTFOUND)
        return rc;
    return sop__os_rmdir(SOP__SITE_REPL_COPY, path, err);
}

/* Makes folder `to` a copy of folder `from` (top: skip the unmirrored). */
static sop_rc copy_tree(copy_ctx *c, const char *from, const char *to, bool top, sop_err *err)
{
    sop_rc rc = sop__os_mkdir(SOP__SITE_REPL_COPY, to, 0700, err);
    if (rc != SOP_OK && rc != SOP_EXISTS)
        return rc;
    /* what the target has that the source does not goes first */
    sop__os_dir d = {0};
    SOP__TRY(sop__os_dir_open(SOP__SITE_REPL_COPY, to, &d, err));
    const char *name;
    char a[PATH_MAX_], b[PATH_MAX_];
    while ((rc = sop__os_dir_next(&d, &name, err)) == SOP_OK) {
        if (top && skipped_top(name))
            continue;
        struct stat st;
        if (snprintf(a, sizeof(a), "%s/%s", from, name) >= (int)sizeof(a) ||
            snprintf(b, sizeof(b), "%s/%s", to, name) >= (int)sizeof(b)) {
            rc = sop__err_set(err, SOP_LIMIT, 0, "path under %s too long", to);
            break;
        }
        rc = sop__os_stat(SOP__SITE_REPL_COPY, a, &st, err);
        if (rc == SOP_NOTFOUND)
            rc = remove_tree(b, err);
        if (rc != SOP_OK)
            break;
    }
    sop__os_dir_close(&d);
    if (rc != SOP_NOTFOUND)
        return rc;
    SOP__TRY(sop__os_dir_open(SOP__SITE_REPL_COPY, from, &d, err));
    while ((rc = sop__os_dir_next(&d, &name, err)) == SOP_OK) {
        if (top && skipped_top(name))
            continue;
        if (snprintf(a, sizeof(a), "%s/%s", from, name) >= (int)sizeof(a) ||
            snprintf(b, sizeof(b), "%s/%s", to, name) >= (int)sizeof(b)) {
            rc = sop__err_set(err, SOP_LIMIT, 0, "path under %s too long", from);
            break;
        }
        struct stat sa, sb;
        rc = sop__os_stat(SOP__SITE_REPL_COPY, a, &sa, err);
        if (rc == SOP_NOTFOUND) {
            rc = SOP_OK; /* removed meanwhile (by this side's own cleanup) */
            continue;
        }
        if (rc != SOP_OK)
            break;
        if (S_ISDIR(sa.st_mode)) {
            if (sop__os_stat(SOP__SITE_REPL_COPY, b, &sb, NULL) == SOP_OK && !S_ISDIR(sb.st_mode))
                rc = remove_tree(b, err);
            if (rc == SOP_OK)
                rc = copy_tree(c, a, b, false, err);
        } else if (S_ISREG(sa.st_mode)) {
            if (sop__os_stat(SOP__SITE_REPL_COPY, b, &sb, NULL) == SOP_OK && S_ISDIR(sb.st_mode))
                rc = remove_tree(b, err);
            if (rc == SOP_OK)
                rc = copy_file(c, a, b, err);
        }
        if (rc != SOP_OK)
            break;
    }
    sop__os_dir_close(&d);
    return rc == SOP_NOTFOUND ? SOP_OK : rc;
}

static sop_rc do_reinstate(void *ctx, sop__os_mirror_view *v, sop_err *err)
{
    copy_ctx *c = ctx;
    sop__repl *r = c->r;
    /* no mutating call of any process is in flight from here on */
    SOP__TRY(byte_lock(r, BARRIER_BYTE, true, err));
    sop_rc rc = byte_lock(r, STATE_BYTE, true, err);
    if (rc != SOP_OK) {
        byte_unlock(r, BARRIER_BYTE);
        return rc;
    }
    rc = reload(r, err);
    int target = -1;
    if (rc == SOP_OK) {
        view_update(r, v);
        for (int s = 0; s < 2; s++)
            if (r->st.stale & (1u << s))
                target = s;
    }
    sop__os_mirror_bypass(1);
    if (rc == SOP_OK && target >= 0) {
        const char *src = r->side[r->st.primary], *dst = r->side[target];
        rstate theirs;
        if (state_read(dst, &theirs, NULL) == SOP_OK && memcmp(theirs.id, r->st.id, 16) != 0)
            rc = sop__err_set(err, SOP_INVALID, 0,
                              "reinstate refused: %s holds another database's replica", dst);
        if (rc == SOP_OK)
            rc = copy_tree(c, src, dst, true, err);
        int fd = -1;
        if (rc == SOP_OK)
            rc = sop__os_open(SOP__SITE_REPL_COPY, dst, O_RDONLY | O_DIRECTORY, 0, &fd, err);
        if (rc == SOP_OK) {
            rc = sop__os_syncfs(SOP__SITE_REPL_COPY, fd, dst, err);
            sop__os_close(SOP__SITE_REPL_COPY, fd, dst, NULL);
        }
        if (rc == SOP_OK) {
            SOP__CRASH_POINT(REPL_COPIED);
            rstate prev = r->st;
            r->st.gen++;
            r->st.stale &= ~(1u << target);
            r->st.changed_ms = now_ms();
            r->st.reason[0] = '\0';
            rc = publish(r, err);
            if (rc != SOP_OK)
                r->st = prev;
            else
                c->copied = true;
        }
        if (rc != SOP_OK)
            sop__err_prefix(err, "reinstate of %s", dst);
    }
    sop__os_mirror_bypass(-1);
    if (rc == SOP_OK)
        view_update(r, v);
    byte_unlock(r, STATE_BYTE);
    byte_unlock(r, BARRIER_BYTE);
    return rc;
}

sop_rc sop__repl_reinstate(sop__repl *r,
                           void (*progress)(void *ctx, uint64_t bytes, uint64_t files), void *ctx,
                           bool *copied, sop_err *err)
{
    copy_ctx c = {r, progress, ctx, 0, 0, NULL, false};
    c.buf = sop__malloc(COPY_CHUNK);
    if (c.buf == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "reinstate: no memory");
    sop_rc rc = sop__os_mirror_exclusive(r->mirror, do_reinstate, &c, err);
    sop__free(c.buf);
    if (rc == SOP_OK && copied)
        *copied = c.copied;
    return rc;
}

static sop_rc info_of(void *ctx, sop__os_mirror_view *v, sop_err *err)
{
    (void)err;
    sop_replication_info *out = ((void **)ctx)[0];
    sop__repl *r = ((void **)ctx)[1];
    out->enabled = true;
    out->active = v->primary;
    out->paths[0] = r->side[0];
    out->paths[1] = r->side[1];
    out->stale[0] = !v->live[0];
    out->stale[1] = !v->live[1];
    out->generation = r->st.gen;
    out->changed_ms = r->st.changed_ms;
    snprintf(out->reason, sizeof(out->reason), "%s", r->st.reason);
    return SOP_OK;
}

void sop__repl_info(sop__repl *r, sop_replication_info *out)
{
    memset(out, 0, sizeof(*out));
    (void)sop__repl_check(r, NULL);
    void *ctx[2] = {out, r};
    (void)sop__os_mirror_exclusive(r->mirror, info_of, ctx, NULL);
}
