/*
 * mem.h - the engine's allocator entry points.
 *
 * Every heap allocation in engine/src goes through these, so the fault build
 * (SOP_FAULT_INJECTION) can fail the Nth allocation and tests can prove that
 * each caller turns it into SOP_NOMEM without leaking or corrupting.
 *
 * Invariants:
 *  1. sop__malloc/calloc/realloc return NULL only on failure (real or
 *     injected); a size of 0 is treated as 1.
 *  2. sop__realloc leaves the old block untouched when it fails.
 *  3. sop__free(NULL) is a no-op.
 */
#ifndef SOP_MEM_H
#define SOP_MEM_H

#include <stddef.h>

void *sop__malloc(size_t n);
void *sop__calloc(size_t count, size_t size);
void *sop__realloc(void *p, size_t n);
void sop__free(void *p);

#endif
