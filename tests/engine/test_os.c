/*
 * test_os.c - the I/O layer (engine/src/os.c) against real files: every
 * wrapper, its error mapping and messages, OFD locks, directory listing, and
 * an interposed operations table.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "os.h"
#include "t.h"

#define S SOP__SITE_TEST_A

static char *path_in(const char *name)
{
    static char buf[8][4096];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof(buf[0]), "%s/%s", t_tmpdir(), name);
    return p;
}

static int create_file(const char *path)
{
    sop_err err = {0};
    int fd = -1;
    CHECK_OK(sop__os_open(S, path, O_RDWR | O_CREAT | O_TRUNC, 0600, &fd, &err), &err);
    CHECK(fd >= 0);
    return fd;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 31u + seed);
}

TEST(open_creates_0600_cloexec)
{
    sop__fault_reset();
    const char *p = path_in("f");
    mode_t old = umask(022);
    int fd = create_file(p);
    umask(old);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    struct stat st;
    sop_err err = {0};
    CHECK_OK(sop__os_fstat(S, fd, &st, p, &err), &err);
    CHECK_EQ(st.st_mode & 0777, 0600);
    CHECK(S_ISREG(st.st_mode));
    CHECK_OK(sop__os_close(S, fd, p, &err), &err);
}

TEST(write_read_and_eof)
{
    sop__fault_reset();
    const char *p = path_in("data");
    int fd = create_file(p);
    sop_err err = {0};
    unsigned char w[10000], r[10000];
    fill(w, sizeof(w), 7);
    CHECK_OK(sop__os_pwrite_all(S, fd, w, sizeof(w), 0, p, &err), &err);
    size_t got = 0;
    memset(r, 0, sizeof(r));
    CHECK_OK(sop__os_pread_full(S, fd, r, sizeof(r), 0, &got, p, &err), &err);
    CHECK_EQ(got, sizeof(r));
    CHECK(memcmp(w, r, sizeof(r)) == 0);

    /* Short read at the end of the file: *got < n. */
    CHECK_OK(sop__os_pread_full(S, fd, r, 4096, 9000, &got, p, &err), &err);
    CHECK_EQ(got, 1000);
    CHECK(memcmp(r, w + 9000, 1000) == 0);
    /* Entirely past the end. */
    got = 77;
    CHECK_OK(sop__os_pread_full(S, fd, r, 16, 20000, &got, p, &err), &err);
    CHECK_EQ(got, 0);
    /* Without `got`, a short read is corruption naming the file and offset. */
    CHECK_RC(sop__os_pread_full(S, fd, r, 4096, 8192, NULL, p, &err), SOP_CORRUPT, &err);
    CHECK_EQ(err.code, SOP_CORRUPT);
    char want[4200];
    snprintf(want, sizeof(want),
             "pread of 4096 bytes at offset 8192 from %s: unexpected end of file after 1808 "
             "bytes",
             p);
    CHECK_MSG(strcmp(err.msg, want) == 0, "msg: %s", err.msg);
    /* A full read without `got` is fine. */
    CHECK_OK(sop__os_pread_full(S, fd, r, 100, 50, NULL, p, &err), &err);
    CHECK(memcmp(r, w + 50, 100) == 0);

    /* A write at an offset past the end leaves a hole of zeros. */
    CHECK_OK(sop__os_pwrite_all(S, fd, "xyz", 3, 20000, p, &err), &err);
    struct stat st;
    CHECK_OK(sop__os_fstat(S, fd, &st, p, &err), &err);
    CHECK_EQ(st.st_size, 20003);
    CHECK_OK(sop__os_pread_full(S, fd, r, 4, 19999, &got, p, &err), &err);
    CHECK_EQ(got, 4);
    CHECK(memcmp(r, "\0xyz", 4) == 0);
    /* Zero-length transfers succeed. */
    CHECK_OK(sop__os_pwrite_all(S, fd, w, 0, 5, p, &err), &err);
    CHECK_OK(sop__os_pread_full(S, fd, r, 0, 5, NULL, p, &err), &err);
    CHECK_OK(sop__os_close(S, fd, p, &err), &err);
}

