/*
 * test_powerloss.c - simulated power loss through the I/O operations table
 * (TESTING.md: "unsynced writes kept / dropped / torn, several seeds per
 * point. This is what finds a missing fsync.").
 *
 * The simulator is an interposing sop__os_ops table installed in a forked
 * child that runs a deterministic workload (the workloads, models and
 * checks follow test_crash.c). Every call goes through to the real file
 * system, which therefore holds the page cache's view; the simulator
 * records what the disk would not have yet:
 *   - per file (by inode): every pwrite, ftruncate and fallocate since the
 *     file's last fsync/fdatasync, with the bytes it overwrote, so the
 *     content as of the last sync is the current one with those undone;
 *   - per folder: entries created (open O_CREAT), renamed, unlinked, made
 *     and removed since the folder's last fsync (the fsync_dir operation);
 *     an unlinked or replaced file is kept alive through a hard link in a
 *     shadow folder, so its last durable content stays readable;
 *   - syncfs makes everything durable.
 * At the chosen moment - before or after the Nth sync (or call) of a named
 * I/O site, at the first I/O after the Nth pass of a crash point, or after
 * the workload - the power fails: the child writes one post-power-loss
 * image per seed into a new folder and _exits. Each image starts from the
 * durable state and replays the undurable changes in one of these modes:
 *   keep  - every write and folder change reaches the disk (as kill -9);
 *   drop  - none does;
 *   torn  - each write keeps a random subset of its 512-byte sectors, each
 *           size change is kept or not, and a random prefix of the pending
 *           folder changes is kept (a journaling file system keeps them in
 *           order);
 *   mixed - each write is kept, dropped or torn, each folder change kept
 *           or dropped, independently;
 *   data  - every write kept, every folder change dropped (long run);
 *   names - every folder change kept, every write dropped (long run: the
 *           "renamed but empty file" of a file system without data
 *           ordering).
 * Sectors are the unit of atomicity (docs/recovery.md, "Torn writes").
 * The parent then opens each image (recovery), and requires: sop_db_check
 * clean, every commit acknowledged before the power failed present (read
 * back and compared with a model, values included), the one in flight all
 * or nothing, a prepared transaction acknowledged as prepared still there
 * (in doubt or committed), and a new commit possible.
 *
 * Plan: every sync-type I/O site (before and after its 1st and a later
 * sync) and every crash point of phase 1, phase 2, rollback, prepared
 * transactions and checkpoints (1st and a later pass), over every workload
 * that reaches it, 4 images each (keep, drop, torn, mixed); a second power
 * loss during the recovery of a first; and a disk that ignores a sync must
 * be caught. The long run adds a third pass and 4 more images per point.
 * The databases live on a tmpfs ($TMPDIR if it is one, else /dev/shm): the
 * simulator needs no real disk, and thousands of small files per case make
 * a real one several times slower - without a tmpfs a reduced plan runs.
 *
 * Seeds: t_seed() gives the base seed; case n, image k uses a seed derived
 * from (base, n, k), printed with any failure. Replay one case with
 * SOP_TEST_SEED=<base> SOP_PL_CASE=<n>. Engine UUIDs are random, so a
 * replay repeats the same operations and choices, not the same names.
 * Other knobs, for investigations: SOP_PL_VERBOSE=1 (a line per image),
 * SOP_PL_RAW=1 (keep a copy of each image as the power left it,
 * <image>.raw), SOP_PL_SECTOR=<bytes> (the unit of tearing), SOP_PL_SHM=0
 * (stay in $TMPDIR).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault.h"
#include "os.h"
#include "t.h"

/* ======================================================================
 * The power-loss simulator
 * ====================================================================== */

#define PL_SECTOR     512u
#define PL_MAX_IMAGES 8
#define PL_FDS        65536
#define PL_EXIT_LOST  42 /* the child lost power and wrote its images */

typedef enum pl_mode { M_KEEP, M_DROP, M_TORN, M_MIXED, M_DATA, M_NAMES, M_COUNT } pl_mode;
static const char *const mode_names[] = {"keep", "drop", "torn", "mixed", "data", "names"};

/* An undurable change to a file's content or size. */
enum { OP_WRITE, OP_SIZE, OP_FALLOC };
typedef struct pl_op {
    int kind;
    uint64_t off, len; /* WRITE, FALLOC: the range; SIZE: len is the new size */
    int fmode;         /* FALLOC: fallocate's mode */
    uint64_t old_size; /* the file's size before */
    uint8_t *data;     /* WRITE: the bytes written */
    uint8_t *old;      /* WRITE: the old_n bytes it overwrote; SIZE: the cut tail */
    uint64_t old_n;
} pl_op;

typedef struct pl_inode {
    ino_t ino;
    char *path; /* where its current content lives: in the database or the shadow */
    pl_op *ops; /* since its last sync, in order */
    size_t nops, capops;
} pl_inode;

/* An undurable change to a folder (paths relative to the root). */
enum { D_CREATE, D_MKDIR, D_UNLINK, D_RMDIR, D_RENAME };
typedef struct pl_dirop {
    int kind;
    char *a, *b;         /* RENAME: a -> b */
    ino_t ino;           /* CREATE */
    bool sync_a, sync_b; /* the folder of a (of b) was fsynced since */
} pl_dirop;

typedef struct pl_ent {
    char *rel;
    bool dir;
    ino_t ino;
} pl_ent;

typedef struct pl_ns {
    pl_ent *e;
    size_t n, cap;
} pl_ns;

typedef enum tr_kind { TR_NONE, TR_SITE, TR_POINT, TR_END } tr_kind;
typedef struct trigger {
    tr_kind kind;
    sop__site site;
    bool sync_only; /* count the site's sync operations, not its calls */
    bool after;     /* right after the event instead of before it */
    unsigned nth;
    sop__point point;
} trigger;

/* Shared with the parent (MAP_SHARED): what the child saw. */
typedef struct pl_shared {
    unsigned long calls[SOP__SITE_COUNT];
    unsigned long syncs[SOP__SITE_COUNT];
    unsigned long hits[SOP__POINT_COUNT];
    int fired;
    char where[512];
} pl_shared;

static pl_shared *SH;

static struct pl_sim {
    bool on;
    const sop__os_ops *real;
    char root[PATH_MAX];
    size_t rootlen;
    char shadow[PATH_MAX];
    unsigned nshadow;
    pl_inode *inodes;
    size_t ninodes, capinodes;
    int *fdmap; /* fd -> inode index + 1; 0: not tracked */
    pl_ns base; /* the durable names at install or at the last syncfs */
    pl_dirop *dirops;
    size_t ndirops, capdirops;
    /* what sites were counted at the previous operation */
    unsigned long last_all, last[SOP__SITE_COUNT];
    int cur; /* the site of the wrapper call in progress */
    bool event;
    trigger tr;
    int nimg;
    pl_mode img_mode[PL_MAX_IMAGES];
    uint64_t img_seed[PL_MAX_IMAGES];
    /* sanity switches: a disk that ignores some syncs (the simulated bug) */
    const char *ignore_sync_suffix; /* fsync/fdatasync of files ending so */
    const char *ignore_dirsync_rel; /* fsync_dir of this folder */
} S;

static _Noreturn void pl_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void pl_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "powerloss simulator: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    _exit(4);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        pl_die("out of memory");
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL)
        pl_die("out of memory");
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

static void join(char *out, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la + 1 + lb + 1 > PATH_MAX)
        pl_die("path too long: %s/%s", a, b);
    memcpy(out, a, la);
    out[la] = '/';
    memcpy(out + la + 1, b, lb + 1);
}

/* vsnprintf into a PATH_MAX buffer; a path that does not fit is fatal. */
static void pathf(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pathf(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_MAX)
        pl_die("path too long: %s...", out);
}

/* The path relative to the root, "" for the root, NULL outside it. */
static const char *rel_of(const char *path)
{
    if (strncmp(path, S.root, S.rootlen) != 0)
        return NULL;
    if (path[S.rootlen] == '\0')
        return "";
    return path[S.rootlen] == '/' ? path + S.rootlen + 1 : NULL;
}

/* Does `rel`'s folder equal `dir` (both relative)? */
static bool in_dir(const char *rel, const char *dir)
{
    const char *slash = strrchr(rel, '/');
    size_t n = slash ? (size_t)(slash - rel) : 0;
    return strlen(dir) == n && strncmp(rel, dir, n) == 0;
}

static bool under(const char *rel, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(rel, dir, n) == 0 && (rel[n] == '\0' || rel[n] == '/');
}

/* ---- inodes ---- */

static pl_inode *inode_find(ino_t ino)
{
    for (size_t i = S.ninodes; i-- > 0;)
        if (S.inodes[i].ino == ino)
            return &S.inodes[i];
    return NULL;
}

static size_t inode_index(ino_t ino, const char *path)
{
    pl_inode *in = inode_find(ino);
    if (in) {
        if (path && strcmp(in->path, path) != 0) {
            free(in->path);
            in->path = xstrdup(path);
        }
        return (size_t)(in - S.inodes);
    }
    if (S.ninodes == S.capinodes) {
        S.capinodes = S.capinodes ? S.capinodes * 2 : 256;
        S.inodes = xrealloc(S.inodes, S.capinodes * sizeof(*S.inodes));
    }
    in = &S.inodes[S.ninodes];
    memset(in, 0, sizeof(*in));
    in->ino = ino;
    in->path = xstrdup(path ? path : "");
    return S.ninodes++;
}

static void op_free(pl_op *op)
{
    free(op->data);
    free(op->old);
}

static void inode_synced(pl_inode *in)
{
    for (size_t i = 0; i < in->nops; i++)
        op_free(&in->ops[i]);
    in->nops = 0;
}

static pl_op *inode_push(pl_inode *in)
{
    if (in->nops == in->capops) {
        in->capops = in->capops ? in->capops * 2 : 8;
        in->ops = xrealloc(in->ops, in->capops * sizeof(*in->ops));
    }
    pl_op *op = &in->ops[in->nops++];
    memset(op, 0, sizeof(*op));
    return op;
}

