/*
 * codec.c - the binary encodings of B-tree node bodies and of store
 * information (codec.h; byte layouts in docs/format.md, "Node bodies" and
 * "Store information"). Everything here is I/O-free.
 *
 * Invariants:
 *  1. All integers are little-endian and read and written byte by byte, so
 *     the encodings do not depend on the host's byte order or alignment.
 *  2. Decoders check, in this order: the length is at least a header and a
 *     CRC (store info: exactly its size), the CRC-32C, the magic, the format
 *     version, then every field. A field is read only after the bytes it
 *     occupies are known to lie inside the input; lengths are added in
 *     size_t after each was bounded by a limit far below SIZE_MAX, so no sum
 *     can wrap.
 *  3. A decoder builds its result only after the whole input validated
 *     (node: a first pass validates and sizes, a second copies), so it never
 *     returns a partial result and allocates nothing for bad input.
 *  4. Encoders write every byte of their output (padding and reserved bytes
 *     are zero) and decoders reject nonzero reserved bits and bytes, so
 *     encode(decode(b)) == b for every b that decodes.
 */
#include "codec.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h> /* vsnprintf */
#include <string.h>

#include "bytes.h"
#include "crc.h"
#include "err.h"

/* ---- Little-endian access (invariant 1) ---- */

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* ------------------------------------------------------------------------
 * Node bodies
 * ------------------------------------------------------------------------ */

#define NODE_MAGIC     "SOPN"
#define NODE_VERSION   1u
#define NODE_FLAG_LEAF 0x0001u

/* Header offsets. */
enum {
    NODE_OFF_MAGIC = 0,
    NODE_OFF_VERSION = 4,
    NODE_OFF_FLAGS = 6,
    NODE_OFF_ID = 8,
    NODE_OFF_COUNT = 24,
    NODE_HEADER = 28,
    /* Per item, then its key and value bytes. */
    ITEM_OFF_KLEN = 0,
    ITEM_OFF_VLEN = 4,
    ITEM_OFF_VERSION = 8,
    ITEM_OFF_FLAGS = 12,
    ITEM_OFF_ID = 16,
    ITEM_HEADER = 32,
    NODE_CRC = 4
};

#define NODE_COUNT_MAX (SOP_SLOT_LENGTH_MAX + 1u)

_Static_assert(NODE_OFF_COUNT + 4 == NODE_HEADER, "node header is 28 bytes");
_Static_assert(ITEM_OFF_ID + 16 == ITEM_HEADER, "item header is 32 bytes");
/* The heap of the biggest valid node fits node.h's 32-bit offsets, and a
 * whole body fits size_t arithmetic (invariant 2). */
_Static_assert((uint64_t)NODE_COUNT_MAX *(SOP_KEY_MAX + SOP_VALUE_INLINE_MAX) <= UINT32_MAX,
               "a decoded node's heap fits 32-bit offsets");

size_t sop__node_encoded_size(const sop__node *n)
{
    size_t size = NODE_HEADER + NODE_CRC + (size_t)n->count * ITEM_HEADER;
    for (uint32_t i = 0; i < n->count; i++)
        size += sop__node_item_bytes(n, i);
    if (!n->leaf)
        size += 16 * ((size_t)n->count + 1);
    return size;
}

