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
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h> /* rename */
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "mem.h"

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

/* ---- One call on one descriptor or path: the raw operation ---- */

enum mop_kind {
    MK_PREAD,
    MK_PWRITE,
    MK_FSYNC,
    MK_FDATASYNC,
    MK_SYNCFS,
    MK_FTRUNCATE,
    MK_FALLOCATE,
    MK_FSTAT,
    MK_LOCK,
    MK_UNLOCK,
    MK_CLOSE,
    MK_OPEN,
    MK_RENAME,
    MK_UNLINK,
    MK_MKDIR,
    MK_RMDIR,
    MK_FSYNC_DIR,
    MK_STAT,
    MK_OPENDIR
};

/* The arguments and results of one wrapper call. */
typedef struct mop {
    enum mop_kind kind;
    const char *name; /* for the policy: "pwrite", "open"... */
    void *buf;
    const void *cbuf;
    size_t n;
    uint64_t off;
    size_t done; /* pread/pwrite: bytes moved by the last side's call */
    int mode;    /* fallocate mode, open flags */
    uint64_t len;
    struct stat *st;
    int type; /* lock type */
    bool wait;
    mode_t fmode;
    int fd_out;
    void *dir_out;
} mop;

static bool mutates(enum mop_kind k)
{
    switch (k) {
    case MK_PWRITE:
    case MK_FSYNC:
    case MK_FDATASYNC:
    case MK_SYNCFS:
    case MK_FTRUNCATE:
    case MK_FALLOCATE:
    case MK_RENAME:
    case MK_UNLINK:
    case MK_MKDIR:
    case MK_RMDIR:
    case MK_FSYNC_DIR:
        return true;
    default:
        return false;
    }
}

/* Returns 0 or the errno. */
static int raw_fd(int fd, mop *o)
{
    int r;
    o->done = 0;
    switch (o->kind) {
    case MK_PREAD:
        while (o->done < o->n) {
            ssize_t x = ops()->pread(fd, (char *)o->buf + o->done, o->n - o->done,
                                     (off_t)(o->off + o->done));
            if (x > 0)
                o->done += (size_t)x;
            else if (x == 0)
                break; /* end of file */
            else if (errno != EINTR)
                return errno;
        }
        return 0;
    case MK_PWRITE:
        while (o->done < o->n) {
            ssize_t x = ops()->pwrite(fd, (const char *)o->cbuf + o->done, o->n - o->done,
                                      (off_t)(o->off + o->done));
            if (x > 0)
                o->done += (size_t)x;
            else if (x == 0)
                return EIO; /* no progress: never loop forever */
            else if (errno != EINTR)
                return errno;
        }
        return 0;
    case MK_FSYNC:
        return ops()->fsync(fd) != 0 ? errno : 0;
    case MK_FDATASYNC:
        return ops()->fdatasync(fd) != 0 ? errno : 0;
    case MK_SYNCFS:
        return ops()->syncfs(fd) != 0 ? errno : 0;
    case MK_FTRUNCATE:
        do {
            r = ops()->ftruncate(fd, (off_t)o->len);
        } while (r != 0 && errno == EINTR);
        return r != 0 ? errno : 0;
    case MK_FALLOCATE:
        do {
            r = ops()->fallocate(fd, o->mode, (off_t)o->off, (off_t)o->len);
        } while (r != 0 && errno == EINTR);
        return r != 0 ? errno : 0;
    case MK_FSTAT:
        return ops()->fstat(fd, o->st) != 0 ? errno : 0;
    case MK_LOCK:
        do {
            r = ops()->lock(fd, o->type, (off_t)o->off, (off_t)o->len, o->wait);
        } while (r != 0 && o->wait && errno == EINTR);
        return r != 0 ? errno : 0;
    case MK_UNLOCK:
        return ops()->lock(fd, F_UNLCK, (off_t)o->off, (off_t)o->len, false) != 0 ? errno : 0;
    case MK_CLOSE:
        return ops()->close(fd) != 0 && errno != EINTR ? errno : 0;
    default:
        return EINVAL;
    }
}

