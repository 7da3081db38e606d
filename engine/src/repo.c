/*
 * repo.c - the store repository (see repo.h for the layout and invariants).
 */
#include "repo.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"
#include "fault.h"
#include "mem.h"
#include "os.h"
#include "uuid.h"

bool sop__store_name_valid(const char *name)
{
    if (name == NULL || name[0] == '\0' || name[0] == '-')
        return false;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (!ok || n >= SOP__STORE_NAME_MAX)
            return false;
    }
    return true;
}

sop_rc sop__store_name_check(const char *name, sop_err *err)
{
    if (name == NULL || name[0] == '\0')
        return sop__err_set(err, SOP_INVALID, 0, "store name: empty");
    if (strlen(name) > SOP__STORE_NAME_MAX)
        return sop__err_set(err, SOP_INVALID, 0, "store name: longer than %d bytes",
                            SOP__STORE_NAME_MAX);
    if (!sop__store_name_valid(name))
        return sop__err_set(err, SOP_INVALID, 0,
                            "store name \"%.64s\": only letters, digits, '_' and '-' (not first) "
                            "are allowed",
                            name);
    return SOP_OK;
}

/* a/b, or a/b/c when c is not NULL */
static sop_rc join(char *out, sop_err *err, const char *a, const char *b, const char *c)
{
    int n = c ? snprintf(out, SOP__PATH_MAX, "%s/%s/%s", a, b, c)
              : snprintf(out, SOP__PATH_MAX, "%s/%s", a, b);
    if (n < 0 || n >= SOP__PATH_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "path under %s is too long", a);
    return SOP_OK;
}

sop_rc sop__repo_store_dir(const char *db, const char *name, char *out, sop_err *err)
{
    char stores[SOP__PATH_MAX];
    SOP__TRY(join(stores, err, db, "stores", NULL));
    return join(out, err, stores, name, NULL);
}

static sop_rc info_path(const char *db, const char *name, char *out, sop_err *err)
{
    char dir[SOP__PATH_MAX];
    SOP__TRY(sop__repo_store_dir(db, name, dir, err));
    return join(out, err, dir, "info", NULL);
}

static sop_rc read_info(const char *db, const char *name, bool skip_state, sop__storeinfo *out,
                        sop_err *err);

sop_rc sop__repo_read(const char *db, const char *name, sop__storeinfo *out, sop_err *err)
{
    return read_info(db, name, false, out, err);
}

sop_rc sop__repo_read_fixed(const char *db, const char *name, sop__storeinfo *out, sop_err *err)
{
    return read_info(db, name, true, out, err);
}

static sop_rc read_info(const char *db, const char *name, bool skip_state, sop__storeinfo *out,
                        sop_err *err)
{
    char path[SOP__PATH_MAX];
    SOP__TRY(info_path(db, name, path, err));
    int fd;
    SOP__TRY(sop__os_open(SOP__SITE_REPO_READ, path, O_RDONLY, 0, &fd, err));
    struct stat st;
    sop_rc rc = sop__os_fstat(SOP__SITE_REPO_READ, fd, &st, path, err);
    uint8_t *buf = NULL;
    if (rc == SOP_OK && (st.st_size < SOP__STOREINFO_STATE_SIZE || st.st_size > 65536))
        rc = sop__err_set(err, SOP_CORRUPT, 0, "store info %s: %lld bytes is not a valid size",
                          path, (long long)st.st_size);
    if (rc == SOP_OK && (buf = sop__malloc((size_t)st.st_size)) == NULL)
        rc = sop__err_set(err, SOP_NOMEM, 0, "store info %s: no memory", path);
    size_t got = 0;
    if (rc == SOP_OK)
        rc = sop__os_pread_full(SOP__SITE_REPO_READ, fd, buf, (size_t)st.st_size, 0, &got, path,
                                err);
    if (rc == SOP_OK && got != (size_t)st.st_size)
        rc = sop__err_set(err, SOP_CORRUPT, 0, "store info %s: changed size while read", path);
    if (rc == SOP_OK && skip_state) {
        sop__storeinfo zero;
        memset(&zero, 0, sizeof(zero));
        sop__storeinfo_encode_state(&zero, buf);
    }
    if (rc == SOP_OK)
        rc = sop__storeinfo_decode(buf, got, path, out, err);
    if (rc == SOP_OK && strcmp(out->name, name) != 0)
        rc = sop__err_set(err, SOP_CORRUPT, 0, "store info %s belongs to store \"%.64s\"", path,
                          out->name); /* another store's file in this one's folder */
    sop__free(buf);
    sop__os_close(SOP__SITE_REPO_READ, fd, path, NULL);
    return rc;
}

/* mkdir, and when it created the folder, fsync its parent so the new
 * entry survives a power loss. */