TEST(write_error_names_op_file_offset)
{
    sop__fault_reset();
    const char *p = path_in("ro");
    sop_err err = {0};
    int fd = create_file(p);
    CHECK_OK(sop__os_close(S, fd, p, &err), &err);
    CHECK_OK(sop__os_open(S, p, O_RDONLY, 0, &fd, &err), &err);
    CHECK_RC(sop__os_pwrite_all(S, fd, "abcd", 4, 40960, p, &err), SOP_IO, &err);
    CHECK_EQ(err.code, SOP_IO);
    CHECK_EQ(err.sys_errno, EBADF);
    char want[4200];
    snprintf(want, sizeof(want), "pwrite of 4 bytes at offset 40960 to %s failed: %s", p,
             strerror(EBADF));
    CHECK_MSG(strcmp(err.msg, want) == 0, "msg: %s", err.msg);
    /* Offsets past INT64_MAX are rejected before any call. */
    CHECK_RC(sop__os_pwrite_all(S, fd, "a", 1, UINT64_MAX, p, &err), SOP_INVALID, &err);
    CHECK_RC(sop__os_pread_full(S, fd, want, 2, (uint64_t)INT64_MAX, NULL, p, &err), SOP_INVALID,
             &err);
    CHECK_RC(sop__os_ftruncate(S, fd, UINT64_MAX, p, &err), SOP_INVALID, &err);
    CHECK_OK(sop__os_close(S, fd, p, &err), &err);
    /* A read error names the file too. */
    unsigned char b[8];
    CHECK_RC(sop__os_pread_full(S, 1000000, b, 8, 16, NULL, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, EBADF);
    CHECK_MSG(strstr(err.msg, "pread of 8 bytes at offset 16 from ") && strstr(err.msg, p),
              "msg: %s", err.msg);
}

TEST(open_enoent_and_eexist)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("missing");
    int fd = 12345;
    CHECK_RC(sop__os_open(S, p, O_RDONLY, 0, &fd, &err), SOP_NOTFOUND, &err);
    CHECK_EQ(fd, 12345); /* out-param untouched */
    CHECK_EQ(err.code, SOP_NOTFOUND);
    CHECK_EQ(err.sys_errno, ENOENT);
    char want[4200];
    snprintf(want, sizeof(want), "open of %s failed: %s", p, strerror(ENOENT));
    CHECK_MSG(strcmp(err.msg, want) == 0, "msg: %s", err.msg);
    /* Missing parent directory with O_CREAT: also NOTFOUND. */
    CHECK_RC(sop__os_open(S, path_in("no/such"), O_RDWR | O_CREAT, 0600, &fd, &err), SOP_NOTFOUND,
             &err);

    fd = create_file(p);
    CHECK_OK(sop__os_close(S, fd, p, &err), &err);
    CHECK_RC(sop__os_open(S, p, O_RDWR | O_CREAT | O_EXCL, 0600, &fd, &err), SOP_EXISTS, &err);
    CHECK_EQ(err.sys_errno, EEXIST);
    /* Without O_EXCL, EEXIST cannot happen; other errors are SOP_IO. */
    CHECK_RC(sop__os_open(S, t_tmpdir(), O_RDWR, 0, &fd, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, EISDIR);
}

TEST(close_semantics)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("c");
    int fd = create_file(p);
    CHECK_OK(sop__os_close(S, -1, "nothing", &err), &err); /* no-op */
    CHECK_OK(sop__os_close(S, fd, p, &err), &err);
    CHECK_RC(sop__os_close(S, fd, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, EBADF);
    CHECK_MSG(strstr(err.msg, "close of ") && strstr(err.msg, p), "msg: %s", err.msg);
}

TEST(fsync_fdatasync_and_dir_fsync)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("s");
    int fd = create_file(p);
    CHECK_OK(sop__os_pwrite_all(S, fd, "hello", 5, 0, p, &err), &err);
    CHECK_OK(sop__os_fsync(S, fd, p, &err), &err);
    CHECK_OK(sop__os_fdatasync(S, fd, p, &err), &err);
    CHECK_OK(sop__os_fsync_dir(S, t_tmpdir(), &err), &err);
    CHECK_OK(sop__os_close(S, fd, p, &err), &err);

    CHECK_RC(sop__os_fsync(S, fd, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, EBADF);
    CHECK_MSG(strstr(err.msg, "fsync of ") && strstr(err.msg, p), "msg: %s", err.msg);
    CHECK_RC(sop__os_fdatasync(S, fd, p, &err), SOP_IO, &err);
    CHECK_MSG(strstr(err.msg, "fdatasync of ") && strstr(err.msg, p), "msg: %s", err.msg);
    const char *nodir = path_in("nodir");
    CHECK_RC(sop__os_fsync_dir(S, nodir, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, ENOENT);
    CHECK_MSG(strstr(err.msg, "fsync of directory ") && strstr(err.msg, nodir), "msg: %s", err.msg);
    /* A regular file is not a directory. */
    CHECK_RC(sop__os_fsync_dir(S, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, ENOTDIR);
}

TEST(rename_unlink_stat)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *a = path_in("a"), *b = path_in("b");
    int fd = create_file(a);
    CHECK_OK(sop__os_pwrite_all(S, fd, "A", 1, 0, a, &err), &err);
    CHECK_OK(sop__os_close(S, fd, a, &err), &err);
    fd = create_file(b);
    CHECK_OK(sop__os_close(S, fd, b, &err), &err);

    CHECK_OK(sop__os_rename(S, a, b, &err), &err); /* replaces b */
    struct stat st;
    st.st_size = -1;
    CHECK_RC(sop__os_stat(S, a, &st, &err), SOP_NOTFOUND, &err);
    CHECK_EQ(st.st_size, -1); /* untouched */
    CHECK_EQ(err.sys_errno, ENOENT);
    CHECK_MSG(strstr(err.msg, "stat of ") && strstr(err.msg, a), "msg: %s", err.msg);
    CHECK_OK(sop__os_stat(S, b, &st, &err), &err);
    CHECK_EQ(st.st_size, 1);

    CHECK_RC(sop__os_rename(S, a, b, &err), SOP_NOTFOUND, &err);
    CHECK_MSG(strstr(err.msg, "rename of ") && strstr(err.msg, a) && strstr(err.msg, b), "msg: %s",
              err.msg);
    CHECK_OK(sop__os_unlink(S, b, &err), &err);
    CHECK_RC(sop__os_unlink(S, b, &err), SOP_NOTFOUND, &err);
    CHECK_EQ(err.sys_errno, ENOENT);
    char want[4200];
    snprintf(want, sizeof(want), "unlink of %s failed: %s", b, strerror(ENOENT));
    CHECK_MSG(strcmp(err.msg, want) == 0, "msg: %s", err.msg);
    /* unlink of a directory is SOP_IO. */
    CHECK_RC(sop__os_unlink(S, t_tmpdir(), &err), SOP_IO, &err);
}

TEST(mkdir_rmdir)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *d = path_in("dir");
    mode_t old = umask(022);
    CHECK_OK(sop__os_mkdir(S, d, 0700, &err), &err);
    umask(old);
    struct stat st;
    CHECK_OK(sop__os_stat(S, d, &st, &err), &err);
    CHECK(S_ISDIR(st.st_mode));
    CHECK_EQ(st.st_mode & 0777, 0700);
    CHECK_RC(sop__os_mkdir(S, d, 0700, &err), SOP_EXISTS, &err);
    CHECK_EQ(err.sys_errno, EEXIST);
    CHECK_MSG(strstr(err.msg, "mkdir of ") && strstr(err.msg, d), "msg: %s", err.msg);
    CHECK_RC(sop__os_mkdir(S, path_in("x/y"), 0700, &err), SOP_IO, &err);

    const char *f = path_in("dir/f");
    int fd = create_file(f);
    CHECK_OK(sop__os_close(S, fd, f, &err), &err);
    CHECK_RC(sop__os_rmdir(S, d, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, ENOTEMPTY);
    CHECK_OK(sop__os_unlink(S, f, &err), &err);
    CHECK_OK(sop__os_rmdir(S, d, &err), &err);
    CHECK_RC(sop__os_rmdir(S, d, &err), SOP_NOTFOUND, &err);
    CHECK_MSG(strstr(err.msg, "rmdir of ") && strstr(err.msg, d), "msg: %s", err.msg);
}

TEST(ftruncate_fallocate)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("t");
    int fd = create_file(p);
    struct stat st;
    CHECK_OK(sop__os_ftruncate(S, fd, 12345, p, &err), &err);
    CHECK_OK(sop__os_fstat(S, fd, &st, p, &err), &err);
    CHECK_EQ(st.st_size, 12345);
    CHECK_OK(sop__os_ftruncate(S, fd, 100, p, &err), &err);
    CHECK_OK(sop__os_fstat(S, fd, &st, p, &err), &err);
    CHECK_EQ(st.st_size, 100);

    sop_rc rc = sop__os_fallocate(S, fd, 0, 0, 65536, p, &err);
    if (rc == SOP_UNSUPPORTED) {
        CHECK_EQ(err.sys_errno, EOPNOTSUPP);
    } else {
        CHECK_OK(rc, &err);
        CHECK_OK(sop__os_fstat(S, fd, &st, p, &err), &err);
        CHECK_EQ(st.st_size, 65536);
        CHECK_OK(sop__os_fallocate(S, fd, FALLOC_FL_KEEP_SIZE, 65536, 65536, p, &err), &err);
        CHECK_OK(sop__os_fstat(S, fd, &st, p, &err), &err);
        CHECK_EQ(st.st_size, 65536);
    }
    CHECK_RC(sop__os_fallocate(S, fd, 0, 0, 0, p, &err), SOP_IO, &err); /* len 0: EINVAL */
    CHECK_EQ(err.sys_errno, EINVAL);
    CHECK_MSG(strstr(err.msg, "fallocate of 0 bytes at offset 0 in ") && strstr(err.msg, p),
              "msg: %s", err.msg);
    CHECK_OK(sop__os_close(S, fd, p, &err), &err);
    CHECK_RC(sop__os_ftruncate(S, fd, 1, p, &err), SOP_IO, &err);
    CHECK_MSG(strstr(err.msg, "ftruncate of ") && strstr(err.msg, " to 1 bytes failed"), "msg: %s",
              err.msg);
}

TEST(directory_listing)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *names[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        const char *p = path_in(names[i]);
        int fd = create_file(p);
        CHECK_OK(sop__os_close(S, fd, p, &err), &err);
    }
    CHECK_OK(sop__os_mkdir(S, path_in("sub"), 0700, &err), &err);
    sop__os_dir d;
    memset(&d, 0, sizeof(d));
    sop__os_dir_close(&d); /* zeroed: no-op */
    CHECK_OK(sop__os_dir_open(S, t_tmpdir(), &d, &err), &err);
    unsigned seen = 0;
    int n = 0;
    const char *name;
    sop_rc rc;
    while ((rc = sop__os_dir_next(&d, &name, &err)) == SOP_OK) {
        n++;
        CHECK(strcmp(name, ".") != 0 && strcmp(name, "..") != 0);
        for (int i = 0; i < 3; i++)
            if (strcmp(name, names[i]) == 0)
                seen |= 1u << i;
        if (strcmp(name, "sub") == 0)
            seen |= 8;
    }
    CHECK_RC(rc, SOP_NOTFOUND, &err);
    CHECK_EQ(n, 4);
    CHECK_EQ(seen, 15);
    sop__os_dir_close(&d);
    sop__os_dir_close(&d); /* closed: no-op */

    sop__os_dir d2 = {0};
    CHECK_RC(sop__os_dir_open(S, path_in("nope"), &d2, &err), SOP_NOTFOUND, &err);
    CHECK(d2.handle == NULL);
    CHECK_MSG(strstr(err.msg, "opendir of ") && strstr(err.msg, "nope"), "msg: %s", err.msg);
    CHECK_RC(sop__os_dir_open(S, path_in("one"), &d2, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, ENOTDIR);
}

/* ---- OFD locks ---- */

static sop_rc lk(int fd, sop__os_lock_mode m, uint64_t off, uint64_t len, sop_err *err)
{
    return sop__os_lock(S, fd, m, off, len, false, "lockfile", err);
}

TEST(ofd_locks_conflict_between_open_file_descriptions)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("lock");
    int a = create_file(p), b = -1;
    CHECK_OK(sop__os_open(S, p, O_RDWR, 0, &b, &err), &err);
    const sop__os_lock_mode X = SOP__OS_LOCK_EXCLUSIVE, SH = SOP__OS_LOCK_SHARED;

    /* Exclusive [0,10) by a: overlapping exclusive and shared by b conflict. */
    CHECK_OK(lk(a, X, 0, 10, &err), &err);
    CHECK_RC(lk(b, X, 5, 10, &err), SOP_LOCKED, &err);
    CHECK_EQ(err.code, SOP_LOCKED);
    CHECK(err.sys_errno == EAGAIN || err.sys_errno == EACCES);
    CHECK_MSG(strstr(err.msg, "exclusive lock of 10 bytes at offset 5 in lockfile failed"),
              "msg: %s", err.msg);
    CHECK_RC(lk(b, SH, 9, 1, &err), SOP_LOCKED, &err);
    /* Disjoint ranges do not conflict (ranges are half-open). */
    CHECK_OK(lk(b, X, 10, 10, &err), &err);
    /* The same open file description may re-lock / convert its own range. */
    CHECK_OK(lk(a, SH, 0, 10, &err), &err);
    CHECK_OK(lk(a, X, 0, 10, &err), &err);

    /* Shared + shared is compatible; shared blocks exclusive. */
    CHECK_OK(lk(a, SH, 100, 10, &err), &err);
    CHECK_OK(lk(b, SH, 105, 10, &err), &err);
    CHECK_RC(lk(a, X, 110, 1, &err), SOP_LOCKED, &err);
    CHECK_RC(lk(b, X, 100, 1, &err), SOP_LOCKED, &err);

    /* Unlock releases; then b gets it. */
    CHECK_OK(sop__os_unlock(S, a, 0, 10, "lockfile", &err), &err);
    CHECK_OK(lk(b, X, 0, 10, &err), &err);
    CHECK_RC(lk(a, SH, 3, 1, &err), SOP_LOCKED, &err);

    /* len 0 = to the end of the file and beyond. */
    CHECK_OK(lk(a, X, 1000, 0, &err), &err);
    CHECK_RC(lk(b, SH, 1u << 30, 1, &err), SOP_LOCKED, &err);
    CHECK_RC(lk(b, X, 0, 0, &err), SOP_LOCKED, &err);
    CHECK_MSG(strstr(err.msg, "exclusive lock of all bytes from offset 0 in lockfile failed"),
              "msg: %s", err.msg);

    /* Closing b's description drops all of b's locks. */
    CHECK_OK(sop__os_close(S, b, p, &err), &err);
    CHECK_OK(lk(a, X, 0, 20, &err), &err);
    CHECK_OK(lk(a, X, 100, 20, &err), &err);

    /* Exclusive needs a descriptor open for writing. */
    int r = -1;
    CHECK_OK(sop__os_open(S, p, O_RDONLY, 0, &r, &err), &err);
    CHECK_RC(lk(r, X, 500, 1, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, EBADF);
    CHECK_OK(lk(r, SH, 500, 1, &err), &err);
    CHECK_RC(lk(r, X, UINT64_MAX, 1, &err), SOP_INVALID, &err);
    CHECK_OK(sop__os_close(S, r, p, &err), &err);
    CHECK_OK(sop__os_close(S, a, p, &err), &err);
}

TEST(ofd_lock_wait_blocks_until_released)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("wait");
    int a = create_file(p);
    CHECK_OK(lk(a, SOP__OS_LOCK_EXCLUSIVE, 0, 1, &err), &err);
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        int fd = -1;
        sop_err e2 = {0};
        if (sop__os_open(S, p, O_RDWR, 0, &fd, &e2) != SOP_OK)
            _exit(2);
        if (lk(fd, SOP__OS_LOCK_EXCLUSIVE, 0, 1, &e2) != SOP_LOCKED)
            _exit(3);
        if (write(pfd[1], "w", 1) != 1) /* about to wait */
            _exit(4);
        if (sop__os_lock(S, fd, SOP__OS_LOCK_EXCLUSIVE, 0, 1, true, p, &e2) != SOP_OK)
            _exit(5);
        _exit(0);
    }
    close(pfd[1]);
    char c;
    CHECK_EQ(read(pfd[0], &c, 1), 1);
    close(pfd[0]);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, WNOHANG), 0); /* still waiting for the lock */
    CHECK_OK(sop__os_unlock(S, a, 0, 1, p, &err), &err);
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    CHECK_OK(sop__os_close(S, a, p, &err), &err);
}