static pl_inode *inode_of_fd(int fd)
{
    if (fd < 0 || fd >= PL_FDS || S.fdmap[fd] == 0)
        return NULL;
    return &S.inodes[S.fdmap[fd] - 1];
}

/* Reads [off, off+n) of fd's file into a new buffer (fd may be write-only). */
static uint8_t *read_range(int fd, uint64_t off, uint64_t n)
{
    int own = -1;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_ACCMODE) == O_WRONLY) {
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        own = open(proc, O_RDONLY | O_CLOEXEC);
        if (own < 0)
            pl_die("reopen %s: %s", proc, strerror(errno));
        fd = own;
    }
    uint8_t *p = xmalloc((size_t)n);
    uint64_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, (size_t)(n - done), (off_t)(off + done));
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                pl_die("pread: %s", strerror(errno));
            pl_die("short read at %llu", (unsigned long long)(off + done));
        }
        done += (uint64_t)r;
    }
    if (own >= 0)
        close(own);
    return p;
}

static uint64_t fd_size(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        pl_die("fstat: %s", strerror(errno));
    return (uint64_t)st.st_size;
}

/* ---- folder operations ---- */

static void dirop_add(int kind, const char *a, const char *b, ino_t ino)
{
    if (S.ndirops == S.capdirops) {
        S.capdirops = S.capdirops ? S.capdirops * 2 : 256;
        S.dirops = xrealloc(S.dirops, S.capdirops * sizeof(*S.dirops));
    }
    pl_dirop *d = &S.dirops[S.ndirops++];
    memset(d, 0, sizeof(*d));
    d->kind = kind;
    d->a = xstrdup(a);
    d->b = b ? xstrdup(b) : NULL;
    d->ino = ino;
}

static bool dirop_durable(const pl_dirop *d)
{
    return d->sync_a && (d->kind != D_RENAME || d->sync_b);
}

/* ---- name spaces ---- */

static void ns_add(pl_ns *ns, const char *rel, bool dir, ino_t ino)
{
    if (ns->n == ns->cap) {
        ns->cap = ns->cap ? ns->cap * 2 : 256;
        ns->e = xrealloc(ns->e, ns->cap * sizeof(*ns->e));
    }
    ns->e[ns->n++] = (pl_ent){xstrdup(rel), dir, ino};
}

static void ns_free(pl_ns *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->e[i].rel);
    free(ns->e);
    memset(ns, 0, sizeof(*ns));
}

static ssize_t ns_find(const pl_ns *ns, const char *rel)
{
    for (size_t i = 0; i < ns->n; i++)
        if (strcmp(ns->e[i].rel, rel) == 0)
            return (ssize_t)i;
    return -1;
}

static void ns_remove_tree(pl_ns *ns, const char *rel)
{
    size_t m = 0;
    for (size_t i = 0; i < ns->n; i++) {
        if (under(ns->e[i].rel, rel))
            free(ns->e[i].rel);
        else
            ns->e[m++] = ns->e[i];
    }
    ns->n = m;
}

static void ns_apply(pl_ns *ns, const pl_dirop *d)
{
    switch (d->kind) {
    case D_CREATE: {
        ssize_t i = ns_find(ns, d->a);
        if (i < 0)
            ns_add(ns, d->a, false, d->ino);
        else if (!ns->e[i].dir)
            ns->e[i].ino = d->ino; /* its earlier unlink did not reach the disk */
        break;
    }
    case D_MKDIR:
        if (ns_find(ns, d->a) < 0)
            ns_add(ns, d->a, true, 0);
        break;
    case D_UNLINK:
    case D_RMDIR:
        ns_remove_tree(ns, d->a);
        break;
    case D_RENAME: {
        if (ns_find(ns, d->a) < 0)
            break; /* its source never reached the disk */
        ns_remove_tree(ns, d->b);
        size_t la = strlen(d->a), lb = strlen(d->b);
        for (size_t i = 0; i < ns->n; i++) {
            if (!under(ns->e[i].rel, d->a))
                continue;
            const char *rest = ns->e[i].rel + la;
            char *moved = xmalloc(lb + strlen(rest) + 1);
            memcpy(moved, d->b, lb);
            strcpy(moved + lb, rest);
            free(ns->e[i].rel);
            ns->e[i].rel = moved;
        }
        break;
    }
    }
}

static int ent_cmp(const void *x, const void *y)
{
    return strcmp(((const pl_ent *)x)->rel, ((const pl_ent *)y)->rel);
}

/* The durable name space := what the real folder holds now. */
static void scan_into(pl_ns *ns, const char *abs, const char *rel)
{
    DIR *d = opendir(abs);
    if (d == NULL)
        pl_die("opendir %s: %s", abs, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char a[PATH_MAX], r[PATH_MAX];
        join(a, abs, e->d_name);
        if (rel[0])
            join(r, rel, e->d_name);
        else
            pathf(r, "%s", e->d_name);
        struct stat st;
        if (lstat(a, &st) != 0)
            pl_die("lstat %s: %s", a, strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            ns_add(ns, r, true, 0);
            scan_into(ns, a, r);
        } else if (S_ISREG(st.st_mode)) {
            inode_index(st.st_ino, a);
            ns_add(ns, r, false, st.st_ino);
        }
    }
    closedir(d);
}

/* Everything becomes durable (install, syncfs). */
static void all_durable(void)
{
    for (size_t i = 0; i < S.ninodes; i++)
        inode_synced(&S.inodes[i]);
    for (size_t i = 0; i < S.ndirops; i++) {
        free(S.dirops[i].a);
        free(S.dirops[i].b);
    }
    S.ndirops = 0;
    ns_free(&S.base);
    scan_into(&S.base, S.root, "");
}

/* ---- building an image ---- */

typedef struct pl_buf {
    uint8_t *p;
    uint64_t size, cap;
} pl_buf;

static void buf_resize(pl_buf *b, uint64_t n)
{
    if (n > b->cap) {
        uint64_t c = b->cap * 2 > n ? b->cap * 2 : n;
        b->p = xrealloc(b->p, (size_t)c);
        b->cap = c;
    }
    if (n > b->size)
        memset(b->p + b->size, 0, (size_t)(n - b->size));
    b->size = n;
}

static void buf_put(pl_buf *b, uint64_t off, const uint8_t *src, uint64_t n)
{
    if (off + n > b->size)
        buf_resize(b, off + n);
    memcpy(b->p + off, src, (size_t)n);
}

/* 0 drop, 1 keep, 2 torn */
static int decide(pl_mode mode, t_rng *rng)
{
    switch (mode) {
    case M_KEEP:
        return 1;
    case M_DROP:
        return 0;
    case M_TORN:
        return 2;
    case M_DATA:
        return 1;
    case M_NAMES:
        return 0;
    default:
        return (int)t_rng_below(rng, 3);
    }
}

static void op_revert(const pl_op *op, pl_buf *b)
{
    switch (op->kind) {
    case OP_WRITE:
        if (op->old_n)
            memcpy(b->p + op->off, op->old, (size_t)op->old_n);
        buf_resize(b, op->old_size);
        break;
    case OP_SIZE:
        buf_resize(b, op->old_size);
        if (op->old_n)
            memcpy(b->p + op->len, op->old, (size_t)op->old_n);
        break;
    default:
        buf_resize(b, op->old_size);
        break;
    }
}

/* The unit a write is torn at: SOP_PL_SECTOR (for experiments), else 512. */
static uint64_t pl_sector = PL_SECTOR;

static void op_replay(const pl_op *op, pl_mode mode, t_rng *rng, pl_buf *b)
{
    int d = decide(mode, rng);
    if (op->kind != OP_WRITE) {
        if (d == 2)
            d = (int)t_rng_below(rng, 2);
        if (d == 0)
            return;
        if (op->kind == OP_SIZE)
            buf_resize(b, op->len);
        else if (!(op->fmode & FALLOC_FL_KEEP_SIZE) && op->off + op->len > b->size)
            buf_resize(b, op->off + op->len);
        return;
    }
    if (d == 1) {
        buf_put(b, op->off, op->data, op->len);
    } else if (d == 2) {
        uint64_t end = op->off + op->len;
        for (uint64_t s = op->off; s < end;) {
            uint64_t e = (s / pl_sector + 1) * pl_sector;
            if (e > end)
                e = end;
            if (t_rng_below(rng, 2))
                buf_put(b, s, op->data + (s - op->off), e - s);
            s = e;
        }
    }
}

static void read_file(const char *path, pl_buf *b)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        pl_die("open %s: %s", path, strerror(errno));
    uint64_t n = fd_size(fd);
    b->size = 0;
    buf_resize(b, n);
    uint64_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, b->p + done, (size_t)(n - done), (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            pl_die("read %s failed", path);
        done += (uint64_t)r;
    }
    close(fd);
}

static void write_file(const char *path, const pl_buf *b)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        pl_die("create %s: %s", path, strerror(errno));
    static const uint8_t zero[4096];
    for (uint64_t off = 0; off < b->size; off += sizeof(zero)) {
        uint64_t n = b->size - off < sizeof(zero) ? b->size - off : sizeof(zero);
        if (memcmp(b->p + off, zero, (size_t)n) == 0)
            continue; /* sparse: preallocated logs are mostly zeros */
        if (pwrite(fd, b->p + off, (size_t)n, (off_t)off) != (ssize_t)n)
            pl_die("write %s: %s", path, strerror(errno));
    }
    if (ftruncate(fd, (off_t)b->size) != 0)
        pl_die("truncate %s: %s", path, strerror(errno));
    close(fd);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes the disk as a power failure now would leave it into `img`. Pure:
 * the simulator's state is unchanged, so several images can be built. */
