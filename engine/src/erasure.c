/*
 * erasure.c - Reed-Solomon erasure coding over ISA-L (see erasure.h for the
 * contract and invariants; docs/erasure_coding.md for the algorithm).
 */
#include "erasure.h"

#include <errno.h>
#include <fcntl.h>
#include <isa-l/erasure_code.h>
#include <stdio.h>
#include <string.h>

#include "bytes.h"
#include "crc.h"
#include "err.h"
#include "fault.h"
#include "idmap.h"
#include "mem.h"
#include "os.h"
#include "repo.h"
#include "uuid.h"

#define SHARD_MAGIC  "SOPSHARD"
#define CONF_MAGIC   "SOPECCF1"
#define MARKER_MAGIC "SOPECDRV"
#define VERSION      1u
#define MARKER_SIZE  64u

/* ---- the codec ------------------------------------------------------------ */

struct sop__rs {
    uint32_t k, p;
    uint8_t a[SOP_EC_SHARDS_MAX * SOP_EC_SHARDS_MAX];        /* (k+p) x k, top k = I */
    uint8_t tbl[32 * SOP_EC_SHARDS_MAX * SOP_EC_SHARDS_MAX]; /* parity rows' tables */
};

sop_rc sop__rs_new(uint32_t k, uint32_t p, sop__rs **out, sop_err *err)
{
    if (k < 1 || p < 1 || k + p > SOP_EC_SHARDS_MAX)
        return sop__err_set(err, SOP_INVALID, 0,
                            "erasure coding: %u data + %u parity shards: each must be at least 1 "
                            "and their sum at most %u",
                            k, p, SOP_EC_SHARDS_MAX);
    sop__rs *rs = sop__calloc(1, sizeof(*rs));
    if (rs == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "erasure coding: no memory for a codec");
    rs->k = k;
    rs->p = p;
    /* Cauchy: every k x k submatrix is invertible, so any k shards rebuild
     * the rest (a Vandermonde matrix does not guarantee that). */
    gf_gen_cauchy1_matrix(rs->a, (int)(k + p), (int)k);
    ec_init_tables((int)k, (int)p, &rs->a[k * k], rs->tbl);
    *out = rs;
    return SOP_OK;
}

void sop__rs_free(sop__rs *rs)
{
    sop__free(rs);
}

void sop__rs_encode(const sop__rs *rs, size_t len, uint8_t *const *data, uint8_t *const *parity)
{
    if (len == 0)
        return;
    ec_encode_data((int)len, (int)rs->k, (int)rs->p, (unsigned char *)rs->tbl,
                   (unsigned char **)data, (unsigned char **)parity);
}

sop_rc sop__rs_rebuild(const sop__rs *rs, size_t len, uint8_t *const *shards, uint32_t have,
                       sop_err *err)
{
    uint32_t k = rs->k, n = rs->k + rs->p;
    uint32_t src[SOP_EC_SHARDS_MAX], miss[SOP_EC_SHARDS_MAX], ns = 0, nm = 0;
    for (uint32_t i = 0; i < n; i++) {
        if ((have >> i) & 1u) {
            if (ns < k)
                src[ns++] = i;
        } else if (shards[i] != NULL) {
            miss[nm++] = i;
        }
    }
    if (ns < k)
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "erasure coding: %u of %u shards are good, %u are needed", ns, n, k);
    if (nm == 0 || len == 0)
        return SOP_OK;
    uint8_t b[SOP_EC_SHARDS_MAX * SOP_EC_SHARDS_MAX], d[SOP_EC_SHARDS_MAX * SOP_EC_SHARDS_MAX];
    uint8_t c[SOP_EC_SHARDS_MAX * SOP_EC_SHARDS_MAX];
    for (uint32_t r = 0; r < k; r++)
        memcpy(&b[r * k], &rs->a[src[r] * k], k);
    if (gf_invert_matrix(b, d, (int)k) != 0)
        return sop__err_set(err, SOP_INTERNAL, 0, "erasure coding: singular decode matrix");
    /* Row m of the rebuild matrix maps the k sources to shard m: for a data
     * shard, row m of the inverse; for a parity shard, its encoding row
     * times the inverse. */
    for (uint32_t r = 0; r < nm; r++) {
        uint32_t m = miss[r];
        if (m < k) {
            memcpy(&c[r * k], &d[m * k], k);
            continue;
        }
        for (uint32_t j = 0; j < k; j++) {
            uint8_t s = 0;
            for (uint32_t t = 0; t < k; t++)
                s ^= gf_mul(rs->a[m * k + t], d[t * k + j]);
            c[r * k + j] = s;
        }
    }
    uint8_t *tbl = sop__malloc(32u * k * nm);
    if (tbl == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "erasure coding: no memory for decode tables");
    uint8_t *in[SOP_EC_SHARDS_MAX], *outp[SOP_EC_SHARDS_MAX];
    for (uint32_t r = 0; r < k; r++)
        in[r] = shards[src[r]];
    for (uint32_t r = 0; r < nm; r++)
        outp[r] = shards[miss[r]];
    ec_init_tables((int)k, (int)nm, c, tbl);
    ec_encode_data((int)len, (int)k, (int)nm, tbl, in, outp);
    sop__free(tbl);
    return SOP_OK;
}

/* ---- shard headers ---------------------------------------------------------- */

size_t sop__shard_len(uint64_t blob_len, uint32_t k)
{
    return (size_t)((blob_len + k - 1) / k);
}