static int raw_path(const char *path, const char *to, mop *o)
{
    switch (o->kind) {
    case MK_OPEN: {
        int fd;
        do {
            fd = ops()->open(path, o->mode | O_CLOEXEC, o->fmode);
        } while (fd < 0 && errno == EINTR);
        if (fd < 0)
            return errno;
        o->fd_out = fd;
        return 0;
    }
    case MK_RENAME:
        return ops()->rename(path, to) != 0 ? errno : 0;
    case MK_UNLINK:
        return ops()->unlink(path) != 0 ? errno : 0;
    case MK_MKDIR:
        return ops()->mkdir(path, o->fmode) != 0 ? errno : 0;
    case MK_RMDIR:
        return ops()->rmdir(path) != 0 ? errno : 0;
    case MK_FSYNC_DIR:
        return ops()->fsync_dir(path) != 0 ? errno : 0;
    case MK_STAT:
        return ops()->stat(path, o->st) != 0 ? errno : 0;
    case MK_OPENDIR:
        return ops()->opendir(path, &o->dir_out) != 0 ? errno : 0;
    default:
        return EINVAL;
    }
}

/* ---- Mirrored folders (os.h) ---- */

#define MIRROR_PATH 4096
#define MIRROR_SKIP 4

struct sop__os_mirror {
    char side[2][MIRROR_PATH];
    size_t len[2];
    char skip[MIRROR_SKIP][64];
    int nskip;
    sop__os_mirror_policy pol;
    pthread_rwlock_t rw; /* calls hold it shared, view changes exclusive */
    sop__os_mirror_view v;
    int refs;
    sop__os_mirror *next;
};

/* A descriptor opened through a mirror: the caller holds `key`. */
typedef struct mentry {
    sop__os_mirror *m;
    int key;
    int fd[2];
    uint64_t opened[2]; /* view generation when fd[s] was opened */
    int flags;          /* for opening a side later */
    int closed[2];      /* close: the descriptor closed on side s (-1: none) */
    char path[MIRROR_PATH];
} mentry;

static pthread_mutex_t mirror_mu = PTHREAD_MUTEX_INITIALIZER; /* the list and the table */
static sop__os_mirror *mirror_list;
static atomic_int mirror_count;
static mentry **mirror_tab;
static size_t mirror_cap;
static _Thread_local int mirror_bypassed;
/* Why the policy refused (appended to the failing call's message). */
static _Thread_local char mirror_note[200];

static void set_note(const char *msg)
{
    size_t n = strnlen(msg, sizeof(mirror_note) - 1);
    memcpy(mirror_note, msg, n);
    mirror_note[n] = '\0';
}

bool sop__os_failover_errno(int e)
{
    switch (e) {
    case EIO:
    case EROFS:
    case ENOSPC:
    case EDQUOT:
    case EUCLEAN:
    case ENODEV:
    case ENXIO:
    case ENOMEDIUM:
    case EREMOTEIO:
    case EMEDIUMTYPE:
        return true;
    default:
        return false;
    }
}

void sop__os_mirror_bypass(int delta)
{
    mirror_bypassed += delta;
}

static bool mirroring(void)
{
    return SOP__UNLIKELY(atomic_load_explicit(&mirror_count, memory_order_acquire) > 0) &&
           mirror_bypassed == 0;
}

static mentry *entry_of(int fd)
{
    mentry *me = NULL;
    pthread_mutex_lock(&mirror_mu);
    if (fd >= 0 && (size_t)fd < mirror_cap)
        me = mirror_tab[fd];
    pthread_mutex_unlock(&mirror_mu);
    return me;
}

/* The mirror path falls under, and the rest of it ("" or "/..."). */
static sop__os_mirror *mirror_of(const char *path, const char **rest)
{
    sop__os_mirror *found = NULL;
    pthread_mutex_lock(&mirror_mu);
    for (sop__os_mirror *m = mirror_list; m && !found; m = m->next) {
        if (strncmp(path, m->side[0], m->len[0]) != 0 ||
            (path[m->len[0]] != '/' && path[m->len[0]] != '\0'))
            continue;
        const char *r = path + m->len[0];
        bool skipped = false;
        for (int i = 0; i < m->nskip && !skipped; i++)
            skipped = r[0] == '/' && strcmp(r + 1, m->skip[i]) == 0;
        if (!skipped) {
            found = m;
            *rest = r;
        }
    }
    pthread_mutex_unlock(&mirror_mu);
    return found;
}

static int side_path(const sop__os_mirror *m, int s, const char *rest, char *out)
{
    int n = snprintf(out, MIRROR_PATH, "%s%s", m->side[s], rest);
    return n < 0 || n >= MIRROR_PATH ? ENAMETOOLONG : 0;
}

/* Starts a call: the view shared, and for a mutating call the policy's
 * barrier entered with the view brought up to date. */
