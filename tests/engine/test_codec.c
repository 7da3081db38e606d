/*
 * test_codec.c - the node body and store information encodings (codec.c;
 * docs/format.md): random round trips compared field by field, golden byte
 * layouts built by hand, every truncation and every bit flip rejected as
 * SOP_CORRUPT, every validation rule behind a valid CRC, allocation
 * failures during decode, and the fuzz seed corpora still decoding.
 */
#include <dirent.h>
#include <stdlib.h>

#include "codec.h"
#include "crc.h"
#include "fault.h"
#include "t.h"

/* ---- helpers ---- */

static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Rewrites the CRC-32C in the last 4 bytes of buf[0..len). */
static void fix_crc(uint8_t *buf, size_t len)
{
    le32(buf + len - 4, sop__crc32c(0, buf, len - 4));
}

static void rand_bytes(t_rng *r, uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)t_rng_next(r);
}

static void fill_id(uint8_t id[16], uint8_t first)
{
    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)(first + i);
}

static uint8_t *encode(const sop__node *n, size_t *len)
{
    *len = sop__node_encoded_size(n);
    uint8_t *buf = malloc(*len);
    sop__node_encode(n, buf);
    return buf;
}

/* Two nodes hold the same body (items, kids, ID, leaf flag). */
static void check_same_node(const sop__node *a, const sop__node *b)
{
    CHECK(memcmp(a->id, b->id, 16) == 0);
    CHECK_EQ(a->leaf, b->leaf);
    CHECK_EQ(a->count, b->count);
    for (uint32_t i = 0; i < a->count; i++) {
        const sop__item *x = &a->items[i], *y = &b->items[i];
        CHECK_EQ(x->klen, y->klen);
        CHECK_EQ(x->vlen, y->vlen);
        CHECK_EQ(x->version, y->version);
        CHECK_EQ(x->flags, y->flags);
        CHECK(memcmp(x->id, y->id, 16) == 0);
        CHECK(memcmp(sop__node_key(a, i), sop__node_key(b, i), x->klen) == 0);
        CHECK(x->vlen == 0 || memcmp(sop__node_value(a, i), sop__node_value(b, i), x->vlen) == 0);
    }
    if (!a->leaf)
        CHECK(memcmp(a->kids, b->kids, 16 * ((size_t)a->count + 1)) == 0);
}

static sop__node *decode_ok(const uint8_t *buf, size_t len)
{
    sop_err err = {0};
    sop__node *n = NULL;
    CHECK_OK(sop__node_decode(buf, len, "test.node", &n, &err), &err);
    CHECK(n != NULL);
    return n;
}

static void decode_corrupt(const uint8_t *buf, size_t len, const char *want)
{
    sop_err err = {0};
    sop__node *n = (sop__node *)(uintptr_t)1; /* must stay untouched */
    CHECK_RC(sop__node_decode(buf, len, "test.node", &n, &err), SOP_CORRUPT, &err);
    CHECK(n == (sop__node *)(uintptr_t)1);
    CHECK_MSG(strncmp(err.msg, "node: ", 6) == 0 && strstr(err.msg, " at offset ") &&
                  strstr(err.msg, "test.node"),
              "bad message: %s", err.msg);
    CHECK_MSG(want == NULL || strstr(err.msg, want) != NULL, "message '%s' lacks '%s'", err.msg,
              want);
}

/* A random node: count items with keys of 1..kmax bytes (sometimes exactly
 * SOP_KEY_MAX), values of 0..vmax bytes (often empty), plus a few replaced
 * and deleted items so the source heap has dead bytes. */
static sop__node *random_node(t_rng *r, bool leaf, uint32_t count, uint32_t kmax, uint32_t vmax)
{
    uint8_t nid[16];
    rand_bytes(r, nid, 16);
    sop_err err = {0};
    sop__node *n = NULL;
    CHECK_OK(sop__node_new(nid, leaf, 1, 16, &n, &err), &err);
    static uint8_t key[SOP_KEY_MAX], val[1024];
    uint32_t extra = count ? (uint32_t)t_rng_below(r, 3) : 0;
    for (uint32_t i = 0; i < count + extra; i++) {
        uint32_t klen = 1 + (uint32_t)t_rng_below(r, kmax);
        if (t_rng_below(r, 20) == 0)
            klen = SOP_KEY_MAX;
        uint32_t vlen = t_rng_below(r, 3) == 0 ? 0 : (uint32_t)t_rng_below(r, vmax + 1);
        rand_bytes(r, key, klen);
        rand_bytes(r, val, vlen);
        uint8_t iid[16];
        rand_bytes(r, iid, 16);
        CHECK_OK(sop__node_reserve(n, 1, (size_t)klen + vlen, &err), &err);
        uint32_t at = (uint32_t)t_rng_below(r, n->count + 1);
        sop__node_insert(n, at, key, klen, val, vlen, iid, (uint32_t)t_rng_next(r),
                         (uint32_t)t_rng_next(r));
    }
    for (uint32_t i = 0; i < extra; i++)
        sop__node_delete(n, (uint32_t)t_rng_below(r, n->count));
    if (!leaf)
        rand_bytes(r, (uint8_t *)n->kids, 16 * ((size_t)n->count + 1));
    return n;
}

