/*
 * test_tuple.c - the order-preserving tuple codec (engine/src/tuple.c,
 * docs/format.md "Tuple encoding (keys)").
 *
 * What is shown:
 *  1. Order: for every type, random pairs biased towards equal and adjacent
 *     values: sign(memcmp of the encodings, shorter first) equals the sign of
 *     a typed reference comparison written here independently of the codec
 *     (PostgreSQL semantics), also for composites, prefixes and NULLs.
 *  2. Round trip: decoding gives the values back, modulo the documented
 *     canonicalisations (-0.0 -> 0.0, every NaN -> the canonical NaN).
 *  3. One encoding per value: whatever the decoder accepts (including random
 *     garbage and truncations) re-encodes to the very same bytes.
 *  4. Malformed input is SOP_CORRUPT naming the element's offset, never a
 *     crash or a read outside the buffer (inputs sit at the very end of a
 *     heap block so ASan sees any overread).
 *  5. sop_tuple_prefix_length / sop__tuple_cmp_prefix agree with the reader
 *     and the typed comparison, and cmp_prefix is a total preorder on valid
 *     and malformed keys alike.
 *  6. The writer never stores past cap and always reports the full length.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "t.h"
#include "tuple.h"

#define STR_MAX  64
#define TMAX     6
#define ENC_MAX  4096
#define TAIL_CAP (1u << 20)

/* One typed test value. Strings live in sbuf unless ext is set (long ones). */
typedef struct tv {
    sop_tuple_type type;
    bool nulls_last;
    bool b;
    int64_t i; /* INT, TIMESTAMP, TIMESTAMPTZ */
    double f;
    int32_t d;
    size_t n;
    const uint8_t *ext;
    uint8_t sbuf[STR_MAX];
    uint8_t u[16];
} tv;

typedef struct tuple {
    int k;
    tv e[TMAX];
} tuple;

static const sop_tuple_type value_types[] = {
    SOP_TUPLE_BOOL, SOP_TUPLE_INT,       SOP_TUPLE_FLOAT8,      SOP_TUPLE_TEXT, SOP_TUPLE_BYTEA,
    SOP_TUPLE_UUID, SOP_TUPLE_TIMESTAMP, SOP_TUPLE_TIMESTAMPTZ, SOP_TUPLE_DATE};
#define NVALUE_TYPES (sizeof(value_types) / sizeof(value_types[0]))

static uint8_t scratch[TAIL_CAP];
static uint8_t *tail_block;

static int sgn(long long x)
{
    return (x > 0) - (x < 0);
}

static int pairs(void)
{
    return t_long() ? 1000000 : 100000;
}

static const uint8_t *tv_str(const tv *v)
{
    return v->ext ? v->ext : v->sbuf;
}

/* Copies p[0..n) to the very end of a heap block, so reading past it is an
 * ASan error. */
static const uint8_t *at_tail(const void *p, size_t n)
{
    if (tail_block == NULL) {
        tail_block = malloc(TAIL_CAP);
        CHECK(tail_block != NULL);
    }
    CHECK(n <= TAIL_CAP);
    uint8_t *dst = tail_block + TAIL_CAP - n;
    if (n)
        memmove(dst, p, n);
    return dst;
}

static size_t msg_offset(const char *msg)
{
    const char *p = strstr(msg, " at offset ");
    if (p == NULL)
        return SIZE_MAX;
    return (size_t)strtoull(p + strlen(" at offset "), NULL, 10);
}

static uint64_t dbits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof(b));
    return b;
}

static double bitsd(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof(d));
    return d;
}

/* ------------------------------------------------------------------------
 * Reference comparison (independent of the codec)
 * ------------------------------------------------------------------------ */

static int ref_bytes(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return an < bn ? -1 : an > bn;
}

/* PostgreSQL float8 order: NaN == NaN > +inf, -0.0 == 0.0. */
static int ref_float(double a, double b)
{
    bool an = isnan(a), bn = isnan(b);
    if (an || bn)
        return an && bn ? 0 : an ? 1 : -1;
    return a < b ? -1 : a > b;
}

static int null_rank(const tv *v)
{
    if (v->type != SOP_TUPLE_NULL)
        return 1;
    return v->nulls_last ? 2 : 0;
}

static int ref_cmp(const tv *a, const tv *b)
{
    int ra = null_rank(a), rb = null_rank(b);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    if (ra != 1)
        return 0;
    CHECK(a->type == b->type);
    switch (a->type) {
    case SOP_TUPLE_BOOL:
        return (int)a->b - (int)b->b;
    case SOP_TUPLE_INT:
    case SOP_TUPLE_TIMESTAMP:
    case SOP_TUPLE_TIMESTAMPTZ:
        return a->i < b->i ? -1 : a->i > b->i;
    case SOP_TUPLE_DATE:
        return a->d < b->d ? -1 : a->d > b->d;
    case SOP_TUPLE_FLOAT8:
        return ref_float(a->f, b->f);
    case SOP_TUPLE_TEXT:
    case SOP_TUPLE_BYTEA:
        return ref_bytes(tv_str(a), a->n, tv_str(b), b->n);
    case SOP_TUPLE_UUID:
        return ref_bytes(a->u, 16, b->u, 16);
    case SOP_TUPLE_NULL:
        break;
    }
    CHECK(!"unreachable type");
    return 0;
}

/* Element by element over the first na / nb elements; a prefix sorts first. */
static int ref_tuple_cmp(const tuple *a, int na, const tuple *b, int nb)
{
    for (int i = 0; i < na && i < nb; i++) {
        int c = ref_cmp(&a->e[i], &b->e[i]);
        if (c != 0)
            return c;
    }
    return na < nb ? -1 : na > nb;
}

static int bytes_sign(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return sgn(c);
    return an < bn ? -1 : an > bn;
}

/* ------------------------------------------------------------------------
 * Encoding and decoding helpers
 * ------------------------------------------------------------------------ */

static void put_tv(sop_tuple_writer *w, const tv *v)
{
    switch (v->type) {
    case SOP_TUPLE_NULL:
        sop_tuple_put_null(w, v->nulls_last);
        return;
    case SOP_TUPLE_BOOL:
        sop_tuple_put_bool(w, v->b);
        return;
    case SOP_TUPLE_INT:
        sop_tuple_put_int(w, v->i);
        return;
    case SOP_TUPLE_FLOAT8:
        sop_tuple_put_float8(w, v->f);
        return;
    case SOP_TUPLE_TEXT:
        sop_tuple_put_text(w, tv_str(v), v->n);
        return;
    case SOP_TUPLE_BYTEA:
        sop_tuple_put_bytea(w, tv_str(v), v->n);
        return;
    case SOP_TUPLE_UUID:
        sop_tuple_put_uuid(w, v->u);
        return;
    case SOP_TUPLE_TIMESTAMP:
        sop_tuple_put_timestamp(w, v->i);
        return;
    case SOP_TUPLE_TIMESTAMPTZ:
        sop_tuple_put_timestamptz(w, v->i);
        return;
    case SOP_TUPLE_DATE:
        sop_tuple_put_date(w, v->d);
        return;
    }
    CHECK(!"unreachable type");
}

/* Encodes t[0..k) into buf (which must be big enough); bounds[i] (if not
 * NULL) gets the offset just past element i. */
static size_t encode_tuple(const tuple *t, int k, uint8_t *buf, size_t cap, size_t *bounds)
{
    sop_tuple_writer w;
    sop_tuple_writer_init(&w, buf, cap);
    for (int i = 0; i < k; i++) {
        put_tv(&w, &t->e[i]);
        if (bounds)
            bounds[i] = w.len;
    }
    CHECK(w.len <= cap);
    return w.len;
}

static size_t encode_one(const tv *v, uint8_t *buf, size_t cap)
{
    sop_tuple_writer w;
    sop_tuple_writer_init(&w, buf, cap);
    put_tv(&w, v);
    CHECK(w.len <= cap);
    return w.len;
}