static sop_rc mirror_begin(sop__os_mirror *m, bool mut, sop_err *err)
{
    for (int round = 0;; round++) {
        pthread_rwlock_rdlock(&m->rw);
        if (!mut)
            return SOP_OK;
        uint64_t gen = 0;
        sop_rc rc = m->pol.enter(m->pol.ctx, &gen, err);
        if (rc != SOP_OK) {
            pthread_rwlock_unlock(&m->rw);
            return rc;
        }
        if (gen == m->v.gen || round == 3)
            return SOP_OK;
        m->pol.leave(m->pol.ctx);
        pthread_rwlock_unlock(&m->rw);
        pthread_rwlock_wrlock(&m->rw);
        rc = m->pol.refresh(m->pol.ctx, &m->v, err);
        pthread_rwlock_unlock(&m->rw);
        if (rc != SOP_OK)
            return rc;
    }
}

static void mirror_end(sop__os_mirror *m, bool mut)
{
    if (mut)
        m->pol.leave(m->pol.ctx);
    pthread_rwlock_unlock(&m->rw);
}

/* Side s failed with e: the policy decides (view exclusive meanwhile).
 * Returns true to go on (the view changed), false if it refused or the
 * call cannot be restarted (the note says why). Either way the view is
 * held again on return - shared only, with *mut cleared, when the barrier
 * could not be entered again. */
static bool mirror_failed(sop__os_mirror *m, bool *mut, int s, int e, const char *what)
{
    mirror_end(m, *mut);
    sop_err ferr = {0};
    pthread_rwlock_wrlock(&m->rw);
    sop_rc rc = m->pol.failed(m->pol.ctx, s, e, what, &m->v, &ferr);
    pthread_rwlock_unlock(&m->rw);
    if (rc != SOP_OK)
        set_note(ferr.msg);
    sop_err berr = {0};
    if (mirror_begin(m, *mut, &berr) != SOP_OK) {
        if (rc == SOP_OK)
            set_note(berr.msg);
        *mut = false;
        (void)mirror_begin(m, false, NULL); /* cannot fail: the view shared */
        return false;
    }
    return rc == SOP_OK;
}

/* The descriptor of side s, opened now if it is not (or was opened before
 * the side last came back). */
static int side_fd(mentry *me, int s, int *fd)
{
    const sop__os_mirror *m = me->m;
    int e = 0;
    pthread_mutex_lock(&mirror_mu);
    if (me->fd[s] < 0 || me->opened[s] < m->v.since[s]) {
        char p[MIRROR_PATH];
        mop o = {.kind = MK_OPEN, .mode = me->flags & ~(O_CREAT | O_EXCL | O_TRUNC)};
        e = side_path(m, s, me->path + m->len[0], p);
        if (e == 0)
            e = raw_path(p, NULL, &o);
        if (e == 0) {
            if (me->fd[s] >= 0 && me->fd[s] != me->key)
                ops()->close(me->fd[s]);
            me->fd[s] = o.fd_out;
            me->opened[s] = m->v.gen;
        }
    }
    *fd = me->fd[s];
    pthread_mutex_unlock(&mirror_mu);
    return e;
}

/*
 * The loop shared by descriptor and path calls: run on the primary, then
 * (`all`) on the other live side. A failing side goes to the policy; after
 * a switch the call runs on the new primary. Returns the errno of the call
 * (0: it succeeded on the side that is primary now).
 */
typedef int (*side_call)(void *ctx, int s, mop *o);

static int mirror_run(sop__os_mirror *m, bool all, mop *o, int injected, side_call call, void *ctx,
                      const char *what)
{
    bool mut = mutates(o->kind);
    sop_err berr = {0};
    if (mirror_begin(m, mut, &berr) != SOP_OK) {
        set_note(berr.msg);
        return berr.sys_errno ? berr.sys_errno : EIO;
    }
    bool done[2] = {false, false};
    int res = 0;
    for (;;) {
        int p = m->v.primary, s;
        if (!done[p])
            s = p;
        else if (all && m->v.live[1 - p] && !done[1 - p])
            s = 1 - p;
        else
            break;
        done[s] = true;
        int e;
        if (s == p && injected) {
            e = injected;
            injected = 0;
        } else {
            e = call(ctx, s, o);
        }
        if (e == 0)
            continue;
        if (o->kind == MK_LOCK && (e == EAGAIN || e == EACCES || e == EINTR)) {
            res = e; /* a conflict, not a failure: undo the sides locked */
            break;
        }
        if (s == p && !sop__os_failover_errno(e)) {
            res = e;
            break;
        }
        /* name the side that failed, not side 0 */
        char sw[MIRROR_PATH + 64];
        const char *at = strstr(what, m->side[0]);
        if (s == 1 && at)
            snprintf(sw, sizeof(sw), "%.*s%s%s", (int)(at - what), what, m->side[1],
                     at + m->len[0]);
        else
            snprintf(sw, sizeof(sw), "%s", what);
        if (!mirror_failed(m, &mut, s, e, sw)) {
            res = e;
            break;
        }
    }
    if (res != 0 && o->kind == MK_LOCK) {
        mop u = *o;
        u.kind = MK_UNLOCK;
        for (int s = 0; s < 2; s++)
            if (done[s] && s != m->v.primary)
                (void)call(ctx, s, &u);
    }
    mirror_end(m, mut);
    return res;
}