static void pl_build_image(const char *img, pl_mode mode, uint64_t seed)
{
    t_rng rng;
    t_rng_seed(&rng, seed);
    pl_ns ns = {0};
    for (size_t i = 0; i < S.base.n; i++)
        ns_add(&ns, S.base.e[i].rel, S.base.e[i].dir, S.base.e[i].ino);
    size_t pending = 0;
    for (size_t i = 0; i < S.ndirops; i++)
        pending += !dirop_durable(&S.dirops[i]);
    size_t cut = (size_t)t_rng_below(&rng, pending + 1), seen = 0;
    for (size_t i = 0; i < S.ndirops; i++) {
        const pl_dirop *d = &S.dirops[i];
        bool keep = true;
        if (!dirop_durable(d)) {
            keep = mode == M_KEEP || mode == M_NAMES  ? true
                   : mode == M_DROP || mode == M_DATA ? false
                   : mode == M_TORN                   ? seen < cut
                                                      : t_rng_below(&rng, 2) == 1;
            seen++;
        }
        if (keep)
            ns_apply(&ns, d);
    }
    if (ns.n > 1)
        qsort(ns.e, ns.n, sizeof(*ns.e), ent_cmp);
    rm_rf(img);
    if (mkdir(img, 0700) != 0)
        pl_die("mkdir %s: %s", img, strerror(errno));
    pl_buf b = {0};
    for (size_t i = 0; i < ns.n; i++) {
        const pl_ent *e = &ns.e[i];
        char path[PATH_MAX];
        join(path, img, e->rel);
        const char *slash = strrchr(e->rel, '/');
        if (slash) { /* its folder must have survived */
            char parent[PATH_MAX];
            pathf(parent, "%s", path);
            parent[strlen(img) + 1 + (size_t)(slash - e->rel)] = '\0';
            struct stat st;
            if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode))
                continue;
        }
        if (e->dir) {
            if (mkdir(path, 0700) != 0)
                pl_die("mkdir %s: %s", path, strerror(errno));
            continue;
        }
        pl_inode *in = inode_find(e->ino);
        if (in == NULL)
            pl_die("no inode %llu for %s", (unsigned long long)e->ino, e->rel);
        read_file(in->path, &b);
        for (size_t k = in->nops; k-- > 0;)
            op_revert(&in->ops[k], &b);
        for (size_t k = 0; k < in->nops; k++)
            op_replay(&in->ops[k], mode, &rng, &b);
        write_file(path, &b);
    }
    free(b.p);
    ns_free(&ns);
}

/* ---- the trigger ---- */

static void images_path(char *out, int k)
{
    pathf(out, "%s.img%d", S.root, k);
}

static void snapshot_hits(void)
{
    for (int p = 0; p < SOP__POINT_COUNT; p++)
        SH->hits[p] = sop__fault_point_hits((sop__point)p);
}

