/*
 * tuple.h - internal side of the order-preserving tuple codec (the public
 * API is in sop.h, the byte format in docs/format.md, "Tuple encoding").
 *
 * Invariants (proved in tuple.c and tests/engine/test_tuple.c):
 *  1. The tag values below are the on-disk format: never renumber them.
 *  2. No tag is 0xFF, so "0x00 0xFF" inside a string is always an escaped
 *     zero byte and a lone 0x00 always ends the string.
 *  3. sop__tuple_cmp_prefix is a total preorder on all byte strings, valid or
 *     not, and never allocates or touches a sop_err.
 */
#ifndef SOP_TUPLE_H
#define SOP_TUPLE_H

#include <stddef.h>
#include <stdint.h>

#include "sop.h"

/* Tag bytes (docs/format.md). Integers use SOP__TUPLE_TAG_INT_ZERO - 8 ..
 * SOP__TUPLE_TAG_INT_ZERO + 8: the distance from INT_ZERO is the payload
 * length, below it for negative values, above it for positive ones. */
#define SOP__TUPLE_TAG_NULL_FIRST  0x00u
#define SOP__TUPLE_TAG_FALSE       0x10u
#define SOP__TUPLE_TAG_TRUE        0x11u
#define SOP__TUPLE_TAG_INT_NEG8    0x14u
#define SOP__TUPLE_TAG_INT_ZERO    0x1Cu
#define SOP__TUPLE_TAG_INT_POS8    0x24u
#define SOP__TUPLE_TAG_FLOAT8      0x30u
#define SOP__TUPLE_TAG_TEXT        0x40u
#define SOP__TUPLE_TAG_BYTEA       0x41u
#define SOP__TUPLE_TAG_UUID        0x50u
#define SOP__TUPLE_TAG_TIMESTAMP   0x60u
#define SOP__TUPLE_TAG_TIMESTAMPTZ 0x61u
#define SOP__TUPLE_TAG_DATE        0x62u
#define SOP__TUPLE_TAG_NULL_LAST   0xFEu

/* The canonical NaN every NaN is encoded as (and decodes to). */
#define SOP__TUPLE_NAN_BITS UINT64_C(0x7FF8000000000000)

/*
 * Orders two encoded keys by their first `nfields` elements only: the
 * prefixes are found exactly as sop_tuple_prefix_length finds them and
 * compared with memcmp, the shorter first when one is a prefix of the other.
 * If either key is malformed within its first `nfields` elements, the whole
 * keys are compared that way instead. Returns -1, 0 or 1.
 *
 * Only the first nfields elements of each key are examined (plus, after a
 * string terminator, the one byte that tells it from an escape), which is
 * what makes this a total preorder even over malformed keys: the keys whose
 * prefix is P form one contiguous range of the memcmp order that contains no
 * malformed key (docs/format.md, "Comparing by a prefix").
 *
 * Hot path of the B-tree: no allocation, no sop_err.
 */
int sop__tuple_cmp_prefix(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                          uint32_t nfields);

#endif
