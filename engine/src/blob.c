/*
 * blob.c - the blob store: one file per blob under <root>/<hh>/<uuid>
 * (blob.h for the contract; docs/format.md, "Blob files").
 *
 * Invariants:
 *  1. Paths are built only from the root given to sop__blob_open and the
 *     text form of an ID (sop__uuid_format: 36 lowercase hex digits and
 *     dashes), so no caller string other than the root reaches the file
 *     system and nothing outside <root> is touched.
 *  2. A put opens with O_CREAT|O_WRONLY but without O_TRUNC, writes the whole
 *     blob at offset 0 and then truncates the file to its length. Blobs are
 *     write-once, so a rewrite (redo) stores the same bytes over the same
 *     bytes: a reader of a complete blob never sees it shrink or change, and
 *     a partial file left by a crash is completed. A failed put leaves
 *     whatever it wrote; nothing points at it (blob.h invariant 1), and it
 *     is never unlinked here because it may be a complete blob being redone.
 *  3. Durability (SOP__BLOB_SYNC and sop__blob_sync): the file is fsynced,
 *     then its <hh> folder (the file's own entry), then - once per
 *     blobstore handle for each folder, or again after this handle created
 *     it - <root> (the <hh> entry) and the root's parent (the root's entry).
 *     The once-per-handle bits (root_durable, hh_durable) are set only after
 *     a successful fsync and cleared when this handle creates the folder, so
 *     a folder made by another process or before a crash is synced too.
 *  4. mkdir races are harmless: EEXIST is success; folders are 0700, files
 *     0600.
 *  5. A get allocates one byte more than the size fstat reported and reads
 *     to the end of the file: any other byte count means the file changed
 *     under the reader and is SOP_CORRUPT naming the path.
 *  6. Every failure message names the full path of the file or folder.
 *     Close of a descriptor opened read-only cannot lose data; its failure
 *     is ignored.
 *  7. The handle is immutable after open except for the atomic durability
 *     bits, so one handle may be used by many threads at once.
 */
#include "blob.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "erasure.h"
#include "err.h"
#include "mem.h"
#include "os.h"
#include "uuid.h"

/* "/hh/" + uuid text + NUL after the root. */
#define SUFFIX_LEN (1 + 2 + 1 + SOP__UUID_TEXT_LEN + 1)

struct sop__blobstore {
    char root[SOP__BLOB_PATH_MAX];   /* no trailing slash (unless "/") */
    char parent[SOP__BLOB_PATH_MAX]; /* the folder holding root's entry */
    size_t root_len;
    atomic_bool root_durable;       /* root's entry in parent fsynced (invariant 3) */
    _Atomic uint64_t hh_durable[4]; /* bit h: <hh>'s entry in root fsynced */
    sop__ecstore *ec;               /* erasure coded: every call goes there */
};

sop_rc sop__blob_open(const char *root, sop__blobstore **out, sop_err *err)
{
    if (root == NULL || root[0] == '\0')
        return sop__err_set(err, SOP_INVALID, 0, "blob: empty root folder");
    size_t n = strnlen(root, SOP__BLOB_PATH_MAX);
    while (n > 1 && root[n - 1] == '/')
        n--;
    if (n + SUFFIX_LEN > SOP__BLOB_PATH_MAX)
        return sop__err_set(err, SOP_INVALID, 0,
                            "blob: root folder path of %zu bytes is longer than %d bytes", n,
                            SOP__BLOB_PATH_MAX - SUFFIX_LEN);
    sop__blobstore *bs = sop__calloc(1, sizeof(*bs));
    if (bs == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "blob: cannot allocate a blob store for %.*s",
                            (int)n, root);
    memcpy(bs->root, root, n);
    bs->root[n] = '\0';
    bs->root_len = n;
    /* The parent: everything before the last slash; "." or "/" at the top. */
    size_t slash = n;
    while (slash > 0 && root[slash - 1] != '/')
        slash--;
    if (slash == 0) {
        strcpy(bs->parent, ".");
    } else {
        size_t p = slash - 1;
        while (p > 0 && root[p - 1] == '/')
            p--;
        if (p == 0)
            p = 1; /* "/x" -> "/" */
        memcpy(bs->parent, root, p);
        bs->parent[p] = '\0';
    }
    atomic_init(&bs->root_durable, false);
    for (int i = 0; i < 4; i++)
        atomic_init(&bs->hh_durable[i], 0);
    *out = bs;
    return SOP_OK;
}