void sop__node_encode(const sop__node *n, uint8_t *out)
{
    memcpy(out + NODE_OFF_MAGIC, NODE_MAGIC, 4);
    sop__le_put16(out + NODE_OFF_VERSION, NODE_VERSION);
    sop__le_put16(out + NODE_OFF_FLAGS, n->leaf ? NODE_FLAG_LEAF : 0);
    memcpy(out + NODE_OFF_ID, n->id, 16);
    sop__le_put32(out + NODE_OFF_COUNT, n->count);
    uint8_t *p = out + NODE_HEADER;
    for (uint32_t i = 0; i < n->count; i++) {
        const sop__item *it = &n->items[i];
        sop__le_put32(p + ITEM_OFF_KLEN, it->klen);
        sop__le_put32(p + ITEM_OFF_VLEN, it->vlen);
        sop__le_put32(p + ITEM_OFF_VERSION, it->version);
        sop__le_put32(p + ITEM_OFF_FLAGS, it->flags);
        memcpy(p + ITEM_OFF_ID, it->id, 16);
        p += ITEM_HEADER;
        if (it->klen)
            memcpy(p, n->heap + it->koff, it->klen);
        p += it->klen;
        if (it->vlen)
            memcpy(p, n->heap + it->voff, it->vlen);
        p += it->vlen;
    }
    if (!n->leaf) {
        size_t kb = 16 * ((size_t)n->count + 1);
        memcpy(p, n->kids, kb);
        p += kb;
    }
    sop__le_put32(p, sop__crc32c(0, out, (size_t)(p - out)));
}

static const char *src_name(const char *what)
{
    return what ? what : "(unnamed input)";
}

#define NODE_BAD(off, ...) node_bad(err, what, (size_t)(off), __VA_ARGS__)

/* "node: <why> at offset N in <what>" as SOP_CORRUPT. */
static sop_rc node_bad(sop_err *err, const char *what, size_t off, const char *fmt, ...)
    SOP__PRINTF(4, 5);

static sop_rc node_bad(sop_err *err, const char *what, size_t off, const char *fmt, ...)
{
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return sop__err_set(err, SOP_CORRUPT, 0, "node: %s at offset %zu in %s", why, off,
                        src_name(what));
}

sop_rc sop__node_decode(const uint8_t *in, size_t len, const char *what, sop__node **out,
                        sop_err *err)
{
    if (len < NODE_HEADER + NODE_CRC)
        return NODE_BAD(0, "%zu bytes are too short for a node body (at least %d)", len,
                        NODE_HEADER + NODE_CRC);
    size_t body = len - NODE_CRC;
    uint32_t stored = sop__le_get32(in + body), computed = sop__crc32c(0, in, body);
    if (stored != computed)
        return NODE_BAD(body, "checksum mismatch (stored 0x%08x, computed 0x%08x)", stored,
                        computed);
    if (memcmp(in + NODE_OFF_MAGIC, NODE_MAGIC, 4) != 0)
        return NODE_BAD(NODE_OFF_MAGIC, "bad magic (not a node body)");
    uint16_t version = sop__le_get16(in + NODE_OFF_VERSION);
    if (version != NODE_VERSION)
        return NODE_BAD(NODE_OFF_VERSION, "unsupported node format version %u", version);
    uint16_t flags = sop__le_get16(in + NODE_OFF_FLAGS);
    if (flags & ~NODE_FLAG_LEAF)
        return NODE_BAD(NODE_OFF_FLAGS, "reserved flag bits 0x%04x set",
                        (unsigned)(flags & ~NODE_FLAG_LEAF));
    bool leaf = (flags & NODE_FLAG_LEAF) != 0;
    uint32_t count = sop__le_get32(in + NODE_OFF_COUNT);
    if (count > NODE_COUNT_MAX)
        return NODE_BAD(NODE_OFF_COUNT, "item count %u exceeds %u", count, NODE_COUNT_MAX);

    /* Pass 1: validate every length and size the heap (invariant 3). */
    size_t off = NODE_HEADER, heap = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (body - off < ITEM_HEADER)
            return NODE_BAD(off, "item %u of %u: header runs past the end of the body", i, count);
        uint32_t klen = sop__le_get32(in + off + ITEM_OFF_KLEN);
        uint32_t vlen = sop__le_get32(in + off + ITEM_OFF_VLEN);
        if (klen == 0 || klen > SOP_KEY_MAX)
            return NODE_BAD(off + ITEM_OFF_KLEN, "item %u: key length %u outside 1..%u", i, klen,
                            SOP_KEY_MAX);
        if (vlen > SOP_VALUE_INLINE_MAX)
            return NODE_BAD(off + ITEM_OFF_VLEN, "item %u: value length %u exceeds %u", i, vlen,
                            SOP_VALUE_INLINE_MAX);
        off += ITEM_HEADER;
        size_t bytes = (size_t)klen + vlen;
        if (body - off < bytes)
            return NODE_BAD(off, "item %u: %zu key and value bytes run past the end of the body", i,
                            bytes);
        off += bytes;
        heap += bytes;
    }
    size_t kids = leaf ? 0 : 16 * ((size_t)count + 1);
    if (body - off < kids)
        return NODE_BAD(off, "%u child IDs run past the end of the body", count + 1);
    if (body - off != kids)
        return NODE_BAD(off + kids, "%zu trailing bytes after the node", body - off - kids);

    /* Pass 2: build the node, heap sized exactly (compact). */
    sop__node *n;
    SOP__TRY(sop__node_new(in + NODE_OFF_ID, leaf, count, (uint32_t)heap, &n, err));
    off = NODE_HEADER;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *p = in + off;
        uint32_t klen = sop__le_get32(p + ITEM_OFF_KLEN), vlen = sop__le_get32(p + ITEM_OFF_VLEN);
        const uint8_t *key = p + ITEM_HEADER;
        sop__node_insert(n, i, key, klen, key + klen, vlen, p + ITEM_OFF_ID,
                         sop__le_get32(p + ITEM_OFF_VERSION), sop__le_get32(p + ITEM_OFF_FLAGS));
        off += ITEM_HEADER + (size_t)klen + vlen;
    }
    if (!leaf)
        memcpy(n->kids, in + off, kids);
    *out = n;
    return SOP_OK;
}

