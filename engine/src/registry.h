/*
 * registry.h - the registry: an on-disk hash map from a node's logical ID to
 * its 62-byte handle, in the Go original's layout (docs/format.md,
 * "Registry"; docs/registry.md).
 *
 * A store's registry is a chain of segment files <store>/<store>-<i>.reg
 * (i = 1, 2, ...), each hash_mod x 4096 bytes. A handle lives in block
 * (high 64 bits of its logical ID, big-endian) mod hash_mod of the first
 * segment whose block has it or has room; within the block it prefers slot
 * (low 64 bits) mod 66. A block is 66 handles of 62 bytes and a CRC-32
 * (IEEE, little-endian) of the first 4092 bytes at offset 4092; an all-zero
 * block is a valid empty block.
 *
 * Invariants:
 *  1. Lookups match by logical ID, never by position; a batch's results are
 *     returned in the caller's order.
 *  2. A write looks for an existing record of the logical ID in every
 *     segment before it takes a free slot, so one ID never has two records.
 *  3. A block whose checksum fails is SOP_CORRUPT naming the file and block
 *     - never read as empty - unless the caller is recovery redoing that
 *     block's changes (SOP__REG_REPAIR, docs/recovery.md).
 *  4. A batch of changes reads and writes each touched block exactly once,
 *     under an exclusive OFD lock on that block's 4096 bytes.
 *  5. Segment files are created whole (sparse) and fsynced with their folder
 *     before a handle is written into them; block writes are not synced here
 *     (the transaction log makes them durable; sop__registry_sync flushes).
 */
#ifndef SOP_REGISTRY_H
#define SOP_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sop.h"

#define SOP__HANDLE_SIZE          62
#define SOP__REG_BLOCK            4096
#define SOP__REG_SLOTS            66
#define SOP__REG_HASH_MOD_MIN     250u
#define SOP__REG_HASH_MOD_DEFAULT 250u
#define SOP__REG_HASH_MOD_MAX     750000u
#define SOP__REG_SEGMENTS_MAX     1000u

/* The record of one logical node ID (docs/format.md for the byte layout). */
typedef struct sop__handle {
    uint8_t lid[16]; /* logical ID */
    uint8_t pa[16];  /* physical ID A (nil: unused) */
    uint8_t pb[16];  /* physical ID B (nil: unused) */
    bool active_b;   /* which physical ID is live */
    int32_t version; /* bumped by every commit that changes the node */
    int64_t wip_ms;  /* in-flight timestamp (kept for layout compatibility) */
    bool deleted;
} sop__handle;

void sop__handle_encode(const sop__handle *h, uint8_t out[SOP__HANDLE_SIZE]);
void sop__handle_decode(const uint8_t in[SOP__HANDLE_SIZE], sop__handle *h);
static inline const uint8_t *sop__handle_active(const sop__handle *h)
{
    return h->active_b ? h->pb : h->pa;
}

typedef struct sop__registry sop__registry;

/*
 * Opens the registry of store `name` in folder `dir` (the store's folder).
 * Nothing is created until the first write. writable = false opens segment
 * files read-only.
 */
sop_rc sop__registry_open(const char *dir, const char *name, uint32_t hash_mod, bool writable,
                          sop__registry **out, sop_err *err);
void sop__registry_close(sop__registry *r);

/* Batch lookup: found[i] tells whether lids[i] has a record, out[i] is it. */
sop_rc sop__registry_get(sop__registry *r, const uint8_t (*lids)[16], size_t n, sop__handle *out,
                         bool *found, sop_err *err);

typedef enum sop__reg_op_kind {
    SOP__REG_PUT, /* insert or replace the record of h.lid */
    SOP__REG_DEL  /* remove the record of h.lid (absent: nothing to do) */
} sop__reg_op_kind;

typedef struct sop__reg_op {
    sop__reg_op_kind kind;
    sop__handle h;
} sop__reg_op;

/* flags for sop__registry_apply */
#define SOP__REG_IF_NEWER                                                                          \
    1u /* PUT only if no record or its version < h.version;                                        \
          DEL only if the record's version <= h.version (redo) */
#define SOP__REG_REPAIR                                                                            \
    2u /* recovery: a block with a bad checksum is patched                                         \
          and rewritten instead of refused */

/* Applies a batch of changes, grouped by block (invariant 4). Not atomic
 * across blocks: the transaction log is what makes a batch all-or-nothing. */
sop_rc sop__registry_apply(sop__registry *r, const sop__reg_op *ops, size_t n, unsigned flags,
                           sop_err *err);

/* fdatasync of every segment written since the last sync. */
sop_rc sop__registry_sync(sop__registry *r, sop_err *err);

/* Checks every block's checksum (SOP_CORRUPT on the first bad one) and
 * calls fn for every handle; fn returning non-OK stops the scan. */
sop_rc sop__registry_scan(sop__registry *r, sop_rc (*fn)(void *ctx, const sop__handle *h),
                          void *ctx, sop_err *err);

/* Number of segment files that exist. */
uint32_t sop__registry_segments(const sop__registry *r);

#endif
