/*
 * crc.c - checksums over ISA-L's optimised implementations (see crc.h).
 */
#include "crc.h"

#include <isa-l/crc.h>
#include <stdint.h>

uint32_t sop__crc32c(uint32_t crc, const void *p, size_t n)
{
    /* ISA-L's crc32_iscsi takes and returns the raw register; the standard
     * CRC-32C pre- and post-inverts, which makes it chainable from 0. */
    while (n > UINT32_MAX) {
        crc = ~crc32_iscsi((unsigned char *)p, INT32_MAX, ~crc);
        p = (const uint8_t *)p + INT32_MAX;
        n -= INT32_MAX;
    }
    return ~crc32_iscsi((unsigned char *)p, (int)n, ~crc);
}

uint32_t sop__crc32_ieee(uint32_t crc, const void *p, size_t n)
{
    /* crc32_gzip_refl is the reflected IEEE CRC-32 of zlib, chainable. */
    return crc32_gzip_refl(crc, (const unsigned char *)p, (uint64_t)n);
}