/* ---- node bodies ---- */

TEST(node_round_trips_random)
{
    sop__fault_reset();
    t_rng r;
    t_rng_seed(&r, t_seed());
    unsigned rounds = t_long() ? 3000 : 300;
    for (unsigned k = 0; k < rounds; k++) {
        bool leaf = t_rng_below(&r, 2) == 0;
        uint32_t count = (uint32_t)t_rng_below(&r, 5) == 0 ? 0 : (uint32_t)t_rng_below(&r, 60);
        if (k % 50 == 49)
            count = 2001;
        sop__node *n = random_node(&r, leaf, count, 40, 200);
        size_t len;
        uint8_t *buf = encode(n, &len);
        sop__node *d = decode_ok(buf, len);
        check_same_node(n, d);
        CHECK_EQ(d->version, 0);
        CHECK_EQ(d->repo_flags, 0);
        CHECK(d->repo_data == NULL);
        /* compact heap: exactly the live bytes */
        CHECK_EQ(d->heap_dead, 0);
        CHECK_EQ(d->heap_used, sop__node_range_bytes(d, 0, d->count));
        size_t len2;
        uint8_t *buf2 = encode(d, &len2);
        CHECK_EQ(len2, len);
        CHECK(memcmp(buf, buf2, len) == 0);
        free(buf2);
        free(buf);
        sop__node_free(d);
        sop__node_free(n);
    }
}

TEST(node_extreme_sizes_round_trip)
{
    sop__fault_reset();
    sop_err err = {0};
    uint8_t nid[16], iid[16];
    fill_id(nid, 0x40);
    fill_id(iid, 0x80);
    sop__node *n = NULL;
    CHECK_OK(sop__node_new(nid, true, 4, 64, &n, &err), &err);
    uint8_t *key = malloc(SOP_KEY_MAX), *val = malloc(SOP_VALUE_INLINE_MAX);
    memset(key, 0xab, SOP_KEY_MAX);
    memset(val, 0xcd, SOP_VALUE_INLINE_MAX);
    CHECK_OK(sop__node_reserve(n, 3, 2 * SOP_KEY_MAX + SOP_VALUE_INLINE_MAX + 1, &err), &err);
    sop__node_insert(n, 0, key, SOP_KEY_MAX, val, SOP_VALUE_INLINE_MAX, iid, UINT32_MAX,
                     UINT32_MAX);
    sop__node_insert(n, 1, key, 1, val, 0, iid, 0, 0);
    sop__node_insert(n, 2, key, SOP_KEY_MAX, val, 0, iid, 1, 2);
    size_t len;
    uint8_t *buf = encode(n, &len);
    CHECK_EQ(len, 28 + 3 * 32 + 2 * SOP_KEY_MAX + 1 + SOP_VALUE_INLINE_MAX + 4);
    sop__node *d = decode_ok(buf, len);
    check_same_node(n, d);
    sop__node_free(d);
    free(buf);

    /* An empty leaf and an internal node with no items and one child. */
    sop__node_truncate(n, 0);
    buf = encode(n, &len);
    CHECK_EQ(len, 32);
    d = decode_ok(buf, len);
    check_same_node(n, d);
    sop__node_free(d);
    free(buf);
    CHECK_OK(sop__node_make_internal(n, &err), &err);
    memcpy(n->kids[0], iid, 16);
    buf = encode(n, &len);
    CHECK_EQ(len, 48);
    d = decode_ok(buf, len);
    CHECK(!d->leaf);
    check_same_node(n, d);
    sop__node_free(d);
    free(buf);
    sop__node_free(n);
    free(key);
    free(val);
}

/* A leaf: ID 0xa0..0xaf, one item: key "k", value "vv", version 7, flags
 * 0x80000001, item ID 0x10..0x1f. */
