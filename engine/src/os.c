/*
 * os.c - the operations table (real syscalls by default) and the sop__os_*
 * wrappers that turn its results into sop_rc + sop_err, with the fault
 * build's per-site hook in front of each (see os.h for the contract).
 *
 * Invariants:
 *  1. Each public wrapper calls SOP__FAULT_IO_HIT exactly once, first
 *     (except close with fd < 0 and dir_close), so "the Nth call of a site"
 *     is the Nth wrapper call, whatever the wrapper loops over inside.
 *  2. An injected fault is reported through the same path as a real errno
 *     (fail()), so callers cannot tell them apart.
 *  3. errno is read right after the failing call, before anything that
 *     could change it.
 *  4. The table pointer is read once per wrapper call (ops()).
 */
#include "os.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h> /* rename */
#include <string.h>
#include <unistd.h>

#include "err.h"

/* ---- The default table: the real syscalls ---- */

static int d_open(const char *path, int flags, mode_t mode)
{
    return open(path, flags, mode);
}

static int d_close(int fd)
{
    return close(fd);
}

static ssize_t d_pread(int fd, void *buf, size_t n, off_t off)
{
    return pread(fd, buf, n, off);
}

static ssize_t d_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite(fd, buf, n, off);
}

static int d_fsync(int fd)
{
    return fsync(fd);
}

static int d_fdatasync(int fd)
{
    return fdatasync(fd);
}

static int d_syncfs(int fd)
{
    return syncfs(fd);
}

static int d_ftruncate(int fd, off_t len)
{
    return ftruncate(fd, len);
}

static int d_fallocate(int fd, int mode, off_t off, off_t len)
{
    return fallocate(fd, mode, off, len);
}

static int d_rename(const char *from, const char *to)
{
    return rename(from, to);
}

static int d_unlink(const char *path)
{
    return unlink(path);
}

static int d_mkdir(const char *path, mode_t mode)
{
    return mkdir(path, mode);
}

static int d_rmdir(const char *path)
{
    return rmdir(path);
}

static int d_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

static int d_lock(int fd, int type, off_t off, off_t len, bool wait)
{
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = (short)type;
    fl.l_whence = SEEK_SET;
    fl.l_start = off;
    fl.l_len = len;
    fl.l_pid = 0; /* required for OFD locks */
    return fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
}

static int d_fstat(int fd, struct stat *st)
{
    return fstat(fd, st);
}

static int d_stat(const char *path, struct stat *st)
{
    return stat(path, st);
}

static int d_opendir(const char *path, void **dir_out)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    *dir_out = d;
    return 0;
}

static int d_readdir(void *dir, const char **name_out)
{
    errno = 0;
    struct dirent *e = readdir((DIR *)dir);
    if (e == NULL) {
        if (errno != 0)
            return -1;
        *name_out = NULL;
        return 0;
    }
    *name_out = e->d_name;
    return 0;
}

static int d_closedir(void *dir)
{
    return closedir((DIR *)dir);
}

static const sop__os_ops default_ops = {
    .open = d_open,
    .close = d_close,
    .pread = d_pread,
    .pwrite = d_pwrite,
    .fsync = d_fsync,
    .fdatasync = d_fdatasync,
    .syncfs = d_syncfs,
    .ftruncate = d_ftruncate,
    .fallocate = d_fallocate,
    .rename = d_rename,
    .unlink = d_unlink,
    .mkdir = d_mkdir,
    .rmdir = d_rmdir,
    .fsync_dir = d_fsync_dir,
    .lock = d_lock,
    .fstat = d_fstat,
    .stat = d_stat,
    .opendir = d_opendir,
    .readdir = d_readdir,
    .closedir = d_closedir,
};

static _Atomic(const sop__os_ops *) cur_ops = &default_ops;

const sop__os_ops *sop__os_default_ops(void)
{
    return &default_ops;
}

const sop__os_ops *sop__os_set_ops(const sop__os_ops *ops)
{
    return atomic_exchange(&cur_ops, ops ? ops : &default_ops);
}