static _Noreturn void fire(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fire(const char *fmt, ...)
{
    S.on = false;
    snapshot_hits();
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(SH->where, sizeof(SH->where), fmt, ap);
    va_end(ap);
    for (int k = 0; k < S.nimg; k++) {
        char img[PATH_MAX];
        images_path(img, k);
        pl_build_image(img, S.img_mode[k], S.img_seed[k]);
    }
    SH->fired = 1;
    _exit(PL_EXIT_LOST);
}

enum { C_ANY, C_SYNC };

static const char *site_name(int s)
{
    return s >= 0 ? sop__fault_site_name((sop__site)s) : "(none)";
}

/* At the start of every operation: which wrapper call it belongs to, the
 * counts, and whether the power fails before it. */
static void enter(int cls, const char *opname, const char *what)
{
    S.event = false;
    if (!S.on)
        return;
    unsigned long all = sop__fault_site_calls(SOP__SITE_ALL);
    bool newcall = false;
    if (all != S.last_all) {
        S.last_all = all;
        newcall = true;
        for (int s = 0; s < SOP__SITE_COUNT; s++) {
            unsigned long c = sop__fault_site_calls((sop__site)s);
            if (c != S.last[s]) {
                S.last[s] = c;
                S.cur = s;
            }
        }
    }
    if (S.cur < 0)
        return;
    if (newcall)
        SH->calls[S.cur]++;
    if (cls == C_SYNC)
        SH->syncs[S.cur]++;
    const trigger *t = &S.tr;
    if (t->kind == TR_SITE && (int)t->site == S.cur) {
        unsigned long c = 0;
        if (t->sync_only && cls == C_SYNC)
            c = SH->syncs[S.cur];
        else if (!t->sync_only && newcall)
            c = SH->calls[S.cur];
        if (c == t->nth) {
            if (!t->after)
                fire("before %s of %s (%s #%u) %s", opname, what ? what : "-", site_name(S.cur),
                     t->nth, t->sync_only ? "sync" : "call");
            S.event = true;
        }
    } else if (t->kind == TR_POINT && sop__fault_point_hits(t->point) >= t->nth) {
        fire("at %s #%u (before %s of %s, site %s)", sop__fault_point_name(t->point), t->nth,
             opname, what ? what : "-", site_name(S.cur));
    }
}

/* At the end of an operation: the power fails right after it? */
static void leave(const char *opname, const char *what)
{
    if (S.on && S.event)
        fire("after %s of %s (%s #%u %s)", opname, what ? what : "-", site_name(S.cur), S.tr.nth,
             S.tr.sync_only ? "sync" : "call");
}

/* ---- the operations ---- */

static int pl_open(const char *path, int flags, mode_t mode)
{
    enter(C_ANY, "open", path);
    const char *rel = rel_of(path);
    struct stat st;
    bool existed = rel && stat(path, &st) == 0;
    pl_inode *trunc = NULL;
    if (existed && (flags & O_TRUNC) && S_ISREG(st.st_mode) && (flags & O_ACCMODE) != O_RDONLY) {
        trunc = &S.inodes[inode_index(st.st_ino, path)];
        pl_op *op = inode_push(trunc);
        op->kind = OP_SIZE;
        op->len = 0;
        op->old_size = (uint64_t)st.st_size;
        int rfd = open(path, O_RDONLY | O_CLOEXEC);
        if (rfd < 0)
            pl_die("open %s: %s", path, strerror(errno));
        op->old = read_range(rfd, 0, op->old_size);
        op->old_n = op->old_size;
        close(rfd);
    }
    int fd = S.real->open(path, flags, mode);
    int e = errno;
    if (fd < 0) {
        if (trunc) { /* nothing happened */
            op_free(&trunc->ops[--trunc->nops]);
        }
        errno = e;
        return fd;
    }
    if (rel) {
        struct stat now;
        if (fstat(fd, &now) != 0)
            pl_die("fstat: %s", strerror(errno));
        if (S_ISREG(now.st_mode)) {
            if (fd >= PL_FDS)
                pl_die("descriptor %d beyond the simulator's table", fd);
            S.fdmap[fd] = (int)inode_index(now.st_ino, path) + 1;
            if (!existed)
                dirop_add(D_CREATE, rel, NULL, now.st_ino);
        }
    }
    leave("open", path);
    return fd;
}

static int pl_close(int fd)
{
    enter(C_ANY, "close", NULL);
    if (fd >= 0 && fd < PL_FDS)
        S.fdmap[fd] = 0;
    int rc = S.real->close(fd);
    int e = errno;
    leave("close", NULL);
    errno = e;
    return rc;
}

static ssize_t pl_pread(int fd, void *buf, size_t n, off_t off)
{
    pl_inode *in = inode_of_fd(fd);
    enter(C_ANY, "pread", in ? in->path : NULL);
    ssize_t r = S.real->pread(fd, buf, n, off);
    int e = errno;
    leave("pread", in ? in->path : NULL);
    errno = e;
    return r;
}

static ssize_t pl_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    pl_inode *in = inode_of_fd(fd);
    enter(C_ANY, "pwrite", in ? in->path : NULL);
    uint64_t old_size = 0, old_n = 0;
    uint8_t *old = NULL;
    if (in) {
        old_size = fd_size(fd);
        if ((uint64_t)off < old_size) {
            old_n = old_size - (uint64_t)off < n ? old_size - (uint64_t)off : n;
            old = read_range(fd, (uint64_t)off, old_n);
        }
    }
    ssize_t r = S.real->pwrite(fd, buf, n, off);
    int e = errno;
    if (in && r > 0) {
        pl_op *op = inode_push(in);
        op->kind = OP_WRITE;
        op->off = (uint64_t)off;
        op->len = (uint64_t)r;
        op->old_size = old_size;
        op->data = xmalloc((size_t)r);
        memcpy(op->data, buf, (size_t)r);
        op->old = old;
        op->old_n = old_n < (uint64_t)r ? old_n : (uint64_t)r;
        old = NULL;
    }
    free(old);
    leave("pwrite", in ? in->path : NULL);
    errno = e;
    return r;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* fsync and fdatasync: the file's content and size are on the disk (its
 * name is not: that takes its folder's fsync). The real call is skipped -
 * the simulator is the disk - which also keeps the test fast. */
static int file_sync(int fd, const char *opname)
{
    pl_inode *in = inode_of_fd(fd);
    enter(C_SYNC, opname, in ? in->path : NULL);
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -1; /* EBADF as the real call */
    if (in && !(S.ignore_sync_suffix && ends_with(in->path, S.ignore_sync_suffix)))
        inode_synced(in);
    leave(opname, in ? in->path : NULL);
    return 0;
}

static int pl_fsync(int fd)
{
    return file_sync(fd, "fsync");
}

static int pl_fdatasync(int fd)
{
    return file_sync(fd, "fdatasync");
}

static int pl_syncfs(int fd)
{
    enter(C_SYNC, "syncfs", S.root);
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -1;
    if (S.on)
        all_durable();
    leave("syncfs", S.root);
    return 0;
}

static int pl_ftruncate(int fd, off_t len)
{
    pl_inode *in = inode_of_fd(fd);
    enter(C_ANY, "ftruncate", in ? in->path : NULL);
    uint64_t old_size = in ? fd_size(fd) : 0;
    uint8_t *old = NULL;
    if (in && (uint64_t)len < old_size)
        old = read_range(fd, (uint64_t)len, old_size - (uint64_t)len);
    int rc = S.real->ftruncate(fd, len);
    int e = errno;
    if (in && rc == 0) {
        pl_op *op = inode_push(in);
        op->kind = OP_SIZE;
        op->len = (uint64_t)len;
        op->old_size = old_size;
        op->old = old;
        op->old_n = old ? old_size - (uint64_t)len : 0;
        old = NULL;
    }
    free(old);
    leave("ftruncate", in ? in->path : NULL);
    errno = e;
    return rc;
}

static int pl_fallocate(int fd, int mode, off_t off, off_t len)
{
    pl_inode *in = inode_of_fd(fd);
    enter(C_ANY, "fallocate", in ? in->path : NULL);
    if (in && (mode & ~FALLOC_FL_KEEP_SIZE) != 0)
        pl_die("fallocate mode %d is not simulated", mode);
    uint64_t old_size = in ? fd_size(fd) : 0;
    int rc = S.real->fallocate(fd, mode, off, len);
    int e = errno;
    if (in && rc == 0) {
        pl_op *op = inode_push(in);
        op->kind = OP_FALLOC;
        op->fmode = mode;
        op->off = (uint64_t)off;
        op->len = (uint64_t)len;
        op->old_size = old_size;
    }
    leave("fallocate", in ? in->path : NULL);
    errno = e;
    return rc;
}

/* Keeps a file that is about to lose its last name readable (its last
 * durable content may still be what the disk holds after a power loss). */
static void to_shadow(const char *path, ino_t ino)
{
    char s[PATH_MAX];
    pathf(s, "%s/%u", S.shadow, S.nshadow++);
    if (link(path, s) != 0)
        pl_die("link %s %s: %s", path, s, strerror(errno));
    inode_index(ino, s);
}

static int pl_rename(const char *from, const char *to)
{
    enter(C_ANY, "rename", from);
    const char *ra = rel_of(from), *rb = rel_of(to);
    struct stat sf, st;
    bool have_from = ra && lstat(from, &sf) == 0;
    bool replaces =
        rb && have_from && lstat(to, &st) == 0 && S_ISREG(st.st_mode) && st.st_ino != sf.st_ino;
    if (replaces)
        to_shadow(to, st.st_ino);
    int rc = S.real->rename(from, to);
    int e = errno;
    if (rc == 0 && ra && rb) {
        dirop_add(D_RENAME, ra, rb, 0);
        if (S_ISREG(sf.st_mode)) {
            inode_index(sf.st_ino, to);
        } else { /* a folder: every file under it moved */
            size_t lf = strlen(from);
            for (size_t i = 0; i < S.ninodes; i++) {
                pl_inode *in = &S.inodes[i];
                if (strncmp(in->path, from, lf) != 0 || in->path[lf] != '/')
                    continue;
                char moved[PATH_MAX];
                join(moved, to, in->path + lf + 1);
                free(in->path);
                in->path = xstrdup(moved);
            }
        }
    } else if (rc == 0 && (ra || rb)) {
        pl_die("rename across the database's border: %s -> %s", from, to);
    }
    leave("rename", from);
    errno = e;
    return rc;
}

static int pl_unlink(const char *path)
{
    enter(C_ANY, "unlink", path);
    const char *rel = rel_of(path);
    struct stat st;
    bool tracked = rel && lstat(path, &st) == 0 && S_ISREG(st.st_mode);
    if (tracked)
        to_shadow(path, st.st_ino);
    int rc = S.real->unlink(path);
    int e = errno;
    if (rc == 0 && rel)
        dirop_add(D_UNLINK, rel, NULL, 0);
    leave("unlink", path);
    errno = e;
    return rc;
}

static int pl_mkdir(const char *path, mode_t mode)
{
    enter(C_ANY, "mkdir", path);
    int rc = S.real->mkdir(path, mode);
    int e = errno;
    const char *rel = rel_of(path);
    if (rc == 0 && rel)
        dirop_add(D_MKDIR, rel, NULL, 0);
    leave("mkdir", path);
    errno = e;
    return rc;
}

static int pl_rmdir(const char *path)
{
    enter(C_ANY, "rmdir", path);
    int rc = S.real->rmdir(path);
    int e = errno;
    const char *rel = rel_of(path);
    if (rc == 0 && rel)
        dirop_add(D_RMDIR, rel, NULL, 0);
    leave("rmdir", path);
    errno = e;
    return rc;
}

static int pl_fsync_dir(const char *path)
{
    enter(C_SYNC, "fsync_dir", path);
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    char norm[PATH_MAX];
    pathf(norm, "%s", path);
    for (size_t n = strlen(norm); n > 1 && norm[n - 1] == '/'; n--)
        norm[n - 1] = '\0';
    const char *rel = rel_of(norm);
    if (rel && S.on && !(S.ignore_dirsync_rel && strcmp(rel, S.ignore_dirsync_rel) == 0)) {
        for (size_t i = 0; i < S.ndirops; i++) {
            pl_dirop *d = &S.dirops[i];
            if (!d->sync_a && in_dir(d->a, rel))
                d->sync_a = true;
            if (d->kind == D_RENAME && !d->sync_b && in_dir(d->b, rel))
                d->sync_b = true;
        }
    }
    leave("fsync_dir", path);
    return 0;
}

static int pl_lock(int fd, int type, off_t off, off_t len, bool wait)
{
    enter(C_ANY, "lock", NULL);
    int rc = S.real->lock(fd, type, off, len, wait);
    int e = errno;
    leave("lock", NULL);
    errno = e;
    return rc;
}

static int pl_fstat(int fd, struct stat *st)
{
    enter(C_ANY, "fstat", NULL);
    int rc = S.real->fstat(fd, st);
    int e = errno;
    leave("fstat", NULL);
    errno = e;
    return rc;
}

static int pl_stat(const char *path, struct stat *st)
{
    enter(C_ANY, "stat", path);
    int rc = S.real->stat(path, st);
    int e = errno;
    leave("stat", path);
    errno = e;
    return rc;
}

static int pl_opendir(const char *path, void **dir_out)
{
    enter(C_ANY, "opendir", path);
    int rc = S.real->opendir(path, dir_out);
    int e = errno;
    leave("opendir", path);
    errno = e;
    return rc;
}

static int pl_readdir(void *dir, const char **name_out)
{
    enter(C_ANY, "readdir", NULL);
    int rc = S.real->readdir(dir, name_out);
    int e = errno;
    leave("readdir", NULL);
    errno = e;
    return rc;
}

static int pl_closedir(void *dir)
{
    enter(C_ANY, "closedir", NULL);
    int rc = S.real->closedir(dir);
    int e = errno;
    leave("closedir", NULL);
    errno = e;
    return rc;
}

static const sop__os_ops pl_ops = {
    .open = pl_open,
    .close = pl_close,
    .pread = pl_pread,
    .pwrite = pl_pwrite,
    .fsync = pl_fsync,
    .fdatasync = pl_fdatasync,
    .syncfs = pl_syncfs,
    .ftruncate = pl_ftruncate,
    .fallocate = pl_fallocate,
    .rename = pl_rename,
    .unlink = pl_unlink,
    .mkdir = pl_mkdir,
    .rmdir = pl_rmdir,
    .fsync_dir = pl_fsync_dir,
    .lock = pl_lock,
    .fstat = pl_fstat,
    .stat = pl_stat,
    .opendir = pl_opendir,
    .readdir = pl_readdir,
    .closedir = pl_closedir,
};

static void pl_shared_init(void)
{
    if (SH == NULL) {
        void *p = mmap(NULL, sizeof(pl_shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED)
            t_fail(__FILE__, __LINE__, "mmap: %s", strerror(errno));
        SH = p;
    }
    memset(SH, 0, sizeof(*SH));
}

/* Takes everything under root as durable and installs the simulator. */
static void pl_install(const char *root, const trigger *tr)
{
    S.real = sop__os_default_ops();
    pathf(S.root, "%s", root);
    S.rootlen = strlen(S.root);
    pathf(S.shadow, "%s.shadow", root);
    rm_rf(S.shadow);
    if (mkdir(S.shadow, 0700) != 0)
        pl_die("mkdir %s: %s", S.shadow, strerror(errno));
    if (S.fdmap == NULL)
        S.fdmap = xmalloc(sizeof(int) * PL_FDS);
    memset(S.fdmap, 0, sizeof(int) * PL_FDS);
    S.tr = tr ? *tr : (trigger){.kind = TR_NONE};
    all_durable();
    S.last_all = sop__fault_site_calls(SOP__SITE_ALL);
    for (int s = 0; s < SOP__SITE_COUNT; s++)
        S.last[s] = sop__fault_site_calls((sop__site)s);
    S.cur = -1;
    S.on = true;
    sop__os_set_ops(&pl_ops);
}

/* Forgets everything (the in-process self-test). */
static void pl_uninstall(void)
{
    S.on = false;
    sop__os_set_ops(NULL);
    for (size_t i = 0; i < S.ninodes; i++) {
        inode_synced(&S.inodes[i]);
        free(S.inodes[i].ops);
        free(S.inodes[i].path);
    }
    free(S.inodes);
    for (size_t i = 0; i < S.ndirops; i++) {
        free(S.dirops[i].a);
        free(S.dirops[i].b);
    }
    free(S.dirops);
    ns_free(&S.base);
    free(S.fdmap);
    memset(&S, 0, sizeof(S));
}

/* ======================================================================
 * Workloads (as test_crash.c) and their models
 * ====================================================================== */

static sop_err err;

enum {
    W_INSERTS,
    W_UPDATES,
    W_DELETES,
    W_MIXED,
    W_ACTIVE,
    W_PREPARED,
    W_ACTIVE_LATE,
    W_INSERTS_LATE,
    W_COUNT
};
static const char *const wnames[] = {"inserts",
                                     "updates",
                                     "deletes",
                                     "mixed",
                                     "active",
                                     "prepared",
                                     "active-late-checkpoint",
                                     "inserts-late-checkpoint"};
#define NTXN     12
#define ACK_PREP 1000 /* ack ACK_PREP + i: transaction i is prepared */

typedef struct storedef {
    const char *name;
    uint32_t slot;
    bool unique;
    sop_value_placement vp;
} storedef;

static int nstores(int w)
{
    return w == W_MIXED ? 2 : 1;
}

static storedef store_of(int w, int s)
{
    if (w == W_MIXED && s == 1)
        return (storedef){"second", 4, false, SOP_VALUES_SEPARATE};
    if (w == W_ACTIVE || w == W_ACTIVE_LATE)
        return (storedef){"first", 4, true, SOP_VALUES_ACTIVE};
    return (storedef){"first", 8, true, SOP_VALUES_IN_NODE};
}

/* The "late" workloads only checkpoint when they close (and start with a
 * small transaction): everything since the database was opened rests on
 * the log. The others use small logs, so checkpoints (syncfs, mark, log
 * reset) happen within the workload. */
static bool late(int w)
{
    return w == W_ACTIVE_LATE || w == W_INSERTS_LATE;
}

static uint64_t checkpoint_bytes(int w)
{
    return late(w) ? 64u << 20 : 24 * 1024;
}

static bool commits(int i)
{
    return i % 5 != 4;
}

static bool apply_txn(int w, int i, sop_btree **trees)
{
    t_rng rng;
    t_rng_seed(&rng, 1000003u * (uint64_t)w + (uint64_t)i);
    int n = i == 0 ? (late(w) ? 40 : 300) : 30;
    for (int s = 0; s < nstores(w); s++) {
        for (int k = 0; k < n; k++) {
            char key[32], val[64];
            uint64_t r = t_rng_below(&rng, 1000);
            int kl = snprintf(key, sizeof(key), "k%06u", (unsigned)(i == 0 ? (uint64_t)k * 3 : r));
            int vl = snprintf(val, sizeof(val), "v%d.%d.%u", i, k, (unsigned)t_rng_below(&rng, 99));
            uint64_t op = i == 0 ? 0 : t_rng_below(&rng, 10);
            sop_rc rc;
            if (w == W_DELETES && i > 0)
                op = 9;
            if (w == W_UPDATES && i > 0)
                op = 5;
            if (op < 5)
                rc = sop_btree_add(trees[s], key, (size_t)kl, val, (size_t)vl, NULL, &err);
            else if (op < 8)
                rc = sop_btree_upsert(trees[s], key, (size_t)kl, val, (size_t)vl, NULL, &err);
            else
                rc = sop_btree_remove(trees[s], key, (size_t)kl, &err);
            CHECK_MSG(rc == SOP_OK || rc == SOP_EXISTS || rc == SOP_NOTFOUND, "op: %s %s",
                      sop_rc_name(rc), err.msg);
        }
    }
    return commits(i);
}

static void build_model(int w, int upto, sop_btree **model)
{
    for (int s = 0; s < nstores(w); s++) {
        storedef d = store_of(w, s);
        sop_store_options o;
        sop_store_options_init(&o);
        o.slot_length = d.slot;
        o.is_unique = d.unique;
        CHECK_OK(sop_btree_open_memory(&o, &model[s], &err), &err);
    }
    for (int i = 0; i < upto; i++)
        if (commits(i))
            apply_txn(w, i, model);
}

static sop_rc open_db(const char *dir, int w, sop_db **db)
{
    sop_db_options o;
    sop_db_options_init(&o);
    o.checkpoint_bytes = checkpoint_bytes(w);
    return sop_db_open(dir, &o, db, &err);
}

static void send_ack(int fd, int32_t ack)
{
    if (write(fd, &ack, sizeof(ack)) != sizeof(ack))
        _exit(3);
}

/* The child: power-loss simulator on, run the workload, acknowledge. */
static void child_run(const char *dir, int w, int fd, const trigger *tr)
{
    sop__fault_reset();
    pl_install(dir, tr);
    sop_db *db = NULL;
    CHECK_OK(open_db(dir, w, &db), &err);
    for (int i = 0; i < NTXN; i++) {
        sop_txn *t;
        CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
        sop_btree *trees[2];
        for (int s = 0; s < nstores(w); s++) {
            storedef d = store_of(w, s);
            if (i == 0) {
                sop_store_options o;
                sop_store_options_init(&o);
                o.slot_length = d.slot;
                o.is_unique = d.unique;
                o.value_placement = d.vp;
                CHECK_OK(sop_store_create(t, d.name, &o, &trees[s], &err), &err);
            } else {
                CHECK_OK(sop_store_open(t, d.name, &trees[s], &err), &err);
            }
        }
        bool commit = apply_txn(w, i, trees);
        if (!commit) {
            CHECK_OK(sop_txn_rollback(t, &err), &err);
        } else if (w == W_PREPARED && i > 0) {
            uint8_t txid[16];
            CHECK_OK(sop_txn_prepare(t, "powerloss-test", txid, &err), &err);
            send_ack(fd, ACK_PREP + i);
            CHECK_OK(sop_db_commit_prepared(db, txid, &err), &err);
        } else {
            CHECK_OK(sop_txn_commit(t, &err), &err);
        }
        sop_txn_free(t);
        send_ack(fd, i);
    }
    if (S.tr.kind == TR_END)
        fire("after the workload, before close");
    sop_db_close(db);
    S.on = false;
    if (S.tr.kind == TR_POINT && sop__fault_point_hits(S.tr.point) >= S.tr.nth)
        fire("at %s #%u (no I/O after it)", sop__fault_point_name(S.tr.point), S.tr.nth);
    snapshot_hits();
}

/* ======================================================================
 * Verification of one image
 * ====================================================================== */

static char why[2048];

static const char *failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *failf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return why;
}

/* 1 same, 0 different, -1 could not read (why set) */
static int same_contents(sop_btree *real, sop_btree *model)
{
    sop_cursor *a, *b;
    if (sop_cursor_open(real, &a, &err) != SOP_OK) {
        failf("cursor: %s", err.msg);
        return -1;
    }
    CHECK_OK(sop_cursor_open(model, &b, &err), &err);
    sop_rc ra = sop_cursor_first(a, &err);
    if (ra != SOP_OK && ra != SOP_NOTFOUND) {
        failf("reading back: %s", err.msg);
        sop_cursor_close(a);
        sop_cursor_close(b);
        return -1;
    }
    sop_rc rb = sop_cursor_first(b, &err);
    int same = 1;
    while (ra == SOP_OK && rb == SOP_OK) {
        sop_item x, y;
        if (sop_cursor_item(a, &x, &err) != SOP_OK) {
            failf("reading back: %s", err.msg);
            same = -1;
            break;
        }
        CHECK_OK(sop_cursor_item(b, &y, &err), &err);
        if (x.key_len != y.key_len || memcmp(x.key, y.key, x.key_len) != 0 ||
            x.value_len != y.value_len || memcmp(x.value, y.value, x.value_len) != 0) {
            same = 0;
            break;
        }
        ra = sop_cursor_next(a, &err);
        if (ra != SOP_OK && ra != SOP_NOTFOUND) {
            failf("reading back: %s", err.msg);
            same = -1;
            break;
        }
        rb = sop_cursor_next(b, &err);
    }
    if (same == 1 && (ra == SOP_OK) != (rb == SOP_OK))
        same = 0;
    sop_cursor_close(a);
    sop_cursor_close(b);
    return same;
}

typedef struct problems {
    int n;
    char first[3][300];
} problems;

static void on_problem(void *ctx, const char *msg)
{
    problems *p = ctx;
    if (p->n < 3)
        snprintf(p->first[p->n], sizeof(p->first[0]), "%s", msg);
    p->n++;
}

typedef struct txids {
    int n;
    uint8_t id[8][16];
} txids;

static void on_prepared(void *ctx, const sop_prepared_info *info)
{
    txids *x = ctx;
    if (x->n < 8)
        memcpy(x->id[x->n], info->txid, 16);
    x->n++;
}

/* NULL when the image recovers to a state allowed by the acknowledgements:
 * 0..last_ack committed (rolled-back ones absent), last_ack + 1 all or
 * nothing - all if it was acknowledged as prepared. Else why not. */
static const char *verify(const char *dir, int w, int last_ack, int last_prep)
{
    const char *bad = NULL;
    sop_db *db = NULL;
    sop_txn *t = NULL;
    if (open_db(dir, w, &db) != SOP_OK)
        return failf("open (recovery): %s %s", sop_rc_name(err.code), err.msg);
    if (w == W_PREPARED) { /* whatever is in doubt: commit it */
        txids x = {0};
        if (sop_db_list_prepared(db, on_prepared, &x, &err) != SOP_OK) {
            bad = failf("list prepared: %s", err.msg);
            goto out;
        }
        if (x.n > 1) {
            bad = failf("%d prepared transactions in doubt, at most 1 expected", x.n);
            goto out;
        }
        for (int i = 0; i < x.n; i++)
            if (sop_db_commit_prepared(db, x.id[i], &err) != SOP_OK) {
                bad = failf("commit prepared: %s", err.msg);
                goto out;
            }
    }
    problems pr = {0};
    sop_check_report rep;
    if (sop_db_check(db, on_problem, &pr, &rep, &err) != SOP_OK) {
        bad = failf("check: %s (%d problems: %s | %s | %s)", err.msg, pr.n, pr.first[0],
                    pr.first[1], pr.first[2]);
        goto out;
    }
    if (sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err) != SOP_OK) {
        bad = failf("begin: %s", err.msg);
        goto out;
    }
    int nst = nstores(w);
    sop_btree *real[2];
    bool exists = true;
    for (int s = 0; s < nst; s++) {
        sop_rc rc = sop_store_open(t, store_of(w, s).name, &real[s], &err);
        if (rc == SOP_NOTFOUND)
            exists = false;
        else if (rc != SOP_OK) {
            bad = failf("store open: %s", err.msg);
            goto out;
        }
    }
    bool prepared_in_flight = last_prep == last_ack + 1;
    bool matched = false;
    int lo = last_ack + 1 + (prepared_in_flight ? 1 : 0);
    for (int upto = lo; upto <= last_ack + 2 && upto <= NTXN && !matched; upto++) {
        if (upto == 0) {
            matched = !exists;
            continue;
        }
        if (!exists)
            continue;
        sop_btree *model[2];
        build_model(w, upto, model);
        bool all = true;
        for (int s = 0; s < nst && all; s++) {
            int r = same_contents(real[s], model[s]);
            if (r < 0) {
                for (int k = 0; k < nst; k++)
                    sop_btree_close(model[k]);
                bad = why;
                goto out;
            }
            all = r == 1;
        }
        for (int s = 0; s < nst; s++)
            sop_btree_close(model[s]);
        matched = all;
    }
    if (!matched) {
        bad = failf("the stores (%s) match neither the acknowledged commits "
                    "(0..%d) nor one more%s",
                    exists ? "present" : "missing", last_ack,
                    prepared_in_flight ? " (which was acknowledged as prepared)" : "");
        goto out;
    }
    sop_txn_free(t);
    t = NULL;
    if (exists) { /* writable again */
        sop_btree *bt;
        if (sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err) != SOP_OK ||
            sop_store_open(t, store_of(w, 0).name, &bt, &err) != SOP_OK ||
            sop_btree_upsert(bt, "after-powerloss", 15, "yes", 3, NULL, &err) != SOP_OK ||
            sop_txn_commit(t, &err) != SOP_OK) {
            bad = failf("new commit: %s", err.msg);
            goto out;
        }
    }
