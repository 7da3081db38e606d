/*
 * fuzz_redo.c - libFuzzer target for the redo record (the payload of a
 * COMMIT record and of a prepared file; docs/format.md, "Redo record"):
 * sop__redo_check must accept it or reject it with SOP_CORRUPT and a
 * message, never crash or read outside the input. Whatever it accepts,
 * sop__redo_claims (which prepared transactions' claims go through) must
 * walk to the end without an error, visiting valid store names. The record
 * has no checksum of its own (the log record or the prepared file around it
 * carries one), so mutations reach the parser directly.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "txn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A violated expectation: say which, then abort (the crash the runner sees). */
#define EXPECT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_redo: %s:%d: expected %s\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct seen {
    unsigned claims;
    unsigned sum;
} seen;

static sop_rc touch_claim(void *ctx, const char *store, const uint8_t lid[16])
{
    seen *s = ctx;
    EXPECT(sop__store_name_valid(store)); /* the parser let no bad name through */
    for (const char *p = store; *p; p++)
        s->sum += (unsigned char)*p;
    for (int i = 0; lid && i < 16; i++) /* NULL: a claim on the store itself */
        s->sum += lid[i];
    s->claims++;
    return SOP_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sop_err err;
    sop_err_clear(&err);
    sop_rc rc = sop__redo_check(data, size, &err);
    EXPECT(rc == SOP_OK || (rc == SOP_CORRUPT && err.code == SOP_CORRUPT && err.msg[0] != '\0'));
    seen s = {0, 0};
    sop_err cerr;
    sop_err_clear(&cerr);
    sop_rc crc = sop__redo_claims(data, size, touch_claim, &s, &cerr);
    EXPECT(crc == SOP_OK || crc == SOP_CORRUPT);
    EXPECT(rc != SOP_OK || crc == SOP_OK); /* the claims walk takes what the check accepts */
    return 0;
}