/* ---- An interposed table ---- */

static unsigned long n_open, n_pwrite, n_pread, n_fsync, n_close, n_fsync_dir, n_lock;

static int c_open(const char *path, int flags, mode_t mode)
{
    n_open += (flags & O_CLOEXEC) ? 1 : 1000; /* no CHECK here: this table may be installed */
    return sop__os_default_ops()->open(path, flags, mode);
}

/* Transfers at most 3 bytes and fails with EINTR every other call: the
 * wrappers must loop. */
static ssize_t c_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (n_pwrite++ % 2 == 0) {
        errno = EINTR;
        return -1;
    }
    return sop__os_default_ops()->pwrite(fd, buf, n < 3 ? n : 3, off);
}

static ssize_t c_pread(int fd, void *buf, size_t n, off_t off)
{
    if (n_pread++ % 2 == 0) {
        errno = EINTR;
        return -1;
    }
    return sop__os_default_ops()->pread(fd, buf, n < 5 ? n : 5, off);
}

static int c_fsync(int fd)
{
    n_fsync++;
    return sop__os_default_ops()->fsync(fd);
}

static int c_close(int fd)
{
    n_close++;
    return sop__os_default_ops()->close(fd);
}

static int c_fsync_dir(const char *path)
{
    n_fsync_dir++;
    return sop__os_default_ops()->fsync_dir(path);
}

