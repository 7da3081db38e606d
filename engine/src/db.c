/*
 * db.c - a database folder: its header, lock file, logs, checkpoints,
 * prepared transactions, recovery, and the redo applier that phase 2 and
 * recovery share (docs/commit.md, docs/recovery.md, docs/format.md).
 *
 * Folder layout:
 *   <db>/sop.db            header: format version, hash modulus (one sector)
 *   <db>/lock              byte 0: the commit lock; sector 1: the commit
 *                          counter and the "being applied" marker; sectors
 *                          16/17: the checkpoint mark, ping-pong
 *   <db>/txlog/<id>.log    one log per open database handle
 *   <db>/txlog/<txid>.prep prepared transactions
 *   <db>/stores/<name>/    stores (repo.h)
 *
 * Invariants:
 *  1. Every commit (phase 1 to phase 2) and every recovery and checkpoint
 *     holds the commit lock (an exclusive OFD lock on byte 0 of <db>/lock).
 *  2. A checkpoint syncs the whole file system holding the database while
 *     holding the commit lock, then durably records "every commit up to
 *     sequence S is on disk" in the checkpoint mark. Records with seq <= S
 *     are never redone.
 *  3. While a commit is being applied, the lock file says so (the pending
 *     marker, its owner's log and seq). A process that takes the commit lock
 *     and finds the marker set by a dead owner redoes that commit first, so
 *     no commit is ever validated against a half-applied predecessor.
 *  4. Full recovery (no other process has the database open) redoes every
 *     record with seq > S of every log, in seq order, then checkpoints and
 *     removes the logs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "cache.h"
#include "crc.h"
#include "err.h"
#include "fault.h"
#include "mem.h"
#include "os.h"
#include "replication.h"
#include "txn.h"
#include "uuid.h"

#define HEADER_MAGIC   "SOPDB001"
#define HEADER_SIZE    512u
#define FORMAT_VERSION 1u
#define STATE_OFF      4096u
#define STATE_MAGIC    0x54415453u /* "STAT" */
#define CKPT_OFF       8192u
#define CKPT_MAGIC     0x54504b43u /* "CKPT" */

int64_t sop__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static sop_rc path_join(char *out, sop_err *err, const char *a, const char *b)
{
    int n = snprintf(out, SOP__PATH_MAX, "%s/%s", a, b);
    if (n < 0 || n >= SOP__PATH_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "path %s/%s is too long", a, b);
    return SOP_OK;
}

void sop_db_options_init(sop_db_options *o)
{
    if (o == NULL)
        return;
    memset(o, 0, sizeof(*o));
    o->registry_hash_mod = SOP__REG_HASH_MOD_DEFAULT;
    o->lock_timeout_ms = 30000;
    o->checkpoint_bytes = 16u << 20;
    o->lock_ttl_ms = 15000;
    o->redis.host = "127.0.0.1";
    o->redis.port = 6379;
    o->redis.timeout_ms = 2000;
    o->l1_cache_bytes = 64u << 20;
}

/* ---- the header ------------------------------------------------------ */

#define HEADER_FLAG_EC 1u /* byte 40: the database has an "erasure" file */

static sop_rc read_header(const char *dir, uint32_t *hash_mod, uint8_t id[16], uint8_t *flags,
                          sop_err *err)
{
    char path[SOP__PATH_MAX];
    SOP__TRY(path_join(path, err, dir, "sop.db"));
    int fd;
    sop_rc rc = sop__os_open(SOP__SITE_DB_HEADER, path, O_RDONLY, 0, &fd, err);
    if (rc == SOP_NOTFOUND)
        return sop__err_set(err, SOP_NOTFOUND, 0, "no database at %s (create one with sop init)",
                            dir);
    SOP__TRY(rc);
    uint8_t h[HEADER_SIZE];
    size_t got = 0;
    rc = sop__os_pread_full(SOP__SITE_DB_HEADER, fd, h, sizeof(h), 0, &got, path, err);
    sop__os_close(SOP__SITE_DB_HEADER, fd, path, NULL);
    SOP__TRY(rc);
    if (got != sizeof(h) || memcmp(h, HEADER_MAGIC, 8) != 0)
        return sop__err_set(err, SOP_CORRUPT, 0, "%s is not a SOP database header", path);
    if (sop__le_get32(h + HEADER_SIZE - 4) != sop__crc32c(0, h, HEADER_SIZE - 4))
        return sop__err_set(err, SOP_CORRUPT, 0, "%s: bad checksum", path);
    if (sop__le_get32(h + 8) != FORMAT_VERSION)
        return sop__err_set(err, SOP_CORRUPT, 0, "%s: unsupported format version %u", path,
                            sop__le_get32(h + 8));
    *hash_mod = sop__le_get32(h + 12);
    if (flags)
        *flags = h[40];
    if (id)
        memcpy(id, h + 16, 16);
    if (*hash_mod < SOP__REG_HASH_MOD_MIN || *hash_mod > SOP__REG_HASH_MOD_MAX)
        return sop__err_set(err, SOP_CORRUPT, 0, "%s: hash modulus %u out of range", path,
                            *hash_mod);
    return SOP_OK;
}

static sop_rc mkdir_p1(sop__site site, const char *path, sop_err *err)
{
    sop_rc rc = sop__os_mkdir(site, path, 0700, err);
    return rc == SOP_EXISTS ? SOP_OK : rc;
}

/* ---- the erasure-coding configuration (file "erasure") ------------------ */

/* The recorded entries (none: *n = 0 and *out NULL). */
static sop_rc ec_read(const char *dir, sop__ecconf **out, uint32_t *n, sop_err *err)
{
    *out = NULL;
    *n = 0;
    char path[SOP__PATH_MAX];
    SOP__TRY(path_join(path, err, dir, "erasure"));
    int fd;
    sop_rc rc = sop__os_open(SOP__SITE_EC_CONFIG, path, O_RDONLY, 0, &fd, err);
    if (rc == SOP_NOTFOUND)
        return SOP_OK;
    SOP__TRY(rc);
    struct stat st;
    uint8_t *buf = NULL;
    rc = sop__os_fstat(SOP__SITE_EC_CONFIG, fd, &st, path, err);
    if (rc == SOP_OK && (st.st_size < 0 || st.st_size > (1 << 24)))
        rc = sop__err_set(err, SOP_CORRUPT, 0, "%s: %lld bytes", path, (long long)st.st_size);
    if (rc == SOP_OK && (buf = sop__malloc((size_t)st.st_size + 1)) == NULL)
        rc = sop__err_set(err, SOP_NOMEM, 0, "no memory to read %s", path);
    if (rc == SOP_OK)
        rc = sop__os_pread_full(SOP__SITE_EC_CONFIG, fd, buf, (size_t)st.st_size, 0, NULL, path,
                                err);
    sop__os_close(SOP__SITE_EC_CONFIG, fd, path, NULL);
    if (rc == SOP_OK)
        rc = sop__ecconf_decode(buf, (size_t)st.st_size, path, out, n, err);
    sop__free(buf);
    return rc;
}

/* Every drive folder gets its marker (a folder already marked for this
 * database and shard is fine: sop_db_init may be re-run). */
static sop_rc ec_mark_drives(const sop__ecconf *ec, uint32_t n, const uint8_t id[16], sop_err *err)
{
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t j = 0; j < ec[i].k + ec[i].p; j++) {
            sop_err e = {0};
            sop_rc rc = sop__ec_marker_check(&ec[i], j, id, &e);
            if (rc == SOP_OK)
                continue;
            if (rc == SOP_INVALID) {
                if (err)
                    *err = e;
                return rc;
            }
            SOP__TRY(sop__ec_marker_write(&ec[i], j, id, err));
        }
    }
    return SOP_OK;
}

/* sop_db_init's folders: txlog/, stores/, and with erasure coding the
 * configuration file and the drive markers - all before the header, so a
 * header never names a database that lacks them. */
static sop_rc init_folders(const char *dir, const sop__ecconf *ec, uint32_t n, const uint8_t id[16],
                           sop_err *err)
{
    char sub[SOP__PATH_MAX];
    /* the drives first: a folder that cannot be used (or belongs to another
     * database) fails the init before the database folder is touched */
    SOP__TRY(ec_mark_drives(ec, n, id, err));
    SOP__TRY(mkdir_p1(SOP__SITE_DB_HEADER, dir, err));
    SOP__TRY(path_join(sub, err, dir, "txlog"));
    SOP__TRY(mkdir_p1(SOP__SITE_DB_HEADER, sub, err));
    SOP__TRY(path_join(sub, err, dir, "stores"));
    SOP__TRY(mkdir_p1(SOP__SITE_DB_HEADER, sub, err));
    if (n == 0)
        return SOP_OK;
    uint8_t *buf;
    size_t len;
    SOP__TRY(sop__ecconf_encode(ec, n, &buf, &len, err));
    sop_rc rc = sop__os_write_durably(SOP__SITE_EC_CONFIG, dir, "erasure", buf, len, err);
    sop__free(buf);
    return rc;
}

/* The entries given to sop_db_init or sop_db_open against the recorded
 * ones: the same, or SOP_INVALID. On success, *out holds the recorded
 * entries with the given repair flags. */
static sop_rc ec_resolve(const char *dir, const sop_db_options *o, sop__ecconf **out,
                         uint32_t *nout, sop_err *err)
{
    sop__ecconf *rec, *given = NULL;
    uint32_t nrec;
    SOP__TRY(ec_read(dir, &rec, &nrec, err));
    sop_rc rc = SOP_OK;
    if (o->ec_count > 0) {
        rc = sop__ecconf_from_public(o->ec, o->ec_count, &given, err);
        if (rc == SOP_OK && !sop__ecconf_same(rec, nrec, given, o->ec_count, err)) {
            char msg[SOP_ERR_MSG_MAX];
            snprintf(msg, sizeof(msg), "%s", err ? err->msg : "");
            rc = sop__err_set(err, SOP_INVALID, 0, "%s: %s", dir, msg);
        }
        for (uint32_t i = 0; rc == SOP_OK && i < nrec; i++)
            for (uint32_t j = 0; j < o->ec_count; j++)
                if (strcmp(rec[i].store, given[j].store) == 0)
                    rec[i].repair = given[j].repair;
    }
    sop__ecconf_free(given, o->ec_count);
    if (rc != SOP_OK) {
        sop__ecconf_free(rec, nrec);
        return rc;
    }
    *out = rec;
    *nout = nrec;
    return SOP_OK;
}

static sop_rc ec_init_existing(const char *dir, const sop_db_options *o, const uint8_t id[16],
                               sop_err *err)
{
    sop__ecconf *ec;
    uint32_t n;
    SOP__TRY(ec_resolve(dir, o, &ec, &n, err));
    sop_rc rc = o->ec_count ? ec_mark_drives(ec, n, id, err) : SOP_OK;
    sop__ecconf_free(ec, n);
    return rc;
}

/* On open: a missing marker (a replaced, empty drive) is written again; a
 * drive that cannot be read or written is left for reads to work around;
 * a folder marked for another database or shard stops the open. */
static sop_rc ec_open_drives(sop_db *db, sop_err *err)
{
    for (uint32_t i = 0; i < db->ec_n; i++) {
        for (uint32_t j = 0; j < db->ec[i].k + db->ec[i].p; j++) {
            sop_err e = {0};
            sop_rc rc = sop__ec_marker_check(&db->ec[i], j, db->id, &e);
            if (rc == SOP_INVALID) {
                if (err)
                    *err = e;
                return rc;
            }
            /* only into a folder that exists: a missing one may be an
             * unmounted drive, whose mount point must stay empty */
            struct stat st;
            if ((rc == SOP_NOTFOUND || rc == SOP_CORRUPT) &&
                sop__os_stat(SOP__SITE_EC_MARKER, db->ec[i].paths[j], &st, NULL) == SOP_OK &&
                S_ISDIR(st.st_mode))
                (void)sop__ec_marker_write(&db->ec[i], j, db->id, NULL);
        }
    }
    return SOP_OK;
}

static sop_rc write_header(const char *dir, uint32_t mod, const uint8_t id[16], uint8_t flags,
                           sop_err *err);

