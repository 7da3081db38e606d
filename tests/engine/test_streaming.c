/*
 * test_streaming.c - streaming stores (docs/streaming.md): values as chunk
 * sequences written through a writer and read back through a reader with
 * any buffer size; resume at chunk N; direct chunk management; listing;
 * the writer modes; rollback, kill -9 and a prepared-then-rolled-back
 * upload leaving no chunk blob; three processes uploading, downloading and
 * updating at once.
 */
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault.h"
#include "t.h"

static sop_err err;

/* Byte `off` of value `seed`: every value and offset differ. */
static uint8_t pat(uint32_t seed, uint64_t off)
{
    uint64_t x = (off + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed << 40);
    x ^= x >> 29;
    return (uint8_t)(x * 0xBF58476D1CE4E5B9ull >> 56);
}

static void fill(uint8_t *buf, uint32_t seed, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = pat(seed, off + i);
}

static sop_stream *create_stream(sop_txn *t, const char *name, uint32_t slot)
{
    sop_store_options o;
    sop_store_options_init(&o);
    o.slot_length = slot;
    sop_stream *s;
    CHECK_OK(sop_stream_create(t, name, &o, &s, &err), &err);
    return s;
}

/* Writes value `seed` of `total` bytes in chunks of `cs` (the last one
 * shorter) with the given mode; returns the chunk count. */
static uint64_t put_value(sop_stream *s, const char *key, unsigned mode, uint32_t seed,
                          uint64_t total, size_t cs)
{
    sop_stream_writer *w;
    CHECK_OK(sop_stream_writer_open(s, key, strlen(key), mode, &w, &err), &err);
    uint8_t *buf = malloc(cs ? cs : 1);
    CHECK(buf != NULL);
    for (uint64_t off = 0; off < total; off += cs) {
        size_t n = total - off < cs ? (size_t)(total - off) : cs;
        fill(buf, seed, off, n);
        CHECK_OK(sop_stream_write(w, buf, n, &err), &err);
    }
    free(buf);
    uint64_t chunks = 0;
    CHECK_OK(sop_stream_writer_close(w, &chunks, &err), &err);
    return chunks;
}

/* Reads the value of `key` from chunk `from` with reads of `cap` bytes and
 * checks it is value `seed` from byte `start` on, `total` bytes in all. */
static void expect_value_from(sop_stream *s, const char *key, uint64_t from, uint32_t seed,
                              uint64_t start, uint64_t total, size_t cap)
{
    if (from == 0)
        CHECK_OK(sop_stream_find(s, key, strlen(key), &err), &err);
    else
        CHECK_OK(sop_stream_find_chunk(s, key, strlen(key), from, &err), &err);
    sop_stream_reader *r;
    CHECK_OK(sop_stream_reader_open(s, &r, &err), &err);
    uint8_t *buf = malloc(cap), *want = malloc(cap);
    CHECK(buf && want);
    uint64_t off = start;
    for (;;) {
        size_t got;
        CHECK_OK(sop_stream_read(r, buf, cap, &got, &err), &err);
        if (got == 0)
            break;
        CHECK_MSG(off + got <= total, "read past the end: %" PRIu64 " + %zu > %" PRIu64, off, got,
                  total);
        fill(want, seed, off, got);
        CHECK_MSG(memcmp(buf, want, got) == 0, "bytes %" PRIu64 "..%" PRIu64 " differ", off,
                  off + got);
        off += got;
    }
    CHECK_MSG(off == total, "read %" PRIu64 " bytes, want %" PRIu64, off - start, total - start);
    size_t got;
    CHECK_OK(sop_stream_read(r, buf, cap, &got, &err), &err); /* stays at the end */
    CHECK_EQ(got, 0);
    sop_stream_reader_close(r);
    free(buf);
    free(want);
}

static void expect_value(sop_stream *s, const char *key, uint32_t seed, uint64_t total, size_t cap)
{
    expect_value_from(s, key, 0, seed, 0, total, cap);
}

static void expect_stat(sop_stream *s, const char *key, uint64_t chunks, uint64_t bytes)
{
    sop_stream_entry e;
    CHECK_OK(sop_stream_stat(s, key, strlen(key), &e, &err), &err);
    CHECK_MSG(e.chunks == chunks && e.bytes == bytes,
              "%s: %" PRIu64 " chunks, %" PRIu64 " bytes; want %" PRIu64 ", %" PRIu64, key,
              e.chunks, e.bytes, chunks, bytes);
}

