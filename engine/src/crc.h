/*
 * crc.h - checksums (ISA-L).
 *
 *  - sop__crc32c: CRC-32C (Castagnoli, iSCSI), the checksum of every format
 *    of our own (node bodies, store info, log records...).
 *  - sop__crc32_ieee: the reflected CRC-32 of zlib/gzip/Go's crc32.ChecksumIEEE,
 *    used only where the Go original's layout demands it (registry blocks).
 *
 * Both take the running value of a previous call (0 to start) so data in
 * pieces can be checksummed: crc(a+b) == crc_cont(crc(a), b).
 */
#ifndef SOP_CRC_H
#define SOP_CRC_H

#include <stddef.h>
#include <stdint.h>

uint32_t sop__crc32c(uint32_t crc, const void *p, size_t n);
uint32_t sop__crc32_ieee(uint32_t crc, const void *p, size_t n);

#endif
