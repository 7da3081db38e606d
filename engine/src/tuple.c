/*
 * tuple.c - the order-preserving tuple codec: typed values (PostgreSQL's
 * NULL, bool, int2/4/8, float8, text, bytea, uuid, timestamp[tz], date) to
 * byte strings whose memcmp order is the typed order, and back. Composite
 * B-tree keys are built with it, so the B-tree itself only ever compares
 * bytes. The byte format is in docs/format.md ("Tuple encoding (keys)").
 *
 * Invariants:
 *  1. Order: for two tuples with the same type at each position, the sign of
 *     memcmp (shorter first on an equal prefix) of their encodings is the
 *     sign of the element-by-element typed comparison, and a tuple that is a
 *     prefix of another sorts first.
 *  2. One encoding per value: the decoder accepts exactly the byte strings
 *     the writer can produce (minimal-length integers, -0.0 and NaN only in
 *     their canonical form, escaped zero bytes); everything else is
 *     SOP_CORRUPT. So equal values have equal bytes and vice versa.
 *  3. An element is a tag byte and a payload whose length the tag fixes,
 *     except text/bytea, which run to the first 0x00 not followed by 0xFF.
 *     No tag is 0xFF, so that test never misreads the next element's tag.
 *  4. The writer never stores at or past `cap`, and `len` always advances by
 *     the full encoded size (saturating at SIZE_MAX), so len > cap after any
 *     sequence of calls means "grow and encode again". The bytes it did store
 *     are the first `cap` bytes of the full encoding.
 *  5. Decoding never reads outside [buf, buf + len). It examines elements
 *     strictly left to right, so the prefix of a key up to nfields elements
 *     is decided by those bytes (and, after a string terminator, one more).
 *     That is what makes sop__tuple_cmp_prefix a total preorder even over
 *     malformed keys (see tuple.h).
 *  6. Nothing here allocates; only the public decoding functions write a
 *     sop_err, and sop__tuple_cmp_prefix never does.
 */
#include "tuple.h"

#include <limits.h>
#include <string.h>

#include "err.h"

#define SIGN64 (UINT64_C(1) << 63)
#define EXP64  UINT64_C(0x7FF0000000000000)
#define FRAC64 UINT64_C(0x000FFFFFFFFFFFFF)

_Static_assert(CHAR_BIT == 8, "the format is defined on octets");
_Static_assert(sizeof(double) == sizeof(uint64_t), "float8 is encoded from its 64 IEEE bits");
/* The tag order is the type order of invariant 1 and the format's NULL rule. */
_Static_assert(SOP__TUPLE_TAG_INT_NEG8 == SOP__TUPLE_TAG_INT_ZERO - 8, "int tags below zero");
_Static_assert(SOP__TUPLE_TAG_INT_POS8 == SOP__TUPLE_TAG_INT_ZERO + 8, "int tags above zero");
_Static_assert(SOP__TUPLE_TAG_NULL_FIRST < SOP__TUPLE_TAG_FALSE &&
                   SOP__TUPLE_TAG_FALSE < SOP__TUPLE_TAG_TRUE &&
                   SOP__TUPLE_TAG_TRUE < SOP__TUPLE_TAG_INT_NEG8 &&
                   SOP__TUPLE_TAG_INT_POS8 < SOP__TUPLE_TAG_FLOAT8 &&
                   SOP__TUPLE_TAG_FLOAT8 < SOP__TUPLE_TAG_TEXT &&
                   SOP__TUPLE_TAG_TEXT < SOP__TUPLE_TAG_BYTEA &&
                   SOP__TUPLE_TAG_BYTEA < SOP__TUPLE_TAG_UUID &&
                   SOP__TUPLE_TAG_UUID < SOP__TUPLE_TAG_TIMESTAMP &&
                   SOP__TUPLE_TAG_TIMESTAMP < SOP__TUPLE_TAG_TIMESTAMPTZ &&
                   SOP__TUPLE_TAG_TIMESTAMPTZ < SOP__TUPLE_TAG_DATE &&
                   SOP__TUPLE_TAG_DATE < SOP__TUPLE_TAG_NULL_LAST &&
                   SOP__TUPLE_TAG_NULL_LAST < 0xFFu,
               "tags are ordered NULL first < types < NULL last < 0xFF (invariant 3)");