TEST(a_value_reads_back_with_any_buffer_size)
{
    sop_db *db = t_db_open(t_db_fresh());
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "videos", 4); /* small nodes: chunks span many */
    const uint64_t total = 37 * 4096 + 123;
    CHECK_EQ(put_value(s, "movie", SOP_STREAM_ADD, 1, total, 4096), 38);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);

    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "videos", &s, &err), &err);
    /* smaller than, equal to and larger than a chunk, and not dividing it */
    const size_t caps[] = {1, 7, 1000, 4096, 4097, 10000, 1 << 20};
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
        expect_value(s, "movie", 1, total, caps[i]);
    expect_stat(s, "movie", 38, total);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    t_db_check_clean(db);
    sop_db_close(db);
}

TEST(a_partly_read_chunk_continues_where_it_stopped)
{
    sop_db *db = t_db_open(t_db_fresh());
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 8);
    put_value(s, "k", SOP_STREAM_ADD, 2, 3000, 1000);
    CHECK_OK(sop_stream_find(s, "k", 1, &err), &err);
    sop_stream_reader *r;
    CHECK_OK(sop_stream_reader_open(s, &r, &err), &err);
    uint8_t buf[10], want[1000];
    size_t got;
    CHECK_OK(sop_stream_read(r, buf, sizeof(buf), &got, &err), &err);
    CHECK_EQ(got, 10);
    /* the rest of chunk 0, then whole chunks with their indexes */
    for (uint64_t i = 0; i < 3; i++) {
        const void *p;
        size_t n;
        uint64_t index;
        CHECK_OK(sop_stream_read_chunk(r, &p, &n, &index, &err), &err);
        CHECK_EQ(index, i);
        size_t from = i == 0 ? 10 : 0;
        CHECK_EQ(n, 1000 - from);
        fill(want, 2, i * 1000 + from, n);
        CHECK(memcmp(p, want, n) == 0);
    }
    const void *p;
    size_t n;
    CHECK_RC(sop_stream_read_chunk(r, &p, &n, NULL, &err), SOP_NOTFOUND, &err);
    sop_stream_reader_close(r);
    /* a reader keeps its place while the stream is repositioned */
    CHECK_OK(sop_stream_find_chunk(s, "k", 1, 1, &err), &err);
    CHECK_OK(sop_stream_reader_open(s, &r, &err), &err);
    CHECK_OK(sop_stream_find(s, "k", 1, &err), &err);
    CHECK_OK(sop_stream_read_chunk(r, &p, &n, NULL, &err), &err);
    fill(want, 2, 1000, 1000);
    CHECK(n == 1000 && memcmp(p, want, n) == 0);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s); /* closes the reader too */
    sop_txn_free(t);
    sop_db_close(db);
}

static off_t unlink_size;
static int unlinked;

static int unlink_if_size(const char *path, const struct stat *st, int type, struct FTW *f)
{
    (void)f;
    if (type == FTW_F && st->st_size == unlink_size && unlink(path) == 0)
        unlinked++;
    return 0;
}

TEST(a_reader_that_failed_does_not_skip_the_chunk)
{
    const char *dir = t_db_fresh();
    sop_db *db = t_db_open(dir);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 4);
    uint8_t c[1003];
    for (uint64_t i = 0; i < 3; i++) {
        fill(c, 30, 0, sizeof(c));
        CHECK_OK(sop_stream_add_chunk(s, "k", 1, i, c, 1001 + (size_t)i, &err), &err);
    }
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    /* chunk 1's blob (the only 1002-byte file) disappears */
    unlink_size = 1002;
    unlinked = 0;
    CHECK(nftw(dir, unlink_if_size, 16, FTW_PHYS) == 0);
    CHECK_EQ(unlinked, 1);

    CHECK_OK(sop_txn_begin(db, SOP_TXN_NOCHECK, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    CHECK_OK(sop_stream_find(s, "k", 1, &err), &err);
    sop_stream_reader *r;
    CHECK_OK(sop_stream_reader_open(s, &r, &err), &err);
    const void *p;
    size_t n;
    uint64_t index;
    CHECK_OK(sop_stream_read_chunk(r, &p, &n, &index, &err), &err);
    CHECK(index == 0 && n == 1001);
    sop_rc rc = sop_stream_read_chunk(r, &p, &n, &index, &err);
    CHECK_MSG(rc != SOP_OK && rc != SOP_NOTFOUND, "reading a lost chunk: %s", sop_rc_name(rc));
    /* again: the same failure, never chunk 2 as if chunk 1 were not there */
    CHECK_RC(sop_stream_read_chunk(r, &p, &n, &index, &err), rc, &err);
    CHECK(strstr(err.msg, "failed earlier") != NULL);
    size_t got;
    CHECK_RC(sop_stream_read(r, c, sizeof(c), &got, &err), rc, &err);
    sop_stream_reader_close(r);
    sop_stream_close(s);
    sop_txn_free(t);
    sop_db_close(db);
}

TEST(download_from_chunk_n_is_the_tail)
{
    sop_db *db = t_db_open(t_db_fresh());
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 4);
    const size_t cs = 5000;
    const uint64_t total = 20 * cs + 17;
    put_value(s, "big", SOP_STREAM_ADD, 3, total, cs);
    put_value(s, "bif", SOP_STREAM_ADD, 4, 100, 10); /* neighbours on both sides */
    put_value(s, "bih", SOP_STREAM_ADD, 5, 100, 10);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);

    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    const uint64_t from[] = {0, 1, 3, 19, 20};
    for (size_t i = 0; i < sizeof(from) / sizeof(from[0]); i++)
        expect_value_from(s, "big", from[i], 3, from[i] * cs, total, 4096);
    CHECK_RC(sop_stream_find_chunk(s, "big", 3, 21, &err), SOP_NOTFOUND, &err);
    CHECK_RC(sop_stream_find(s, "bi", 2, &err), SOP_NOTFOUND, &err);
    CHECK_RC(sop_stream_find(s, "bigger", 6, &err), SOP_NOTFOUND, &err);
    sop_stream_reader *r;
    CHECK_RC(sop_stream_reader_open(s, &r, &err), SOP_NOTFOUND, &err); /* not positioned */
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    sop_db_close(db);
}

