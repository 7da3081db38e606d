/*
 * fuzz_node.c - libFuzzer target for the node body decoder: any input must
 * decode to a node or SOP_CORRUPT, never crash or read outside the buffer;
 * whatever decodes must re-encode to exactly the input bytes. Random
 * mutations almost never survive the CRC-32C, so the target also decodes a
 * copy whose last 4 bytes are replaced by the right CRC: that drives the
 * parser behind the checksum.
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
    sop__node *n = NULL;
    sop_rc rc = sop__node_decode(data, size, "fuzz", &n, &err);
    if (rc != SOP_OK) {
        if (rc != SOP_CORRUPT && rc != SOP_NOMEM)
            abort();
        if (n != NULL)
            abort(); /* no partial result */
        return;
    }
    size_t len = sop__node_encoded_size(n);
    if (len != size)
        abort();
    uint8_t *out = malloc(len);
    sop__node_encode(n, out);
    if (memcmp(out, data, size) != 0)
        abort();
    free(out);
    sop__node_free(n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size);
    if (size >= 4) {
        uint8_t *copy = malloc(size);
        memcpy(copy, data, size);
        uint32_t crc = sop__crc32c(0, copy, size - 4);
        for (int i = 0; i < 4; i++)
            copy[size - 4 + i] = (uint8_t)(crc >> (8 * i));
        check(copy, size);
        free(copy);
    }
    return 0;
}