void sop__shard_hdr_encode(const sop__shard_hdr *h, uint8_t out[SOP__SHARD_HEADER])
{
    memset(out, 0, SOP__SHARD_HEADER);
    memcpy(out, SHARD_MAGIC, 8);
    sop__le_put16(out + 8, VERSION);
    out[10] = (uint8_t)h->index;
    out[11] = (uint8_t)h->k;
    out[12] = (uint8_t)h->p;
    memcpy(out + 16, h->blob_id, 16);
    sop__le_put64(out + 32, h->blob_len);
    sop__le_put32(out + 40, h->payload_len);
    sop__le_put32(out + 44, h->blob_crc);
    sop__le_put32(out + 48, h->payload_crc);
    sop__le_put32(out + 60, sop__crc32c(0, out, 60));
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

sop_rc sop__shard_verify(const uint8_t *file, size_t len, const sop__shard_hdr *want,
                         sop__shard_hdr *out, sop_err *err)
{
    if (len < SOP__SHARD_HEADER)
        return sop__err_set(err, SOP_CORRUPT, 0, "%zu bytes, shorter than a shard header", len);
    if (sop__le_get32(file + 60) != sop__crc32c(0, file, 60))
        return sop__err_set(err, SOP_CORRUPT, 0, "bad header checksum");
    if (memcmp(file, SHARD_MAGIC, 8) != 0)
        return sop__err_set(err, SOP_CORRUPT, 0, "not a shard (bad magic)");
    if (sop__le_get16(file + 8) != VERSION)
        return sop__err_set(err, SOP_CORRUPT, 0, "unsupported shard format version %u",
                            sop__le_get16(file + 8));
    sop__shard_hdr h;
    h.index = file[10];
    h.k = file[11];
    h.p = file[12];
    memcpy(h.blob_id, file + 16, 16);
    h.blob_len = sop__le_get64(file + 32);
    h.payload_len = sop__le_get32(file + 40);
    h.blob_crc = sop__le_get32(file + 44);
    h.payload_crc = sop__le_get32(file + 48);
    if (!all_zero(file + 13, 3) || !all_zero(file + 52, 8))
        return sop__err_set(err, SOP_CORRUPT, 0, "reserved header bytes are not zero");
    if (memcmp(h.blob_id, want->blob_id, 16) != 0) {
        char text[SOP__UUID_TEXT_LEN + 1];
        sop__uuid_format(h.blob_id, text);
        return sop__err_set(err, SOP_CORRUPT, 0, "holds a shard of another blob (%s)", text);
    }
    if (h.index != want->index || h.k != want->k || h.p != want->p)
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "is shard %u of a %u+%u coding, expected shard %u of %u+%u", h.index,
                            h.k, h.p, want->index, want->k, want->p);
    if (h.blob_len > SOP__BLOB_SIZE_MAX || h.payload_len != sop__shard_len(h.blob_len, h.k))
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "inconsistent lengths (blob %llu bytes, shard %u bytes)",
                            (unsigned long long)h.blob_len, h.payload_len);
    if (len != SOP__SHARD_HEADER + (size_t)h.payload_len)
        return sop__err_set(err, SOP_CORRUPT, 0, "%zu bytes, expected %zu (truncated or extended)",
                            len, SOP__SHARD_HEADER + (size_t)h.payload_len);
    if (sop__crc32c(0, file + SOP__SHARD_HEADER, h.payload_len) != h.payload_crc)
        return sop__err_set(err, SOP_CORRUPT, 0, "bad payload checksum (bitrot)");
    *out = h;
    return SOP_OK;
}

/* ---- configuration ------------------------------------------------------------ */

void sop__ecconf_free(sop__ecconf *c, uint32_t n)
{
    if (c == NULL)
        return;
    for (uint32_t i = 0; i < n; i++) {
        if (c[i].paths != NULL)
            for (uint32_t j = 0; j < c[i].k + c[i].p; j++)
                sop__free(c[i].paths[j]);
        sop__free(c[i].paths);
    }
    sop__free(c);
}

/* Checks one entry (names, counts, paths) already copied into c. */
static sop_rc entry_check(const sop__ecconf *c, sop_err *err)
{
    const char *who = c->store[0] ? c->store : "(default)";
    if (c->store[0] && !sop__store_name_valid(c->store))
        return sop__err_set(err, SOP_INVALID, 0, "erasure coding for store \"%s\": bad store name",
                            c->store);
    if (c->k < 1 || c->p < 1 || c->k + c->p > SOP_EC_SHARDS_MAX)
        return sop__err_set(err, SOP_INVALID, 0,
                            "erasure coding for %s: %u data + %u parity shards: each must be at "
                            "least 1 and their sum at most %u",
                            who, c->k, c->p, SOP_EC_SHARDS_MAX);
    uint32_t n = c->k + c->p;
    for (uint32_t i = 0; i < n; i++) {
        if (c->paths[i][0] == '\0')
            return sop__err_set(err, SOP_INVALID, 0, "erasure coding for %s: path %u is empty", who,
                                i);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(c->paths[i], c->paths[j]) == 0)
                return sop__err_set(err, SOP_INVALID, 0,
                                    "erasure coding for %s: paths %u and %u are both %s (one "
                                    "folder per drive: a shared one defeats the coding)",
                                    who, j, i, c->paths[i]);
    }
    return SOP_OK;
}

static sop_rc set_conf(sop__ecconf **out, uint32_t n, sop_err *err)
{
    *out = n ? sop__calloc(n, sizeof(**out)) : NULL;
    if (n && *out == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "erasure coding: no memory");
    return SOP_OK;
}

static sop_rc set_path(sop__ecconf *c, uint32_t i, const char *p, size_t len, sop_err *err)
{
    if (len > SOP__EC_PATH_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "erasure coding: path %u is longer than %d bytes", i,
                            SOP__EC_PATH_MAX);
    /* trailing slashes carry no meaning and would make equal paths differ */
    while (len > 1 && p[len - 1] == '/')
        len--;
    c->paths[i] = sop__malloc(len + 1);
    if (c->paths[i] == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "erasure coding: no memory");
    memcpy(c->paths[i], p, len);
    c->paths[i][len] = '\0';
    return SOP_OK;
}