TEST(update_chunk_changes_exactly_that_range)
{
    sop_db *db = t_db_open(t_db_fresh());
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 4);
    const size_t cs = 4000;
    const uint64_t total = 8 * cs;
    put_value(s, "k", SOP_STREAM_ADD, 6, total, cs);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);

    uint64_t blobs = t_db_check_clean(db);
    uint8_t *chunk = malloc(cs);
    CHECK(chunk != NULL);
    fill(chunk, 99, 0, cs);
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    CHECK_OK(sop_stream_update_chunk(s, "k", 1, 3, chunk, cs, &err), &err);
    CHECK_RC(sop_stream_update_chunk(s, "k", 1, 8, chunk, cs, &err), SOP_NOTFOUND, &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    CHECK_EQ(t_db_check_clean(db), blobs); /* the old chunk's blob went with it */

    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    CHECK_OK(sop_stream_find(s, "k", 1, &err), &err);
    sop_stream_reader *r;
    CHECK_OK(sop_stream_reader_open(s, &r, &err), &err);
    uint8_t *all = malloc(total + 1), *want = malloc(total);
    CHECK(all && want);
    size_t got, have = 0;
    do {
        CHECK_OK(sop_stream_read(r, all + have, total + 1 - have, &got, &err), &err);
        have += got;
    } while (got > 0);
    CHECK_EQ(have, total);
    fill(want, 6, 0, total);
    memcpy(want + 3 * cs, chunk, cs);
    for (uint64_t i = 0; i < total; i++)
        CHECK_MSG(all[i] == want[i], "byte %" PRIu64 " (chunk %" PRIu64 ") differs", i, i / cs);
    CHECK(memcmp(all + 3 * cs, chunk, cs) == 0);
    sop_stream_reader_close(r);
    sop_stream_close(s);
    sop_txn_free(t);
    free(all);
    free(want);
    free(chunk);
    sop_db_close(db);
}