/* Re-encodes a decoded element (so decode -> encode can be compared). */
static void put_decoded(sop_tuple_writer *w, const sop_tuple_value *d)
{
    switch (d->type) {
    case SOP_TUPLE_NULL:
        sop_tuple_put_null(w, d->nulls_last);
        return;
    case SOP_TUPLE_BOOL:
        sop_tuple_put_bool(w, d->b);
        return;
    case SOP_TUPLE_INT:
        sop_tuple_put_int(w, d->i);
        return;
    case SOP_TUPLE_FLOAT8:
        sop_tuple_put_float8(w, d->f);
        return;
    case SOP_TUPLE_TEXT:
    case SOP_TUPLE_BYTEA: {
        CHECK(d->len <= sizeof(scratch));
        sop_tuple_value_copy(d, scratch);
        if (d->type == SOP_TUPLE_TEXT)
            sop_tuple_put_text(w, scratch, d->len);
        else
            sop_tuple_put_bytea(w, scratch, d->len);
        return;
    }
    case SOP_TUPLE_UUID:
        sop_tuple_put_uuid(w, d->raw);
        return;
    case SOP_TUPLE_TIMESTAMP:
        sop_tuple_put_timestamp(w, d->i);
        return;
    case SOP_TUPLE_TIMESTAMPTZ:
        sop_tuple_put_timestamptz(w, d->i);
        return;
    case SOP_TUPLE_DATE:
        sop_tuple_put_date(w, d->date);
        return;
    }
    CHECK(!"decoded an unknown type");
}

static size_t count_zeros(const uint8_t *p, size_t n)
{
    size_t z = 0;
    for (size_t i = 0; i < n; i++)
        z += p[i] == 0;
    return z;
}

/* The decoded element d is v, canonicalised. */
static void check_same(const tv *v, const sop_tuple_value *d)
{
    CHECK_EQ(d->type, v->type);
    switch (v->type) {
    case SOP_TUPLE_NULL:
        CHECK_EQ(d->nulls_last, v->nulls_last);
        return;
    case SOP_TUPLE_BOOL:
        CHECK_EQ(d->b, v->b);
        return;
    case SOP_TUPLE_INT:
    case SOP_TUPLE_TIMESTAMP:
    case SOP_TUPLE_TIMESTAMPTZ:
        CHECK_MSG(d->i == v->i, "decoded %" PRId64 ", encoded %" PRId64, d->i, v->i);
        return;
    case SOP_TUPLE_DATE:
        CHECK_EQ(d->date, v->d);
        return;
    case SOP_TUPLE_FLOAT8: {
        uint64_t want = dbits(v->f);
        if (isnan(v->f))
            want = SOP__TUPLE_NAN_BITS;
        else if (v->f == 0)
            want = 0;
        CHECK_MSG(dbits(d->f) == want, "decoded float bits %016" PRIx64 ", want %016" PRIx64,
                  dbits(d->f), want);
        return;
    }
    case SOP_TUPLE_TEXT:
    case SOP_TUPLE_BYTEA:
        CHECK_EQ(d->len, v->n);
        CHECK_EQ(d->raw_len, v->n + count_zeros(tv_str(v), v->n));
        CHECK(d->len <= sizeof(scratch));
        memset(scratch, 0xA5, d->len + 1);
        sop_tuple_value_copy(d, scratch);
        CHECK(v->n == 0 || memcmp(scratch, tv_str(v), v->n) == 0);
        CHECK_EQ(scratch[d->len], 0xA5);
        return;
    case SOP_TUPLE_UUID: {
        CHECK_EQ(d->raw_len, 16);
        CHECK(memcmp(d->raw, v->u, 16) == 0);
        uint8_t u[16];
        sop_tuple_value_copy(d, u);
        CHECK(memcmp(u, v->u, 16) == 0);
        return;
    }
    }
    CHECK(!"unreachable type");
}

/* Decodes enc[0..n) from the end of a heap block and checks that it holds
 * exactly t->e[0..k). */
static void check_roundtrip(const uint8_t *enc, size_t n, const tuple *t, int k)
{
    sop_err errbuf, *err = &errbuf;
    sop_err_clear(err);
    sop_tuple_reader r;
    sop_tuple_reader_init(&r, at_tail(enc, n), n);
    sop_tuple_value d;
    for (int i = 0; i < k; i++) {
        CHECK_OK(sop_tuple_next(&r, &d, err), err);
        check_same(&t->e[i], &d);
    }
    CHECK_RC(sop_tuple_next(&r, &d, err), SOP_NOTFOUND, err);
    CHECK_EQ(r.pos, n);
}

static void check_roundtrip_one(const uint8_t *enc, size_t n, const tv *v)
{
    static tuple t;
    t.k = 1;
    t.e[0] = *v;
    check_roundtrip(enc, n, &t, 1);
}

/*
 * Decodes p[0..n) (p at the end of a heap block) element by element.
 * Returns the number of elements decoded; *rc is SOP_NOTFOUND if it all
 * decoded, else SOP_CORRUPT - then the message names r.pos. Whatever decoded
 * must re-encode to exactly the same bytes (invariant 2 of tuple.c). ends[i]
 * (if not NULL, room for n entries) gets the offset past element i.
 */
static int decode_all(const uint8_t *p, size_t n, sop_rc *rc, size_t *ends)
{
    sop_err errbuf, *err = &errbuf;
    sop_err_clear(err);
    sop_tuple_reader r;
    sop_tuple_reader_init(&r, p, n);
    static uint8_t re[TAIL_CAP];
    sop_tuple_writer w;
    sop_tuple_writer_init(&w, re, sizeof(re));
    int count = 0;
    sop_tuple_value d;
    sop_rc c;
    while ((c = sop_tuple_next(&r, &d, err)) == SOP_OK) {
        size_t before = w.len;
        put_decoded(&w, &d);
        CHECK(w.len <= sizeof(re));
        CHECK_MSG(w.len == r.pos && memcmp(re + before, p + before, w.len - before) == 0,
                  "element %d at offset %zu re-encodes differently", count, before);
        if (ends)
            ends[count] = r.pos;
        count++;
    }
    CHECK_MSG(c == SOP_NOTFOUND || c == SOP_CORRUPT, "sop_tuple_next returned %s", sop_rc_name(c));
    CHECK_EQ(err->code, c);
    if (c == SOP_NOTFOUND) {
        CHECK_EQ(r.pos, n);
    } else {
        CHECK(r.pos < n);
        CHECK_MSG(strncmp(err->msg, "tuple: ", 7) == 0, "message '%s'", err->msg);
        CHECK_MSG(msg_offset(err->msg) == r.pos, "message '%s' should name offset %zu", err->msg,
                  r.pos);
        /* a failed call leaves the reader where it was */
        CHECK_RC(sop_tuple_next(&r, &d, err), SOP_CORRUPT, err);
    }
    *rc = c;
    return count;
}

/* ------------------------------------------------------------------------
 * Generators: biased towards boundaries, equal and adjacent values
 * ------------------------------------------------------------------------ */

static int64_t int_specials[96];
static size_t n_int_specials;

static void init_int_specials(void)
{
    if (n_int_specials)
        return;
    size_t n = 0;
    for (int k = 0; k < 8; k++) {
        int64_t p = (int64_t)1 << (8 * k);
        const int64_t near[] = {p - 1, p, p + 1};
        for (int j = 0; j < 3; j++) {
            int_specials[n++] = near[j];
            int_specials[n++] = -near[j];
        }
    }
    int64_t more[] = {INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1, INT16_MIN,
                      INT16_MAX, INT32_MIN,     INT32_MAX, 255,           -255,
                      256,       -256,          UINT32_MAX};
    for (size_t j = 0; j < sizeof(more) / sizeof(more[0]); j++)
        int_specials[n++] = more[j];
    n_int_specials = n;
}

static const uint64_t float_specials[] = {
    UINT64_C(0x7FF8000000000000), /* the canonical quiet NaN */
    UINT64_C(0x7FF0000000000001), /* signalling NaN */
    UINT64_C(0x7FF4000000000000), UINT64_C(0x7FFFFFFFFFFFFFFF),
    UINT64_C(0xFFF8000000000000), /* negative NaNs */
    UINT64_C(0xFFFFFFFFFFFFFFFF), UINT64_C(0xFFF0000000000001),
    UINT64_C(0x7FF0000000000000),                               /* +inf */
    UINT64_C(0xFFF0000000000000),                               /* -inf */
    UINT64_C(0x0000000000000000), UINT64_C(0x8000000000000000), /* +-0.0 */
    UINT64_C(0x0000000000000001), UINT64_C(0x8000000000000001), /* smallest denormals */
    UINT64_C(0x000FFFFFFFFFFFFF), UINT64_C(0x800FFFFFFFFFFFFF), /* largest denormals */
    UINT64_C(0x0010000000000000), UINT64_C(0x8010000000000000), /* +-DBL_MIN */
    UINT64_C(0x7FEFFFFFFFFFFFFF), UINT64_C(0xFFEFFFFFFFFFFFFF), /* +-DBL_MAX */
    UINT64_C(0x3FF0000000000000), UINT64_C(0xBFF0000000000000), /* +-1.0 */
    UINT64_C(0x3FE0000000000000), UINT64_C(0x4000000000000000), /* 0.5, 2.0 */
};
#define N_FLOAT_SPECIALS (sizeof(float_specials) / sizeof(float_specials[0]))

