/*
 * bytes.h - little-endian integer access for every persisted format (all of
 * them store integers little-endian; docs/format.md). Byte by byte, so
 * alignment and host byte order never matter.
 */
#ifndef SOP_BYTES_H
#define SOP_BYTES_H

#include <stdint.h>

static inline void sop__le_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void sop__le_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

static inline void sop__le_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

static inline uint16_t sop__le_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t sop__le_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t sop__le_get64(const uint8_t *p)
{
    return (uint64_t)sop__le_get32(p) | (uint64_t)sop__le_get32(p + 4) << 32;
}

#endif