TEST(writer_modes_add_update_upsert)
{
    sop_db *db = t_db_open(t_db_fresh());
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 6);
    put_value(s, "k", SOP_STREAM_ADD, 7, 10 * 100, 100);
    sop_stream_writer *w;
    CHECK_RC(sop_stream_writer_open(s, "k", 1, SOP_STREAM_ADD, &w, &err), SOP_EXISTS, &err);
    CHECK_RC(sop_stream_writer_open(s, "k", 1, SOP_STREAM_ADD_IF_NOT_EXISTS, &w, &err), SOP_EXISTS,
             &err);
    CHECK_RC(sop_stream_writer_open(s, "nope", 4, SOP_STREAM_UPDATE, &w, &err), SOP_NOTFOUND, &err);
    CHECK_RC(sop_stream_writer_open(s, "k", 1, 9, &w, &err), SOP_INVALID, &err);
    /* shorter: the old tail goes; longer: chunks are added */
    CHECK_EQ(put_value(s, "k", SOP_STREAM_UPDATE, 8, 3 * 100 + 5, 100), 4);
    expect_stat(s, "k", 4, 305);
    expect_value(s, "k", 8, 305, 64);
    CHECK_EQ(put_value(s, "k", SOP_STREAM_UPSERT, 9, 12 * 50, 50), 12);
    expect_value(s, "k", 9, 600, 1000);
    CHECK_EQ(put_value(s, "new", SOP_STREAM_UPSERT, 10, 99, 1000), 1);
    expect_value(s, "new", 10, 99, 7);
    CHECK_EQ(put_value(s, "new2", SOP_STREAM_ADD_IF_NOT_EXISTS, 11, 10, 3), 4);
    /* an empty value is one empty chunk */
    CHECK_EQ(put_value(s, "empty", SOP_STREAM_ADD, 0, 0, 10), 1);
    expect_stat(s, "empty", 1, 0);
    expect_value(s, "empty", 0, 0, 10);
    /* commit waits for open writers */
    CHECK_OK(sop_stream_writer_open(s, "k", 1, SOP_STREAM_UPDATE, &w, &err), &err);
    CHECK_OK(sop_stream_write(w, "x", 1, &err), &err);
    CHECK_RC(sop_txn_commit(t, &err), SOP_INVALID, &err);
    CHECK(strstr(err.msg, "stream writer") != NULL);
    uint8_t txid[16];
    CHECK_RC(sop_txn_prepare(t, "o", txid, &err), SOP_INVALID, &err);
    uint64_t n;
    CHECK_OK(sop_stream_writer_close(w, &n, &err), &err);
    CHECK_EQ(n, 1);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);

    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    expect_stat(s, "k", 1, 1);
    expect_stat(s, "new", 1, 99);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    t_db_check_clean(db);

    /* a stream closed with a writer open leaves only rollback */
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    CHECK_OK(sop_stream_writer_open(s, "k", 1, SOP_STREAM_UPDATE, &w, &err), &err);
    CHECK_OK(sop_stream_write(w, "yy", 2, &err), &err);
    sop_stream_close(s);
    CHECK_RC(sop_txn_commit(t, &err), SOP_POISONED, &err);
    CHECK_OK(sop_txn_rollback(t, &err), &err);
    sop_txn_free(t);
    t_db_check_clean(db);
    sop_db_close(db);
}

TEST(direct_chunk_management_and_gaps)
{
    sop_db *db = t_db_open(t_db_fresh());
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 4);
    uint8_t c[100];
    for (uint64_t i = 0; i < 5; i++) {
        fill(c, 12, i * 100, 100);
        CHECK_OK(sop_stream_add_chunk(s, "k", 1, i, c, 100, &err), &err);
    }
    CHECK_RC(sop_stream_add_chunk(s, "k", 1, 2, c, 100, &err), SOP_EXISTS, &err);
    CHECK_OK(sop_stream_remove_chunk(s, "k", 1, 2, &err), &err);
    CHECK_RC(sop_stream_remove_chunk(s, "k", 1, 2, &err), SOP_NOTFOUND, &err);
    sop_stream_entry e;
    CHECK_OK(sop_stream_stat(s, "k", 1, &e, &err), &err);
    CHECK(e.chunks == 4 && e.bytes == 400 && e.first_chunk == 0 && e.last_chunk == 4);
    /* the value is its chunks in order: 0, 1, 3, 4 */
    CHECK_OK(sop_stream_find(s, "k", 1, &err), &err);
    sop_stream_reader *r;
    CHECK_OK(sop_stream_reader_open(s, &r, &err), &err);
    const uint64_t order[] = {0, 1, 3, 4};
    for (size_t i = 0; i < 4; i++) {
        const void *p;
        size_t n;
        uint64_t index;
        CHECK_OK(sop_stream_read_chunk(r, &p, &n, &index, &err), &err);
        CHECK_EQ(index, order[i]);
        fill(c, 12, order[i] * 100, 100);
        CHECK(n == 100 && memcmp(p, c, 100) == 0);
    }
    sop_stream_reader_close(r);
    /* a chunk far out, and the first one removed: find starts at chunk 1 */
    CHECK_OK(sop_stream_add_chunk(s, "k", 1, (uint64_t)INT64_MAX, "z", 1, &err), &err);
    CHECK_RC(sop_stream_add_chunk(s, "k", 1, (uint64_t)INT64_MAX + 1, "z", 1, &err), SOP_LIMIT,
             &err);
    CHECK_OK(sop_stream_remove_chunk(s, "k", 1, 0, &err), &err);
    CHECK_OK(sop_stream_stat(s, "k", 1, &e, &err), &err);
    CHECK(e.chunks == 4 && e.first_chunk == 1 && e.last_chunk == (uint64_t)INT64_MAX);
    CHECK_OK(sop_stream_remove(s, "k", 1, &err), &err);
    CHECK_RC(sop_stream_remove(s, "k", 1, &err), SOP_NOTFOUND, &err);
    CHECK_RC(sop_stream_stat(s, "k", 1, &e, &err), SOP_NOTFOUND, &err);
    CHECK_RC(sop_stream_find(s, "k", 1, &err), SOP_NOTFOUND, &err);
    CHECK_EQ(sop_btree_count(sop_stream_btree(s)), 0);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    t_db_check_clean(db);
    sop_db_close(db);
}

