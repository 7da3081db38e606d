/*
 * idmap.c - ID -> pointer hash map (see idmap.h).
 */
#include "idmap.h"

#include <string.h>

#include "err.h"
#include "mem.h"

static size_t hash_of(const uint8_t id[16])
{
    uint64_t h;
    memcpy(&h, id + 8, 8);
    h ^= h >> 29; /* mix so the v7 variant bits do not cluster */
    h *= 0x9e3779b97f4a7c15ull;
    return (size_t)(h ^ (h >> 32));
}

void sop__idmap_init(sop__idmap *m)
{
    m->slots = NULL;
    m->mask = 0;
    m->count = 0;
}

void sop__idmap_free(sop__idmap *m)
{
    sop__free(m->slots);
    sop__idmap_init(m);
}

static sop__idmap_slot *find(const sop__idmap *m, const uint8_t id[16])
{
    if (m->slots == NULL)
        return NULL;
    for (size_t i = hash_of(id) & m->mask;; i = (i + 1) & m->mask) {
        sop__idmap_slot *s = &m->slots[i];
        if (s->val == NULL)
            return NULL;
        if (memcmp(s->id, id, 16) == 0)
            return s;
    }
}

void *sop__idmap_get(const sop__idmap *m, const uint8_t id[16])
{
    sop__idmap_slot *s = find(m, id);
    return s ? s->val : NULL;
}

static void place(sop__idmap_slot *slots, size_t mask, const uint8_t id[16], void *val)
{
    size_t i = hash_of(id) & mask;
    while (slots[i].val != NULL)
        i = (i + 1) & mask;
    memcpy(slots[i].id, id, 16);
    slots[i].val = val;
}

static sop_rc grow(sop__idmap *m, sop_err *err)
{
    size_t cap = m->slots ? (m->mask + 1) * 2 : 16;
    sop__idmap_slot *slots = sop__calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "idmap: cannot grow to %zu slots", cap);
    if (m->slots) {
        for (size_t i = 0; i <= m->mask; i++)
            if (m->slots[i].val)
                place(slots, cap - 1, m->slots[i].id, m->slots[i].val);
        sop__free(m->slots);
    }
    m->slots = slots;
    m->mask = cap - 1;
    return SOP_OK;
}

sop_rc sop__idmap_put(sop__idmap *m, const uint8_t id[16], void *val, sop_err *err)
{
    sop__idmap_slot *s = find(m, id);
    if (s) {
        s->val = val;
        return SOP_OK;
    }
    if (m->slots == NULL || (m->count + 1) * 2 > m->mask + 1)
        SOP__TRY(grow(m, err));
    place(m->slots, m->mask, id, val);
    m->count++;
    return SOP_OK;
}

void *sop__idmap_del(sop__idmap *m, const uint8_t id[16])
{
    sop__idmap_slot *s = find(m, id);
    if (s == NULL)
        return NULL;
    void *val = s->val;
    size_t i = (size_t)(s - m->slots);
    /* Backward-shift deletion: pull later members of the cluster into the
     * hole when their home slot does not lie strictly between hole and them. */
    for (size_t j = (i + 1) & m->mask; m->slots[j].val != NULL; j = (j + 1) & m->mask) {
        size_t home = hash_of(m->slots[j].id) & m->mask;
        bool between = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!between) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].val = NULL;
    m->count--;
    return val;
}

size_t sop__idmap_next(const sop__idmap *m, size_t pos, sop__idmap_slot **slot)
{
    if (m->slots == NULL)
        return 0;
    for (size_t i = pos; i <= m->mask; i++) {
        if (m->slots[i].val) {
            *slot = &m->slots[i];
            return i + 1;
        }
    }
    return 0;
}