static sop_rc check_all(const sop__ecconf *c, uint32_t n, sop_err *err)
{
    for (uint32_t i = 0; i < n; i++) {
        SOP__TRY(entry_check(&c[i], err));
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(c[i].store, c[j].store) == 0)
                return sop__err_set(err, SOP_INVALID, 0, "erasure coding: two entries for %s%s%s",
                                    c[i].store[0] ? "store " : "the default",
                                    c[i].store[0] ? c[i].store : "", "");
    }
    return SOP_OK;
}

sop_rc sop__ecconf_from_public(const sop_ec_config *in, uint32_t n, sop__ecconf **out, sop_err *err)
{
    if (n > 0 && in == NULL)
        return sop__err_set(err, SOP_INVALID, 0, "erasure coding: %u entries but no array", n);
    sop__ecconf *c;
    SOP__TRY(set_conf(&c, n, err));
    sop_rc rc = SOP_OK;
    for (uint32_t i = 0; i < n && rc == SOP_OK; i++) {
        const sop_ec_config *e = &in[i];
        if (e->store && strlen(e->store) > SOP__STORE_NAME_MAX) {
            rc = sop__err_set(err, SOP_INVALID, 0, "erasure coding: store name too long");
            break;
        }
        snprintf(c[i].store, sizeof(c[i].store), "%s", e->store ? e->store : "");
        c[i].k = e->data_shards;
        c[i].p = e->parity_shards;
        c[i].repair = e->repair;
        if (c[i].k < 1 || c[i].p < 1 || c[i].k + c[i].p > SOP_EC_SHARDS_MAX) {
            c[i].k = c[i].p = 0; /* nothing to free */
            rc = sop__err_set(err, SOP_INVALID, 0,
                              "erasure coding: %u data + %u parity shards: each must be at least 1 "
                              "and their sum at most %u",
                              e->data_shards, e->parity_shards, SOP_EC_SHARDS_MAX);
            break;
        }
        if (e->paths == NULL) {
            c[i].k = c[i].p = 0;
            rc = sop__err_set(err, SOP_INVALID, 0, "erasure coding: no paths given");
            break;
        }
        c[i].paths = sop__calloc(c[i].k + c[i].p, sizeof(char *));
        if (c[i].paths == NULL) {
            c[i].k = c[i].p = 0;
            rc = sop__err_set(err, SOP_NOMEM, 0, "erasure coding: no memory");
            break;
        }
        for (uint32_t j = 0; j < c[i].k + c[i].p && rc == SOP_OK; j++) {
            if (e->paths[j] == NULL)
                rc = sop__err_set(err, SOP_INVALID, 0,
                                  "erasure coding: %u paths are needed (one per shard); path %u is "
                                  "NULL",
                                  c[i].k + c[i].p, j);
            else
                rc = set_path(&c[i], j, e->paths[j], strlen(e->paths[j]), err);
        }
    }
    if (rc == SOP_OK)
        rc = check_all(c, n, err);
    if (rc != SOP_OK) {
        sop__ecconf_free(c, n);
        return rc;
    }
    *out = c;
    return SOP_OK;
}

sop_rc sop__ecconf_encode(const sop__ecconf *c, uint32_t n, uint8_t **out, size_t *len,
                          sop_err *err)
{
    size_t total = 16 + 4;
    for (uint32_t i = 0; i < n; i++) {
        total += 1 + strlen(c[i].store) + 3;
        for (uint32_t j = 0; j < c[i].k + c[i].p; j++)
            total += 2 + strlen(c[i].paths[j]);
    }
    uint8_t *b = sop__malloc(total);
    if (b == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "erasure coding: no memory");
    memcpy(b, CONF_MAGIC, 8);
    sop__le_put32(b + 8, VERSION);
    sop__le_put32(b + 12, n);
    size_t o = 16;
    for (uint32_t i = 0; i < n; i++) {
        size_t sl = strlen(c[i].store);
        b[o++] = (uint8_t)sl;
        memcpy(b + o, c[i].store, sl);
        o += sl;
        b[o++] = (uint8_t)c[i].k;
        b[o++] = (uint8_t)c[i].p;
        b[o++] = c[i].repair ? 1 : 0;
        for (uint32_t j = 0; j < c[i].k + c[i].p; j++) {
            size_t pl = strlen(c[i].paths[j]);
            sop__le_put16(b + o, (uint16_t)pl);
            memcpy(b + o + 2, c[i].paths[j], pl);
            o += 2 + pl;
        }
    }
    sop__le_put32(b + o, sop__crc32c(0, b, o));
    *out = b;
    *len = o + 4;
    return SOP_OK;
}

