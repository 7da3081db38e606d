/*
 * idmap.h - an open-addressing hash map from 16-byte IDs to pointers, used
 * wherever the engine indexes nodes by logical ID (in-memory node
 * repository, transaction-local node caches).
 *
 * Invariants:
 *  1. Linear probing over a power-of-two table, load factor <= 1/2; removal
 *     shifts the following cluster back (no tombstones), so lookups never
 *     degrade with churn.
 *  2. The hash is the ID's last 8 bytes: IDs are random (v4) or end in 62
 *     random bits (v7); callers never use structured IDs as keys.
 *  3. Values are never NULL (NULL means "absent" to sop__idmap_get).
 */
#ifndef SOP_IDMAP_H
#define SOP_IDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "sop.h"

typedef struct sop__idmap_slot {
    uint8_t id[16];
    void *val; /* NULL: empty slot */
} sop__idmap_slot;

typedef struct sop__idmap {
    sop__idmap_slot *slots;
    size_t mask; /* capacity - 1; capacity is 0 before the first put */
    size_t count;
} sop__idmap;

void sop__idmap_init(sop__idmap *m);
/* Frees the table (not the values). */
void sop__idmap_free(sop__idmap *m);
void *sop__idmap_get(const sop__idmap *m, const uint8_t id[16]);
/* Inserts or replaces. SOP_NOMEM leaves the map unchanged. */
sop_rc sop__idmap_put(sop__idmap *m, const uint8_t id[16], void *val, sop_err *err);
/* Removes and returns the value, or NULL if absent. */
void *sop__idmap_del(sop__idmap *m, const uint8_t id[16]);
/* Iteration: for (size_t i = 0; (i = sop__idmap_next(m, i, &slot)) != 0;) */
size_t sop__idmap_next(const sop__idmap *m, size_t pos, sop__idmap_slot **slot);

#endif
