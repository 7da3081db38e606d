/*
 * codec.h - binary encodings of B-tree node bodies and store information
 * (docs/format.md, "Node bodies" and "Store information").
 *
 * Invariants:
 *  1. Every encoding starts with a magic and a format version and ends with
 *     a CRC-32C of everything before it (crc.h).
 *  2. Decoders validate every length and offset against the input and the
 *     engine's limits before using it; bad input is SOP_CORRUPT with the
 *     offset and what was wrong, never a crash and never a partial result.
 *  3. decode(encode(x)) == x for every valid x.
 */
#ifndef SOP_CODEC_H
#define SOP_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "node.h"
#include "sop.h"

/* Bytes sop__node_encode will write for n. */
size_t sop__node_encoded_size(const sop__node *n);
/* Writes n's body (items, children, logical ID, leaf flag) to out, which
 * holds sop__node_encoded_size(n) bytes. */
void sop__node_encode(const sop__node *n, uint8_t *out);
/* A new node from an encoded body (node.version and repo fields zero).
 * `what` names the source in error messages (a file path). */
sop_rc sop__node_decode(const uint8_t *in, size_t len, const char *what, sop__node **out,
                        sop_err *err);

/* Value placement of a store (sop_store_options, StoreOptions in SOP). */
typedef enum sop__placement {
    SOP__VALUES_IN_NODE = 0,  /* "small data" */
    SOP__VALUES_SEPARATE = 1, /* a blob per value, written at commit ("medium") */
    SOP__VALUES_ACTIVE = 2    /* a blob per value, written at add time ("big") */
} sop__placement;

#define SOP__STORE_NAME_MAX 128
#define SOP__STORE_DESC_MAX 512

typedef struct sop__storeinfo {
    /* fixed at creation */
    char name[SOP__STORE_NAME_MAX + 1];
    char description[SOP__STORE_DESC_MAX + 1];
    uint32_t slot_length;
    bool is_unique;
    bool leaf_load_balancing;
    bool globally_cached;
    uint8_t placement; /* sop__placement */
    uint32_t key_order_fields;
    bool streaming; /* (key, chunk) store of sop_stream_* (docs/streaming.md) */
    uint8_t root_id[16];
    int64_t created_ms;
    /* cache config: durations in milliseconds, < 0 = do not cache */
    int64_t registry_cache_ms, node_cache_ms, value_cache_ms, storeinfo_cache_ms;
    bool registry_cache_sliding, node_cache_sliding, value_cache_sliding, storeinfo_cache_sliding;
    /* changed by commits */
    uint64_t seq; /* bumped by every commit that changes the store */
    uint64_t count;
    int64_t updated_ms;
} sop__storeinfo;

/* A store's info file is two parts: a fixed part written once at creation,
 * and a 512-byte state part (seq, count, updated_ms) rewritten in place by
 * commits - one sector, so a torn write cannot mix two states. */
#define SOP__STOREINFO_STATE_SIZE 512
size_t sop__storeinfo_fixed_size(void);
void sop__storeinfo_encode_fixed(const sop__storeinfo *s, uint8_t *out);
void sop__storeinfo_encode_state(const sop__storeinfo *s, uint8_t out[SOP__STOREINFO_STATE_SIZE]);
/* Decodes a whole info file (state part first, then the fixed part). */
sop_rc sop__storeinfo_decode(const uint8_t *in, size_t len, const char *what, sop__storeinfo *out,
                             sop_err *err);

#endif
