/*
 * streaming.c - streaming stores: values far larger than memory as
 * sequences of chunks, on top of the public B-tree and store API
 * (docs/streaming.md).
 *
 * A chunk is one item of a unique store whose key is the tuple
 * (text key, int chunk index) and whose value lives in its own blob,
 * written when the chunk is added (active placement). The encoded text
 * element is the "prefix" below: every chunk of a key starts with it. A
 * longer key's chunk may too when the longer key continues with a zero
 * byte ("a" is 40 61 00, "a\0b" is 40 61 00 FF 62 00), so a match also
 * needs the next byte to be a tag, never 0xFF (starts_with).
 *
 * Invariants:
 *  1. A writer or reader never holds more than one chunk: writes go
 *     straight to the tree (and from there to a blob), a reader takes over
 *     the buffer the chunk was read into (sop__txstore_value_take).
 *  2. A writer holds its transaction (sop__txn_hold) from open to close:
 *     an update's value is complete only once close removed the old
 *     chunks past the last one written.
 *  3. Readers and the stream's position use their own cursors, so other
 *     calls on the stream never move them (the engine re-finds a cursor's
 *     item after changes made through other cursors).
 */
#include <stdint.h>
#include <string.h>

#include "err.h"
#include "mem.h"
#include "txn.h"

#define INDEX_ENC_MAX 9 /* tag + 8 bytes: the longest int element */

/* An encoded key prefix with room for a chunk index after it. */
typedef struct ckey {
    uint8_t *buf;
    size_t plen; /* bytes of the text element */
    size_t len;  /* plen + the index element of the last ckey_at */
} ckey;

struct sop_stream_writer {
    sop_stream *s;
    ckey k;
    bool update;
    uint64_t next; /* index of the next chunk written */
    struct sop_stream_writer *link;
};

struct sop_stream_reader {
    sop_stream *s;
    sop_cursor *cur;
    ckey k;
    uint8_t *start; /* the item key to start at (until the first load) */
    size_t start_len;
    bool started, done;
    uint64_t index; /* of the chunk in buf */
    uint8_t *buf;   /* the current chunk */
    size_t len, off;
    sop_rc failed; /* a load failed: the position is lost, reads refuse */
    struct sop_stream_reader *link;
};

struct sop_stream {
    sop_txn *txn;
    sop_btree *bt;
    sop_cursor *pos; /* find / find_chunk */
    ckey poskey;     /* the key the position belongs to */
    bool positioned;
    sop_stream_writer *writers;
    sop_stream_reader *readers;
};

static sop_rc bad_arg(sop_err *err, const char *what)
{
    return sop__err_set(err, SOP_INVALID, 0, "%s", what);
}

static void ckey_free(ckey *k)
{
    sop__free(k->buf);
    memset(k, 0, sizeof(*k));
}

/* Encodes the text element of `key`, leaving room for an index. */
static sop_rc ckey_init(ckey *k, const void *key, size_t key_len, sop_err *err)
{
    memset(k, 0, sizeof(*k));
    if (key == NULL || key_len == 0)
        return bad_arg(err, "stream: the key must be at least one byte");
    if (key_len > SOP_KEY_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "stream: a %zu-byte key exceeds the %u-byte limit",
                            key_len, SOP_KEY_MAX);
    sop_tuple_writer w;
    sop_tuple_writer_init(&w, NULL, 0);
    sop_tuple_put_text(&w, key, key_len);
    if (w.len + INDEX_ENC_MAX > SOP_KEY_MAX)
        return sop__err_set(err, SOP_LIMIT, 0,
                            "stream: a %zu-byte key encodes to %zu bytes, over the %u-byte key "
                            "limit with its chunk index",
                            key_len, w.len + INDEX_ENC_MAX, SOP_KEY_MAX);
    k->buf = sop__malloc(w.len + INDEX_ENC_MAX);
    if (k->buf == NULL)
        return sop__err_set_const(err, SOP_NOMEM, "stream: no memory for a key");
    sop_tuple_writer_init(&w, k->buf, w.len + INDEX_ENC_MAX);
    sop_tuple_put_text(&w, key, key_len);
    k->plen = k->len = w.len;
    return SOP_OK;
}