static const uint8_t byte_alphabet[] = {0x00, 0x01, 0xFF, 0xFE, 'a', 'b', 0x00, 0xFF};

static uint8_t gen_byte(t_rng *r)
{
    if (t_rng_below(r, 4) == 0)
        return (uint8_t)t_rng_next(r);
    return byte_alphabet[t_rng_below(r, sizeof(byte_alphabet))];
}

static int64_t gen_int(t_rng *r)
{
    switch (t_rng_below(r, 6)) {
    case 0:
        return int_specials[t_rng_below(r, n_int_specials)];
    case 1:
        return (int64_t)t_rng_below(r, 601) - 300;
    case 2:
        return (int16_t)(uint16_t)t_rng_next(r); /* int2 */
    case 3:
        return (int32_t)(uint32_t)t_rng_next(r); /* int4 */
    default: {
        unsigned n = (unsigned)t_rng_below(r, 9); /* byte length 0..8 */
        uint64_t u = n == 0 ? 0 : n == 8 ? t_rng_next(r) : t_rng_next(r) >> (64 - 8 * n);
        if (n == 8)
            return (int64_t)u;
        return t_rng_below(r, 2) ? (int64_t)u : -(int64_t)u;
    }
    }
}

static int64_t int_near(t_rng *r, int64_t b)
{
    switch (t_rng_below(r, 5)) {
    case 0:
        return b == INT64_MAX ? b : b + 1;
    case 1:
        return b == INT64_MIN ? b : b - 1;
    case 2:
        return (int64_t)((uint64_t)b ^ (t_rng_below(r, 256) << (8 * t_rng_below(r, 2))));
    case 3:
        return b == INT64_MIN ? b : -b;
    default: {
        int64_t d = (int64_t)t_rng_below(r, 7) - 3;
        if ((d > 0 && b > INT64_MAX - d) || (d < 0 && b < INT64_MIN - d))
            return b;
        return b + d;
    }
    }
}

static int64_t gen_ts(t_rng *r)
{
    static const int64_t sp[] = {INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1, 0, 1, -1};
    switch (t_rng_below(r, 4)) {
    case 0:
        return sp[t_rng_below(r, sizeof(sp) / sizeof(sp[0]))];
    case 1:
        return (int64_t)t_rng_next(r);
    case 2: /* within a few centuries of 2000 */
        return (int64_t)t_rng_below(r, UINT64_C(20000000000000000)) - INT64_C(10000000000000000);
    default:
        return (int64_t)t_rng_below(r, 2001) - 1000;
    }
}

static int32_t gen_date(t_rng *r)
{
    static const int32_t sp[] = {INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, 0, 1, -1};
    switch (t_rng_below(r, 4)) {
    case 0:
        return sp[t_rng_below(r, sizeof(sp) / sizeof(sp[0]))];
    case 1:
        return (int32_t)(uint32_t)t_rng_next(r);
    case 2:
        return (int32_t)t_rng_below(r, 2000001) - 1000000;
    default:
        return (int32_t)t_rng_below(r, 201) - 100;
    }
}

static double gen_float(t_rng *r)
{
    switch (t_rng_below(r, 5)) {
    case 0:
        return bitsd(float_specials[t_rng_below(r, N_FLOAT_SPECIALS)]);
    case 1:
        return bitsd(t_rng_next(r)); /* any bits, NaNs and denormals included */
    case 2:
        return (double)((int)t_rng_below(r, 21) - 10);
    case 3:
        return (double)((int)t_rng_below(r, 2001) - 1000) / 8.0;
    default:
        return ldexp((double)(int64_t)t_rng_next(r), (int)t_rng_below(r, 200) - 100);
    }
}

static double float_near(t_rng *r, double b)
{
    switch (t_rng_below(r, 5)) {
    case 0:
        return nextafter(b, INFINITY);
    case 1:
        return nextafter(b, -INFINITY);
    case 2:
        return -b;
    case 3:
        return bitsd(dbits(b) ^ 1); /* also another NaN for a NaN */
    default:
        return isnan(b) ? bitsd(float_specials[t_rng_below(r, 7)]) : b * 2;
    }
}

static void gen_string(t_rng *r, tv *v)
{
    v->n = t_rng_below(r, 5) == 0 ? t_rng_below(r, STR_MAX + 1) : t_rng_below(r, 12);
    for (size_t i = 0; i < v->n; i++)
        v->sbuf[i] = gen_byte(r);
}

static void string_near(t_rng *r, tv *v)
{
    switch (t_rng_below(r, 4)) {
    case 0: /* a prefix */
        v->n = t_rng_below(r, v->n + 1);
        return;
    case 1: /* append */
        if (v->n < STR_MAX)
            v->sbuf[v->n++] = gen_byte(r);
        return;
    case 2: /* nudge one byte */
        if (v->n > 0) {
            size_t i = t_rng_below(r, v->n);
            v->sbuf[i] = (uint8_t)(v->sbuf[i] + (t_rng_below(r, 2) ? 1 : 0xFF));
        }
        return;
    default: /* replace the tail */
        if (v->n > 0) {
            size_t i = t_rng_below(r, v->n);
            v->n = i + t_rng_below(r, STR_MAX - i + 1);
            for (; i < v->n; i++)
                v->sbuf[i] = gen_byte(r);
        }
        return;
    }
}

/* A value of `type`; when base (same type, not NULL) is given, often equal
 * or adjacent to it. */
static void gen_value(t_rng *r, sop_tuple_type type, const tv *base, tv *v)
{
    bool related = base != NULL && base->type == type;
    if (related && t_rng_below(r, 4) == 0) {
        *v = *base;
        return;
    }
    bool near = related && t_rng_below(r, 3) != 0;
    if (near)
        *v = *base;
    else
        memset(v, 0, sizeof(*v));
    v->type = type;
    v->ext = NULL;
    switch (type) {
    case SOP_TUPLE_BOOL:
        v->b = t_rng_below(r, 2);
        return;
    case SOP_TUPLE_INT:
        v->i = near ? int_near(r, base->i) : gen_int(r);
        return;
    case SOP_TUPLE_FLOAT8:
        v->f = near ? float_near(r, base->f) : gen_float(r);
        return;
    case SOP_TUPLE_TEXT:
    case SOP_TUPLE_BYTEA:
        if (near)
            string_near(r, v);
        else
            gen_string(r, v);
        return;
    case SOP_TUPLE_UUID:
        if (near) {
            size_t i = 15 - t_rng_below(r, t_rng_below(r, 16) + 1);
            v->u[i] = gen_byte(r);
        } else {
            for (int i = 0; i < 16; i++)
                v->u[i] = t_rng_below(r, 2) ? (uint8_t)t_rng_next(r) : byte_alphabet[i % 4];
        }
        return;
    case SOP_TUPLE_TIMESTAMP:
    case SOP_TUPLE_TIMESTAMPTZ:
        v->i = near ? int_near(r, base->i) : gen_ts(r);
        return;
    case SOP_TUPLE_DATE:
        if (near)
            v->d = (int32_t)(base->d + (t_rng_below(r, 2) ? 1 : -1) * (base->d != INT32_MIN) *
                                           (base->d != INT32_MAX));
        else
            v->d = gen_date(r);
        return;
    case SOP_TUPLE_NULL:
        return;
    }
    CHECK(!"unreachable type");
}

/* Like gen_value, with NULLs mixed in (mostly of the position's kind). */
static void gen_elem(t_rng *r, sop_tuple_type type, bool nulls_last, const tv *base, tv *v)
{
    if (t_rng_below(r, 10) == 0) {
        memset(v, 0, sizeof(*v));
        v->type = SOP_TUPLE_NULL;
        v->nulls_last = t_rng_below(r, 8) == 0 ? !nulls_last : nulls_last;
        return;
    }
    gen_value(r, type, base, v);
}

/* ------------------------------------------------------------------------
 * Known answers (the examples of docs/format.md)
 * ------------------------------------------------------------------------ */