/* ------------------------------------------------------------------------
 * Store information
 * ------------------------------------------------------------------------ */

#define STATE_MAGIC   "SOPT"
#define FIXED_MAGIC   "SOPI"
#define STATE_VERSION 1u
#define FIXED_VERSION 1u

/* State part (512 bytes, at offset 0 of the file). */
enum {
    ST_OFF_MAGIC = 0,
    ST_OFF_VERSION = 4,
    ST_OFF_RESERVED = 6,
    ST_OFF_SEQ = 8,
    ST_OFF_COUNT = 16,
    ST_OFF_UPDATED = 24,
    ST_OFF_PAD = 32,
    ST_OFF_CRC = SOP__STOREINFO_STATE_SIZE - 4
};

/* Fixed part (after the state part). */
enum {
    FX_OFF_MAGIC = 0,
    FX_OFF_VERSION = 4,
    FX_OFF_FLAGS = 6,
    FX_OFF_SLOT_LENGTH = 8,
    FX_OFF_KEY_ORDER = 12,
    FX_OFF_PLACEMENT = 16,
    FX_OFF_NAME_LEN = 17,
    FX_OFF_DESC_LEN = 18,
    FX_OFF_ROOT = 20,
    FX_OFF_CREATED = 36,
    FX_OFF_REG_CACHE = 44,
    FX_OFF_NODE_CACHE = 52,
    FX_OFF_VALUE_CACHE = 60,
    FX_OFF_INFO_CACHE = 68,
    FX_OFF_NAME = 76,
    FX_OFF_DESC = FX_OFF_NAME + SOP__STORE_NAME_MAX,
    FX_OFF_CRC = FX_OFF_DESC + SOP__STORE_DESC_MAX,
    FX_SIZE = FX_OFF_CRC + 4
};

/* Fixed-part flag bits. */
enum {
    FL_UNIQUE = 1u << 0,
    FL_LEAF_LOAD_BALANCING = 1u << 1,
    FL_GLOBALLY_CACHED = 1u << 2,
    FL_REG_SLIDING = 1u << 3,
    FL_NODE_SLIDING = 1u << 4,
    FL_VALUE_SLIDING = 1u << 5,
    FL_INFO_SLIDING = 1u << 6,
    FL_STREAMING = 1u << 7,
    FL_ALL = (1u << 8) - 1
};

