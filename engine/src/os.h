/*
 * os.h - the engine's only door to the file system.
 *
 * Every file operation of libsop goes through the wrappers below, which call
 * the one installed operations table (sop__os_ops). The default table is the
 * real Linux syscalls; a test installs another one (a power-loss simulator
 * keeping, dropping or tearing unsynced writes; a call counter) with
 * sop__os_set_ops. Each wrapper names its call site (a sop__site from
 * fault.h) so the fault build can fail or kill at the Nth call of that site.
 *
 * Invariants:
 *  1. engine/src calls no file syscall directly, and never the table
 *     directly: only sop__os_* wrappers.
 *  2. Every wrapper call counts exactly one call of its site in the fault
 *     build (sop__os_close with fd < 0 and sop__os_dir_close count none) and
 *     consults the fault hook before touching the table.
 *  3. Failure returns SOP_IO with err->sys_errno = errno and a message naming
 *     the operation, the file and, for ranged calls, the size and offset:
 *     "pwrite of 4096 bytes at offset 40960 to /db/people/people-1.reg
 *     failed: Input/output error". The exceptions, chosen so callers need
 *     not look at errno for the expected cases:
 *       ENOENT -> SOP_NOTFOUND  for open, stat, unlink, rmdir, rename (source
 *                               or target directory missing), dir_open;
 *       EEXIST -> SOP_EXISTS    for open with O_CREAT|O_EXCL, and mkdir;
 *       EAGAIN/EACCES -> SOP_LOCKED for a non-waiting lock that conflicts;
 *       EOPNOTSUPP -> SOP_UNSUPPORTED for fallocate (the caller may fall back
 *                               to writing zeros);
 *       offsets/lengths above INT64_MAX -> SOP_INVALID (nothing is called).
 *     Injected faults (fault.h) look exactly like the real errno.
 *  4. Out-parameters are written only on success.
 *  5. open always adds O_CLOEXEC; the mode is the caller's choice (the
 *     engine creates files 0600 and directories 0700).
 *  6. pwrite_all and pread_full retry EINTR and short transfers; nothing else
 *     is ever retried - in particular a failed fsync/fdatasync is reported,
 *     never retried (after a failed fsync the kernel may have dropped the
 *     dirty pages; the data must be treated as lost).
 *  7. Byte-range locks are Linux OFD locks (F_OFD_SETLK/F_OFD_SETLKW): owned
 *     by the open file description, so two open() calls of one file in one
 *     process conflict like two processes do, and closing any other
 *     descriptor of the file does not drop them.
 *  8. sop__os_set_ops is not synchronised with I/O in flight: install a
 *     table while no other thread is inside a wrapper.
 */
#ifndef SOP_OS_H
#define SOP_OS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "fault.h"
#include "sop.h"

/*
 * The operations table. Each entry behaves like the syscall it is named
 * after: it returns -1 (or NULL) with errno set on failure, and is called
 * with arguments already validated by the wrapper. An interposing table
 * usually keeps a pointer to sop__os_default_ops() and delegates to it.
 */
typedef struct sop__os_ops {
    /* flags already include O_CLOEXEC. Returns a descriptor. */
    int (*open)(const char *path, int flags, mode_t mode);
    int (*close)(int fd);
    /* One transfer each (may be short); the wrappers loop. */
    ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    int (*fsync)(int fd);
    int (*fdatasync)(int fd);
    int (*syncfs)(int fd); /* flush the whole file system holding fd (checkpoints) */
    int (*ftruncate)(int fd, off_t len);
    /* mode as fallocate(2): 0, FALLOC_FL_KEEP_SIZE, ... */
    int (*fallocate)(int fd, int mode, off_t off, off_t len);
    int (*rename)(const char *from, const char *to);
    int (*unlink)(const char *path);
    int (*mkdir)(const char *path, mode_t mode);
    int (*rmdir)(const char *path);
    /* Make a directory's entries durable: open(O_RDONLY|O_DIRECTORY) +
     * fsync + close in the default table; one entry so a power-loss
     * simulator sees "directory synced" as one event. */
    int (*fsync_dir)(const char *path);
    /* OFD byte-range lock: type F_RDLCK, F_WRLCK or F_UNLCK; len 0 = to the
     * end of the file and beyond; wait: F_OFD_SETLKW instead of F_OFD_SETLK. */
    int (*lock)(int fd, int type, off_t off, off_t len, bool wait);
    int (*fstat)(int fd, struct stat *st);
    int (*stat)(const char *path, struct stat *st);
    /* Directory listing: opendir gives an opaque handle; readdir returns 0
     * with *name the next entry ("." and ".." included; valid until the next
     * readdir/closedir) or NULL at the end, -1 on error; closedir frees. */
    int (*opendir)(const char *path, void **dir_out);
    int (*readdir)(void *dir, const char **name_out);
    int (*closedir)(void *dir);
} sop__os_ops;