static sop__node *tiny_leaf(void)
{
    sop_err err = {0};
    uint8_t nid[16], iid[16];
    fill_id(nid, 0xa0);
    fill_id(iid, 0x10);
    sop__node *n = NULL;
    CHECK_OK(sop__node_new(nid, true, 1, 8, &n, &err), &err);
    sop__node_insert(n, 0, "k", 1, "vv", 2, iid, 7, 0x80000001u);
    return n;
}

TEST(node_golden_bytes)
{
    sop__fault_reset();
    /* CRC-32C itself (the Castagnoli check value), so the golden CRCs below
     * are pinned to the right polynomial. */
    CHECK_EQ(sop__crc32c(0, "123456789", 9), 0xe3069283u);

    static const uint8_t leaf[] = {
        'S',  'O',  'P',  'N', /* magic */
        0x01, 0x00,            /* version 1 */
        0x01, 0x00,            /* flags: leaf */
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
        0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, /* logical ID */
        0x01, 0x00, 0x00, 0x00,                         /* count 1 */
        0x01, 0x00, 0x00, 0x00,                         /* klen 1 */
        0x02, 0x00, 0x00, 0x00,                         /* vlen 2 */
        0x07, 0x00, 0x00, 0x00,                         /* version 7 */
        0x01, 0x00, 0x00, 0x80,                         /* flags */
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
        0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, /* item ID */
        'k',  'v',  'v',                                /* key, value */
        0x00, 0x00, 0x00, 0x00                          /* CRC, patched below */
    };
    uint8_t want[sizeof(leaf)];
    memcpy(want, leaf, sizeof(leaf));
    fix_crc(want, sizeof(want));
    sop__node *n = tiny_leaf();
    size_t len;
    uint8_t *buf = encode(n, &len);
    CHECK_EQ(len, sizeof(want));
    CHECK(memcmp(buf, want, len) == 0);
    free(buf);

    /* The same as an internal node: flags 0, two child IDs before the CRC. */
    sop_err err = {0};
    CHECK_OK(sop__node_make_internal(n, &err), &err);
    memset(n->kids[0], 0x33, 16);
    memset(n->kids[1], 0x44, 16);
    uint8_t want2[sizeof(leaf) + 32];
    memcpy(want2, leaf, sizeof(leaf) - 4);
    want2[6] = 0;
    memset(want2 + sizeof(leaf) - 4, 0x33, 16);
    memset(want2 + sizeof(leaf) + 12, 0x44, 16);
    fix_crc(want2, sizeof(want2));
    buf = encode(n, &len);
    CHECK_EQ(len, sizeof(want2));
    CHECK(memcmp(buf, want2, len) == 0);
    sop__node *d = decode_ok(buf, len);
    check_same_node(n, d);
    sop__node_free(d);
    free(buf);
    sop__node_free(n);
}

TEST(node_every_truncation_is_corrupt)
{
    sop__fault_reset();
    t_rng r;
    t_rng_seed(&r, t_seed());
    for (int leaf = 0; leaf < 2; leaf++) {
        sop__node *n = random_node(&r, leaf, 5, 12, 12);
        size_t len;
        uint8_t *buf = encode(n, &len);
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *exact = malloc(cut ? cut : 1);
            memcpy(exact, buf, cut);
            decode_corrupt(exact, cut, NULL);
            free(exact);
        }
        /* and one byte too many */
        uint8_t *longer = malloc(len + 1);
        memcpy(longer, buf, len);
        longer[len] = 0;
        decode_corrupt(longer, len + 1, NULL);
        free(longer);
        free(buf);
        sop__node_free(n);
    }
}

TEST(node_every_bit_flip_is_corrupt)
{
    sop__fault_reset();
    t_rng r;
    t_rng_seed(&r, t_seed());
    for (int leaf = 0; leaf < 2; leaf++) {
        sop__node *n = random_node(&r, leaf, 4, 10, 10);
        size_t len;
        uint8_t *buf = encode(n, &len);
        for (size_t i = 0; i < len; i++) {
            for (int b = 0; b < 8; b++) {
                buf[i] ^= (uint8_t)(1u << b);
                decode_corrupt(buf, len, NULL);
                buf[i] ^= (uint8_t)(1u << b);
            }
            uint8_t keep = buf[i];
            buf[i] = (uint8_t)~keep;
            decode_corrupt(buf, len, "checksum mismatch");
            buf[i] = keep;
        }
        sop__node_free(decode_ok(buf, len));
        free(buf);
        sop__node_free(n);
    }
}