void sop__blob_close(sop__blobstore *bs)
{
    if (bs != NULL && bs->ec != NULL)
        sop__ec_close(bs->ec);
    sop__free(bs);
}

sop_rc sop__blob_open_ec(const struct sop__ecconf *c, const char *store, sop__blobstore **out,
                         sop_err *err)
{
    sop__blobstore *bs = sop__calloc(1, sizeof(*bs));
    if (bs == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "blob: cannot allocate a blob store");
    sop_rc rc = sop__ec_open(c, store, &bs->ec, err);
    if (rc != SOP_OK) {
        sop__free(bs);
        return rc;
    }
    snprintf(bs->root, sizeof(bs->root), "%s", c->paths[0]);
    bs->root_len = strlen(bs->root);
    *out = bs;
    return SOP_OK;
}

bool sop__blob_is_ec(const sop__blobstore *bs)
{
    return bs->ec != NULL;
}

static const char hexdig[] = "0123456789abcdef";

/* <root>/<hh> */
static void hh_path(const sop__blobstore *bs, uint8_t h, char *out)
{
    memcpy(out, bs->root, bs->root_len);
    char *p = out + bs->root_len;
    *p++ = '/';
    *p++ = hexdig[h >> 4];
    *p++ = hexdig[h & 15];
    *p = '\0';
}

void sop__blob_path(const sop__blobstore *bs, const uint8_t id[16], char *out)
{
    if (bs->ec != NULL) {
        sop__ec_path(bs->ec, id, out);
        return;
    }
    hh_path(bs, id[0], out);
    char *p = out + bs->root_len + 3;
    *p++ = '/';
    sop__uuid_format(id, p);
}

/* Copies a local error to the caller's and prefixes "blob: ". */
static sop_rc fail(sop_err *err, const sop_err *e)
{
    if (err != NULL) {
        *err = *e;
        sop__err_prefix(err, "blob");
    }
    return e->code;
}

static bool hh_is_durable(sop__blobstore *bs, uint8_t h)
{
    uint64_t w = atomic_load_explicit(&bs->hh_durable[h >> 6], memory_order_acquire);
    return (w >> (h & 63)) & 1u;
}

static void hh_set_durable(sop__blobstore *bs, uint8_t h, bool durable)
{
    uint64_t bit = (uint64_t)1 << (h & 63);
    if (durable)
        atomic_fetch_or_explicit(&bs->hh_durable[h >> 6], bit, memory_order_release);
    else
        atomic_fetch_and_explicit(&bs->hh_durable[h >> 6], ~bit, memory_order_release);
}

/* mkdir that takes EEXIST (a racing process or thread) for success;
 * *missing_parent is set when the parent folder does not exist. */
static sop_rc make_dir(const char *path, bool *missing_parent, sop_err *e)
{
    *missing_parent = false;
    sop_rc rc = sop__os_mkdir(SOP__SITE_BLOB_MKDIR, path, 0700, e);
    if (rc == SOP_EXISTS)
        return SOP_OK;
    if (rc == SOP_IO && e->sys_errno == ENOENT)
        *missing_parent = true;
    return rc;
}

/* Creates <root>/<h> (and <root> if missing). */
static sop_rc make_dirs(sop__blobstore *bs, uint8_t h, sop_err *err)
{
    char dir[SOP__BLOB_PATH_MAX];
    hh_path(bs, h, dir);
    sop_err e = {0};
    bool no_root;
    sop_rc rc = make_dir(dir, &no_root, &e);
    if (rc != SOP_OK && no_root) {
        bool no_parent;
        rc = make_dir(bs->root, &no_parent, &e);
        if (rc != SOP_OK)
            return fail(err, &e);
        atomic_store_explicit(&bs->root_durable, false, memory_order_release);
        rc = make_dir(dir, &no_root, &e);
    }
    if (rc != SOP_OK)
        return fail(err, &e);
    hh_set_durable(bs, h, false);
    return SOP_OK;
}

