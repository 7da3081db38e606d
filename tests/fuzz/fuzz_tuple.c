/*
 * fuzz_tuple.c - libFuzzer target for the tuple decoder: any input must
 * decode to values or SOP_CORRUPT, never crash or read outside the buffer;
 * whatever decodes must re-encode to the same bytes, and the prefix
 * comparator must agree with itself in both argument orders.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sop.h"
#include "tuple.h"

static void reencode(sop_tuple_writer *w, const sop_tuple_value *v)
{
    switch (v->type) {
    case SOP_TUPLE_NULL:
        sop_tuple_put_null(w, v->nulls_last);
        break;
    case SOP_TUPLE_BOOL:
        sop_tuple_put_bool(w, v->b);
        break;
    case SOP_TUPLE_INT:
        sop_tuple_put_int(w, v->i);
        break;
    case SOP_TUPLE_FLOAT8:
        sop_tuple_put_float8(w, v->f);
        break;
    case SOP_TUPLE_TEXT:
    case SOP_TUPLE_BYTEA: {
        uint8_t *tmp = malloc(v->len ? v->len : 1);
        sop_tuple_value_copy(v, tmp);
        if (v->type == SOP_TUPLE_TEXT)
            sop_tuple_put_text(w, tmp, v->len);
        else
            sop_tuple_put_bytea(w, tmp, v->len);
        free(tmp);
        break;
    }
    case SOP_TUPLE_UUID:
        sop_tuple_put_uuid(w, v->raw);
        break;
    case SOP_TUPLE_TIMESTAMP:
        sop_tuple_put_timestamp(w, v->i);
        break;
    case SOP_TUPLE_TIMESTAMPTZ:
        sop_tuple_put_timestamptz(w, v->i);
        break;
    case SOP_TUPLE_DATE:
        sop_tuple_put_date(w, v->date);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sop_tuple_reader r;
    sop_tuple_reader_init(&r, data, size);
    uint8_t *out = malloc(size + 16);
    sop_tuple_writer w;
    sop_tuple_writer_init(&w, out, size + 16);
    sop_tuple_value v;
    sop_err err;
    sop_rc rc;
    size_t good = 0;
    while ((rc = sop_tuple_next(&r, &v, &err)) == SOP_OK) {
        reencode(&w, &v);
        good = r.pos;
    }
    if (rc == SOP_NOTFOUND && (w.len != size || memcmp(out, data, size) != 0))
        abort(); /* a fully decoded input must re-encode to itself */
    if (w.len != good || memcmp(out, data, good) != 0)
        abort();
    size_t half = size / 2;
    for (uint32_t nf = 0; nf < 4; nf++) {
        int a = sop__tuple_cmp_prefix(data, half, data + half, size - half, nf);
        int b = sop__tuple_cmp_prefix(data + half, size - half, data, half, nf);
        if (a != -b)
            abort();
    }
    free(out);
    return 0;
}