out:
    sop_txn_free(t);
    sop_db_close(db);
    return bad;
}

/* ======================================================================
 * Running cases
 * ====================================================================== */

/* The parent's table: syncs do nothing (the parent only verifies; real
 * fsyncs would make the suite slow without testing anything). */
static int fast_fsync(int fd)
{
    struct stat st;
    return fstat(fd, &st);
}

static int fast_fsync_dir(const char *path)
{
    struct stat st;
    return stat(path, &st);
}

static sop__os_ops fast_ops;

static void use_fast_ops(void)
{
    fast_ops = *sop__os_default_ops();
    fast_ops.fsync = fast_fsync;
    fast_ops.fdatasync = fast_fsync;
    fast_ops.syncfs = fast_fsync;
    fast_ops.fsync_dir = fast_fsync_dir;
    sop__os_set_ops(&fast_ops);
}

/* Where the databases and images go: the test's $TMPDIR folder if it is a
 * tmpfs, else a folder of its own in /dev/shm when that is a tmpfs with
 * room - the simulator needs no real disk, and a real one makes the suite
 * several times slower (thousands of small files per case). */
static char work[PATH_MAX];
static bool work_is_shm;
/* Not on a tmpfs (and not the long run): the reduced plan - three of the
 * workloads (between them they reach every site and point), one pass per
 * site or point and three modes - to stay near a minute on a real disk. */