sop_rc sop_db_init(const char *dir, const sop_db_options *opts, sop_err *err)
{
    sop_db_options o;
    sop_db_options_init(&o);
    if (opts)
        o = *opts;
    if (dir == NULL || dir[0] == '\0')
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_init: no folder given");
    uint32_t mod = o.registry_hash_mod ? o.registry_hash_mod : SOP__REG_HASH_MOD_DEFAULT;
    if (mod < SOP__REG_HASH_MOD_MIN || mod > SOP__REG_HASH_MOD_MAX)
        return sop__err_set(err, SOP_INVALID, 0, "registry hash modulus %u must be %u..%u", mod,
                            SOP__REG_HASH_MOD_MIN, SOP__REG_HASH_MOD_MAX);
    uint32_t existing;
    uint8_t id[16];
    sop_rc rc = read_header(dir, &existing, id, NULL, err);
    if (rc == SOP_OK) {
        if (existing != mod)
            return sop__err_set(err, SOP_EXISTS, 0,
                                "%s already holds a database with registry hash modulus %u; it "
                                "is fixed at creation (changing it would make data unreachable)",
                                dir, existing);
        SOP__TRY(ec_init_existing(dir, &o, id, err));
        /* a passive side added to an existing database starts stale:
         * sop_db_reinstate fills it */
        return o.passive_path && o.passive_path[0]
                   ? sop__repl_setup(dir, o.passive_path, id, false, err)
                   : SOP_OK;
    }
    if (rc != SOP_NOTFOUND)
        return rc;
    sop__ecconf *ec = NULL;
    SOP__TRY(sop__ecconf_from_public(o.ec, o.ec_count, &ec, err));
    sop__uuid_v4(id);
    sop__repl *repl = NULL;
    if (o.passive_path && o.passive_path[0]) {
        /* both sides know each other first; then everything else init
         * writes is mirrored */
        rc = mkdir_p1(SOP__SITE_DB_HEADER, dir, err);
        if (rc == SOP_OK)
            rc = sop__repl_setup(dir, o.passive_path, id, true, err);
        if (rc == SOP_OK)
            rc = sop__repl_attach(dir, o.passive_path, &repl, err);
        if (rc != SOP_OK) {
            sop__ecconf_free(ec, o.ec_count);
            return rc;
        }
    }
    rc = init_folders(dir, ec, o.ec_count, id, err);
    sop__ecconf_free(ec, o.ec_count);
    if (rc == SOP_OK)
        rc = write_header(dir, mod, id, o.ec_count ? HEADER_FLAG_EC : 0, err);
    sop__repl_detach(repl);
    return rc;
}

static sop_rc write_header(const char *dir, uint32_t mod, const uint8_t id[16], uint8_t flags,
                           sop_err *err)
{
    uint8_t h[HEADER_SIZE];
    memset(h, 0, sizeof(h));
    memcpy(h, HEADER_MAGIC, 8);
    sop__le_put32(h + 8, FORMAT_VERSION);
    sop__le_put32(h + 12, mod);
    memcpy(h + 16, id, 16);
    sop__le_put64(h + 32, (uint64_t)sop__now_ms());
    h[40] = flags;
    sop__le_put32(h + HEADER_SIZE - 4, sop__crc32c(0, h, HEADER_SIZE - 4));
    /* the folders first, then the header's name: a header never names a
     * database whose folders could vanish */
    SOP__TRY(sop__os_fsync_dir(SOP__SITE_DB_HEADER, dir, err));
    return sop__os_write_durably(SOP__SITE_DB_HEADER, dir, "sop.db", h, sizeof(h), err);
}

/* ---- the lock file ---------------------------------------------------- */

typedef struct lockstate {
    uint64_t seq;         /* last commit sequence number handed out */
    bool pending;         /* a commit is being applied */
    bool handoff;         /* ... and its owner left it for others to finish */
    uint8_t owner[16];    /* ... by the process owning this log */
    uint64_t pending_seq; /* ... with this sequence number */
    uint8_t applier[16];  /* ... being finished by this log's process (zero: the owner) */
} lockstate;

static sop_rc state_read(sop_db *db, lockstate *s, sop_err *err)
{
    uint8_t b[64];
    size_t got = 0;
    memset(s, 0, sizeof(*s));
    SOP__TRY(sop__os_pread_full(SOP__SITE_DB_LOCK, db->lock_fd, b, sizeof(b), STATE_OFF, &got,
                                db->lockpath, err));
    if (got < sizeof(b) || sop__le_get32(b) != STATE_MAGIC ||
        sop__le_get32(b + 60) != sop__crc32c(0, b, 60))
        return SOP_OK; /* never written, or lost with a crash: recovery sorts it out */
    s->seq = sop__le_get64(b + 8);
    s->pending = b[16] != 0;
    s->handoff = b[17] != 0;
    memcpy(s->owner, b + 20, 16);
    s->pending_seq = sop__le_get64(b + 36);
    memcpy(s->applier, b + 44, 16);
    return SOP_OK;
}

static sop_rc state_write(sop_db *db, const lockstate *s, sop_err *err)
{
    uint8_t b[64];
    memset(b, 0, sizeof(b));
    sop__le_put32(b, STATE_MAGIC);
    sop__le_put64(b + 8, s->seq);
    b[16] = s->pending ? 1 : 0;
    b[17] = s->handoff ? 1 : 0;
    memcpy(b + 20, s->owner, 16);
    sop__le_put64(b + 36, s->pending_seq);
    memcpy(b + 44, s->applier, 16);
    sop__le_put32(b + 60, sop__crc32c(0, b, 60));
    /* Not synced: the marker only matters while the machine is up; after a
     * machine crash, full recovery redoes everything past the checkpoint. */
    return sop__os_pwrite_all(SOP__SITE_DB_LOCK, db->lock_fd, b, sizeof(b), STATE_OFF, db->lockpath,
                              err);
}

/* The checkpoint mark: two 512-byte slots written alternately, each with a
 * generation and a checksum, so a torn write leaves the other intact. */
static sop_rc ckpt_read(sop_db *db, uint64_t *gen, uint64_t *ckpt_seq, sop_err *err)
{
    *gen = 0;
    *ckpt_seq = 0;
    for (int slot = 0; slot < 2; slot++) {
        uint8_t b[32];
        size_t got = 0;
        SOP__TRY(sop__os_pread_full(SOP__SITE_DB_LOCK, db->ckpt_fd, b, sizeof(b),
                                    CKPT_OFF + 512u * (unsigned)slot, &got, db->ckptpath, err));
        if (got < sizeof(b) || sop__le_get32(b) != CKPT_MAGIC ||
            sop__le_get32(b + 28) != sop__crc32c(0, b, 28))
            continue;
        uint64_t g = sop__le_get64(b + 8);
        if (g > *gen) {
            *gen = g;
            *ckpt_seq = sop__le_get64(b + 16);
        }
    }
    return SOP_OK;
}

/* Under the exclusive sector lock; the mark only moves forward. */
static sop_rc ckpt_write_locked(sop_db *db, uint64_t ckpt_seq, sop_err *err)
{
    uint64_t gen, old;
    SOP__TRY(ckpt_read(db, &gen, &old, err));
    if (old >= ckpt_seq)
        return SOP_OK;
    uint8_t b[32];
    memset(b, 0, sizeof(b));
    sop__le_put32(b, CKPT_MAGIC);
    sop__le_put64(b + 8, gen + 1);
    sop__le_put64(b + 16, ckpt_seq);
    sop__le_put32(b + 28, sop__crc32c(0, b, 28));
    SOP__TRY(sop__os_pwrite_all(SOP__SITE_DB_LOCK, db->ckpt_fd, b, sizeof(b),
                                CKPT_OFF + 512u * (unsigned)((gen + 1) % 2), db->ckptpath, err));
    return sop__os_fdatasync(SOP__SITE_DB_LOCK, db->ckpt_fd, db->ckptpath, err);
}

static sop_rc sector_lock(sop_db *db, bool exclusive, sop_err *err);
static void sector_unlock(sop_db *db);