static const sop__os_ops *ops(void)
{
    return atomic_load_explicit(&cur_ops, memory_order_acquire);
}

/* ---- Error mapping ---- */

enum {
    MAP_NOTFOUND = 1u << 0,   /* ENOENT -> SOP_NOTFOUND */
    MAP_EXISTS = 1u << 1,     /* EEXIST -> SOP_EXISTS */
    MAP_LOCKED = 1u << 2,     /* EAGAIN/EACCES -> SOP_LOCKED */
    MAP_UNSUPPORTED = 1u << 3 /* EOPNOTSUPP -> SOP_UNSUPPORTED */
};

static sop_rc rc_of(int e, unsigned map)
{
    if ((map & MAP_NOTFOUND) && e == ENOENT)
        return SOP_NOTFOUND;
    if ((map & MAP_EXISTS) && e == EEXIST)
        return SOP_EXISTS;
    if ((map & MAP_LOCKED) && (e == EAGAIN || e == EACCES))
        return SOP_LOCKED;
    if ((map & MAP_UNSUPPORTED) && e == EOPNOTSUPP)
        return SOP_UNSUPPORTED;
    return SOP_IO;
}

static const char *nm(const char *s)
{
    return s ? s : "(unnamed file)";
}

#define OFF_MAX ((uint64_t)INT64_MAX)

static sop_rc bad_range(sop_err *err, const char *op, uint64_t off, uint64_t len, const char *what)
{
    return sop__err_set(err, SOP_INVALID, 0,
                        "%s of %llu bytes at offset %llu in %s: range beyond the largest file "
                        "offset",
                        op, (unsigned long long)len, (unsigned long long)off, nm(what));
}

/*
 * FAULT_ERRNO(site) declares `e` = the injected errno for this call (0:
 * none); NO_FAULT is true when there is none. In the normal build they are
 * the constants 0 and 1, so the compiler drops the fault branches - and
 * static analysers do not take the literal 1 for a suspicious condition.
 */
#ifdef SOP_FAULT_INJECTION
/* The errno an injected fault stands for on an operation that is not a
 * write (SHORT_WRITE is an EIO there: fault.h invariant 4). */
static int fault_errno(sop__fault_kind k)
{
    switch (k) {
    case SOP__FAULT_ENOSPC:
        return ENOSPC;
    case SOP__FAULT_EROFS:
        return EROFS;
    default:
        return EIO;
    }
}

#define FAULT_ERRNO(site)                                                                          \
    sop__fault_kind fk_ = SOP__FAULT_IO_HIT(site);                                                 \
    int e = SOP__UNLIKELY(fk_ != SOP__FAULT_NONE) ? fault_errno(fk_) : 0
#define NO_FAULT (e == 0)
#else
#define FAULT_ERRNO(site)                                                                          \
    int e = 0;                                                                                     \
    (void)(site)
#define NO_FAULT 1
#endif

/* ---- Files ---- */

sop_rc sop__os_open(sop__site site, const char *path, int flags, mode_t mode, int *fd_out,
                    sop_err *err)
{
    FAULT_ERRNO(site);
    int fd = -1;
    if (NO_FAULT) {
        do {
            fd = ops()->open(path, flags | O_CLOEXEC, mode);
        } while (fd < 0 && errno == EINTR);
        if (fd < 0)
            e = errno;
    }
    if (e != 0) {
        unsigned map = MAP_NOTFOUND;
        if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL))
            map |= MAP_EXISTS;
        return sop__err_set(err, rc_of(e, map), e, "open of %s failed", nm(path));
    }
    *fd_out = fd;
    return SOP_OK;
}

sop_rc sop__os_close(sop__site site, int fd, const char *what, sop_err *err)
{
    if (fd < 0)
        return SOP_OK;
    FAULT_ERRNO(site);
    /* Always release the descriptor, even for an injected fault. */
    if (ops()->close(fd) != 0 && errno != EINTR && NO_FAULT)
        e = errno;
    if (e != 0)
        return sop__err_set(err, SOP_IO, e, "close of %s failed", nm(what));
    return SOP_OK;
}

