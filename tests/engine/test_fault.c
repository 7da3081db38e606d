/*
 * test_fault.c - the fault-injection layer (engine/src/fault.c): I/O faults
 * at the Nth call of a site (once, persistent, any site), short writes,
 * kills at crash points and I/O sites in child processes, allocation
 * failures, counters, the SOP_FAULT syntax and its error reporting.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault.h"
#include "mem.h"
#include "os.h"
#include "t.h"

#define A SOP__SITE_TEST_A
#define B SOP__SITE_TEST_B

static char *path_in(const char *name)
{
    static char buf[4][4096];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof(buf[0]), "%s/%s", t_tmpdir(), name);
    return p;
}

/* Opens a fresh file through site B (so A's counters stay untouched). */
static int create_file(const char *path)
{
    sop_err err = {0};
    int fd = -1;
    CHECK_OK(sop__os_open(B, path, O_RDWR | O_CREAT | O_TRUNC, 0600, &fd, &err), &err);
    return fd;
}

static off_t file_size(const char *path)
{
    struct stat st;
    CHECK(stat(path, &st) == 0);
    return st.st_size;
}

/* ---- Child processes ---- */

/* Writes a formatted line to fd (child side). */
static void say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(int fd, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 1)
        n = (int)sizeof(buf) - 1;
    for (int off = 0; off < n;) {
        ssize_t w = write(fd, buf + off, (size_t)(n - off));
        if (w <= 0)
            _exit(99);
        off += (int)w;
    }
}

typedef void child_fn(int out, void *arg);

/*
 * Forks; the child runs fn(write end of a pipe, arg) and then _exit(0).
 * Collects what the child wrote (NUL-terminated, up to cap - 1 bytes) and
 * returns its wait status.
 */
static int run_child(child_fn *fn, void *arg, char *out, size_t cap)
{
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        fn(pfd[1], arg);
        _exit(0);
    }
    close(pfd[1]);
    size_t len = 0;
    for (;;) {
        ssize_t r = read(pfd[0], out + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == cap - 1)
            break;
    }
    out[len] = '\0';
    close(pfd[0]);
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    return status;
}

#define CHECK_KILLED(status)                                                                       \
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,                                  \
              "child was not killed by SIGKILL (status %#x)", (unsigned)(status))
#define CHECK_EXITED_0(status)                                                                     \
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", (unsigned)(status))

/* ---- Names ---- */

static void count_entry(void *ctx, bool is_point, const char *name, const char *desc)
{
    unsigned *n = ctx;
    n[is_point]++;
    if (name == NULL || desc == NULL || *name == '\0' || *desc == '\0')
        n[2]++;
}

TEST(names_lookup_and_list)
{
    for (unsigned i = 0; i < SOP__SITE_COUNT; i++) {
        const char *n = sop__fault_site_name((sop__site)i);
        CHECK(n != NULL && sop__fault_site_desc((sop__site)i) != NULL);
        sop__site s = SOP__SITE_COUNT;
        CHECK(sop__fault_site_lookup(n, &s));
        CHECK_EQ(s, i);
        for (unsigned j = 0; j < i; j++)
            CHECK(strcmp(n, sop__fault_site_name((sop__site)j)) != 0);
    }
    for (unsigned i = 0; i < SOP__POINT_COUNT; i++) {
        const char *n = sop__fault_point_name((sop__point)i);
        CHECK(n != NULL && sop__fault_point_desc((sop__point)i) != NULL);
        sop__point p = SOP__POINT_COUNT;
        CHECK(sop__fault_point_lookup(n, &p));
        CHECK_EQ(p, i);
        for (unsigned j = 0; j < i; j++)
            CHECK(strcmp(n, sop__fault_point_name((sop__point)j)) != 0);
    }
    CHECK(strcmp(sop__fault_site_name(A), "test.a") == 0);
    CHECK(strcmp(sop__fault_point_name(SOP__POINT_TEST_POINT), "test.point") == 0);
    CHECK(strcmp(sop__fault_site_name(SOP__SITE_ALL), "all") == 0);
    CHECK(sop__fault_site_name((sop__site)(SOP__SITE_COUNT + 1)) == NULL);
    CHECK(sop__fault_point_name(SOP__POINT_COUNT) == NULL);
    sop__site s = A;
    CHECK(sop__fault_site_lookup("all", &s) && s == SOP__SITE_ALL);
    s = B;
    CHECK(!sop__fault_site_lookup("test.nope", &s) && s == B);
    CHECK(!sop__fault_site_lookup(NULL, &s));
    sop__point p = SOP__POINT_TEST_POINT;
    CHECK(!sop__fault_point_lookup("test.a", &p));
    CHECK(strcmp(sop__fault_kind_name(SOP__FAULT_SHORT_WRITE), "SHORT_WRITE") == 0);
    CHECK(sop__fault_kind_name((sop__fault_kind)99) == NULL);

    unsigned n[3] = {0, 0, 0};
    sop__fault_list(count_entry, n);
    CHECK_EQ(n[0], SOP__SITE_COUNT);
    CHECK_EQ(n[1], SOP__POINT_COUNT);
    CHECK_EQ(n[2], 0);
}