typedef struct listed {
    int n;
    char keys[8][16];
    size_t lens[8];
    uint64_t chunks[8], bytes[8];
    int stop_after;
} listed;

static bool on_entry(void *ctx, const sop_stream_entry *e)
{
    listed *l = ctx;
    if (l->n < 8 && e->key_len < 16) {
        memcpy(l->keys[l->n], e->key, e->key_len);
        l->lens[l->n] = e->key_len;
        l->chunks[l->n] = e->chunks;
        l->bytes[l->n] = e->bytes;
    }
    l->n++;
    return l->n != l->stop_after;
}

TEST(list_gives_keys_in_order_with_counts_and_sizes)
{
    sop_db *db = t_db_open(t_db_fresh());
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 4);
    /* keys where one is a prefix of another, and one with a NUL byte */
    static const char *const keys[] = {"a", "a\0b", "ab", "b"};
    static const size_t lens[] = {1, 3, 2, 1};
    for (int i = 3; i >= 0; i--) {
        sop_stream_writer *w;
        CHECK_OK(sop_stream_writer_open(s, keys[i], lens[i], SOP_STREAM_ADD, &w, &err), &err);
        for (int c = 0; c <= i; c++)
            CHECK_OK(sop_stream_write(w, "0123456789", (size_t)(c + 1), &err), &err);
        CHECK_OK(sop_stream_writer_close(w, NULL, &err), &err);
    }
    listed l = {0};
    CHECK_OK(sop_stream_list(s, NULL, 0, on_entry, &l, &err), &err);
    CHECK_EQ(l.n, 4);
    for (int i = 0; i < 4; i++) {
        CHECK_MSG(l.lens[i] == lens[i] && memcmp(l.keys[i], keys[i], lens[i]) == 0,
                  "entry %d is not key %d", i, i);
        CHECK_EQ(l.chunks[i], (uint64_t)i + 1);
        CHECK_EQ(l.bytes[i], (uint64_t)(i + 1) * (i + 2) / 2);
    }
    l = (listed){.stop_after = 2};
    CHECK_OK(sop_stream_list(s, "a\0", 2, on_entry, &l, &err), &err);
    CHECK_EQ(l.n, 2);
    CHECK(l.lens[0] == 3 && memcmp(l.keys[0], "a\0b", 3) == 0);
    CHECK(l.lens[1] == 2 && memcmp(l.keys[1], "ab", 2) == 0);
    l = (listed){0};
    CHECK_OK(sop_stream_list(s, "c", 1, on_entry, &l, &err), &err);
    CHECK_EQ(l.n, 0);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    sop_db_close(db);
}

