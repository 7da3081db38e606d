/*
 * fuzz_regblock.c - libFuzzer target for registry blocks: the first 4096
 * bytes of the input (zero-padded) become block 0 of segment 1 of a store,
 * then lookups, a scan and a batch of changes run over it. Nothing may
 * crash; a bad block must be SOP_CORRUPT. Byte 4096, if present, selects:
 *   bit 0  reseal the block with a good checksum (so the slot decoding is
 *          exercised, not only the checksum test),
 *   bit 1  apply with SOP__REG_IF_NEWER,
 *   bit 2  apply with SOP__REG_REPAIR,
 *   bit 3  also scan (the scan reads the whole segment: kept occasional).
 * After a successful PUT without IF_NEWER, a lookup must return exactly the
 * handle written.
 *
 * One temporary folder per process (mkdtemp), reused: the segment file is
 * created once and only block 0 is rewritten per input.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc.h"
#include "registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HM 250u

static char dir[4096];
static char seg1[4200], seg2[4200];
static int seg1_fd = -1;

static void setup(void)
{
    if (seg1_fd >= 0)
        return;
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/sop_fuzz_regblock.XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(seg1, sizeof(seg1), "%s/f-1.reg", dir);
    snprintf(seg2, sizeof(seg2), "%s/f-2.reg", dir);
    seg1_fd = open(seg1, O_RDWR | O_CREAT, 0600);
    if (seg1_fd < 0 || ftruncate(seg1_fd, (off_t)HM * 4096) != 0)
        abort();
}

static void cleanup(void)
{
    unlink(seg1);
    unlink(seg2);
    rmdir(dir);
}

static void reseal(uint8_t *b)
{
    bool zero = true;
    for (size_t i = 0; i < 4092 && zero; i++)
        zero = b[i] == 0;
    uint32_t c = zero ? 0 : sop__crc32_ieee(0, b, 4092);
    for (int i = 0; i < 4; i++)
        b[4092 + i] = (uint8_t)(c >> (8 * i));
}

/* The lid of slot s moved into block 0 (its low half kept). */
static void lid_in_block0(const uint8_t *slot, uint8_t lid[16])
{
    memcpy(lid, slot, 16);
    uint64_t hi = 0;
    for (int i = 0; i < 8; i++)
        hi = hi << 8 | lid[i];
    hi = hi / HM * HM;
    for (int i = 7; i >= 0; i--, hi >>= 8)
        lid[i] = (uint8_t)hi;
    if (memcmp(lid, (const uint8_t[16]){0}, 16) == 0)
        lid[15] = 1; /* a nil lid is refused by apply */
}

static sop_rc count_cb(void *ctx, const sop__handle *h)
{
    (void)h;
    ++*(size_t *)ctx;
    return SOP_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool registered;
    setup();
    if (!registered) {
        registered = true;
        atexit(cleanup);
    }
    uint8_t block[4096] = {0};
    memcpy(block, data, size < 4096 ? size : 4096);
    unsigned opt = size > 4096 ? data[4096] : 0;
    if (opt & 1)
        reseal(block);
    if (pwrite(seg1_fd, block, 4096, 0) != 4096)
        abort();
    unlink(seg2); /* a full block makes apply create segment 2 */

    sop__registry *r = NULL;
    sop_err err = {0};
    if (sop__registry_open(dir, "f", HM, true, &r, &err) != SOP_OK)
        abort();

    /* Lookups: the lids of 8 slots as stored, and moved into block 0. */
    enum { NL = 16 };
    uint8_t lids[NL][16];
    for (int k = 0; k < NL / 2; k++) {
        const uint8_t *slot = block + (size_t)((k * 9) % SOP__REG_SLOTS) * SOP__HANDLE_SIZE;
        memcpy(lids[k], slot, 16);
        lid_in_block0(slot, lids[NL / 2 + k]);
    }
    sop__handle out[NL];
    bool found[NL];
    sop_rc rc = sop__registry_get(r, (const uint8_t(*)[16])lids, NL, out, found, &err);
    if (rc != SOP_OK && rc != SOP_CORRUPT)
        abort();

    if (opt & 8) {
        size_t n = 0;
        rc = sop__registry_scan(r, count_cb, &n, &err);
        if (rc != SOP_OK && rc != SOP_CORRUPT)
            abort();
    }

    /* A batch in block 0: replace, delete and insert. */
    sop__reg_op ops[4];
    memset(ops, 0, sizeof(ops));
    ops[0].kind = SOP__REG_PUT;
    memcpy(ops[0].h.lid, lids[NL / 2], 16);
    ops[0].h.version = (int32_t)(data[0] | 1);
    memcpy(ops[0].h.pa, block + 100, 16);
    ops[1].kind = SOP__REG_DEL;
    memcpy(ops[1].h.lid, lids[NL / 2 + 1], 16);
    ops[1].h.version = 7;
    ops[2].kind = SOP__REG_PUT;
    memcpy(ops[2].h.lid, lids[NL / 2 + 2], 16);
    ops[2].h.lid[15] ^= 0x5a; /* most likely a new lid */
    ops[2].h.lid[14] |= 1;    /* never nil */
    ops[2].h.version = 1;
    ops[2].h.deleted = true;
    ops[3] = ops[0]; /* a duplicate: the later op wins */
    ops[3].h.wip_ms = 12345;
    unsigned flags = ((opt & 2) ? SOP__REG_IF_NEWER : 0u) | ((opt & 4) ? SOP__REG_REPAIR : 0u);
    rc = sop__registry_apply(r, ops, 4, flags, &err);
    if (rc != SOP_OK && rc != SOP_CORRUPT)
        abort();
    if (rc == SOP_OK && !(flags & SOP__REG_IF_NEWER)) {
        sop__handle h;
        bool f = false;
        if (sop__registry_get(r, (const uint8_t(*)[16])ops[3].h.lid, 1, &h, &f, &err) != SOP_OK ||
            !f || h.version != ops[3].h.version || h.wip_ms != 12345 ||
            memcmp(h.pa, ops[3].h.pa, 16) != 0)
            abort();
    }
    sop__registry_close(r);
    return 0;
}
