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
 *  1. Thread-safe (one mutex); callers get private clones, never the
 *     cached node itself, so the tree may change what it got.
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
/* A private clone of the cached body of (phys, version), or NULL. */
sop__node *sop__l1_get(const uint8_t phys[16], uint32_t version);
/* Caches a copy of n as the body of (phys, version). */
void sop__l1_put(const uint8_t phys[16], uint32_t version, const sop__node *n);

typedef struct sop__l1_stats {
    uint64_t hits, misses, entries, bytes, budget;
} sop__l1_stats;
void sop__l1_stats_get(sop__l1_stats *out);
/* Drops everything (tests). */
void sop__l1_clear(void);

#endif
