/*
 * test_blob.c - the blob store (blob.c) against real files: round trips,
 * the <root>/<hh>/<uuid> layout and its modes, rewrites, missing and huge
 * blobs, listing past junk names, which folders a durable put fsyncs (an
 * interposed operations table records them), mkdir races, and an injected
 * I/O error at every call of every blob site.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blob.h"
#include "fault.h"
#include "mem.h"
#include "os.h"
#include "t.h"
#include "uuid.h"

/* "<test folder>/<fmt...>" in one of 8 rotating buffers. */
static char *path_in(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *path_in(const char *fmt, ...)
{
    static char buf[8][SOP__BLOB_PATH_MAX];
    static int next;
    char *p = buf[next++ % 8];
    char name[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    snprintf(p, sizeof(buf[0]), "%s/%s", t_tmpdir(), name);
    return p;
}

static sop__blobstore *open_store(const char *root)
{
    sop_err err = {0};
    sop__blobstore *bs = NULL;
    CHECK_OK(sop__blob_open(root, &bs, &err), &err);
    CHECK(bs != NULL);
    return bs;
}

static void id_of(uint8_t id[16], uint8_t first, uint8_t fill)
{
    memset(id, fill, 16);
    id[0] = first;
}

static void put_ok(sop__blobstore *bs, const uint8_t id[16], const void *p, size_t n,
                   unsigned flags)
{
    sop_err err = {0};
    CHECK_OK(sop__blob_put(bs, id, p, n, flags, &err), &err);
}

static void check_blob(sop__blobstore *bs, const uint8_t id[16], const void *p, size_t n)
{
    sop_err err = {0};
    uint8_t *data = NULL;
    size_t len = 12345;
    CHECK_OK(sop__blob_get(bs, id, &data, &len, &err), &err);
    CHECK_EQ(len, n);
    CHECK(n == 0 || memcmp(data, p, n) == 0);
    sop__free(data);
}

static void write_raw(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK_MSG(fd >= 0, "open %s: %s", path, strerror(errno));
    CHECK_EQ(write(fd, p, n), (long long)n);
    close(fd);
}

TEST(put_get_round_trips)
{
    sop__fault_reset();
    sop__blobstore *bs = open_store(path_in("blobs"));
    t_rng r;
    t_rng_seed(&r, t_seed());
    size_t sizes[] = {0, 1, 100, 4096, 4097, 1 << 20};
    uint8_t *buf = malloc(1 << 20);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        uint8_t id[16];
        sop__uuid_v4(id);
        for (size_t i = 0; i < sizes[k]; i++)
            buf[i] = (uint8_t)t_rng_next(&r);
        put_ok(bs, id, buf, sizes[k], k % 2 ? SOP__BLOB_SYNC : 0);
        check_blob(bs, id, buf, sizes[k]);
        sop_err err = {0};
        CHECK_OK(sop__blob_sync(bs, id, &err), &err);
        CHECK_OK(sop__blob_remove(bs, id, &err), &err);
        uint8_t *data = NULL;
        CHECK_RC(sop__blob_get(bs, id, &data, &sizes[0], &err), SOP_NOTFOUND, &err);
        CHECK(data == NULL);
    }
    free(buf);
    sop__blob_close(bs);
    sop__blob_close(NULL);
}

TEST(fan_out_layout_and_modes)
{
    sop__fault_reset();
    mode_t old = umask(0);
    const char *root = path_in("db/blobs");
    CHECK_EQ(mkdir(path_in("db"), 0755), 0);
    /* a trailing slash in the root is not part of the paths */
    char root_slash[SOP__BLOB_PATH_MAX];
    snprintf(root_slash, sizeof(root_slash), "%s//", root);
    sop__blobstore *bs = open_store(root_slash);
    static const uint8_t id[16] = {0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89,
                                   0x0a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78};
    char path[SOP__BLOB_PATH_MAX];
    sop__blob_path(bs, id, path);
    CHECK_MSG(strcmp(path, path_in("db/blobs/ab/abcdef01-2345-6789-0abc-def012345678")) == 0,
              "path %s", path);
    put_ok(bs, id, "hello", 5, 0);
    umask(old);
    struct stat st;
    CHECK_EQ(stat(root, &st), 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK_EQ(st.st_mode & 0777, 0700);
    CHECK_EQ(stat(path_in("db/blobs/ab"), &st), 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK_EQ(st.st_mode & 0777, 0700);
    CHECK_EQ(stat(path, &st), 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK_EQ(st.st_mode & 0777, 0600);
    CHECK_EQ(st.st_size, 5);
    check_blob(bs, id, "hello", 5);
    sop__blob_close(bs);

    /* The root's parent must exist: only the root and <hh> are created. */
    bs = open_store(path_in("nope/blobs"));
    sop_err err = {0};
    CHECK_RC(sop__blob_put(bs, id, "x", 1, 0, &err), SOP_IO, &err);
    CHECK_MSG(strstr(err.msg, path_in("nope/blobs")) && strstr(err.msg, "blob: "), "%s", err.msg);
    sop__blob_close(bs);
}

TEST(open_validates_the_root)
{
    sop__fault_reset();
    sop_err err = {0};
    sop__blobstore *bs = NULL;
    CHECK_RC(sop__blob_open("", &bs, &err), SOP_INVALID, &err);
    CHECK_RC(sop__blob_open(NULL, &bs, &err), SOP_INVALID, &err);
    char *longroot = malloc(SOP__BLOB_PATH_MAX + 10);
    memset(longroot, 'a', SOP__BLOB_PATH_MAX + 9);
    longroot[SOP__BLOB_PATH_MAX + 9] = '\0';
    CHECK_RC(sop__blob_open(longroot, &bs, &err), SOP_INVALID, &err);
    /* the longest root that leaves room for "/hh/<uuid>" */
    longroot[SOP__BLOB_PATH_MAX - 41] = '\0';
    CHECK_OK(sop__blob_open(longroot, &bs, &err), &err);
    uint8_t id[16];
    sop__uuid_v4(id);
    char path[SOP__BLOB_PATH_MAX];
    sop__blob_path(bs, id, path);
    CHECK_EQ(strlen(path), SOP__BLOB_PATH_MAX - 1);
    sop__blob_close(bs);
    bs = NULL;
    longroot[SOP__BLOB_PATH_MAX - 41] = 'a';
    longroot[SOP__BLOB_PATH_MAX - 40] = '\0';
    CHECK_RC(sop__blob_open(longroot, &bs, &err), SOP_INVALID, &err);
    CHECK(bs == NULL);
    free(longroot);
}

TEST(rewriting_a_blob)
{
    sop__fault_reset();
    sop__blobstore *bs = open_store(path_in("blobs"));
    uint8_t id[16];
    sop__uuid_v4(id);
    uint8_t data[10000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7);
    put_ok(bs, id, data, sizeof(data), SOP__BLOB_SYNC);
    put_ok(bs, id, data, sizeof(data), SOP__BLOB_SYNC); /* redo: same bytes */
    check_blob(bs, id, data, sizeof(data));
    char path[SOP__BLOB_PATH_MAX];
    sop__blob_path(bs, id, path);
    /* A partial file (a crash during the first put) is completed... */
    write_raw(path, data, 3000);
    put_ok(bs, id, data, sizeof(data), 0);
    check_blob(bs, id, data, sizeof(data));
    /* ...and a longer one cut to the blob's length. */
    uint8_t junk[20000];
    memset(junk, 0xee, sizeof(junk));
    write_raw(path, junk, sizeof(junk));
    put_ok(bs, id, data, sizeof(data), 0);
    check_blob(bs, id, data, sizeof(data));
    sop__blob_close(bs);
}

TEST(missing_blobs)
{
    sop__fault_reset();
    const char *root = path_in("blobs");
    sop__blobstore *bs = open_store(root);
    uint8_t id[16];
    sop__uuid_v4(id);
    char path[SOP__BLOB_PATH_MAX];
    sop__blob_path(bs, id, path);
    sop_err err = {0};
    uint8_t *data = NULL;
    size_t len = 0;
    /* the root does not even exist yet */
    CHECK_RC(sop__blob_get(bs, id, &data, &len, &err), SOP_NOTFOUND, &err);
    CHECK_MSG(strstr(err.msg, path) != NULL, "%s", err.msg);
    CHECK_RC(sop__blob_sync(bs, id, &err), SOP_NOTFOUND, &err);
    CHECK(strstr(err.msg, path) != NULL);
    CHECK_OK(sop__blob_remove(bs, id, &err), &err);
    /* the folder exists, the file does not */
    uint8_t other[16];
    memcpy(other, id, 16);
    other[15] ^= 1;
    put_ok(bs, other, "x", 1, 0);
    CHECK_RC(sop__blob_get(bs, id, &data, &len, &err), SOP_NOTFOUND, &err);
    CHECK(data == NULL);
    CHECK_OK(sop__blob_remove(bs, id, &err), &err);
    CHECK_OK(sop__blob_remove(bs, other, &err), &err);
    CHECK_OK(sop__blob_remove(bs, other, &err), &err);
    sop__blob_close(bs);
}

TEST(huge_blobs_are_refused)
{
    sop__fault_reset();
    sop__blobstore *bs = open_store(path_in("blobs"));
    uint8_t id[16];
    sop__uuid_v4(id);
    sop_err err = {0};
    static const uint8_t byte = 1;
    /* the data is never read: the size is refused first */
    CHECK_RC(sop__blob_put(bs, id, &byte, SOP__BLOB_SIZE_MAX + 1, 0, &err), SOP_LIMIT, &err);
    char path[SOP__BLOB_PATH_MAX];
    sop__blob_path(bs, id, path);
    CHECK_MSG(strstr(err.msg, path) != NULL, "%s", err.msg);
    struct stat st;
    CHECK(stat(path, &st) != 0);
    /* A file on disk that big is corrupt (a sparse one: nothing is read). */
    put_ok(bs, id, "x", 1, 0);
    CHECK_EQ(truncate(path, (off_t)SOP__BLOB_SIZE_MAX + 1), 0);
    uint8_t *data = NULL;
    size_t len = 0;
    CHECK_RC(sop__blob_get(bs, id, &data, &len, &err), SOP_CORRUPT, &err);
    CHECK(strstr(err.msg, path) != NULL);
    CHECK(data == NULL);
    CHECK_OK(sop__blob_remove(bs, id, &err), &err);
    /* A folder where the blob should be is not a blob. */
    CHECK_EQ(mkdir(path, 0700), 0);
    CHECK(sop__blob_get(bs, id, &data, &len, &err) != SOP_OK);
    CHECK(strstr(err.msg, path) != NULL);
    sop__blob_close(bs);
}

typedef struct seen {
    uint8_t ids[64][16];
    int n;
    int stop_after;
} seen;

static sop_rc collect(void *ctx, const uint8_t id[16])
{
    seen *s = ctx;
    if (s->n < 64)
        memcpy(s->ids[s->n], id, 16);
    s->n++;
    if (s->stop_after && s->n >= s->stop_after)
        return SOP_BUSY;
    return SOP_OK;
}

static bool has_id(const seen *s, const uint8_t id[16])
{
    for (int i = 0; i < s->n && i < 64; i++)
        if (memcmp(s->ids[i], id, 16) == 0)
            return true;
    return false;
}

TEST(list_skips_junk_names)
{
    sop__fault_reset();
    char root[SOP__BLOB_PATH_MAX];
    snprintf(root, sizeof(root), "%s", path_in("blobs"));
    sop__blobstore *bs = open_store(root);
    sop_err err = {0};
    seen s = {0};
    CHECK_OK(sop__blob_list(bs, collect, &s, &err), &err); /* no root yet */
    CHECK_EQ(s.n, 0);

    uint8_t ids[20][16];
    for (int i = 0; i < 20; i++) {
        sop__uuid_v4(ids[i]);
        /* several in one folder; none in 02 or cd, which hold junk below */
        ids[i][0] = i < 5 ? 0xab : (uint8_t)(0x10 + i);
        put_ok(bs, ids[i], &i, sizeof(i), 0);
    }
    /* Junk: temp files, wrong case, wrong folder, non-hex folders, a file
     * with a folder's name, an empty folder. */
    char text[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_format(ids[0], text);
    write_raw(path_in("blobs/ab/%s.tmp", text), "t", 1);
    write_raw(path_in("blobs/ab/notauuid"), "t", 1);
    char upper[SOP__UUID_TEXT_LEN + 1];
    strcpy(upper, text);
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    write_raw(path_in("blobs/ab/%s", upper), "t", 1);
    uint8_t stray[16];
    sop__uuid_v4(stray);
    stray[0] = 0x01;
    sop__uuid_format(stray, text);
    CHECK_EQ(mkdir(path_in("blobs/02"), 0700), 0);
    write_raw(path_in("blobs/02/%s", text), "t", 1); /* lives in the wrong folder */
    CHECK_EQ(mkdir(path_in("blobs/zz"), 0700), 0);
    write_raw(path_in("blobs/zz/%s", text), "t", 1);
    CHECK_EQ(mkdir(path_in("blobs/AB"), 0700), 0);
    write_raw(path_in("blobs/AB/%s", upper), "t", 1);
    CHECK_EQ(mkdir(path_in("blobs/abc"), 0700), 0);
    write_raw(path_in("blobs/cd"), "t", 1);
    write_raw(path_in("blobs/.hidden"), "t", 1);

    CHECK_OK(sop__blob_list(bs, collect, &s, &err), &err);
    CHECK_EQ(s.n, 20);
    for (int i = 0; i < 20; i++)
        CHECK(has_id(&s, ids[i]));
    CHECK(!has_id(&s, stray));

    /* A callback's error stops the listing and is returned. */
    seen stop = {.stop_after = 3};
    CHECK_RC(sop__blob_list(bs, collect, &stop, &err), SOP_BUSY, &err);
    CHECK_EQ(stop.n, 3);
    CHECK(strstr(err.msg, root) != NULL);
    sop__blob_close(bs);
}

/* ---- An interposed operations table: records fsyncs and can win a race
 * for mkdir. ---- */

static const sop__os_ops *real;
static char synced[16][SOP__BLOB_PATH_MAX];
static int nsynced, nfile_fsyncs;
static bool mkdir_race;

static int rec_fsync(int fd)
{
    nfile_fsyncs++;
    return real->fsync(fd);
}

static int rec_fsync_dir(const char *path)
{
    if (nsynced < 16)
        snprintf(synced[nsynced], sizeof(synced[0]), "%s", path);
    nsynced++;
    return real->fsync_dir(path);
}

/* Another process creates the folder just before we do. */
static int racing_mkdir(const char *path, mode_t mode)
{
    if (mkdir_race)
        real->mkdir(path, mode);
    return real->mkdir(path, mode);
}

static sop__os_ops rec_ops;

static void install_recorder(void)
{
    real = sop__os_default_ops();
    rec_ops = *real;
    rec_ops.fsync = rec_fsync;
    rec_ops.fsync_dir = rec_fsync_dir;
    rec_ops.mkdir = racing_mkdir;
    sop__os_set_ops(&rec_ops);
    nsynced = nfile_fsyncs = 0;
    mkdir_race = false;
}

static bool was_synced(const char *path)
{
    for (int i = 0; i < nsynced && i < 16; i++)
        if (strcmp(synced[i], path) == 0)
            return true;
    return false;
}

TEST(durable_puts_fsync_the_file_and_its_folders)
{
    sop__fault_reset();
    CHECK_EQ(mkdir(path_in("db"), 0700), 0);
    char root[SOP__BLOB_PATH_MAX];
    snprintf(root, sizeof(root), "%s", path_in("db/blobs"));
    sop__blobstore *bs = open_store(root);
    install_recorder();
    uint8_t a[16], b[16], c[16];
    id_of(a, 0x11, 1);
    id_of(b, 0x11, 2);
    id_of(c, 0x22, 3);

    /* Not durable: no fsync at all. */
    put_ok(bs, a, "a", 1, 0);
    CHECK_EQ(nfile_fsyncs + nsynced, 0);

    /* First durable put: the file, <hh>, the root and the root's parent. */
    put_ok(bs, b, "b", 1, SOP__BLOB_SYNC);
    CHECK_EQ(nfile_fsyncs, 1);
    CHECK_EQ(nsynced, 3);
    CHECK(was_synced(path_in("db")));
    CHECK(was_synced(root));
    CHECK(was_synced(path_in("db/blobs/11")));

    /* Same folder again: the file and <hh> (the file's entry) only. */
    nsynced = nfile_fsyncs = 0;
    put_ok(bs, b, "b", 1, SOP__BLOB_SYNC);
    CHECK_EQ(nfile_fsyncs, 1);
    CHECK_EQ(nsynced, 1);
    CHECK(was_synced(path_in("db/blobs/11")));

    /* A new folder: its entry in the root too. */
    nsynced = nfile_fsyncs = 0;
    put_ok(bs, c, "c", 1, SOP__BLOB_SYNC);
    CHECK_EQ(nsynced, 2);
    CHECK(was_synced(root));
    CHECK(was_synced(path_in("db/blobs/22")));

    /* sop__blob_sync of the blob put without the flag. */
    nsynced = nfile_fsyncs = 0;
    sop_err err = {0};
    CHECK_OK(sop__blob_sync(bs, a, &err), &err);
    CHECK_EQ(nfile_fsyncs, 1);
    CHECK_EQ(nsynced, 1);
    CHECK(was_synced(path_in("db/blobs/11")));
    sop__blob_close(bs);

    /* A new handle does not trust folders it has not synced itself. */
    bs = open_store(root);
    nsynced = nfile_fsyncs = 0;
    CHECK_OK(sop__blob_sync(bs, c, &err), &err);
    CHECK_EQ(nsynced, 3);
    sop__blob_close(bs);
    sop__os_set_ops(NULL);
}

TEST(mkdir_races_are_harmless)
{
    sop__fault_reset();
    const char *root = path_in("blobs");
    sop__blobstore *bs = open_store(root);
    install_recorder();
    mkdir_race = true; /* every mkdir finds the folder just made by "another process" */
    uint8_t id[16];
    sop__uuid_v4(id);
    put_ok(bs, id, "raced", 5, SOP__BLOB_SYNC);
    check_blob(bs, id, "raced", 5);
    sop__os_set_ops(NULL);
    sop__blob_close(bs);
}

/* ---- I/O errors at every call of every site ---- */

typedef enum op_kind { OP_PUT, OP_GET, OP_SYNC, OP_REMOVE, OP_LIST } op_kind;

static sop_rc noop_cb(void *ctx, const uint8_t id[16])
{
    (void)ctx, (void)id;
    return SOP_OK;
}

static sop_rc run_op(op_kind op, sop__blobstore *bs, const uint8_t id[16], const uint8_t *data,
                     size_t n, sop_err *err)
{
    uint8_t *got = NULL;
    size_t len = 0;
    sop_rc rc = SOP_OK;
    switch (op) {
    case OP_PUT:
        return sop__blob_put(bs, id, data, n, SOP__BLOB_SYNC, err);
    case OP_GET:
        rc = sop__blob_get(bs, id, &got, &len, err);
        if (rc == SOP_OK) {
            CHECK_EQ(len, n);
            CHECK(memcmp(got, data, n) == 0);
            sop__free(got);
        }
        return rc;
    case OP_SYNC:
        return sop__blob_sync(bs, id, err);
    case OP_REMOVE:
        return sop__blob_remove(bs, id, err);
    case OP_LIST:
        return sop__blob_list(bs, noop_cb, NULL, err);
    }
    return SOP_INTERNAL;
}

/* Fails call 1, 2, 3... of `site` during `op` until op runs through without
 * reaching call N; each failure must be SOP_IO naming a path under the
 * test's folder, and a retry without faults must then succeed. Returns how
 * many calls of the site op makes. */
static unsigned fail_each_call(op_kind op, sop__site site, sop__fault_kind kind)
{
    uint8_t data[3000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i ^ 0x5a);
    for (unsigned nth = 1;; nth++) {
        char name[64];
        snprintf(name, sizeof(name), "%s-%d-%u", sop__fault_site_name(site), (int)op, nth);
        const char *root = path_in("%s", name);
        sop__blobstore *bs = open_store(root);
        uint8_t id[16];
        sop__uuid_v4(id);
        sop_err err = {0};
        sop__fault_reset();
        if (op != OP_PUT) /* the blob must exist first */
            CHECK_OK(sop__blob_put(bs, id, data, sizeof(data), 0, &err), &err);
        sop__fault_io(site, nth, kind, false);
        sop_rc rc = run_op(op, bs, id, data, sizeof(data), &err);
        unsigned long injected = sop__fault_injected();
        sop__fault_reset();
        if (injected == 0) {
            CHECK_RC(rc, SOP_OK, &err);
            sop__blob_close(bs);
            return nth - 1;
        }
        CHECK_MSG(rc == SOP_IO, "%s call %u: %s (%s)", sop__fault_site_name(site), nth,
                  sop_rc_name(rc), err.msg);
        CHECK_MSG(strncmp(err.msg, "blob: ", 6) == 0 && strstr(err.msg, t_tmpdir()) != NULL,
                  "%s call %u: message without a path: %s", sop__fault_site_name(site), nth,
                  err.msg);
        CHECK_MSG(err.sys_errno != 0, "no errno in %s", err.msg);
        /* Nothing is left broken: the same call now succeeds. */
        CHECK_OK(run_op(op, bs, id, data, sizeof(data), &err), &err);
        if (op == OP_PUT || op == OP_SYNC || op == OP_GET) {
            rc = run_op(OP_GET, bs, id, data, sizeof(data), &err);
            CHECK_RC(rc, SOP_OK, &err);
        }
        sop__blob_close(bs);
    }
}

TEST(io_errors_at_every_blob_site)
{
    sop__fault_reset();
    struct {
        op_kind op;
        sop__site site;
    } cases[] = {
        {OP_PUT, SOP__SITE_BLOB_MKDIR}, {OP_PUT, SOP__SITE_BLOB_OPEN},
        {OP_PUT, SOP__SITE_BLOB_WRITE}, {OP_PUT, SOP__SITE_BLOB_SYNC},
        {OP_PUT, SOP__SITE_BLOB_CLOSE}, {OP_GET, SOP__SITE_BLOB_OPEN},
        {OP_GET, SOP__SITE_BLOB_READ},  {OP_SYNC, SOP__SITE_BLOB_OPEN},
        {OP_SYNC, SOP__SITE_BLOB_SYNC}, {OP_REMOVE, SOP__SITE_BLOB_REMOVE},
        {OP_LIST, SOP__SITE_BLOB_LIST},
    };
    /* calls per site of each op on a fresh store */
    unsigned want[] = {3, 2, 2, 4, 1, 1, 2, 1, 4, 1, 6};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned calls = fail_each_call(cases[i].op, cases[i].site, SOP__FAULT_EIO);
        CHECK_MSG(calls == want[i], "op %d makes %u calls of %s, expected %u", (int)cases[i].op,
                  calls, sop__fault_site_name(cases[i].site), want[i]);
    }
    /* The other injected errnos look the same to the caller. */
    CHECK_EQ(fail_each_call(OP_PUT, SOP__SITE_BLOB_WRITE, SOP__FAULT_ENOSPC), 2);
    CHECK_EQ(fail_each_call(OP_PUT, SOP__SITE_BLOB_OPEN, SOP__FAULT_EROFS), 2);
    sop__fault_reset();
}

static const sop__site all_sites[] = {
    SOP__SITE_BLOB_OPEN,  SOP__SITE_BLOB_WRITE, SOP__SITE_BLOB_READ,   SOP__SITE_BLOB_SYNC,
    SOP__SITE_BLOB_CLOSE, SOP__SITE_BLOB_MKDIR, SOP__SITE_BLOB_REMOVE, SOP__SITE_BLOB_LIST,
};
#define NSITES (sizeof(all_sites) / sizeof(all_sites[0]))

TEST(persistent_errors_and_every_site_of_a_life_cycle)
{
    sop__fault_reset();
    /* Every blob site fails persistently from its first call: every
     * operation that needs it fails with SOP_IO, none succeeds by accident. */
    for (size_t k = 0; k < NSITES; k++) {
        sop__site s = all_sites[k];
        char name[64];
        snprintf(name, sizeof(name), "persist-%d", (int)s);
        sop__blobstore *bs = open_store(path_in("%s", name));
        uint8_t id[16];
        sop__uuid_v4(id);
        sop_err err = {0};
        sop__fault_reset();
        sop__fault_io(s, 1, SOP__FAULT_EIO, true);
        sop_rc rc = sop__blob_put(bs, id, "abc", 3, SOP__BLOB_SYNC, &err);
        if (s == SOP__SITE_BLOB_READ || s == SOP__SITE_BLOB_REMOVE || s == SOP__SITE_BLOB_LIST)
            CHECK_RC(rc, SOP_OK, &err);
        else
            CHECK_RC(rc, SOP_IO, &err);
        sop__fault_reset();
        sop__blob_close(bs);
    }
    /* One put/get/sync/list/remove cycle reaches every blob site. */
    sop__blobstore *bs = open_store(path_in("cycle"));
    uint8_t id[16];
    sop__uuid_v4(id);
    sop_err err = {0};
    sop__fault_reset();
    put_ok(bs, id, "abc", 3, SOP__BLOB_SYNC);
    check_blob(bs, id, "abc", 3);
    CHECK_OK(sop__blob_sync(bs, id, &err), &err);
    CHECK_OK(sop__blob_list(bs, noop_cb, NULL, &err), &err);
    CHECK_OK(sop__blob_remove(bs, id, &err), &err);
    for (size_t k = 0; k < NSITES; k++)
        CHECK_MSG(sop__fault_site_calls(all_sites[k]) > 0, "site %s never reached",
                  sop__fault_site_name(all_sites[k]));
    sop__blob_close(bs);
    sop__fault_reset();
}

TEST(a_short_write_is_an_error)
{
    sop__fault_reset();
    sop__blobstore *bs = open_store(path_in("blobs"));
    uint8_t id[16];
    sop__uuid_v4(id);
    uint8_t data[5000];
    memset(data, 0x42, sizeof(data));
    sop_err err = {0};
    sop__fault_io(SOP__SITE_BLOB_WRITE, 1, SOP__FAULT_SHORT_WRITE, false);
    CHECK_RC(sop__blob_put(bs, id, data, sizeof(data), SOP__BLOB_SYNC, &err), SOP_IO, &err);
    CHECK_EQ(sop__fault_injected(), 1);
    CHECK_EQ(err.sys_errno, ENOSPC);
    char path[SOP__BLOB_PATH_MAX];
    sop__blob_path(bs, id, path);
    CHECK_MSG(strstr(err.msg, path) && strstr(err.msg, "after writing 2500 bytes"), "%s", err.msg);
    sop__fault_reset();
    /* The partial file is completed by the retry (a redo). */
    put_ok(bs, id, data, sizeof(data), SOP__BLOB_SYNC);
    check_blob(bs, id, data, sizeof(data));
    sop__blob_close(bs);
}

TEST(allocation_failures)
{
    sop__fault_reset();
    sop__blobstore *bs = open_store(path_in("blobs"));
    uint8_t id[16];
    sop__uuid_v4(id);
    put_ok(bs, id, "abc", 3, 0);
    sop_err err = {0};
    sop__fault_alloc(1, false);
    uint8_t *data = NULL;
    size_t len = 0;
    CHECK_RC(sop__blob_get(bs, id, &data, &len, &err), SOP_NOMEM, &err);
    CHECK(strstr(err.msg, "blob: ") != NULL);
    sop__fault_alloc(1, false);
    sop__blobstore *bs2 = NULL;
    CHECK_RC(sop__blob_open("x", &bs2, &err), SOP_NOMEM, &err);
    CHECK(bs2 == NULL);
    sop__fault_reset();
    check_blob(bs, id, "abc", 3);
    sop__blob_close(bs);
}