static sop_rc mkdir_durable(const char *path, const char *parent, sop_err *err)
{
    sop_rc rc = sop__os_mkdir(SOP__SITE_REPO_WRITE, path, 0700, err);
    if (rc == SOP_EXISTS)
        return SOP_OK;
    SOP__TRY(rc);
    return sop__os_fsync_dir(SOP__SITE_REPO_WRITE, parent, err);
}

sop_rc sop__repo_ensure_dir(const char *db, const char *name, sop_err *err)
{
    SOP__TRY(sop__store_name_check(name, err));
    char stores[SOP__PATH_MAX], dir[SOP__PATH_MAX];
    SOP__TRY(join(stores, err, db, "stores", NULL));
    SOP__TRY(mkdir_durable(stores, db, err));
    SOP__TRY(sop__repo_store_dir(db, name, dir, err));
    return mkdir_durable(dir, stores, err);
}

sop_rc sop__repo_create(const char *db, const sop__storeinfo *s, bool replace_corrupt, sop_err *err)
{
    SOP__TRY(sop__store_name_check(s->name, err));
    sop__storeinfo cur;
    sop_rc rc = sop__repo_read(db, s->name, &cur, err);
    if (rc == SOP_OK)
        return memcmp(cur.root_id, s->root_id, 16) == 0
                   ? SOP_OK
                   : sop__err_set(err, SOP_EXISTS, 0, "store %s already exists", s->name);
    /* Recovery replaying the creation: an info file the crash left torn
     * (its rename reached the disk before its bytes) is written again. */
    if (rc != SOP_NOTFOUND && !(rc == SOP_CORRUPT && replace_corrupt))
        return rc;

    char dir[SOP__PATH_MAX], tmp[SOP__PATH_MAX], path[SOP__PATH_MAX];
    SOP__TRY(sop__repo_ensure_dir(db, s->name, err));
    SOP__TRY(sop__repo_store_dir(db, s->name, dir, err));
    SOP__TRY(info_path(db, s->name, path, err));
    SOP__TRY(join(tmp, err, dir, "info.tmp", NULL));

    size_t fixed = sop__storeinfo_fixed_size();
    size_t len = SOP__STOREINFO_STATE_SIZE + fixed;
    uint8_t *buf = sop__malloc(len);
    if (buf == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "store %s: no memory for its info", s->name);
    sop__storeinfo_encode_state(s, buf);
    sop__storeinfo_encode_fixed(s, buf + SOP__STOREINFO_STATE_SIZE);
    int fd = -1;
    rc = sop__os_open(SOP__SITE_REPO_WRITE, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600, &fd, err);
    if (rc == SOP_OK)
        rc = sop__os_pwrite_all(SOP__SITE_REPO_WRITE, fd, buf, len, 0, tmp, err);
    /* synced before the rename: the registry's later folder sync makes the
     * name durable, and it must never name a torn file */
    if (rc == SOP_OK)
        rc = sop__os_fsync(SOP__SITE_REPO_WRITE, fd, tmp, err);
    if (fd >= 0) {
        sop_rc crc = sop__os_close(SOP__SITE_REPO_WRITE, fd, tmp, rc == SOP_OK ? err : NULL);
        if (rc == SOP_OK)
            rc = crc;
    }
    sop__free(buf);
    if (rc == SOP_OK)
        rc = sop__os_rename(SOP__SITE_REPO_WRITE, tmp, path, err);
    return rc;
}

sop_rc sop__repo_write_state(const char *db, const sop__storeinfo *s, sop_err *err)
{
    /* Only move forward: redo of an older commit must not undo a newer one.
     * A state sector that does not decode (torn by a crash) is rewritten:
     * the log that recovery is redoing holds the newest state of every
     * store whose sector was being written. */
    sop__storeinfo cur;
    sop_rc rc = sop__repo_read(db, s->name, &cur, err);
    if (rc == SOP_OK && cur.seq >= s->seq)
        return SOP_OK;
    if (rc != SOP_OK && rc != SOP_CORRUPT)
        return rc;
    char path[SOP__PATH_MAX];
    SOP__TRY(info_path(db, s->name, path, err));
    int fd;
    SOP__TRY(sop__os_open(SOP__SITE_REPO_WRITE, path, O_WRONLY, 0, &fd, err));
    uint8_t next[SOP__STOREINFO_STATE_SIZE];
    sop__storeinfo_encode_state(s, next);
    rc = sop__os_pwrite_all(SOP__SITE_REPO_WRITE, fd, next, sizeof(next), 0, path, err);
    sop_rc crc = sop__os_close(SOP__SITE_REPO_WRITE, fd, path, rc == SOP_OK ? err : NULL);
    return rc == SOP_OK ? crc : rc;
}