_Static_assert(SOP__STOREINFO_STATE_SIZE == 512, "the state part is one 512-byte sector");
_Static_assert(ST_OFF_PAD == ST_OFF_UPDATED + 8, "state fields are contiguous");
_Static_assert(ST_OFF_CRC == 508, "state CRC in the last 4 bytes");
_Static_assert(FX_OFF_CREATED == FX_OFF_ROOT + 16 && FX_OFF_NAME == FX_OFF_INFO_CACHE + 8,
               "fixed fields are contiguous");
_Static_assert(FX_OFF_DESC == 204 && FX_OFF_CRC == 716 && FX_SIZE == 720,
               "fixed part is 720 bytes");
_Static_assert(SOP__STORE_NAME_MAX <= UINT8_MAX, "name length fits its u8");
_Static_assert(SOP__STORE_DESC_MAX <= UINT16_MAX, "description length fits its u16");

size_t sop__storeinfo_fixed_size(void)
{
    return FX_SIZE;
}

void sop__storeinfo_encode_state(const sop__storeinfo *s, uint8_t out[SOP__STOREINFO_STATE_SIZE])
{
    memset(out, 0, SOP__STOREINFO_STATE_SIZE);
    memcpy(out + ST_OFF_MAGIC, STATE_MAGIC, 4);
    sop__le_put16(out + ST_OFF_VERSION, STATE_VERSION);
    sop__le_put64(out + ST_OFF_SEQ, s->seq);
    sop__le_put64(out + ST_OFF_COUNT, s->count);
    sop__le_put64(out + ST_OFF_UPDATED, (uint64_t)s->updated_ms);
    sop__le_put32(out + ST_OFF_CRC, sop__crc32c(0, out, ST_OFF_CRC));
}

void sop__storeinfo_encode_fixed(const sop__storeinfo *s, uint8_t *out)
{
    size_t nl = strnlen(s->name, SOP__STORE_NAME_MAX + 1);
    size_t dl = strnlen(s->description, SOP__STORE_DESC_MAX + 1);
    assert(nl >= 1 && nl <= SOP__STORE_NAME_MAX && dl <= SOP__STORE_DESC_MAX);
    if (nl > SOP__STORE_NAME_MAX)
        nl = SOP__STORE_NAME_MAX;
    if (dl > SOP__STORE_DESC_MAX)
        dl = SOP__STORE_DESC_MAX;
    memset(out, 0, FX_SIZE);
    memcpy(out + FX_OFF_MAGIC, FIXED_MAGIC, 4);
    sop__le_put16(out + FX_OFF_VERSION, FIXED_VERSION);
    unsigned fl =
        (s->is_unique ? FL_UNIQUE : 0) | (s->leaf_load_balancing ? FL_LEAF_LOAD_BALANCING : 0) |
        (s->globally_cached ? FL_GLOBALLY_CACHED : 0) |
        (s->registry_cache_sliding ? FL_REG_SLIDING : 0) |
        (s->node_cache_sliding ? FL_NODE_SLIDING : 0) |
        (s->value_cache_sliding ? FL_VALUE_SLIDING : 0) |
        (s->storeinfo_cache_sliding ? FL_INFO_SLIDING : 0) | (s->streaming ? FL_STREAMING : 0);
    sop__le_put16(out + FX_OFF_FLAGS, (uint16_t)fl);
    sop__le_put32(out + FX_OFF_SLOT_LENGTH, s->slot_length);
    sop__le_put32(out + FX_OFF_KEY_ORDER, s->key_order_fields);
    out[FX_OFF_PLACEMENT] = s->placement;
    out[FX_OFF_NAME_LEN] = (uint8_t)nl;
    sop__le_put16(out + FX_OFF_DESC_LEN, (uint16_t)dl);
    memcpy(out + FX_OFF_ROOT, s->root_id, 16);
    sop__le_put64(out + FX_OFF_CREATED, (uint64_t)s->created_ms);
    sop__le_put64(out + FX_OFF_REG_CACHE, (uint64_t)s->registry_cache_ms);
    sop__le_put64(out + FX_OFF_NODE_CACHE, (uint64_t)s->node_cache_ms);
    sop__le_put64(out + FX_OFF_VALUE_CACHE, (uint64_t)s->value_cache_ms);
    sop__le_put64(out + FX_OFF_INFO_CACHE, (uint64_t)s->storeinfo_cache_ms);
    memcpy(out + FX_OFF_NAME, s->name, nl);
    memcpy(out + FX_OFF_DESC, s->description, dl);
    sop__le_put32(out + FX_OFF_CRC, sop__crc32c(0, out, FX_OFF_CRC));
}