TEST(node_validation_behind_a_valid_crc)
{
    sop__fault_reset();
    sop__node *n = tiny_leaf();
    size_t len;
    uint8_t *good = encode(n, &len); /* 28 + 32 + 3 + 4 = 67 bytes */
    CHECK_EQ(len, 67);
    uint8_t *b = malloc(len + 64);
    sop_err err = {0};

#define MUTATE(stmt, blen, want)                                                                   \
    do {                                                                                           \
        memcpy(b, good, len);                                                                      \
        stmt;                                                                                      \
        fix_crc(b, blen);                                                                          \
        decode_corrupt(b, blen, want);                                                             \
    } while (0)

    MUTATE(b[4] = 2, len, "unsupported node format version 2 at offset 4 in test.node");
    MUTATE(b[5] = 1, len, "unsupported node format version 257");
    MUTATE(b[0] = 'X', len, "bad magic");
    MUTATE(b[6] = 3, len, "reserved flag bits 0x0002 set at offset 6");
    MUTATE(b[7] = 0x80, len, "reserved flag bits");
    MUTATE(le32(b + 24, SOP_SLOT_LENGTH_MAX + 2), len, "item count 10002 exceeds 10001");
    MUTATE(le32(b + 24, 0xffffffffu), len, "item count");
    MUTATE(le32(b + 24, 2), len, "item 1 of 2: header runs past the end of the body at offset 63");
    MUTATE(le32(b + 24, 0), len, "35 trailing bytes");
    MUTATE(le32(b + 28, 0), len, "key length 0 outside 1..16384 at offset 28");
    MUTATE(le32(b + 28, SOP_KEY_MAX + 1), len, "key length 16385");
    MUTATE(le32(b + 28, 0xffffffffu), len, "key length 4294967295");
    MUTATE(le32(b + 32, SOP_VALUE_INLINE_MAX + 1), len, "value length 262145 exceeds");
    MUTATE(le32(b + 32, 0xffffffffu), len, "value length 4294967295");
    MUTATE(le32(b + 32, 3), len,
           "item 0: 4 key and value bytes run past the end of the body at offset 60");
    MUTATE(le32(b + 32, 1), len, "1 trailing bytes after the node at offset 62");
    MUTATE(b[6] = 0, len, "2 child IDs run past the end of the body at offset 63");
    /* Internal node whose kids are one short / one too many. */
    MUTATE((b[6] = 0, memset(b + 63, 0, 16)), len + 16, "2 child IDs run past");
    MUTATE((b[6] = 0, memset(b + 63, 0, 48)), len + 48,
           "16 trailing bytes after the node at offset 95");
    /* A valid internal node made the same way decodes. */
    memcpy(b, good, len);
    b[6] = 0;
    memset(b + 63, 0x5a, 32);
    fix_crc(b, len + 32);
    sop__node *d = decode_ok(b, len + 32);
    CHECK(!d->leaf);
    CHECK_EQ(d->kids[1][15], 0x5a);
    sop__node_free(d);

    /* Not enough bytes for a header and a CRC, and no name given. */
    CHECK_RC(sop__node_decode(good, 31, NULL, &d, &err), SOP_CORRUPT, &err);
    CHECK(strstr(err.msg, "31 bytes are too short") != NULL);
    CHECK_RC(sop__node_decode(NULL, 0, NULL, &d, &err), SOP_CORRUPT, &err);
#undef MUTATE
    free(b);
    free(good);
    sop__node_free(n);
}

TEST(node_decode_allocation_failures)
{
    sop__fault_reset();
    t_rng r;
    t_rng_seed(&r, 42);
    sop__node *n = random_node(&r, false, 20, 20, 20);
    size_t len;
    uint8_t *buf = encode(n, &len);
    unsigned failures = 0;
    for (unsigned nth = 1;; nth++) {
        sop__fault_reset();
        sop__fault_alloc(nth, false);
        sop_err err = {0};
        sop__node *d = NULL;
        sop_rc rc = sop__node_decode(buf, len, "x", &d, &err);
        unsigned long injected = sop__fault_injected();
        sop__fault_reset();
        if (injected == 0) {
            CHECK_RC(rc, SOP_OK, &err);
            check_same_node(n, d);
            sop__node_free(d);
            break;
        }
        CHECK_RC(rc, SOP_NOMEM, &err);
        CHECK(d == NULL);
        failures++;
    }
    CHECK(failures >= 1);
    free(buf);
    sop__node_free(n);
}

/* ---- store information ---- */