static sop_rc ckey_copy(ckey *dst, const ckey *src, sop_err *err)
{
    memset(dst, 0, sizeof(*dst));
    dst->buf = sop__malloc(src->plen + INDEX_ENC_MAX);
    if (dst->buf == NULL)
        return sop__err_set_const(err, SOP_NOMEM, "stream: no memory for a key");
    memcpy(dst->buf, src->buf, src->plen);
    dst->plen = dst->len = src->plen;
    return SOP_OK;
}

static sop_rc index_check(uint64_t index, sop_err *err)
{
    if (index > (uint64_t)INT64_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "stream: chunk index %llu exceeds INT64_MAX",
                            (unsigned long long)index);
    return SOP_OK;
}

/* The item key of chunk `index` (k->buf[0..k->len)). */
static void ckey_at(ckey *k, uint64_t index)
{
    sop_tuple_writer w;
    sop_tuple_writer_init(&w, k->buf + k->plen, INDEX_ENC_MAX);
    sop_tuple_put_int(&w, (int64_t)index);
    k->len = k->plen + w.len;
}

/* Whether an item key starts with the text element p[0..plen): the bytes
 * match and the next one is a tag, not the 0xFF that would make p's
 * terminator an escaped zero of a longer key ("a" vs "a\0b"). */
static bool starts_with(const sop_item *it, const uint8_t *p, size_t plen)
{
    return it->key_len > plen && memcmp(it->key, p, plen) == 0 &&
           ((const uint8_t *)it->key)[plen] != 0xFF;
}

static bool has_prefix(const ckey *k, const sop_item *it)
{
    return starts_with(it, k->buf, k->plen);
}

/* The chunk index after `plen` bytes of an item key. */
static sop_rc parse_index(const sop_stream *s, const sop_item *it, size_t plen, uint64_t *index,
                          sop_err *err)
{
    sop_tuple_reader r;
    sop_tuple_value v;
    sop_tuple_reader_init(&r, (const uint8_t *)it->key + plen, it->key_len - plen);
    sop_err e = {0};
    sop_rc rc = sop_tuple_next(&r, &v, &e);
    if (rc != SOP_OK || v.type != SOP_TUPLE_INT || v.i < 0 || r.pos != r.len)
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "streaming store %s: a chunk key without a valid chunk index",
                            s->bt->ts->info.name);
    *index = (uint64_t)v.i;
    return SOP_OK;
}

/* The length of the text element an item key starts with. */
static sop_rc parse_prefix(const sop_stream *s, const sop_item *it, sop_tuple_value *v,
                           size_t *plen, sop_err *err)
{
    sop_tuple_reader r;
    sop_tuple_reader_init(&r, it->key, it->key_len);
    sop_err e = {0};
    sop_rc rc = sop_tuple_next(&r, v, &e);
    if (rc != SOP_OK || v->type != SOP_TUPLE_TEXT || r.pos >= r.len)
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "streaming store %s: a chunk key that is not (text, chunk index)",
                            s->bt->ts->info.name);
    *plen = r.pos;
    return SOP_OK;
}

/* Puts `c` on the first chunk of k (SOP_NOTFOUND if the key has none). */
static sop_rc seek_first(sop_cursor *c, const ckey *k, sop_item *it, sop_err *err)
{
    sop_rc rc = sop_cursor_find(c, k->buf, k->plen, err);
    if (rc == SOP_OK) /* a bare text element is never an item key */
        return sop__err_set_const(err, SOP_CORRUPT, "stream: an item key without a chunk index");
    if (rc != SOP_NOTFOUND)
        return rc;
    if (!sop_cursor_on_item(c))
        return sop__err_set_const(err, SOP_NOTFOUND, "stream: no such key");
    SOP__TRY(sop_cursor_item_meta(c, it, err));
    if (!has_prefix(k, it))
        return sop__err_set_const(err, SOP_NOTFOUND, "stream: no such key");
    return SOP_OK;
}

static sop_rc open_cursor(sop_stream *s, sop_cursor **out, sop_err *err)
{
    return sop_cursor_open(s->bt, out, err);
}

/* ---- stores ---- */