static int fd_side_call(void *ctx, int s, mop *o)
{
    mentry *me = ctx;
    int fd, e = side_fd(me, s, &fd);
    return e ? e : raw_fd(fd, o);
}

static int close_side_call(void *ctx, int s, mop *o)
{
    mentry *me = ctx;
    int fd = me->fd[s];
    if (fd < 0)
        return 0;
    me->fd[s] = -1;
    me->closed[s] = fd;
    return raw_fd(fd, o);
}

/* Runs o on fd (with `injected` standing for the primary's result). */
static int fd_call(int fd, mop *o, int injected)
{
    mentry *me;
    if (!mirroring() || (me = entry_of(fd)) == NULL) {
        if (injected && o->kind != MK_CLOSE)
            return injected; /* close still releases the descriptor */
        int e = raw_fd(fd, o);
        return injected ? injected : e;
    }
    if (o->kind == MK_CLOSE) {
        /* every side's descriptor goes; a failing close is a failing side
         * (earlier writes may be lost there) */
        char what[MIRROR_PATH + 32];
        snprintf(what, sizeof(what), "close of %s", me->path);
        int e = mirror_run(me->m, true, o, injected, close_side_call, me, what);
        pthread_mutex_lock(&mirror_mu);
        mirror_tab[fd] = NULL;
        pthread_mutex_unlock(&mirror_mu);
        bool key_closed = false;
        for (int s = 0; s < 2; s++) {
            if (me->fd[s] >= 0)
                ops()->close(me->fd[s]);
            key_closed |= me->fd[s] == me->key || me->closed[s] == me->key;
        }
        if (!key_closed)
            ops()->close(me->key);
        sop__free(me);
        return e;
    }
    bool all = mutates(o->kind) || o->kind == MK_LOCK || o->kind == MK_UNLOCK;
    char what[MIRROR_PATH + 32];
    snprintf(what, sizeof(what), "%s of %s", o->name, me->path);
    return mirror_run(me->m, all, o, injected, fd_side_call, me, what);
}

typedef struct path_ctx {
    const sop__os_mirror *m;
    const char *rest, *rest_to;
    int fds[2];
} path_ctx;

static int path_side_call(void *ctx, int s, mop *o)
{
    path_ctx *c = ctx;
    char p[MIRROR_PATH], q[MIRROR_PATH];
    int e = side_path(c->m, s, c->rest, p);
    if (e == 0 && c->rest_to)
        e = side_path(c->m, s, c->rest_to, q);
    if (e == 0)
        e = raw_path(p, c->rest_to ? q : NULL, o);
    if (e == 0 && o->kind == MK_OPEN)
        c->fds[s] = o->fd_out;
    return e;
}

/* A mirrored folder's listing, read whole from one side so that a side
 * failing half way is failed over like any other call. */
typedef struct mlist {
    char *names; /* NUL-separated */
    size_t len, cap, pos;
    sop__os_mirror *m; /* for a fault injected into a later dir_next */
} mlist;

static void mlist_free(mlist *l)
{
    if (l) {
        sop__free(l->names);
        sop__free(l);
    }
}

static int list_side_call(void *ctx, int s, mop *o)
{
    path_ctx *c = ctx;
    char p[MIRROR_PATH];
    int e = side_path(c->m, s, c->rest, p);
    void *h = NULL;
    if (e == 0)
        e = ops()->opendir(p, &h) != 0 ? errno : 0;
    if (e != 0)
        return e;
    mlist *l = sop__calloc(1, sizeof(*l));
    const char *n;
    for (;;) {
        if (l == NULL) {
            e = ENOMEM;
            break;
        }
        if (ops()->readdir(h, &n) != 0) {
            e = errno;
            break;
        }
        if (n == NULL)
            break;
        if (!strcmp(n, ".") || !strcmp(n, ".."))
            continue;
        size_t k = strlen(n) + 1;
        if (l->len + k > l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 4096;
            while (cap < l->len + k)
                cap *= 2;
            char *b = sop__realloc(l->names, cap);
            if (b == NULL) {
                e = ENOMEM;
                break;
            }
            l->names = b;
            l->cap = cap;
        }
        memcpy(l->names + l->len, n, k);
        l->len += k;
    }
    ops()->closedir(h);
    if (e != 0) {
        mlist_free(l);
        return e;
    }
    mlist_free(o->dir_out); /* a side that failed after listing */
    o->dir_out = l;
    return 0;
}