#define INFO_SIZE (SOP__STOREINFO_STATE_SIZE + 720)

static void random_info(t_rng *r, sop__storeinfo *s)
{
    memset(s, 0, sizeof(*s));
    size_t nl = 1 + (size_t)t_rng_below(r, SOP__STORE_NAME_MAX);
    size_t dl = (size_t)t_rng_below(r, SOP__STORE_DESC_MAX + 1);
    if (t_rng_below(r, 4) == 0)
        nl = SOP__STORE_NAME_MAX, dl = SOP__STORE_DESC_MAX;
    for (size_t i = 0; i < nl; i++)
        s->name[i] = (char)('a' + t_rng_below(r, 26));
    for (size_t i = 0; i < dl; i++)
        s->description[i] = (char)(1 + t_rng_below(r, 255)); /* any byte but NUL */
    s->slot_length = 2 * (2 + (uint32_t)t_rng_below(r, 4999));
    s->is_unique = t_rng_below(r, 2);
    s->leaf_load_balancing = t_rng_below(r, 2);
    s->globally_cached = t_rng_below(r, 2);
    s->placement = (uint8_t)t_rng_below(r, 3);
    s->key_order_fields = (uint32_t)t_rng_next(r);
    rand_bytes(r, s->root_id, 16);
    s->created_ms = (int64_t)t_rng_next(r);
    s->registry_cache_ms = (int64_t)t_rng_next(r);
    s->node_cache_ms = -1;
    s->value_cache_ms = (int64_t)t_rng_next(r);
    s->storeinfo_cache_ms = INT64_MIN;
    s->registry_cache_sliding = t_rng_below(r, 2);
    s->node_cache_sliding = t_rng_below(r, 2);
    s->value_cache_sliding = t_rng_below(r, 2);
    s->storeinfo_cache_sliding = t_rng_below(r, 2);
    s->streaming = t_rng_below(r, 2);
    s->seq = t_rng_next(r);
    s->count = t_rng_next(r);
    s->updated_ms = (int64_t)t_rng_next(r);
}

static void encode_info(const sop__storeinfo *s, uint8_t out[INFO_SIZE])
{
    sop__storeinfo_encode_state(s, out);
    sop__storeinfo_encode_fixed(s, out + SOP__STOREINFO_STATE_SIZE);
}

static void check_same_info(const sop__storeinfo *a, const sop__storeinfo *b)
{
    CHECK(strcmp(a->name, b->name) == 0);
    CHECK(strcmp(a->description, b->description) == 0);
    CHECK_EQ(a->slot_length, b->slot_length);
    CHECK_EQ(a->is_unique, b->is_unique);
    CHECK_EQ(a->leaf_load_balancing, b->leaf_load_balancing);
    CHECK_EQ(a->globally_cached, b->globally_cached);
    CHECK_EQ(a->placement, b->placement);
    CHECK_EQ(a->key_order_fields, b->key_order_fields);
    CHECK(memcmp(a->root_id, b->root_id, 16) == 0);
    CHECK_EQ(a->created_ms, b->created_ms);
    CHECK_EQ(a->registry_cache_ms, b->registry_cache_ms);
    CHECK_EQ(a->node_cache_ms, b->node_cache_ms);
    CHECK_EQ(a->value_cache_ms, b->value_cache_ms);
    CHECK_EQ(a->storeinfo_cache_ms, b->storeinfo_cache_ms);
    CHECK_EQ(a->registry_cache_sliding, b->registry_cache_sliding);
    CHECK_EQ(a->node_cache_sliding, b->node_cache_sliding);
    CHECK_EQ(a->value_cache_sliding, b->value_cache_sliding);
    CHECK_EQ(a->storeinfo_cache_sliding, b->storeinfo_cache_sliding);
    CHECK_EQ(a->streaming, b->streaming);
    CHECK(a->seq == b->seq);
    CHECK(a->count == b->count);
    CHECK_EQ(a->updated_ms, b->updated_ms);
}

static void info_corrupt(const uint8_t *buf, size_t len, const char *want)
{
    sop_err err = {0};
    sop__storeinfo s;
    memset(&s, 0x77, sizeof(s));
    CHECK_RC(sop__storeinfo_decode(buf, len, "people.info", &s, &err), SOP_CORRUPT, &err);
    CHECK_EQ(s.slot_length, 0x77777777); /* untouched */
    CHECK_MSG(strncmp(err.msg, "storeinfo: ", 11) == 0 && strstr(err.msg, " at offset ") &&
                  strstr(err.msg, "people.info"),
              "bad message: %s", err.msg);
    CHECK_MSG(want == NULL || strstr(err.msg, want) != NULL, "message '%s' lacks '%s'", err.msg,
              want);
}