sop_rc sop__ecconf_decode(const uint8_t *in, size_t len, const char *what, sop__ecconf **out,
                          uint32_t *nout, sop_err *err)
{
    if (len < 20 || memcmp(in, CONF_MAGIC, 8) != 0)
        return sop__err_set(err, SOP_CORRUPT, 0, "%s is not an erasure-coding configuration", what);
    if (sop__le_get32(in + len - 4) != sop__crc32c(0, in, len - 4))
        return sop__err_set(err, SOP_CORRUPT, 0, "%s: bad checksum", what);
    if (sop__le_get32(in + 8) != VERSION)
        return sop__err_set(err, SOP_CORRUPT, 0, "%s: unsupported version %u", what,
                            sop__le_get32(in + 8));
    uint32_t n = sop__le_get32(in + 12);
    if (n > 1u + 65536u)
        return sop__err_set(err, SOP_CORRUPT, 0, "%s: %u entries", what, n);
    sop__ecconf *c;
    SOP__TRY(set_conf(&c, n, err));
    size_t o = 16, end = len - 4;
    sop_rc rc = SOP_OK;
#define NEED(x)                                                                                    \
    if (end - o < (size_t)(x)) {                                                                   \
        rc = sop__err_set(err, SOP_CORRUPT, 0, "%s: truncated at offset %zu", what, o);            \
        break;                                                                                     \
    }
    for (uint32_t i = 0; i < n; i++) {
        NEED(1);
        size_t sl = in[o++];
        NEED(sl + 3);
        if (sl > SOP__STORE_NAME_MAX) {
            rc = sop__err_set(err, SOP_CORRUPT, 0, "%s: store name of %zu bytes", what, sl);
            break;
        }
        memcpy(c[i].store, in + o, sl);
        c[i].store[sl] = '\0';
        o += sl;
        uint32_t k = in[o], p = in[o + 1];
        c[i].repair = in[o + 2] != 0;
        o += 3;
        if (k < 1 || p < 1 || k + p > SOP_EC_SHARDS_MAX) {
            rc = sop__err_set(err, SOP_CORRUPT, 0, "%s: entry %u has %u+%u shards", what, i, k, p);
            break;
        }
        c[i].paths = sop__calloc(k + p, sizeof(char *));
        if (c[i].paths == NULL) {
            rc = sop__err_set(err, SOP_NOMEM, 0, "erasure coding: no memory");
            break;
        }
        c[i].k = k;
        c[i].p = p;
        for (uint32_t j = 0; j < k + p && rc == SOP_OK; j++) {
            NEED(2);
            size_t pl = sop__le_get16(in + o);
            o += 2;
            NEED(pl);
            if (pl == 0 || memchr(in + o, 0, pl) != NULL)
                rc = sop__err_set(err, SOP_CORRUPT, 0, "%s: bad path %u of entry %u", what, j, i);
            else
                rc = set_path(&c[i], j, (const char *)in + o, pl, err);
            o += pl;
        }
        if (rc != SOP_OK)
            break;
    }
#undef NEED
    if (rc == SOP_OK && o != end)
        rc = sop__err_set(err, SOP_CORRUPT, 0, "%s: %zu bytes after the last entry", what, end - o);
    if (rc == SOP_OK) {
        rc = check_all(c, n, err);
        if (rc != SOP_OK)
            rc = sop__err_set(err, SOP_CORRUPT, 0, "%s: %s", what, err ? err->msg : "");
    }
    if (rc != SOP_OK) {
        sop__ecconf_free(c, n);
        return rc;
    }
    *out = c;
    *nout = n;
    return SOP_OK;
}

const sop__ecconf *sop__ecconf_for(const sop__ecconf *c, uint32_t n, const char *store)
{
    const sop__ecconf *def = NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (c[i].store[0] == '\0')
            def = &c[i];
        else if (strcmp(c[i].store, store) == 0)
            return &c[i];
    }
    return def;
}

static const sop__ecconf *find_entry(const sop__ecconf *c, uint32_t n, const char *store)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(c[i].store, store) == 0)
            return &c[i];
    return NULL;
}

bool sop__ecconf_same(const sop__ecconf *rec, uint32_t nrec, const sop__ecconf *given,
                      uint32_t ngiven, sop_err *err)
{
    for (uint32_t i = 0; i < ngiven; i++) {
        const char *who = given[i].store[0] ? given[i].store : "the default";
        const sop__ecconf *r = find_entry(rec, nrec, given[i].store);
        if (r == NULL) {
            sop__err_set(err, SOP_INVALID, 0,
                         "erasure coding: the database was created without an entry for %s", who);
            return false;
        }
        if (r->k != given[i].k || r->p != given[i].p) {
            sop__err_set(err, SOP_INVALID, 0,
                         "erasure coding for %s: the database was created with %u+%u shards, not "
                         "%u+%u",
                         who, r->k, r->p, given[i].k, given[i].p);
            return false;
        }
        for (uint32_t j = 0; j < r->k + r->p; j++) {
            if (strcmp(r->paths[j], given[i].paths[j]) != 0) {
                sop__err_set(err, SOP_INVALID, 0,
                             "erasure coding for %s: path %u is %s in the database, not %s", who, j,
                             r->paths[j], given[i].paths[j]);
                return false;
            }
        }
    }
    for (uint32_t i = 0; i < nrec; i++) {
        if (find_entry(given, ngiven, rec[i].store) == NULL) {
            sop__err_set(err, SOP_INVALID, 0,
                         "erasure coding: the database was created with an entry for %s, which "
                         "is not given",
                         rec[i].store[0] ? rec[i].store : "the default");
            return false;
        }
    }
    return true;
}

/* ---- drive markers ---------------------------------------------------------- */

/* ".sop-ec" for the default entry, ".sop-ec-<store>" for a store's. */
static void marker_name(const sop__ecconf *c, char out[8 + 1 + SOP__STORE_NAME_MAX + 1])
{
    snprintf(out, 8 + 1 + SOP__STORE_NAME_MAX + 1, ".sop-ec%s%s", c->store[0] ? "-" : "", c->store);
}

static sop_rc marker_path(const sop__ecconf *c, uint32_t index, char *out, sop_err *err)
{
    char name[8 + 1 + SOP__STORE_NAME_MAX + 1];
    marker_name(c, name);
    int n = snprintf(out, SOP__PATH_MAX, "%s/%s", c->paths[index], name);
    if (n < 0 || n >= SOP__PATH_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "erasure coding: path %s is too long",
                            c->paths[index]);
    return SOP_OK;
}