static int path_call(const char *path, const char *to, mop *o, int injected)
{
    const char *rest = NULL, *rest_to = NULL;
    sop__os_mirror *m = mirroring() ? mirror_of(path, &rest) : NULL;
    if (m && to && mirror_of(to, &rest_to) != m)
        m = NULL; /* a rename into or out of the mirror: not mirrored */
    if (m == NULL)
        return injected ? injected : raw_path(path, to, o);
    bool write = o->kind == MK_OPEN && (o->mode & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC));
    bool all = mutates(o->kind) || write;
    path_ctx c = {m, rest, rest_to, {-1, -1}};
    char what[MIRROR_PATH + 32];
    snprintf(what, sizeof(what), "%s of %s", o->name, path);
    if (o->kind == MK_OPENDIR) {
        o->dir_out = NULL;
        int e = mirror_run(m, false, o, injected, list_side_call, &c, what);
        o->mode = 1; /* a listing */
        if (e != 0) {
            mlist_free(o->dir_out);
            o->dir_out = NULL;
        } else {
            ((mlist *)o->dir_out)->m = m;
        }
        return e;
    }
    mentry *me = NULL;
    if (o->kind == MK_OPEN && (me = sop__calloc(1, sizeof(*me))) == NULL)
        return ENOMEM;
    int e = mirror_run(m, all, o, injected, path_side_call, &c, what);
    if (e == 0 && o->kind == MK_RENAME) {
        /* open descriptors of the renamed file reopen it by its new name */
        pthread_mutex_lock(&mirror_mu);
        for (size_t i = 0; i < mirror_cap; i++)
            if (mirror_tab[i] && strcmp(mirror_tab[i]->path, path) == 0)
                snprintf(mirror_tab[i]->path, sizeof(mirror_tab[i]->path), "%s", to);
        pthread_mutex_unlock(&mirror_mu);
    }
    if (o->kind != MK_OPEN)
        return e;
    pthread_rwlock_rdlock(&m->rw);
    int p = m->v.primary;
    uint64_t gen = m->v.gen;
    pthread_rwlock_unlock(&m->rw);
    int key = c.fds[p] >= 0 ? c.fds[p] : c.fds[1 - p];
    if (e == 0 && key < 0)
        e = EIO;
    pthread_mutex_lock(&mirror_mu);
    if (e == 0 && (size_t)key >= mirror_cap) {
        size_t cap = mirror_cap ? mirror_cap : 64;
        while (cap <= (size_t)key)
            cap *= 2;
        mentry **t = sop__realloc(mirror_tab, cap * sizeof(*t));
        if (t == NULL) {
            e = ENOMEM;
        } else {
            memset(t + mirror_cap, 0, (cap - mirror_cap) * sizeof(*t));
            mirror_tab = t;
            mirror_cap = cap;
        }
    }
    if (e == 0) {
        me->m = m;
        me->key = key;
        me->flags = o->mode;
        snprintf(me->path, sizeof(me->path), "%s", path);
        for (int s = 0; s < 2; s++) {
            me->fd[s] = c.fds[s];
            me->opened[s] = gen;
            me->closed[s] = -1;
        }
        mirror_tab[key] = me;
        o->fd_out = key;
    }
    pthread_mutex_unlock(&mirror_mu);
    if (e != 0) {
        for (int s = 0; s < 2; s++)
            if (c.fds[s] >= 0)
                ops()->close(c.fds[s]);
        sop__free(me);
    }
    return e;
}

/* Appends why the mirror's policy refused, if it did, to err's message. */
static sop_rc noted(sop_rc rc, sop_err *err)
{
    if (mirror_note[0] && err) {
        size_t l = strlen(err->msg);
        snprintf(err->msg + l, sizeof(err->msg) - l, "; %s", mirror_note);
    }
    mirror_note[0] = '\0';
    return rc;
}