/* The real syscalls. Never NULL; stays valid for the life of the process. */
const sop__os_ops *sop__os_default_ops(void);
/* Installs ops (NULL = the default table) and returns the table it replaced.
 * The table must stay valid until it is replaced. See invariant 8. */
const sop__os_ops *sop__os_set_ops(const sop__os_ops *ops);

/* ---- Files ---- */

/* Opens path (flags as open(2), O_CLOEXEC added; mode used with O_CREAT).
 * SOP_NOTFOUND / SOP_EXISTS per invariant 3. */
sop_rc sop__os_open(sop__site site, const char *path, int flags, mode_t mode, int *fd_out,
                    sop_err *err);
/* Closes fd; fd < 0 is a no-op. The descriptor is released even when the
 * call fails (as on Linux); a failure (EIO on NFS, an injected fault) means
 * earlier writes may be lost. EINTR counts as success. */
sop_rc sop__os_close(sop__site site, int fd, const char *what, sop_err *err);
/*
 * Reads n bytes at off, looping over short reads and EINTR until n bytes or
 * end of file. With got != NULL: SOP_OK and *got = bytes read (< n means end
 * of file). With got == NULL: end of file before n bytes is SOP_CORRUPT
 * ("pread of 4096 bytes at offset 8192 from F: unexpected end of file after
 * 100 bytes") - for callers that read fixed-size structures.
 */
sop_rc sop__os_pread_full(sop__site site, int fd, void *buf, size_t n, uint64_t off, size_t *got,
                          const char *what, sop_err *err);
/* Writes all n bytes at off, looping over short writes and EINTR. On failure
 * some prefix may have been written; the message says how many bytes. */
sop_rc sop__os_pwrite_all(sop__site site, int fd, const void *buf, size_t n, uint64_t off,
                          const char *what, sop_err *err);
sop_rc sop__os_fsync(sop__site site, int fd, const char *what, sop_err *err);
sop_rc sop__os_fdatasync(sop__site site, int fd, const char *what, sop_err *err);
sop_rc sop__os_syncfs(sop__site site, int fd, const char *what, sop_err *err);
sop_rc sop__os_ftruncate(sop__site site, int fd, uint64_t len, const char *what, sop_err *err);
/* fallocate(2) with mode (0 allocates and extends the size). SOP_UNSUPPORTED
 * when the file system cannot. */
sop_rc sop__os_fallocate(sop__site site, int fd, int mode, uint64_t off, uint64_t len,
                         const char *what, sop_err *err);
sop_rc sop__os_fstat(sop__site site, int fd, struct stat *st, const char *what, sop_err *err);

/* ---- Names ---- */

/* rename(2): atomic replacement of `to`. Durable only after
 * sop__os_fsync_dir of the directory (or directories) involved. */
sop_rc sop__os_rename(sop__site site, const char *from, const char *to, sop_err *err);
sop_rc sop__os_unlink(sop__site site, const char *path, sop_err *err);
sop_rc sop__os_mkdir(sop__site site, const char *path, mode_t mode, sop_err *err);
sop_rc sop__os_rmdir(sop__site site, const char *path, sop_err *err);
/* Makes the creation, removal and renaming of entries in directory `path`
 * durable. */
sop_rc sop__os_fsync_dir(sop__site site, const char *path, sop_err *err);
sop_rc sop__os_stat(sop__site site, const char *path, struct stat *st, sop_err *err);

/* Replaces <dir>/<name> with data, durably and atomically: written to
 * <dir>/<name>.tmp, fsynced, renamed over <dir>/<name>, dir fsynced. For
 * small write-once files (headers, configuration, markers). */
sop_rc sop__os_write_durably(sop__site site, const char *dir, const char *name, const void *data,
                             size_t len, sop_err *err);

/* ---- Directory listing ---- */

/* Caller-owned; fill it with sop__os_dir_open. `path` must stay valid until
 * sop__os_dir_close (it is used in messages). */
typedef struct sop__os_dir {
    void *handle; /* from the ops table (or a listing read whole); NULL when closed */
    bool listed;  /* handle is a listing read whole (a mirrored folder) */
    const char *path;
    sop__site site;
} sop__os_dir;

sop_rc sop__os_dir_open(sop__site site, const char *path, sop__os_dir *d, sop_err *err);
/* SOP_OK with *name = the next entry (never "." or ".."; valid until the
 * next call on d), SOP_NOTFOUND at the end, SOP_IO on error. Order is the
 * file system's. Counts one call of the site given to dir_open. */
sop_rc sop__os_dir_next(sop__os_dir *d, const char **name, sop_err *err);
/* Frees the listing; a zeroed or already closed d is a no-op. */
void sop__os_dir_close(sop__os_dir *d);

/* ---- OFD byte-range locks (invariant 7) ---- */

typedef enum sop__os_lock_mode { SOP__OS_LOCK_SHARED, SOP__OS_LOCK_EXCLUSIVE } sop__os_lock_mode;