_Static_assert(SOP__TUPLE_NAN_BITS == (EXP64 | (UINT64_C(1) << 51)), "canonical quiet NaN");

/* Why an element failed to decode; turned into a message only on the
 * public paths. */
typedef enum tuple_fault {
    TF_OK = 0,
    TF_BAD_TAG,
    TF_TRUNCATED,
    TF_UNTERMINATED,
    TF_NONCANONICAL,
    TF_RANGE
} tuple_fault;

/* ------------------------------------------------------------------------
 * Writer
 * ------------------------------------------------------------------------ */

static size_t add_sat(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

/* Stores what fits of p[0..n) at w->len and advances len by n (inv. 4). */
static void put_bytes(sop_tuple_writer *w, const void *p, size_t n)
{
    if (w->len < w->cap && n > 0) {
        size_t room = w->cap - w->len;
        memcpy(w->buf + w->len, p, n < room ? n : room);
    }
    w->len = add_sat(w->len, n);
}

static void put_byte(sop_tuple_writer *w, uint8_t c)
{
    put_bytes(w, &c, 1);
}

/* Tag, then the low n bytes of u big-endian. */
static void put_tag_be(sop_tuple_writer *w, unsigned tag, uint64_t u, unsigned n)
{
    uint8_t tmp[9];
    tmp[0] = (uint8_t)tag;
    for (unsigned i = 0; i < n; i++)
        tmp[1 + i] = (uint8_t)(u >> (8 * (n - 1 - i)));
    put_bytes(w, tmp, 1 + (size_t)n);
}

/* Bytes needed for u > 0: 1..8. */
static unsigned byte_len(uint64_t u)
{
    unsigned n = 1;
    while (n < 8 && (u >> (8 * n)) != 0)
        n++;
    return n;
}

static uint64_t low_mask(unsigned n)
{
    return n >= 8 ? UINT64_MAX : (UINT64_C(1) << (8 * n)) - 1;
}

/* Tag, the bytes with each 0x00 as 0x00 0xFF, a 0x00 terminator. */
static void put_string(sop_tuple_writer *w, unsigned tag, const uint8_t *s, size_t n)
{
    static const uint8_t escaped_zero[2] = {0x00, 0xFF};
    put_byte(w, (uint8_t)tag);
    while (n > 0) {
        const uint8_t *z = memchr(s, 0, n);
        size_t seg = z ? (size_t)(z - s) : n;
        put_bytes(w, s, seg);
        if (z == NULL)
            break;
        put_bytes(w, escaped_zero, 2);
        s += seg + 1;
        n -= seg + 1;
    }
    put_byte(w, 0x00);
}

void sop_tuple_writer_init(sop_tuple_writer *w, void *buf, size_t cap)
{
    w->buf = buf;
    w->cap = buf ? cap : 0;
    w->len = 0;
}

void sop_tuple_put_null(sop_tuple_writer *w, bool nulls_last)
{
    put_byte(w, nulls_last ? SOP__TUPLE_TAG_NULL_LAST : SOP__TUPLE_TAG_NULL_FIRST);
}

void sop_tuple_put_bool(sop_tuple_writer *w, bool v)
{
    put_byte(w, v ? SOP__TUPLE_TAG_TRUE : SOP__TUPLE_TAG_FALSE);
}

void sop_tuple_put_int(sop_tuple_writer *w, int64_t v)
{
    if (v == 0) {
        put_byte(w, SOP__TUPLE_TAG_INT_ZERO);
    } else if (v > 0) {
        unsigned n = byte_len((uint64_t)v);
        put_tag_be(w, SOP__TUPLE_TAG_INT_ZERO + n, (uint64_t)v, n);
    } else {
        uint64_t m = UINT64_C(0) - (uint64_t)v; /* |v|, also for INT64_MIN */
        unsigned n = byte_len(m);
        put_tag_be(w, SOP__TUPLE_TAG_INT_ZERO - n, ~m & low_mask(n), n);
    }
}

void sop_tuple_put_float8(sop_tuple_writer *w, double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof(b));
    if ((b & EXP64) == EXP64 && (b & FRAC64) != 0)
        b = SOP__TUPLE_NAN_BITS;
    else if (b == SIGN64)
        b = 0; /* -0.0 */
    b = (b & SIGN64) ? ~b : (b | SIGN64);
    put_tag_be(w, SOP__TUPLE_TAG_FLOAT8, b, 8);
}