static void check_hex(const tv *v, const char *hex)
{
    uint8_t want[64] = {0}, got[64];
    size_t n = 0;
    for (const char *p = hex; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        unsigned x;
        CHECK(sscanf(p, "%2x", &x) == 1);
        want[n++] = (uint8_t)x;
        p += 2;
    }
    size_t len = encode_one(v, got, sizeof(got));
    CHECK_MSG(len == n && memcmp(got, want, n) == 0, "encoding differs from %s", hex);
    check_roundtrip_one(got, len, v);
}

TEST(tuple_known_encodings)
{
    tv v;
#define V(field, val, ty) (memset(&v, 0, sizeof(v)), v.type = (ty), v.field = (val), &v)
    check_hex(V(nulls_last, false, SOP_TUPLE_NULL), "00");
    check_hex(V(nulls_last, true, SOP_TUPLE_NULL), "FE");
    check_hex(V(b, false, SOP_TUPLE_BOOL), "10");
    check_hex(V(b, true, SOP_TUPLE_BOOL), "11");
    check_hex(V(i, 0, SOP_TUPLE_INT), "1C");
    check_hex(V(i, 1, SOP_TUPLE_INT), "1D 01");
    check_hex(V(i, 255, SOP_TUPLE_INT), "1D FF");
    check_hex(V(i, 256, SOP_TUPLE_INT), "1E 01 00");
    check_hex(V(i, 1000000, SOP_TUPLE_INT), "1F 0F 42 40");
    check_hex(V(i, -1, SOP_TUPLE_INT), "1B FE");
    check_hex(V(i, -255, SOP_TUPLE_INT), "1B 00");
    check_hex(V(i, -256, SOP_TUPLE_INT), "1A FE FF");
    check_hex(V(i, -257, SOP_TUPLE_INT), "1A FE FE");
    check_hex(V(i, INT64_MAX, SOP_TUPLE_INT), "24 7F FF FF FF FF FF FF FF");
    check_hex(V(i, INT64_MIN, SOP_TUPLE_INT), "14 7F FF FF FF FF FF FF FF");
    check_hex(V(f, 1.0, SOP_TUPLE_FLOAT8), "30 BF F0 00 00 00 00 00 00");
    check_hex(V(f, -1.0, SOP_TUPLE_FLOAT8), "30 40 0F FF FF FF FF FF FF");
    check_hex(V(f, 0.0, SOP_TUPLE_FLOAT8), "30 80 00 00 00 00 00 00 00");
    check_hex(V(f, -0.0, SOP_TUPLE_FLOAT8), "30 80 00 00 00 00 00 00 00");
    check_hex(V(f, INFINITY, SOP_TUPLE_FLOAT8), "30 FF F0 00 00 00 00 00 00");
    check_hex(V(f, -INFINITY, SOP_TUPLE_FLOAT8), "30 00 0F FF FF FF FF FF FF");
    check_hex(V(f, NAN, SOP_TUPLE_FLOAT8), "30 FF F8 00 00 00 00 00 00");
    check_hex(V(f, bitsd(UINT64_C(0xFFF0000000000123)), SOP_TUPLE_FLOAT8),
              "30 FF F8 00 00 00 00 00 00");
    check_hex(V(n, 0, SOP_TUPLE_TEXT), "40 00");
    check_hex((memcpy(V(n, 1, SOP_TUPLE_TEXT)->sbuf, "a", 1), &v), "40 61 00");
    check_hex((memcpy(V(n, 3, SOP_TUPLE_TEXT)->sbuf, "a\0b", 3), &v), "40 61 00 FF 62 00");
    check_hex((memcpy(V(n, 1, SOP_TUPLE_BYTEA)->sbuf, "\0", 1), &v), "41 00 FF 00");
    check_hex((memcpy(V(n, 2, SOP_TUPLE_BYTEA)->sbuf, "\xFF\0", 2), &v), "41 FF 00 FF 00");
    check_hex((memcpy(V(type, SOP_TUPLE_UUID, SOP_TUPLE_UUID)->u,
                      "\x01\x23\x45\x67\x89\xAB\xCD\xEF\x00\x11\x22\x33\x44\x55\x66\x77", 16),
               &v),
              "50 01 23 45 67 89 AB CD EF 00 11 22 33 44 55 66 77");
    check_hex(V(i, 0, SOP_TUPLE_TIMESTAMP), "60 80 00 00 00 00 00 00 00");
    check_hex(V(i, INT64_MIN, SOP_TUPLE_TIMESTAMP), "60 00 00 00 00 00 00 00 00");
    check_hex(V(i, INT64_MAX, SOP_TUPLE_TIMESTAMP), "60 FF FF FF FF FF FF FF FF");
    check_hex(V(i, -1, SOP_TUPLE_TIMESTAMPTZ), "61 7F FF FF FF FF FF FF FF");
    check_hex(V(d, 0, SOP_TUPLE_DATE), "62 80 00 00 00");
    check_hex(V(d, -1, SOP_TUPLE_DATE), "62 7F FF FF FF");
    check_hex(V(d, INT32_MIN, SOP_TUPLE_DATE), "62 00 00 00 00");
#undef V

    /* (1, 'ab', NULL) with nulls last */
    uint8_t buf[32];
    sop_tuple_writer w;
    sop_tuple_writer_init(&w, buf, sizeof(buf));
    sop_tuple_put_int(&w, 1);
    sop_tuple_put_text(&w, "ab", 2);
    sop_tuple_put_null(&w, true);
    CHECK_EQ(w.len, 7);
    CHECK(memcmp(buf, "\x1D\x01\x40\x61\x62\x00\xFE", 7) == 0);

    /* ('a', NULL) with nulls first: the second 0x00 is a tag, not an escape,
     * and the key sorts before ('a\0') */
    sop_tuple_writer_init(&w, buf, sizeof(buf));
    sop_tuple_put_text(&w, "a", 1);
    sop_tuple_put_null(&w, false);
    CHECK_EQ(w.len, 4);
    CHECK(memcmp(buf, "\x40\x61\x00\x00", 4) == 0);
    uint8_t buf2[8];
    sop_tuple_writer w2;
    sop_tuple_writer_init(&w2, buf2, sizeof(buf2));
    sop_tuple_put_text(&w2, "a\0", 2);
    CHECK_EQ(w2.len, 5);
    CHECK(bytes_sign(buf, w.len, buf2, w2.len) < 0);

    /* the example of the error format */
    sop_err errbuf, *err = &errbuf;
    size_t len;
    const uint8_t *bad = at_tail("\x1D\x01\x1D\x02\x1D\x03\x1C\x30\x00", 9);
    CHECK_RC(sop_tuple_prefix_length(bad, 9, 10, &len, err), SOP_CORRUPT, err);
    CHECK_MSG(strcmp(err->msg, "tuple: truncated float8 at offset 7") == 0, "'%s'", err->msg);
    CHECK_EQ(err->code, SOP_CORRUPT);
}

/* ------------------------------------------------------------------------
 * Order and round trip, one type at a time
 * ------------------------------------------------------------------------ */

static void run_type_pairs(sop_tuple_type type)
{
    init_int_specials();
    t_rng r;
    t_rng_seed(&r, t_seed());
    static tv a, b;
    uint8_t ea[256], eb[256];
    int n = pairs();
    long equal = 0, adjacent = 0;
    for (int i = 0; i < n; i++) {
        bool nl = t_rng_below(&r, 2);
        gen_elem(&r, type, nl, NULL, &a);
        gen_elem(&r, type, nl, &a, &b);
        if (t_rng_below(&r, 2)) { /* so "near" goes both ways */
            static tv s;
            s = a;
            a = b;
            b = s;
        }
        size_t la = encode_one(&a, ea, sizeof(ea)), lb = encode_one(&b, eb, sizeof(eb));
        int want = ref_cmp(&a, &b), got = bytes_sign(ea, la, eb, lb);
        CHECK_MSG(got == want, "pair %d: byte order %d, typed order %d", i, got, want);
        equal += want == 0;
        size_t common = 0;
        while (common < la && common < lb && ea[common] == eb[common])
            common++;
        adjacent += want != 0 && common > 1 && common + 2 >= (la < lb ? la : lb);
        check_roundtrip_one(ea, la, &a);
        check_roundtrip_one(eb, lb, &b);
    }
    /* the generators do produce ties and near misses */
    CHECK(equal > n / 20);
    if (type != SOP_TUPLE_BOOL)
        CHECK(adjacent > 0);
}