static void marker_encode(const sop__ecconf *c, uint32_t index, const uint8_t db_id[16],
                          uint8_t b[MARKER_SIZE])
{
    memset(b, 0, MARKER_SIZE);
    memcpy(b, MARKER_MAGIC, 8);
    memcpy(b + 8, db_id, 16);
    sop__le_put32(b + 24, index);
    sop__le_put32(b + 28, c->k);
    sop__le_put32(b + 32, c->p);
    sop__le_put32(b + 60, sop__crc32c(0, b, 60));
}

sop_rc sop__ec_marker_check(const sop__ecconf *c, uint32_t index, const uint8_t db_id[16],
                            sop_err *err)
{
    char path[SOP__PATH_MAX];
    SOP__TRY(marker_path(c, index, path, err));
    int fd;
    sop_rc rc = sop__os_open(SOP__SITE_EC_MARKER, path, O_RDONLY, 0, &fd, err);
    if (rc == SOP_NOTFOUND)
        return sop__err_set(err, SOP_NOTFOUND, 0, "%s is missing (a new or replaced drive?)", path);
    SOP__TRY(rc);
    uint8_t b[MARKER_SIZE + 1];
    size_t got = 0;
    rc = sop__os_pread_full(SOP__SITE_EC_MARKER, fd, b, sizeof(b), 0, &got, path, err);
    sop__os_close(SOP__SITE_EC_MARKER, fd, path, NULL);
    SOP__TRY(rc);
    if (got != MARKER_SIZE || memcmp(b, MARKER_MAGIC, 8) != 0 ||
        sop__le_get32(b + 60) != sop__crc32c(0, b, 60))
        return sop__err_set(err, SOP_CORRUPT, 0, "%s is damaged", path);
    if (memcmp(b + 8, db_id, 16) != 0)
        return sop__err_set(err, SOP_INVALID, 0, "%s belongs to another database", path);
    if (sop__le_get32(b + 24) != index || sop__le_get32(b + 28) != c->k ||
        sop__le_get32(b + 32) != c->p)
        return sop__err_set(err, SOP_INVALID, 0,
                            "%s says this folder holds shard %u of a %u+%u coding, but it is "
                            "given as shard %u of %u+%u (are the paths in another order?)",
                            path, sop__le_get32(b + 24), sop__le_get32(b + 28),
                            sop__le_get32(b + 32), index, c->k, c->p);
    return SOP_OK;
}

sop_rc sop__ec_marker_write(const sop__ecconf *c, uint32_t index, const uint8_t db_id[16],
                            sop_err *err)
{
    char path[SOP__PATH_MAX], name[8 + 1 + SOP__STORE_NAME_MAX + 1];
    SOP__TRY(marker_path(c, index, path, err)); /* the length check */
    sop_rc rc = sop__os_mkdir(SOP__SITE_EC_MARKER, c->paths[index], 0700, err);
    if (rc != SOP_OK && rc != SOP_EXISTS)
        return rc;
    uint8_t b[MARKER_SIZE];
    marker_encode(c, index, db_id, b);
    marker_name(c, name);
    return sop__os_write_durably(SOP__SITE_EC_MARKER, c->paths[index], name, b, sizeof(b), err);
}

/* ---- the erasure-coded blob store ------------------------------------------------ */

struct sop__ecstore {
    const sop__ecconf *c;
    uint32_t k, p, n;
    sop__rs *rs;
    sop__blobstore *drive[SOP_EC_SHARDS_MAX];
};

sop_rc sop__ec_open(const sop__ecconf *c, const char *store, sop__ecstore **out, sop_err *err)
{
    sop__ecstore *es = sop__calloc(1, sizeof(*es));
    if (es == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "erasure coding: no memory");
    es->c = c;
    es->k = c->k;
    es->p = c->p;
    es->n = c->k + c->p;
    sop_rc rc = sop__rs_new(c->k, c->p, &es->rs, err);
    for (uint32_t i = 0; i < es->n && rc == SOP_OK; i++) {
        char root[SOP__PATH_MAX];
        if (snprintf(root, sizeof(root), "%s/%s", c->paths[i], store) >= (int)sizeof(root))
            rc = sop__err_set(err, SOP_LIMIT, 0, "erasure coding: path %s/%s is too long",
                              c->paths[i], store);
        else
            rc = sop__blob_open(root, &es->drive[i], err);
    }
    if (rc != SOP_OK) {
        sop__ec_close(es);
        return rc;
    }
    *out = es;
    return SOP_OK;
}

void sop__ec_close(sop__ecstore *es)
{
    if (es == NULL)
        return;
    for (uint32_t i = 0; i < es->n; i++)
        if (es->drive[i] != NULL)
            sop__blob_close(es->drive[i]);
    sop__rs_free(es->rs);
    sop__free(es);
}

void sop__ec_path(const sop__ecstore *es, const uint8_t id[16], char *out)
{
    sop__blob_path(es->drive[0], id, out);
}

/* A failure that means "this drive (or this shard) is unusable" - counted
 * against the p the coding tolerates - rather than a reason to stop. */
static bool drive_failure(sop_rc rc)
{
    return rc == SOP_IO || rc == SOP_NOTFOUND || rc == SOP_CORRUPT || rc == SOP_LIMIT;
}