sop_rc sop__os_mirror_add(const char *side0, const char *side1, const char *const *skip,
                          const sop__os_mirror_policy *policy, const sop__os_mirror_view *view,
                          sop__os_mirror **out, sop_err *err)
{
    if (strlen(side0) >= MIRROR_PATH - 256 || strlen(side1) >= MIRROR_PATH - 256)
        return sop__err_set(err, SOP_LIMIT, 0, "mirror: folder path too long");
    pthread_mutex_lock(&mirror_mu);
    for (sop__os_mirror *m = mirror_list; m; m = m->next) {
        if (strcmp(m->side[0], side0) == 0) {
            m->refs++;
            pthread_mutex_unlock(&mirror_mu);
            *out = m;
            return SOP_OK;
        }
    }
    sop__os_mirror *m = sop__calloc(1, sizeof(*m));
    if (m == NULL) {
        pthread_mutex_unlock(&mirror_mu);
        return sop__err_set(err, SOP_NOMEM, 0, "mirror: no memory");
    }
    snprintf(m->side[0], MIRROR_PATH, "%s", side0);
    snprintf(m->side[1], MIRROR_PATH, "%s", side1);
    for (int s = 0; s < 2; s++) {
        m->len[s] = strlen(m->side[s]);
        while (m->len[s] > 1 && m->side[s][m->len[s] - 1] == '/')
            m->side[s][--m->len[s]] = '\0';
    }
    for (int i = 0; skip && skip[i] && i < MIRROR_SKIP; i++)
        snprintf(m->skip[m->nskip++], sizeof(m->skip[0]), "%s", skip[i]);
    m->pol = *policy;
    m->v = *view;
    m->refs = 1;
    pthread_rwlock_init(&m->rw, NULL);
    m->next = mirror_list;
    mirror_list = m;
    atomic_fetch_add(&mirror_count, 1);
    pthread_mutex_unlock(&mirror_mu);
    *out = m;
    return SOP_OK;
}

void sop__os_mirror_release(sop__os_mirror *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&mirror_mu);
    if (--m->refs > 0) {
        pthread_mutex_unlock(&mirror_mu);
        return;
    }
    for (sop__os_mirror **pp = &mirror_list; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    }
    atomic_fetch_sub(&mirror_count, 1);
    pthread_mutex_unlock(&mirror_mu);
    pthread_rwlock_destroy(&m->rw);
    sop__free(m);
}

sop_rc sop__os_mirror_check(sop__os_mirror *m, sop_err *err)
{
    SOP__TRY(mirror_begin(m, true, err));
    mirror_end(m, true);
    return SOP_OK;
}

sop_rc sop__os_mirror_exclusive(sop__os_mirror *m,
                                sop_rc (*fn)(void *ctx, sop__os_mirror_view *v, sop_err *err),
                                void *ctx, sop_err *err)
{
    pthread_rwlock_wrlock(&m->rw);
    sop_rc rc = fn(ctx, &m->v, err);
    pthread_rwlock_unlock(&m->rw);
    return rc;
}

/* ---- Files ---- */

sop_rc sop__os_open(sop__site site, const char *path, int flags, mode_t mode, int *fd_out,
                    sop_err *err)
{
    FAULT_ERRNO(site);
    mop o = {.kind = MK_OPEN, .name = "open", .mode = flags, .fmode = mode, .fd_out = -1};
    e = path_call(path, NULL, &o, e);
    if (e != 0) {
        unsigned map = MAP_NOTFOUND;
        if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL))
            map |= MAP_EXISTS;
        return noted(sop__err_set(err, rc_of(e, map), e, "open of %s failed", nm(path)), err);
    }
    *fd_out = o.fd_out;
    return SOP_OK;
}

sop_rc sop__os_close(sop__site site, int fd, const char *what, sop_err *err)
{
    if (fd < 0)
        return SOP_OK;
    FAULT_ERRNO(site);
    /* Always release the descriptor, even for an injected fault. */
    mop o = {.kind = MK_CLOSE, .name = "close"};
    e = fd_call(fd, &o, e);
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
    mop o = {.kind = MK_PREAD, .name = "pread", .buf = buf, .n = n, .off = off};
    e = fd_call(fd, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, SOP_IO, e,
                                  "pread of %zu bytes at offset %llu from %s failed", n,
                                  (unsigned long long)off, nm(what)),
                     err);
    if (got == NULL && o.done < n)
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "pread of %zu bytes at offset %llu from %s: unexpected end of file "
                            "after %zu bytes",
                            n, (unsigned long long)off, nm(what), o.done);
    if (got)
        *got = o.done;
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
    mop o = {.kind = MK_PWRITE, .name = "pwrite", .cbuf = buf, .n = limit, .off = off};
    e = fd_call(fd, &o, e);