TEST(tuple_order_int)
{
    run_type_pairs(SOP_TUPLE_INT);
}

TEST(tuple_order_float8)
{
    run_type_pairs(SOP_TUPLE_FLOAT8);
}

TEST(tuple_order_text)
{
    run_type_pairs(SOP_TUPLE_TEXT);
}

TEST(tuple_order_bytea)
{
    run_type_pairs(SOP_TUPLE_BYTEA);
}

TEST(tuple_order_bool)
{
    run_type_pairs(SOP_TUPLE_BOOL);
}

TEST(tuple_order_uuid)
{
    run_type_pairs(SOP_TUPLE_UUID);
}

TEST(tuple_order_timestamp)
{
    run_type_pairs(SOP_TUPLE_TIMESTAMP);
}

TEST(tuple_order_timestamptz)
{
    run_type_pairs(SOP_TUPLE_TIMESTAMPTZ);
}

TEST(tuple_order_date)
{
    run_type_pairs(SOP_TUPLE_DATE);
}

/* Every integer near each byte-length boundary sorts strictly between its
 * neighbours and uses the minimal length. */
TEST(tuple_int_boundaries_exhaustive)
{
    int64_t centres[20];
    int nc = 0;
    centres[nc++] = 0;
    for (int k = 1; k < 8; k++) {
        centres[nc++] = (int64_t)1 << (8 * k);
        centres[nc++] = -((int64_t)1 << (8 * k));
    }
    centres[nc++] = INT64_MAX - 2000;
    centres[nc++] = INT64_MIN + 2000;
    uint8_t prev[16], cur[16];
    for (int c = 0; c < nc; c++) {
        int64_t span = c == 0 ? 70000 : 2000;
        int64_t lo = centres[c] - span, hi = centres[c] + span;
        size_t plen = 0;
        tv v;
        memset(&v, 0, sizeof(v));
        v.type = SOP_TUPLE_INT;
        for (int64_t x = lo;; x++) {
            v.i = x;
            size_t len = encode_one(&v, cur, sizeof(cur));
            uint64_t m = x < 0 ? UINT64_C(0) - (uint64_t)x : (uint64_t)x;
            size_t want = 1;
            while (m) {
                want++;
                m >>= 8;
            }
            CHECK_MSG(len == want, "%" PRId64 " encodes in %zu bytes, want %zu", x, len, want);
            if (x > lo)
                CHECK_MSG(bytes_sign(prev, plen, cur, len) < 0, "%" PRId64 " !< %" PRId64, x - 1,
                          x);
            check_roundtrip_one(cur, len, &v);
            memcpy(prev, cur, len);
            plen = len;
            if (x == hi)
                break;
        }
    }
    /* the two ends, and the widths int2/int4 share the encoding */
    tv a, b;
    memset(&a, 0, sizeof(a));
    a.type = b.type = SOP_TUPLE_INT;
    b = a;
    a.i = INT64_MIN;
    b.i = INT64_MIN + 1;
    size_t la = encode_one(&a, prev, sizeof(prev)), lb = encode_one(&b, cur, sizeof(cur));
    CHECK(bytes_sign(prev, la, cur, lb) < 0);
    int16_t s16 = -300;
    int32_t s32 = -300;
    sop_tuple_writer w1, w2;
    sop_tuple_writer_init(&w1, prev, sizeof(prev));
    sop_tuple_writer_init(&w2, cur, sizeof(cur));
    sop_tuple_put_int(&w1, s16);
    sop_tuple_put_int(&w2, s32);
    CHECK(w1.len == w2.len && memcmp(prev, cur, w1.len) == 0);
}

/* Floats in increasing order encode in increasing order; ties tie. */
TEST(tuple_float8_ladder)
{
    /* strictly increasing; 2.2250738585072009e-308 is the largest denormal */
    static const double ladder[] = {-INFINITY,
                                    -DBL_MAX,
                                    -1e300,
                                    -1.0,
                                    -DBL_MIN,
                                    -4.9406564584124654e-324,
                                    0.0,
                                    4.9406564584124654e-324,
                                    2.2250738585072009e-308,
                                    DBL_MIN,
                                    1.0,
                                    1e300,
                                    DBL_MAX,
                                    INFINITY,
                                    NAN};
    uint8_t a[16], b[16];
    size_t n = sizeof(ladder) / sizeof(ladder[0]);
    tv x, y;
    memset(&x, 0, sizeof(x));
    x.type = SOP_TUPLE_FLOAT8;
    y = x;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            x.f = ladder[i];
            y.f = ladder[j];
            size_t la = encode_one(&x, a, sizeof(a)), lb = encode_one(&y, b, sizeof(b));
            CHECK_EQ(bytes_sign(a, la, b, lb), sgn((long long)i - (long long)j));
        }
    /* -0.0 == 0.0, and every NaN equals every other NaN */
    x.f = -0.0;
    y.f = 0.0;
    CHECK(encode_one(&x, a, sizeof(a)) == 9 && encode_one(&y, b, sizeof(b)) == 9);
    CHECK(memcmp(a, b, 9) == 0);
    for (size_t i = 0; i < 7; i++) {
        x.f = bitsd(float_specials[i]);
        CHECK(isnan(x.f));
        encode_one(&x, a, sizeof(a));
        CHECK(memcmp(a, "\x30\xFF\xF8\0\0\0\0\0\0", 9) == 0);
    }
}

/* ------------------------------------------------------------------------
 * Strings
 * ------------------------------------------------------------------------ */

static void set_str(tv *v, sop_tuple_type type, const void *s, size_t n)
{
    memset(v, 0, sizeof(*v));
    v->type = type;
    CHECK(n <= STR_MAX);
    memcpy(v->sbuf, s, n);
    v->n = n;
}

TEST(tuple_text_edge_cases)
{
    /* strictly increasing: "", "\0", "\0\0", "\0\x01", "\x01", "a", "a\0",
     * "a\0\0", "a\0\xFF", "a\x01", "a\xFF", "a\xFF\0", "b", "\xFF", "\xFF\0",
     * "\xFF\xFF" */
    static const struct {
        const char *s;
        size_t n;
    } ladder[] = {{"", 0},        {"\0", 1},    {"\0\0", 2},   {"\0\x01", 2},
                  {"\x01", 1},    {"a", 1},     {"a\0", 2},    {"a\0\0", 3},
                  {"a\0\xFF", 3}, {"a\x01", 2}, {"a\xFF", 2},  {"a\xFF\0", 3},
                  {"b", 1},       {"\xFF", 1},  {"\xFF\0", 2}, {"\xFF\xFF", 2}};
    size_t n = sizeof(ladder) / sizeof(ladder[0]);
    static tuple ta, tb;
    uint8_t a[256], b[256];
    for (int ty = 0; ty < 2; ty++) {
        sop_tuple_type type = ty ? SOP_TUPLE_BYTEA : SOP_TUPLE_TEXT;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++)
                /* alone, and followed by elements of every kind */
                for (int follow = 0; follow < 4; follow++) {
                    set_str(&ta.e[0], type, ladder[i].s, ladder[i].n);
                    set_str(&tb.e[0], type, ladder[j].s, ladder[j].n);
                    memset(&ta.e[1], 0, sizeof(tv));
                    memset(&tb.e[1], 0, sizeof(tv));
                    ta.e[1].type = tb.e[1].type = follow == 1   ? SOP_TUPLE_NULL
                                                  : follow == 2 ? SOP_TUPLE_INT
                                                                : SOP_TUPLE_TEXT;
                    ta.e[1].nulls_last = true;
                    tb.e[1].nulls_last = false;
                    int k = follow ? 2 : 1;
                    size_t la = encode_tuple(&ta, k, a, sizeof(a), NULL);
                    size_t lb = encode_tuple(&tb, k, b, sizeof(b), NULL);
                    int want = sgn((long long)i - (long long)j);
                    if (want == 0 && follow == 1)
                        want = 1; /* NULL last > NULL first */
                    CHECK_MSG(bytes_sign(a, la, b, lb) == want, "ladder %zu vs %zu follow %d", i, j,
                              follow);
                    check_roundtrip(a, la, &ta, k);
                }
    }
    /* runs of 0x00 and 0xFF of every length up to 40, against each other */
    for (size_t i = 0; i < 80; i++)
        for (size_t j = 0; j < 80; j++) {
            uint8_t s1[40], s2[40];
            memset(s1, i < 40 ? 0x00 : 0xFF, sizeof(s1));
            memset(s2, j < 40 ? 0x00 : 0xFF, sizeof(s2));
            set_str(&ta.e[0], SOP_TUPLE_BYTEA, s1, i % 40);
            set_str(&tb.e[0], SOP_TUPLE_BYTEA, s2, j % 40);
            size_t la = encode_tuple(&ta, 1, a, sizeof(a), NULL);
            size_t lb = encode_tuple(&tb, 1, b, sizeof(b), NULL);
            CHECK_EQ(bytes_sign(a, la, b, lb), ref_cmp(&ta.e[0], &tb.e[0]));
            check_roundtrip(a, la, &ta, 1);
        }
}