void sop_tuple_put_text(sop_tuple_writer *w, const void *s, size_t n)
{
    put_string(w, SOP__TUPLE_TAG_TEXT, s, n);
}

void sop_tuple_put_bytea(sop_tuple_writer *w, const void *p, size_t n)
{
    put_string(w, SOP__TUPLE_TAG_BYTEA, p, n);
}

void sop_tuple_put_uuid(sop_tuple_writer *w, const uint8_t uuid[16])
{
    put_byte(w, SOP__TUPLE_TAG_UUID);
    put_bytes(w, uuid, 16);
}

void sop_tuple_put_timestamp(sop_tuple_writer *w, int64_t usec)
{
    put_tag_be(w, SOP__TUPLE_TAG_TIMESTAMP, (uint64_t)usec ^ SIGN64, 8);
}

void sop_tuple_put_timestamptz(sop_tuple_writer *w, int64_t usec)
{
    put_tag_be(w, SOP__TUPLE_TAG_TIMESTAMPTZ, (uint64_t)usec ^ SIGN64, 8);
}

void sop_tuple_put_date(sop_tuple_writer *w, int32_t days)
{
    put_tag_be(w, SOP__TUPLE_TAG_DATE, (uint32_t)days ^ (UINT32_C(1) << 31), 4);
}

/* ------------------------------------------------------------------------
 * Decoder
 * ------------------------------------------------------------------------ */

static uint64_t load_be(const uint8_t *p, unsigned n)
{
    uint64_t u = 0;
    for (unsigned i = 0; i < n; i++)
        u = (u << 8) | p[i];
    return u;
}

/*
 * Decodes the element whose tag is at b[pos] (pos < len) into *v (only the
 * fields of its type, plus `type`) and sets *end to the offset just past it.
 * Validates everything invariant 2 requires; reads only b[pos..len).
 */