static bool quick;

static bool is_tmpfs(const char *path)
{
    struct statfs fs;
    return statfs(path, &fs) == 0 && fs.f_type == 0x01021994; /* TMPFS_MAGIC */
}

static void choose_work(void)
{
    const char *t = t_tmpdir();
    work_is_shm = false;
    pathf(work, "%s", t);
    quick = !t_long() && !is_tmpfs(t);
    struct statvfs vfs;
    const char *use_shm = getenv("SOP_PL_SHM"); /* "0": stay in $TMPDIR */
    if ((use_shm && strcmp(use_shm, "0") == 0) || is_tmpfs(t) || !is_tmpfs("/dev/shm") ||
        statvfs("/dev/shm", &vfs) != 0 || (uint64_t)vfs.f_bavail * vfs.f_frsize < (256ull << 20)) {
        if (quick)
            printf("#   %s is not a tmpfs: reduced plan (set TMPDIR to a tmpfs, or "
                   "run the "
                   "long suite, for the whole one)\n",
                   t);
        return;
    }
    char shm[] = "/dev/shm/soptest-powerloss.XXXXXX";
    if (mkdtemp(shm) == NULL)
        return;
    pathf(work, "%s", shm);
    work_is_shm = true;
    quick = false;
    printf("#   working in %s (tmpfs)\n", work);
}

/* The workloads that find their database opened (and closed) once before:
 * its lock file and folders durable. The others start from sop_db_init. */
static bool preopened(int w)
{
    return w == W_UPDATES || w == W_MIXED || w == W_PREPARED || late(w);
}

static const char *new_dir(int w)
{
    static char dir[PATH_MAX];
    static int n;
    pathf(dir, "%s/pl%d", work, n++);
    CHECK_OK(sop_db_init(dir, NULL, &err), &err);
    if (preopened(w)) {
        sop_db *db;
        CHECK_OK(open_db(dir, w, &db), &err);
        sop_db_close(db);
    }
    return dir;
}

typedef struct run_result {
    int status;
    int last_ack, last_prep;
} run_result;

/* Forks the workload child with the simulator; images as configured. */
static void run_child(const char *dir, int w, const trigger *tr, run_result *out)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pl_shared_init();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        t_in_child();
        close(p[0]);
        child_run(dir, w, p[1], tr);
        _exit(0);
    }
    close(p[1]);
    out->last_ack = -1;
    out->last_prep = -1;
    int32_t ack;
    while (read(p[0], &ack, sizeof(ack)) == sizeof(ack)) {
        if (ack >= ACK_PREP)
            out->last_prep = ack - ACK_PREP;
        else
            out->last_ack = ack;
    }
    close(p[0]);
    CHECK(waitpid(pid, &out->status, 0) == pid);
}

static uint64_t base_seed;
static unsigned case_no;  /* cases run so far in this binary */
static long only_case;    /* SOP_PL_CASE, or -1 */
static unsigned failures; /* images that failed verification (in this test) */
static unsigned images_checked;
static unsigned kept_cases; /* failed cases so far; the first few are kept */

/* How many failed cases keep their folders (on a tmpfs they cost memory). */
static unsigned keep_limit(void)
{
    return work_is_shm ? 3 : 8;
}
static char first_failure[2600];

static void record_failure(const char *line)
{
    failures++;
    printf("#   FAILED %s\n", line);
    if (!first_failure[0])
        snprintf(first_failure, sizeof(first_failure), "%s", line);
}

static uint64_t mix(uint64_t a, uint64_t b)
{
    t_rng r;
    t_rng_seed(&r, a * 0x9e3779b97f4a7c15ull ^ b);
    return t_rng_next(&r);
}

static void describe(char *out, size_t n, const trigger *tr)
{
    switch (tr->kind) {
    case TR_SITE:
        snprintf(out, n, "%s %s #%u %s", tr->after ? "after" : "before",
                 sop__fault_site_name(tr->site), tr->nth, tr->sync_only ? "sync" : "call");
        break;
    case TR_POINT:
        snprintf(out, n, "point %s #%u", sop__fault_point_name(tr->point), tr->nth);
        break;
    case TR_END:
        snprintf(out, n, "end of workload");
        break;
    default:
        snprintf(out, n, "no power loss");
    }
}

typedef struct case_opts {
    int nmodes;
    pl_mode modes[PL_MAX_IMAGES];
    bool expect_failure; /* sanity cases: the disk ignores some syncs */
} case_opts;

/*
 * One case: the workload up to the trigger, one image per mode, each
 * verified. Returns how many images failed; records the first failure
 * unless the case expects failures.
 */
static int power_loss_case(int w, const trigger *tr, const case_opts *co)
{
    unsigned n = case_no++;
    if (only_case >= 0 && (long)n != only_case)
        return 0;
    const char *dir = new_dir(w);
    S.nimg = co->nmodes;
    for (int k = 0; k < co->nmodes; k++) {
        S.img_mode[k] = co->modes[k];
        S.img_seed[k] = mix(base_seed, (uint64_t)n * PL_MAX_IMAGES + (uint64_t)k);
    }
    char desc[256];
    describe(desc, sizeof(desc), tr);
    run_result r;
    run_child(dir, w, tr, &r);
    CHECK_MSG(WIFEXITED(r.status) && WEXITSTATUS(r.status) == PL_EXIT_LOST,
              "case %u: %s, %s: %s (status %d)", n, wnames[w], desc,
              WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0
                  ? "the child finished: the point was never reached"
                  : "the workload failed before the power did (see the child's "
                    "message)",
              r.status);
    int failed = 0;
    for (int k = 0; k < co->nmodes; k++) {
        char img[PATH_MAX];
        pathf(img, "%s.img%d", dir, k);
        if (getenv("SOP_PL_RAW")) { /* debugging: keep the image as the power left
                                       it */
            char cmd[3 * PATH_MAX];
            snprintf(cmd, sizeof(cmd), "cp -a '%s' '%s.raw'", img, img);
            if (system(cmd) != 0)
                printf("#   %s failed\n", cmd);
        }
        const char *bad = verify(img, w, r.last_ack, r.last_prep);
        images_checked++;
        if (getenv("SOP_PL_VERBOSE"))
            printf("#   case %u image %d: %s, %s, %s (seed %" PRIu64 "; %s): %s\n", n, k, wnames[w],
                   desc, mode_names[co->modes[k]], S.img_seed[k], SH->where, bad ? bad : "ok");
        if (bad) {
            failed++;
            if (!co->expect_failure) {
                char line[2600];
                snprintf(line, sizeof(line),
                         "case %u image %d: workload %s, %s, mode %s, image seed %" PRIu64
                         ", power lost %s, acked 0..%d%s: %s",
                         n, k, wnames[w], desc, mode_names[co->modes[k]], S.img_seed[k], SH->where,
                         r.last_ack, r.last_prep > r.last_ack ? " (+1 prepared)" : "", bad);
                record_failure(line);
                if (kept_cases < keep_limit())
                    continue; /* keep the image for a look */
            }
        }
        rm_rf(img);
    }
    if (failed && !co->expect_failure)
        kept_cases++;
    if (!failed || co->expect_failure || kept_cases > keep_limit()) {
        char shadow[PATH_MAX];
        pathf(shadow, "%s.shadow", dir);
        rm_rf(shadow);
        rm_rf(dir);
    }
    return failed;
}

/* Cases are numbered per test from `first` (so SOP_PL_CASE names the same
 * case whichever tests run). */
static void begin_suite(unsigned first)
{
    use_fast_ops();
    case_no = first;
    if (base_seed == 0)
        base_seed = t_seed();
    const char *sector = getenv("SOP_PL_SECTOR");
    if (sector && *sector && strtoull(sector, NULL, 10) > 0)
        pl_sector = strtoull(sector, NULL, 10);
    const char *only = getenv("SOP_PL_CASE");
    only_case = only && *only ? strtol(only, NULL, 10) : -1;
    failures = 0;
    images_checked = 0;
    kept_cases = 0;
    first_failure[0] = '\0';
    choose_work();
}

