/*
 * coord.h - coordination between the processes sharing a database: named
 * locks with an owner token and a time to live, a shared (L2) cache, and the
 * detection of a coordination service that lost its state (docs/locking.md,
 * docs/caching.md).
 *
 * Two backends, chosen per database handle (sop_db_options.coordination):
 *  - local (coord_local.c): one host, no server. Locks are OFD byte-range
 *    locks on the database's lock file, released by the kernel when their
 *    holder dies; they never expire while it lives (ttl_ms is ignored). No
 *    L2 cache (the page cache plays that part).
 *  - redis (coord_redis.c, hiredis): many hosts. Locks are keys set with
 *    SET key token NX PX ttl; only the owner extends or releases them
 *    (compare-and-pexpire / compare-and-delete scripts). The L2 cache is
 *    plain keys with TTLs. Every call has a timeout; an unreachable server
 *    is SOP_UNREACHABLE, never a silent fallback to no locking.
 *
 * Invariants:
 *  1. A lock is held by (key, token). unlock and extend act only while the
 *     token still owns the key; a holder whose lock expired (redis) gets
 *     SOP_CONFLICT from extend and its unlock deletes nothing.
 *  2. Correctness never rests on a backend lock alone: whatever a lock
 *     protects is also fenced on storage (docs/locking.md), so a holder
 *     paused past its TTL cannot overwrite a newer commit.
 *  3. Cache entries are hints: readers validate against storage (a stale
 *     or lost entry costs a retry or a read, never a wrong result).
 *  4. epoch() changes whenever the backend lost its state (a Redis restart
 *     without persistence, FLUSHALL, FLUSHDB): callers treat every lock and
 *     cache entry from before as gone.
 *  5. A coord handle is used by one thread at a time (like its sop_db).
 */
#ifndef SOP_COORD_H
#define SOP_COORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sop.h"

#define SOP__COORD_KEY_MAX   256 /* bytes of a lock or cache key, namespace included */
#define SOP__COORD_TOKEN_LEN 16

typedef struct sop__coord sop__coord;

typedef struct sop__coord_ops {
    /* Takes `key` for ttl_ms if nobody holds it: SOP_OK, or SOP_LOCKED
     * (held by another token). Never waits. */
    sop_rc (*try_lock)(sop__coord *c, const char *key, const uint8_t token[SOP__COORD_TOKEN_LEN],
                       uint32_t ttl_ms, sop_err *err);
    /* Resets the TTL of a lock the token holds: SOP_OK, or SOP_CONFLICT if
     * the token no longer holds it. */
    sop_rc (*extend)(sop__coord *c, const char *key, const uint8_t token[SOP__COORD_TOKEN_LEN],
                     uint32_t ttl_ms, sop_err *err);
    /* Releases a lock if the token still holds it: SOP_OK, or SOP_CONFLICT
     * if it did not (nothing is deleted then). */
    sop_rc (*unlock)(sop__coord *c, const char *key, const uint8_t token[SOP__COORD_TOKEN_LEN],
                     sop_err *err);
    /* L2 cache; NULL in backends without one. get: SOP_NOTFOUND on a miss;
     * *val from sop__malloc; slide_ms > 0 resets the entry's TTL (sliding
     * expiry). set: ttl_ms > 0. del: removes n keys (missing ones are
     * fine), in one round trip. */
    sop_rc (*get)(sop__coord *c, const char *key, uint32_t slide_ms, uint8_t **val, size_t *len,
                  sop_err *err);
    sop_rc (*set)(sop__coord *c, const char *key, const void *val, size_t len, uint32_t ttl_ms,
                  sop_err *err);
    sop_rc (*del)(sop__coord *c, const char *const *keys, size_t n, sop_err *err);
    /* The backend's state generation (invariant 4). */
    sop_rc (*epoch)(sop__coord *c, uint64_t *out, sop_err *err);
    void (*close)(sop__coord *c);
} sop__coord_ops;

struct sop__coord {
    const sop__coord_ops *ops;
    const char *kind; /* "local" or "redis", for messages */
    /* every key is prefixed with this: "sop:<database uuid>:" */
    char ns[64];
};

/*
 * Opens the local backend over the database lock file `lockpath` (its own
 * descriptor, so its locks conflict with every other handle's, in this
 * process too). Keys map to byte offsets far above the file's data.
 */
sop_rc sop__coord_local_open(const char *lockpath, const char *ns, sop__coord **out, sop_err *err);

/* Opens the redis backend (SOP_UNREACHABLE if it cannot connect or
 * authenticate). */
sop_rc sop__coord_redis_open(const sop_redis_options *o, const char *ns, sop__coord **out,
                             sop_err *err);

/* Builds "<ns><a><b>" into out (SOP_LIMIT past SOP__COORD_KEY_MAX). */
sop_rc sop__coord_key(const sop__coord *c, const char *a, const char *b,
                      char out[SOP__COORD_KEY_MAX], sop_err *err);

/*
 * Takes a lock, retrying with jittered exponential backoff (1..32 ms) until
 * deadline_ms (wall clock, ms): SOP_OK, SOP_TIMEOUT naming the key, or the
 * backend's error (SOP_UNREACHABLE...). A fresh random token is written to
 * token.
 */
sop_rc sop__coord_lock(sop__coord *c, const char *key, uint32_t ttl_ms, int64_t deadline_ms,
                       uint8_t token[SOP__COORD_TOKEN_LEN], sop_err *err);

void sop__coord_close(sop__coord *c);

#endif