static tuple_fault elem_decode(const uint8_t *b, size_t len, size_t pos, sop_tuple_value *v,
                               size_t *end)
{
    unsigned tag = b[pos];
    size_t avail = len - pos - 1; /* payload bytes present */
    const uint8_t *p = b + pos + 1;

    if (tag >= SOP__TUPLE_TAG_INT_NEG8 && tag <= SOP__TUPLE_TAG_INT_POS8) {
        v->type = SOP_TUPLE_INT;
        if (tag == SOP__TUPLE_TAG_INT_ZERO) {
            v->i = 0;
            *end = pos + 1;
            return TF_OK;
        }
        unsigned n = tag > SOP__TUPLE_TAG_INT_ZERO ? tag - SOP__TUPLE_TAG_INT_ZERO
                                                   : SOP__TUPLE_TAG_INT_ZERO - tag;
        if (avail < n)
            return TF_TRUNCATED;
        uint64_t u = load_be(p, n);
        if (tag > SOP__TUPLE_TAG_INT_ZERO) {
            if (p[0] == 0x00)
                return TF_NONCANONICAL; /* not minimal: a leading zero byte */
            if (u > (uint64_t)INT64_MAX)
                return TF_RANGE;
            v->i = (int64_t)u;
        } else {
            if (p[0] == 0xFF)
                return TF_NONCANONICAL;   /* not minimal: |v| fits in n - 1 bytes */
            uint64_t m = low_mask(n) - u; /* |v| >= 1 */
            if (m > SIGN64)
                return TF_RANGE;
            v->i = m == SIGN64 ? INT64_MIN : -(int64_t)m;
        }
        *end = pos + 1 + n;
        return TF_OK;
    }

    switch (tag) {
    case SOP__TUPLE_TAG_NULL_FIRST:
    case SOP__TUPLE_TAG_NULL_LAST:
        v->type = SOP_TUPLE_NULL;
        v->nulls_last = tag == SOP__TUPLE_TAG_NULL_LAST;
        *end = pos + 1;
        return TF_OK;
    case SOP__TUPLE_TAG_FALSE:
    case SOP__TUPLE_TAG_TRUE:
        v->type = SOP_TUPLE_BOOL;
        v->b = tag == SOP__TUPLE_TAG_TRUE;
        *end = pos + 1;
        return TF_OK;
    case SOP__TUPLE_TAG_FLOAT8: {
        v->type = SOP_TUPLE_FLOAT8;
        if (avail < 8)
            return TF_TRUNCATED;
        uint64_t u = load_be(p, 8);
        uint64_t bits = (u & SIGN64) ? (u & ~SIGN64) : ~u;
        if (bits == SIGN64)
            return TF_NONCANONICAL; /* -0.0 */
        if ((bits & EXP64) == EXP64 && (bits & FRAC64) != 0 && bits != SOP__TUPLE_NAN_BITS)
            return TF_NONCANONICAL; /* a NaN other than the canonical one */
        memcpy(&v->f, &bits, sizeof(bits));
        *end = pos + 9;
        return TF_OK;
    }
    case SOP__TUPLE_TAG_TEXT:
    case SOP__TUPLE_TAG_BYTEA: {
        v->type = tag == SOP__TUPLE_TAG_TEXT ? SOP_TUPLE_TEXT : SOP_TUPLE_BYTEA;
        size_t start = pos + 1, i = start, escapes = 0;
        for (;;) {
            const uint8_t *z = i < len ? memchr(b + i, 0, len - i) : NULL;
            if (z == NULL)
                return TF_UNTERMINATED;
            i = (size_t)(z - b);
            if (i + 1 < len && b[i + 1] == 0xFF) {
                escapes++;
                i += 2;
                continue;
            }
            break;
        }
        v->raw = b + start;
        v->raw_len = i - start;
        v->len = v->raw_len - escapes;
        *end = i + 1;
        return TF_OK;
    }
    case SOP__TUPLE_TAG_UUID:
        v->type = SOP_TUPLE_UUID;
        if (avail < 16)
            return TF_TRUNCATED;
        v->raw = p;
        v->raw_len = 16;
        v->len = 16;
        *end = pos + 17;
        return TF_OK;
    case SOP__TUPLE_TAG_TIMESTAMP:
    case SOP__TUPLE_TAG_TIMESTAMPTZ:
        v->type = tag == SOP__TUPLE_TAG_TIMESTAMP ? SOP_TUPLE_TIMESTAMP : SOP_TUPLE_TIMESTAMPTZ;
        if (avail < 8)
            return TF_TRUNCATED;
        v->i = (int64_t)(load_be(p, 8) ^ SIGN64);
        *end = pos + 9;
        return TF_OK;
    case SOP__TUPLE_TAG_DATE:
        v->type = SOP_TUPLE_DATE;
        if (avail < 4)
            return TF_TRUNCATED;
        v->date = (int32_t)((uint32_t)load_be(p, 4) ^ (UINT32_C(1) << 31));
        *end = pos + 5;
        return TF_OK;
    default:
        return TF_BAD_TAG;
    }
}

static const char *tag_type_name(unsigned tag)
{
    if (tag >= SOP__TUPLE_TAG_INT_NEG8 && tag <= SOP__TUPLE_TAG_INT_POS8)
        return "int";
    switch (tag) {
    case SOP__TUPLE_TAG_FLOAT8:
        return "float8";
    case SOP__TUPLE_TAG_TEXT:
        return "text";
    case SOP__TUPLE_TAG_BYTEA:
        return "bytea";
    case SOP__TUPLE_TAG_UUID:
        return "uuid";
    case SOP__TUPLE_TAG_TIMESTAMP:
        return "timestamp";
    case SOP__TUPLE_TAG_TIMESTAMPTZ:
        return "timestamptz";
    case SOP__TUPLE_TAG_DATE:
        return "date";
    default:
        return "element";
    }
}