TEST(bad_arguments_and_non_streaming_stores)
{
    const char *dir = t_db_fresh();
    sop_db *db = t_db_open(dir);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_store_options o;
    sop_store_options_init(&o);
    sop_btree *bt;
    CHECK_OK(sop_store_create(t, "plain", &o, &bt, &err), &err);
    o.streaming = true; /* the rest must match what a streaming store is */
    CHECK_RC(sop_store_create(t, "odd", &o, &bt, &err), SOP_INVALID, &err);
    sop_stream *s;
    CHECK_RC(sop_stream_open(t, "plain", &s, &err), SOP_INVALID, &err);
    CHECK_RC(sop_stream_open(t, "missing", &s, &err), SOP_NOTFOUND, &err);
    CHECK_OK(sop_stream_create(t, "v", NULL, &s, &err), &err);
    sop_stream *again;
    CHECK_RC(sop_stream_create(t, "v", NULL, &again, &err), SOP_EXISTS, &err);
    sop_stream_writer *w;
    CHECK_RC(sop_stream_writer_open(s, "", 0, SOP_STREAM_ADD, &w, &err), SOP_INVALID, &err);
    char *huge = calloc(1, SOP_KEY_MAX);
    CHECK(huge != NULL);
    memset(huge, 'k', SOP_KEY_MAX);
    CHECK_RC(sop_stream_writer_open(s, huge, SOP_KEY_MAX, SOP_STREAM_ADD, &w, &err), SOP_LIMIT,
             &err);
    free(huge);
    CHECK_RC(sop_stream_add_chunk(NULL, "k", 1, 0, "x", 1, &err), SOP_INVALID, &err);
    CHECK_RC(sop_stream_add_chunk(s, "k", 1, 0, NULL, 1, &err), SOP_INVALID, &err);
    CHECK_OK(sop_stream_add_chunk(s, "k", 1, 0, "x", 1, &err), &err);
    /* the tree-level calls keep the store's keys (text, chunk) tuples */
    sop_btree *sbt = sop_stream_btree(s);
    CHECK_RC(sop_btree_upsert(sbt, "rawkey", 6, "v", 1, NULL, &err), SOP_INVALID, &err);
    uint8_t tk[32];
    sop_tuple_writer tw;
    sop_tuple_writer_init(&tw, tk, sizeof(tk));
    sop_tuple_put_text(&tw, "k", 1);
    sop_tuple_put_int(&tw, -1);
    CHECK_RC(sop_btree_add(sbt, tk, tw.len, "v", 1, NULL, &err), SOP_INVALID, &err);
    sop_tuple_writer_init(&tw, tk, sizeof(tk));
    sop_tuple_put_text(&tw, "k", 1);
    sop_tuple_put_int(&tw, 1);
    CHECK_OK(sop_btree_add(sbt, tk, tw.len, "v", 1, NULL, &err), &err); /* = add_chunk */
    /* nor can a cursor add carried fields after (key, chunk) */
    sop_cursor *cur;
    CHECK_OK(sop_cursor_open(sbt, &cur, &err), &err);
    CHECK_OK(sop_cursor_find(cur, tk, tw.len, &err), &err);
    size_t klen = tw.len;
    sop_tuple_put_int(&tw, 7);
    CHECK(tw.len > klen);
    CHECK_RC(sop_cursor_update_key(cur, tk, tw.len, &err), SOP_INVALID, &err);
    sop_cursor_close(cur);
    expect_stat(s, "k", 2, 2);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);

    sop_store_info info;
    CHECK_OK(sop_db_store_info(db, "v", &info, &err), &err);
    CHECK(info.options.streaming && info.options.is_unique);
    CHECK_EQ(info.options.key_order_fields, 2);
    CHECK_EQ(info.options.value_placement, SOP_VALUES_ACTIVE);
    CHECK_EQ(info.options.slot_length, 500);
    CHECK_OK(sop_db_store_info(db, "plain", &info, &err), &err);
    CHECK(!info.options.streaming);
    /* a read transaction cannot write */
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    CHECK_RC(sop_stream_add_chunk(s, "k", 1, 1, "x", 1, &err), SOP_INVALID, &err);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    sop_db_close(db);
    /* reopened: still a streaming store, value intact */
    db = t_db_open(dir);
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    expect_stat(s, "k", 2, 2);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    sop_db_close(db);
}

TEST(a_rolled_back_or_prepared_then_rolled_back_upload_leaves_no_blob)
{
    sop_db *db = t_db_open(t_db_fresh());
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 4);
    put_value(s, "kept", SOP_STREAM_ADD, 13, 10000, 1000);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    const uint64_t blobs = t_db_check_clean(db);

    for (int round = 0; round < 3; round++) {
        CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
        CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
        put_value(s, "new", SOP_STREAM_ADD, 14, 20000, 1000);
        put_value(s, "kept", SOP_STREAM_UPDATE, 15, 3000, 1000);
        if (round == 0) {
            CHECK_OK(sop_txn_rollback(t, &err), &err);
        } else {
            uint8_t txid[16];
            CHECK_OK(sop_txn_prepare(t, "test", txid, &err), &err);
            if (round == 1) {
                CHECK_OK(sop_db_rollback_prepared(db, txid, &err), &err);
            } else {
                /* recovery must not decide it: only its coordinator does */
                sop_stream_close(s);
                sop_txn_free(t);
                CHECK_OK(sop_db_recover(db, &err), &err);
                CHECK_OK(sop_db_rollback_prepared(db, txid, &err), &err);
                s = NULL;
                t = NULL;
            }
        }
        sop_stream_close(s);
        sop_txn_free(t);
        CHECK_EQ(t_db_check_clean(db), blobs);
    }
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    CHECK_RC(sop_stream_find(s, "new", 3, &err), SOP_NOTFOUND, &err);
    expect_value(s, "kept", 13, 10000, 3000);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    sop_db_close(db);
}

