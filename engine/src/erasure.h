/*
 * erasure.h - Reed-Solomon erasure coding of blobs over ISA-L
 * (docs/erasure_coding.md; formats in docs/format.md, "Shard files" and
 * "Erasure-coding configuration").
 *
 * Three parts:
 *  - the codec (sop__rs): k data + p parity shards of equal length, a
 *    Cauchy matrix whose top k rows are the identity, so data shards are the
 *    blob's bytes cut in k pieces (the last one zero-padded);
 *  - the shard header: 64 bytes before each shard's payload naming the
 *    blob, the shard's index, k, p, the blob's length and checksum and the
 *    payload's checksum;
 *  - the erasure-coded blob store (sop__ecstore): k+p plain blob stores,
 *    <paths[i]>/<store>, shard i of a blob being the blob file of the same
 *    ID in store i. blob.c hands a sop__blobstore's calls to it when the
 *    store is erasure coded, so callers never see the difference.
 *
 * Invariants:
 *  1. A read verifies every shard it uses: file size, header checksum and
 *     fields (the blob ID, the shard's index, k and p as configured, the
 *     lengths consistent), payload checksum; and the rebuilt blob against
 *     the blob checksum the shards carry. A shard failing any of these is
 *     treated as missing. Up to p missing shards are rebuilt; more is
 *     SOP_CORRUPT (SOP_NOTFOUND when no shard exists at all). Wrong bytes
 *     are never returned.
 *  2. A put succeeds when at least k shards were written (and synced, with
 *     SOP__BLOB_SYNC): the blob can be read back. With fewer, the shards it
 *     wrote are removed and the first drive error is returned.
 *  3. Repair writes a rebuilt shard under a temporary name, syncs it and
 *     renames it over the bad one: a crash leaves the old shard or the new
 *     one, both of which reads handle. A shard is only repaired while
 *     another shard of its blob still exists (a blob being removed is not
 *     brought back).
 *  4. Remove, sync and list tolerate up to p failing drives (a dead drive
 *     must not stop commits); shards left on a failed drive are orphans that
 *     scrub removes.
 */
#ifndef SOP_ERASURE_H
#define SOP_ERASURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blob.h"
#include "sop.h"

#define SOP__SHARD_HEADER 64u

/* ---- the codec ---- */

typedef struct sop__rs sop__rs;

/* k >= 1, p >= 1, k + p <= SOP_EC_SHARDS_MAX. */
sop_rc sop__rs_new(uint32_t k, uint32_t p, sop__rs **out, sop_err *err);
void sop__rs_free(sop__rs *rs);
/* data[0..k) in, parity[0..p) out; every buffer len bytes. */
void sop__rs_encode(const sop__rs *rs, size_t len, uint8_t *const *data, uint8_t *const *parity);
/* shards[0..k+p): `have` has bit i set for every good shard; every other
 * shard's buffer (len bytes, allocated by the caller) is rebuilt. SOP_CORRUPT
 * when fewer than k are good. */
sop_rc sop__rs_rebuild(const sop__rs *rs, size_t len, uint8_t *const *shards, uint32_t have,
                       sop_err *err);

/* ---- shard headers ---- */

typedef struct sop__shard_hdr {
    uint8_t blob_id[16];
    uint32_t index, k, p;
    uint64_t blob_len;
    uint32_t payload_len;
    uint32_t blob_crc;
    uint32_t payload_crc;
} sop__shard_hdr;

/* The payload length of each shard of a blob of blob_len bytes. */
size_t sop__shard_len(uint64_t blob_len, uint32_t k);
void sop__shard_hdr_encode(const sop__shard_hdr *h, uint8_t out[SOP__SHARD_HEADER]);
/* Checks a whole shard file's bytes: header checksum, magic, version, the
 * fields against `want` (blob ID, index, k, p), sizes, payload checksum.
 * SOP_CORRUPT naming what is wrong (without a path: the caller adds it). */
sop_rc sop__shard_verify(const uint8_t *file, size_t len, const sop__shard_hdr *want,
                         sop__shard_hdr *out, sop_err *err);

/* ---- the configuration file and drive markers ---- */

typedef struct sop__ecconf {
    char store[129]; /* "" = the default entry */
    uint32_t k, p;
    bool repair;
    char **paths; /* k + p, from sop__malloc */
} sop__ecconf;