static void end_suite(void)
{
    printf("#   %u images verified, %u failed\n", images_checked, failures);
    if (work_is_shm && failures == 0)
        rm_rf(work);
    else if (work_is_shm)
        printf("#   kept %s\n", work);
    CHECK_MSG(failures == 0, "%u power-loss images failed; first: %s", failures, first_failure);
}

static bool in_plan(int w)
{
    return !quick || w == W_MIXED || w == W_PREPARED || w == W_ACTIVE_LATE;
}

static case_opts default_modes(void)
{
    case_opts co = {0};
    co.nmodes = 4;
    co.modes[0] = M_KEEP;
    co.modes[1] = M_DROP;
    co.modes[2] = M_TORN;
    co.modes[3] = M_MIXED;
    if (quick) { /* kill -9 (keep) is test_crash.c's */
        co.nmodes = 3;
        co.modes[0] = M_MIXED;
    }
    if (t_long()) { /* the one-sided modes and more seeds of the random ones */
        co.nmodes = 8;
        co.modes[4] = M_DATA;
        co.modes[5] = M_NAMES;
        co.modes[6] = M_TORN;
        co.modes[7] = M_MIXED;
    }
    return co;
}

/* A run without power loss: counts every site's calls and syncs and every
 * point's passes in workload w. */
typedef struct counts {
    unsigned long calls[SOP__SITE_COUNT], syncs[SOP__SITE_COUNT], hits[SOP__POINT_COUNT];
} counts;

static void calibrate(int w, counts *c)
{
    const char *dir = new_dir(w);
    trigger none = {.kind = TR_NONE};
    S.nimg = 0;
    run_result r;
    run_child(dir, w, &none, &r);
    CHECK_MSG(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s: clean run: status %d",
              wnames[w], r.status);
    CHECK_EQ(r.last_ack, NTXN - 1);
    memcpy(c->calls, SH->calls, sizeof(c->calls));
    memcpy(c->syncs, SH->syncs, sizeof(c->syncs));
    memcpy(c->hits, SH->hits, sizeof(c->hits));
    char shadow[PATH_MAX];
    pathf(shadow, "%s.shadow", dir);
    rm_rf(shadow);
    rm_rf(dir);
}

/* The passes to lose power at, out of `total`: the first and one about two
 * thirds in (the counts vary a little from run to run: fan-out folders
 * depend on random IDs); in the long run also one a third in; in the
 * reduced plan only the later one. */
static int pick_nths(unsigned long total, unsigned nths[3])
{
    int n = 0;
    if (total == 0)
        return 0;
    unsigned later = (unsigned)(total * 2 / 3);
    if (quick) { /* one pass: the later one, with acknowledged commits behind it
                  */
        nths[n++] = later > 1 ? later : 1;
        return n;
    }
    nths[n++] = 1;
    if (later > 1)
        nths[n++] = later;
    unsigned early = (unsigned)(total / 3);
    if (t_long() && early > 1 && early != later)
        nths[n++] = early;
    return n;
}

/* ======================================================================
 * Tests
 * ====================================================================== */

/* The simulator itself: what survives in each mode. */
static bool file_is(const char *path, const char *want, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return want == NULL;
    char buf[4096];
    size_t got = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    return want != NULL && got == n && memcmp(buf, want, n) == 0;
}

