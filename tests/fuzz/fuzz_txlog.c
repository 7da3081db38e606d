/*
 * fuzz_txlog.c - libFuzzer target for the transaction log reader
 * (docs/format.md, "Transaction log"; what recovery reads from a dead
 * process's log): the input is written as a log file, claimed with
 * sop__log_claim and scanned with sop__log_scan, whose callback touches
 * every payload byte and checks every COMMIT payload with sop__redo_check.
 * Any input must scan to SOP_OK (a scan stops quietly at the first bad
 * record) or fail with a clean error, never crash or read outside what it
 * read. Random mutations almost never survive the CRC-32Cs, so a copy whose
 * header checksum and record checksums are recomputed over the mutated
 * bytes is scanned too.
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
#include "os.h"
#include "txn.h"
#include "txnlog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A violated expectation: say which, then abort (the crash the runner sees). */
#define EXPECT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_txlog: %s:%d: expected %s\n", __FILE__, __LINE__, #cond);        \
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
    snprintf(dir, sizeof(dir), "%s/sop-fuzz-txlog.XXXXXX", tmp);
    EXPECT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/0a1b2c3d-4e5f-4061-8273-8495a6b7c8d9.log", dir);
    atexit(cleanup);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

typedef struct seen {
    unsigned records;
    unsigned sum;
} seen;

static sop_rc touch(void *ctx, const sop__logrec *r)
{
    seen *s = ctx;
    for (size_t i = 0; i < r->len; i++)
        s->sum += r->payload[i];
    for (int i = 0; i < 16; i++)
        s->sum += r->txid[i];
    if (r->type == SOP__LOG_COMMIT) {
        sop_err err;
        sop_rc rc = sop__redo_check(r->payload, r->len, &err);
        EXPECT(rc == SOP_OK || rc == SOP_CORRUPT);
    }
    s->records++;
    return SOP_OK;
}

static void scan(const uint8_t *data, size_t size)
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
    int lfd;
    EXPECT(sop__log_claim(path, &lfd, &err) == SOP_OK);
    seen s = {0, 0};
    sop_rc rc = sop__log_scan(lfd, path, touch, &s, &err);
    /* a clean error names the log */
    EXPECT(rc == SOP_OK || (rc == SOP_CORRUPT && strstr(err.msg, path) != NULL));
    sop__os_close(SOP__SITE_LOG_READ, lfd, path, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    scan(data, size);
    if (size < 52)
        return 0;
    /* the same bytes with every checksum made right again */
    uint8_t *copy = malloc(size);
    memcpy(copy, data, size);
    put32(copy + 48, sop__crc32c(0, copy, 48));
    size_t off = SOP__LOG_HEADER;
    while (off + SOP__LOG_RECHDR <= size) {
        uint32_t len = get32(copy + off + 40);
        if (len > size - off - SOP__LOG_RECHDR)
            break;
        uint32_t crc = sop__crc32c(0, copy + off, 44);
        put32(copy + off + 44, sop__crc32c(crc, copy + off + SOP__LOG_RECHDR, len));
        off += SOP__LOG_RECHDR + len;
    }
    scan(copy, size);
    free(copy);
    return 0;
}