/* ---- I/O faults ---- */

TEST(eio_at_nth_call_once)
{
    sop__fault_reset();
    CHECK_EQ(atomic_load(&sop__fault_armed), 0); /* reset: fast path */
    sop_err err = {0};
    const char *p = path_in("once");
    int fd = create_file(p);
    sop__fault_io(A, 3, SOP__FAULT_EIO, false);
    CHECK(atomic_load(&sop__fault_armed) != 0);
    for (unsigned i = 1; i <= 5; i++) {
        char rec[8];
        snprintf(rec, sizeof(rec), "rec%04u", i);
        sop_rc rc = sop__os_pwrite_all(A, fd, rec, 8, (i - 1) * 8, p, &err);
        if (i == 3) {
            CHECK_RC(rc, SOP_IO, &err);
            CHECK_EQ(err.code, SOP_IO);
            CHECK_EQ(err.sys_errno, EIO);
            char want[4200];
            snprintf(want, sizeof(want), "pwrite of 8 bytes at offset 16 to %s failed: %s", p,
                     strerror(EIO));
            CHECK_MSG(strcmp(err.msg, want) == 0, "msg: %s", err.msg);
        } else {
            CHECK_OK(rc, &err);
        }
    }
    CHECK_EQ(sop__fault_site_calls(A), 5);
    CHECK_EQ(sop__fault_injected(), 1);
    CHECK_EQ(atomic_load(&sop__fault_armed), 0); /* the once-rule is spent */
    /* The failed call wrote nothing: record 3 is a hole of zeros. */
    char buf[40];
    CHECK_OK(sop__os_pread_full(B, fd, buf, 40, 0, NULL, p, &err), &err);
    CHECK(memcmp(buf + 8, "rec0002", 8) == 0);
    CHECK(memcmp(buf + 16, "\0\0\0\0\0\0\0\0", 8) == 0);
    CHECK(memcmp(buf + 24, "rec0004", 8) == 0);
    CHECK_OK(sop__os_close(B, fd, p, &err), &err);
}

TEST(enospc_persistent)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("persist");
    int fd = create_file(p);
    sop__fault_io(A, 2, SOP__FAULT_ENOSPC, true);
    CHECK_OK(sop__os_fdatasync(A, fd, p, &err), &err);
    for (int i = 0; i < 4; i++) {
        CHECK_RC(sop__os_fdatasync(A, fd, p, &err), SOP_IO, &err);
        CHECK_EQ(err.sys_errno, ENOSPC);
        CHECK_MSG(strstr(err.msg, "fdatasync of ") && strstr(err.msg, p), "msg: %s", err.msg);
    }
    CHECK_EQ(sop__fault_injected(), 4);
    /* Other sites are unaffected. */
    CHECK_OK(sop__os_fdatasync(B, fd, p, &err), &err);
    sop__fault_reset();
    CHECK_OK(sop__os_fdatasync(A, fd, p, &err), &err);
    CHECK_EQ(sop__fault_site_calls(A), 1);
    CHECK_EQ(sop__fault_site_calls(B), 0);
    CHECK_EQ(sop__fault_injected(), 0);
    CHECK_OK(sop__os_close(B, fd, p, &err), &err);
}