static sop_rc stream_new(sop_txn *t, sop_btree *bt, sop_stream **out, sop_err *err)
{
    sop_stream *s = sop__calloc(1, sizeof(*s));
    if (s == NULL)
        return sop__err_set_const(err, SOP_NOMEM, "stream: no memory");
    s->txn = t;
    s->bt = bt;
    sop_rc rc = open_cursor(s, &s->pos, err);
    if (rc != SOP_OK) {
        sop__free(s);
        return rc;
    }
    *out = s;
    return SOP_OK;
}

sop_rc sop_stream_create(sop_txn *t, const char *name, const sop_store_options *opts,
                         sop_stream **out, sop_err *err)
{
    if (t == NULL || name == NULL || out == NULL)
        return bad_arg(err, "sop_stream_create: NULL argument");
    sop_store_options o;
    sop_store_options_init(&o);
    o.slot_length = 500;
    if (opts != NULL) {
        o.slot_length = opts->slot_length;
        o.leaf_load_balancing = opts->leaf_load_balancing;
        o.description = opts->description;
        o.cache = opts->cache;
    }
    o.is_unique = true;
    o.key_order_fields = 2;
    o.value_placement = SOP_VALUES_ACTIVE;
    o.globally_cached = false;
    o.streaming = true;
    sop_btree *bt;
    SOP__TRY(sop_store_create(t, name, &o, &bt, err));
    return stream_new(t, bt, out, err);
}

sop_rc sop_stream_open(sop_txn *t, const char *name, sop_stream **out, sop_err *err)
{
    if (t == NULL || name == NULL || out == NULL)
        return bad_arg(err, "sop_stream_open: NULL argument");
    sop_btree *bt;
    SOP__TRY(sop_store_open(t, name, &bt, err));
    if (!bt->ts->info.streaming)
        return sop__err_set(err, SOP_INVALID, 0, "store %s is not a streaming store", name);
    return stream_new(t, bt, out, err);
}

sop_btree *sop_stream_btree(sop_stream *s)
{
    return s ? s->bt : NULL;
}

static void writer_free(sop_stream_writer *w)
{
    sop_stream_writer **p = &w->s->writers;
    while (*p != w)
        p = &(*p)->link;
    *p = w->link;
    sop__txn_hold(w->s->txn, -1);
    ckey_free(&w->k);
    sop__free(w);
}

void sop_stream_close(sop_stream *s)
{
    if (s == NULL)
        return;
    while (s->readers)
        sop_stream_reader_close(s->readers);
    if (s->writers != NULL)
        sop__txn_poison(s->txn); /* an unfinished value must not commit */
    while (s->writers)
        writer_free(s->writers);
    sop_cursor_close(s->pos);
    ckey_free(&s->poskey);
    sop__free(s);
}

/* ---- writers ---- */

sop_rc sop_stream_writer_open(sop_stream *s, const void *key, size_t key_len, unsigned mode,
                              sop_stream_writer **out, sop_err *err)
{
    if (s == NULL || out == NULL)
        return bad_arg(err, "sop_stream_writer_open: NULL argument");
    if (mode > SOP_STREAM_UPSERT)
        return bad_arg(err, "sop_stream_writer_open: unknown mode");
    sop_stream_writer *w = sop__calloc(1, sizeof(*w));
    if (w == NULL)
        return sop__err_set_const(err, SOP_NOMEM, "stream: no memory for a writer");
    sop_rc rc = ckey_init(&w->k, key, key_len, err);
    sop_cursor *c = NULL;
    if (rc == SOP_OK)
        rc = open_cursor(s, &c, err);
    sop_item it;
    bool exists = false;
    if (rc == SOP_OK) {
        rc = seek_first(c, &w->k, &it, err);
        exists = rc == SOP_OK;
        if (rc == SOP_NOTFOUND)
            rc = SOP_OK;
    }
    sop_cursor_close(c);
    if (rc == SOP_OK && exists && (mode == SOP_STREAM_ADD || mode == SOP_STREAM_ADD_IF_NOT_EXISTS))
        rc = sop__err_set(err, SOP_EXISTS, 0, "stream %s: the key already has chunks",
                          s->bt->ts->info.name);
    if (rc == SOP_OK && !exists && mode == SOP_STREAM_UPDATE)
        rc = sop__err_set(err, SOP_NOTFOUND, 0, "stream %s: no such key", s->bt->ts->info.name);
    if (rc != SOP_OK) {
        ckey_free(&w->k);
        sop__free(w);
        return rc;
    }
    w->s = s;
    w->update = exists;
    w->link = s->writers;
    s->writers = w;
    sop__txn_hold(s->txn, +1);
    *out = w;
    return SOP_OK;
}