TEST(storeinfo_round_trips_random)
{
    sop__fault_reset();
    CHECK_EQ(sop__storeinfo_fixed_size(), 720);
    t_rng r;
    t_rng_seed(&r, t_seed());
    for (int k = 0; k < 500; k++) {
        sop__storeinfo s, d;
        random_info(&r, &s);
        uint8_t buf[INFO_SIZE], buf2[INFO_SIZE];
        encode_info(&s, buf);
        sop_err err = {0};
        CHECK_OK(sop__storeinfo_decode(buf, sizeof(buf), "x", &d, &err), &err);
        check_same_info(&s, &d);
        encode_info(&d, buf2);
        CHECK(memcmp(buf, buf2, sizeof(buf)) == 0);
    }
}

TEST(storeinfo_golden_layout)
{
    sop__fault_reset();
    sop__storeinfo s;
    memset(&s, 0, sizeof(s));
    strcpy(s.name, "people");
    strcpy(s.description, "who is who");
    s.slot_length = 2000;
    s.is_unique = true;
    s.globally_cached = true;
    s.placement = SOP__VALUES_ACTIVE;
    s.key_order_fields = 2;
    fill_id(s.root_id, 0xc0);
    s.created_ms = 1700000000000;
    s.registry_cache_ms = 10;
    s.node_cache_ms = 20;
    s.value_cache_ms = -1;
    s.storeinfo_cache_ms = 40;
    s.node_cache_sliding = true;
    s.storeinfo_cache_sliding = true;
    s.seq = 5;
    s.count = 1234;
    s.updated_ms = 1700000000999;
    uint8_t buf[INFO_SIZE];
    encode_info(&s, buf);

    uint8_t want[INFO_SIZE];
    memset(want, 0, sizeof(want));
    /* state part */
    memcpy(want, "SOPT", 4);
    want[4] = 1;
    le64(want + 8, 5);
    le64(want + 16, 1234);
    le64(want + 24, 1700000000999);
    fix_crc(want, 512);
    /* fixed part */
    uint8_t *f = want + 512;
    memcpy(f, "SOPI", 4);
    f[4] = 1;
    f[6] = 0x01 | 0x04 | 0x10 | 0x40; /* unique, globally cached, node + info sliding */
    le32(f + 8, 2000);
    le32(f + 12, 2);
    f[16] = 2;
    f[17] = 6;
    f[18] = 10;
    fill_id(f + 20, 0xc0);
    le64(f + 36, 1700000000000);
    le64(f + 44, 10);
    le64(f + 52, 20);
    le64(f + 60, UINT64_MAX);
    le64(f + 68, 40);
    memcpy(f + 76, "people", 6);
    memcpy(f + 204, "who is who", 10);
    fix_crc(f, 720);
    for (size_t i = 0; i < sizeof(want); i++)
        CHECK_MSG(buf[i] == want[i], "byte %zu is 0x%02x, expected 0x%02x", i, buf[i], want[i]);
    CHECK_EQ(rd32(buf + 508), sop__crc32c(0, buf, 508));
    CHECK_EQ(rd32(buf + 512 + 716), sop__crc32c(0, buf + 512, 716));

    /* The state part alone changes with a commit; the fixed part does not. */
    s.seq = 6;
    s.count = 0;
    uint8_t st[SOP__STOREINFO_STATE_SIZE];
    sop__storeinfo_encode_state(&s, st);
    memcpy(buf, st, sizeof(st));
    sop__storeinfo d;
    sop_err err = {0};
    CHECK_OK(sop__storeinfo_decode(buf, sizeof(buf), "x", &d, &err), &err);
    CHECK(d.seq == 6 && d.count == 0);
    CHECK(strcmp(d.name, "people") == 0);
}

TEST(storeinfo_every_truncation_and_flip_is_corrupt)
{
    sop__fault_reset();
    t_rng r;
    t_rng_seed(&r, t_seed());
    sop__storeinfo s;
    random_info(&r, &s);
    uint8_t buf[INFO_SIZE + 1];
    encode_info(&s, buf);
    buf[INFO_SIZE] = 0;
    for (size_t cut = 0; cut <= INFO_SIZE + 1; cut++) {
        if (cut == INFO_SIZE)
            continue;
        uint8_t *exact = malloc(cut ? cut : 1);
        memcpy(exact, buf, cut);
        info_corrupt(exact, cut, "expected exactly 1232");
        free(exact);
    }
    for (size_t i = 0; i < INFO_SIZE; i++) {
        for (int b = 0; b < 8; b++) {
            buf[i] ^= (uint8_t)(1u << b);
            info_corrupt(buf, INFO_SIZE, "checksum mismatch");
            buf[i] ^= (uint8_t)(1u << b);
        }
    }
    sop__storeinfo d;
    sop_err err = {0};
    CHECK_OK(sop__storeinfo_decode(buf, INFO_SIZE, NULL, &d, &err), &err);
}

