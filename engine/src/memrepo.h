/*
 * memrepo.h - the in-memory node repository: the B-tree's nodes live in a
 * hash map keyed by logical ID, nothing is persisted.
 *
 * Invariants:
 *  1. Every node the tree references is in the map; remove frees at once.
 *  2. writable() hands back the node itself (there is no shared copy to
 *     protect), so node pointers stay valid until the node is removed.
 */
#ifndef SOP_MEMREPO_H
#define SOP_MEMREPO_H

#include "btree.h"
#include "idmap.h"

typedef struct sop__memrepo {
    sop__idmap map;
} sop__memrepo;

extern const sop__repo_ops sop__memrepo_ops;

void sop__memrepo_init(sop__memrepo *r);
/* Frees every node. */
void sop__memrepo_fini(sop__memrepo *r);
/* Nodes currently held (reachable or not: a leak shows as a difference). */
size_t sop__memrepo_nodes(const sop__memrepo *r);

#endif