/* Invariant 3, after the file itself was fsynced. */
static sop_rc sync_dirs(sop__blobstore *bs, uint8_t h, sop_err *err)
{
    sop_err e = {0};
    if (!atomic_load_explicit(&bs->root_durable, memory_order_acquire)) {
        if (sop__os_fsync_dir(SOP__SITE_BLOB_SYNC, bs->parent, &e) != SOP_OK)
            return fail(err, &e);
        atomic_store_explicit(&bs->root_durable, true, memory_order_release);
    }
    if (!hh_is_durable(bs, h)) {
        if (sop__os_fsync_dir(SOP__SITE_BLOB_SYNC, bs->root, &e) != SOP_OK)
            return fail(err, &e);
        hh_set_durable(bs, h, true);
    }
    char dir[SOP__BLOB_PATH_MAX];
    hh_path(bs, h, dir);
    if (sop__os_fsync_dir(SOP__SITE_BLOB_SYNC, dir, &e) != SOP_OK)
        return fail(err, &e);
    return SOP_OK;
}

sop_rc sop__blob_put(sop__blobstore *bs, const uint8_t id[16], const void *data, size_t len,
                     unsigned flags, sop_err *err)
{
    if (bs->ec != NULL)
        return sop__ec_put(bs->ec, id, data, len, flags, err);
    if (flags & SOP__BLOB_REPLACE)
        flags |= SOP__BLOB_SYNC;
    char path[SOP__BLOB_PATH_MAX], tmp[SOP__BLOB_PATH_MAX + 32];
    sop__blob_path(bs, id, path);
    const char *target = path;
    if (flags & SOP__BLOB_REPLACE) {
        /* not a blob name (blob.h), so listing skips a leftover one */
        uint8_t r[16];
        char text[SOP__UUID_TEXT_LEN + 1];
        sop__uuid_v4(r);
        sop__uuid_format(r, text);
        snprintf(tmp, sizeof(tmp), "%s.%.8s.tmp", path, text);
        target = tmp;
    }
    if (len > SOP__BLOB_SIZE_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "blob: %zu bytes for %s exceed the %zu-byte limit",
                            len, path, (size_t)SOP__BLOB_SIZE_MAX);
    sop_err e = {0};
    int fd = -1;
    sop_rc rc = sop__os_open(SOP__SITE_BLOB_OPEN, target, O_WRONLY | O_CREAT, 0600, &fd, &e);
    if (rc == SOP_NOTFOUND) {
        SOP__TRY(make_dirs(bs, id[0], err));
        rc = sop__os_open(SOP__SITE_BLOB_OPEN, target, O_WRONLY | O_CREAT, 0600, &fd, &e);
    }
    if (rc != SOP_OK)
        return fail(err, &e);
    rc = sop__os_pwrite_all(SOP__SITE_BLOB_WRITE, fd, data, len, 0, target, &e);
    if (rc == SOP_OK)
        rc = sop__os_ftruncate(SOP__SITE_BLOB_WRITE, fd, len, target, &e);
    if (rc == SOP_OK && (flags & SOP__BLOB_SYNC))
        rc = sop__os_fsync(SOP__SITE_BLOB_SYNC, fd, target, &e);
    if (rc == SOP_OK)
        rc = sop__os_close(SOP__SITE_BLOB_CLOSE, fd, target, &e);
    else
        (void)sop__os_close(SOP__SITE_BLOB_CLOSE, fd, target, NULL);
    if (rc == SOP_OK && target != path) {
        rc = sop__os_rename(SOP__SITE_BLOB_WRITE, target, path, &e);
        if (rc != SOP_OK)
            (void)sop__os_unlink(SOP__SITE_BLOB_REMOVE, target, NULL);
    }
    if (rc != SOP_OK)
        return fail(err, &e);
    if (flags & SOP__BLOB_SYNC)
        return sync_dirs(bs, id[0], err);
    return SOP_OK;
}

