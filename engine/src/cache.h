/*
 * cache.h - the L1 cache: decoded node bodies shared by every database
 * handle and transaction of the process (docs/caching.md).
 *
 * Keyed by (physical ID, version). A physical ID names one body forever (a
 * changed node gets a fresh one), so an entry is never stale: readers
 * resolve the logical ID to the current handle first and ask for its
 * active physical ID. Entries only age out (least recently used first)
 * once the cache holds more than its byte budget.
 *
 * Invariants:
 *  1. Thread-safe (one mutex). Cached nodes are shared, not copied: a
 *     reader gets the cached node itself with a reference (refs > 0) and
 *     must never change it; a transaction that changes a node first clones
 *     it (txn.c, txr_writable). A node lives while the cache or any reader
 *     holds a reference, so eviction never frees a node in use.
 *  2. The budget is the largest sop_db_options.l1_cache_bytes any handle
 *     asked for; 0 entries are kept while no handle asked.
 *  3. Out of memory is a miss, never an error.
 */
#ifndef SOP_CACHE_H
#define SOP_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "node.h"

/* Raises the budget to at least `bytes`. */
void sop__l1_reserve(uint64_t bytes);
/* The cached body of (phys, version) with a reference for the caller, or
 * NULL. */
sop__node *sop__l1_get(const uint8_t phys[16], uint32_t version);
/* Hands a private node n (just decoded) to the cache as the body of (phys,
 * version) and returns the node the caller should use, with a reference:
 * n itself, now shared; the node already cached (n is freed); or n still
 * private (n->shared false) when it cannot be cached (too large, no
 * memory). */
sop__node *sop__l1_share(const uint8_t phys[16], uint32_t version, sop__node *n);
/* Drops the caller's reference to a node from sop__l1_get/share; a
 * private node is freed. NULL is ignored. */
void sop__l1_release(sop__node *n);
/* For a caller about to change n, the cached body of (phys, version) it
 * holds a reference to: when nobody else uses n (only the cache and the
 * caller hold references), n leaves the cache and becomes the caller's
 * private node (true); otherwise false and the caller must clone it. */
bool sop__l1_take(const uint8_t phys[16], uint32_t version, sop__node *n);
/* Caches a copy of n as the body of (phys, version). */
void sop__l1_put(const uint8_t phys[16], uint32_t version, const sop__node *n);

typedef struct sop__l1_stats {
    uint64_t hits, misses, entries, bytes, budget;
} sop__l1_stats;
void sop__l1_stats_get(sop__l1_stats *out);
/* Drops everything (tests). */
void sop__l1_clear(void);

#endif
