/*
 * test_crc.c - the checksums match their standard check values and chain.
 */
#include "crc.h"
#include "t.h"

TEST(crc32c_check_value)
{
    /* RFC 3720 / the CRC catalogue check value for "123456789" */
    CHECK_EQ(sop__crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ(sop__crc32c(0, "", 0), 0);
}

TEST(crc32_ieee_check_value)
{
    /* zlib's crc32 and Go's crc32.ChecksumIEEE */
    CHECK_EQ(sop__crc32_ieee(0, "123456789", 9), 0xCBF43926u);
}

TEST(crcs_chain_across_pieces)
{
    static uint8_t buf[10000];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t cut = 0; cut <= sizeof(buf); cut += 997) {
        CHECK_EQ(sop__crc32c(sop__crc32c(0, buf, cut), buf + cut, sizeof(buf) - cut),
                 sop__crc32c(0, buf, sizeof(buf)));
        CHECK_EQ(sop__crc32_ieee(sop__crc32_ieee(0, buf, cut), buf + cut, sizeof(buf) - cut),
                 sop__crc32_ieee(0, buf, sizeof(buf)));
    }
}