sop_rc sop_stream_write(sop_stream_writer *w, const void *chunk, size_t len, sop_err *err)
{
    if (w == NULL)
        return bad_arg(err, "sop_stream_write: NULL writer");
    SOP__TRY(index_check(w->next, err));
    ckey_at(&w->k, w->next);
    sop_btree *bt = w->s->bt;
    if (w->update)
        SOP__TRY(sop_btree_upsert(bt, w->k.buf, w->k.len, chunk, len, NULL, err));
    else
        SOP__TRY(sop_btree_add(bt, w->k.buf, w->k.len, chunk, len, NULL, err));
    w->next++;
    return SOP_OK;
}

/* Removes the chunks of k from index `from` on; *n counts them. */
static sop_rc remove_from(sop_stream *s, ckey *k, uint64_t from, uint64_t *n, sop_err *err)
{
    sop_cursor *c;
    SOP__TRY(open_cursor(s, &c, err));
    ckey_at(k, from);
    sop_rc rc = sop_cursor_find(c, k->buf, k->len, err);
    *n = 0;
    while (rc == SOP_OK || (rc == SOP_NOTFOUND && sop_cursor_on_item(c))) {
        sop_item it;
        rc = sop_cursor_item_meta(c, &it, err);
        if (rc != SOP_OK || !has_prefix(k, &it))
            break;
        rc = sop_cursor_remove(c, err);
        if (rc != SOP_OK)
            break;
        (*n)++;
        rc = sop_cursor_next(c, err);
    }
    sop_cursor_close(c);
    return rc == SOP_NOTFOUND ? SOP_OK : rc;
}

sop_rc sop_stream_writer_close(sop_stream_writer *w, uint64_t *chunks, sop_err *err)
{
    if (w == NULL)
        return bad_arg(err, "sop_stream_writer_close: NULL writer");
    sop_rc rc = SOP_OK;
    if (w->next == 0)
        rc = sop_stream_write(w, "", 0, err);
    uint64_t removed = 0;
    if (rc == SOP_OK && w->update)
        rc = remove_from(w->s, &w->k, w->next, &removed, err);
    if (rc == SOP_OK && chunks)
        *chunks = w->next;
    if (rc != SOP_OK)
        sop__txn_poison(w->s->txn); /* the value is half replaced */
    writer_free(w);
    return rc;
}

/* ---- positioning and readers ---- */

static sop_rc position(sop_stream *s, const void *key, size_t key_len, bool at, uint64_t index,
                       sop_err *err)
{
    if (s == NULL)
        return bad_arg(err, "sop_stream_find: NULL stream");
    s->positioned = false;
    ckey_free(&s->poskey);
    SOP__TRY(ckey_init(&s->poskey, key, key_len, err));
    sop_item it;
    if (!at) {
        SOP__TRY(seek_first(s->pos, &s->poskey, &it, err));
    } else {
        SOP__TRY(index_check(index, err));
        ckey_at(&s->poskey, index);
        sop_rc rc = sop_cursor_find(s->pos, s->poskey.buf, s->poskey.len, err);
        if (rc == SOP_NOTFOUND)
            return sop__err_set(err, SOP_NOTFOUND, 0, "stream %s: no chunk %llu of that key",
                                s->bt->ts->info.name, (unsigned long long)index);
        SOP__TRY(rc);
    }
    s->positioned = true;
    return SOP_OK;
}

sop_rc sop_stream_find(sop_stream *s, const void *key, size_t key_len, sop_err *err)
{
    return position(s, key, key_len, false, 0, err);
}

sop_rc sop_stream_find_chunk(sop_stream *s, const void *key, size_t key_len, uint64_t index,
                             sop_err *err)
{
    return position(s, key, key_len, true, index, err);
}