#ifdef SOP_FAULT_INJECTION
    if (e == 0 && fk_ == SOP__FAULT_SHORT_WRITE)
        e = ENOSPC; /* the injected short write: the disk filled up */
#endif
    if (e != 0) {
        if (o.done > 0)
            return noted(sop__err_set(err, SOP_IO, e,
                                      "pwrite of %zu bytes at offset %llu to %s failed after "
                                      "writing %zu bytes",
                                      n, (unsigned long long)off, nm(what), o.done),
                         err);
        return noted(sop__err_set(err, SOP_IO, e, "pwrite of %zu bytes at offset %llu to %s failed",
                                  n, (unsigned long long)off, nm(what)),
                     err);
    }
    return SOP_OK;
}

sop_rc sop__os_fsync(sop__site site, int fd, const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    mop o = {.kind = MK_FSYNC, .name = "fsync"};
    e = fd_call(fd, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, SOP_IO, e, "fsync of %s failed", nm(what)), err);
    return SOP_OK;
}

sop_rc sop__os_fdatasync(sop__site site, int fd, const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    mop o = {.kind = MK_FDATASYNC, .name = "fdatasync"};
    e = fd_call(fd, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, SOP_IO, e, "fdatasync of %s failed", nm(what)), err);
    return SOP_OK;
}

sop_rc sop__os_syncfs(sop__site site, int fd, const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    mop o = {.kind = MK_SYNCFS, .name = "syncfs"};
    e = fd_call(fd, &o, e);
    if (e != 0)
        return noted(
            sop__err_set(err, SOP_IO, e, "syncfs of the file system holding %s failed", nm(what)),
            err);
    return SOP_OK;
}

sop_rc sop__os_ftruncate(sop__site site, int fd, uint64_t len, const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    if (len > OFF_MAX)
        return bad_range(err, "ftruncate", 0, len, what);
    mop o = {.kind = MK_FTRUNCATE, .name = "ftruncate", .len = len};
    e = fd_call(fd, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, SOP_IO, e, "ftruncate of %s to %llu bytes failed", nm(what),
                                  (unsigned long long)len),
                     err);
    return SOP_OK;
}

sop_rc sop__os_fallocate(sop__site site, int fd, int mode, uint64_t off, uint64_t len,
                         const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    if (off > OFF_MAX || len > OFF_MAX - off)
        return bad_range(err, "fallocate", off, len, what);
    mop o = {.kind = MK_FALLOCATE, .name = "fallocate", .mode = mode, .off = off, .len = len};
    e = fd_call(fd, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, rc_of(e, MAP_UNSUPPORTED), e,
                                  "fallocate of %llu bytes at offset %llu in %s failed",
                                  (unsigned long long)len, (unsigned long long)off, nm(what)),
                     err);
    return SOP_OK;
}

sop_rc sop__os_fstat(sop__site site, int fd, struct stat *st, const char *what, sop_err *err)
{
    FAULT_ERRNO(site);
    struct stat s = {0};
    mop o = {.kind = MK_FSTAT, .name = "fstat", .st = &s};
    e = fd_call(fd, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, SOP_IO, e, "fstat of %s failed", nm(what)), err);
    *st = s;
    return SOP_OK;
}

/* ---- Names ---- */

sop_rc sop__os_rename(sop__site site, const char *from, const char *to, sop_err *err)
{
    FAULT_ERRNO(site);
    mop o = {.kind = MK_RENAME, .name = "rename"};
    e = path_call(from, to, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, rc_of(e, MAP_NOTFOUND), e, "rename of %s to %s failed",
                                  nm(from), nm(to)),
                     err);
    return SOP_OK;
}

sop_rc sop__os_unlink(sop__site site, const char *path, sop_err *err)
{
    FAULT_ERRNO(site);
    mop o = {.kind = MK_UNLINK, .name = "unlink"};
    e = path_call(path, NULL, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, rc_of(e, MAP_NOTFOUND), e, "unlink of %s failed", nm(path)),
                     err);
    return SOP_OK;
}

sop_rc sop__os_mkdir(sop__site site, const char *path, mode_t mode, sop_err *err)
{
    FAULT_ERRNO(site);
    mop o = {.kind = MK_MKDIR, .name = "mkdir", .fmode = mode};
    e = path_call(path, NULL, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, rc_of(e, MAP_EXISTS), e, "mkdir of %s failed", nm(path)),
                     err);
    return SOP_OK;
}