/* rm -r of a folder this module created (fan-out two levels deep at most,
 * but written generally). */
static sop_rc remove_tree(const char *path, int depth, sop_err *err)
{
    if (depth > 8)
        return sop__err_set(err, SOP_CORRUPT, 0, "%s: unexpectedly deep folder tree", path);
    sop__os_dir d;
    sop_rc rc = sop__os_dir_open(SOP__SITE_REPO_DROP, path, &d, err);
    if (rc == SOP_NOTFOUND)
        return SOP_OK;
    if (rc != SOP_OK)
        return rc;
    const char *name;
    while ((rc = sop__os_dir_next(&d, &name, err)) == SOP_OK) {
        char child[SOP__PATH_MAX];
        if (join(child, err, path, name, NULL) != SOP_OK) {
            rc = SOP_LIMIT;
            break;
        }
        struct stat st;
        rc = sop__os_stat(SOP__SITE_REPO_DROP, child, &st, err);
        if (rc == SOP_OK)
            rc = S_ISDIR(st.st_mode) ? remove_tree(child, depth + 1, err)
                                     : sop__os_unlink(SOP__SITE_REPO_DROP, child, err);
        if (rc == SOP_NOTFOUND)
            rc = SOP_OK;
        if (rc != SOP_OK)
            break;
    }
    sop__os_dir_close(&d);
    if (rc != SOP_NOTFOUND && rc != SOP_OK)
        return rc;
    rc = sop__os_rmdir(SOP__SITE_REPO_DROP, path, err);
    return rc == SOP_NOTFOUND ? SOP_OK : rc;
}

sop_rc sop__repo_drop_dir(const char *parent, const char *name, sop_err *err)
{
    SOP__TRY(sop__store_name_check(name, err));
    char dir[SOP__PATH_MAX], gone[SOP__PATH_MAX];
    SOP__TRY(join(dir, err, parent, name, NULL));
    uint8_t id[16];
    char text[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_v4(id);
    sop__uuid_format(id, text);
    /* ".dropped-..." cannot be a store name, so the rename hides it at once */
    char hidden[64];
    snprintf(hidden, sizeof(hidden), ".dropped-%s", text);
    SOP__TRY(join(gone, err, parent, hidden, NULL));
    sop_rc rc = sop__os_rename(SOP__SITE_REPO_DROP, dir, gone, err);
    if (rc == SOP_NOTFOUND)
        return SOP_OK;
    if (rc != SOP_OK)
        return rc;
    return remove_tree(gone, 0, err);
}

sop_rc sop__repo_drop(const char *db, const char *name, sop_err *err)
{
    char stores[SOP__PATH_MAX];
    SOP__TRY(join(stores, err, db, "stores", NULL));
    return sop__repo_drop_dir(stores, name, err);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void sop__repo_list_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sop__free(names[i]);
    sop__free(names);
}

sop_rc sop__repo_list(const char *db, char ***names, size_t *n, sop_err *err)
{
    char dir[SOP__PATH_MAX];
    SOP__TRY(join(dir, err, db, "stores", NULL));
    char **list = NULL;
    size_t count = 0, cap = 0;
    sop__os_dir d;
    sop_rc rc = sop__os_dir_open(SOP__SITE_REPO_READ, dir, &d, err);
    if (rc == SOP_NOTFOUND) {
        *names = NULL;
        *n = 0;
        return SOP_OK;
    }
    if (rc != SOP_OK)
        return rc;
    const char *name;
    while ((rc = sop__os_dir_next(&d, &name, err)) == SOP_OK) {
        if (!sop__store_name_valid(name))
            continue; /* .dropped-*, temporary files */
        sop__storeinfo probe;
        sop_rc prc = sop__repo_read(db, name, &probe, err);
        if (prc == SOP_NOTFOUND)
            continue; /* a folder without info: a creation that never finished */
        if (prc != SOP_OK) {
            rc = prc;
            break;
        }
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = sop__realloc(list, cap * sizeof(char *));
            if (grown == NULL) {
                rc = sop__err_set(err, SOP_NOMEM, 0, "store list: no memory");
                break;
            }
            list = grown;
        }
        size_t len = strlen(name);
        if ((list[count] = sop__malloc(len + 1)) == NULL) {
            rc = sop__err_set(err, SOP_NOMEM, 0, "store list: no memory");
            break;
        }
        memcpy(list[count++], name, len + 1);
    }
    sop__os_dir_close(&d);
    if (rc != SOP_NOTFOUND) {
        sop__repo_list_free(list, count);
        return rc;
    }
    if (count > 1)
        qsort(list, count, sizeof(char *), cmp_names);
    *names = list;
    *n = count;
    return SOP_OK;
}