TEST(storeinfo_validation_behind_a_valid_crc)
{
    sop__fault_reset();
    sop__storeinfo s;
    t_rng r;
    t_rng_seed(&r, 7);
    random_info(&r, &s);
    strcpy(s.name, "abc");
    strcpy(s.description, "d");
    uint8_t good[INFO_SIZE], b[INFO_SIZE];
    encode_info(&s, good);
    uint8_t *f = b + 512;

#define MUTATE(stmt, want)                                                                         \
    do {                                                                                           \
        memcpy(b, good, sizeof(b));                                                                \
        stmt;                                                                                      \
        fix_crc(b, 512);                                                                           \
        fix_crc(f, 720);                                                                           \
        info_corrupt(b, sizeof(b), want);                                                          \
    } while (0)

    MUTATE(b[4] = 2, "unsupported state part format version 2 at offset 4");
    MUTATE(f[4] = 9, "unsupported fixed part format version 9 at offset 516");
    MUTATE(b[1] = 'X', "bad magic of the state part");
    MUTATE(f[3] = 'X', "bad magic of the fixed part");
    MUTATE(b[6] = 1, "reserved state bytes are not zero at offset 6");
    MUTATE(b[507] = 1, "state padding is not zero at offset 32");
    MUTATE(f[7] = 1, "reserved flag bits 0x0100");
    MUTATE(le32(f + 8, 3), "slot_length 3 is not an even number in 4..10000 at offset 520");
    MUTATE(le32(f + 8, 2), "slot_length 2");
    MUTATE(le32(f + 8, 10002), "slot_length 10002");
    MUTATE(le32(f + 8, 0xfffffffe), "slot_length 4294967294");
    MUTATE(f[16] = 3, "value placement 3 outside 0..2 at offset 528");
    MUTATE(f[17] = 0, "name length 0 outside 1..128 at offset 529");
    MUTATE(f[17] = 129, "name length 129");
    MUTATE(le32(f + 18, 513), "description length 513 exceeds 512 at offset 530");
    MUTATE(f[77] = 0, "NUL byte in the store name at offset 589");
    MUTATE(f[79] = 'x', "bytes after the store name are not zero at offset 591");
    MUTATE(f[203] = 'x', "bytes after the store name are not zero");
    MUTATE(f[204] = 0, "NUL byte in the description at offset 716");
    MUTATE(f[715] = 1, "bytes after the description are not zero at offset 717");
#undef MUTATE
    /* Boundary values that are valid. */
    memcpy(b, good, sizeof(b));
    le32(f + 8, 4);
    f[17] = 128;
    memset(f + 76, 'n', 128);
    fix_crc(f, 720);
    sop__storeinfo d;
    sop_err err = {0};
    CHECK_OK(sop__storeinfo_decode(b, sizeof(b), "x", &d, &err), &err);
    CHECK_EQ(strlen(d.name), 128);
    CHECK_EQ(d.slot_length, 4);
    le32(f + 8, 10000);
    fix_crc(f, 720);
    CHECK_OK(sop__storeinfo_decode(b, sizeof(b), "x", &d, &err), &err);
    CHECK_EQ(d.slot_length, 10000);
}

/* ---- the fuzz seed corpora ---- */

static unsigned decode_corpus(const char *dir, bool node)
{
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "no corpus folder %s (run from the repository root)", dir);
    unsigned files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        CHECK(f != NULL);
        uint8_t *buf = malloc(1 << 20);
        size_t n = fread(buf, 1, 1 << 20, f);
        fclose(f);
        sop_err err = {0};
        if (node) {
            sop__node *x = NULL;
            CHECK_OK(sop__node_decode(buf, n, path, &x, &err), &err);
            sop__node_free(x);
        } else {
            sop__storeinfo s;
            CHECK_OK(sop__storeinfo_decode(buf, n, path, &s, &err), &err);
        }
        free(buf);
        files++;
    }
    closedir(d);
    return files;
}