sop_rc sop_stream_reader_open(sop_stream *s, sop_stream_reader **out, sop_err *err)
{
    if (s == NULL || out == NULL)
        return bad_arg(err, "sop_stream_reader_open: NULL argument");
    sop_item it;
    if (!s->positioned || sop_cursor_item_meta(s->pos, &it, NULL) != SOP_OK ||
        !has_prefix(&s->poskey, &it))
        return sop__err_set_const(err, SOP_NOTFOUND,
                                  "stream: not positioned on a chunk (sop_stream_find)");
    sop_stream_reader *r = sop__calloc(1, sizeof(*r));
    if (r == NULL)
        return sop__err_set_const(err, SOP_NOMEM, "stream: no memory for a reader");
    sop_rc rc = ckey_copy(&r->k, &s->poskey, err);
    if (rc == SOP_OK && (r->start = sop__malloc(it.key_len)) == NULL)
        rc = sop__err_set_const(err, SOP_NOMEM, "stream: no memory for a reader");
    if (rc == SOP_OK) {
        memcpy(r->start, it.key, it.key_len);
        r->start_len = it.key_len;
        rc = open_cursor(s, &r->cur, err);
    }
    if (rc != SOP_OK) {
        ckey_free(&r->k);
        sop__free(r->start);
        sop__free(r);
        return rc;
    }
    r->s = s;
    r->link = s->readers;
    s->readers = r;
    *out = r;
    return SOP_OK;
}

/* Loads the next chunk into r->buf; r->done at the end of the value. */
static sop_rc load_chunk(sop_stream_reader *r, sop_err *err)
{
    sop_rc rc;
    if (!r->started) {
        r->started = true;
        rc = sop_cursor_find(r->cur, r->start, r->start_len, err);
        if (rc == SOP_NOTFOUND && sop_cursor_on_item(r->cur))
            rc = SOP_OK; /* the start chunk is gone: go on from the next one */
    } else {
        rc = sop_cursor_next(r->cur, err);
    }
    sop_item it;
    if (rc == SOP_OK)
        rc = sop_cursor_item_meta(r->cur, &it, err);
    if (rc == SOP_NOTFOUND || (rc == SOP_OK && !has_prefix(&r->k, &it))) {
        r->done = true;
        r->len = r->off = 0;
        return SOP_OK;
    }
    SOP__TRY(rc);
    SOP__TRY(parse_index(r->s, &it, r->k.plen, &r->index, err));
    /* the chunk served before is done with: free it before reading the
     * next, so at most one chunk is held */
    sop__free(r->buf);
    r->buf = NULL;
    r->len = r->off = 0;
    SOP__TRY(sop_cursor_item(r->cur, &it, err));
    r->len = it.value_len;
    r->off = 0;
    uint8_t *own = sop__txstore_value_take(r->s->bt->ts, it.value);
    if (own != NULL) { /* the chunk as read from its blob: keep it, no copy */
        r->buf = own;
        return SOP_OK;
    }
    r->buf = sop__malloc(it.value_len ? it.value_len : 1);
    if (r->buf == NULL) {
        r->len = 0;
        return sop__err_set(err, SOP_NOMEM, 0, "stream: no memory for a %zu-byte chunk",
                            it.value_len);
    }
    if (it.value_len)
        memcpy(r->buf, it.value, it.value_len);
    return SOP_OK;
}

static sop_rc load_next(sop_stream_reader *r, sop_err *err)
{
    if (r->failed != SOP_OK)
        return sop__err_set(err, r->failed, 0,
                            "stream: this reader failed earlier (%s); open a new one",
                            sop_rc_name(r->failed));
    sop_rc rc = load_chunk(r, err);
    if (rc != SOP_OK)
        r->failed = rc;
    return rc;
}

sop_rc sop_stream_read_chunk(sop_stream_reader *r, const void **data, size_t *len, uint64_t *index,
                             sop_err *err)
{
    if (r == NULL || data == NULL || len == NULL)
        return bad_arg(err, "sop_stream_read_chunk: NULL argument");
    if (!r->started || (r->off == r->len && !r->done))
        SOP__TRY(load_next(r, err));
    if (r->done)
        return sop__err_set_const(err, SOP_NOTFOUND, "stream: end of the value");
    *data = r->buf ? r->buf + r->off : (const void *)"";
    *len = r->len - r->off;
    if (index)
        *index = r->index;
    r->off = r->len;
    return SOP_OK;
}