/*
 * Locks bytes [off, off+len) of fd's file (len 0: from off to the end of the
 * file and beyond). Shared needs fd open for reading, exclusive for writing.
 * Taking a lock over a range this open file description already holds
 * converts it. wait = false: SOP_LOCKED at once if another open file
 * description holds a conflicting lock. wait = true: blocks until granted
 * (EINTR is retried); bounded waits are the caller's job (poll with wait =
 * false).
 */
sop_rc sop__os_lock(sop__site site, int fd, sop__os_lock_mode mode, uint64_t off, uint64_t len,
                    bool wait, const char *what, sop_err *err);
/* Releases whatever this open file description holds in [off, off+len). */
sop_rc sop__os_unlock(sop__site site, int fd, uint64_t off, uint64_t len, const char *what,
                      sop_err *err);

/* ---- Mirrored folders (replication's I/O mechanism; policy: replication.h) ----
 *
 * A mirror makes one folder tree ("side 0", the path the engine uses) be
 * written as two: every path under side 0 also names the same relative path
 * under side 1. While a mirror is registered, the wrappers above act on it:
 *  - mutating calls (open for writing, pwrite, fsync, fdatasync, syncfs,
 *    ftruncate, fallocate, close, rename, unlink, mkdir, rmdir, fsync_dir)
 *    run on the primary side, then on the other side if it is live;
 *  - reads (open read-only, pread, fstat, stat, dir_open) run on the primary;
 *  - OFD locks are taken on every live side, side 0 first, so two processes
 *    whose views differ still conflict on the side both use;
 *  - a failure of the primary with a qualifying errno (sop__os_failover_errno)
 *    or any failure of the other side is handed to the policy (`failed`),
 *    which records it durably and either switches sides or refuses; on a
 *    switch the call goes on, on the new primary, and succeeds if it does.
 * An injected fault (fault.h) hits the primary side's call only.
 * The descriptor returned by open is the one of the side that was primary
 * then; it stays valid across switches (the wrappers map it to the other
 * side's descriptor). Files named in `skip` (relative to side 0: the lock
 * file, the replication state) are never mirrored, and a thread inside
 * sop__os_mirror_bypass calls acts on the paths it names only.
 */
typedef struct sop__os_mirror sop__os_mirror;

typedef struct sop__os_mirror_view {
    uint64_t gen;      /* the state generation this view reflects */
    int primary;       /* 0 or 1: the side reads go to */
    bool live[2];      /* sides that are written (the primary always is) */
    uint64_t since[2]; /* a side's descriptors opened before gen `since` are reopened */
} sop__os_mirror_view;

typedef struct sop__os_mirror_policy {
    void *ctx;
    /* Before each mutating call: enter the cross-process barrier (shared)
     * and give the current generation hint. leave undoes enter. */
    sop_rc (*enter)(void *ctx, uint64_t *gen, sop_err *err);
    void (*leave)(void *ctx);
    /* The generation hint differs from the view: bring *v up to date. */
    sop_rc (*refresh)(void *ctx, sop__os_mirror_view *v, sop_err *err);
    /* Side `side` failed a call (errno e, `what` describes it): record it
     * durably and update *v (SOP_OK: go on with *v), or refuse (err says
     * why). Called with no other call of this mirror in flight in this
     * process. */
    sop_rc (*failed)(void *ctx, int side, int e, const char *what, sop__os_mirror_view *v,
                     sop_err *err);
} sop__os_mirror_policy;

/* Registers side0 (as the engine spells it) mirrored to side1, with the
 * initial view. skip: NULL-terminated names directly under side0. One
 * mirror per side0: registering an existing one adds a reference (and
 * keeps the first policy). */
sop_rc sop__os_mirror_add(const char *side0, const char *side1, const char *const *skip,
                          const sop__os_mirror_policy *policy, const sop__os_mirror_view *view,
                          sop__os_mirror **out, sop_err *err);
/* Drops a reference; the last one unregisters (no file of it may be open). */
void sop__os_mirror_release(sop__os_mirror *m);
/* Refreshes the view now if the policy's generation hint changed. */
sop_rc sop__os_mirror_check(sop__os_mirror *m, sop_err *err);
/* Runs fn with every other call on this mirror in this process held off
 * (the view may be changed through *v). fn must use bypass for its I/O. */
sop_rc sop__os_mirror_exclusive(sop__os_mirror *m,
                                sop_rc (*fn)(void *ctx, sop__os_mirror_view *v, sop_err *err),
                                void *ctx, sop_err *err);
/* +1 / -1: while positive, this thread's calls are not mirrored. */
void sop__os_mirror_bypass(int delta);
/* Whether errno e means "this drive is failing" (failover qualifies):
 * EIO, EROFS, ENOSPC, EDQUOT, EUCLEAN, ENODEV, ENXIO, ENOMEDIUM,
 * EREMOTEIO, EMEDIUMTYPE. */
bool sop__os_failover_errno(int e);

#endif
