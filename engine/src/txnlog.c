/*
 * txnlog.c - per-process transaction logs (see txnlog.h; byte layout in
 * docs/format.md, "Transaction log").
 *
 * Header (first 52 bytes of a 4096-byte block): magic "SOPLOG01" at 0,
 * version u32 at 8, reserved u32 at 12, owner ID at 16, epoch u64 at 32,
 * created_ms i64 at 40, CRC-32C of bytes 0..48 at 48. Record header (48 bytes): magic "SREC"
 * u32, type u8, 3 reserved, epoch u64 at 8, seq u64 at 16, txid at 24,
 * payload length u32 at 40, CRC-32C of header bytes 0..44 and the payload
 * at 44; the payload follows.
 */
#include "txnlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bytes.h"
#include "crc.h"
#include "err.h"
#include "fault.h"
#include "mem.h"
#include "os.h"
#include "uuid.h"

#define LOG_MAGIC   "SOPLOG01"
#define REC_MAGIC   0x43455253u /* "SREC" little-endian */
#define LOG_VERSION 1u
#define PAYLOAD_MAX (1u << 31)

struct sop__log {
    int fd;
    uint64_t last; /* offset of the last record appended */
    bool broken;   /* a retract failed: no more appends */
    char path[4096];
    uint8_t owner[16];
    uint64_t epoch;
    uint64_t end;  /* where the next record goes */
    uint64_t size; /* preallocated file size */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static sop_rc write_header(sop__log *l, sop_err *err)
{
    uint8_t h[SOP__LOG_HEADER];
    memset(h, 0, sizeof(h));
    memcpy(h, LOG_MAGIC, 8);
    sop__le_put32(h + 8, LOG_VERSION);
    memcpy(h + 16, l->owner, 16);
    sop__le_put64(h + 32, l->epoch);
    sop__le_put64(h + 40, (uint64_t)now_ms());
    sop__le_put32(h + 48, sop__crc32c(0, h, 48));
    SOP__TRY(sop__os_pwrite_all(SOP__SITE_LOG_RESET, l->fd, h, sizeof(h), 0, l->path, err));
    return sop__os_fdatasync(SOP__SITE_LOG_SYNC, l->fd, l->path, err);
}

static sop_rc log_create_once(const char *dir, uint64_t prealloc, sop__log **out, sop_err *err);

/*
 * Between creating X.log.new and locking it, another process's recovery may
 * take it for a dead creator's and remove it: then the lock or the rename
 * fails, and a fresh name is tried.
 */
sop_rc sop__log_create(const char *dir, uint64_t prealloc, sop__log **out, sop_err *err)
{
    for (int tries = 1;; tries++) {
        sop_rc rc = log_create_once(dir, prealloc, out, err);
        if ((rc != SOP_LOCKED && rc != SOP_NOTFOUND) || tries == 8)
            return rc;
    }
}

static sop_rc log_create_once(const char *dir, uint64_t prealloc, sop__log **out, sop_err *err)
{
    sop__log *l = sop__calloc(1, sizeof(*l));
    if (l == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "log: no memory");
    l->fd = -1;
    sop__uuid_v4(l->owner);
    char text[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_format(l->owner, text);
    int n = snprintf(l->path, sizeof(l->path), "%s/%s.log", dir, text);
    sop_rc rc = SOP_OK;
    char tmp[sizeof(l->path) + 8];
    if (n < 0 || (size_t)n + 5 >= sizeof(l->path))
        rc = sop__err_set(err, SOP_LIMIT, 0, "log: path under %s too long", dir);
    /* Created, locked and initialised under a name recovery ignores, then
     * renamed into place: a log is never visible unlocked, so no other
     * process can take it for a dead one's (the lock survives the rename). */
    snprintf(tmp, sizeof(tmp), "%s.new", l->path);
    if (rc == SOP_OK)
        rc = sop__os_open(SOP__SITE_LOG_OPEN, tmp, O_RDWR | O_CREAT | O_EXCL, 0600, &l->fd, err);
    if (rc == SOP_OK)
        rc = sop__os_lock(SOP__SITE_LOG_OPEN, l->fd, SOP__OS_LOCK_EXCLUSIVE, 0, 1, false, tmp, err);
    if (prealloc < SOP__LOG_HEADER * 2)
        prealloc = SOP__LOG_HEADER * 2;
    if (rc == SOP_OK) {
        rc = sop__os_fallocate(SOP__SITE_LOG_OPEN, l->fd, 0, 0, prealloc, tmp, err);
        if (rc == SOP_UNSUPPORTED)
            rc = sop__os_ftruncate(SOP__SITE_LOG_OPEN, l->fd, prealloc, tmp, err);
    }
    l->size = prealloc;
    l->epoch = 1;
    l->end = SOP__LOG_HEADER;
    if (rc == SOP_OK)
        rc = write_header(l, err);
    if (rc == SOP_OK)
        rc = sop__os_rename(SOP__SITE_LOG_OPEN, tmp, l->path, err);
    if (rc == SOP_OK)
        rc = sop__os_fsync_dir(SOP__SITE_LOG_OPEN, dir, err);
    if (rc != SOP_OK && l->fd >= 0)
        sop__os_unlink(SOP__SITE_LOG_OPEN, tmp, NULL);
    if (rc != SOP_OK) {
        sop__log_close(l, true);
        return rc;
    }
    *out = l;
    return SOP_OK;
}

sop_rc sop__log_append(sop__log *l, uint8_t type, const uint8_t txid[16], uint64_t seq,
                       const void *payload, size_t len, sop_err *err)
{
    if (len >= PAYLOAD_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "log: a %zu-byte record exceeds the 2 GiB limit",
                            len);
    uint8_t h[SOP__LOG_RECHDR];
    memset(h, 0, sizeof(h));
    sop__le_put32(h, REC_MAGIC);
    h[4] = type;
    sop__le_put64(h + 8, l->epoch);
    sop__le_put64(h + 16, seq);
    memcpy(h + 24, txid, 16);
    sop__le_put32(h + 40, (uint32_t)len);
    sop__le_put32(h + 44, sop__crc32c(sop__crc32c(0, h, 44), payload, len));
    if (l->broken)
        return sop__err_set(err, SOP_IO, 0,
                            "log %s: unusable after a failed sync; reopen the database", l->path);
    uint64_t need = l->end + sizeof(h) + len;
    if (need > l->size) {
        /* Grow in large steps: a size change costs the next fdatasync a
         * metadata write. */
        uint64_t size = l->size * 2 > need ? l->size * 2 : need + (need >> 1);
        sop_rc rc = sop__os_fallocate(SOP__SITE_LOG_WRITE, l->fd, 0, 0, size, l->path, err);
        if (rc == SOP_UNSUPPORTED)
            rc = sop__os_ftruncate(SOP__SITE_LOG_WRITE, l->fd, size, l->path, err);
        SOP__TRY(rc);
        l->size = size;
    }
    SOP__TRY(sop__os_pwrite_all(SOP__SITE_LOG_WRITE, l->fd, h, sizeof(h), l->end, l->path, err));
    if (len)
        SOP__TRY(sop__os_pwrite_all(SOP__SITE_LOG_WRITE, l->fd, payload, len, l->end + sizeof(h),
                                    l->path, err));
    l->last = l->end;
    l->end = need;
    return SOP_OK;
}

sop_rc sop__log_retract(sop__log *l, sop_err *err)
{
    static const uint8_t zero[SOP__LOG_RECHDR];
    sop_rc rc =
        sop__os_pwrite_all(SOP__SITE_LOG_WRITE, l->fd, zero, sizeof(zero), l->last, l->path, err);
    if (rc == SOP_OK)
        rc = sop__os_fdatasync(SOP__SITE_LOG_SYNC, l->fd, l->path, err);
    if (rc != SOP_OK) {
        l->broken = true;
        return rc;
    }
    l->end = l->last;
    return SOP_OK;
}

sop_rc sop__log_sync(sop__log *l, sop_err *err)
{
    return sop__os_fdatasync(SOP__SITE_LOG_SYNC, l->fd, l->path, err);
}

uint64_t sop__log_used(const sop__log *l)
{
    return l->end - SOP__LOG_HEADER;
}

sop_rc sop__log_reset(sop__log *l, sop_err *err)
{
    l->epoch++;
    SOP__TRY(write_header(l, err));
    l->end = SOP__LOG_HEADER;
    return SOP_OK;
}

void sop__log_close(sop__log *l, bool remove)
{
    if (l == NULL)
        return;
    if (remove && l->fd >= 0)
        sop__os_unlink(SOP__SITE_LOG_OPEN, l->path, NULL);
    if (l->fd >= 0)
        sop__os_close(SOP__SITE_LOG_OPEN, l->fd, l->path, NULL);
    sop__free(l);
}

const char *sop__log_path(const sop__log *l)
{
    return l->path;
}

sop_rc sop__log_claim(const char *path, int *fd_out, sop_err *err)
{
    int fd;
    SOP__TRY(sop__os_open(SOP__SITE_LOG_READ, path, O_RDWR, 0, &fd, err));
    sop_rc rc =
        sop__os_lock(SOP__SITE_LOG_READ, fd, SOP__OS_LOCK_EXCLUSIVE, 0, 1, false, path, err);
    if (rc != SOP_OK) {
        sop__os_close(SOP__SITE_LOG_READ, fd, path, NULL);
        return rc;
    }
    *fd_out = fd;
    return SOP_OK;
}

/* Whether a whole, valid record of this epoch starts anywhere in
 * [from, size): a sliding search for the record magic, each candidate
 * checked by length and CRC. */
static sop_rc find_later_record(int fd, const char *path, uint64_t epoch, uint64_t from,
                                uint64_t size, bool *found, sop_err *err)
{
    enum { CHUNK = 1 << 16 };
    uint8_t *chunk = sop__malloc(CHUNK + SOP__LOG_RECHDR);
    if (chunk == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "log %s: no memory", path);
    *found = false;
    sop_rc rc = SOP_OK;
    for (uint64_t at = from; at + SOP__LOG_RECHDR <= size && !*found && rc == SOP_OK; at += CHUNK) {
        size_t got = 0;
        rc = sop__os_pread_full(SOP__SITE_LOG_READ, fd, chunk, CHUNK + SOP__LOG_RECHDR, at, &got,
                                path, err);
        for (size_t k = 0; rc == SOP_OK && k + SOP__LOG_RECHDR <= got && k < CHUNK; k++) {
            const uint8_t *h = chunk + k;
            if (sop__le_get32(h) != REC_MAGIC || sop__le_get64(h + 8) != epoch)
                continue;
            uint32_t len = sop__le_get32(h + 40);
            uint64_t start = at + k;
            if (len >= PAYLOAD_MAX || start + SOP__LOG_RECHDR + len > size)
                continue;
            uint8_t *p = sop__malloc(len ? len : 1);
            if (p == NULL) {
                rc = sop__err_set(err, SOP_NOMEM, 0, "log %s: no memory", path);
                break;
            }
            size_t pg = 0;
            rc = sop__os_pread_full(SOP__SITE_LOG_READ, fd, p, len, start + SOP__LOG_RECHDR, &pg,
                                    path, err);
            if (rc == SOP_OK && pg == len &&
                sop__le_get32(h + 44) == sop__crc32c(sop__crc32c(0, h, 44), p, len))
                *found = true;
            sop__free(p);
            if (*found)
                break;
        }
    }
    sop__free(chunk);
    return rc;
}

sop_rc sop__log_scan(int fd, const char *path, sop_rc (*fn)(void *ctx, const sop__logrec *r),
                     void *ctx, sop_err *err)
{
    uint8_t h[64];
    size_t got;
    SOP__TRY(sop__os_pread_full(SOP__SITE_LOG_READ, fd, h, 52, 0, &got, path, err));
    if (got < 52 || memcmp(h, LOG_MAGIC, 8) != 0 || sop__le_get32(h + 48) != sop__crc32c(0, h, 48))
        return SOP_OK; /* never got a valid header: created and died at once */
    if (sop__le_get32(h + 8) != LOG_VERSION)
        return sop__err_set(err, SOP_CORRUPT, 0, "log %s: unsupported version %u", path,
                            sop__le_get32(h + 8));
    uint64_t epoch = sop__le_get64(h + 32);
    struct stat st;
    SOP__TRY(sop__os_fstat(SOP__SITE_LOG_READ, fd, &st, path, err));
    uint64_t size = (uint64_t)st.st_size, off = SOP__LOG_HEADER;
    uint8_t *buf = NULL;
    size_t cap = 0;
    sop_rc rc = SOP_OK;
    while (off + SOP__LOG_RECHDR <= size) {
        rc = sop__os_pread_full(SOP__SITE_LOG_READ, fd, h, SOP__LOG_RECHDR, off, &got, path, err);
        if (rc != SOP_OK || got < SOP__LOG_RECHDR)
            break;
        if (sop__le_get32(h) != REC_MAGIC || sop__le_get64(h + 8) != epoch)
            break;
        uint32_t len = sop__le_get32(h + 40);
        if (len >= PAYLOAD_MAX || off + SOP__LOG_RECHDR + len > size)
            break;
        if (len > cap) {
            uint8_t *grown = sop__realloc(buf, len);
            if (grown == NULL) {
                rc = sop__err_set(err, SOP_NOMEM, 0, "log %s: no memory for a %u-byte record", path,
                                  len);
                break;
            }
            buf = grown;
            cap = len;
        }
        if (len) {
            rc = sop__os_pread_full(SOP__SITE_LOG_READ, fd, buf, len, off + SOP__LOG_RECHDR, &got,
                                    path, err);
            if (rc != SOP_OK || got < len)
                break;
        }
        if (sop__le_get32(h + 44) != sop__crc32c(sop__crc32c(0, h, 44), buf, len))
            break; /* a torn tail - unless valid records follow (below) */
        sop__logrec r = {.type = h[4], .seq = sop__le_get64(h + 16), .payload = buf, .len = len};
        memcpy(r.txid, h + 24, 16);
        if ((rc = fn(ctx, &r)) != SOP_OK)
            break;
        off += SOP__LOG_RECHDR + len;
    }
    /* Where the scan stopped must be the end: an unsynced append torn by a
     * crash. A valid record further on means damage in the middle - records
     * after it would be silently lost (and their transactions taken for
     * abandoned), so that is corruption, not a tail. */
    if (rc == SOP_OK && off + SOP__LOG_RECHDR <= size) {
        bool later = false;
        rc = find_later_record(fd, path, epoch, off + 1, size, &later, err);
        if (rc == SOP_OK && later)
            rc = sop__err_set(err, SOP_CORRUPT, 0,
                              "log %s: a damaged record at offset %llu is followed by valid ones",
                              path, (unsigned long long)off);
    }
    sop__free(buf);
    return rc;
}