TEST(a_chunk_write_that_fails_leaves_nothing_after_rollback)
{
    sop_db *db = t_db_open(t_db_fresh());
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 4);
    put_value(s, "kept", SOP_STREAM_ADD, 31, 3000, 1000);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    const uint64_t blobs = t_db_check_clean(db);

    /* a write whose blob cannot be written fails with the I/O error */
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    sop_stream_writer *w;
    CHECK_OK(sop_stream_writer_open(s, "new", 3, SOP_STREAM_ADD, &w, &err), &err);
    CHECK_OK(sop_stream_write(w, "abc", 3, &err), &err);
    sop__fault_reset();
    sop__fault_io(SOP__SITE_BLOB_WRITE, 1, SOP__FAULT_EIO, false);
    CHECK_RC(sop_stream_write(w, "def", 3, &err), SOP_IO, &err);
    sop__fault_reset();
    uint64_t n = 0;
    CHECK_OK(sop_stream_writer_close(w, &n, &err), &err);
    CHECK_EQ(n, 1); /* the failed write made no chunk */
    CHECK_OK(sop_txn_rollback(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    CHECK_EQ(t_db_check_clean(db), blobs);

    /* an update whose close fails (its empty chunk cannot be written)
     * leaves the value half replaced: the transaction is poisoned */
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    CHECK_OK(sop_stream_writer_open(s, "kept", 4, SOP_STREAM_UPDATE, &w, &err), &err);
    sop__fault_io(SOP__SITE_BLOB_WRITE, 1, SOP__FAULT_EIO, false);
    CHECK_RC(sop_stream_writer_close(w, NULL, &err), SOP_IO, &err);
    sop__fault_reset();
    CHECK_RC(sop_txn_commit(t, &err), SOP_POISONED, &err);
    CHECK_OK(sop_txn_rollback(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    CHECK_EQ(t_db_check_clean(db), blobs);

    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    CHECK_RC(sop_stream_find(s, "new", 3, &err), SOP_NOTFOUND, &err);
    expect_value(s, "kept", 31, 3000, 4096);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    sop_db_close(db);
}

TEST(a_prepared_upload_commits_by_id)
{
    sop_db *db = t_db_open(t_db_fresh());
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 4);
    put_value(s, "k", SOP_STREAM_ADD, 16, 7777, 1000);
    uint8_t txid[16];
    CHECK_OK(sop_txn_prepare(t, "test", txid, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    CHECK_OK(sop_db_commit_prepared(db, txid, &err), &err);
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    expect_value(s, "k", 16, 7777, 512);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    t_db_check_clean(db);
    sop_db_close(db);
}

/* A child that uploads `chunks` chunks of key "dying", telling the parent
 * through `fd` after each one, then waits to be killed. */
static void upload_and_hang(const char *dir, int fd, int chunks)
{
    t_in_child();
    sop_db *db = t_db_open(dir);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s;
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    sop_stream_writer *w;
    CHECK_OK(sop_stream_writer_open(s, "dying", 5, SOP_STREAM_ADD, &w, &err), &err);
    uint8_t buf[8192];
    for (int i = 0; i < chunks; i++) {
        fill(buf, 17, (uint64_t)i * sizeof(buf), sizeof(buf));
        CHECK_OK(sop_stream_write(w, buf, sizeof(buf), &err), &err);
        if (write(fd, "c", 1) != 1)
            _exit(3);
    }
    for (;;)
        pause();
}

TEST(a_killed_upload_leaves_no_blob_after_recovery)
{
    const char *dir = t_db_fresh();
    sop_db *db = t_db_open(dir);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 4);
    put_value(s, "kept", SOP_STREAM_ADD, 18, 5000, 1000);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    const uint64_t blobs = t_db_check_clean(db);
    sop_db_close(db);

    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        upload_and_hang(dir, p[1], 12);
    }
    close(p[1]);
    char c;
    int seen = 0;
    while (seen < 12 && read(p[0], &c, 1) == 1)
        seen++;
    close(p[0]);
    CHECK_EQ(seen, 12);
    kill(pid, SIGKILL);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));

    db = t_db_open(dir); /* recovery removes the dead upload's chunks */
    CHECK_EQ(t_db_check_clean(db), blobs);
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    CHECK_RC(sop_stream_find(s, "dying", 5, &err), SOP_NOTFOUND, &err);
    expect_value(s, "kept", 18, 5000, 4096);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    sop_db_close(db);
}

/* ---- three processes at once ---- */

enum { CC_CHUNK = 64 * 1024, CC_CHUNKS = 24 };

/* Runs fn in a write (or read) transaction until it commits, retrying
 * conflicts. fn returns false to retry early. */
static void in_txn(sop_db *db, sop_txn_mode mode, bool (*fn)(sop_stream *s, void *ctx), void *ctx)
{
    for (int attempt = 0; attempt < 200; attempt++) {
        sop_txn *t;
        CHECK_OK(sop_txn_begin(db, mode, 0, &t, &err), &err);
        sop_stream *s;
        CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
        bool ok = fn(s, ctx);
        sop_rc rc = ok ? sop_txn_commit(t, &err) : SOP_CONFLICT;
        sop_stream_close(s);
        sop_txn_free(t);
        if (rc == SOP_OK)
            return;
        CHECK_MSG(rc == SOP_CONFLICT, "commit: %s", t_errmsg(&err));
        usleep(1000 * (useconds_t)(1 + attempt % 7));
    }
    CHECK_MSG(false, "200 conflicts in a row");
}