sop_rc sop__os_pread_full(sop__site site, int fd, void *buf, size_t n, uint64_t off, size_t *got,
                          const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    if (off > OFF_MAX || n > OFF_MAX - off)
        return bad_range(err, "pread", off, n, what);
    size_t done = 0;
    while (e == 0 && done < n) {
        ssize_t r = ops()->pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r > 0)
            done += (size_t)r;
        else if (r == 0)
            break; /* end of file */
        else if (errno != EINTR)
            e = errno;
    }
    if (e != 0)
        return sop__err_set(err, SOP_IO, e, "pread of %zu bytes at offset %llu from %s failed", n,
                            (unsigned long long)off, nm(what));
    if (got == NULL && done < n)
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "pread of %zu bytes at offset %llu from %s: unexpected end of file "
                            "after %zu bytes",
                            n, (unsigned long long)off, nm(what), done);
    if (got)
        *got = done;
    return SOP_OK;
}

sop_rc sop__os_pwrite_all(sop__site site, int fd, const void *buf, size_t n, uint64_t off,
                          const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    if (off > OFF_MAX || n > OFF_MAX - off)
        return bad_range(err, "pwrite", off, n, what);
    size_t limit = n; /* bytes to write before failing (a short write) */
#ifdef SOP_FAULT_INJECTION
    if (SOP__UNLIKELY(fk_ == SOP__FAULT_SHORT_WRITE))
        limit = n / 2, e = 0;
#endif
    size_t done = 0;
    while (e == 0 && done < limit) {
        ssize_t r = ops()->pwrite(fd, (const char *)buf + done, limit - done, (off_t)(off + done));
        if (r > 0)
            done += (size_t)r;
        else if (r == 0)
            e = EIO; /* no progress: never loop forever */
        else if (errno != EINTR)
            e = errno;
    }
#ifdef SOP_FAULT_INJECTION
    if (e == 0 && fk_ == SOP__FAULT_SHORT_WRITE)
        e = ENOSPC; /* the injected short write: the disk filled up */
#endif
    if (e != 0) {
        if (done > 0)
            return sop__err_set(err, SOP_IO, e,
                                "pwrite of %zu bytes at offset %llu to %s failed after writing "
                                "%zu bytes",
                                n, (unsigned long long)off, nm(what), done);
        return sop__err_set(err, SOP_IO, e, "pwrite of %zu bytes at offset %llu to %s failed", n,
                            (unsigned long long)off, nm(what));
    }
    return SOP_OK;
}

sop_rc sop__os_fsync(sop__site site, int fd, const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    if (NO_FAULT && ops()->fsync(fd) != 0)
        e = errno;
    if (e != 0)
        return sop__err_set(err, SOP_IO, e, "fsync of %s failed", nm(what));
    return SOP_OK;
}

sop_rc sop__os_fdatasync(sop__site site, int fd, const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    if (NO_FAULT && ops()->fdatasync(fd) != 0)
        e = errno;
    if (e != 0)
        return sop__err_set(err, SOP_IO, e, "fdatasync of %s failed", nm(what));
    return SOP_OK;
}

sop_rc sop__os_syncfs(sop__site site, int fd, const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    if (NO_FAULT && ops()->syncfs(fd) != 0)
        e = errno;
    if (e != 0)
        return sop__err_set(err, SOP_IO, e, "syncfs of the file system holding %s failed",
                            nm(what));
    return SOP_OK;
}

sop_rc sop__os_ftruncate(sop__site site, int fd, uint64_t len, const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    if (len > OFF_MAX)
        return bad_range(err, "ftruncate", 0, len, what);
    if (NO_FAULT) {
        int r;
        do {
            r = ops()->ftruncate(fd, (off_t)len);
        } while (r != 0 && errno == EINTR);
        if (r != 0)
            e = errno;
    }
    if (e != 0)
        return sop__err_set(err, SOP_IO, e, "ftruncate of %s to %llu bytes failed", nm(what),
                            (unsigned long long)len);
    return SOP_OK;
}