/* 100 KiB strings full of zero bytes: order, prefixes, round trip. */
TEST(tuple_text_long)
{
    t_rng r;
    t_rng_seed(&r, t_seed());
    size_t n = 100 * 1024;
    uint8_t *s1 = malloc(n), *s2 = malloc(n);
    uint8_t *e1 = malloc(2 * n + 2), *e2 = malloc(2 * n + 2);
    CHECK(s1 && s2 && e1 && e2);
    static tuple ta, tb;
    for (int round = 0; round < 40; round++) {
        for (size_t i = 0; i < n; i++)
            s1[i] = round % 4 == 0 ? 0 : gen_byte(&r);
        memcpy(s2, s1, n);
        size_t n1 = n, n2 = n;
        switch (round % 3) {
        case 0: /* one byte differs somewhere */
            s2[t_rng_below(&r, n)] ^= (uint8_t)(1 + t_rng_below(&r, 255));
            break;
        case 1: /* a prefix */
            n2 = t_rng_below(&r, n + 1);
            break;
        default: /* equal */
            break;
        }
        memset(&ta.e[0], 0, sizeof(tv));
        ta.e[0].type = round & 1 ? SOP_TUPLE_TEXT : SOP_TUPLE_BYTEA;
        tb.e[0] = ta.e[0];
        ta.e[0].ext = s1;
        ta.e[0].n = n1;
        tb.e[0].ext = s2;
        tb.e[0].n = n2;
        size_t l1 = encode_tuple(&ta, 1, e1, 2 * n + 2, NULL);
        size_t l2 = encode_tuple(&tb, 1, e2, 2 * n + 2, NULL);
        CHECK_EQ(l1, 2 + n1 + count_zeros(s1, n1));
        CHECK_EQ(bytes_sign(e1, l1, e2, l2), ref_cmp(&ta.e[0], &tb.e[0]));
        check_roundtrip(e1, l1, &ta, 1);
        check_roundtrip(e2, l2, &tb, 1);
    }
    free(s1);
    free(s2);
    free(e1);
    free(e2);
}

/* NULL first sorts before, NULL last after, every value of every type. */
TEST(tuple_nulls_vs_values)
{
    init_int_specials();
    t_rng r;
    t_rng_seed(&r, t_seed());
    tv nf, nl, v;
    memset(&nf, 0, sizeof(nf));
    nf.type = SOP_TUPLE_NULL;
    nl = nf;
    nl.nulls_last = true;
    uint8_t a[256], b[256], c[256];
    size_t la = encode_one(&nf, a, sizeof(a)), lc = encode_one(&nl, c, sizeof(c));
    CHECK(bytes_sign(a, la, c, lc) < 0);
    for (int i = 0; i < 20000; i++) {
        gen_value(&r, value_types[t_rng_below(&r, NVALUE_TYPES)], NULL, &v);
        size_t lb = encode_one(&v, b, sizeof(b));
        CHECK(bytes_sign(a, la, b, lb) < 0);
        CHECK(bytes_sign(b, lb, c, lc) < 0);
        /* also when more elements follow the NULL */
        uint8_t a2[2] = {a[0], 0xFE}, c2[2] = {c[0], 0xFE};
        CHECK(bytes_sign(a2, 2, b, lb) < 0);
        CHECK(bytes_sign(b, lb, c2, 2) < 0);
    }
}

/* ------------------------------------------------------------------------
 * Composites
 * ------------------------------------------------------------------------ */

typedef struct shape {
    sop_tuple_type type[TMAX];
    bool nulls_last[TMAX];
} shape;

static void gen_shape(t_rng *r, shape *s)
{
    for (int i = 0; i < TMAX; i++) {
        s->type[i] = value_types[t_rng_below(r, NVALUE_TYPES)];
        s->nulls_last[i] = t_rng_below(r, 2);
    }
}

static void gen_tuple(t_rng *r, const shape *s, tuple *t)
{
    t->k = 1 + (int)t_rng_below(r, 5);
    for (int i = 0; i < t->k; i++)
        gen_elem(r, s->type[i], s->nulls_last[i], NULL, &t->e[i]);
}

/* A tuple related to a: a prefix, an extension, one element nudged, ... */
static void gen_tuple_near(t_rng *r, const shape *s, const tuple *a, tuple *b)
{
    switch (t_rng_below(r, 5)) {
    case 0:
        gen_tuple(r, s, b);
        return;
    case 1:
        *b = *a;
        b->k = (int)t_rng_below(r, (uint64_t)a->k + 1);
        return;
    case 2:
        *b = *a;
        while (b->k < TMAX && t_rng_below(r, 2) == 0) {
            gen_elem(r, s->type[b->k], s->nulls_last[b->k], NULL, &b->e[b->k]);
            b->k++;
        }
        return;
    default: {
        *b = *a;
        int j = (int)t_rng_below(r, (uint64_t)a->k);
        gen_elem(r, s->type[j], s->nulls_last[j], &a->e[j], &b->e[j]);
        if (t_rng_below(r, 2)) {
            b->k = j + 1 + (int)t_rng_below(r, (uint64_t)(TMAX - j));
            for (int i = j + 1; i < b->k; i++)
                gen_elem(r, s->type[i], s->nulls_last[i], i < a->k ? &a->e[i] : NULL, &b->e[i]);
        }
        return;
    }
    }
}

TEST(tuple_composite_order)
{
    init_int_specials();
    t_rng r;
    t_rng_seed(&r, t_seed());
    static tuple a, b;
    static uint8_t ea[ENC_MAX], eb[ENC_MAX];
    size_t ba[TMAX], bb[TMAX];
    shape s;
    int n = pairs();
    long equal = 0, prefixes = 0;
    sop_err errbuf, *err = &errbuf;
    for (int i = 0; i < n; i++) {
        gen_shape(&r, &s);
        gen_tuple(&r, &s, &a);
        gen_tuple_near(&r, &s, &a, &b);
        size_t la = encode_tuple(&a, a.k, ea, sizeof(ea), ba);
        size_t lb = encode_tuple(&b, b.k, eb, sizeof(eb), bb);
        int want = ref_tuple_cmp(&a, a.k, &b, b.k);
        CHECK_MSG(bytes_sign(ea, la, eb, lb) == want, "pair %d: typed order %d", i, want);
        equal += want == 0;
        prefixes += a.k != b.k;
        check_roundtrip(ea, la, &a, a.k);
        if (i % 4 == 0)
            check_roundtrip(eb, lb, &b, b.k);

        /* the first nf fields only */
        uint32_t nf = (uint32_t)t_rng_below(&r, TMAX + 2);
        int fa = (int)nf < a.k ? (int)nf : a.k, fb = (int)nf < b.k ? (int)nf : b.k;
        size_t pa, pb;
        CHECK_OK(sop_tuple_prefix_length(ea, la, nf, &pa, err), err);
        CHECK_OK(sop_tuple_prefix_length(eb, lb, nf, &pb, err), err);
        CHECK_EQ(pa, fa ? ba[fa - 1] : 0);
        CHECK_EQ(pb, fb ? bb[fb - 1] : 0);
        int c = sop__tuple_cmp_prefix(ea, la, eb, lb, nf);
        CHECK_EQ(c, ref_tuple_cmp(&a, fa, &b, fb));
        CHECK_EQ(sop__tuple_cmp_prefix(eb, lb, ea, la, nf), -c);
        CHECK_EQ(sop__tuple_cmp_prefix(ea, la, ea, la, nf), 0);
    }
    CHECK(equal > n / 50);
    CHECK(prefixes > n / 10);
}

/* ------------------------------------------------------------------------
 * The writer
 * ------------------------------------------------------------------------ */

