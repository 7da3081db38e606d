/*
 * uuid.c - identifier generation (see uuid.h for the invariants).
 */
#include "uuid.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static atomic_uint fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static _Thread_local struct {
    uint64_t s[4];
    unsigned generation;
    bool seeded;
} rng;

static void on_fork_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
}

static void install_atfork(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void seed_rng(void)
{
    uint64_t seed[4] = {0, 0, 0, 0};
    size_t got = 0;
    while (got < sizeof(seed)) {
        ssize_t n = getrandom((char *)seed + got, sizeof(seed) - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got < sizeof(seed)) {
        /* getrandom is unavailable (very old kernel or seccomp): fall back to
         * clock, pid and address entropy; IDs stay unique in practice. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed[0] ^= (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull;
        seed[1] ^= (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 20);
        seed[2] ^= (uint64_t)(uintptr_t)&seed;
        seed[3] ^= (uint64_t)(uintptr_t)&rng;
    }
    for (int i = 0; i < 4; i++) { /* splitmix64 so a weak seed still mixes */
        uint64_t z = seed[i] + 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        rng.s[i] = z ^ (z >> 31);
    }
    rng.seeded = true;
}

uint64_t sop__random64(void)
{
    pthread_once(&atfork_once, install_atfork);
    unsigned gen = atomic_load(&fork_generation);
    if (!rng.seeded || rng.generation != gen) {
        seed_rng();
        rng.generation = gen;
    }
    uint64_t *s = rng.s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

void sop__uuid_v4(uint8_t out[16])
{
    put_be64(out, sop__random64());
    put_be64(out + 8, sop__random64());
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x40);
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
}

static pthread_mutex_t v7_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t v7_last_ms;
static uint32_t v7_seq;

void sop__uuid_v7(uint8_t out[16])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    uint64_t rnd = sop__random64();

    pthread_mutex_lock(&v7_lock);
    if (now_ms > v7_last_ms) {
        v7_last_ms = now_ms;
        v7_seq = (uint32_t)(rnd >> 62); /* small random start leaves room to count */
    } else if (++v7_seq > 0xfff) {
        v7_last_ms++; /* borrow the next millisecond (RFC 9562 6.2, method 1) */
        v7_seq = 0;
    }
    uint64_t ms = v7_last_ms;
    uint32_t seq = v7_seq;
    pthread_mutex_unlock(&v7_lock);

    uint64_t hi = (ms << 16) | 0x7000u | seq;
    uint64_t lo = (rnd & 0x3fffffffffffffffull) | 0x8000000000000000ull;
    put_be64(out, hi);
    put_be64(out + 8, lo);
}

void sop__uuid_format(const uint8_t id[16], char out[SOP__UUID_TEXT_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[id[i] >> 4];
        *p++ = hex[id[i] & 15];
    }
    *p = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool sop__uuid_parse(const char *s, uint8_t out[16])
{
    uint8_t tmp[16];
    int n = 0;
    for (int pos = 0; pos < SOP__UUID_TEXT_LEN; pos++) {
        if (pos == 8 || pos == 13 || pos == 18 || pos == 23) {
            if (s[pos] != '-')
                return false;
            continue;
        }
        int hi = hexval(s[pos]);
        if (hi < 0)
            return false;
        int lo = hexval(s[++pos]);
        if (lo < 0)
            return false;
        tmp[n++] = (uint8_t)(hi << 4 | lo);
    }
    if (s[SOP__UUID_TEXT_LEN] != '\0')
        return false;
    memcpy(out, tmp, 16);
    return true;
}

bool sop__uuid_is_nil(const uint8_t id[16])
{
    static const uint8_t nil[16];
    return memcmp(id, nil, 16) == 0;
}
