/*
 * l2.c - the shared (L2) cache over the coordination backend (l2.h,
 * docs/caching.md).
 */
#include "l2.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "crc.h"
#include "mem.h"
#include "uuid.h"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool sop__l2_available(const sop__l2 *l2)
{
    return l2->coord && l2->coord->ops->get && l2->coord->ops->set && l2->coord->ops->del;
}

/* The TTL as the backend takes it, or 0: not cached. */
static uint32_t ttl_of(int64_t ms)
{
    if (ms <= 0)
        return 0;
    return ms > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

static bool usable(sop__l2 *l2, uint32_t ttl)
{
    if (ttl == 0 || !sop__l2_available(l2))
        return false;
    if (l2->off_until_ms && mono_ms() < l2->off_until_ms)
        return false;
    l2->off_until_ms = 0;
    return true;
}

static void failed(sop__l2 *l2)
{
    l2->stats.errors++;
    l2->off_until_ms = mono_ms() + SOP__L2_BACKOFF_MS;
}

static bool key_id(const sop__l2 *l2, char kind, const uint8_t id[16], char out[SOP__COORD_KEY_MAX])
{
    char a[2] = {kind, '\0'};
    char text[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_format(id, text);
    return sop__coord_key(l2->coord, a, text, out, NULL) == SOP_OK;
}

static bool key_name(const sop__l2 *l2, const char *name, char out[SOP__COORD_KEY_MAX])
{
    return sop__coord_key(l2->coord, "S", name, out, NULL) == SOP_OK;
}

/* A checked payload (malloc'd) on a hit. */
static bool get(sop__l2 *l2, const char *key, uint32_t slide, uint8_t **data, size_t *len)
{
    uint8_t *raw = NULL;
    size_t n = 0;
    sop_err e;
    sop_rc rc = l2->coord->ops->get(l2->coord, key, slide, &raw, &n, &e);
    if (rc == SOP_NOTFOUND) {
        l2->stats.misses++;
        return false;
    }
    if (rc != SOP_OK) {
        failed(l2);
        return false;
    }
    if (n < 4 || sop__le_get32(raw) != sop__crc32c(0, raw + 4, n - 4)) {
        sop__free(raw); /* not ours, or damaged: a miss (invariant 1) */
        l2->stats.misses++;
        return false;
    }
    memmove(raw, raw + 4, n - 4);
    *data = raw;
    *len = n - 4;
    return true;
}

static void put(sop__l2 *l2, const char *key, uint32_t ttl, const uint8_t *data, size_t len)
{
    uint8_t *raw = sop__malloc(len + 4);
    if (raw == NULL)
        return;
    sop__le_put32(raw, sop__crc32c(0, data, len));
    if (len)
        memcpy(raw + 4, data, len);
    sop_err e;
    if (l2->coord->ops->set(l2->coord, key, raw, len + 4, ttl, &e) == SOP_OK)
        l2->stats.puts++;
    else
        failed(l2);
    sop__free(raw);
}

static bool get_id(sop__l2 *l2, char kind, const uint8_t id[16], int64_t ms, bool sliding,
                   uint8_t **data, size_t *len)
{
    uint32_t ttl = ttl_of(ms);
    char key[SOP__COORD_KEY_MAX];
    if (!usable(l2, ttl) || !key_id(l2, kind, id, key))
        return false;
    return get(l2, key, sliding ? ttl : 0, data, len);
}

static void put_id(sop__l2 *l2, char kind, const uint8_t id[16], int64_t ms, const uint8_t *data,
                   size_t len)
{
    uint32_t ttl = ttl_of(ms);
    char key[SOP__COORD_KEY_MAX];
    if (usable(l2, ttl) && key_id(l2, kind, id, key))
        put(l2, key, ttl, data, len);
}

/* A checked entry's verdict, counted. */
static bool counted(sop__l2 *l2, bool hit)
{
    if (hit)
        l2->stats.hits++;
    else
        l2->stats.misses++;
    return hit;
}

bool sop__l2_handle_get(sop__l2 *l2, const sop__storeinfo *si, const uint8_t lid[16],
                        sop__handle *h)
{
    uint8_t *p;
    size_t n;
    if (!get_id(l2, 'H', lid, si->registry_cache_ms, si->registry_cache_sliding, &p, &n))
        return false;
    bool ok = n == SOP__HANDLE_SIZE;
    if (ok) {
        sop__handle_decode(p, h);
        ok = memcmp(h->lid, lid, 16) == 0 && !h->deleted;
    }
    sop__free(p);
    return counted(l2, ok);
}

void sop__l2_handle_put(sop__l2 *l2, const sop__storeinfo *si, const sop__handle *h)
{
    uint8_t p[SOP__HANDLE_SIZE];
    sop__handle_encode(h, p);
    put_id(l2, 'H', h->lid, si->registry_cache_ms, p, sizeof(p));
}

bool sop__l2_node_get(sop__l2 *l2, const sop__storeinfo *si, const uint8_t phys[16], uint8_t **data,
                      size_t *len)
{
    if (!get_id(l2, 'N', phys, si->node_cache_ms, si->node_cache_sliding, data, len))
        return false;
    return counted(l2, true);
}

void sop__l2_node_put(sop__l2 *l2, const sop__storeinfo *si, const uint8_t phys[16],
                      const uint8_t *data, size_t len)
{
    put_id(l2, 'N', phys, si->node_cache_ms, data, len);
}

/* Values are shared only by stores that say so (globally_cached). */
static int64_t value_ms(const sop__storeinfo *si)
{
    return si->globally_cached ? si->value_cache_ms : -1;
}

bool sop__l2_value_get(sop__l2 *l2, const sop__storeinfo *si, const uint8_t id[16], uint8_t **data,
                       size_t *len)
{
    if (!get_id(l2, 'V', id, value_ms(si), si->value_cache_sliding, data, len))
        return false;
    return counted(l2, true);
}

void sop__l2_value_put(sop__l2 *l2, const sop__storeinfo *si, const uint8_t id[16],
                       const uint8_t *data, size_t len)
{
    put_id(l2, 'V', id, value_ms(si), data, len);
}

bool sop__l2_info_get(sop__l2 *l2, const char *name, int64_t ttl_ms, bool sliding,
                      sop__storeinfo *out)
{
    uint32_t ttl = ttl_of(ttl_ms);
    char key[SOP__COORD_KEY_MAX];
    if (!usable(l2, ttl) || !key_name(l2, name, key))
        return false;
    uint8_t *p;
    size_t n;
    if (!get(l2, key, sliding ? ttl : 0, &p, &n))
        return false;
    bool ok = sop__storeinfo_decode(p, n, key, out, NULL) == SOP_OK && strcmp(out->name, name) == 0;
    sop__free(p);
    return counted(l2, ok);
}

void sop__l2_info_put(sop__l2 *l2, const sop__storeinfo *si)
{
    uint32_t ttl = ttl_of(si->storeinfo_cache_ms);
    char key[SOP__COORD_KEY_MAX];
    if (!usable(l2, ttl) || !key_name(l2, si->name, key))
        return;
    size_t n = SOP__STOREINFO_STATE_SIZE + sop__storeinfo_fixed_size();
    uint8_t *p = sop__malloc(n);
    if (p == NULL)
        return;
    sop__storeinfo_encode_state(si, p);
    sop__storeinfo_encode_fixed(si, p + SOP__STOREINFO_STATE_SIZE);
    put(l2, key, ttl, p, n);
    sop__free(p);
}

void sop__l2_batch_init(sop__l2_batch *b, sop__l2 *l2)
{
    b->l2 = l2;
    b->n = 0;
}

void sop__l2_batch_flush(sop__l2_batch *b)
{
    if (b->n == 0)
        return;
    const char *keys[SOP__L2_BATCH];
    for (size_t i = 0; i < b->n; i++)
        keys[i] = b->keys[i];
    sop_err e;
    if (b->l2->coord->ops->del(b->l2->coord, keys, b->n, &e) == SOP_OK)
        b->l2->stats.removed += b->n;
    else
        b->l2->stats.errors++; /* the entries expire; readers validate */
    b->n = 0;
}

/* Removal is attempted even while reads back off: it is what keeps other
 * processes from retrying on stale entries. */
static char *slot(sop__l2_batch *b, int64_t ttl_ms)
{
    if (ttl_of(ttl_ms) == 0 || !sop__l2_available(b->l2))
        return NULL;
    if (b->n == SOP__L2_BATCH)
        sop__l2_batch_flush(b);
    return b->keys[b->n];
}

void sop__l2_batch_info(sop__l2_batch *b, const sop__storeinfo *si)
{
    char *k = slot(b, si->storeinfo_cache_ms);
    if (k && key_name(b->l2, si->name, k))
        b->n++;
}

void sop__l2_batch_handle(sop__l2_batch *b, const sop__storeinfo *si, const uint8_t lid[16])
{
    char *k = slot(b, si->registry_cache_ms);
    if (k && key_id(b->l2, 'H', lid, k))
        b->n++;
}