static bool upload_a(sop_stream *s, void *ctx)
{
    (void)ctx;
    put_value(s, "A", SOP_STREAM_UPSERT, 20, (uint64_t)CC_CHUNKS * CC_CHUNK, CC_CHUNK);
    return true;
}

/* Reads B whole; false (retry) if a read met a concurrent change. */
static bool download_b(sop_stream *s, void *ctx)
{
    (void)ctx;
    expect_value(s, "B", 21, (uint64_t)CC_CHUNKS * CC_CHUNK, 10000);
    return true;
}

static bool update_c(sop_stream *s, void *ctx)
{
    uint32_t seed = *(uint32_t *)ctx;
    uint8_t *c = malloc(CC_CHUNK);
    CHECK(c != NULL);
    fill(c, seed, 3 * CC_CHUNK, CC_CHUNK);
    sop_rc rc = sop_stream_update_chunk(s, "C", 1, 3, c, CC_CHUNK, &err);
    free(c);
    CHECK_MSG(rc == SOP_OK, "update chunk: %s", t_errmsg(&err));
    return true;
}

static void run_child(const char *dir, int role)
{
    t_in_child();
    sop_db *db = t_db_open(dir);
    for (int round = 0; round < 6; round++) {
        if (role == 0) {
            in_txn(db, SOP_TXN_WRITE, upload_a, NULL);
        } else if (role == 1) {
            in_txn(db, SOP_TXN_READ, download_b, NULL);
        } else {
            uint32_t seed = 100 + (uint32_t)round;
            in_txn(db, SOP_TXN_WRITE, update_c, &seed);
        }
    }
    sop_db_close(db);
    _exit(0);
}

TEST(upload_download_and_chunk_update_in_three_processes)
{
    const char *dir = t_db_fresh();
    sop_db *db = t_db_open(dir);
    sop_txn *t;
    CHECK_OK(sop_txn_begin(db, SOP_TXN_WRITE, 0, &t, &err), &err);
    sop_stream *s = create_stream(t, "v", 8);
    put_value(s, "B", SOP_STREAM_ADD, 21, (uint64_t)CC_CHUNKS * CC_CHUNK, CC_CHUNK);
    put_value(s, "C", SOP_STREAM_ADD, 22, (uint64_t)CC_CHUNKS * CC_CHUNK, CC_CHUNK);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    sop_db_close(db);

    pid_t pids[3];
    for (int role = 0; role < 3; role++) {
        pids[role] = fork();
        CHECK(pids[role] >= 0);
        if (pids[role] == 0)
            run_child(dir, role);
    }
    for (int role = 0; role < 3; role++) {
        int status;
        CHECK(waitpid(pids[role], &status, 0) == pids[role]);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d failed (status %d)",
                  role, status);
    }

    db = t_db_open(dir);
    CHECK_OK(sop_txn_begin(db, SOP_TXN_READ, 0, &t, &err), &err);
    CHECK_OK(sop_stream_open(t, "v", &s, &err), &err);
    expect_value(s, "A", 20, (uint64_t)CC_CHUNKS * CC_CHUNK, 1 << 20);
    expect_value(s, "B", 21, (uint64_t)CC_CHUNKS * CC_CHUNK, 1 << 20);
    /* C: chunk 3 from the last update, the rest untouched */
    CHECK_OK(sop_stream_find(s, "C", 1, &err), &err);
    sop_stream_reader *r;
    CHECK_OK(sop_stream_reader_open(s, &r, &err), &err);
    uint8_t *want = malloc(CC_CHUNK);
    CHECK(want != NULL);
    for (uint64_t i = 0; i < CC_CHUNKS; i++) {
        const void *p;
        size_t n;
        uint64_t index;
        CHECK_OK(sop_stream_read_chunk(r, &p, &n, &index, &err), &err);
        CHECK(index == i && n == CC_CHUNK);
        fill(want, i == 3 ? 105 : 22, i * CC_CHUNK, CC_CHUNK);
        CHECK_MSG(memcmp(p, want, n) == 0, "chunk %" PRIu64 " of C differs", i);
    }
    free(want);
    sop_stream_reader_close(r);
    CHECK_OK(sop_txn_commit(t, &err), &err);
    sop_stream_close(s);
    sop_txn_free(t);
    t_db_check_clean(db);
    sop_db_close(db);
}