TEST(tuple_writer_truncation)
{
    init_int_specials();
    t_rng r;
    t_rng_seed(&r, t_seed());
    static tuple t;
    static uint8_t full[ENC_MAX], again[ENC_MAX];
    shape s;
    for (int i = 0; i < 2000; i++) {
        gen_shape(&r, &s);
        gen_tuple(&r, &s, &t);
        size_t len = encode_tuple(&t, t.k, full, sizeof(full), NULL);

        /* a sizing pass with no buffer at all */
        sop_tuple_writer w;
        sop_tuple_writer_init(&w, NULL, 0);
        for (int j = 0; j < t.k; j++)
            put_tv(&w, &t.e[j]);
        CHECK_EQ(w.len, len);

        for (size_t cap = 0; cap <= len + 1; cap += 1 + (len > 64) * t_rng_below(&r, 4)) {
            /* exactly cap bytes on the heap (ASan), then a canary (plain
             * builds) in a second block */
            uint8_t *buf = malloc(cap ? cap : 1);
            CHECK(buf != NULL);
            memset(buf, 0xA5, cap);
            sop_tuple_writer_init(&w, buf, cap);
            for (int j = 0; j < t.k; j++) {
                put_tv(&w, &t.e[j]);
                CHECK(w.len <= len);
            }
            CHECK_EQ(w.len, len);
            size_t kept = cap < len ? cap : len;
            CHECK(kept == 0 || memcmp(buf, full, kept) == 0);
            for (size_t j = kept; j < cap; j++)
                CHECK_EQ(buf[j], 0xA5);
            free(buf);

            uint8_t canary[ENC_MAX + 16];
            memset(canary, 0x5A, sizeof(canary));
            sop_tuple_writer_init(&w, canary, cap);
            for (int j = 0; j < t.k; j++)
                put_tv(&w, &t.e[j]);
            CHECK_EQ(w.len, len);
            for (size_t j = cap; j < cap + 16; j++)
                CHECK_EQ(canary[j], 0x5A);
        }
        /* grow to the reported length and encode again: identical bytes */
        size_t len2 = encode_tuple(&t, t.k, again, len, NULL);
        CHECK_EQ(len2, len);
        CHECK(memcmp(full, again, len) == 0);
    }
}

/* ------------------------------------------------------------------------
 * Malformed input
 * ------------------------------------------------------------------------ */

static bool fixed_payload_tag(uint8_t tag)
{
    return (tag >= 0x14 && tag <= 0x24 && tag != 0x1C) || tag == 0x30 || tag == 0x50 ||
           tag == 0x60 || tag == 0x61 || tag == 0x62;
}

/* Every truncation of valid encodings: a clean error, or a valid decode
 * (then it re-encodes identically); cuts at element boundaries always
 * decode, cuts inside fixed-size payloads never do. */
TEST(tuple_truncations)
{
    init_int_specials();
    t_rng r;
    t_rng_seed(&r, t_seed());
    static tuple t;
    static uint8_t enc[ENC_MAX];
    size_t bounds[TMAX];
    shape s;
    for (int i = 0; i < 3000; i++) {
        gen_shape(&r, &s);
        gen_tuple(&r, &s, &t);
        size_t len = encode_tuple(&t, t.k, enc, sizeof(enc), bounds);
        int elem = 0;
        size_t start = 0;
        for (size_t cut = 0; cut <= len; cut++) {
            while (elem < t.k && bounds[elem] < cut)
                start = bounds[elem++];
            sop_rc rc;
            int got = decode_all(at_tail(enc, cut), cut, &rc, NULL);
            bool at_boundary = cut == start || (elem < t.k && cut == bounds[elem]);
            if (at_boundary) {
                CHECK_RC(rc, SOP_NOTFOUND, (sop_err *)NULL);
                CHECK_EQ(got, elem + (elem < t.k && cut == bounds[elem]));
            } else if (fixed_payload_tag(enc[start])) {
                CHECK_RC(rc, SOP_CORRUPT, (sop_err *)NULL);
                CHECK_EQ(got, elem);
            }
        }
    }
}

/* Random garbage, biased towards tags, 0x00 and 0xFF. */
TEST(tuple_garbage)
{
    t_rng r;
    t_rng_seed(&r, t_seed());
    static const uint8_t interesting[] = {0x00, 0xFF, 0xFE, 0x10, 0x11, 0x14, 0x1B, 0x1C,
                                          0x1D, 0x24, 0x30, 0x40, 0x41, 0x50, 0x60, 0x61,
                                          0x62, 0x80, 0x7F, 0x01, 0x25, 0x13, 0x0F, 0x42};
    uint8_t g[40];
    size_t ends[40];
    sop_err errbuf, *err = &errbuf;
    long valid = 0;
    int n = pairs();
    for (int i = 0; i < n; i++) {
        size_t len = t_rng_below(&r, sizeof(g) + 1);
        for (size_t j = 0; j < len; j++)
            g[j] = t_rng_below(&r, 3) ? interesting[t_rng_below(&r, sizeof(interesting))]
                                      : (uint8_t)t_rng_next(&r);
        const uint8_t *p = at_tail(g, len);
        sop_rc rc;
        int count = decode_all(p, len, &rc, ends);
        valid += rc == SOP_NOTFOUND;
        /* prefix_length agrees with the reader */
        uint32_t nf = (uint32_t)t_rng_below(&r, 8);
        size_t pl = 12345;
        sop_rc prc = sop_tuple_prefix_length(p, len, nf, &pl, err);
        if ((int)nf <= count || rc == SOP_NOTFOUND) {
            CHECK_OK(prc, err);
            int m = (int)nf < count ? (int)nf : count;
            CHECK_EQ(pl, m ? ends[m - 1] : 0);
        } else {
            CHECK_RC(prc, SOP_CORRUPT, err);
            CHECK_EQ(pl, 12345); /* out-parameter untouched */
            CHECK_EQ(msg_offset(err->msg), count ? ends[count - 1] : 0);
        }
    }
    CHECK(valid > 0);
}

static void expect_corrupt(const char *bytes, size_t n, const char *what)
{
    sop_err errbuf, *err = &errbuf;
    sop_err_clear(err);
    const uint8_t *p = at_tail(bytes, n);
    sop_tuple_reader r;
    sop_tuple_reader_init(&r, p, n);
    sop_tuple_value d;
    sop_rc rc;
    while ((rc = sop_tuple_next(&r, &d, err)) == SOP_OK)
        ;
    CHECK_MSG(rc == SOP_CORRUPT, "%s: %s", what, sop_rc_name(rc));
    CHECK_MSG(strstr(err->msg, what) != NULL, "message '%s' lacks '%s'", err->msg, what);
    CHECK_MSG(msg_offset(err->msg) == r.pos, "message '%s', reader at %zu", err->msg, r.pos);
    size_t len;
    CHECK_RC(sop_tuple_prefix_length(p, n, UINT32_MAX, &len, err), SOP_CORRUPT, err);
}

static void expect_valid(const char *bytes, size_t n, int elems)
{
    sop_rc rc;
    int got = decode_all(at_tail(bytes, n), n, &rc, NULL);
    CHECK_RC(rc, SOP_NOTFOUND, (sop_err *)NULL);
    CHECK_EQ(got, elems);
}