void sop__ec_encode(const sop__rs *rs, const uint8_t id[16], const void *data, size_t len,
                    uint8_t *files)
{
    uint32_t k = rs->k, n = rs->k + rs->p;
    size_t sl = sop__shard_len(len, k), fl = SOP__SHARD_HEADER + sl;
    uint8_t *payload[SOP_EC_SHARDS_MAX];
    for (uint32_t i = 0; i < n; i++)
        payload[i] = files + i * fl + SOP__SHARD_HEADER;
    for (uint32_t i = 0; i < k; i++) {
        size_t off = (size_t)i * sl, take = off < len ? len - off : 0;
        if (take > sl)
            take = sl;
        if (take)
            memcpy(payload[i], (const uint8_t *)data + off, take);
        memset(payload[i] + take, 0, sl - take);
    }
    sop__rs_encode(rs, sl, payload, payload + k);
    sop__shard_hdr h;
    memcpy(h.blob_id, id, 16);
    h.k = k;
    h.p = rs->p;
    h.blob_len = len;
    h.payload_len = (uint32_t)sl;
    h.blob_crc = sop__crc32c(0, data, len);
    for (uint32_t i = 0; i < n; i++) {
        h.index = i;
        h.payload_crc = sop__crc32c(0, payload[i], sl);
        sop__shard_hdr_encode(&h, files + i * fl);
    }
}

sop_rc sop__ec_put(sop__ecstore *es, const uint8_t id[16], const void *data, size_t len,
                   unsigned flags, sop_err *err)
{
    char text[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_format(id, text);
    if (len > SOP__BLOB_SIZE_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "blob %s: %zu bytes exceed the %zu-byte limit", text,
                            len, (size_t)SOP__BLOB_SIZE_MAX);
    size_t sl = sop__shard_len(len, es->k), fl = SOP__SHARD_HEADER + sl;
    uint8_t *buf = sop__malloc(fl * es->n);
    if (buf == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "blob %s: no memory for %u shards of %zu bytes",
                            text, es->n, fl);
    sop__ec_encode(es->rs, id, data, len, buf);
    uint32_t placed = 0, written = 0;
    sop_err first = {0};
    sop_rc rc = SOP_OK;
    for (uint32_t i = 0; i < es->n; i++) {
        sop_err e = {0};
        sop_rc wrc = sop__blob_put(es->drive[i], id, buf + i * fl, fl, flags, &e);
        if (wrc == SOP_OK) {
            SOP__CRASH_POINT(EC_SHARD_WRITTEN);
            placed++;
            written |= 1u << i;
        } else if (drive_failure(wrc)) {
            if (first.code == SOP_OK)
                first = e;
        } else {
            rc = wrc;
            if (err)
                *err = e;
            break;
        }
    }
    sop__free(buf);
    if (rc == SOP_OK && placed < es->k)
        rc = sop__err_set(err, first.code, first.sys_errno,
                          "blob %s: only %u of %u shards written, %u needed: %s", text, placed,
                          es->n, es->k, first.msg);
    if (rc != SOP_OK) {
        /* fewer than k: nobody can read it - take back what was written */
        for (uint32_t i = 0; i < es->n; i++)
            if ((written >> i) & 1u)
                (void)sop__blob_remove(es->drive[i], id, NULL);
        return rc;
    }
    return SOP_OK;
}

/* One read of a blob's shards. */
typedef struct rd {
    uint8_t *file[SOP_EC_SHARDS_MAX];  /* shard files read (sop__malloc) */
    uint8_t *own[SOP_EC_SHARDS_MAX];   /* rebuilt payloads (sop__malloc) */
    uint8_t *pl[SOP_EC_SHARDS_MAX];    /* payload of each shard (into file or own) */
    uint32_t good, tried, found, read; /* bit i: shard i verified / tried / exists / read */
    sop__shard_hdr ref;                /* from the first good shard */
    bool have_ref;
    sop_err why[SOP_EC_SHARDS_MAX]; /* why shard i is bad */
} rd;

static void rd_free(rd *r, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        sop__free(r->file[i]);
        sop__free(r->own[i]);
    }
}

/* Reads and verifies shard i into r. NOMEM and other non-drive failures
 * are returned; a bad shard is recorded and SOP_OK returned. */
static sop_rc read_shard(sop__ecstore *es, const uint8_t id[16], uint32_t i, rd *r, sop_err *err)
{
    r->tried |= 1u << i;
    size_t len;
    sop_err *e = &r->why[i];
    sop_rc rc = sop__blob_get(es->drive[i], id, &r->file[i], &len, e);
    if (rc != SOP_OK) {
        if (rc != SOP_NOTFOUND)
            r->found |= 1u << i;
        if (!drive_failure(rc)) {
            if (err)
                *err = *e;
            return rc;
        }
        return SOP_OK;
    }
    r->found |= 1u << i;
    r->read |= 1u << i;
    sop__shard_hdr want = {0}, got;
    memcpy(want.blob_id, id, 16);
    want.index = i;
    want.k = es->k;
    want.p = es->p;
    if (sop__shard_verify(r->file[i], len, &want, &got, e) != SOP_OK)
        return SOP_OK;
    if (r->have_ref && (got.blob_len != r->ref.blob_len || got.blob_crc != r->ref.blob_crc)) {
        sop__err_set(e, SOP_CORRUPT, 0,
                     "disagrees with shard of the same blob on the blob's length or checksum");
        return SOP_OK;
    }
    if (!r->have_ref) {
        r->ref = got;
        r->have_ref = true;
    }
    r->pl[i] = r->file[i] + SOP__SHARD_HEADER;
    r->good |= 1u << i;
    return SOP_OK;
}

static uint32_t popcount(uint32_t x)
{
    return (uint32_t)__builtin_popcount(x);
}

/* "shard 2 (/d2/store/ab/...): bad payload checksum (bitrot)" for each bad
 * shard tried, into out. */