/* Checks and copies public entries (paths made no longer than
 * SOP__EC_PATH_MAX). *out from sop__malloc; free with sop__ecconf_free. */
#define SOP__EC_PATH_MAX 3900
sop_rc sop__ecconf_from_public(const sop_ec_config *in, uint32_t n, sop__ecconf **out,
                               sop_err *err);
void sop__ecconf_free(sop__ecconf *c, uint32_t n);
/* The configuration file's bytes (docs/format.md); *out from sop__malloc. */
sop_rc sop__ecconf_encode(const sop__ecconf *c, uint32_t n, uint8_t **out, size_t *len,
                          sop_err *err);
sop_rc sop__ecconf_decode(const uint8_t *in, size_t len, const char *what, sop__ecconf **out,
                          uint32_t *n, sop_err *err);
/* true when the recorded entries and the given ones name the same stores,
 * shard counts and paths in the same order (repair flags aside); otherwise
 * a message in err saying what differs. */
bool sop__ecconf_same(const sop__ecconf *rec, uint32_t nrec, const sop__ecconf *given,
                      uint32_t ngiven, sop_err *err);
/* The entry for a store: its own, else the default, else NULL. */
const sop__ecconf *sop__ecconf_for(const sop__ecconf *c, uint32_t n, const char *store);

/* The marker file <path>/.sop-ec-<entry> says which database and shard
 * index a drive folder holds. check: SOP_OK, SOP_NOTFOUND (missing folder or
 * marker), SOP_INVALID (another database or index, message says which),
 * SOP_CORRUPT or SOP_IO. write: creates the folder if needed, writes the
 * marker durably (temporary name, fsync, rename, folder fsync). */
sop_rc sop__ec_marker_check(const sop__ecconf *c, uint32_t index, const uint8_t db_id[16],
                            sop_err *err);
sop_rc sop__ec_marker_write(const sop__ecconf *c, uint32_t index, const uint8_t db_id[16],
                            sop_err *err);

/* ---- the erasure-coded blob store ---- */

typedef struct sop__ecstore sop__ecstore;

/* Shard i under <c->paths[i]>/<store>. */
sop_rc sop__ec_open(const sop__ecconf *c, const char *store, sop__ecstore **out, sop_err *err);
void sop__ec_close(sop__ecstore *es);
/* The CPU part of a put: the n = k + p shard files of a blob (header and
 * payload, SOP__SHARD_HEADER + sop__shard_len(len, k) bytes each) into
 * `files`, n of them back to back. */
void sop__ec_encode(const sop__rs *rs, const uint8_t id[16], const void *data, size_t len,
                    uint8_t *files);
sop_rc sop__ec_put(sop__ecstore *es, const uint8_t id[16], const void *data, size_t len,
                   unsigned flags, sop_err *err);
sop_rc sop__ec_get(sop__ecstore *es, const uint8_t id[16], uint8_t **data, size_t *len,
                   sop_err *err);
sop_rc sop__ec_remove(sop__ecstore *es, const uint8_t id[16], sop_err *err);
sop_rc sop__ec_sync(sop__ecstore *es, const uint8_t id[16], sop_err *err);
/* Every blob ID with a shard on any drive, each once. */
sop_rc sop__ec_list(sop__ecstore *es, sop_rc (*fn)(void *ctx, const uint8_t id[16]), void *ctx,
                    sop_err *err);
void sop__ec_path(const sop__ecstore *es, const uint8_t id[16], char *out);
/* Reads and verifies all k+p shards of a blob; counts them in *shards,
 * the bad ones in *bad; with repair, rewrites the bad ones (counted in
 * *repaired). Each bad shard is described to problem(). SOP_OK when the
 * blob is readable, SOP_CORRUPT/SOP_NOTFOUND when not. */
sop_rc sop__ec_scrub(sop__ecstore *es, const uint8_t id[16], bool repair, uint64_t *shards,
                     uint64_t *bad, uint64_t *repaired, void (*problem)(void *ctx, const char *msg),
                     void *ctx, sop_err *err);
/* Removes every shard of the blob from every drive (orphan clean-up): an
 * error if any drive failed. */
sop_rc sop__ec_remove_all(sop__ecstore *es, const uint8_t id[16], sop_err *err);
/* Removes the store's folder on every drive (drop): renamed away first so
 * it vanishes at once, then deleted. Failing drives are skipped. */
sop_rc sop__ec_drop_store(const sop__ecconf *c, const char *store, sop_err *err);

#endif
