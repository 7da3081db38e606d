/*
 * cache.c - the L1 node cache (cache.h): a chained hash table over
 * (physical ID, version) with an LRU list, under one mutex.
 */
#include "cache.h"

#include <pthread.h>
#include <string.h>

#include "bytes.h"
#include "mem.h"

typedef struct entry {
    uint8_t phys[16];
    uint32_t version;
    sop__node *node;
    uint64_t bytes;
    struct entry *hnext;         /* hash chain */
    struct entry *newer, *older; /* LRU list */
} entry;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static entry **table;
static size_t nbuckets, nentries;
static entry *newest, *oldest;
static uint64_t used, budget, hits, misses;

static size_t bucket(const uint8_t phys[16])
{
    return (size_t)(sop__le_get64(phys) ^ sop__le_get64(phys + 8)) & (nbuckets - 1);
}

static uint64_t node_bytes(const sop__node *n)
{
    uint64_t b = sizeof(*n) + (uint64_t)n->item_cap * sizeof(sop__item) + n->heap_cap;
    if (!n->leaf)
        b += ((uint64_t)n->item_cap + 1) * 16;
    return b + sizeof(entry);
}

static void unlink_lru(entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        oldest = e->newer;
    e->newer = e->older = NULL;
}

static void push_newest(entry *e)
{
    e->older = newest;
    e->newer = NULL;
    if (newest)
        newest->newer = e;
    newest = e;
    if (oldest == NULL)
        oldest = e;
}

static entry **find_slot(const uint8_t phys[16], uint32_t version)
{
    entry **pp = &table[bucket(phys)];
    while (*pp && !((*pp)->version == version && memcmp((*pp)->phys, phys, 16) == 0))
        pp = &(*pp)->hnext;
    return pp;
}

#ifdef SOP_FAULT_INJECTION
/* Test builds prove that nobody changes a shared node: its contents are
 * summed when it is shared and checked on every release; a difference
 * stops the process at once (SIGILL, the stack shows who released it). */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const uint8_t *)p)[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t contents_sum(const sop__node *n)
{
    uint64_t h = fnv(0xcbf29ce484222325ull, &n->count, sizeof(n->count));
    h = fnv(h, n->items, sizeof(sop__item) * n->count);
    for (uint32_t i = 0; i < n->count; i++) {
        h = fnv(h, n->heap + n->items[i].koff, n->items[i].klen);
        h = fnv(h, n->heap + n->items[i].voff, n->items[i].vlen);
    }
    if (!n->leaf)
        h = fnv(h, n->kids, 16 * ((size_t)n->count + 1));
    return fnv(h, &n->version, sizeof(n->version));
}

static void sum_check(const sop__node *n)
{
    if (contents_sum(n) != n->shared_sum)
        __builtin_trap(); /* a shared (immutable) node was changed */
}
#else
#define contents_sum(n) 0
#define sum_check(n)    ((void)0)
#endif

/* Under mu: drops one reference; the last one frees the node. */
static void unref(sop__node *n)
{
    sum_check(n);
    if (--n->refs == 0)
        sop__node_free(n);
}

static void drop(entry *e)
{
    entry **pp = find_slot(e->phys, e->version);
    *pp = e->hnext;
    unlink_lru(e);
    used -= e->bytes;
    nentries--;
    unref(e->node);
    sop__free(e);
}

static void grow_table(void)
{
    size_t n = nbuckets ? nbuckets * 2 : 1024;
    entry **t = sop__calloc(n, sizeof(*t));
    if (t == NULL)
        return;
    entry **old = table;
    size_t oldn = nbuckets;
    table = t;
    nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        for (entry *e = old[i], *next; e; e = next) {
            next = e->hnext;
            size_t b = bucket(e->phys);
            e->hnext = table[b];
            table[b] = e;
        }
    }
    sop__free(old);
}

void sop__l1_reserve(uint64_t bytes)
{
    pthread_mutex_lock(&mu);
    if (bytes > budget)
        budget = bytes;
    pthread_mutex_unlock(&mu);
}

sop__node *sop__l1_get(const uint8_t phys[16], uint32_t version)
{
    sop__node *n = NULL;
    pthread_mutex_lock(&mu);
    entry *e = table ? *find_slot(phys, version) : NULL;
    if (e) {
        unlink_lru(e);
        push_newest(e);
        n = e->node;
        n->refs++;
        hits++;
    } else {
        misses++;
    }
    pthread_mutex_unlock(&mu);
    return n;
}

sop__node *sop__l1_share(const uint8_t phys[16], uint32_t version, sop__node *n)
{
    uint64_t bytes = node_bytes(n);
    pthread_mutex_lock(&mu);
    if (bytes > budget / 4 || (table == NULL && (grow_table(), table == NULL))) {
        pthread_mutex_unlock(&mu);
        return n;
    }
    entry **pp = find_slot(phys, version);
    if (*pp) { /* another reader cached it first */
        sop__node *have = (*pp)->node;
        have->refs++;
        pthread_mutex_unlock(&mu);
        sop__node_free(n);
        return have;
    }
    entry *e = sop__calloc(1, sizeof(*e));
    if (e == NULL) {
        pthread_mutex_unlock(&mu);
        return n;
    }
    memcpy(e->phys, phys, 16);
    e->version = version;
    e->node = n;
    e->bytes = bytes;
    n->shared = true;
    n->refs = 2; /* the cache's and the caller's */
#ifdef SOP_FAULT_INJECTION
    n->shared_sum = contents_sum(n);
#endif
    *pp = e;
    push_newest(e);
    used += bytes;
    nentries++;
    while (used > budget && oldest)
        drop(oldest);
    if (nentries > nbuckets)
        grow_table();
    pthread_mutex_unlock(&mu);
    return n;
}

bool sop__l1_take(const uint8_t phys[16], uint32_t version, sop__node *n)
{
    if (!n->shared)
        return true;
    bool taken = false;
    pthread_mutex_lock(&mu);
    entry **pp = table ? find_slot(phys, version) : NULL;
    entry *e = pp ? *pp : NULL;
    if (e && e->node == n && n->refs == 2) {
        sum_check(n);
        *pp = e->hnext;
        unlink_lru(e);
        used -= e->bytes;
        nentries--;
        sop__free(e);
        n->refs = 0;
        n->shared = false; /* no other thread holds it: safe to clear */
        taken = true;
    }
    pthread_mutex_unlock(&mu);
    return taken;
}

void sop__l1_release(sop__node *n)
{
    if (n == NULL)
        return;
    if (!n->shared) { /* private: nobody else can see it */
        sop__node_free(n);
        return;
    }
    pthread_mutex_lock(&mu);
    unref(n);
    pthread_mutex_unlock(&mu);
}

void sop__l1_put(const uint8_t phys[16], uint32_t version, const sop__node *n)
{
    sop__node *copy;
    if (sop__node_clone(n, &copy, NULL) != SOP_OK)
        return;
    sop__l1_release(sop__l1_share(phys, version, copy));
}

void sop__l1_stats_get(sop__l1_stats *out)
{
    pthread_mutex_lock(&mu);
    out->hits = hits;
    out->misses = misses;
    out->entries = nentries;
    out->bytes = used;
    out->budget = budget;
    pthread_mutex_unlock(&mu);
}

void sop__l1_clear(void)
{
    pthread_mutex_lock(&mu);
    while (oldest)
        drop(oldest);
    hits = misses = 0;
    pthread_mutex_unlock(&mu);
}