static void describe_bad(sop__ecstore *es, const uint8_t id[16], const rd *r, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < es->n && o < cap; i++) {
        if (!((r->tried >> i) & 1u) || ((r->good >> i) & 1u))
            continue;
        char path[SOP__BLOB_PATH_MAX];
        sop__blob_path(es->drive[i], id, path);
        const char *sep = o ? "; " : "";
        int w;
        if (!((r->found >> i) & 1u))
            w = snprintf(out + o, cap - o, "%sshard %u missing (%s)", sep, i, path);
        else if ((r->read >> i) & 1u) /* verification failed: the message has no path */
            w = snprintf(out + o, cap - o, "%sshard %u %s: %s", sep, i, path, r->why[i].msg);
        else
            w = snprintf(out + o, cap - o, "%sshard %u: %s", sep, i, r->why[i].msg);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

/* Reads shards until k are good (all of them with `all`); then rebuilds
 * every shard that is not good. */
static sop_rc gather(sop__ecstore *es, const uint8_t id[16], bool all, rd *r, sop_err *err)
{
    for (uint32_t i = 0; i < es->n; i++) {
        if (!all && popcount(r->good) >= es->k && i >= es->k)
            break;
        if (!((r->tried >> i) & 1u))
            SOP__TRY(read_shard(es, id, i, r, err));
    }
    char text[SOP__UUID_TEXT_LEN + 1], why[1024];
    sop__uuid_format(id, text);
    if (popcount(r->good) < es->k) {
        describe_bad(es, id, r, why, sizeof(why));
        if (r->found == 0)
            return sop__err_set(err, SOP_NOTFOUND, 0, "blob %s: no shard of it exists (%s)", text,
                                why);
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "blob %s: %u of %u shards are good, %u are needed: %s", text,
                            popcount(r->good), es->n, es->k, why);
    }
    uint32_t want = (uint32_t)(((uint64_t)1 << (all ? es->n : es->k)) - 1u); /* n may be 32 */
    if ((r->good & want) == want)
        return SOP_OK;
    size_t sl = r->ref.payload_len;
    uint8_t *sh[SOP_EC_SHARDS_MAX];
    for (uint32_t i = 0; i < es->n; i++) {
        sh[i] = NULL;
        if ((r->good >> i) & 1u) {
            sh[i] = r->pl[i];
        } else if ((want >> i) & 1u) {
            if (r->own[i] == NULL && (r->own[i] = sop__malloc(sl ? sl : 1)) == NULL)
                return sop__err_set(err, SOP_NOMEM, 0, "blob %s: no memory to rebuild shards",
                                    text);
            sh[i] = r->pl[i] = r->own[i];
        }
    }
    return sop__rs_rebuild(es->rs, sl, sh, r->good, err);
}

/* The blob's bytes from its k data payloads, checked against the blob
 * checksum. */
