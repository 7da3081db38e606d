/*
 * memrepo.c - in-memory node repository (see memrepo.h).
 */
#include "memrepo.h"

#include "err.h"
#include "uuid.h"

static sop_rc mr_get(void *repo, const uint8_t id[16], sop__node **out, sop_err *err)
{
    sop__memrepo *r = repo;
    sop__node *n = sop__idmap_get(&r->map, id);
    if (n == NULL)
        return sop__err_set(err, SOP_NOTFOUND, 0, "memrepo: no such node");
    *out = n;
    return SOP_OK;
}

static sop_rc mr_writable(void *repo, sop__node *n, sop__node **out, sop_err *err)
{
    (void)repo, (void)err;
    *out = n;
    return SOP_OK;
}

static sop_rc mr_create(void *repo, const uint8_t *id, bool leaf, uint32_t item_cap,
                        sop__node **out, sop_err *err)
{
    sop__memrepo *r = repo;
    uint8_t fresh[16];
    if (id == NULL) {
        sop__uuid_v4(fresh);
        id = fresh;
    }
    sop__node *n;
    SOP__TRY(sop__node_new(id, leaf, item_cap, 0, &n, err));
    sop_rc rc = sop__idmap_put(&r->map, id, n, err);
    if (rc != SOP_OK) {
        sop__node_free(n);
        return rc;
    }
    *out = n;
    return SOP_OK;
}

static void mr_remove(void *repo, sop__node *n)
{
    sop__memrepo *r = repo;
    sop__idmap_del(&r->map, n->id);
    sop__node_free(n);
}

const sop__repo_ops sop__memrepo_ops = {
    .get = mr_get,
    .writable = mr_writable,
    .create = mr_create,
    .remove = mr_remove,
};

void sop__memrepo_init(sop__memrepo *r)
{
    sop__idmap_init(&r->map);
}

void sop__memrepo_fini(sop__memrepo *r)
{
    sop__idmap_slot *slot;
    for (size_t pos = 0; (pos = sop__idmap_next(&r->map, pos, &slot)) != 0;)
        sop__node_free(slot->val);
    sop__idmap_free(&r->map);
}

size_t sop__memrepo_nodes(const sop__memrepo *r)
{
    return r->map.count;
}
