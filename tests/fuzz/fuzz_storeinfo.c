/*
 * fuzz_storeinfo.c - libFuzzer target for the store information decoder:
 * any input must decode or be SOP_CORRUPT, never crash or read outside the
 * buffer; whatever decodes must re-encode (state part, then fixed part) to
 * exactly the input bytes. Because both parts end with a CRC-32C, the target
 * also decodes a copy with both CRCs recomputed over the mutated bytes, so
 * the field validation behind the checksums gets exercised.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "crc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const uint8_t *data, size_t size)
{
    sop_err err;
    sop__storeinfo s;
    sop_rc rc = sop__storeinfo_decode(data, size, "fuzz", &s, &err);
    if (rc != SOP_OK) {
        if (rc != SOP_CORRUPT)
            abort();
        return;
    }
    size_t fixed = sop__storeinfo_fixed_size();
    if (size != SOP__STOREINFO_STATE_SIZE + fixed)
        abort();
    uint8_t *out = malloc(size);
    sop__storeinfo_encode_state(&s, out);
    sop__storeinfo_encode_fixed(&s, out + SOP__STOREINFO_STATE_SIZE);
    if (memcmp(out, data, size) != 0)
        abort();
    free(out);
}

static void patch_crc(uint8_t *p, size_t n)
{
    uint32_t crc = sop__crc32c(0, p, n - 4);
    for (int i = 0; i < 4; i++)
        p[n - 4 + i] = (uint8_t)(crc >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size);
    size_t fixed = sop__storeinfo_fixed_size();
    if (size >= SOP__STOREINFO_STATE_SIZE) {
        uint8_t *copy = malloc(size);
        memcpy(copy, data, size);
        patch_crc(copy, SOP__STOREINFO_STATE_SIZE);
        if (size >= SOP__STOREINFO_STATE_SIZE + fixed)
            patch_crc(copy + SOP__STOREINFO_STATE_SIZE, fixed);
        check(copy, size);
        free(copy);
    }
    return 0;
}