/* SOP_CORRUPT naming the fault and the offset of the element's tag byte. */
static sop_rc fault_err(sop_err *err, tuple_fault f, unsigned tag, size_t off)
{
    const char *name = tag_type_name(tag);
    switch (f) {
    case TF_BAD_TAG:
        return sop__err_set(err, SOP_CORRUPT, 0, "tuple: unknown tag 0x%02x at offset %zu", tag,
                            off);
    case TF_TRUNCATED:
        return sop__err_set(err, SOP_CORRUPT, 0, "tuple: truncated %s at offset %zu", name, off);
    case TF_UNTERMINATED:
        return sop__err_set(err, SOP_CORRUPT, 0, "tuple: unterminated %s at offset %zu", name, off);
    case TF_NONCANONICAL:
        return sop__err_set(err, SOP_CORRUPT, 0, "tuple: non-canonical %s at offset %zu", name,
                            off);
    case TF_RANGE:
        return sop__err_set(err, SOP_CORRUPT, 0, "tuple: %s out of range at offset %zu", name, off);
    case TF_OK:
        break;
    }
    return sop__err_set(err, SOP_INTERNAL, 0, "tuple: no fault at offset %zu", off);
}

void sop_tuple_reader_init(sop_tuple_reader *r, const void *buf, size_t len)
{
    r->buf = buf;
    r->len = buf ? len : 0;
    r->pos = 0;
}

sop_rc sop_tuple_next(sop_tuple_reader *r, sop_tuple_value *out, sop_err *err)
{
    if (r->pos >= r->len)
        return sop__err_set(err, SOP_NOTFOUND, 0, "tuple: end of tuple at offset %zu", r->pos);
    sop_tuple_value v;
    memset(&v, 0, sizeof(v));
    size_t end;
    tuple_fault f = elem_decode(r->buf, r->len, r->pos, &v, &end);
    if (f != TF_OK)
        return fault_err(err, f, r->buf[r->pos], r->pos);
    *out = v;
    r->pos = end;
    return SOP_OK;
}

void sop_tuple_value_copy(const sop_tuple_value *v, void *dst)
{
    if (v->type == SOP_TUPLE_UUID) {
        memcpy(dst, v->raw, 16);
        return;
    }
    if (v->type != SOP_TUPLE_TEXT && v->type != SOP_TUPLE_BYTEA)
        return;
    const uint8_t *p = v->raw, *e = v->raw + v->raw_len;
    uint8_t *d = dst;
    while (p < e) {
        const uint8_t *z = memchr(p, 0, (size_t)(e - p));
        size_t seg = z ? (size_t)(z - p) : (size_t)(e - p);
        memcpy(d, p, seg);
        d += seg;
        p += seg;
        if (z != NULL) {
            *d++ = 0x00;
            p++;
            if (p < e && *p == 0xFF)
                p++;
        }
    }
}

/*
 * Offset just past the first nfields elements of b[0..len) (len if it has
 * fewer) in *out. On a malformed element returns its fault with *out at the
 * element's tag. Looks at nothing past those elements (invariant 5).
 */
static tuple_fault prefix_scan(const uint8_t *b, size_t len, uint32_t nfields, size_t *out)
{
    size_t pos = 0;
    for (uint32_t k = 0; k < nfields && pos < len; k++) {
        sop_tuple_value v;
        size_t end;
        tuple_fault f = elem_decode(b, len, pos, &v, &end);
        if (f != TF_OK) {
            *out = pos;
            return f;
        }
        pos = end;
    }
    *out = pos;
    return TF_OK;
}

sop_rc sop_tuple_prefix_length(const void *key, size_t len, uint32_t nfields, size_t *out,
                               sop_err *err)
{
    const uint8_t *b = key;
    size_t pos;
    if (b == NULL || len == 0) {
        *out = 0;
        return SOP_OK;
    }
    tuple_fault f = prefix_scan(b, len, nfields, &pos);
    if (f != TF_OK)
        return fault_err(err, f, b[pos], pos);
    *out = pos;
    return SOP_OK;
}

/* memcmp order, the shorter first on an equal prefix; -1, 0 or 1. */
static int bytes_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c < 0 ? -1 : 1;
    return alen < blen ? -1 : alen > blen;
}

int sop__tuple_cmp_prefix(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                          uint32_t nfields)
{
    size_t pa, pb;
    if (prefix_scan(a, alen, nfields, &pa) != TF_OK || prefix_scan(b, blen, nfields, &pb) != TF_OK)
        return bytes_cmp(a, alen, b, blen);
    return bytes_cmp(a, pa, b, pb);
}
