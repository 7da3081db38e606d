/*
 * mem.c - allocation wrappers with the fault build's "fail the Nth
 * allocation" hook (see fault.h).
 */
#include "mem.h"

#include <stdlib.h>

#include "fault.h"

void *sop__malloc(size_t n)
{
    if (SOP__FAULT_ALLOC_FAILS())
        return NULL;
    return malloc(n ? n : 1);
}

void *sop__calloc(size_t count, size_t size)
{
    if (SOP__FAULT_ALLOC_FAILS())
        return NULL;
    if (count == 0 || size == 0)
        count = size = 1;
    return calloc(count, size);
}

void *sop__realloc(void *p, size_t n)
{
    if (SOP__FAULT_ALLOC_FAILS())
        return NULL;
    return realloc(p, n ? n : 1);
}

void sop__free(void *p)
{
    free(p);
}