static sop_rc ckpt_write(sop_db *db, uint64_t ckpt_seq, sop_err *err)
{
    SOP__TRY(sector_lock(db, true, err));
    sop_rc rc = ckpt_write_locked(db, ckpt_seq, err);
    sector_unlock(db);
    return rc;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/*
 * The state sector (sequence counter, pending marker) and the checkpoint
 * mark are read under a shared and changed under an exclusive OFD lock on
 * byte 1 of the lock file: a short critical section (no I/O but the
 * sector's own pread/pwrite) that is the storage anchor of every commit
 * (docs/locking.md). It is never held while waiting for anything else.
 */
#define SECTOR_LOCK_OFF 1u

static sop_rc sector_lock(sop_db *db, bool exclusive, sop_err *err)
{
    return sop__os_lock(SOP__SITE_DB_LOCK, db->lock_fd,
                        exclusive ? SOP__OS_LOCK_EXCLUSIVE : SOP__OS_LOCK_SHARED, SECTOR_LOCK_OFF,
                        1, true, db->lockpath, err);
}

static void sector_unlock(sop_db *db)
{
    sop__os_unlock(SOP__SITE_DB_LOCK, db->lock_fd, SECTOR_LOCK_OFF, 1, db->lockpath, NULL);
}

static sop_rc state_read_locked(sop_db *db, lockstate *s, sop_err *err)
{
    SOP__TRY(sector_lock(db, false, err));
    sop_rc rc = state_read(db, s, err);
    sector_unlock(db);
    return rc;
}

sop_rc sop__db_lock(sop_db *db, int64_t deadline_ms, sop_err *err)
{
    int64_t limit = sop__now_ms() + db->opts.lock_timeout_ms;
    if (deadline_ms > 0 && deadline_ms < limit)
        limit = deadline_ms;
    sop_rc rc = sop__coord_lock(db->coord, db->commit_key, db->opts.lock_ttl_ms, limit,
                                db->lock_token, err);
    if (rc == SOP_TIMEOUT)
        return sop__err_set(err, SOP_TIMEOUT, 0,
                            "commit lock of %s (%s coordination): still held by another process "
                            "after %u ms",
                            db->dir, db->coord->kind, db->opts.lock_timeout_ms);
    SOP__TRY(rc);
    db->locked = true;
    db->lock_taken_ms = sop__now_ms();
    /* The fence: the sequence number this holder validates against. A
     * commit claims seq + 1 only if nobody claimed it meanwhile (a holder
     * whose Redis lock expired while it was paused finds it changed). */
    lockstate s;
    /* another process may have failed over or reinstated a side: this
     * commit must see the sides it does */
    rc = db->repl ? sop__repl_check(db->repl, err) : SOP_OK;
    if (rc == SOP_OK)
        rc = state_read_locked(db, &s, err);
    if (rc != SOP_OK) {
        sop__db_unlock(db);
        return rc;
    }
    db->fence_seq = s.seq;
    return SOP_OK;
}

void sop__db_unlock(sop_db *db)
{
    if (!db->locked)
        return;
    db->coord->ops->unlock(db->coord, db->commit_key, db->lock_token, NULL);
    db->locked = false;
}

void sop__db_lock_keepalive(sop_db *db)
{
    /* only worth a round trip once a third of the TTL has gone */
    if (!db->locked || !db->coord_expires ||
        sop__now_ms() - db->lock_taken_ms < (int64_t)db->opts.lock_ttl_ms / 3)
        return;
    if (db->coord->ops->extend(db->coord, db->commit_key, db->lock_token, db->opts.lock_ttl_ms,
                               NULL) == SOP_OK)
        db->lock_taken_ms = sop__now_ms();
}

static void log_owner(const sop_db *db, uint8_t owner[16])
{
    /* the owner of a log is the UUID in its file name */
    const char *path = sop__log_path(db->log);
    const char *base = strrchr(path, '/');
    char text[SOP__UUID_TEXT_LEN + 1];
    memcpy(text, base + 1, SOP__UUID_TEXT_LEN);
    text[SOP__UUID_TEXT_LEN] = '\0';
    if (!sop__uuid_parse(text, owner))
        memset(owner, 0, 16);
}

sop_rc sop__db_claim_seq(sop_db *db, uint64_t *seq, sop_err *err)
{
    SOP__TRY(sector_lock(db, true, err));
    lockstate s;
    uint64_t gen, ckpt;
    sop_rc rc = state_read(db, &s, err);
    if (rc == SOP_OK)
        rc = ckpt_read(db, &gen, &ckpt, err);
    if (rc == SOP_OK && (s.seq != db->fence_seq || s.pending))
        rc = sop__err_set(err, SOP_CONFLICT, 0,
                          "commit of %s: another commit claimed sequence number %llu since this "
                          "one validated (its commit lock expired); retry",
                          db->dir, (unsigned long long)(s.seq + (s.pending ? 0 : 1)));
    if (rc == SOP_OK) {
        uint64_t next = (s.seq > ckpt ? s.seq : ckpt) + 1;
        if (next <= db->log_max_seq)
            next = db->log_max_seq + 1;
        s.seq = next;
        s.pending = true;
        s.handoff = false;
        s.pending_seq = next;
        log_owner(db, s.owner);
        memset(s.applier, 0, 16);
        rc = state_write(db, &s, err);
        if (rc == SOP_OK) {
            db->fence_seq = next;
            *seq = next;
        }
    }
    sector_unlock(db);
    return rc;
}

sop_rc sop__db_state(sop_db *db, uint64_t *seq, bool *pending, sop_err *err)
{
    lockstate s;
    if (db->repl)
        SOP__TRY(sop__repl_check(db->repl, err));
    SOP__TRY(state_read_locked(db, &s, err));
    *seq = s.seq;
    *pending = s.pending;
    return SOP_OK;
}

/* Clears the marker if it still says (owner, seq): nobody else's marker is
 * ever cleared, even by a holder whose lock expired. */
static sop_rc clear_pending_of(sop_db *db, const uint8_t owner[16], uint64_t seq, sop_err *err)
{
    SOP__TRY(sector_lock(db, true, err));
    lockstate s;
    sop_rc rc = state_read(db, &s, err);
    if (rc == SOP_OK && s.pending && s.pending_seq == seq && memcmp(s.owner, owner, 16) == 0) {
        s.pending = false;
        rc = state_write(db, &s, err);
    }
    sector_unlock(db);
    return rc;
}

/* Sets the hand-off flag of marker (owner, seq), whoever is applying it. */
static void hand_off_of(sop_db *db, const uint8_t owner[16], uint64_t seq)
{
    if (sector_lock(db, true, NULL) != SOP_OK)
        return;
    lockstate s;
    if (state_read(db, &s, NULL) == SOP_OK && s.pending && s.pending_seq == seq &&
        memcmp(s.owner, owner, 16) == 0) {
        s.handoff = true;
        state_write(db, &s, NULL);
    }
    sector_unlock(db);
}

void sop__db_hand_off(sop_db *db, uint64_t seq)
{
    uint8_t me[16];
    log_owner(db, me);
    hand_off_of(db, me, seq);
}

sop_rc sop__db_clear_pending(sop_db *db, uint64_t seq, sop_err *err)
{
    uint8_t me[16];
    log_owner(db, me);
    return clear_pending_of(db, me, seq, err);
}

/* ---- store handles ------------------------------------------------------ */

sop__dbstore *sop__db_store_find(sop_db *db, const char *name)
{
    for (size_t i = 0; i < db->nstores; i++)
        if (strcmp(db->stores[i].name, name) == 0)
            return &db->stores[i];
    return NULL;
}

sop_rc sop__db_store(sop_db *db, const char *name, sop__dbstore **out, sop_err *err)
{
    if ((*out = sop__db_store_find(db, name)) != NULL)
        return SOP_OK;
    SOP__TRY(sop__store_name_check(name, err));
    if (db->nstores == db->capstores) {
        size_t cap = db->capstores ? db->capstores * 2 : 8;
        sop__dbstore *grown = sop__realloc(db->stores, cap * sizeof(*grown));
        if (grown == NULL)
            return sop__err_set(err, SOP_NOMEM, 0, "database: no memory for store handles");
        db->stores = grown;
        db->capstores = cap;
    }
    sop__dbstore *s = &db->stores[db->nstores];
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    char dir[SOP__PATH_MAX], blobdir[SOP__PATH_MAX];
    SOP__TRY(sop__repo_store_dir(db->dir, name, dir, err));
    SOP__TRY(path_join(blobdir, err, dir, "blob"));
    SOP__TRY(sop__registry_open(dir, name, db->hash_mod, true, &s->reg, err));
    const sop__ecconf *ec = sop__ecconf_for(db->ec, db->ec_n, name);
    sop_rc rc =
        ec ? sop__blob_open_ec(ec, name, &s->blobs, err) : sop__blob_open(blobdir, &s->blobs, err);
    if (rc != SOP_OK) {
        sop__registry_close(s->reg);
        return rc;
    }
    db->nstores++;
    *out = s;
    return SOP_OK;
}

void sop__db_forget_store(sop_db *db, const char *name)
{
    for (size_t i = 0; i < db->nstores; i++) {
        if (strcmp(db->stores[i].name, name) == 0) {
            sop__registry_close(db->stores[i].reg);
            sop__blob_close(db->stores[i].blobs);
            db->stores[i] = db->stores[--db->nstores];
            return;
        }
    }
}

static void forget_all_stores(sop_db *db)
{
    for (size_t i = 0; i < db->nstores; i++) {
        sop__registry_close(db->stores[i].reg);
        sop__blob_close(db->stores[i].blobs);
    }
    db->nstores = 0;
}

/* ---- the redo payload ---------------------------------------------------- */

/* A bounds-checked reader over a payload. */
typedef struct rd {
    const uint8_t *p;
    size_t len, off;
    bool bad;
} rd;

static const uint8_t *take(rd *r, size_t n)
{
    if (r->bad || n > r->len - r->off) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

static uint32_t take32(rd *r)
{
    const uint8_t *p = take(r, 4);
    return p ? sop__le_get32(p) : 0;
}

static uint64_t take64(rd *r)
{
    const uint8_t *p = take(r, 8);
    return p ? sop__le_get64(p) : 0;
}

#define REDO_MAGIC  0x4f445253u /* "SRDO" */
#define REDO_CREATE 1u
#define REDO_DROP   2u
/* prepared files only: the state is relative - count is a signed delta,
 * seq a hint - and redo_rebase makes it absolute before the COMMIT
 * record is written (a prepared transaction is decided after other
 * commits to its stores) */
#define REDO_RELATIVE 4u

/* One store's part of a payload, decoded in place. */
typedef struct redo_store {
    char name[SOP__STORE_NAME_MAX + 1];
    uint8_t flags;
    size_t flags_at, state_at; /* offsets in the payload */
    const uint8_t *fixed;
    size_t fixed_len;
    uint64_t seq, count;
    int64_t updated_ms;
    uint32_t nops;
    const uint8_t *ops; /* nops x (1 + 62) */
    uint32_t nblobs;
    const uint8_t *blobs; /* nblobs x (16 + 4 + len) */
    size_t blobs_len;
    uint32_t ndead;
    const uint8_t *dead; /* ndead x 16 */
    uint32_t nactive;
    const uint8_t *active; /* nactive x 16 */
} redo_store;

static sop_rc redo_bad(sop_err *err, size_t off)
{
    return sop__err_set(err, SOP_CORRUPT, 0, "redo record: malformed at offset %zu", off);
}

/* Decodes the next store part; *done at the end. */
static sop_rc redo_next(rd *r, uint32_t *left, redo_store *s, sop_err *err)
{
    if (*left == 0)
        return SOP_NOTFOUND;
    (*left)--;
    memset(s, 0, sizeof(*s));
    uint32_t nlen = take32(r);
    const uint8_t *name = take(r, nlen);
    if (r->bad || nlen == 0 || nlen > SOP__STORE_NAME_MAX)
        return redo_bad(err, r->off);
    memcpy(s->name, name, nlen);
    s->name[nlen] = '\0';
    if (!sop__store_name_valid(s->name))
        return redo_bad(err, r->off);
    s->flags_at = r->off;
    const uint8_t *f = take(r, 1);
    s->flags = f ? f[0] : 0;
    if (s->flags & REDO_CREATE) {
        s->fixed_len = take32(r);
        s->fixed = take(r, s->fixed_len);
    }
    s->state_at = r->off;
    s->seq = take64(r);
    s->count = take64(r);
    s->updated_ms = (int64_t)take64(r);
    s->nops = take32(r);
    if (s->nops > (r->len - r->off) / (1 + SOP__HANDLE_SIZE))
        return redo_bad(err, r->off);
    s->ops = take(r, (size_t)s->nops * (1 + SOP__HANDLE_SIZE));
    s->nblobs = take32(r);
    size_t start = r->off;
    for (uint32_t i = 0; i < s->nblobs && !r->bad; i++) {
        take(r, 16);
        take(r, take32(r));
    }
    s->blobs = r->p + start;
    s->blobs_len = r->off - start;
    s->ndead = take32(r);
    if (s->ndead > (r->len - r->off) / 16)
        return redo_bad(err, r->off);
    s->dead = take(r, (size_t)s->ndead * 16);
    s->nactive = take32(r);
    if (s->nactive > (r->len - r->off) / 16)
        return redo_bad(err, r->off);
    s->active = take(r, (size_t)s->nactive * 16);
    if (r->bad)
        return redo_bad(err, r->off);
    return SOP_OK;
}

static sop_rc redo_open(const uint8_t *payload, size_t len, rd *r, uint32_t *nstores, sop_err *err)
{
    r->p = payload;
    r->len = len;
    r->off = 0;
    r->bad = false;
    if (take32(r) != REDO_MAGIC)
        return redo_bad(err, 0);
    *nstores = take32(r);
    return r->bad ? redo_bad(err, r->off) : SOP_OK;
}

/* l2: NULL, or where the shared cache entries the commit makes stale are
 * queued (l2.h invariant 2). */
static sop_rc apply_store(sop_db *db, const redo_store *s, bool recovering, sop__l2_batch *l2,
                          sop_err *err)
{
    sop__storeinfo info;
    memset(&info, 0, sizeof(info));
    if (s->flags & REDO_RELATIVE)
        return sop__err_set(err, SOP_CORRUPT, 0, "redo record: store %s has a relative state",
                            s->name);
    if (s->flags & REDO_DROP) {
        if (l2 && sop__repo_read(db->dir, s->name, &info, NULL) == SOP_OK)
            sop__l2_batch_info(l2, &info);
        sop__db_forget_store(db, s->name);
        const sop__ecconf *ec = sop__ecconf_for(db->ec, db->ec_n, s->name);
        if (ec != NULL)
            SOP__TRY(sop__ec_drop_store(ec, s->name, err));
        return sop__repo_drop(db->dir, s->name, err);
    }
    if (s->flags & REDO_CREATE) {
        /* decode the fixed part behind a synthetic state sector */
        size_t n = SOP__STOREINFO_STATE_SIZE + s->fixed_len;
        uint8_t *buf = sop__malloc(n);
        if (buf == NULL)
            return sop__err_set(err, SOP_NOMEM, 0, "redo: no memory");
        info.seq = s->seq;
        info.count = s->count;
        info.updated_ms = s->updated_ms;
        sop__storeinfo_encode_state(&info, buf);
        memcpy(buf + SOP__STOREINFO_STATE_SIZE, s->fixed, s->fixed_len);
        sop_rc rc = sop__storeinfo_decode(buf, n, "redo record", &info, err);
        sop__free(buf);
        SOP__TRY(rc);
        if (strcmp(info.name, s->name) != 0)
            return sop__err_set(err, SOP_CORRUPT, 0, "redo record: store name mismatch");
        SOP__TRY(sop__repo_create(db->dir, &info, recovering, err));
        SOP__CRASH_POINT(P2_STORES_CREATED);
    } else {
        sop_rc rc = sop__repo_read(db->dir, s->name, &info, err);
        /* a state sector torn by the crash being recovered: the record
         * holds the state to write, the fixed part is read on its own */
        if (rc == SOP_CORRUPT)
            rc = sop__repo_read_fixed(db->dir, s->name, &info, err);
        SOP__TRY(rc);
    }
    sop__dbstore *st;
    SOP__TRY(sop__db_store(db, s->name, &st, err));

    rd b = {s->blobs, s->blobs_len, 0, false};
    for (uint32_t i = 0; i < s->nblobs; i++) {
        const uint8_t *id = take(&b, 16);
        uint32_t blen = take32(&b);
        const uint8_t *data = take(&b, blen);
        if (b.bad)
            return redo_bad(err, b.off);
        SOP__TRY(sop__blob_put(st->blobs, id, data, blen, 0, err));
    }
    SOP__CRASH_POINT(P2_BLOBS_WRITTEN);

    if (s->nops) {
        sop__reg_op *ops = sop__malloc(sizeof(*ops) * s->nops);
        if (ops == NULL)
            return sop__err_set(err, SOP_NOMEM, 0, "redo: no memory for %u handles", s->nops);
        for (uint32_t i = 0; i < s->nops; i++) {
            const uint8_t *op = s->ops + (size_t)i * (1 + SOP__HANDLE_SIZE);
            ops[i].kind = op[0] == 1 ? SOP__REG_DEL : SOP__REG_PUT;
            sop__handle_decode(op + 1, &ops[i].h);
            if (l2)
                sop__l2_batch_handle(l2, &info, ops[i].h.lid);
        }
        sop_rc rc = sop__registry_apply(
            st->reg, ops, s->nops, SOP__REG_IF_NEWER | (recovering ? SOP__REG_REPAIR : 0), err);
        sop__free(ops);
        SOP__TRY(rc);
    }
    SOP__CRASH_POINT(P2_REGISTRY_HALF);

    info.seq = s->seq;
    info.count = s->count;
    info.updated_ms = s->updated_ms;
    SOP__TRY(sop__repo_write_state(db->dir, &info, err));
    if (l2)
        sop__l2_batch_info(l2, &info);
    return SOP_OK;
}

static sop_rc remove_dead(sop_db *db, const redo_store *s, sop_err *err)
{
    if (s->flags & REDO_DROP || s->ndead == 0)
        return SOP_OK;
    sop__dbstore *st;
    SOP__TRY(sop__db_store(db, s->name, &st, err));
    for (uint32_t i = 0; i < s->ndead; i++)
        SOP__TRY(sop__blob_remove(st->blobs, s->dead + (size_t)i * 16, err));
    return SOP_OK;
}

sop_rc sop__redo_apply(sop_db *db, const uint8_t *payload, size_t len, bool recovering,
                       sop_err *err)
{
    rd r;
    uint32_t n, left;
    SOP__TRY(redo_open(payload, len, &r, &n, err));
    redo_store s;
    sop_rc rc;
    sop__l2_batch *l2 = sop__l2_available(&db->l2) ? sop__malloc(sizeof(*l2)) : NULL;
    if (l2)
        sop__l2_batch_init(l2, &db->l2);
    /* every store's blobs, registry and state first ... */
    for (left = n; (rc = redo_next(&r, &left, &s, err)) == SOP_OK;)
        if ((rc = apply_store(db, &s, recovering, l2, err)) != SOP_OK)
            break;
    if (l2) {
        /* after the registry and state writes, before the commit returns:
         * what other processes cached of the old state goes (even if the
         * apply stopped half way: whatever it wrote is newer) */
        sop__l2_batch_flush(l2);
        sop__free(l2);
    }
    if (rc != SOP_NOTFOUND)
        return rc;
    SOP__CRASH_POINT(P2_STATE_WRITTEN);
    /* ... then what the commit made obsolete */
    SOP__TRY(redo_open(payload, len, &r, &n, err));
    for (left = n; (rc = redo_next(&r, &left, &s, err)) == SOP_OK;)
        SOP__TRY(remove_dead(db, &s, err));
    if (rc != SOP_NOTFOUND)
        return rc;
    SOP__CRASH_POINT(P2_DEAD_REMOVED);
    return SOP_OK;
}

sop_rc sop__redo_check(const uint8_t *payload, size_t len, sop_err *err)
{
    rd r;
    uint32_t n, left;
    SOP__TRY(redo_open(payload, len, &r, &n, err));
    redo_store s;
    sop_rc rc;
    for (left = n; (rc = redo_next(&r, &left, &s, err)) == SOP_OK;) {
        rd b = {s.blobs, s.blobs_len, 0, false};
        for (uint32_t i = 0; i < s.nblobs && !b.bad; i++) {
            take(&b, 16);
            take(&b, take32(&b));
        }
        if (b.bad)
            return redo_bad(err, r.off);
    }
    if (rc != SOP_NOTFOUND)
        return rc;
    if (r.off != len)
        return redo_bad(err, r.off); /* trailing bytes */
    return SOP_OK;
}

sop_rc sop__redo_claims(const uint8_t *payload, size_t len,
                        sop_rc (*fn)(void *ctx, const char *store, const uint8_t lid[16]),
                        void *ctx, sop_err *err)
{
    rd r;
    uint32_t n, left;
    SOP__TRY(redo_open(payload, len, &r, &n, err));
    redo_store s;
    sop_rc rc;
    for (left = n; (rc = redo_next(&r, &left, &s, err)) == SOP_OK;) {
        if (s.flags & (REDO_CREATE | REDO_DROP))
            SOP__TRY(fn(ctx, s.name, NULL)); /* the store itself */
        for (uint32_t i = 0; i < s.nops; i++)
            SOP__TRY(fn(ctx, s.name, s.ops + (size_t)i * (1 + SOP__HANDLE_SIZE) + 1));
    }
    return rc == SOP_NOTFOUND ? SOP_OK : rc;
}

/* Under the commit lock: a prepared payload's relative store states
 * become absolute against the states on disk now. */
static sop_rc redo_rebase(sop_db *db, uint8_t *payload, size_t len, sop_err *err)
{
    rd r;
    uint32_t n, left;
    SOP__TRY(redo_open(payload, len, &r, &n, err));
    redo_store s;
    sop_rc rc;
    for (left = n; (rc = redo_next(&r, &left, &s, err)) == SOP_OK;) {
        if (!(s.flags & REDO_RELATIVE))
            continue;
        sop__storeinfo cur;
        SOP__TRY(sop__repo_read(db->dir, s.name, &cur, err));
        int64_t delta = (int64_t)s.count;
        if (delta < 0 && (uint64_t)-delta > cur.count)
            return sop__err_set(err, SOP_CORRUPT, 0,
                                "store %s: a prepared transaction removes %lld items of %llu",
                                s.name, (long long)-delta, (unsigned long long)cur.count);
        payload[s.flags_at] = (uint8_t)(s.flags & ~REDO_RELATIVE);
        sop__le_put64(payload + s.state_at, cur.seq + 1);
        sop__le_put64(payload + s.state_at + 8, cur.count + (uint64_t)delta);
        sop__le_put64(payload + s.state_at + 16, (uint64_t)sop__now_ms());
    }
    return rc == SOP_NOTFOUND ? SOP_OK : rc;
}

sop_rc sop__redo_discard(sop_db *db, const uint8_t *payload, size_t len, sop_err *err)
{
    rd r;
    uint32_t n, left;
    SOP__TRY(redo_open(payload, len, &r, &n, err));
    redo_store s;
    sop_rc rc;
    for (left = n; (rc = redo_next(&r, &left, &s, err)) == SOP_OK;) {
        if (s.nactive == 0 || (s.flags & REDO_CREATE))
            continue; /* a store that was never created has no blobs */
        sop__dbstore *st;
        SOP__TRY(sop__db_store(db, s.name, &st, err));
        for (uint32_t i = 0; i < s.nactive; i++)
            SOP__TRY(sop__blob_remove(st->blobs, s.active + (size_t)i * 16, err));
    }
    return rc == SOP_NOTFOUND ? SOP_OK : rc;
}

/* ---- checkpoints ------------------------------------------------------- */

/* Under the commit lock: everything applied so far becomes durable, the
 * mark records it, and this handle's log starts over. */
sop_rc sop__db_abandon(sop_db *db, const uint8_t txid[16], const char *store,
                       const uint8_t (*ids)[16], size_t n, sop_err *err)
{
    sop__abandoned *g = sop__realloc(db->abandoned, (db->nabandoned + 1) * sizeof(*g));
    if (g == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "database: no memory");
    db->abandoned = g;
    sop__abandoned *a = &g[db->nabandoned];
    memcpy(a->txid, txid, 16);
    snprintf(a->name, sizeof(a->name), "%s", store);
    a->ids = sop__malloc(n * 16);
    if (a->ids == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "database: no memory");
    memcpy(a->ids, ids, n * 16);
    a->n = n;
    db->nabandoned++;
    return SOP_OK;
}

/* Tries again to remove abandoned values; keeps what still fails. */
static void retry_abandoned(sop_db *db)
{
    size_t keep = 0;
    for (size_t i = 0; i < db->nabandoned; i++) {
        sop__abandoned *a = &db->abandoned[i];
        sop__dbstore *st;
        size_t left = 0;
        bool usable = sop__db_store(db, a->name, &st, NULL) == SOP_OK;
        for (size_t k = 0; k < a->n; k++)
            if (!usable || sop__blob_remove(st->blobs, a->ids[k], NULL) != SOP_OK)
                memmove(a->ids[left++], a->ids[k], 16);
        a->n = left;
        if (left == 0)
            sop__free(a->ids);
        else
            db->abandoned[keep++] = *a;
    }
    db->nabandoned = keep;
}

/* An INTENT record: store name length, name, count, IDs. */
sop_rc sop__db_append_intent(sop_db *db, const uint8_t txid[16], const char *name,
                             const uint8_t (*ids)[16], size_t n, sop_err *err)
{
    size_t nl = strlen(name), off = 4 + nl;
    uint8_t *p = sop__malloc(off + 4 + n * 16);
    if (p == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "log: no memory for an intent");
    sop__le_put32(p, (uint32_t)nl);
    memcpy(p + 4, name, nl);
    sop__le_put32(p + off, (uint32_t)n);
    memcpy(p + off + 4, ids, n * 16);
    sop_rc rc = sop__log_append(db->log, SOP__LOG_INTENT, txid, 0, p, off + 4 + n * 16, err);
    sop__free(p);
    return rc;
}

static sop_rc redo_pending(sop_db *db, bool may_wait, sop_err *err);

static sop_rc checkpoint_locked(sop_db *db, sop_err *err)
{
    retry_abandoned(db);
    SOP__TRY(redo_pending(db, true, err));
    lockstate s;
    SOP__TRY(state_read_locked(db, &s, err));
    /* Everything up to s.seq is applied (a claim above it is someone's
     * commit in flight, not ours to vouch for). */
    uint64_t upto = s.pending ? s.pending_seq - 1 : s.seq;
    if (db->log_max_seq > upto)
        upto = db->log_max_seq;
    SOP__TRY(sop__os_syncfs(SOP__SITE_DB_SYNC, db->dir_fd, db->dir, err));
    SOP__CRASH_POINT(CKPT_SYNCED);
    SOP__TRY(ckpt_write(db, upto, err));
    if (db->log) {
        SOP__TRY(sop__log_reset(db->log, err));
        db->log_max_seq = 0;
        /* Intents of transactions still undecided must survive the reset.
         * Not those of one that passed its commit point (its COMMIT record
         * goes with the reset, so its intent would look abandoned). */
        for (sop_txn *t = db->txns; t; t = t->next_open) {
            if (t->state != SOP__TXN_ACTIVE)
                continue;
            for (sop__txstore *ts = t->stores; ts; ts = ts->next)
                if (ts->nactive > 0)
                    SOP__TRY(sop__db_append_intent(db, t->id, ts->info.name,
                                                   (const uint8_t(*)[16])ts->active, ts->nactive,
                                                   err));
        }
        for (size_t i = 0; i < db->nabandoned; i++)
            SOP__TRY(sop__db_append_intent(db, db->abandoned[i].txid, db->abandoned[i].name,
                                           (const uint8_t(*)[16])db->abandoned[i].ids,
                                           db->abandoned[i].n, err));
        SOP__TRY(sop__log_sync(db->log, err));
    }
    return SOP_OK;
}

sop_rc sop__db_maybe_checkpoint(sop_db *db, sop_err *err)
{
    if (db->log == NULL || sop__log_used(db->log) < db->opts.checkpoint_bytes)
        return SOP_OK;
    return checkpoint_locked(db, err);
}

/* ---- prepared transactions ------------------------------------------- */

sop_rc sop__db_prepared_path(const sop_db *db, const uint8_t txid[16], char *out, sop_err *err)
{
    char text[SOP__UUID_TEXT_LEN + 6];
    sop__uuid_format(txid, text);
    strcat(text, ".prep");
    return path_join(out, err, db->txlog, text);
}

#define PREP_MAGIC "SOPPREP1"

sop_rc sop__db_prepared_read(const char *path, sop_prepared_info *info, uint8_t **payload,
                             size_t *len, sop_err *err)
{
    int fd;
    SOP__TRY(sop__os_open(SOP__SITE_PREP_READ, path, O_RDONLY, 0, &fd, err));
    struct stat st;
    sop_rc rc = sop__os_fstat(SOP__SITE_PREP_READ, fd, &st, path, err);
    uint8_t *buf = NULL;
    size_t size = rc == SOP_OK ? (size_t)st.st_size : 0;
    if (rc == SOP_OK && (size < 300 || size > ((size_t)1 << 32)))
        rc = sop__err_set(err, SOP_CORRUPT, 0, "prepared transaction %s: bad size %zu", path, size);
    if (rc == SOP_OK && (buf = sop__malloc(size)) == NULL)
        rc = sop__err_set(err, SOP_NOMEM, 0, "prepared transaction %s: no memory", path);
    size_t got = 0;
    if (rc == SOP_OK)
        rc = sop__os_pread_full(SOP__SITE_PREP_READ, fd, buf, size, 0, &got, path, err);
    sop__os_close(SOP__SITE_PREP_READ, fd, path, NULL);
    /* layout: magic 8, txid 16, prepared_ms 8, owner 256, payload length 8,
     * payload, CRC-32C of everything before it */
    if (rc == SOP_OK && (got != size || memcmp(buf, PREP_MAGIC, 8) != 0 ||
                         sop__le_get32(buf + size - 4) != sop__crc32c(0, buf, size - 4) ||
                         sop__le_get64(buf + 288) != size - 300))
        rc = sop__err_set(err, SOP_CORRUPT, 0, "prepared transaction %s: bad contents", path);
    if (rc == SOP_OK) {
        /* the file name is the transaction ID: another's file is corrupt */
        const char *base = strrchr(path, '/');
        char text[SOP__UUID_TEXT_LEN + 1];
        sop__uuid_format(buf + 8, text);
        if (base == NULL || strncmp(base + 1, text, SOP__UUID_TEXT_LEN) != 0)
            rc = sop__err_set(err, SOP_CORRUPT, 0, "prepared transaction %s holds transaction %s",
                              path, text);
    }
    if (rc == SOP_OK) {
        memcpy(info->txid, buf + 8, 16);
        info->prepared_ms = (int64_t)sop__le_get64(buf + 24);
        memcpy(info->owner, buf + 32, 256);
        info->owner[255] = '\0';
        *len = size - 300;
        rc = sop__redo_check(buf + 296, *len, err);
        if (rc != SOP_OK)
            sop__err_prefix(err, "prepared transaction %s", path);
    }
    if (rc == SOP_OK) {
        *payload = sop__malloc(*len ? *len : 1);
        if (*payload == NULL)
            rc = sop__err_set(err, SOP_NOMEM, 0, "prepared transaction %s: no memory", path);
        else
            memcpy(*payload, buf + 296, *len);
    }
    sop__free(buf);
    return rc;
}

sop_rc sop__db_prepared_write(sop_db *db, const uint8_t txid[16], const char *owner,
                              const uint8_t *payload, size_t len, sop_err *err)
{
    char path[SOP__PATH_MAX], tmp[SOP__PATH_MAX];
    SOP__TRY(sop__db_prepared_path(db, txid, path, err));
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return sop__err_set(err, SOP_LIMIT, 0, "path too long");
    size_t size = 300 + len;
    uint8_t *buf = sop__calloc(1, size);
    if (buf == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "prepare: no memory");
    memcpy(buf, PREP_MAGIC, 8);
    memcpy(buf + 8, txid, 16);
    sop__le_put64(buf + 24, (uint64_t)sop__now_ms());
    snprintf((char *)buf + 32, 256, "%s", owner ? owner : "");
    sop__le_put64(buf + 288, len);
    memcpy(buf + 296, payload, len);
    sop__le_put32(buf + size - 4, sop__crc32c(0, buf, size - 4));
    int fd;
    sop_rc rc =
        sop__os_open(SOP__SITE_PREP_WRITE, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600, &fd, err);
    if (rc == SOP_OK) {
        rc = sop__os_pwrite_all(SOP__SITE_PREP_WRITE, fd, buf, size, 0, tmp, err);
        if (rc == SOP_OK)
            rc = sop__os_fsync(SOP__SITE_PREP_WRITE, fd, tmp, err);
        sop__os_close(SOP__SITE_PREP_WRITE, fd, tmp, NULL);
    }
    sop__free(buf);
    bool renamed = false;
    if (rc == SOP_OK)
        renamed = (rc = sop__os_rename(SOP__SITE_PREP_WRITE, tmp, path, err)) == SOP_OK;
    if (rc == SOP_OK)
        rc = sop__os_fsync_dir(SOP__SITE_PREP_WRITE, db->txlog, err);
    if (rc != SOP_OK) {
        /* not prepared: no file may claim it was (nor survive a crash) */
        sop__os_unlink(SOP__SITE_PREP_REMOVE, renamed ? path : tmp, NULL);
        if (renamed)
            sop__os_fsync_dir(SOP__SITE_PREP_REMOVE, db->txlog, NULL);
    }
    return rc;
}

/* Calls fn(path) for every prepared file. */
static sop_rc each_prepared(sop_db *db, sop_rc (*fn)(void *ctx, const char *path), void *ctx,
                            sop_err *err)
{
    sop__os_dir d;
    SOP__TRY(sop__os_dir_open(SOP__SITE_PREP_READ, db->txlog, &d, err));
    const char *name;
    sop_rc rc;
    while ((rc = sop__os_dir_next(&d, &name, err)) == SOP_OK) {
        size_t n = strlen(name);
        if (n != SOP__UUID_TEXT_LEN + 5 || strcmp(name + SOP__UUID_TEXT_LEN, ".prep") != 0)
            continue;
        char path[SOP__PATH_MAX];
        if ((rc = path_join(path, err, db->txlog, name)) != SOP_OK)
            break;
        if ((rc = fn(ctx, path)) != SOP_OK)
            break;
    }
    sop__os_dir_close(&d);
    return rc == SOP_NOTFOUND ? SOP_OK : rc;
}

typedef struct claims_ctx {
    sop_rc (*fn)(void *ctx, const char *store, const uint8_t lid[16]);
    void *ctx;
    sop_err *err;
} claims_ctx;

static sop_rc claims_one(void *ctx, const char *path)
{
    claims_ctx *c = ctx;
    sop_prepared_info info;
    uint8_t *payload;
    size_t len;
    sop_rc rc = sop__db_prepared_read(path, &info, &payload, &len, c->err);
    if (rc == SOP_NOTFOUND)
        return SOP_OK; /* decided meanwhile */
    SOP__TRY(rc);
    rc = sop__redo_claims(payload, len, c->fn, c->ctx, c->err);
    sop__free(payload);
    return rc;
}

sop_rc sop__db_prepared_claims(sop_db *db,
                               sop_rc (*fn)(void *ctx, const char *store, const uint8_t lid[16]),
                               void *ctx, sop_err *err)
{
    claims_ctx c = {fn, ctx, err};
    return each_prepared(db, claims_one, &c, err);
}

/* <uuid>.log: a process's transaction log */
static bool is_log_name(const char *name)
{
    size_t n = strlen(name);
    return n == SOP__UUID_TEXT_LEN + 4 && strcmp(name + SOP__UUID_TEXT_LEN, ".log") == 0;
}

static sop_rc committed_in_logs(sop_db *db, const uint8_t txid[16], bool *found, sop_err *err);

typedef struct list_ctx {
    sop_db *db;
    void (*fn)(void *ctx, const sop_prepared_info *info);
    void *ctx;
    sop_err *err;
} list_ctx;

static sop_rc list_one(void *ctx, const char *path)
{
    list_ctx *c = ctx;
    sop_prepared_info info;
    uint8_t *payload;
    size_t len;
    sop_rc rc = sop__db_prepared_read(path, &info, &payload, &len, c->err);
    if (rc == SOP_NOTFOUND)
        return SOP_OK;
    SOP__TRY(rc);
    sop__free(payload);
    bool done = false;
    SOP__TRY(committed_in_logs(c->db, info.txid, &done, c->err));
    if (done) {
        sop__os_unlink(SOP__SITE_PREP_REMOVE, path, NULL); /* a committed leftover */
        return SOP_OK;
    }
    c->fn(c->ctx, &info);
    return SOP_OK;
}

sop_rc sop_db_list_prepared(sop_db *db, void (*fn)(void *ctx, const sop_prepared_info *info),
                            void *ctx, sop_err *err)
{
    if (db == NULL || fn == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_list_prepared: NULL argument");
    list_ctx c = {db, fn, ctx, err};
    return each_prepared(db, list_one, &c, err);
}

typedef struct find_txid {
    const uint8_t *txid;
    bool found;
} find_txid;

static sop_rc match_commit(void *ctx, const sop__logrec *r)
{
    find_txid *f = ctx;
    if (r->type == SOP__LOG_COMMIT && memcmp(r->txid, f->txid, 16) == 0)
        f->found = true;
    return SOP_OK;
}

/* Scans every log, live or dead, read without claiming it (a live owner's
 * unsynced records are in the page cache), until *stop. */
static sop_rc scan_all_logs(sop_db *db, sop_rc (*fn)(void *ctx, const sop__logrec *r), void *ctx,
                            const bool *stop, sop_err *err)
{
    sop__os_dir d;
    SOP__TRY(sop__os_dir_open(SOP__SITE_LOG_READ, db->txlog, &d, err));
    const char *name;
    sop_rc rc = SOP_OK;
    while (!*stop && (rc = sop__os_dir_next(&d, &name, err)) == SOP_OK) {
        if (!is_log_name(name))
            continue;
        char path[SOP__PATH_MAX];
        int fd;
        if ((rc = path_join(path, err, db->txlog, name)) != SOP_OK)
            break;
        rc = sop__os_open(SOP__SITE_LOG_READ, path, O_RDONLY, 0, &fd, err);
        if (rc == SOP_NOTFOUND)
            continue;
        if (rc != SOP_OK)
            break;
        rc = sop__log_scan(fd, path, fn, ctx, err);
        sop__os_close(SOP__SITE_LOG_READ, fd, path, NULL);
        if (rc != SOP_OK)
            break;
    }
    sop__os_dir_close(&d);
    return rc == SOP_NOTFOUND ? SOP_OK : rc;
}

/* Whether any log holds a COMMIT record of txid: then a prepared file
 * still naming it is a leftover. */
static sop_rc committed_in_logs(sop_db *db, const uint8_t txid[16], bool *found, sop_err *err)
{
    find_txid f = {txid, false};
    SOP__TRY(scan_all_logs(db, match_commit, &f, &f.found, err));
    *found = f.found;
    return SOP_OK;
}

typedef struct intent_ids {
    sop__idmap *ids;
    sop_err *err;
} intent_ids;

static int intent_mark;

static sop_rc collect_intent(void *ctx, const sop__logrec *r)
{
    intent_ids *c = ctx;
    if (r->type != SOP__LOG_INTENT)
        return SOP_OK;
    rd in = {r->payload, r->len, 0, false};
    uint32_t nl = take32(&in);
    (void)take(&in, nl);
    uint32_t n = take32(&in);
    for (uint32_t k = 0; !in.bad && k < n; k++) {
        const uint8_t *id = take(&in, 16);
        if (!in.bad)
            SOP__TRY(sop__idmap_put(c->ids, id, &intent_mark, c->err));
    }
    return SOP_OK;
}

static sop_rc note_prepared(void *ctx, const char *path)
{
    (void)path;
    *(bool *)ctx = true;
    return SOP_OK;
}

sop_rc sop__db_unfinished_values(sop_db *db, sop__idmap *ids, bool *prepared, sop_err *err)
{
    bool never = false;
    intent_ids c = {ids, err};
    *prepared = false;
    SOP__TRY(scan_all_logs(db, collect_intent, &c, &never, err));
    return each_prepared(db, note_prepared, prepared, err);
}

/* Decides a prepared transaction under the commit lock. */
static sop_rc decide_prepared(sop_db *db, const uint8_t txid[16], bool commit, sop_err *err)
{
    char path[SOP__PATH_MAX];
    SOP__TRY(sop__db_prepared_path(db, txid, path, err));
    SOP__TRY(sop__db_lock(db, 0, err));
    sop_rc rc = sop__db_recover_pending(db, err);
    sop_prepared_info info;
    uint8_t *payload = NULL;
    size_t len = 0;
    if (rc == SOP_OK)
        rc = sop__db_prepared_read(path, &info, &payload, &len, err);
    if (rc == SOP_NOTFOUND)
        rc = sop__err_set(err, SOP_NOTFOUND, 0, "no prepared transaction with that ID");
    uint64_t seq = 0;
    if (rc == SOP_OK && commit) {
        /* The decision is a COMMIT record in our own log. Until it is
         * durable nothing is decided (a failed append or sync is retracted,
         * so it can never count later); once it is, the decision stands:
         * the prepared file goes, and a failed apply is finished from the
         * log by the pending marker, like any phase 2. */
        rc = redo_rebase(db, payload, len, err);
        if (rc == SOP_OK)
            rc = sop__db_claim_seq(db, &seq, err);
        bool appended = false;
        if (rc == SOP_OK)
            appended = (rc = sop__log_append(db->log, SOP__LOG_COMMIT, txid, seq, payload, len,
                                             err)) == SOP_OK;
        if (rc == SOP_OK)
            rc = sop__log_sync(db->log, err);
        if (rc != SOP_OK) {
            if (appended && sop__log_retract(db->log, NULL) != SOP_OK)
                sop__err_prefix(err, "commit outcome unknown until the database is recovered");
            sop__db_clear_pending(db, seq, NULL);
            goto out;
        }
        db->log_max_seq = seq;
        SOP__CRASH_POINT(PREP_COMMIT_LOGGED);
        /* A file that cannot be removed would claim the transaction is
         * still prepared: the marker is handed off instead of cleared, so
         * the next lock holder (or recovery) replays the record and
         * removes the file before anything else commits. */
        sop_rc urc = sop__os_unlink(SOP__SITE_PREP_REMOVE, path, NULL);
        if (urc == SOP_OK || urc == SOP_NOTFOUND)
            SOP__CRASH_POINT(PREP_FILE_REMOVED);
        rc = sop__redo_apply(db, payload, len, false, err);
        if (rc == SOP_OK && (urc == SOP_OK || urc == SOP_NOTFOUND))
            rc = sop__db_clear_pending(db, seq, err);
        else
            sop__db_hand_off(db, seq); /* the next lock holder finishes it */
        if (rc != SOP_OK)
            sop__err_prefix(err, "committed, but making it visible failed (finished later)");
        goto out;
    }
    /* Its COMMIT record may be durable already (a commit whose removal of
     * this file failed): then it is committed, and discarding its values
     * would corrupt it. */
    bool done = false;
    if (rc == SOP_OK)
        rc = committed_in_logs(db, txid, &done, err);
    if (rc == SOP_OK && done) {
        sop__os_unlink(SOP__SITE_PREP_REMOVE, path, NULL);
        rc = sop__err_set(err, SOP_INVALID, 0, "that prepared transaction was already committed");
        goto out;
    }
    if (rc == SOP_OK)
        rc = sop__redo_discard(db, payload, len, err);
    if (rc == SOP_OK) {
        rc = sop__os_unlink(SOP__SITE_PREP_REMOVE, path, err);
        if (rc == SOP_NOTFOUND)
            rc = SOP_OK;
        SOP__CRASH_POINT(PREP_FILE_REMOVED);
    }
out:
    if (rc == SOP_OK)
        rc = sop__db_maybe_checkpoint(db, err);
    sop__free(payload);
    sop__db_unlock(db);
    return rc;
}

sop_rc sop_db_commit_prepared(sop_db *db, const uint8_t txid[SOP_ID_LEN], sop_err *err)
{
    if (db == NULL || txid == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_commit_prepared: NULL argument");
    return decide_prepared(db, txid, true, err);
}

sop_rc sop_db_rollback_prepared(sop_db *db, const uint8_t txid[SOP_ID_LEN], sop_err *err)
{
    if (db == NULL || txid == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_rollback_prepared: NULL argument");
    return decide_prepared(db, txid, false, err);
}

/* ---- recovery ---------------------------------------------------------- */

typedef struct rec_commit {
    uint64_t seq;
    uint8_t txid[16];
    uint8_t *payload; /* NULL: known to have committed, not to be redone */
    size_t len;
} rec_commit;

typedef struct rec_intent {
    uint8_t txid[16];
    uint8_t *payload;
    size_t len;
} rec_intent;

typedef struct rec_ctx {
    rec_commit *commits;
    size_t ncommits, capcommits;
    rec_intent *intents;
    size_t nintents, capintents;
    uint64_t redo_above; /* redo COMMIT records with seq above this ... */
    bool redo;           /* ... if at all */
    uint64_t max_seq;
    sop_err *err;
} rec_ctx;

static sop_rc grow(void **arr, size_t *cap, size_t n, size_t elem, sop_err *err)
{
    if (n < *cap)
        return SOP_OK;
    size_t c = *cap ? *cap * 2 : 16;
    void *g = sop__realloc(*arr, c * elem);
    if (g == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "recovery: no memory");
    *arr = g;
    *cap = c;
    return SOP_OK;
}

static sop_rc copy_payload(const sop__logrec *r, uint8_t **out, sop_err *err)
{
    *out = sop__malloc(r->len ? r->len : 1);
    if (*out == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "recovery: no memory for a %zu-byte record", r->len);
    memcpy(*out, r->payload, r->len);
    return SOP_OK;
}

static sop_rc collect(void *ctx, const sop__logrec *r)
{
    rec_ctx *c = ctx;
    if (r->type == SOP__LOG_COMMIT) {
        if (r->seq > c->max_seq)
            c->max_seq = r->seq;
        SOP__TRY(
            grow((void **)&c->commits, &c->capcommits, c->ncommits, sizeof(rec_commit), c->err));
        rec_commit *rc = &c->commits[c->ncommits];
        memset(rc, 0, sizeof(*rc));
        rc->seq = r->seq;
        memcpy(rc->txid, r->txid, 16);
        if (c->redo && r->seq > c->redo_above) {
            SOP__TRY(copy_payload(r, &rc->payload, c->err));
            rc->len = r->len;
        }
        c->ncommits++;
    } else if (r->type == SOP__LOG_INTENT) {
        SOP__TRY(
            grow((void **)&c->intents, &c->capintents, c->nintents, sizeof(rec_intent), c->err));
        rec_intent *ri = &c->intents[c->nintents];
        memcpy(ri->txid, r->txid, 16);
        SOP__TRY(copy_payload(r, &ri->payload, c->err));
        ri->len = r->len;
        c->nintents++;
    }
    return SOP_OK;
}

static int by_seq(const void *a, const void *b)
{
    const rec_commit *x = a, *y = b;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static void rec_free(rec_ctx *c)
{
    for (size_t i = 0; i < c->ncommits; i++)
        sop__free(c->commits[i].payload);
    for (size_t i = 0; i < c->nintents; i++)
        sop__free(c->intents[i].payload);
    sop__free(c->commits);
    sop__free(c->intents);
}

static bool committed_in(const rec_ctx *c, const uint8_t txid[16])
{
    for (size_t i = 0; i < c->ncommits; i++)
        if (memcmp(c->commits[i].txid, txid, 16) == 0)
            return true;
    return false;
}

/* Collects every value ID the items of a store reference. */
static sop_rc collect_refs(void *ctx, const sop__node *n, uint32_t level)
{
    sop__idmap *refs = ctx;
    (void)level;
    static int mark;
    for (uint32_t i = 0; i < n->count; i++)
        if (n->items[i].vlen == SOP__VALREF_SIZE)
            SOP__TRY(sop__idmap_put(refs, sop__node_value(n, i), &mark, NULL));
    return SOP_OK;
}

/* Value IDs referenced by the committed tree of a store. */
sop_rc sop__db_store_refs(sop_db *db, const char *name, sop__idmap *refs, sop_err *err)
{
    sop_txn *t;
    SOP__TRY(sop_txn_begin(db, SOP_TXN_NOCHECK, 0, &t, err));
    sop__txstore *ts;
    sop_rc rc = sop__txn_store_open(t, name, &ts, err);
    if (rc == SOP_OK && sop__txstore_refs_values(ts))
        rc = sop__btree_walk(&ts->bt.core, collect_refs, refs, err);
    sop_txn_free(t);
    return rc;
}

/* Removes the early-written values of transactions that never committed
 * and are not prepared - but never one a committed item references: a
 * COMMIT record damaged in place looks like a torn tail, and its
 * transaction's values must survive that. An intent payload: name length
 * u32, name, count u32, count x 16-byte IDs. */
static sop_rc remove_orphans(sop_db *db, rec_ctx *c, sop_err *err)
{
    for (size_t i = 0; i < c->nintents; i++) {
        rec_intent *ri = &c->intents[i];
        if (committed_in(c, ri->txid))
            continue;
        char ppath[SOP__PATH_MAX];
        struct stat st;
        SOP__TRY(sop__db_prepared_path(db, ri->txid, ppath, err));
        if (sop__os_stat(SOP__SITE_PREP_READ, ppath, &st, NULL) == SOP_OK)
            continue; /* prepared: its coordinator decides */
        rd r = {ri->payload, ri->len, 0, false};
        uint32_t nl = take32(&r);
        const uint8_t *name = take(&r, nl);
        uint32_t n = take32(&r);
        if (r.bad || nl == 0 || nl > SOP__STORE_NAME_MAX || n > (ri->len - r.off) / 16)
            return redo_bad(err, r.off);
        char sname[SOP__STORE_NAME_MAX + 1];
        memcpy(sname, name, nl);
        sname[nl] = '\0';
        if (!sop__store_name_valid(sname))
            return redo_bad(err, 4);
        sop__storeinfo probe;
        sop_rc rc = sop__repo_read(db->dir, sname, &probe, err);
        if (rc == SOP_NOTFOUND)
            continue; /* the store itself never came to be */
        SOP__TRY(rc);
        sop__idmap refs;
        sop__idmap_init(&refs);
        rc = sop__db_store_refs(db, sname, &refs, err);
        sop__dbstore *st2 = NULL;
        if (rc == SOP_OK)
            rc = sop__db_store(db, sname, &st2, err);
        for (uint32_t k = 0; rc == SOP_OK && k < n; k++) {
            const uint8_t *id = take(&r, 16);
            if (sop__idmap_get(&refs, id) == NULL)
                rc = sop__blob_remove(st2->blobs, id, err);
        }
        sop__idmap_free(&refs);
        SOP__TRY(rc);
    }
    return SOP_OK;
}

typedef struct seek_ctx {
    uint64_t seq;
    uint8_t txid[16];
    uint8_t *payload;
    size_t len;
    sop_err *err;
} seek_ctx;

static sop_rc seek_seq(void *ctx, const sop__logrec *r)
{
    seek_ctx *s = ctx;
    if (r->type != SOP__LOG_COMMIT || r->seq != s->seq || s->payload)
        return SOP_OK;
    SOP__TRY(copy_payload(r, &s->payload, s->err));
    s->len = r->len;
    memcpy(s->txid, r->txid, 16);
    return SOP_OK;
}

/*
 * Under the commit lock: if a commit was left half applied (its committer
 * died, or its phase 2 failed), redo it from its committer's log - read
 * without claiming it, the owner may be alive - and clear the marker.
 *
 * A marker without a durable record means its committer died (or
 * retracted) before its commit point: cleared. Except when the committer
 * is alive and the coordination lock can expire (Redis): then it may be
 * between its claim and its commit point after its lock ran out, and only
 * it can decide; wait for it (docs/locking.md, "stale holders").
 */
/* Whether the process owning log `who` is alive (it holds its log's lock);
 * this handle counts as not (it is not applying anything right now). */
static sop_rc log_path_of(sop_db *db, const uint8_t who[16], char path[SOP__PATH_MAX], sop_err *err)
{
    char text[SOP__UUID_TEXT_LEN + 5];
    sop__uuid_format(who, text);
    strcat(text, ".log");
    return path_join(path, err, db->txlog, text);
}

static bool log_alive(sop_db *db, const char *path)
{
    if (db->log && strcmp(path, sop__log_path(db->log)) == 0)
        return false;
    int cfd;
    sop_rc crc = sop__log_claim(path, &cfd, NULL);
    if (crc == SOP_OK)
        sop__os_close(SOP__SITE_LOG_READ, cfd, path, NULL);
    return crc == SOP_LOCKED;
}

/* Makes this process the applier of the marker (owner, seq) if it still
 * reads as `seen`: SOP_OK, or SOP_BUSY if it changed meanwhile. */
static sop_rc adopt_pending(sop_db *db, const lockstate *seen, sop_err *err)
{
    SOP__TRY(sector_lock(db, true, err));
    lockstate s;
    sop_rc rc = state_read(db, &s, err);
    if (rc == SOP_OK &&
        (!s.pending || s.pending_seq != seen->pending_seq ||
         memcmp(s.owner, seen->owner, 16) != 0 || memcmp(s.applier, seen->applier, 16) != 0))
        rc = SOP_BUSY;
    if (rc == SOP_OK) {
        log_owner(db, s.applier);
        s.handoff = false;
        rc = state_write(db, &s, err);
    }
    sector_unlock(db);
    return rc;
}

/*
 * Under the commit lock: if a commit was left half applied (its committer
 * died, or its phase 2 failed), redo it from its committer's log - read
 * without claiming it, the owner may be alive - and clear the marker.
 *
 * A marker without a durable record means its committer died (or
 * retracted) before its commit point: cleared. Never decided for a live
 * committer - or a live process already finishing it - when locks can
 * expire (Redis): it may still retract its record, or be applying it, and
 * a second applier could bring back blobs a later commit removed. It says
 * so when it gives up (hand-off). Before applying, the finisher makes
 * itself the marker's applier, so that it is waited for in turn.
 */
static sop_rc redo_pending(sop_db *db, bool may_wait, sop_err *err)
{
    static const uint8_t zero[16];
    int64_t limit = sop__now_ms() + db->opts.lock_timeout_ms;
    for (unsigned backoff = 1;;) {
        lockstate s;
        SOP__TRY(state_read_locked(db, &s, err));
        if (!s.pending)
            return SOP_OK;
        char path[SOP__PATH_MAX], apath[SOP__PATH_MAX];
        SOP__TRY(log_path_of(db, s.owner, path, err));
        bool by_owner = memcmp(s.applier, zero, 16) == 0;
        SOP__TRY(log_path_of(db, by_owner ? s.owner : s.applier, apath, err));
        bool wait = db->coord_expires && !s.handoff && log_alive(db, apath);
        if (!wait) {
            sop_rc rc = adopt_pending(db, &s, err);
            if (rc == SOP_BUSY && sop__now_ms() < limit)
                continue; /* it changed: look again */
            if (rc == SOP_BUSY)
                return sop__err_set(err, SOP_BUSY, 0,
                                    "the pending commit of %s kept changing for %u ms", db->dir,
                                    db->opts.lock_timeout_ms);
            SOP__TRY(rc);
            int fd;
            rc = sop__os_open(SOP__SITE_LOG_READ, path, O_RDONLY, 0, &fd, err);
            seek_ctx k = {s.pending_seq, {0}, NULL, 0, err};
            if (rc == SOP_OK) {
                rc = sop__log_scan(fd, path, seek_seq, &k, err);
                sop__os_close(SOP__SITE_LOG_READ, fd, path, NULL);
            }
            if (rc == SOP_NOTFOUND)
                rc = SOP_OK; /* its log is gone: a recovery already redid it */
            if (rc == SOP_OK && k.payload)
                rc = sop__redo_apply(db, k.payload, k.len, true, err);
            if (rc == SOP_OK && k.payload) {
                /* a committed prepared transaction whose decider died
                 * before removing its file: decided, the file goes */
                char ppath[SOP__PATH_MAX];
                rc = sop__db_prepared_path(db, k.txid, ppath, err);
                if (rc == SOP_OK)
                    rc = sop__os_unlink(SOP__SITE_PREP_REMOVE, ppath, err);
                if (rc == SOP_NOTFOUND)
                    rc = SOP_OK;
            }
            sop__free(k.payload);
            if (rc != SOP_OK) {
                hand_off_of(db, s.owner, s.pending_seq);
                return rc;
            }
            return clear_pending_of(db, s.owner, s.pending_seq, err);
        }
        if (!may_wait)
            return SOP_OK; /* recovery: its owner finishes it */
        if (sop__now_ms() >= limit)
            return sop__err_set(err, SOP_BUSY, 0,
                                "commit %llu of a live process (log %s) is still in flight after "
                                "%u ms",
                                (unsigned long long)s.pending_seq, apath, db->opts.lock_timeout_ms);
        sleep_ms(backoff);
        if (backoff < 16)
            backoff *= 2;
    }
}

sop_rc sop__db_recover_pending(sop_db *db, sop_err *err)
{
    return redo_pending(db, true, err);
}

sop_rc sop__db_finish_pending(sop_db *db, sop_err *err)
{
    if (db->locked)
        return SOP_OK; /* we are the committer: phase 2 finishes it */
    uint64_t seq;
    bool pending;
    SOP__TRY(sop__db_state(db, &seq, &pending, err));
    if (!pending)
        return SOP_OK;
    SOP__TRY(sop__db_lock(db, 0, err));
    sop_rc rc = redo_pending(db, true, err);
    sop__db_unlock(db);
    return rc;
}

/*
 * Under the commit lock: take over the logs of dead processes. With
 * `full` (no other process has the database open) every COMMIT record
 * above the checkpoint is redone, in sequence order - after a machine
 * crash the files they wrote may not have reached the disk. Otherwise
 * (others alive) their records were applied already (a half-applied one is
 * redo_pending's) and redoing them could undo newer commits. Either way the
 * early-written values of transactions that never committed are removed,
 * everything is synced, and the dead logs are deleted.
 */
static sop_rc recover_dead_logs(sop_db *db, bool full, sop_err *err)
{
    uint64_t gen, ckpt;
    SOP__TRY(sector_lock(db, false, err));
    sop_rc crc = ckpt_read(db, &gen, &ckpt, err);
    sector_unlock(db);
    SOP__TRY(crc);
    rec_ctx c;
    memset(&c, 0, sizeof(c));
    c.redo_above = ckpt;
    c.redo = full;
    c.err = err;
    char **dead = NULL;
    int *dead_fds = NULL;
    size_t ndead = 0, capdead = 0, capfds = 0;

    sop__os_dir d;
    sop_rc rc = sop__os_dir_open(SOP__SITE_LOG_READ, db->txlog, &d, err);
    if (rc != SOP_OK)
        return rc;
    const char *name;
    while ((rc = sop__os_dir_next(&d, &name, err)) == SOP_OK) {
        size_t nlen = strlen(name);
        if (nlen == SOP__UUID_TEXT_LEN + 8 && strcmp(name + SOP__UUID_TEXT_LEN, ".log.new") == 0) {
            /* a log whose creator died before renaming it into place */
            char npath[SOP__PATH_MAX];
            int nfd;
            if (path_join(npath, err, db->txlog, name) == SOP_OK &&
                sop__log_claim(npath, &nfd, NULL) == SOP_OK) {
                sop__os_unlink(SOP__SITE_LOG_READ, npath, NULL);
                sop__os_close(SOP__SITE_LOG_READ, nfd, npath, NULL);
            }
            continue;
        }
        if (!is_log_name(name))
            continue;
        char path[SOP__PATH_MAX];
        if ((rc = path_join(path, err, db->txlog, name)) != SOP_OK)
            break;
        if (db->log && strcmp(path, sop__log_path(db->log)) == 0)
            continue;
        int fd;
        rc = sop__log_claim(path, &fd, err);
        if (rc == SOP_LOCKED || rc == SOP_NOTFOUND) {
            rc = SOP_OK;
            continue; /* its owner is alive (or it just went) */
        }
        if (rc != SOP_OK)
            break;
        rc = sop__log_scan(fd, path, collect, &c, err);
        if (rc == SOP_OK)
            rc = grow((void **)&dead, &capdead, ndead, sizeof(char *), err);
        if (rc == SOP_OK)
            rc = grow((void **)&dead_fds, &capfds, ndead, sizeof(int), err);
        char *copy = rc == SOP_OK ? sop__malloc(strlen(path) + 1) : NULL;
        if (rc == SOP_OK && copy == NULL)
            rc = sop__err_set(err, SOP_NOMEM, 0, "recovery: no memory");
        if (rc != SOP_OK) {
            sop__os_close(SOP__SITE_LOG_READ, fd, path, NULL);
            break;
        }
        strcpy(copy, path);
        dead[ndead] = copy;
        dead_fds[ndead++] = fd; /* keep the claim until the log is gone */
    }
    sop__os_dir_close(&d);
    if (rc == SOP_NOTFOUND)
        rc = SOP_OK;

    if (rc == SOP_OK) {
        if (c.ncommits > 1)
            qsort(c.commits, c.ncommits, sizeof(*c.commits), by_seq);
        for (size_t i = 0; i < c.ncommits && rc == SOP_OK; i++) {
            if (c.commits[i].payload == NULL)
                continue;
            rc = sop__redo_apply(db, c.commits[i].payload, c.commits[i].len, true, err);
            /* a prepared file whose COMMIT record exists was decided */
            char ppath[SOP__PATH_MAX];
            if (rc == SOP_OK && sop__db_prepared_path(db, c.commits[i].txid, ppath, err) == SOP_OK)
                sop__os_unlink(SOP__SITE_PREP_REMOVE, ppath, NULL);
        }
        if (rc == SOP_OK && ndead > 0)
            SOP__CRASH_POINT(REC_LOG_REDONE);
    }
    /* prepared files of transactions these logs show committed: decided.
     * If one cannot be removed, the logs (the proof) must stay. */
    for (size_t i = 0; rc == SOP_OK && i < c.ncommits; i++) {
        char ppath[SOP__PATH_MAX];
        rc = sop__db_prepared_path(db, c.commits[i].txid, ppath, err);
        if (rc == SOP_OK) {
            rc = sop__os_unlink(SOP__SITE_PREP_REMOVE, ppath, err);
            if (rc == SOP_NOTFOUND)
                rc = SOP_OK;
        }
    }
    if (rc == SOP_OK)
        rc = remove_orphans(db, &c, err);
    if (rc == SOP_OK && c.nintents > 0)
        SOP__CRASH_POINT(REC_ORPHANS_REMOVED);
    /* make the redone work durable before the logs that hold it go */
    if (rc == SOP_OK && ndead > 0) {
        rc = sector_lock(db, true, err);
        if (rc == SOP_OK) {
            lockstate s;
            rc = state_read(db, &s, err);
            if (rc == SOP_OK && c.max_seq > s.seq) {
                s.seq = c.max_seq;
                rc = state_write(db, &s, err);
            }
            if (rc == SOP_OK && s.seq == c.max_seq)
                db->fence_seq = s.seq; /* our own move, not a rival's */
            sector_unlock(db);
        }
        if (rc == SOP_OK)
            rc = checkpoint_locked(db, err);
    }
    for (size_t i = 0; i < ndead; i++) {
        if (rc == SOP_OK)
            sop__os_unlink(SOP__SITE_LOG_READ, dead[i], NULL);
        sop__os_close(SOP__SITE_LOG_READ, dead_fds[i], dead[i], NULL);
        sop__free(dead[i]);
    }
    sop__free(dead);
    sop__free(dead_fds);
    rec_free(&c);
    return rc;
}

/* Clears whatever marker there is (full recovery: its owner is gone). */
static sop_rc clear_pending_any(sop_db *db, sop_err *err)
{
    lockstate s;
    SOP__TRY(state_read_locked(db, &s, err));
    return s.pending ? clear_pending_of(db, s.owner, s.pending_seq, err) : SOP_OK;
}

/* Whether the pending marker names this handle's own log. */
static sop_rc pending_is_ours(sop_db *db, bool *ours, sop_err *err)
{
    lockstate s;
    SOP__TRY(state_read_locked(db, &s, err));
    uint8_t mine[16];
    *ours = false;
    if (s.pending && db->log) {
        log_owner(db, mine);
        *ours = memcmp(mine, s.owner, 16) == 0;
    }
    return SOP_OK;
}

static sop_rc all_others_gone(sop_db *db, bool *gone, sop_err *err)
{
    /* a live process holds the lock of its log */
    *gone = true;
    sop__os_dir d;
    SOP__TRY(sop__os_dir_open(SOP__SITE_LOG_READ, db->txlog, &d, err));
    const char *name;
    sop_rc rc;
    while ((rc = sop__os_dir_next(&d, &name, err)) == SOP_OK) {
        if (!is_log_name(name))
            continue;
        char path[SOP__PATH_MAX];
        if ((rc = path_join(path, err, db->txlog, name)) != SOP_OK)
            break;
        if (db->log && strcmp(path, sop__log_path(db->log)) == 0)
            continue;
        int fd;
        sop_rc crc = sop__log_claim(path, &fd, NULL);
        if (crc == SOP_LOCKED)
            *gone = false;
        else if (crc == SOP_OK)
            sop__os_close(SOP__SITE_LOG_READ, fd, path, NULL);
    }
    sop__os_dir_close(&d);
    return rc == SOP_NOTFOUND ? SOP_OK : rc;
}

sop_rc sop_db_recover(sop_db *db, sop_err *err)
{
    if (db == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_recover: NULL database");
    SOP__TRY(sop__db_lock(db, 0, err));
    bool gone;
    sop_rc rc = all_others_gone(db, &gone, err);
    /* Full recovery replays every record above the checkpoint in order, the
     * pending one included: replaying it alone first would put it before
     * predecessors a power loss may have undone. */
    /* ... except this handle's own pending commit (its phase 2 failed):
     * our log is not among the dead ones, so finish it directly. */
    bool ours = false;
    if (rc == SOP_OK && gone)
        rc = pending_is_ours(db, &ours, err);
    if (rc == SOP_OK)
        rc = gone && !ours ? clear_pending_any(db, err) : redo_pending(db, false, err);
    /* A live process's commit in flight (its lock expired): the dead logs
     * wait for a later recovery - one of them may hold the record it is
     * finishing, and their checkpoint would have to wait for it. */
    lockstate s;
    if (rc == SOP_OK)
        rc = state_read_locked(db, &s, err);
    if (rc == SOP_OK && !s.pending)
        rc = recover_dead_logs(db, gone, err);
    sop__db_unlock(db);
    return rc;
}

/* ---- open and close ------------------------------------------------------ */

/* Keys of one database live under "sop:<its UUID>:" - the same on every
 * host that mounts it, whatever the path. */
static sop_rc open_coord(sop_db *db, sop_err *err)
{
    char ns[64], text[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_format(db->id, text);
    snprintf(ns, sizeof(ns), "sop:%s:", text);
    if (db->opts.coordination == SOP_COORD_REDIS) {
        SOP__TRY(sop__coord_redis_open(&db->opts.redis, ns, &db->coord, err));
        db->coord_expires = true;
    } else {
        SOP__TRY(sop__coord_local_open(db->lockpath, ns, &db->coord, err));
    }
    db->l2.coord = db->coord;
    return sop__coord_key(db->coord, "commit", NULL, db->commit_key, err);
}

sop_rc sop_db_open(const char *dir, const sop_db_options *opts, sop_db **out, sop_err *err)
{
    if (dir == NULL || out == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_open: NULL argument");
    sop_db *db = sop__calloc(1, sizeof(*db));
    if (db == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "sop_db_open: no memory");
    db->lock_fd = -1;
    db->dir_fd = -1;
    db->ckpt_fd = -1;
    sop_db_options_init(&db->opts);
    if (opts) {
        sop_db_options d = db->opts;
        db->opts = *opts;
        if (db->opts.lock_timeout_ms == 0)
            db->opts.lock_timeout_ms = d.lock_timeout_ms;
        if (db->opts.checkpoint_bytes == 0)
            db->opts.checkpoint_bytes = d.checkpoint_bytes;
        if (db->opts.lock_ttl_ms == 0)
            db->opts.lock_ttl_ms = d.lock_ttl_ms;
        if (db->opts.l1_cache_bytes == 0)
            db->opts.l1_cache_bytes = d.l1_cache_bytes;
        if (db->opts.redis.host == NULL)
            db->opts.redis.host = d.redis.host;
        if (db->opts.redis.port == 0)
            db->opts.redis.port = d.redis.port;
        if (db->opts.redis.timeout_ms == 0)
            db->opts.redis.timeout_ms = d.redis.timeout_ms;
    }
    sop_coordination kind = db->opts.coordination;
    if (kind != SOP_COORD_LOCAL && kind != SOP_COORD_REDIS) {
        sop__free(db);
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_open: unknown coordination kind %d",
                            (int)kind);
    }
    sop_rc rc = SOP_OK;
    uint8_t hflags = 0;
    if (snprintf(db->dir, sizeof(db->dir), "%s", dir) >= (int)sizeof(db->dir))
        rc = sop__err_set(err, SOP_LIMIT, 0, "database path too long");
    /* replication first: it decides which side every read below goes to */
    bool replicated = db->opts.passive_path && db->opts.passive_path[0];
    bool present = rc == SOP_OK && sop__repl_present(dir, NULL) == SOP_OK;
    uint32_t hm;
    if (rc == SOP_OK && replicated && !present && read_header(dir, &hm, NULL, NULL, NULL) == SOP_OK)
        rc = sop__err_set(err, SOP_INVALID, 0,
                          "%s is not replicated (set it up with sop init DIR --passive PATH)", dir);
    else if (rc == SOP_OK && (replicated || present))
        rc = sop__repl_attach(dir, db->opts.passive_path, &db->repl, err);
    db->opts.passive_path = NULL; /* the caller's string need not outlive the call */
    if (rc == SOP_OK)
        rc = read_header(dir, &db->hash_mod, db->id, &hflags, err);
    if (rc == SOP_OK && db->repl) {
        uint8_t rid[16];
        sop__repl_id(db->repl, rid);
        if (memcmp(rid, db->id, 16) != 0)
            rc = sop__err_set(err, SOP_INVALID, 0,
                              "%s: the replication state belongs to another database", dir);
    }
    if (rc == SOP_OK)
        rc = ec_resolve(dir, &db->opts, &db->ec, &db->ec_n, err);
    if (rc == SOP_OK && (hflags & HEADER_FLAG_EC) && db->ec_n == 0)
        rc = sop__err_set(err, SOP_CORRUPT, 0,
                          "%s/erasure is missing: the database keeps its blobs erasure coded and "
                          "cannot find them without it",
                          dir);
    if (rc == SOP_OK)
        rc = ec_open_drives(db, err);
    db->opts.ec = NULL; /* the caller's array need not outlive the call */
    db->opts.ec_count = 0;
    if (rc == SOP_OK)
        rc = path_join(db->txlog, err, dir, "txlog");
    if (rc == SOP_OK)
        rc = mkdir_p1(SOP__SITE_DB_LOCK, db->txlog, err);
    if (rc == SOP_OK)
        rc = path_join(db->lockpath, err, dir, "lock");
    if (rc == SOP_OK)
        rc = sop__os_open(SOP__SITE_DB_LOCK, db->lockpath, O_RDWR | O_CREAT, 0600, &db->lock_fd,
                          err);
    if (rc == SOP_OK)
        rc = sop__os_open(SOP__SITE_DB_LOCK, dir, O_RDONLY | O_DIRECTORY, 0, &db->dir_fd, err);
    /* the checkpoint mark lives with the data: replicated, in a file of its
     * own that is mirrored (the lock file is not) */
    if (rc == SOP_OK && db->repl) {
        rc = path_join(db->ckptpath, err, dir, "checkpoint");
        if (rc == SOP_OK)
            rc = sop__os_open(SOP__SITE_DB_LOCK, db->ckptpath, O_RDWR | O_CREAT, 0600, &db->ckpt_fd,
                              err);
    } else if (rc == SOP_OK) {
        db->ckpt_fd = db->lock_fd;
        memcpy(db->ckptpath, db->lockpath, sizeof(db->ckptpath));
    }
    if (rc == SOP_OK)
        rc = open_coord(db, err);
    if (rc == SOP_OK)
        sop__l1_reserve(db->opts.l1_cache_bytes);
    if (rc == SOP_OK)
        rc = sop_db_recover(db, err);
    if (rc == SOP_OK)
        rc = sop__log_create(db->txlog, 4u << 20, &db->log, err);
    if (rc != SOP_OK) {
        sop_db_close(db);
        return rc;
    }
    *out = db;
    return SOP_OK;
}

uint32_t sop_db_hash_mod(const sop_db *db)
{
    return db ? db->hash_mod : 0;
}

void sop_db_close(sop_db *db)
{
    if (db == NULL)
        return;
    while (db->txns)
        sop_txn_free(db->txns);
    bool clean = false;
    if (db->log) {
        /* a clean close: checkpoint so our log can go */
        if (sop__log_used(db->log) == 0) {
            clean = true;
        } else if (sop__db_lock(db, 0, NULL) == SOP_OK) {
            clean = checkpoint_locked(db, NULL) == SOP_OK;
            sop__db_unlock(db);
        }
        /* values we could not remove: our log keeps their intents, and
         * the next recovery removes them */
        sop__log_close(db->log, clean && db->nabandoned == 0);
    }
    for (size_t i = 0; i < db->nabandoned; i++)
        sop__free(db->abandoned[i].ids);
    sop__free(db->abandoned);
    forget_all_stores(db);
    sop__free(db->stores);
    sop__ecconf_free(db->ec, db->ec_n);
    sop__coord_close(db->coord);
    if (db->ckpt_fd >= 0 && db->ckpt_fd != db->lock_fd)
        sop__os_close(SOP__SITE_DB_LOCK, db->ckpt_fd, db->ckptpath, NULL);
    if (db->lock_fd >= 0)
        sop__os_close(SOP__SITE_DB_LOCK, db->lock_fd, db->lockpath, NULL);
    if (db->dir_fd >= 0)
        sop__os_close(SOP__SITE_DB_LOCK, db->dir_fd, db->dir, NULL);
    sop__repl_detach(db->repl);
    sop__free(db);
}

sop_rc sop_db_ec_drives(sop_db *db, void (*fn)(void *ctx, const sop_ec_drive *drive), void *ctx,
                        sop_err *err)
{
    if (db == NULL || fn == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_ec_drives: NULL argument");
    for (uint32_t i = 0; i < db->ec_n; i++) {
        const sop__ecconf *c = &db->ec[i];
        for (uint32_t j = 0; j < c->k + c->p; j++) {
            sop_ec_drive d;
            memset(&d, 0, sizeof(d));
            d.store = c->store[0] ? c->store : NULL;
            d.index = j;
            d.data_shards = c->k;
            d.parity_shards = c->p;
            d.path = c->paths[j];
            d.repair = c->repair;
            sop_err e = {0};
            d.state = sop__ec_marker_check(c, j, db->id, &e);
            if (d.state != SOP_OK)
                snprintf(d.detail, sizeof(d.detail), "%s", e.msg);
            fn(ctx, &d);
        }
    }
    return SOP_OK;
}

/* ---- replication (docs/replication.md) ----------------------------------- */

sop_rc sop_db_replication(sop_db *db, sop_replication_info *out, sop_err *err)
{
    if (db == NULL || out == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_replication: NULL argument");
    memset(out, 0, sizeof(*out));
    if (db->repl)
        sop__repl_info(db->repl, out);
    return SOP_OK;
}

static sop_rc not_replicated(sop_db *db, const char *what, sop_err *err)
{
    return sop__err_set(err, SOP_INVALID, 0,
                        "%s: %s is not replicated (set it up with a passive path: sop init DIR "
                        "--passive PATH)",
                        what, db->dir);
}

sop_rc sop_db_failover(sop_db *db, sop_err *err)
{
    if (db == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_failover: NULL database");
    if (db->repl == NULL)
        return not_replicated(db, "failover", err);
    /* under the commit lock: no commit is half way through on the old side */
    SOP__TRY(sop__db_lock(db, 0, err));
    sop_rc rc = sop__repl_switch(db->repl, err);
    sop__db_unlock(db);
    return rc;
}

sop_rc sop_db_reinstate(sop_db *db, void (*progress)(void *ctx, uint64_t bytes, uint64_t files),
                        void *ctx, sop_err *err)
{
    if (db == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "sop_db_reinstate: NULL database");
    if (db->repl == NULL)
        return not_replicated(db, "reinstate", err);
    /* Under the commit lock, after finishing any pending commit: the copy
     * is of a quiet database (writes outside commits wait at the barrier). */
    SOP__TRY(sop__db_lock(db, 0, err));
    sop_rc rc = redo_pending(db, true, err);
    bool copied = false;
    if (rc == SOP_OK)
        rc = sop__repl_reinstate(db->repl, progress, ctx, &copied, err);
    sop__db_unlock(db);
    return rc;
}