TEST(tuple_bad_tags_and_noncanonical)
{
    /* every single byte: a tag with no payload decodes, the rest do not */
    for (unsigned t = 0; t < 256; t++) {
        char b[1] = {(char)t};
        bool bare = t == 0x00 || t == 0x10 || t == 0x11 || t == 0x1C || t == 0xFE;
        bool known = bare || fixed_payload_tag((uint8_t)t) || t == 0x40 || t == 0x41;
        if (bare)
            expect_valid(b, 1, 1);
        else if (known)
            expect_corrupt(b, 1, t == 0x40 || t == 0x41 ? "unterminated" : "truncated");
        else
            expect_corrupt(b, 1, "unknown tag");
    }
    expect_corrupt("\xFF", 1, "unknown tag 0xff at offset 0");
    expect_corrupt("\x1C\xFF", 2, "unknown tag 0xff at offset 1");

    /* every 1- and 2-byte int payload: valid exactly when canonical */
    for (unsigned tag = 0x14; tag <= 0x24; tag++) {
        if (tag == 0x1C)
            continue;
        unsigned n = tag > 0x1C ? tag - 0x1C : 0x1C - tag;
        if (n > 2)
            continue;
        for (unsigned x = 0; x < (n == 1 ? 256u : 65536u); x++) {
            char b[3] = {(char)tag, (char)(n == 1 ? x : x >> 8), (char)x};
            unsigned lead = n == 1 ? x : x >> 8;
            bool canonical = tag > 0x1C ? lead != 0x00 : lead != 0xFF;
            if (canonical)
                expect_valid(b, 1 + n, 1);
            else
                expect_corrupt(b, 1 + n, "non-canonical int at offset 0");
        }
    }
    /* leading zero / 0xFF at every width, and out of int64 range */
    for (unsigned n = 1; n <= 8; n++) {
        char b[10];
        memset(b, 0x42, sizeof(b));
        b[0] = (char)(0x1C + n);
        b[1] = 0x00;
        expect_corrupt(b, 1 + n, "non-canonical int");
        b[0] = (char)(0x1C - n);
        b[1] = (char)0xFF;
        expect_corrupt(b, 1 + n, "non-canonical int");
    }
    expect_corrupt("\x24\x80\0\0\0\0\0\0\0", 9, "int out of range");
    expect_corrupt("\x24\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 9, "int out of range");
    expect_corrupt("\x14\x7F\xFF\xFF\xFF\xFF\xFF\xFF\xFE", 9, "int out of range");
    expect_corrupt("\x14\x00\x00\x00\x00\x00\x00\x00\x00", 9, "int out of range");
    expect_valid("\x14\x7F\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 9, 1); /* INT64_MIN */
    expect_valid("\x24\x7F\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 9, 1); /* INT64_MAX */

    /* floats: -0.0 and non-canonical NaNs have no encoding */
    expect_corrupt("\x30\x7F\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 9, "non-canonical float8 at offset 0");
    expect_corrupt("\x30\xFF\xF0\0\0\0\0\0\x01", 9, "non-canonical float8");
    expect_corrupt("\x30\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 9, "non-canonical float8");
    expect_corrupt("\x30\x00\x07\xFF\xFF\xFF\xFF\xFF\xFF", 9, "non-canonical float8");
    expect_corrupt("\x30\0\0\0\0\0\0\0\0", 9, "non-canonical float8");
    expect_valid("\x30\xFF\xF8\0\0\0\0\0\0", 9, 1);
    expect_valid("\x30\xFF\xF0\0\0\0\0\0\0", 9, 1);
    expect_valid("\x30\x00\x0F\xFF\xFF\xFF\xFF\xFF\xFF", 9, 1);

    /* strings: only 0x00 0xFF escapes; a lone 0x00 ends the string */
    expect_valid("\x40\x61\x00\x1D\x01", 5, 2);
    expect_valid("\x40\x00\xFF\x00\xFE", 5, 2);
    expect_valid("\x41\xFF\xFF\x00", 4, 1);
    expect_corrupt("\x40\x61", 2, "unterminated text at offset 0");
    expect_corrupt("\x1C\x41\x61\x00\xFF", 5, "unterminated bytea at offset 1");
    expect_corrupt("\x40\x61\x00\xFF", 4, "unterminated text");
    expect_valid("\x40\x61\x00\x00", 4, 2); /* "a", then NULL first */
    expect_corrupt("\x40\x61\x00\x13", 4, "unknown tag 0x13 at offset 3");

    /* truncated fixed payloads name the element's offset */
    expect_corrupt("\x11\x50\x01\x02", 4, "truncated uuid at offset 1");
    expect_corrupt("\x60\0\0\0", 4, "truncated timestamp at offset 0");
    expect_corrupt("\x1C\x61\0\0\0\0\0\0\0", 9, "truncated timestamptz at offset 1");
    expect_corrupt("\x62\0\0\0", 4, "truncated date at offset 0");
    expect_corrupt("\x1F\x01\x02", 3, "truncated int at offset 0");

    /* an empty buffer, with or without a pointer, is an empty tuple */
    sop_tuple_reader r;
    sop_tuple_value d;
    sop_tuple_reader_init(&r, NULL, 0);
    CHECK_RC(sop_tuple_next(&r, &d, NULL), SOP_NOTFOUND, (sop_err *)NULL);
    size_t len = 99;
    CHECK_OK(sop_tuple_prefix_length(NULL, 0, 3, &len, NULL), (sop_err *)NULL);
    CHECK_EQ(len, 0);
    CHECK_EQ(sop__tuple_cmp_prefix(NULL, 0, NULL, 0, 3), 0);
    /* errors with err == NULL */
    CHECK_RC(sop_tuple_prefix_length(at_tail("\x30", 1), 1, 1, &len, NULL), SOP_CORRUPT,
             (sop_err *)NULL);
}

/* ------------------------------------------------------------------------
 * Comparing by a prefix: a total preorder, valid or not
 * ------------------------------------------------------------------------ */

#define NKEYS 100

typedef struct key {
    uint8_t b[48];
    size_t n;
} key;

/* Short keys from tiny domains (so prefixes are shared), some damaged. */
static void gen_key(t_rng *r, key *k)
{
    static const char *strs[] = {"", "a", "a\0", "ab", "\xFF"};
    static const size_t lens[] = {0, 1, 2, 2, 1};
    sop_tuple_writer w;
    sop_tuple_writer_init(&w, k->b, sizeof(k->b));
    int elems = (int)t_rng_below(r, 4);
    for (int i = 0; i < elems; i++) {
        switch (t_rng_below(r, 5)) {
        case 0:
            sop_tuple_put_int(&w, (int64_t)t_rng_below(r, 5) - 2 + 254 * (int)t_rng_below(r, 2));
            break;
        case 1: {
            size_t j = t_rng_below(r, 5);
            sop_tuple_put_text(&w, strs[j], lens[j]);
            break;
        }
        case 2:
            sop_tuple_put_null(&w, t_rng_below(r, 2));
            break;
        case 3:
            sop_tuple_put_bool(&w, t_rng_below(r, 2));
            break;
        default:
            sop_tuple_put_date(&w, (int32_t)t_rng_below(r, 3));
            break;
        }
    }
    CHECK(w.len <= sizeof(k->b) - 2);
    k->n = w.len;
    switch (t_rng_below(r, 6)) {
    case 0: /* cut */
        k->n = t_rng_below(r, k->n + 1);
        break;
    case 1: /* append a byte that often confuses: 0xFF after a terminator */
        k->b[k->n++] = t_rng_below(r, 2) ? 0xFF : (uint8_t)t_rng_next(r);
        break;
    case 2: /* flip a byte */
        if (k->n)
            k->b[t_rng_below(r, k->n)] ^= (uint8_t)(1 + t_rng_below(r, 255));
        break;
    default:
        break;
    }
}

TEST(tuple_cmp_prefix_total_order)
{
    t_rng r;
    t_rng_seed(&r, t_seed());
    static key keys[NKEYS];
    static signed char c[NKEYS][NKEYS];
    long malformed = 0;
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < NKEYS; i++)
            gen_key(&r, &keys[i]);
        for (uint32_t nf = 0; nf <= 4; nf++) {
            for (int i = 0; i < NKEYS; i++) {
                size_t pi;
                bool vi = sop_tuple_prefix_length(at_tail(keys[i].b, keys[i].n), keys[i].n, nf, &pi,
                                                  NULL) == SOP_OK;
                malformed += !vi;
                for (int j = 0; j < NKEYS; j++) {
                    int x = sop__tuple_cmp_prefix(keys[i].b, keys[i].n, keys[j].b, keys[j].n, nf);
                    CHECK(x >= -1 && x <= 1);
                    c[i][j] = (signed char)x;
                    /* the documented definition */
                    size_t pj;
                    bool vj =
                        sop_tuple_prefix_length(keys[j].b, keys[j].n, nf, &pj, NULL) == SOP_OK;
                    int want = vi && vj ? bytes_sign(keys[i].b, pi, keys[j].b, pj)
                                        : bytes_sign(keys[i].b, keys[i].n, keys[j].b, keys[j].n);
                    CHECK_EQ(x, want);
                }
            }
            for (int i = 0; i < NKEYS; i++) {
                CHECK_EQ(c[i][i], 0);
                for (int j = 0; j < NKEYS; j++) {
                    CHECK_EQ(c[i][j], -c[j][i]);
                    if (c[i][j] > 0)
                        continue;
                    for (int k = 0; k < NKEYS; k++)
                        if (c[j][k] <= 0)
                            CHECK_MSG(c[i][k] <= 0, "not transitive: keys %d %d %d nf %u", i, j, k,
                                      nf);
                }
            }
        }
    }
    CHECK(malformed > 0);
}