sop_rc sop__blob_get(sop__blobstore *bs, const uint8_t id[16], uint8_t **data, size_t *len,
                     sop_err *err)
{
    if (bs->ec != NULL)
        return sop__ec_get(bs->ec, id, data, len, err);
    char path[SOP__BLOB_PATH_MAX];
    sop__blob_path(bs, id, path);
    sop_err e = {0};
    int fd = -1;
    if (sop__os_open(SOP__SITE_BLOB_OPEN, path, O_RDONLY, 0, &fd, &e) != SOP_OK)
        return fail(err, &e);
    struct stat st;
    uint8_t *buf = NULL;
    size_t size = 0, got = 0;
    sop_rc rc = sop__os_fstat(SOP__SITE_BLOB_READ, fd, &st, path, &e);
    if (rc != SOP_OK)
        goto out;
    if (!S_ISREG(st.st_mode)) {
        rc = sop__err_set(&e, SOP_CORRUPT, 0, "%s is not a regular file", path);
        goto out;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > SOP__BLOB_SIZE_MAX) {
        rc = sop__err_set(&e, SOP_CORRUPT, 0, "%s is %lld bytes, more than the %zu-byte limit",
                          path, (long long)st.st_size, (size_t)SOP__BLOB_SIZE_MAX);
        goto out;
    }
    size = (size_t)st.st_size;
    buf = sop__malloc(size + 1);
    if (buf == NULL) {
        rc = sop__err_set(&e, SOP_NOMEM, 0, "cannot allocate %zu bytes to read %s", size + 1, path);
        goto out;
    }
    rc = sop__os_pread_full(SOP__SITE_BLOB_READ, fd, buf, size + 1, 0, &got, path, &e);
    if (rc == SOP_OK && got != size)
        rc = sop__err_set(&e, SOP_CORRUPT, 0,
                          "%s changed size while being read: %zu bytes, then %s%zu bytes", path,
                          size, got > size ? "more than " : "", got);
out:
    (void)sop__os_close(SOP__SITE_BLOB_CLOSE, fd, path, NULL); /* read-only (invariant 6) */
    if (rc != SOP_OK) {
        sop__free(buf);
        return fail(err, &e);
    }
    *data = buf;
    *len = size;
    return SOP_OK;
}

sop_rc sop__blob_remove(sop__blobstore *bs, const uint8_t id[16], sop_err *err)
{
    if (bs->ec != NULL)
        return sop__ec_remove(bs->ec, id, err);
    char path[SOP__BLOB_PATH_MAX];
    sop__blob_path(bs, id, path);
    sop_err e = {0};
    sop_rc rc = sop__os_unlink(SOP__SITE_BLOB_REMOVE, path, &e);
    if (rc == SOP_OK || rc == SOP_NOTFOUND)
        return SOP_OK;
    return fail(err, &e);
}

sop_rc sop__blob_sync(sop__blobstore *bs, const uint8_t id[16], sop_err *err)
{
    if (bs->ec != NULL)
        return sop__ec_sync(bs->ec, id, err);
    char path[SOP__BLOB_PATH_MAX];
    sop__blob_path(bs, id, path);
    sop_err e = {0};
    int fd = -1;
    if (sop__os_open(SOP__SITE_BLOB_OPEN, path, O_RDONLY, 0, &fd, &e) != SOP_OK)
        return fail(err, &e);
    sop_rc rc = sop__os_fsync(SOP__SITE_BLOB_SYNC, fd, path, &e);
    (void)sop__os_close(SOP__SITE_BLOB_CLOSE, fd, path, NULL); /* read-only (invariant 6) */
    if (rc != SOP_OK)
        return fail(err, &e);
    return sync_dirs(bs, id[0], err);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase is not a name this module writes */
}

/* A fan-out folder name: exactly two lowercase hex digits. */
static bool is_hh_name(const char *name, uint8_t *h)
{
    if (strlen(name) != 2 || hexval(name[0]) < 0 || hexval(name[1]) < 0)
        return false;
    *h = (uint8_t)(hexval(name[0]) << 4 | hexval(name[1]));
    return true;
}