static int c_lock(int fd, int type, off_t off, off_t len, bool wait)
{
    n_lock++;
    return sop__os_default_ops()->lock(fd, type, off, len, wait);
}

TEST(custom_ops_table_is_used_and_restored)
{
    sop__fault_reset();
    sop_err err = {0};
    sop__os_ops counting = *sop__os_default_ops();
    counting.open = c_open;
    counting.pwrite = c_pwrite;
    counting.pread = c_pread;
    counting.fsync = c_fsync;
    counting.close = c_close;
    counting.fsync_dir = c_fsync_dir;
    counting.lock = c_lock;
    n_open = n_pwrite = n_pread = n_fsync = n_close = n_fsync_dir = n_lock = 0;

    const sop__os_ops *prev = sop__os_set_ops(&counting);
    CHECK(prev == sop__os_default_ops());
    const char *p = path_in("counted");
    int fd = create_file(p);
    unsigned char w[100], r[100];
    fill(w, sizeof(w), 3);
    CHECK_OK(sop__os_pwrite_all(S, fd, w, sizeof(w), 10, p, &err), &err);
    CHECK_EQ(n_pwrite, 2 * 34); /* 34 transfers of <= 3 bytes, each after an EINTR */
    size_t got = 0;
    CHECK_OK(sop__os_pread_full(S, fd, r, sizeof(r), 10, &got, p, &err), &err);
    CHECK_EQ(got, 100);
    CHECK(memcmp(w, r, sizeof(r)) == 0);
    CHECK_EQ(n_pread, 2 * 20);
    /* End of file through the short-read loop: 110 bytes in the file. */
    n_pread = 0;
    CHECK_OK(sop__os_pread_full(S, fd, r, 50, 100, &got, p, &err), &err);
    CHECK_EQ(got, 10);
    CHECK_OK(sop__os_fsync(S, fd, p, &err), &err);
    CHECK_OK(sop__os_fsync_dir(S, t_tmpdir(), &err), &err);
    CHECK_OK(lk(fd, SOP__OS_LOCK_EXCLUSIVE, 0, 1, &err), &err);
    CHECK_OK(sop__os_unlock(S, fd, 0, 1, p, &err), &err);
    CHECK_OK(sop__os_close(S, fd, p, &err), &err);
    CHECK_EQ(n_open, 1);
    CHECK_EQ(n_fsync, 1);
    CHECK_EQ(n_fsync_dir, 1);
    CHECK_EQ(n_lock, 2);
    CHECK_EQ(n_close, 1);

    /* Restoring the default returns the table it replaces. */
    CHECK(sop__os_set_ops(NULL) == &counting);
    CHECK(sop__os_set_ops(NULL) == sop__os_default_ops());
    fd = create_file(p);
    CHECK_OK(sop__os_pwrite_all(S, fd, w, sizeof(w), 0, p, &err), &err);
    CHECK_OK(sop__os_close(S, fd, p, &err), &err);
    CHECK_EQ(n_open, 1);
    CHECK_EQ(n_pwrite, 68);
    CHECK_EQ(n_close, 1);
}