/* "storeinfo: <why> at offset N in <what>" as SOP_CORRUPT. */
static sop_rc info_bad(sop_err *err, const char *what, size_t off, const char *fmt, ...)
    SOP__PRINTF(4, 5);

static sop_rc info_bad(sop_err *err, const char *what, size_t off, const char *fmt, ...)
{
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return sop__err_set(err, SOP_CORRUPT, 0, "storeinfo: %s at offset %zu in %s", why, off,
                        src_name(what));
}

#define INFO_BAD(off, ...) info_bad(err, what, (size_t)(off), __VA_ARGS__)

/* Checks a part's CRC, magic and version; `base` is its offset in the file. */
static sop_rc check_part(const uint8_t *p, size_t size, size_t base, const char *magic,
                         unsigned version, const char *part, const char *what, sop_err *err)
{
    uint32_t stored = sop__le_get32(p + size - 4), computed = sop__crc32c(0, p, size - 4);
    if (stored != computed)
        return INFO_BAD(base + size - 4,
                        "%s part checksum mismatch (stored 0x%08x, computed 0x%08x)", part, stored,
                        computed);
    if (memcmp(p, magic, 4) != 0)
        return INFO_BAD(base, "bad magic of the %s part (not store information)", part);
    unsigned v = sop__le_get16(p + 4);
    if (v != version)
        return INFO_BAD(base + 4, "unsupported %s part format version %u", part, v);
    return SOP_OK;
}

