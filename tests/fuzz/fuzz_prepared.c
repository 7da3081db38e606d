/*
 * fuzz_prepared.c - libFuzzer target for the prepared transaction file
 * (docs/format.md, "Prepared transaction"): the input is written as a
 * <txid>.prep file and read with sop__db_prepared_read, which must return
 * the file's owner and redo record (checked by sop__redo_check) or
 * SOP_CORRUPT with a message naming the file - never crash, never read
 * outside the file, never hand out a result on failure. Random mutations
 * almost never survive the CRC-32C, so copies are read too: one with the
 * checksum recomputed, one with the payload length field also made to fit.
 *
 * One temporary folder per process (TMPDIR, else /dev/shm or /tmp), removed
 * at exit.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc.h"
#include "mem.h"
#include "txn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A violated expectation: say which, then abort (the crash the runner sees). */
#define EXPECT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_prepared: %s:%d: expected %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static char dir[4096], path[4200];

static void cleanup(void)
{
    unlink(path);
    rmdir(dir);
}

static void setup(void)
{
    if (dir[0])
        return;
    /* TMPDIR if set, else /dev/shm (tmpfs: each input is a file write) */
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof(dir), "%s/sop-fuzz-prepared.XXXXXX", tmp);
    EXPECT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/0a1b2c3d-4e5f-4061-8273-8495a6b7c8d9.prep", dir);
    atexit(cleanup);
}

static void read_one(const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    EXPECT(fd >= 0);
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);
        EXPECT(n > 0);
        off += (size_t)n;
    }
    close(fd);
    sop_err err;
    sop_err_clear(&err);
    sop_prepared_info info;
    memset(&info, 0xa5, sizeof(info));
    uint8_t *payload = NULL;
    size_t len = 0;
    sop_rc rc = sop__db_prepared_read(path, &info, &payload, &len, &err);
    if (rc != SOP_OK) {
        /* a clean error that names the file, and no payload to free */
        EXPECT(rc == SOP_CORRUPT && err.code == SOP_CORRUPT);
        EXPECT(strstr(err.msg, path) != NULL);
        EXPECT(payload == NULL);
        return;
    }
    /* what was accepted is exactly the file's */
    EXPECT(size >= 300 && len == size - 300);
    EXPECT(memcmp(payload, data + 296, len) == 0);
    EXPECT(memcmp(info.txid, data + 8, 16) == 0);
    EXPECT(memchr(info.owner, '\0', 256) != NULL);
    sop_err cerr;
    EXPECT(sop__redo_check(payload, len, &cerr) == SOP_OK);
    sop__free(payload);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    read_one(data, size);
    if (size < 4)
        return 0;
    uint8_t *copy = malloc(size);
    memcpy(copy, data, size);
    put32(copy + size - 4, sop__crc32c(0, copy, size - 4));
    read_one(copy, size);
    if (size >= 300) {
        put64(copy + 288, size - 300);
        put32(copy + size - 4, sop__crc32c(0, copy, size - 4));
        read_one(copy, size);
    }
    free(copy);
    return 0;
}