/* A blob file name: exactly what sop__blob_path writes into folder h. */
static bool is_blob_name(const char *name, uint8_t h, uint8_t id[16])
{
    char text[SOP__UUID_TEXT_LEN + 1];
    if (strlen(name) != SOP__UUID_TEXT_LEN || !sop__uuid_parse(name, id) || id[0] != h)
        return false;
    sop__uuid_format(id, text);
    return strcmp(text, name) == 0;
}

sop_rc sop__blob_list(sop__blobstore *bs, sop_rc (*fn)(void *ctx, const uint8_t id[16]), void *ctx,
                      sop_err *err)
{
    if (bs->ec != NULL)
        return sop__ec_list(bs->ec, fn, ctx, err);
    sop_err e = {0};
    sop__os_dir top = {0}, sub = {0};
    sop_rc rc = sop__os_dir_open(SOP__SITE_BLOB_LIST, bs->root, &top, &e);
    if (rc == SOP_NOTFOUND)
        return SOP_OK; /* nothing was ever put */
    if (rc != SOP_OK)
        return fail(err, &e);
    char dir[SOP__BLOB_PATH_MAX];
    const char *name;
    while ((rc = sop__os_dir_next(&top, &name, &e)) == SOP_OK) {
        uint8_t h;
        if (!is_hh_name(name, &h))
            continue;
        hh_path(bs, h, dir);
        rc = sop__os_dir_open(SOP__SITE_BLOB_LIST, dir, &sub, &e);
        if (rc == SOP_NOTFOUND || (rc == SOP_IO && e.sys_errno == ENOTDIR))
            continue; /* removed meanwhile, or a file with a folder's name */
        if (rc != SOP_OK)
            break;
        while ((rc = sop__os_dir_next(&sub, &name, &e)) == SOP_OK) {
            uint8_t id[16];
            if (!is_blob_name(name, h, id))
                continue;
            rc = fn(ctx, id);
            if (rc != SOP_OK) {
                sop__os_dir_close(&sub);
                sop__os_dir_close(&top);
                return sop__err_set(err, rc, 0, "blob: listing of %s stopped by its callback (%s)",
                                    bs->root, sop_rc_name(rc));
            }
        }
        sop__os_dir_close(&sub);
        if (rc != SOP_NOTFOUND)
            break;
    }
    sop__os_dir_close(&top);
    if (rc != SOP_NOTFOUND)
        return fail(err, &e);
    return SOP_OK;
}

sop_rc sop__blob_exists(sop__blobstore *bs, const uint8_t id[16], sop_err *err)
{
    char path[SOP__BLOB_PATH_MAX];
    sop__blob_path(bs, id, path);
    struct stat st;
    sop_err e = {0};
    sop_rc rc = sop__os_stat(SOP__SITE_BLOB_READ, path, &st, &e);
    if (rc != SOP_OK && rc != SOP_NOTFOUND)
        return fail(err, &e);
    return rc;
}

sop_rc sop__blob_scrub(sop__blobstore *bs, const uint8_t id[16], bool repair, uint64_t *shards,
                       uint64_t *bad, uint64_t *repaired,
                       void (*problem)(void *ctx, const char *msg), void *ctx, sop_err *err)
{
    if (bs->ec != NULL)
        return sop__ec_scrub(bs->ec, id, repair, shards, bad, repaired, problem, ctx, err);
    /* a plain blob has no redundancy: readable or not (its encoding's own
     * checksum is checked by whoever decodes it) */
    uint8_t *data;
    size_t len;
    (*shards)++;
    sop_rc rc = sop__blob_get(bs, id, &data, &len, err);
    if (rc != SOP_OK) {
        (*bad)++;
        return rc;
    }
    sop__free(data);
    return SOP_OK;
}

sop_rc sop__blob_remove_all(sop__blobstore *bs, const uint8_t id[16], sop_err *err)
{
    if (bs->ec != NULL)
        return sop__ec_remove_all(bs->ec, id, err);
    return sop__blob_remove(bs, id, err);
}
