/*
 * blob.h - the blob store: one file per node body or separately stored
 * value, named by its 16-byte physical ID, under a fan-out of folders
 * (docs/format.md, "Blob files").
 *
 * Layout: <root>/<hh>/<uuid> where hh is the first two hex digits of the
 * ID's text form and uuid its full text form. Folders are created 0700 and
 * files 0600. Blobs are write-once: an ID is never reused for other bytes,
 * so a blob needs no locking and a cached copy is never stale.
 *
 * Invariants:
 *  1. sop__blob_put writes the whole blob or reports an error; a blob that
 *     exists after a crash may be partial, which is why nothing points at a
 *     blob until its bytes are durable - in the log record (commit) or by
 *     SOP__BLOB_SYNC (file and, when created, its folder fsynced).
 *  2. Paths are built only from IDs, so nothing outside <root> is touched.
 *  3. A missing blob is SOP_NOTFOUND; a read error SOP_IO naming the file.
 */
#ifndef SOP_BLOB_H
#define SOP_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sop.h"

typedef struct sop__blobstore sop__blobstore;

/* root: the folder that holds the fan-out (created 0700 on first put). */
sop_rc sop__blob_open(const char *root, sop__blobstore **out, sop_err *err);
void sop__blob_close(sop__blobstore *bs);

/* An erasure-coded blob store (erasure.h): the same calls, each blob kept as
 * k+p shards under <c->paths[i]>/<store>. c must outlive the handle. */
struct sop__ecconf;
sop_rc sop__blob_open_ec(const struct sop__ecconf *c, const char *store, sop__blobstore **out,
                         sop_err *err);
bool sop__blob_is_ec(const sop__blobstore *bs);
/* Reads and verifies a blob as scrub does: every shard of an erasure-coded
 * blob (repairing with `repair`), the whole file of a plain one. Counters as
 * sop__ec_scrub. */
sop_rc sop__blob_scrub(sop__blobstore *bs, const uint8_t id[16], bool repair, uint64_t *shards,
                       uint64_t *bad, uint64_t *repaired,
                       void (*problem)(void *ctx, const char *msg), void *ctx, sop_err *err);
/* Removes whatever is left of a blob (every shard on every drive). */
sop_rc sop__blob_remove_all(sop__blobstore *bs, const uint8_t id[16], sop_err *err);
/* SOP_OK if the blob's file (shard i's file for the plain store a shard
 * lives in) exists, SOP_NOTFOUND if not. */
sop_rc sop__blob_exists(sop__blobstore *bs, const uint8_t id[16], sop_err *err);

/* fsync the file and its <hh> folder, and the root and the root's parent
 * until this handle has synced them once (blob.c invariant 3). */
#define SOP__BLOB_SYNC 1u
/* Replace a blob whose bytes may differ (an erasure-coding shard being
 * repaired): written under a temporary name in its folder, synced, renamed
 * over the old file, folder synced. Implies SOP__BLOB_SYNC. */
#define SOP__BLOB_REPLACE 2u

/* The largest blob: a separately stored value of SOP_VALUE_SEPARATE_MAX
 * (1 GiB) bytes plus 64 KiB for its encoding's header. Bigger is SOP_LIMIT
 * on put and SOP_CORRUPT on get. */
#define SOP__BLOB_SIZE_MAX ((size_t)SOP_VALUE_SEPARATE_MAX + 65536u)

sop_rc sop__blob_put(sop__blobstore *bs, const uint8_t id[16], const void *data, size_t len,
                     unsigned flags, sop_err *err);
/* The whole blob in a buffer from sop__malloc (caller frees with sop__free). */
sop_rc sop__blob_get(sop__blobstore *bs, const uint8_t id[16], uint8_t **data, size_t *len,
                     sop_err *err);
/* Removing a missing blob is not an error. */
sop_rc sop__blob_remove(sop__blobstore *bs, const uint8_t id[16], sop_err *err);
/* fsync of a blob written earlier and of its folder (checkpoints). */
sop_rc sop__blob_sync(sop__blobstore *bs, const uint8_t id[16], sop_err *err);
/* Calls fn for every blob ID present (names that are not IDs are skipped);
 * a non-OK result of fn stops the listing and is returned. */
sop_rc sop__blob_list(sop__blobstore *bs, sop_rc (*fn)(void *ctx, const uint8_t id[16]), void *ctx,
                      sop_err *err);
/* The path of a blob, for messages: out must hold SOP__BLOB_PATH_MAX. */
#define SOP__BLOB_PATH_MAX 4096
void sop__blob_path(const sop__blobstore *bs, const uint8_t id[16], char *out);

#endif