TEST(erofs_on_every_kind_of_operation)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("f"), *q = path_in("g"), *d = path_in("d");
    int fd = create_file(p);
    sop__fault_io(A, 1, SOP__FAULT_EROFS, true);
    int fd2 = -7;
    struct stat st;
    sop__os_dir dir = {0};
    const char *name;
    char b[4];
    CHECK_RC(sop__os_open(A, q, O_RDWR | O_CREAT, 0600, &fd2, &err), SOP_IO, &err);
    CHECK_EQ(fd2, -7);
    CHECK_EQ(err.sys_errno, EROFS);
    CHECK_RC(sop__os_pread_full(A, fd, b, 4, 0, NULL, p, &err), SOP_IO, &err);
    CHECK_RC(sop__os_fsync(A, fd, p, &err), SOP_IO, &err);
    CHECK_RC(sop__os_ftruncate(A, fd, 10, p, &err), SOP_IO, &err);
    CHECK_RC(sop__os_fallocate(A, fd, 0, 0, 10, p, &err), SOP_IO, &err);
    CHECK_RC(sop__os_fstat(A, fd, &st, p, &err), SOP_IO, &err);
    CHECK_RC(sop__os_rename(A, p, q, &err), SOP_IO, &err);
    CHECK_RC(sop__os_unlink(A, p, &err), SOP_IO, &err);
    CHECK_RC(sop__os_mkdir(A, d, 0700, &err), SOP_IO, &err);
    CHECK_RC(sop__os_rmdir(A, d, &err), SOP_IO, &err); /* not SOP_NOTFOUND: never ran */
    CHECK_RC(sop__os_fsync_dir(A, t_tmpdir(), &err), SOP_IO, &err);
    CHECK_RC(sop__os_stat(A, p, &st, &err), SOP_IO, &err);
    CHECK_RC(sop__os_lock(A, fd, SOP__OS_LOCK_SHARED, 0, 1, false, p, &err), SOP_IO, &err);
    CHECK_RC(sop__os_unlock(A, fd, 0, 1, p, &err), SOP_IO, &err);
    CHECK_RC(sop__os_dir_open(A, t_tmpdir(), &dir, &err), SOP_IO, &err);
    CHECK_OK(sop__os_dir_open(B, t_tmpdir(), &dir, &err), &err);
    dir.site = A; /* readdir counts as a call of the dir_open site */
    CHECK_RC(sop__os_dir_next(&dir, &name, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, EROFS);
    sop__os_dir_close(&dir);
    CHECK_EQ(sop__fault_injected(), 16);
    CHECK_EQ(err.sys_errno, EROFS);
    /* Nothing reached the file system. */
    CHECK(access(p, F_OK) == 0 && access(q, F_OK) != 0 && access(d, F_OK) != 0);
    CHECK_EQ(file_size(p), 0);
    /* close still releases the descriptor when it reports the fault. */
    CHECK_RC(sop__os_close(A, fd, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, EROFS);
    CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF);
}

TEST(sites_count_separately_and_all_counts_every_site)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("x");
    int fd = create_file(p); /* one call of B */
    sop__fault_io(B, 2, SOP__FAULT_EIO, false);
    CHECK_OK(sop__os_fsync(A, fd, p, &err), &err);
    CHECK_OK(sop__os_fsync(A, fd, p, &err), &err);
    CHECK_OK(sop__os_fsync(B, fd, p, &err), &err);         /* B #1 since armed */
    CHECK_RC(sop__os_fsync(B, fd, p, &err), SOP_IO, &err); /* B #2 */
    CHECK_OK(sop__os_fsync(B, fd, p, &err), &err);         /* once */
    CHECK_EQ(sop__fault_site_calls(A), 2);
    CHECK_EQ(sop__fault_site_calls(B), 4);
    CHECK_EQ(sop__fault_site_calls(SOP__SITE_ALL), 6);

    /* ALL: the 3rd call of any site from now on. */
    sop__fault_io(SOP__SITE_ALL, 3, SOP__FAULT_EIO, false);
    CHECK_OK(sop__os_fsync(A, fd, p, &err), &err);
    CHECK_OK(sop__os_fsync(B, fd, p, &err), &err);
    CHECK_RC(sop__os_fsync(A, fd, p, &err), SOP_IO, &err);
    CHECK_OK(sop__os_fsync(B, fd, p, &err), &err);

    /* ALL persistent. */
    sop__fault_io(SOP__SITE_ALL, 2, SOP__FAULT_EIO, true);
    CHECK_OK(sop__os_fsync(B, fd, p, &err), &err);
    CHECK_RC(sop__os_fsync(A, fd, p, &err), SOP_IO, &err);
    CHECK_RC(sop__os_fsync(B, fd, p, &err), SOP_IO, &err);
    CHECK_EQ(sop__fault_injected(), 4);

    /* Several rules: the first matching one (in arming order) decides. */
    sop__fault_reset();
    sop__fault_io(A, 1, SOP__FAULT_ENOSPC, false);
    sop__fault_io(A, 1, SOP__FAULT_EROFS, false);
    CHECK_RC(sop__os_fsync(A, fd, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, ENOSPC);
    CHECK_OK(sop__os_fsync(A, fd, p, &err), &err); /* the 2nd rule's call 1 has passed */
    CHECK_OK(sop__os_close(B, fd, p, &err), &err);
}