sop_rc sop__storeinfo_decode(const uint8_t *in, size_t len, const char *what, sop__storeinfo *out,
                             sop_err *err)
{
    const size_t total = SOP__STOREINFO_STATE_SIZE + FX_SIZE;
    if (len != total)
        return INFO_BAD(len < total ? len : total, "%zu bytes, expected exactly %zu", len, total);
    const uint8_t *st = in, *fx = in + SOP__STOREINFO_STATE_SIZE;
    const size_t fb = SOP__STOREINFO_STATE_SIZE; /* the fixed part's offset in the file */
    SOP__TRY(check_part(st, SOP__STOREINFO_STATE_SIZE, 0, STATE_MAGIC, STATE_VERSION, "state", what,
                        err));
    SOP__TRY(check_part(fx, FX_SIZE, fb, FIXED_MAGIC, FIXED_VERSION, "fixed", what, err));

    if (sop__le_get16(st + ST_OFF_RESERVED) != 0)
        return INFO_BAD(ST_OFF_RESERVED, "reserved state bytes are not zero");
    if (!all_zero(st + ST_OFF_PAD, ST_OFF_CRC - ST_OFF_PAD))
        return INFO_BAD(ST_OFF_PAD, "state padding is not zero");

    unsigned fl = sop__le_get16(fx + FX_OFF_FLAGS);
    if (fl & ~(unsigned)FL_ALL)
        return INFO_BAD(fb + FX_OFF_FLAGS, "reserved flag bits 0x%04x set", fl & ~(unsigned)FL_ALL);
    uint32_t slot = sop__le_get32(fx + FX_OFF_SLOT_LENGTH);
    if (slot < SOP_SLOT_LENGTH_MIN || slot > SOP_SLOT_LENGTH_MAX || slot % 2 != 0)
        return INFO_BAD(fb + FX_OFF_SLOT_LENGTH, "slot_length %u is not an even number in %u..%u",
                        slot, SOP_SLOT_LENGTH_MIN, SOP_SLOT_LENGTH_MAX);
    uint8_t placement = fx[FX_OFF_PLACEMENT];
    if (placement > SOP__VALUES_ACTIVE)
        return INFO_BAD(fb + FX_OFF_PLACEMENT, "value placement %u outside 0..%u", placement,
                        (unsigned)SOP__VALUES_ACTIVE);
    unsigned nl = fx[FX_OFF_NAME_LEN];
    if (nl < 1 || nl > SOP__STORE_NAME_MAX)
        return INFO_BAD(fb + FX_OFF_NAME_LEN, "name length %u outside 1..%u", nl,
                        SOP__STORE_NAME_MAX);
    unsigned dl = sop__le_get16(fx + FX_OFF_DESC_LEN);
    if (dl > SOP__STORE_DESC_MAX)
        return INFO_BAD(fb + FX_OFF_DESC_LEN, "description length %u exceeds %u", dl,
                        SOP__STORE_DESC_MAX);
    const void *nul = memchr(fx + FX_OFF_NAME, 0, nl);
    if (nul != NULL)
        return INFO_BAD(fb + (size_t)((const uint8_t *)nul - fx), "NUL byte in the store name");
    if (!all_zero(fx + FX_OFF_NAME + nl, SOP__STORE_NAME_MAX - nl))
        return INFO_BAD(fb + FX_OFF_NAME + nl, "bytes after the store name are not zero");
    nul = memchr(fx + FX_OFF_DESC, 0, dl);
    if (nul != NULL)
        return INFO_BAD(fb + (size_t)((const uint8_t *)nul - fx), "NUL byte in the description");
    if (!all_zero(fx + FX_OFF_DESC + dl, SOP__STORE_DESC_MAX - dl))
        return INFO_BAD(fb + FX_OFF_DESC + dl, "bytes after the description are not zero");

    sop__storeinfo s;
    memset(&s, 0, sizeof(s));
    memcpy(s.name, fx + FX_OFF_NAME, nl);
    memcpy(s.description, fx + FX_OFF_DESC, dl);
    s.slot_length = slot;
    s.is_unique = (fl & FL_UNIQUE) != 0;
    s.leaf_load_balancing = (fl & FL_LEAF_LOAD_BALANCING) != 0;
    s.globally_cached = (fl & FL_GLOBALLY_CACHED) != 0;
    s.placement = placement;
    s.key_order_fields = sop__le_get32(fx + FX_OFF_KEY_ORDER);
    memcpy(s.root_id, fx + FX_OFF_ROOT, 16);
    s.created_ms = (int64_t)sop__le_get64(fx + FX_OFF_CREATED);
    s.registry_cache_ms = (int64_t)sop__le_get64(fx + FX_OFF_REG_CACHE);
    s.node_cache_ms = (int64_t)sop__le_get64(fx + FX_OFF_NODE_CACHE);
    s.value_cache_ms = (int64_t)sop__le_get64(fx + FX_OFF_VALUE_CACHE);
    s.storeinfo_cache_ms = (int64_t)sop__le_get64(fx + FX_OFF_INFO_CACHE);
    s.registry_cache_sliding = (fl & FL_REG_SLIDING) != 0;
    s.node_cache_sliding = (fl & FL_NODE_SLIDING) != 0;
    s.value_cache_sliding = (fl & FL_VALUE_SLIDING) != 0;
    s.storeinfo_cache_sliding = (fl & FL_INFO_SLIDING) != 0;
    s.streaming = (fl & FL_STREAMING) != 0;
    s.seq = sop__le_get64(st + ST_OFF_SEQ);
    s.count = sop__le_get64(st + ST_OFF_COUNT);
    s.updated_ms = (int64_t)sop__le_get64(st + ST_OFF_UPDATED);
    *out = s;
    return SOP_OK;
}