sop_rc sop__os_fallocate(sop__site site, int fd, int mode, uint64_t off, uint64_t len,
                         const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    if (off > OFF_MAX || len > OFF_MAX - off)
        return bad_range(err, "fallocate", off, len, what);
    if (NO_FAULT) {
        int r;
        do {
            r = ops()->fallocate(fd, mode, (off_t)off, (off_t)len);
        } while (r != 0 && errno == EINTR);
        if (r != 0)
            e = errno;
    }
    if (e != 0)
        return sop__err_set(err, rc_of(e, MAP_UNSUPPORTED), e,
                            "fallocate of %llu bytes at offset %llu in %s failed",
                            (unsigned long long)len, (unsigned long long)off, nm(what));
    return SOP_OK;
}

sop_rc sop__os_fstat(sop__site site, int fd, struct stat *st, const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    struct stat s;
    if (NO_FAULT && ops()->fstat(fd, &s) != 0)
        e = errno;
    if (e != 0)
        return sop__err_set(err, SOP_IO, e, "fstat of %s failed", nm(what));
    *st = s;
    return SOP_OK;
}

/* ---- Names ---- */

sop_rc sop__os_rename(sop__site site, const char *from, const char *to, sop_err *err)
{
    FAULT_ERRNO(site);
    if (NO_FAULT && ops()->rename(from, to) != 0)
        e = errno;
    if (e != 0)
        return sop__err_set(err, rc_of(e, MAP_NOTFOUND), e, "rename of %s to %s failed", nm(from),
                            nm(to));
    return SOP_OK;
}

sop_rc sop__os_unlink(sop__site site, const char *path, sop_err *err)
{
    FAULT_ERRNO(site);
    if (NO_FAULT && ops()->unlink(path) != 0)
        e = errno;
    if (e != 0)
        return sop__err_set(err, rc_of(e, MAP_NOTFOUND), e, "unlink of %s failed", nm(path));
    return SOP_OK;
}

sop_rc sop__os_mkdir(sop__site site, const char *path, mode_t mode, sop_err *err)
{
    FAULT_ERRNO(site);
    if (NO_FAULT && ops()->mkdir(path, mode) != 0)
        e = errno;
    if (e != 0)
        return sop__err_set(err, rc_of(e, MAP_EXISTS), e, "mkdir of %s failed", nm(path));
    return SOP_OK;
}

sop_rc sop__os_rmdir(sop__site site, const char *path, sop_err *err)
{
    FAULT_ERRNO(site);
    if (NO_FAULT && ops()->rmdir(path) != 0)
        e = errno;
    if (e != 0)
        return sop__err_set(err, rc_of(e, MAP_NOTFOUND), e, "rmdir of %s failed", nm(path));
    return SOP_OK;
}

sop_rc sop__os_fsync_dir(sop__site site, const char *path, sop_err *err)
{
    FAULT_ERRNO(site);
    if (NO_FAULT && ops()->fsync_dir(path) != 0)
        e = errno;
    if (e != 0)
        return sop__err_set(err, SOP_IO, e, "fsync of directory %s failed", nm(path));
    return SOP_OK;
}

sop_rc sop__os_stat(sop__site site, const char *path, struct stat *st, sop_err *err)
{
    FAULT_ERRNO(site);
    struct stat s;
    if (NO_FAULT && ops()->stat(path, &s) != 0)
        e = errno;
    if (e != 0)
        return sop__err_set(err, rc_of(e, MAP_NOTFOUND), e, "stat of %s failed", nm(path));
    *st = s;
    return SOP_OK;
}

/* ---- Directory listing ---- */

sop_rc sop__os_dir_open(sop__site site, const char *path, sop__os_dir *d, sop_err *err)
{
    FAULT_ERRNO(site);
    void *h = NULL;
    if (NO_FAULT && ops()->opendir(path, &h) != 0)
        e = errno;
    if (e != 0)
        return sop__err_set(err, rc_of(e, MAP_NOTFOUND), e, "opendir of %s failed", nm(path));
    d->handle = h;
    d->path = path;
    d->site = site;
    return SOP_OK;
}