TEST(short_write_writes_half_then_enospc)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("short");
    int fd = create_file(p);
    unsigned char w[101];
    for (size_t i = 0; i < sizeof(w); i++)
        w[i] = (unsigned char)(i + 1);
    sop__fault_io(A, 1, SOP__FAULT_SHORT_WRITE, false);
    CHECK_RC(sop__os_pwrite_all(A, fd, w, sizeof(w), 0, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, ENOSPC);
    char want[4200];
    snprintf(want, sizeof(want),
             "pwrite of 101 bytes at offset 0 to %s failed after writing 50 bytes: %s", p,
             strerror(ENOSPC));
    CHECK_MSG(strcmp(err.msg, want) == 0, "msg: %s", err.msg);
    CHECK_EQ(file_size(p), 50);
    unsigned char r[50];
    CHECK_OK(sop__os_pread_full(B, fd, r, 50, 0, NULL, p, &err), &err);
    CHECK(memcmp(r, w, 50) == 0);

    /* 2 bytes: 1 written. 1 byte: nothing written, still ENOSPC. */
    sop__fault_io(A, 1, SOP__FAULT_SHORT_WRITE, true);
    CHECK_RC(sop__os_pwrite_all(A, fd, "ab", 2, 1000, p, &err), SOP_IO, &err);
    CHECK_EQ(file_size(p), 1001);
    CHECK_RC(sop__os_pwrite_all(A, fd, "c", 1, 2000, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, ENOSPC);
    CHECK_EQ(file_size(p), 1001);
    CHECK_RC(sop__os_pwrite_all(A, fd, "", 0, 3000, p, &err), SOP_IO, &err);
    /* On an operation that is not a write it is an EIO. */
    CHECK_RC(sop__os_fsync(A, fd, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, EIO);
    CHECK_EQ(sop__fault_injected(), 5);
    CHECK_OK(sop__os_close(B, fd, p, &err), &err);
}

/* The SQLite-style loop: fail call N = 1, 2, ... of any site until the
 * operation completes; every failure must be clean and leak nothing. */
static sop_rc write_file(const char *p, sop_err *err)
{
    int fd = -1;
    sop_rc rc0 = sop__os_open(A, p, O_RDWR | O_CREAT | O_TRUNC, 0600, &fd, err);
    if (rc0 != SOP_OK)
        return rc0;
    sop_rc rc = sop__os_pwrite_all(A, fd, "payload", 7, 0, p, err);
    if (rc == SOP_OK)
        rc = sop__os_fdatasync(A, fd, p, err);
    sop_err ignore;
    sop_rc rc2 = sop__os_close(A, fd, p, rc == SOP_OK ? err : &ignore);
    return rc != SOP_OK ? rc : rc2;
}

static int next_fd(void)
{
    int fd = open("/dev/null", O_RDONLY);
    close(fd);
    return fd;
}

TEST(fail_every_call_in_turn_once_and_persistent)
{
    const char *p = path_in("loop");
    int fd0 = next_fd();
    for (int persistent = 0; persistent < 2; persistent++) {
        unsigned n;
        for (n = 1; n < 100; n++) {
            sop__fault_reset();
            sop__fault_io(SOP__SITE_ALL, n, SOP__FAULT_EIO, persistent);
            sop_err err = {0};
            sop_rc rc = write_file(p, &err);
            if (sop__fault_injected() == 0) {
                CHECK_OK(rc, &err);
                break;
            }
            CHECK_RC(rc, SOP_IO, &err);
            CHECK_EQ(err.sys_errno, EIO);
            CHECK_EQ(next_fd(), fd0); /* no descriptor leaked */
        }
        CHECK_EQ(n, 5); /* open, pwrite, fdatasync, close: 4 calls */
    }
    sop__fault_reset(); /* the last, persistent rule is still armed */
}

/* ---- Kills, in child processes ---- */

static void kill_at_point_child(int out, void *arg)
{
    (void)arg;
    sop__fault_reset();
    sop__fault_kill_at(SOP__POINT_TEST_POINT, 3);
    for (int i = 1; i <= 10; i++) {
        say(out, "%d\n", i);
        SOP__CRASH_POINT(TEST_POINT);
    }
    say(out, "survived\n");
}

TEST(kill_at_nth_pass_of_a_crash_point)
{
    char out[256];
    int status = run_child(kill_at_point_child, NULL, out, sizeof(out));
    CHECK_KILLED(status);
    CHECK_MSG(strcmp(out, "1\n2\n3\n") == 0, "child wrote \"%s\"", out);
}

static void kill_at_site_child(int out, void *arg)
{
    const char *p = arg;
    sop_err err = {0};
    int fd = -1;
    sop__fault_reset();
    if (sop__os_open(B, p, O_RDWR | O_CREAT | O_TRUNC, 0600, &fd, &err) != SOP_OK) {
        say(out, "open: %s\n", err.msg);
        return;
    }
    sop__fault_io(A, 4, SOP__FAULT_KILL, false);
    for (unsigned i = 1; i <= 10; i++) {
        char rec[8];
        snprintf(rec, sizeof(rec), "rec%04u", i);
        say(out, "w%u\n", i);
        if (sop__os_pwrite_all(A, fd, rec, 8, (i - 1) * 8, p, &err) != SOP_OK)
            say(out, "error %s\n", err.msg);
    }
    say(out, "survived\n");
}

TEST(kill_at_nth_call_of_an_io_site)
{
    char out[256];
    const char *p = path_in("killed");
    int status = run_child(kill_at_site_child, (void *)p, out, sizeof(out));
    CHECK_MSG(strcmp(out, "w1\nw2\nw3\nw4\n") == 0, "child wrote \"%s\"", out);
    CHECK_KILLED(status);
    /* Killed before the 4th write reached the file. */
    CHECK_EQ(file_size(p), 24);
}

/* ---- SOP_FAULT ---- */

static void env_kill_child(int out, void *arg)
{
    (void)arg;
    setenv("SOP_FAULT", " point=test.point : nth=2 : action=kill ", 1);
    sop__fault_reset();
    int n = sop__fault_load_env();
    say(out, "armed %d\n", n);
    for (int i = 1; i <= 5; i++) {
        say(out, "%d\n", i);
        SOP__CRASH_POINT(TEST_POINT);
    }
}

TEST(sop_fault_env_kill_at_point)
{
    char out[256];
    int status = run_child(env_kill_child, NULL, out, sizeof(out));
    CHECK_KILLED(status);
    CHECK_MSG(strcmp(out, "armed 1\n1\n2\n") == 0, "child wrote \"%s\"", out);
}

static void env_errors_child(int out, void *arg)
{
    const char *dir = arg;
    sop_err err = {0};
    setenv("SOP_FAULT", "site=test.a:nth=zz;site=test.b:nth=2:err=EROFS:persist=1;;alloc:nth=2", 1);
    sop__fault_reset();
    say(out, "armed %d\n", sop__fault_load_env());
    const char *e = sop__fault_last_error();
    say(out, "error %s\n", e ? e : "(none)");
    for (int i = 1; i <= 3; i++) {
        sop_rc rc = sop__os_fsync_dir(B, dir, &err);
        say(out, "b%d %s %d\n", i, sop_rc_name(rc), rc == SOP_OK ? 0 : err.sys_errno);
    }
    for (int i = 1; i <= 3; i++) {
        void *m = sop__malloc(16);
        say(out, "m%d %s\n", i, m ? "ok" : "NULL");
        sop__free(m);
    }
    sop__fault_reset();
    say(out, "after reset %s\n", sop__fault_last_error() ? "error" : "clean");
}

TEST(sop_fault_env_arms_good_items_and_reports_bad_ones)
{
    char out[1024];
    int status = run_child(env_errors_child, (void *)t_tmpdir(), out, sizeof(out));
    CHECK_EXITED_0(status);
    char want[1024];
    snprintf(want, sizeof(want),
             "armed 2\n"
             "error SOP_FAULT: item 1 \"site=test.a:nth=zz\": bad nth \"zz\" (expected a number "
             ">= 1)\n"
             "b1 SOP_OK 0\nb2 SOP_IO %d\nb3 SOP_IO %d\n"
             "m1 ok\nm2 NULL\nm3 ok\n"
             "after reset clean\n",
             EROFS, EROFS);
    CHECK_MSG(strcmp(out, want) == 0, "child wrote \"%s\"", out);
}

/* The exec'd child: nothing has touched the fault layer yet, so its first
 * hook reads SOP_FAULT (lazily), and N counts from the start of the process,
 * that first call included. Registered only in the child (see below). */
static void lazy_env_child(void)
{
    int out = atoi(getenv("SOP_TEST_LAZY_FD"));
    sop_err err = {0};
    sop_rc rc = sop__os_fsync_dir(A, ".", &err); /* the very first hook */
    say(out, "a1 %s %d\n", sop_rc_name(rc), rc == SOP_OK ? 0 : err.sys_errno);
    rc = sop__os_fsync_dir(A, ".", &err);
    say(out, "a2 %s\n", sop_rc_name(rc));
    const char *e = sop__fault_last_error();
    say(out, "error %s\n", e ? e : "(none)");
    for (int i = 1; i <= 5; i++) {
        say(out, "hit %d\n", i);
        SOP__CRASH_POINT(TEST_POINT);
    }
    say(out, "survived\n");
}

__attribute__((constructor)) static void register_lazy_env_child(void)
{
    if (getenv("SOP_TEST_LAZY_FD"))
        t_register("lazy_env_child", lazy_env_child);
}

TEST(sop_fault_env_is_read_lazily_in_a_new_process)
{
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        char fdbuf[16];
        snprintf(fdbuf, sizeof(fdbuf), "%d", pfd[1]);
        setenv("SOP_TEST_LAZY_FD", fdbuf, 1);
        setenv("SOP_FAULT", "bogus;site=test.a:nth=1:err=EROFS;point=test.point:nth=3:action=kill",
               1);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execl("/proc/self/exe", "test_fault", "lazy_env_child", (char *)NULL);
        _exit(98);
    }
    close(pfd[1]);
    char out[1024];
    size_t len = 0;
    ssize_t r;
    while ((r = read(pfd[0], out + len, sizeof(out) - 1 - len)) > 0)
        len += (size_t)r;
    out[len] = '\0';
    close(pfd[0]);
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK_KILLED(status);
    char want[1024];
    snprintf(want, sizeof(want),
             "a1 SOP_IO %d\na2 SOP_OK\n"
             "error SOP_FAULT: item 1 \"bogus\": unknown field \"bogus\" (expected key=value)\n"
             "hit 1\nhit 2\nhit 3\n",
             EROFS);
    CHECK_MSG(strcmp(out, want) == 0, "child wrote \"%s\"", out);
}

TEST(sop_fault_syntax_in_process)
{
    sop__fault_reset();
    sop_err err = {0};
    const char *p = path_in("syn");
    int fd = create_file(p);

    /* Malformed items are rejected with a message; nothing is armed. */
    static const struct {
        const char *spec, *why;
    } bad[] = {
        {"nth=3", "no site=, point= or alloc"},
        {"site=test.nope", "unknown site \"test.nope\""},
        {"site=", "\"site\" needs a name"},
        {"point=test.a", "unknown point \"test.a\""},
        {"site=test.a:nth=0", "bad nth \"0\""},
        {"site=test.a:nth=-1", "bad nth"},
        {"site=test.a:nth=3x", "bad nth"},
        {"site=test.a:nth=99999999999999999999999", "bad nth"},
        {"site=test.a:err=EFOO", "bad err \"EFOO\""},
        {"site=test.a:action=explode", "bad action"},
        {"site=test.a:persist=maybe", "bad persist"},
        {"site=test.a:err=EIO:action=kill", "both err= and action=kill"},
        {"site=test.a:site=test.b", "given twice"},
        {"site=test.a:nth=1:nth=2", "given twice"},
        {"point=test.point:err=EIO", "a crash point only takes"},
        {"point=test.point:persist=1", "a crash point only takes"},
        {"alloc=3", "\"alloc\" takes no value"},
        {"alloc:err=EIO", "alloc only takes"},
        {"site=test.a:colour=red", "unknown field \"colour\""},
        {"garbage", "unknown field \"garbage\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sop_err_clear(&err);
        CHECK_RC(sop__fault_parse(bad[i].spec, &err), SOP_INVALID, &err);
        CHECK_MSG(strstr(err.msg, bad[i].why) != NULL, "spec \"%s\": msg \"%s\"", bad[i].spec,
                  err.msg);
        CHECK_MSG(strstr(err.msg, "item 1") != NULL, "msg \"%s\"", err.msg);
        CHECK(sop__fault_last_error() != NULL);
        CHECK_EQ(atomic_load(&sop__fault_armed), 0);
    }
    char huge[2000];
    memset(huge, 'x', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    CHECK_RC(sop__fault_parse(huge, &err), SOP_INVALID, &err);
    CHECK_OK(sop__os_fsync(A, fd, p, &err), &err);
    CHECK_EQ(sop__fault_injected(), 0);

    /* Empty specs arm nothing and are fine. */
    sop__fault_reset();
    CHECK(sop__fault_last_error() == NULL);
    CHECK_OK(sop__fault_parse("", &err), &err);
    CHECK_OK(sop__fault_parse(" ; ;", &err), &err);
    CHECK_OK(sop__fault_parse(NULL, &err), &err);
    CHECK_EQ(atomic_load(&sop__fault_armed), 0);

    /* Defaults: nth=1, err=EIO, once. Case-insensitive kinds, "short". */
    CHECK_OK(sop__fault_parse("site=test.a", &err), &err);
    CHECK_RC(sop__os_fsync(A, fd, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, EIO);
    CHECK_OK(sop__os_fsync(A, fd, p, &err), &err);
    CHECK_OK(
        sop__fault_parse("site=test.b:nth=2:err=enospc:persist=yes;site=test.a:err=short", &err),
        &err);
    CHECK_OK(sop__os_fsync(B, fd, p, &err), &err);
    CHECK_RC(sop__os_fsync(B, fd, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, ENOSPC);
    CHECK_RC(sop__os_fsync(B, fd, p, &err), SOP_IO, &err);
    CHECK_RC(sop__os_pwrite_all(A, fd, "abcd", 4, 0, p, &err), SOP_IO, &err);
    CHECK_EQ(file_size(p), 2);
    CHECK_OK(sop__fault_parse("site=all:nth=2:err=EROFS", &err), &err);
    CHECK_OK(sop__os_fsync(A, fd, p, &err), &err);
    CHECK_RC(sop__os_fsync(A, fd, p, &err), SOP_IO, &err);
    CHECK_EQ(err.sys_errno, EROFS);
    /* A good item next to a bad one is armed; the error names item 2. */
    sop__fault_reset();
    CHECK_RC(sop__fault_parse("alloc:nth=1;site=test.zz;", &err), SOP_INVALID, &err);
    CHECK_MSG(strstr(err.msg, "item 2 \"site=test.zz\"") != NULL, "msg \"%s\"", err.msg);
    CHECK(strcmp(sop__fault_last_error(), err.msg) == 0);
    CHECK(sop__malloc(1) == NULL);
    CHECK_OK(sop__os_close(B, fd, p, &err), &err);
}

TEST(too_many_rules_are_reported)
{
    sop__fault_reset();
    for (int i = 0; i < 32; i++)
        sop__fault_io(A, 1000, SOP__FAULT_EIO, false);
    CHECK(sop__fault_last_error() == NULL);
    sop__fault_io(A, 1000, SOP__FAULT_EIO, false);
    CHECK(sop__fault_last_error() != NULL && strstr(sop__fault_last_error(), "too many"));
    sop_err err = {0};
    CHECK_RC(sop__fault_parse("site=test.b", &err), SOP_INVALID, &err);
    CHECK(strstr(err.msg, "too many") != NULL);
    sop__fault_reset();
    sop__fault_io((sop__site)(SOP__SITE_COUNT + 5), 1, SOP__FAULT_EIO, false);
    CHECK(sop__fault_last_error() != NULL);
    sop__fault_reset();
    sop__fault_io(A, 1, SOP__FAULT_NONE, false);
    CHECK(sop__fault_last_error() != NULL);
    CHECK_EQ(atomic_load(&sop__fault_armed), 0);
    sop__fault_reset();
}

/* ---- Allocation faults ---- */

TEST(alloc_fails_nth_once_and_persistent)
{
    sop__fault_reset();
    sop__fault_alloc(3, false);
    void *p[5];
    for (int i = 0; i < 5; i++)
        p[i] = sop__malloc(32);
    CHECK(p[0] && p[1] && !p[2] && p[3] && p[4]);
    CHECK_EQ(sop__fault_injected(), 1);
    CHECK_EQ(atomic_load(&sop__fault_armed), 0);
    for (int i = 0; i < 5; i++)
        sop__free(p[i]);

    sop__fault_reset();
    void *keep = sop__malloc(8);
    CHECK(keep != NULL);
    memcpy(keep, "1234567", 8);
    sop__fault_alloc(2, true);
    void *a = sop__calloc(4, 4);
    CHECK(a != NULL);
    CHECK(sop__malloc(1) == NULL);
    CHECK(sop__calloc(1, 1) == NULL);
    CHECK(sop__realloc(keep, 4096) == NULL);
    CHECK(memcmp(keep, "1234567", 8) == 0); /* old block untouched */
    CHECK_EQ(sop__fault_injected(), 3);
    sop__fault_reset();
    void *b = sop__realloc(keep, 4096);
    CHECK(b != NULL);
    CHECK(memcmp(b, "1234567", 8) == 0);
    sop__free(b);
    sop__free(a);
}

/* ---- Counters ---- */

TEST(crash_point_hits_counted_when_nothing_armed)
{
    sop__fault_reset();
    CHECK_EQ(sop__fault_point_hits(SOP__POINT_TEST_POINT), 0);
    for (int i = 0; i < 5; i++)
        SOP__CRASH_POINT(TEST_POINT);
    CHECK_EQ(atomic_load(&sop__fault_armed), 0);
    CHECK_EQ(sop__fault_point_hits(SOP__POINT_TEST_POINT), 5);
    CHECK_EQ(sop__fault_point_hits(SOP__POINT_COUNT), 0);
    /* Arming counts from now on: kill at the 2nd pass from here, never reached. */
    sop__fault_kill_at(SOP__POINT_TEST_POINT, 2);
    SOP__CRASH_POINT(TEST_POINT);
    CHECK_EQ(sop__fault_point_hits(SOP__POINT_TEST_POINT), 6);
    sop__fault_reset();
    CHECK_EQ(sop__fault_point_hits(SOP__POINT_TEST_POINT), 0);
    SOP__CRASH_POINT(TEST_POINT);
    SOP__CRASH_POINT(TEST_POINT);
    CHECK_EQ(sop__fault_point_hits(SOP__POINT_TEST_POINT), 2);
}

#define THREADS    4
#define PER_THREAD 1000

typedef struct worker {
    int fd;
    const char *path;
    int failures;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    sop_err err = {0};
    struct stat st;
    for (int i = 0; i < PER_THREAD; i++) {
        SOP__CRASH_POINT(TEST_POINT);
        if (sop__os_fstat(A, w->fd, &st, w->path, &err) != SOP_OK)
            w->failures++;
    }
    return NULL;
}

TEST(counters_are_exact_under_threads)
{
    sop__fault_reset();
    const char *p = path_in("thr");
    int fd = create_file(p);
    sop__fault_io(A, 2500, SOP__FAULT_EIO, false);
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){fd, p, 0};
        CHECK(pthread_create(&th[i], NULL, work, &w[i]) == 0);
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        failures += w[i].failures;
    }
    CHECK_EQ(failures, 1);
    CHECK_EQ(sop__fault_site_calls(A), THREADS * PER_THREAD);
    CHECK_EQ(sop__fault_point_hits(SOP__POINT_TEST_POINT), THREADS * PER_THREAD);
    CHECK_EQ(sop__fault_injected(), 1);
    sop_err err = {0};
    CHECK_OK(sop__os_close(B, fd, p, &err), &err);
}