sop_rc sop_stream_read(sop_stream_reader *r, void *buf, size_t cap, size_t *got, sop_err *err)
{
    if (r == NULL || got == NULL || (buf == NULL && cap > 0))
        return bad_arg(err, "sop_stream_read: NULL argument");
    *got = 0;
    while (!r->done && *got < cap) {
        if (!r->started || r->off == r->len) {
            if (*got > 0)
                break; /* return what we have before touching storage again */
            SOP__TRY(load_next(r, err));
            continue;
        }
        size_t n = r->len - r->off;
        if (n > cap - *got)
            n = cap - *got;
        memcpy((uint8_t *)buf + *got, r->buf + r->off, n);
        r->off += n;
        *got += n;
    }
    return SOP_OK;
}

void sop_stream_reader_close(sop_stream_reader *r)
{
    if (r == NULL)
        return;
    sop_stream_reader **p = &r->s->readers;
    while (*p != r)
        p = &(*p)->link;
    *p = r->link;
    sop_cursor_close(r->cur);
    ckey_free(&r->k);
    sop__free(r->start);
    sop__free(r->buf);
    sop__free(r);
}

/* ---- chunks ---- */

typedef enum chunk_op { CHUNK_ADD, CHUNK_UPDATE, CHUNK_REMOVE } chunk_op;

static sop_rc chunk_do(sop_stream *s, const void *key, size_t key_len, uint64_t index, chunk_op op,
                       const void *chunk, size_t len, sop_err *err)
{
    if (s == NULL)
        return bad_arg(err, "stream: NULL stream");
    SOP__TRY(index_check(index, err));
    ckey k;
    SOP__TRY(ckey_init(&k, key, key_len, err));
    ckey_at(&k, index);
    sop_rc rc;
    if (op == CHUNK_ADD)
        rc = sop_btree_add(s->bt, k.buf, k.len, chunk, len, NULL, err);
    else if (op == CHUNK_UPDATE)
        rc = sop_btree_update(s->bt, k.buf, k.len, chunk, len, err);
    else
        rc = sop_btree_remove(s->bt, k.buf, k.len, err);
    ckey_free(&k);
    if (rc == SOP_EXISTS)
        return sop__err_set(err, SOP_EXISTS, 0, "stream %s: chunk %llu of that key exists",
                            s->bt->ts->info.name, (unsigned long long)index);
    if (rc == SOP_NOTFOUND)
        return sop__err_set(err, SOP_NOTFOUND, 0, "stream %s: no chunk %llu of that key",
                            s->bt->ts->info.name, (unsigned long long)index);
    return rc;
}

sop_rc sop_stream_add_chunk(sop_stream *s, const void *key, size_t key_len, uint64_t index,
                            const void *chunk, size_t len, sop_err *err)
{
    return chunk_do(s, key, key_len, index, CHUNK_ADD, chunk, len, err);
}

sop_rc sop_stream_update_chunk(sop_stream *s, const void *key, size_t key_len, uint64_t index,
                               const void *chunk, size_t len, sop_err *err)
{
    return chunk_do(s, key, key_len, index, CHUNK_UPDATE, chunk, len, err);
}

sop_rc sop_stream_remove_chunk(sop_stream *s, const void *key, size_t key_len, uint64_t index,
                               sop_err *err)
{
    return chunk_do(s, key, key_len, index, CHUNK_REMOVE, NULL, 0, err);
}

sop_rc sop_stream_remove(sop_stream *s, const void *key, size_t key_len, sop_err *err)
{
    if (s == NULL)
        return bad_arg(err, "sop_stream_remove: NULL stream");
    ckey k;
    SOP__TRY(ckey_init(&k, key, key_len, err));
    uint64_t n = 0;
    sop_rc rc = remove_from(s, &k, 0, &n, err);
    ckey_free(&k);
    if (rc == SOP_OK && n == 0)
        return sop__err_set(err, SOP_NOTFOUND, 0, "stream %s: no such key", s->bt->ts->info.name);
    return rc;
}

/* ---- listing ---- */