sop_rc sop__os_dir_next(sop__os_dir *d, const char **name, sop_err *err)
{
    FAULT_ERRNO(d->site);
    const char *n = NULL;
    while (e == 0) {
        if (ops()->readdir(d->handle, &n) != 0) {
            e = errno;
            break;
        }
        if (n == NULL)
            return sop__err_set(err, SOP_NOTFOUND, 0, "readdir of %s: no more entries",
                                nm(d->path));
        if (strcmp(n, ".") != 0 && strcmp(n, "..") != 0)
            break;
    }
    if (e != 0)
        return sop__err_set(err, SOP_IO, e, "readdir of %s failed", nm(d->path));
    *name = n;
    return SOP_OK;
}

void sop__os_dir_close(sop__os_dir *d)
{
    if (d == NULL || d->handle == NULL)
        return;
    ops()->closedir(d->handle);
    d->handle = NULL;
}

/* ---- OFD byte-range locks ---- */

/* "10 bytes at offset 5" / "all bytes from offset 1000" (len 0). */
static const char *range_str(char *buf, size_t cap, uint64_t off, uint64_t len)
{
    if (len == 0)
        snprintf(buf, cap, "all bytes from offset %llu", (unsigned long long)off);
    else
        snprintf(buf, cap, "%llu bytes at offset %llu", (unsigned long long)len,
                 (unsigned long long)off);
    return buf;
}

sop_rc sop__os_lock(sop__site site, int fd, sop__os_lock_mode mode, uint64_t off, uint64_t len,
                    bool wait, const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    const char *kind = mode == SOP__OS_LOCK_EXCLUSIVE ? "exclusive" : "shared";
    if (off > OFF_MAX || len > OFF_MAX - off)
        return bad_range(err, "lock", off, len, what);
    if (NO_FAULT) {
        int type = mode == SOP__OS_LOCK_EXCLUSIVE ? F_WRLCK : F_RDLCK;
        int r;
        do {
            r = ops()->lock(fd, type, (off_t)off, (off_t)len, wait);
        } while (r != 0 && wait && errno == EINTR);
        if (r != 0)
            e = errno;
    }
    if (e != 0) {
        char rng[64];
        return sop__err_set(err, rc_of(e, wait ? 0u : MAP_LOCKED), e, "%s lock of %s in %s failed",
                            kind, range_str(rng, sizeof(rng), off, len), nm(what));
    }
    return SOP_OK;
}

sop_rc sop__os_unlock(sop__site site, int fd, uint64_t off, uint64_t len, const char *what,
                      sop_err *err)
{
    FAULT_ERRNO(site);
    if (off > OFF_MAX || len > OFF_MAX - off)
        return bad_range(err, "unlock", off, len, what);
    if (NO_FAULT && ops()->lock(fd, F_UNLCK, (off_t)off, (off_t)len, false) != 0)
        e = errno;
    if (e != 0) {
        char rng[64];
        return sop__err_set(err, SOP_IO, e, "unlock of %s in %s failed",
                            range_str(rng, sizeof(rng), off, len), nm(what));
    }
    return SOP_OK;
}

sop_rc sop__os_write_durably(sop__site site, const char *dir, const char *name, const void *data,
                             size_t len, sop_err *err)
{
    char path[4096], tmp[4096];
    size_t pl = strlen(dir) + 1 + strlen(name);
    if (pl + sizeof(".tmp") > sizeof(tmp))
        return sop__err_set(err, SOP_LIMIT, 0, "path %s/%s is too long", dir, name);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp", sizeof(".tmp"));
    int fd;
    SOP__TRY(sop__os_open(site, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600, &fd, err));
    sop_rc rc = sop__os_pwrite_all(site, fd, data, len, 0, tmp, err);
    if (rc == SOP_OK)
        rc = sop__os_fsync(site, fd, tmp, err);
    sop__os_close(site, fd, tmp, NULL);
    if (rc == SOP_OK)
        rc = sop__os_rename(site, tmp, path, err);
    if (rc == SOP_OK)
        rc = sop__os_fsync_dir(site, dir, err);
    return rc;
}