static sop_rc assemble(sop__ecstore *es, const uint8_t id[16], rd *r, uint8_t **data, size_t *len,
                       sop_err *err)
{
    size_t bl = (size_t)r->ref.blob_len, sl = r->ref.payload_len;
    uint8_t *out = sop__malloc(bl + 1);
    char text[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_format(id, text);
    if (out == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "blob %s: no memory for %zu bytes", text, bl);
    for (uint32_t i = 0; i < es->k; i++) {
        size_t off = (size_t)i * sl;
        if (off >= bl)
            break;
        size_t take = bl - off < sl ? bl - off : sl;
        memcpy(out + off, r->pl[i], take);
    }
    if (sop__crc32c(0, out, bl) != r->ref.blob_crc) {
        sop__free(out);
        return sop__err_set(err, SOP_CORRUPT, 0,
                            "blob %s: the rebuilt bytes do not match the blob's checksum", text);
    }
    *data = out;
    *len = bl;
    return SOP_OK;
}

/* Rewrites every shard that was read and found bad (or missing) with its
 * rebuilt bytes; a blob none of whose good shards is still there (removed
 * meanwhile) is left alone. */
static sop_rc repair(sop__ecstore *es, const uint8_t id[16], rd *r, uint64_t *repaired,
                     sop_err *err)
{
    uint32_t bad = r->tried & ~r->good;
    if (bad == 0)
        return SOP_OK;
    uint32_t anchor = (uint32_t)__builtin_ctz(r->good);
    if (sop__blob_exists(es->drive[anchor], id, NULL) != SOP_OK)
        return SOP_OK;
    size_t sl = r->ref.payload_len, fl = SOP__SHARD_HEADER + sl;
    uint8_t *buf = sop__malloc(fl);
    if (buf == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "erasure coding: no memory to repair a shard");
    sop_rc rc = SOP_OK;
    for (uint32_t i = 0; i < es->n; i++) {
        if (!((bad >> i) & 1u))
            continue;
        sop__shard_hdr h = r->ref;
        h.index = i;
        h.payload_crc = sop__crc32c(0, r->pl[i], sl);
        sop__shard_hdr_encode(&h, buf);
        memcpy(buf + SOP__SHARD_HEADER, r->pl[i], sl);
        sop_err e = {0};
        sop_rc wrc = sop__blob_put(es->drive[i], id, buf, fl, SOP__BLOB_REPLACE, &e);
        if (wrc == SOP_OK) {
            SOP__CRASH_POINT(EC_SHARD_REPAIRED);
            if (repaired)
                (*repaired)++;
        } else if (!drive_failure(wrc)) {
            rc = wrc;
            if (err)
                *err = e;
            break;
        }
        /* a drive that cannot take the repair stays degraded: not an error
         * for the read, which already has the bytes */
    }
    sop__free(buf);
    return rc;
}

sop_rc sop__ec_get(sop__ecstore *es, const uint8_t id[16], uint8_t **data, size_t *len,
                   sop_err *err)
{
    rd r;
    memset(&r, 0, sizeof(r));
    sop_rc rc = gather(es, id, false, &r, err);
    /* degraded with repair on: read the rest too, so one repair heals every
     * bad shard */
    if (rc == SOP_OK && es->c->repair && (r.tried & ~r.good) != 0)
        rc = gather(es, id, true, &r, err);
    if (rc == SOP_OK)
        rc = assemble(es, id, &r, data, len, err);
    if (rc == SOP_OK && es->c->repair) {
        sop_rc rrc = repair(es, id, &r, NULL, err);
        if (rrc != SOP_OK) {
            sop__free(*data);
            rc = rrc;
        }
    }
    rd_free(&r, es->n);
    return rc;
}

sop_rc sop__ec_scrub(sop__ecstore *es, const uint8_t id[16], bool do_repair, uint64_t *shards,
                     uint64_t *bad, uint64_t *repaired, void (*problem)(void *ctx, const char *msg),
                     void *ctx, sop_err *err)
{
    rd r;
    memset(&r, 0, sizeof(r));
    sop_rc rc = gather(es, id, true, &r, err);
    *shards += popcount(r.tried);
    *bad += popcount(r.tried & ~r.good);
    if (problem != NULL && (r.tried & ~r.good) != 0 && rc == SOP_OK) {
        char why[1024], msg[1200];
        describe_bad(es, id, &r, why, sizeof(why));
        char text[SOP__UUID_TEXT_LEN + 1];
        sop__uuid_format(id, text);
        snprintf(msg, sizeof(msg), "blob %s: %s%s", text, why,
                 do_repair ? " (repaired)" : " (readable from the other shards)");
        problem(ctx, msg);
    }
    uint8_t *data = NULL;
    size_t len;
    if (rc == SOP_OK)
        rc = assemble(es, id, &r, &data, &len, err);
    sop__free(data);
    if (rc == SOP_OK && do_repair)
        rc = repair(es, id, &r, repaired, err);
    rd_free(&r, es->n);
    return rc;
}

/* Runs op on every drive; returns how many failed, the first failure in
 * *first. */
static uint32_t on_every_drive(sop__ecstore *es,
                               sop_rc (*op)(sop__blobstore *bs, const uint8_t id[16], sop_err *err),
                               const uint8_t id[16], sop_err *first)
{
    uint32_t failed = 0;
    for (uint32_t i = 0; i < es->n; i++) {
        sop_err e = {0};
        if (op(es->drive[i], id, &e) != SOP_OK && failed++ == 0)
            *first = e;
    }
    return failed;
}

static sop_rc failed_drives(const sop__ecstore *es, const uint8_t id[16], const char *what,
                            uint32_t failed, const sop_err *first, sop_err *err)
{
    char text[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_format(id, text);
    return sop__err_set(err, first->code, first->sys_errno,
                        "blob %s: %u of %u shards could not be %s: %s", text, failed, es->n, what,
                        first->msg);
}

sop_rc sop__ec_remove(sop__ecstore *es, const uint8_t id[16], sop_err *err)
{
    sop_err first = {0};
    uint32_t failed = on_every_drive(es, sop__blob_remove, id, &first);
    /* up to p shards left on failing drives are orphans for scrub */
    return failed > es->p ? failed_drives(es, id, "removed", failed, &first, err) : SOP_OK;
}

sop_rc sop__ec_remove_all(sop__ecstore *es, const uint8_t id[16], sop_err *err)
{
    sop_err first = {0};
    uint32_t failed = on_every_drive(es, sop__blob_remove, id, &first);
    return failed > 0 ? failed_drives(es, id, "removed", failed, &first, err) : SOP_OK;
}

sop_rc sop__ec_sync(sop__ecstore *es, const uint8_t id[16], sop_err *err)
{
    sop_err first = {0};
    uint32_t failed = on_every_drive(es, sop__blob_sync, id, &first);
    /* k or more synced shards make the blob durable */
    return failed > es->p ? failed_drives(es, id, "synced", failed, &first, err) : SOP_OK;
}

static int list_mark;

static sop_rc list_collect(void *ctx, const uint8_t id[16])
{
    return sop__idmap_put(ctx, id, &list_mark, NULL);
}

sop_rc sop__ec_list(sop__ecstore *es, sop_rc (*fn)(void *ctx, const uint8_t id[16]), void *ctx,
                    sop_err *err)
{
    sop__idmap seen;
    sop__idmap_init(&seen);
    uint32_t failed = 0;
    sop_err first = {0};
    sop_rc rc = SOP_OK;
    for (uint32_t i = 0; i < es->n; i++) {
        sop_err e = {0};
        sop_rc one = sop__blob_list(es->drive[i], list_collect, &seen, &e);
        if (one == SOP_NOMEM) {
            rc = sop__err_set(err, SOP_NOMEM, 0, "erasure coding: no memory to list blobs");
            break;
        }
        if (one != SOP_OK && failed++ == 0)
            first = e;
    }
    if (rc == SOP_OK && failed > es->p) {
        rc = first.code;
        if (err)
            *err = first;
    }
    sop__idmap_slot *slot;
    for (size_t pos = 0; rc == SOP_OK && (pos = sop__idmap_next(&seen, pos, &slot)) != 0;)
        rc = fn(ctx, slot->id);
    sop__idmap_free(&seen);
    return rc;
}

sop_rc sop__ec_drop_store(const sop__ecconf *c, const char *store, sop_err *err)
{
    uint32_t failed = 0;
    sop_err first = {0};
    for (uint32_t i = 0; i < c->k + c->p; i++) {
        sop_err e = {0};
        if (sop__repo_drop_dir(c->paths[i], store, &e) != SOP_OK && failed++ == 0)
            first = e;
    }
    if (failed > c->p) {
        if (err)
            *err = first;
        return first.code;
    }
    return SOP_OK;
}
