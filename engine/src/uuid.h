/*
 * uuid.h - 16-byte identifiers: random (v4) for nodes, time-ordered (v7) for
 * items, and their text form.
 *
 * Invariants:
 *  1. Randomness comes from a per-thread xoshiro256** generator seeded from
 *     getrandom(); a forked child reseeds before its first ID, so parent and
 *     child never produce the same sequence.
 *  2. sop__uuid_v7 is strictly increasing (as bytes, by memcmp) across all
 *     threads of one process: 48-bit Unix milliseconds, then a 12-bit counter
 *     that borrows the next millisecond when it overflows (RFC 9562, method
 *     1), then 62 random bits. Across processes the order follows the clock.
 */
#ifndef SOP_UUID_H
#define SOP_UUID_H

#include <stdbool.h>
#include <stdint.h>

#define SOP__UUID_TEXT_LEN 36

void sop__uuid_v4(uint8_t out[16]);
void sop__uuid_v7(uint8_t out[16]);
/* Fills out[0..36] with "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" and a NUL. */
void sop__uuid_format(const uint8_t id[16], char out[SOP__UUID_TEXT_LEN + 1]);
/* Parses the text form (either case); false if malformed. */
bool sop__uuid_parse(const char *s, uint8_t out[16]);
bool sop__uuid_is_nil(const uint8_t id[16]);
/* 64 random bits from the same per-thread generator. */
uint64_t sop__random64(void);

#endif