sop_rc sop__os_rmdir(sop__site site, const char *path, sop_err *err)
{
    FAULT_ERRNO(site);
    mop o = {.kind = MK_RMDIR, .name = "rmdir"};
    e = path_call(path, NULL, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, rc_of(e, MAP_NOTFOUND), e, "rmdir of %s failed", nm(path)),
                     err);
    return SOP_OK;
}

sop_rc sop__os_fsync_dir(sop__site site, const char *path, sop_err *err)
{
    FAULT_ERRNO(site);
    mop o = {.kind = MK_FSYNC_DIR, .name = "fsync"};
    e = path_call(path, NULL, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, SOP_IO, e, "fsync of directory %s failed", nm(path)), err);
    return SOP_OK;
}

sop_rc sop__os_stat(sop__site site, const char *path, struct stat *st, sop_err *err)
{
    FAULT_ERRNO(site);
    struct stat s = {0};
    mop o = {.kind = MK_STAT, .name = "stat", .st = &s};
    e = path_call(path, NULL, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, rc_of(e, MAP_NOTFOUND), e, "stat of %s failed", nm(path)),
                     err);
    *st = s;
    return SOP_OK;
}

/* ---- Directory listing ---- */

sop_rc sop__os_dir_open(sop__site site, const char *path, sop__os_dir *d, sop_err *err)
{
    FAULT_ERRNO(site);
    mop o = {.kind = MK_OPENDIR, .name = "opendir"};
    e = path_call(path, NULL, &o, e);
    if (e != 0)
        return noted(sop__err_set(err, rc_of(e, MAP_NOTFOUND), e, "opendir of %s failed", nm(path)),
                     err);
    d->handle = o.dir_out;
    d->listed = o.mode == 1;
    d->path = path;
    d->site = site;
    return SOP_OK;
}

sop_rc sop__os_dir_next(sop__os_dir *d, const char **name, sop_err *err)
{
    FAULT_ERRNO(d->site);
    const char *n = NULL;
    if (d->listed && e != 0 && sop__os_failover_errno(e)) {
        /* the listing was read at dir_open: an injected failure stands for
         * the primary failing now, which the policy fails over (the listing
         * stays: both sides list the same) */
        mlist *l = d->handle;
        char what[MIRROR_PATH + 32];
        snprintf(what, sizeof(what), "readdir of %s", nm(d->path));
        bool mut = false;
        pthread_rwlock_rdlock(&l->m->rw);
        if (mirror_failed(l->m, &mut, l->m->v.primary, e, what))
            e = 0;
        mirror_end(l->m, false);
        if (e != 0)
            return noted(sop__err_set(err, SOP_IO, e, "readdir of %s failed", nm(d->path)), err);
    }
    if (d->listed) {
        mlist *l = d->handle;
        if (l->pos >= l->len)
            return sop__err_set(err, SOP_NOTFOUND, 0, "readdir of %s: no more entries",
                                nm(d->path));
        *name = l->names + l->pos;
        l->pos += strlen(*name) + 1;
        return SOP_OK;
    }
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
    if (d->listed)
        mlist_free(d->handle);
    else
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
    mop o = {.kind = MK_LOCK,
             .name = "lock",
             .type = mode == SOP__OS_LOCK_EXCLUSIVE ? F_WRLCK : F_RDLCK,
             .off = off,
             .len = len,
             .wait = wait};
    e = fd_call(fd, &o, e);
    if (e != 0) {
        char rng[64];
        return noted(sop__err_set(err, rc_of(e, wait ? 0u : MAP_LOCKED), e,
                                  "%s lock of %s in %s failed", kind,
                                  range_str(rng, sizeof(rng), off, len), nm(what)),
                     err);
    }
    return SOP_OK;
}

sop_rc sop__os_unlock(sop__site site, int fd, uint64_t off, uint64_t len, const char *what,
                      sop_err *err)
{
    FAULT_ERRNO(site);
    if (off > OFF_MAX || len > OFF_MAX - off)
        return bad_range(err, "unlock", off, len, what);
    mop o = {.kind = MK_UNLOCK, .name = "unlock", .off = off, .len = len};
    e = fd_call(fd, &o, e);
    if (e != 0) {
        char rng[64];
        return noted(sop__err_set(err, SOP_IO, e, "unlock of %s in %s failed",
                                  range_str(rng, sizeof(rng), off, len), nm(what)),
                     err);
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