static bool exists_path(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

TEST(simulator_keeps_drops_and_tears_unsynced_changes)
{
    const char *root = t_tmpdir();
    char dir[PATH_MAX], img[PATH_MAX], p[PATH_MAX], q[PATH_MAX];
    pathf(dir, "%s/sim", root);
    pathf(img, "%s/sim.img", root);
    CHECK(mkdir(dir, 0700) == 0);
    char old[1024], neu[1024];
    memset(old, 'o', sizeof(old));
    memset(neu, 'n', sizeof(neu));
    pathf(p, "%s/a", dir);
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    fwrite(old, 1, sizeof(old), f);
    fclose(f);
    pl_shared_init();
    trigger none = {.kind = TR_NONE};
    pl_install(dir, &none);
    int fd;
    /* a: overwritten (two sectors), not synced */
    CHECK_OK(sop__os_open(SOP__SITE_TEST_A, p, O_RDWR, 0, &fd, &err), &err);
    CHECK_OK(sop__os_pwrite_all(SOP__SITE_TEST_A, fd, neu, sizeof(neu), 0, p, &err), &err);
    /* b: created and synced, its folder not */
    pathf(q, "%s/b", dir);
    int fb;
    CHECK_OK(sop__os_open(SOP__SITE_TEST_A, q, O_RDWR | O_CREAT, 0600, &fb, &err), &err);
    CHECK_OK(sop__os_pwrite_all(SOP__SITE_TEST_A, fb, "bb", 2, 0, q, &err), &err);
    CHECK_OK(sop__os_fsync(SOP__SITE_TEST_A, fb, q, &err), &err);
    sop__os_close(SOP__SITE_TEST_A, fb, q, NULL);
    /* d/c: synced with its folder d, but d's own entry is not */
    char d[PATH_MAX], c[PATH_MAX];
    pathf(d, "%s/d", dir);
    pathf(c, "%s/d/c", dir);
    CHECK_OK(sop__os_mkdir(SOP__SITE_TEST_A, d, 0700, &err), &err);
    int fc;
    CHECK_OK(sop__os_open(SOP__SITE_TEST_A, c, O_RDWR | O_CREAT, 0600, &fc, &err), &err);
    CHECK_OK(sop__os_pwrite_all(SOP__SITE_TEST_A, fc, "cc", 2, 0, c, &err), &err);
    CHECK_OK(sop__os_fsync(SOP__SITE_TEST_A, fc, c, &err), &err);
    CHECK_OK(sop__os_fsync_dir(SOP__SITE_TEST_A, d, &err), &err);
    sop__os_close(SOP__SITE_TEST_A, fc, c, NULL);

    char ia[PATH_MAX], ib[PATH_MAX], ic[PATH_MAX];
    pathf(ia, "%s/a", img);
    pathf(ib, "%s/b", img);
    pathf(ic, "%s/d/c", img);
    pl_build_image(img, M_DROP, 1);
    CHECK(file_is(ia, old, sizeof(old)));
    CHECK(!exists_path(ib));
    CHECK(!exists_path(ic));
    pl_build_image(img, M_KEEP, 1);
    CHECK(file_is(ia, neu, sizeof(neu)));
    CHECK(file_is(ib, "bb", 2));
    CHECK(file_is(ic, "cc", 2));
    /* torn: each sector old or new, both kinds over a few seeds */
    bool mixed_seen = false;
    for (uint64_t seed = 1; seed <= 16; seed++) {
        pl_build_image(img, M_TORN, seed);
        char got[1024];
        f = fopen(ia, "rb");
        CHECK(f != NULL);
        CHECK_EQ(fread(got, 1, sizeof(got), f), sizeof(got));
        fclose(f);
        for (int s = 0; s < 2; s++)
            CHECK(memcmp(got + 512 * s, old, 512) == 0 || memcmp(got + 512 * s, neu, 512) == 0);
        if (memcmp(got, got + 512, 512) != 0)
            mixed_seen = true;
    }
    CHECK(mixed_seen);
    /* syncing a and the root makes all of it durable */
    CHECK_OK(sop__os_fdatasync(SOP__SITE_TEST_A, fd, p, &err), &err);
    CHECK_OK(sop__os_fsync_dir(SOP__SITE_TEST_A, dir, &err), &err);
    pl_build_image(img, M_DROP, 1);
    CHECK(file_is(ia, neu, sizeof(neu)));
    CHECK(file_is(ib, "bb", 2));
    CHECK(file_is(ic, "cc", 2));
    /* a shrinking truncate, an unlink and a rename over a file, unsynced */
    CHECK_OK(sop__os_ftruncate(SOP__SITE_TEST_A, fd, 100, p, &err), &err);
    sop__os_close(SOP__SITE_TEST_A, fd, p, NULL);
    CHECK_OK(sop__os_unlink(SOP__SITE_TEST_A, c, &err), &err);
    CHECK_OK(sop__os_rename(SOP__SITE_TEST_A, q, p, &err), &err);
    CHECK(file_is(p, "bb", 2));
    pl_build_image(img, M_DROP, 1);
    CHECK(file_is(ia, neu, sizeof(neu)));
    CHECK(file_is(ib, "bb", 2));
    CHECK(file_is(ic, "cc", 2));
    pl_build_image(img, M_KEEP, 1);
    CHECK(file_is(ia, "bb", 2));
    CHECK(!exists_path(ib));
    CHECK(!exists_path(ic));
    /* syncfs: everything */
    int rfd = open(dir, O_RDONLY | O_DIRECTORY);
    CHECK(rfd >= 0);
    CHECK_OK(sop__os_syncfs(SOP__SITE_TEST_A, rfd, dir, &err), &err);
    close(rfd);
    pl_build_image(img, M_DROP, 1);
    CHECK(file_is(ia, "bb", 2));
    CHECK(!exists_path(ib));
    CHECK(!exists_path(ic));
    pl_uninstall();
}

/* Power loss before and after every sync (and other key calls) of every
 * I/O site that makes things durable, at the first and a later pass, in
 * every workload that reaches it. */
TEST(power_loss_at_every_sync_site)
{
    begin_suite(0);
    static const struct {
        sop__site site;
        bool sync_only;
    } sites[] = {
        {SOP__SITE_LOG_SYNC, true},
        {SOP__SITE_LOG_OPEN, true},
        {SOP__SITE_LOG_RESET, false},
        {SOP__SITE_DB_LOCK, true},
        {SOP__SITE_DB_SYNC, true},
        {SOP__SITE_BLOB_SYNC, true},
        {SOP__SITE_PREP_WRITE, true},
        {SOP__SITE_REG_SYNC, true},
        {SOP__SITE_REG_SEGMENT_CREATE, false},
        {SOP__SITE_REPO_WRITE, false},
        {SOP__SITE_PREP_REMOVE, false},
        {SOP__SITE_BLOB_REMOVE, false},
    };
    size_t nsites = sizeof(sites) / sizeof(sites[0]);
    bool reached[sizeof(sites) / sizeof(sites[0])] = {0};
    case_opts co = default_modes();
    unsigned cases = 0;
    for (int w = 0; w < W_COUNT; w++) {
        if (!in_plan(w))
            continue;
        counts c;
        calibrate(w, &c);
        for (size_t i = 0; i < nsites; i++) {
            unsigned long total =
                sites[i].sync_only ? c.syncs[sites[i].site] : c.calls[sites[i].site];
            unsigned nths[3];
            int nn = pick_nths(total, nths);
            reached[i] = reached[i] || nn > 0;
            for (int k = 0; k < nn; k++) {
                for (int after = 0; after <= (sites[i].sync_only ? 1 : 0); after++) {
                    trigger tr = {.kind = TR_SITE,
                                  .site = sites[i].site,
                                  .sync_only = sites[i].sync_only,
                                  .after = after,
                                  .nth = nths[k]};
                    power_loss_case(w, &tr, &co);
                    cases++;
                }
            }
        }
    }
    printf("#   %u cases\n", cases);
    for (size_t i = 0; i < nsites; i++)
        CHECK_MSG(reached[i], "site %s never reached by any workload",
                  sop__fault_site_name(sites[i].site));
    end_suite();
}

/* Power loss at every crash point of phase 1, phase 2, rollback, prepared
 * transactions and checkpoints (at the first I/O after it). */
TEST(power_loss_at_every_crash_point)
{
    begin_suite(10000);
    static const sop__point points[] = {SOP__POINT_P1_LOCKED,          SOP__POINT_P1_VALIDATED,
                                        SOP__POINT_P1_RECORD_WRITTEN,  SOP__POINT_P1_DURABLE,
                                        SOP__POINT_P2_STORES_CREATED,  SOP__POINT_P2_BLOBS_WRITTEN,
                                        SOP__POINT_P2_REGISTRY_HALF,   SOP__POINT_P2_STATE_WRITTEN,
                                        SOP__POINT_P2_DEAD_REMOVED,    SOP__POINT_P2_DONE,
                                        SOP__POINT_RB_ACTIVE_REMOVED,  SOP__POINT_PREP_DURABLE,
                                        SOP__POINT_PREP_COMMIT_LOGGED, SOP__POINT_PREP_FILE_REMOVED,
                                        SOP__POINT_CKPT_SYNCED};
    size_t npoints = sizeof(points) / sizeof(points[0]);
    bool reached[sizeof(points) / sizeof(points[0])] = {0};
    case_opts co = default_modes();
    unsigned cases = 0;
    for (int w = 0; w < W_COUNT; w++) {
        if (!in_plan(w))
            continue;
        counts c;
        calibrate(w, &c);
        for (size_t i = 0; i < npoints; i++) {
            unsigned nths[3];
            int nn = pick_nths(c.hits[points[i]], nths);
            reached[i] = reached[i] || nn > 0;
            for (int k = 0; k < nn; k++) {
                trigger tr = {.kind = TR_POINT, .point = points[i], .nth = nths[k]};
                power_loss_case(w, &tr, &co);
                cases++;
            }
        }
        trigger end = {.kind = TR_END};
        power_loss_case(w, &end, &co);
        cases++;
    }
    printf("#   %u cases\n", cases);
    for (size_t i = 0; i < npoints; i++)
        CHECK_MSG(reached[i], "point %s never reached by any workload",
                  sop__fault_point_name(points[i]));
    end_suite();
}

/* A power loss, then another one during the recovery of the first. */
TEST(power_loss_during_recovery)
{
    begin_suite(20000);
    static const struct {
        int w;
        trigger first;
    } firsts[] = {
        {W_MIXED, {.kind = TR_POINT, .point = SOP__POINT_P2_REGISTRY_HALF, .nth = 5}},
        {W_ACTIVE_LATE, {.kind = TR_END}},
        {W_PREPARED, {.kind = TR_POINT, .point = SOP__POINT_PREP_COMMIT_LOGGED, .nth = 4}},
        {W_DELETES, {.kind = TR_POINT, .point = SOP__POINT_P2_DONE, .nth = 8}},
    };
    static const trigger during[] = {
        {.kind = TR_POINT, .point = SOP__POINT_REC_LOG_REDONE, .nth = 1},
        {.kind = TR_SITE, .site = SOP__SITE_REG_BLOCK_WRITE, .nth = 2},
        {.kind = TR_SITE, .site = SOP__SITE_DB_SYNC, .sync_only = true, .nth = 1},
        {.kind = TR_SITE, .site = SOP__SITE_DB_SYNC, .sync_only = true, .after = true, .nth = 1},
        {.kind = TR_POINT, .point = SOP__POINT_CKPT_SYNCED, .nth = 1},
    };
    case_opts co = default_modes();
    for (size_t f = 0; f < sizeof(firsts) / sizeof(firsts[0]); f++) {
        int w = firsts[f].w;
        for (size_t k = 0; k < sizeof(during) / sizeof(during[0]); k++) {
            unsigned n = case_no++;
            if (only_case >= 0 && (long)n != only_case)
                continue;
            /* the first power loss: one image, dropped writes */
            const char *dir = new_dir(w);
            S.nimg = 1;
            pl_mode first_mode = k % 2 ? M_MIXED : M_DROP;
            S.img_mode[0] = first_mode;
            uint64_t first_seed = mix(base_seed, (uint64_t)n * PL_MAX_IMAGES + 7);
            S.img_seed[0] = first_seed;
            run_result r;
            run_child(dir, w, &firsts[f].first, &r);
            char d1[128], d2[128];
            describe(d1, sizeof(d1), &firsts[f].first);
            describe(d2, sizeof(d2), &during[k]);
            CHECK_MSG(WIFEXITED(r.status) && WEXITSTATUS(r.status) == PL_EXIT_LOST,
                      "case %u: %s: first power loss never happened (status %d)", n, d1, r.status);
            char img1[PATH_MAX];
            pathf(img1, "%s.img0", dir);
            /* the second: a child only opens (recovers) the first image */
            S.nimg = co.nmodes;
            for (int m = 0; m < co.nmodes; m++) {
                S.img_mode[m] = co.modes[m];
                S.img_seed[m] = mix(base_seed, (uint64_t)n * PL_MAX_IMAGES + (uint64_t)m);
            }
            pl_shared_init();
            fflush(stdout);
            pid_t pid = fork();
            CHECK(pid >= 0);
            if (pid == 0) {
                t_in_child();
                sop__fault_reset();
                pl_install(img1, &during[k]);
                sop_db *db = NULL;
                if (open_db(img1, w, &db) != SOP_OK) {
                    snprintf(SH->where, sizeof(SH->where), "%s", err.msg);
                    _exit(5);
                }
                sop_db_close(db);
                _exit(0);
            }
            int st;
            CHECK(waitpid(pid, &st, 0) == pid);
            if (WIFEXITED(st) && WEXITSTATUS(st) == 5) { /* the first image did not recover */
                char line[2600];
                snprintf(line, sizeof(line),
                         "case %u: workload %s, %s (mode %s, seed %" PRIu64
                         "): recovery failed: %s",
                         n, wnames[w], d1, mode_names[first_mode], first_seed, SH->where);
                record_failure(line);
                continue;
            }
            CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == PL_EXIT_LOST,
                      "case %u: %s, %s: recovery never reached the point (status %d)", n, d1, d2,
                      st);
            for (int m = 0; m < co.nmodes; m++) {
                char img2[PATH_MAX];
                pathf(img2, "%s.img%d", img1, m);
                const char *bad = verify(img2, w, r.last_ack, r.last_prep);
                images_checked++;
                if (bad) {
                    char line[2600];
                    snprintf(line, sizeof(line),
                             "case %u: workload %s, %s then during recovery %s (%s), mode %s, "
                             "seed %" PRIu64 ": %s",
                             n, wnames[w], d1, d2, SH->where, mode_names[co.modes[m]],
                             S.img_seed[m], bad);
                    record_failure(line);
                } else {
                    rm_rf(img2);
                }
            }
        }
    }
    end_suite();
}

/* The simulator has teeth: a disk that ignores the log's fdatasync (a
 * missing fsync) or the log folder's fsync (a missing folder fsync) loses
 * acknowledged commits, and the verification says so; the same case on an
 * honest disk passes. */
TEST(simulated_missing_sync_is_detected)
{
    begin_suite(30000);
    case_opts co = {0};
    co.nmodes = 1;
    co.modes[0] = M_DROP;
    co.expect_failure = true;
    static const struct {
        const char *file_suffix, *dir;
    } bugs[] = {{".log", NULL}, {NULL, "txlog"}, {NULL, NULL}};
    /* lose power right before a commit, after acknowledged ones since the
     * last checkpoint */
    trigger tr = {.kind = TR_POINT, .point = SOP__POINT_P1_LOCKED, .nth = 4};
    for (size_t b = 0; b < sizeof(bugs) / sizeof(bugs[0]); b++) {
        bool honest = !bugs[b].file_suffix && !bugs[b].dir;
        co.expect_failure = !honest;
        S.ignore_sync_suffix = bugs[b].file_suffix;
        S.ignore_dirsync_rel = bugs[b].dir;
        int failed = power_loss_case(W_INSERTS_LATE, &tr, &co);
        S.ignore_sync_suffix = NULL;
        S.ignore_dirsync_rel = NULL;
        if (only_case >= 0 || honest)
            continue;
        CHECK_MSG(failed > 0, "a disk ignoring %s%s lost nothing the verification noticed",
                  bugs[b].file_suffix ? "fdatasync of *" : "fsync of the folder ",
                  bugs[b].file_suffix ? bugs[b].file_suffix : bugs[b].dir);
        printf("#   ignoring %s%s: caught (%s)\n",
               bugs[b].file_suffix ? "fdatasync of *" : "fsync of the folder ",
               bugs[b].file_suffix ? bugs[b].file_suffix : bugs[b].dir, why);
    }
    end_suite(); /* the honest disk's case counts as a failure if it failed */
}