/* Adds the chunk the cursor is on to e (its key's prefix is plen bytes). */
static sop_rc tally(const sop_stream *s, const sop_item *it, size_t plen, sop_stream_entry *e,
                    sop_err *err)
{
    uint64_t index;
    SOP__TRY(parse_index(s, it, plen, &index, err));
    if (e->chunks == 0)
        e->first_chunk = index;
    e->last_chunk = index;
    e->chunks++;
    e->bytes += it->value_len;
    return SOP_OK;
}

sop_rc sop_stream_stat(sop_stream *s, const void *key, size_t key_len, sop_stream_entry *out,
                       sop_err *err)
{
    if (s == NULL || out == NULL)
        return bad_arg(err, "sop_stream_stat: NULL argument");
    ckey k;
    SOP__TRY(ckey_init(&k, key, key_len, err));
    sop_cursor *c = NULL;
    sop_rc rc = open_cursor(s, &c, err);
    sop_stream_entry e = {.key = key, .key_len = key_len};
    sop_item it;
    if (rc == SOP_OK)
        rc = seek_first(c, &k, &it, err);
    while (rc == SOP_OK && has_prefix(&k, &it)) {
        rc = tally(s, &it, k.plen, &e, err);
        if (rc == SOP_OK)
            rc = sop_cursor_next(c, err);
        if (rc == SOP_OK)
            rc = sop_cursor_item_meta(c, &it, err);
    }
    sop_cursor_close(c);
    ckey_free(&k);
    if (rc == SOP_NOTFOUND && e.chunks > 0)
        rc = SOP_OK;
    if (rc == SOP_OK)
        *out = e;
    return rc;
}

sop_rc sop_stream_list(sop_stream *s, const void *from, size_t from_len,
                       bool (*fn)(void *ctx, const sop_stream_entry *e), void *ctx, sop_err *err)
{
    if (s == NULL || fn == NULL || (from == NULL && from_len > 0))
        return bad_arg(err, "sop_stream_list: NULL argument");
    sop_cursor *c;
    SOP__TRY(open_cursor(s, &c, err));
    sop_rc rc;
    if (from != NULL && from_len > 0) {
        ckey k;
        rc = ckey_init(&k, from, from_len, err);
        if (rc == SOP_OK) {
            rc = sop_cursor_find(c, k.buf, k.plen, err);
            if (rc == SOP_NOTFOUND && sop_cursor_on_item(c))
                rc = SOP_OK;
            ckey_free(&k);
        }
    } else {
        rc = sop_cursor_first(c, err);
    }
    uint8_t *kb = NULL; /* the current key, unescaped */
    size_t kcap = 0, plen = 0;
    uint8_t *prefix = NULL; /* its encoded prefix (inside the item key) */
    sop_stream_entry e = {0};
    while (rc == SOP_OK) {
        sop_item it;
        rc = sop_cursor_item_meta(c, &it, err);
        if (rc != SOP_OK)
            break;
        if (e.chunks == 0 || !starts_with(&it, prefix, plen)) {
            if (e.chunks > 0 && !fn(ctx, &e))
                break;
            sop_tuple_value v;
            rc = parse_prefix(s, &it, &v, &plen, err);
            if (rc != SOP_OK)
                break;
            if (v.len + plen > kcap) { /* room for the key and its prefix */
                uint8_t *g = sop__realloc(kb, v.len + plen);
                if (g == NULL) {
                    rc = sop__err_set_const(err, SOP_NOMEM, "stream: no memory for a key");
                    break;
                }
                kb = g;
                kcap = v.len + plen;
            }
            sop_tuple_value_copy(&v, kb);
            prefix = kb + v.len;
            memcpy(prefix, it.key, plen);
            e = (sop_stream_entry){.key = kb, .key_len = v.len};
        }
        rc = tally(s, &it, plen, &e, err);
        if (rc == SOP_OK)
            rc = sop_cursor_next(c, err);
        if (rc == SOP_NOTFOUND) {
            if (e.chunks > 0)
                (void)fn(ctx, &e);
            e.chunks = 0;
        }
    }
    sop__free(kb);
    sop_cursor_close(c);
    return rc == SOP_NOTFOUND ? SOP_OK : rc;
}