TEST(seed_corpora_are_valid_encodings)
{
    sop__fault_reset();
    CHECK(decode_corpus("tests/fuzz/corpus/node", true) >= 3);
    CHECK(decode_corpus("tests/fuzz/corpus/storeinfo", false) >= 3);
}

/*
 * The seed corpora are exactly what the encoders write for the values
 * below: this test checks that, and SOP_WRITE_CORPUS=1 makes it rewrite the
 * files instead (after a format change):
 *   SOP_WRITE_CORPUS=1 build/tests/test_codec seed_corpora_match
 */
static bool writing_corpus(void)
{
    const char *w = getenv("SOP_WRITE_CORPUS");
    return w != NULL && strcmp(w, "1") == 0;
}

static void write_file(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (writing_corpus()) {
        FILE *f = fopen(path, "wb");
        CHECK_MSG(f != NULL, "cannot create %s", path);
        CHECK_EQ(fwrite(p, 1, n, f), n);
        fclose(f);
        return;
    }
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "no seed file %s (SOP_WRITE_CORPUS=1 writes it)", path);
    uint8_t *have = malloc(n + 1);
    size_t got = fread(have, 1, n + 1, f);
    fclose(f);
    CHECK_MSG(got == n && memcmp(have, p, n) == 0,
              "%s differs from the encoder's output (SOP_WRITE_CORPUS=1 rewrites it)", path);
    free(have);
}

static void write_node(const char *name, const sop__node *n)
{
    size_t len;
    uint8_t *buf = encode(n, &len);
    write_file("tests/fuzz/corpus/node", name, buf, len);
    free(buf);
}

TEST(seed_corpora_match_the_encoders)
{
    sop__fault_reset();
    sop_err err = {0};
    sop__node *n = tiny_leaf();
    write_node("tiny_leaf", n);
    /* an item with an empty value next to it */
    uint8_t iid[16];
    fill_id(iid, 0x20);
    CHECK_OK(sop__node_reserve(n, 1, 3, &err), &err);
    sop__node_insert(n, 1, "key", 3, NULL, 0, iid, 1, 0);
    write_node("empty_value", n);
    CHECK_OK(sop__node_make_internal(n, &err), &err);
    for (int i = 0; i < 3; i++)
        fill_id(n->kids[i], (uint8_t)(0x50 + 0x10 * i));
    write_node("internal", n);
    sop__node_truncate(n, 0);
    write_node("internal_one_child", n);
    sop__node_free(n);
    uint8_t nid[16];
    fill_id(nid, 0);
    CHECK_OK(sop__node_new(nid, true, 4, 64, &n, &err), &err);
    write_node("empty_leaf", n);
    sop__node_free(n);
    CHECK_OK(sop__node_new(nid, true, 12, 256, &n, &err), &err);
    for (uint32_t i = 0; i < 12; i++) {
        char key[8], val[16];
        snprintf(key, sizeof(key), "key%02u", i);
        memset(val, 'a' + (int)i, sizeof(val));
        fill_id(iid, (uint8_t)(0x60 + i));
        sop__node_insert(n, i, key, 5, val, i, iid, i + 1, i % 2);
    }
    write_node("leaf_12_items", n);
    sop__node_free(n);

    sop__storeinfo s;
    uint8_t buf[INFO_SIZE];
    memset(&s, 0, sizeof(s));
    strcpy(s.name, "people");
    s.slot_length = 2000;
    s.is_unique = true;
    s.node_cache_ms = s.registry_cache_ms = s.value_cache_ms = s.storeinfo_cache_ms = -1;
    encode_info(&s, buf);
    write_file("tests/fuzz/corpus/storeinfo", "minimal", buf, sizeof(buf));
    strcpy(s.description, "people and their addresses");
    s.placement = SOP__VALUES_SEPARATE;
    s.globally_cached = true;
    s.node_cache_ms = 60000;
    s.node_cache_sliding = true;
    s.seq = 9;
    s.count = 100;
    s.updated_ms = 1700000000000;
    encode_info(&s, buf);
    write_file("tests/fuzz/corpus/storeinfo", "with_description", buf, sizeof(buf));
    t_rng r;
    t_rng_seed(&r, 3);
    random_info(&r, &s);
    memset(s.name, 'n', SOP__STORE_NAME_MAX);
    memset(s.description, 'd', SOP__STORE_DESC_MAX);
    encode_info(&s, buf);
    write_file("tests/fuzz/corpus/storeinfo", "longest_strings", buf, sizeof(buf));
}
