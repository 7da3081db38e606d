/*
 * coord_local.c - coordination on one host without a server (coord.h):
 * a named lock is an OFD write lock on one byte of the database's lock
 * file, at an offset derived from the key (docs/locking.md).
 *
 * The kernel releases a dead holder's locks at once, so there is nothing to
 * expire: ttl_ms is ignored, and a live holder - even a stopped one - keeps
 * its lock. Two keys may hash to one byte; that only makes them one lock
 * (more waiting, never less exclusion). Tokens are kept per handle so that
 * extend and unlock act only for the owner, as with Redis.
 */
#include <fcntl.h>
#include <string.h>

#include "coord.h"
#include "err.h"
#include "mem.h"
#include "os.h"

#define HELD_MAX 16
/* Far above the file's data (the lock file is a few KiB): 2^40 .. 2^40+2^36 */
#define KEY_BASE  (1ull << 40)
#define KEY_RANGE (1ull << 36)

typedef struct held {
    uint64_t off;
    uint8_t token[SOP__COORD_TOKEN_LEN];
} held;

typedef struct local {
    sop__coord c;
    int fd;
    char path[4096]; /* the lock file (SOP__PATH_MAX) */
    held held[HELD_MAX];
    size_t nheld;
} local;

static uint64_t key_off(const char *key)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return KEY_BASE + h % KEY_RANGE;
}

static held *find(local *l, uint64_t off)
{
    for (size_t i = 0; i < l->nheld; i++)
        if (l->held[i].off == off)
            return &l->held[i];
    return NULL;
}

static sop_rc l_try_lock(sop__coord *c, const char *key, const uint8_t token[SOP__COORD_TOKEN_LEN],
                         uint32_t ttl_ms, sop_err *err)
{
    (void)ttl_ms;
    local *l = (local *)c;
    uint64_t off = key_off(key);
    /* OFD locks are per descriptor: this handle taking its own byte again
     * would succeed, so the handle's table answers first */
    if (find(l, off))
        return SOP_LOCKED;
    if (l->nheld == HELD_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "local coordination: more than %d locks held",
                            HELD_MAX);
    SOP__TRY(sop__os_lock(SOP__SITE_COORD_LOCK, l->fd, SOP__OS_LOCK_EXCLUSIVE, off, 1, false,
                          l->path, err));
    l->held[l->nheld].off = off;
    memcpy(l->held[l->nheld].token, token, SOP__COORD_TOKEN_LEN);
    l->nheld++;
    return SOP_OK;
}

static sop_rc l_extend(sop__coord *c, const char *key, const uint8_t token[SOP__COORD_TOKEN_LEN],
                       uint32_t ttl_ms, sop_err *err)
{
    (void)ttl_ms;
    held *h = find((local *)c, key_off(key));
    if (h == NULL || memcmp(h->token, token, SOP__COORD_TOKEN_LEN) != 0)
        return sop__err_set(err, SOP_CONFLICT, 0, "local lock %s is not held by this owner", key);
    return SOP_OK;
}

static sop_rc l_unlock(sop__coord *c, const char *key, const uint8_t token[SOP__COORD_TOKEN_LEN],
                       sop_err *err)
{
    local *l = (local *)c;
    held *h = find(l, key_off(key));
    if (h == NULL || memcmp(h->token, token, SOP__COORD_TOKEN_LEN) != 0)
        return sop__err_set(err, SOP_CONFLICT, 0, "local lock %s is not held by this owner", key);
    sop_rc rc = sop__os_unlock(SOP__SITE_COORD_LOCK, l->fd, h->off, 1, l->path, err);
    *h = l->held[--l->nheld];
    return rc;
}

static sop_rc l_epoch(sop__coord *c, uint64_t *out, sop_err *err)
{
    (void)c;
    (void)err;
    *out = 1; /* the kernel never forgets a live holder's lock */
    return SOP_OK;
}

static void l_close(sop__coord *c)
{
    local *l = (local *)c;
    if (l->fd >= 0)
        sop__os_close(SOP__SITE_COORD_LOCK, l->fd, l->path, NULL); /* drops its locks */
    sop__free(l);
}

static const sop__coord_ops local_ops = {
    .try_lock = l_try_lock,
    .extend = l_extend,
    .unlock = l_unlock,
    .epoch = l_epoch,
    .close = l_close,
};

sop_rc sop__coord_local_open(const char *lockpath, const char *ns, sop__coord **out, sop_err *err)
{
    local *l = sop__calloc(1, sizeof(*l));
    if (l == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "local coordination: no memory");
    l->fd = -1;
    l->c.ops = &local_ops;
    l->c.kind = "local";
    if (strlen(ns) >= sizeof(l->c.ns) || strlen(lockpath) >= sizeof(l->path)) {
        sop__free(l);
        return sop__err_set(err, SOP_LIMIT, 0, "local coordination: name too long");
    }
    strcpy(l->c.ns, ns);
    strcpy(l->path, lockpath);
    sop_rc rc = sop__os_open(SOP__SITE_COORD_LOCK, lockpath, O_RDWR | O_CREAT, 0600, &l->fd, err);
    if (rc != SOP_OK) {
        sop__free(l);
        return rc;
    }
    *out = &l->c;
    return SOP_OK;
}