static ssize_t zero_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    (void)fd, (void)buf, (void)n, (void)off;
    return 0;
}

TEST(pwrite_without_progress_is_an_error)
{
    sop__fault_reset();
    sop_err err = {0};
    sop__os_ops t = *sop__os_default_ops();
    t.pwrite = zero_pwrite;
    const char *p = path_in("z");
    int fd = create_file(p);
    sop__os_set_ops(&t);
    sop_rc rc = sop__os_pwrite_all(S, fd, "abc", 3, 0, p, &err);
    sop__os_set_ops(NULL);
    CHECK_RC(rc, SOP_IO, &err);
    CHECK_EQ(err.sys_errno, EIO);
    CHECK_OK(sop__os_close(S, fd, p, &err), &err);
}

TEST(wrappers_count_their_site)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("sites");
    int fd = -1;
    CHECK_OK(sop__os_open(SOP__SITE_TEST_B, p, O_RDWR | O_CREAT, 0600, &fd, &err), &err);
    CHECK_OK(sop__os_pwrite_all(SOP__SITE_TEST_B, fd, "x", 1, 0, p, &err), &err);
    CHECK_OK(sop__os_fsync(SOP__SITE_TEST_A, fd, p, &err), &err);
    CHECK_OK(sop__os_close(SOP__SITE_TEST_B, fd, p, &err), &err);
    CHECK_OK(sop__os_close(SOP__SITE_TEST_B, -1, p, &err), &err); /* not counted */
    sop__os_dir d;
    CHECK_OK(sop__os_dir_open(SOP__SITE_TEST_A, t_tmpdir(), &d, &err), &err);
    const char *name;
    CHECK_OK(sop__os_dir_next(&d, &name, &err), &err);
    CHECK_RC(sop__os_dir_next(&d, &name, &err), SOP_NOTFOUND, &err);
    sop__os_dir_close(&d);
    CHECK_EQ(sop__fault_site_calls(SOP__SITE_TEST_A), 4);
    CHECK_EQ(sop__fault_site_calls(SOP__SITE_TEST_B), 3);
    CHECK_EQ(sop__fault_site_calls(SOP__SITE_ALL), 7);
}
