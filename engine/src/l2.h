/*
 * l2.h - the shared (L2) cache: registry handles, node bodies, separately
 * stored values and store infos, kept in the coordination backend's cache
 * (Redis) for other processes and hosts, each per its store's cache config
 * (sop_store_options.cache; docs/caching.md).
 *
 * Keys (under the backend's "sop:<database uuid>:" namespace):
 *   H<lid>   a registry handle         mutable   store's registry_ms
 *   N<phys>  an encoded node body      immutable store's node_ms
 *   V<id>    a separately stored value immutable store's value_ms
 *   S<name>  a store info              mutable   store's store_info_ms
 * Every entry is "crc32c(payload) u32 LE | payload".
 *
 * Invariants:
 *  1. Everything here is a hint. An entry whose checksum, size or ID does
 *     not match what the caller asked for is a miss. Commits validate
 *     against storage, never against this cache, so a stale entry costs a
 *     validation failure and a retry, never a wrong committed result.
 *  2. N and V entries are never stale (a physical ID or value ID names one
 *     body forever); they only expire. H and S entries are removed by the
 *     commit that changes them (after its registry write, before it
 *     returns) and by any transaction whose validation found them stale.
 *  3. Errors are misses. A failing backend is left alone for
 *     SOP__L2_BACKOFF_MS instead of costing every read a timeout (the
 *     commit lock, which cannot do without the backend, reports it).
 *  4. A TTL <= 0 means "not cached": nothing is read or written then.
 *  5. One thread at a time per sop__l2 (it lives in its sop_db).
 */
#ifndef SOP_L2_H
#define SOP_L2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "coord.h"
#include "registry.h"

#define SOP__L2_BACKOFF_MS 1000
#define SOP__L2_BATCH      128 /* keys per pipelined removal */

typedef struct sop__l2_stats {
    uint64_t hits, misses, puts, removed, errors;
} sop__l2_stats;

typedef struct sop__l2 {
    sop__coord *coord; /* NULL, or a backend without a cache: L2 is off */
    int64_t off_until_ms;
    sop__l2_stats stats;
} sop__l2;

/* Whether the backend has a cache (it may still be backing off). */
bool sop__l2_available(const sop__l2 *l2);

/* Handles (H): a hit fills *h and returns true. */
bool sop__l2_handle_get(sop__l2 *l2, const sop__storeinfo *si, const uint8_t lid[16],
                        sop__handle *h);
void sop__l2_handle_put(sop__l2 *l2, const sop__storeinfo *si, const sop__handle *h);

/* Node bodies (N) and separately stored values (V): a hit returns true
 * with the payload in *data (sop__malloc; the caller frees it). */
bool sop__l2_node_get(sop__l2 *l2, const sop__storeinfo *si, const uint8_t phys[16], uint8_t **data,
                      size_t *len);
void sop__l2_node_put(sop__l2 *l2, const sop__storeinfo *si, const uint8_t phys[16],
                      const uint8_t *data, size_t len);
bool sop__l2_value_get(sop__l2 *l2, const sop__storeinfo *si, const uint8_t id[16], uint8_t **data,
                       size_t *len);
void sop__l2_value_put(sop__l2 *l2, const sop__storeinfo *si, const uint8_t id[16],
                       const uint8_t *data, size_t len);

/* Store infos (S), looked up by name with the TTL the caller last saw in
 * that store's info. */
bool sop__l2_info_get(sop__l2 *l2, const char *name, int64_t ttl_ms, bool sliding,
                      sop__storeinfo *out);
void sop__l2_info_put(sop__l2 *l2, const sop__storeinfo *si);

/* Removal of mutable entries, batched into pipelined round trips. */
typedef struct sop__l2_batch {
    sop__l2 *l2;
    size_t n;
    char keys[SOP__L2_BATCH][SOP__COORD_KEY_MAX];
} sop__l2_batch;

void sop__l2_batch_init(sop__l2_batch *b, sop__l2 *l2);
/* Queues S<name> if the store caches its info. */
void sop__l2_batch_info(sop__l2_batch *b, const sop__storeinfo *si);
/* Queues H<lid> if the store caches its handles. */
void sop__l2_batch_handle(sop__l2_batch *b, const sop__storeinfo *si, const uint8_t lid[16]);
/* Sends what is queued (and is ready for more). */
void sop__l2_batch_flush(sop__l2_batch *b);

#endif
