/*
 * registry.c - the registry: logical node ID -> 62-byte handle, kept in the
 * Go original's segment files (registry.h; docs/format.md "Registry" for
 * the bytes, docs/registry.md for the algorithm and its reasons).
 *
 * A store's registry is the chain of segment files <dir>/<name>-<i>.reg,
 * i = 1 .. SOP__REG_SEGMENTS_MAX, each hash_mod blocks of 4096 bytes. The
 * logical ID picks one block index b (the same in every segment) and an
 * ideal slot; its record lives in block b of the lowest segment that had it
 * or had room when it was written.
 *
 * Invariants:
 *  1. Lookups match by logical ID, never by position: the ideal slot first,
 *     then every slot of the block, segment after segment until one is
 *     missing. A batch's results are returned in the caller's order.
 *  2. One logical ID has at most one record. A PUT searches block b of
 *     every existing segment for the ID before it takes a free slot, and a
 *     record is never moved: it is replaced or zeroed where it is.
 *  3. A block is valid when all 4096 bytes are zero or its CRC-32 (IEEE,
 *     little-endian, at 4092) matches bytes 0..4091. An invalid block is
 *     SOP_CORRUPT naming the file and block - never read as empty - except
 *     under SOP__REG_REPAIR, where it is taken as stored, patched (the
 *     torn-write rules of docs/registry.md: debris cleared, torn-aware ID
 *     match, equal versions rewritten) and rewritten with a good CRC.
 *  4. apply handles block indexes in ascending order and releases every
 *     lock of one index before it takes the next. For one index it locks
 *     block b of segments 1, 2, ... in ascending order (exclusive OFD lock
 *     on the block's 4096 bytes, waiting), reads each block once, decides
 *     every op of the batch for that index in memory, writes each changed
 *     block once (one pwrite of 4096 bytes) and unlocks in descending order.
 *     Every writer of block b holds block b of segment 1 (a PUT creates
 *     segment 1 first), so while it is held nobody else changes block b in
 *     any segment, and the segment after the last locked one is probed only
 *     while holding the locks: a record there cannot be missed.
 *  5. Readers take no lock. A block that fails its checksum is read again
 *     under a shared lock on its 4096 bytes before it is declared corrupt
 *     (a concurrent writer's pwrite may be half copied into the page cache).
 *  6. Segment i exists whole (exactly hash_mod x 4096 bytes) before block b
 *     of it is used; it is created with O_CREAT|O_EXCL, sized by ftruncate
 *     (sparse), and fsynced with its folder before any handle is written into
 *     it (if those syncs fail the error is returned, the segment - whole -
 *     is kept, and sop__registry_sync syncs it and the folder again). A
 *     zero-length segment is a creation that was interrupted: readers
 *     treat it as missing, the next writer finishes it. Any other size is
 *     SOP_CORRUPT (the hash_mod changed, or the file was cut).
 *  7. segs[0 .. nseg) are segments known to exist whole. Their descriptors
 *     stay open until close (reopened if an unlock failure had to drop one);
 *     `dirty` marks those written since the last sop__registry_sync.
 *  8. Every path is built from the folder and store name given to open; the
 *     files are opened with O_NOFOLLOW and must be regular files.
 */
#include "registry.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bytes.h"
#include "crc.h"
#include "err.h"
#include "fault.h"
#include "idmap.h"
#include "mem.h"
#include "os.h"
#include "uuid.h"

/* ---- Byte layout (docs/format.md, "Registry") ---- */

#define H_LID      0  /* 16 bytes */
#define H_PA       16 /* 16 bytes */
#define H_PB       32 /* 16 bytes */
#define H_ACTIVE_B 48 /* 1 byte: 1 = B is active */
#define H_VERSION  49 /* int32 little-endian */
#define H_WIP      53 /* int64 little-endian */
#define H_DELETED  61 /* 1 byte: 1 = deleted */

#define REG_DATA    (SOP__REG_SLOTS * SOP__HANDLE_SIZE) /* 4092 bytes of handles */
#define REG_CRC_OFF REG_DATA                            /* CRC-32 IEEE, little-endian */
/* The unit a disk is assumed to write atomically (docs/registry.md). */
#define REG_SECTOR 512u

_Static_assert(H_PA == H_LID + 16, "handle: pa follows lid");
_Static_assert(H_PB == H_PA + 16, "handle: pb follows pa");
_Static_assert(H_ACTIVE_B == H_PB + 16, "handle: active flag follows pb");
_Static_assert(H_VERSION == H_ACTIVE_B + 1, "handle: version follows the active flag");
_Static_assert(H_WIP == H_VERSION + 4, "handle: wip follows version");
_Static_assert(H_DELETED == H_WIP + 8, "handle: deleted follows wip");
_Static_assert(H_DELETED + 1 == SOP__HANDLE_SIZE, "handle: 62 bytes");
_Static_assert(REG_DATA == 4092, "block: 66 handles of 62 bytes");
_Static_assert(REG_CRC_OFF + 4 == SOP__REG_BLOCK, "block: CRC in the last 4 bytes");
_Static_assert(SOP__REG_BLOCK % REG_SECTOR == 0, "block: whole sectors");
_Static_assert((uint64_t)SOP__REG_HASH_MOD_MAX *SOP__REG_BLOCK < (uint64_t)INT64_MAX,
               "segment size fits off_t");

static const uint8_t zero_block[SOP__REG_BLOCK];

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

void sop__handle_encode(const sop__handle *h, uint8_t out[SOP__HANDLE_SIZE])
{
    memcpy(out + H_LID, h->lid, 16);
    memcpy(out + H_PA, h->pa, 16);
    memcpy(out + H_PB, h->pb, 16);
    out[H_ACTIVE_B] = h->active_b ? 1 : 0;
    sop__le_put32(out + H_VERSION, (uint32_t)h->version);
    sop__le_put64(out + H_WIP, (uint64_t)h->wip_ms);
    out[H_DELETED] = h->deleted ? 1 : 0;
}

/* As the Go original: a flag byte is true only when it is exactly 1. */
void sop__handle_decode(const uint8_t in[SOP__HANDLE_SIZE], sop__handle *h)
{
    memcpy(h->lid, in + H_LID, 16);
    memcpy(h->pa, in + H_PA, 16);
    memcpy(h->pb, in + H_PB, 16);
    h->active_b = in[H_ACTIVE_B] == 1;
    h->version = (int32_t)sop__le_get32(in + H_VERSION);
    h->wip_ms = (int64_t)sop__le_get64(in + H_WIP);
    h->deleted = in[H_DELETED] == 1;
}

static uint32_t block_of(const uint8_t lid[16], uint32_t hash_mod)
{
    return (uint32_t)(get_be64(lid) % hash_mod);
}

static unsigned ideal_slot_of(const uint8_t lid[16])
{
    return (unsigned)(get_be64(lid + 8) % SOP__REG_SLOTS);
}

static bool is_zero(const uint8_t *p, size_t n)
{
    return memcmp(p, zero_block, n) == 0; /* n <= SOP__REG_BLOCK */
}

static bool slot_empty(const uint8_t *slot)
{
    return is_zero(slot, SOP__HANDLE_SIZE);
}

/* Invariant 3: the Go original's rule (an all-zero block needs no CRC). */
static bool block_valid(const uint8_t *b)
{
    uint32_t stored = sop__le_get32(b + REG_CRC_OFF);
    if (sop__crc32_ieee(0, b, REG_DATA) == stored)
        return true;
    return stored == 0 && is_zero(b, REG_DATA);
}

static void block_seal(uint8_t *b)
{
    uint32_t crc = is_zero(b, REG_DATA) ? 0 : sop__crc32_ieee(0, b, REG_DATA);
    sop__le_put32(b + REG_CRC_OFF, crc);
}

/* ---- The registry object ---- */

typedef struct reg_seg {
    int fd;     /* -1: not open (reopened on demand) */
    bool dirty; /* written since the last sop__registry_sync */
    char *path; /* "<dir>/<name>-<i>.reg" */
} reg_seg;

struct sop__registry {
    uint32_t hash_mod;
    bool writable;
    bool dir_sync_pending; /* a segment's creation could not sync the folder */
    uint32_t nseg;         /* segments 1..nseg exist whole (invariant 7) */
    uint32_t seg_cap;
    reg_seg *segs; /* segs[i - 1] is segment i */
    char *dir;
    char *parent; /* dir's parent folder, synced if dir has to be created */
    char *prefix; /* "<dir>/<name>-" */
    size_t prefix_len;
    char *probe; /* scratch path of a segment not yet known */
    /* Scratch for one block index: a block, a "bad checksum" and a "changed"
     * flag per segment. */
    uint8_t *bufs;
    bool *bad;
    bool *changed;
    uint32_t buf_cap;
};

static uint64_t seg_bytes(const sop__registry *r)
{
    return (uint64_t)r->hash_mod * SOP__REG_BLOCK;
}

/* buf has room for prefix_len + 16 bytes (open checked the total length). */
static char *seg_path_into(const sop__registry *r, uint32_t i, char *buf)
{
    snprintf(buf, r->prefix_len + 16, "%s%u.reg", r->prefix, (unsigned)i);
    return buf;
}

static char *dup_str(const char *s, size_t n)
{
    char *p = sop__malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static sop_rc nomem(sop_err *err)
{
    return sop__err_set_const(err, SOP_NOMEM, "registry: out of memory");
}

sop_rc sop__registry_open(const char *dir, const char *name, uint32_t hash_mod, bool writable,
                          sop__registry **out, sop_err *err)
{
    if (hash_mod < SOP__REG_HASH_MOD_MIN || hash_mod > SOP__REG_HASH_MOD_MAX)
        return sop__err_set(err, SOP_INVALID, 0, "registry: hash_mod %u is outside %u..%u",
                            (unsigned)hash_mod, (unsigned)SOP__REG_HASH_MOD_MIN,
                            (unsigned)SOP__REG_HASH_MOD_MAX);
    if (dir == NULL || dir[0] == '\0' || name == NULL || name[0] == '\0')
        return sop__err_set_const(err, SOP_INVALID, "registry: empty folder or store name");
    if (strchr(name, '/') != NULL || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return sop__err_set(err, SOP_INVALID, 0, "registry: bad store name '%.64s'", name);
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    size_t nlen = strlen(name);
    /* room for "/", "-", 10 digits, ".reg" and the NUL */
    if (dlen + nlen + 20 > PATH_MAX)
        return sop__err_set_const(err, SOP_INVALID, "registry: folder and store name too long");

    sop__registry *r = sop__calloc(1, sizeof(*r));
    if (r == NULL)
        return nomem(err);
    r->hash_mod = hash_mod;
    r->writable = writable;
    r->dir = dup_str(dir, dlen);
    r->prefix_len = dlen + 1 + nlen + 1;
    r->prefix = sop__malloc(r->prefix_len + 1);
    r->probe = sop__malloc(r->prefix_len + 16);
    const char *slash = NULL;
    for (size_t k = dlen; k > 0; k--)
        if (dir[k - 1] == '/') {
            slash = dir + k - 1;
            break;
        }
    if (slash == NULL)
        r->parent = dup_str(".", 1);
    else
        r->parent = dup_str(dir, slash == dir ? 1 : (size_t)(slash - dir));
    if (r->dir == NULL || r->prefix == NULL || r->probe == NULL || r->parent == NULL) {
        sop__registry_close(r);
        return nomem(err);
    }
    memcpy(r->prefix, dir, dlen);
    r->prefix[dlen] = '/';
    memcpy(r->prefix + dlen + 1, name, nlen);
    r->prefix[dlen + 1 + nlen] = '-';
    r->prefix[r->prefix_len] = '\0';
    *out = r;
    return SOP_OK;
}

void sop__registry_close(sop__registry *r)
{
    if (r == NULL)
        return;
    for (uint32_t i = 0; i < r->nseg; i++) {
        sop__os_close(SOP__SITE_REG_SEGMENT_CLOSE, r->segs[i].fd, r->segs[i].path, NULL);
        sop__free(r->segs[i].path);
    }
    sop__free(r->segs);
    sop__free(r->dir);
    sop__free(r->parent);
    sop__free(r->prefix);
    sop__free(r->probe);
    sop__free(r->bufs);
    sop__free(r->bad);
    sop__free(r->changed);
    sop__free(r);
}

uint32_t sop__registry_segments(const sop__registry *r)
{
    /* Other processes may have added segments since this one last looked. */
    uint32_t n = r->nseg;
    char path[PATH_MAX];
    while (n < SOP__REG_SEGMENTS_MAX) {
        struct stat st;
        if (sop__os_stat(SOP__SITE_REG_SEGMENT_OPEN, seg_path_into(r, n + 1, path), &st, NULL) !=
                SOP_OK ||
            (uint64_t)st.st_size != seg_bytes(r))
            break;
        n++;
    }
    return n;
}

/* ---- Segments ---- */

static sop_rc ensure_scratch(sop__registry *r, uint32_t nsegs, sop_err *err)
{
    if (nsegs <= r->buf_cap)
        return SOP_OK;
    uint32_t cap = r->buf_cap ? r->buf_cap : 4;
    while (cap < nsegs)
        cap *= 2;
    if (cap > SOP__REG_SEGMENTS_MAX)
        cap = SOP__REG_SEGMENTS_MAX;
    uint8_t *b = sop__realloc(r->bufs, (size_t)cap * SOP__REG_BLOCK);
    if (b == NULL)
        return nomem(err);
    r->bufs = b;
    bool *bad = sop__realloc(r->bad, cap * sizeof(bool));
    if (bad == NULL)
        return nomem(err);
    r->bad = bad;
    bool *ch = sop__realloc(r->changed, cap * sizeof(bool));
    if (ch == NULL)
        return nomem(err);
    r->changed = ch;
    r->buf_cap = cap;
    return SOP_OK;
}

static uint8_t *buf_of(sop__registry *r, uint32_t i)
{
    return r->bufs + (size_t)(i - 1) * SOP__REG_BLOCK;
}

/* Records segment i (= nseg + 1) as existing whole, open on fd. */
static sop_rc seg_register(sop__registry *r, uint32_t i, int fd, const char *path, sop_err *err)
{
    if (i > r->seg_cap) {
        uint32_t cap = r->seg_cap ? r->seg_cap * 2 : 4;
        reg_seg *s = sop__realloc(r->segs, cap * sizeof(reg_seg));
        if (s == NULL)
            return nomem(err);
        r->segs = s;
        r->seg_cap = cap;
    }
    char *p = dup_str(path, strlen(path));
    if (p == NULL)
        return nomem(err);
    r->segs[i - 1] = (reg_seg){.fd = fd, .dirty = false, .path = p};
    r->nseg = i;
    return SOP_OK;
}

static void close_quiet(int fd, const char *path)
{
    sop__os_close(SOP__SITE_REG_SEGMENT_CLOSE, fd, path, NULL);
}

static sop_rc io_fail(sop_rc rc, sop_err *err)
{
    sop__err_prefix(err, "registry");
    return rc;
}

/* Opens `path`; *size_out = its size. Regular files only, never a link. */
static sop_rc seg_open_file(sop__registry *r, const char *path, int *fd_out, uint64_t *size_out,
                            sop_err *err)
{
    int fd = -1;
    int flags = (r->writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW;
    sop_rc rc = sop__os_open(SOP__SITE_REG_SEGMENT_OPEN, path, flags, 0, &fd, err);
    if (rc == SOP_NOTFOUND)
        return rc;
    if (rc != SOP_OK)
        return io_fail(rc, err);
    struct stat st;
    rc = sop__os_fstat(SOP__SITE_REG_SEGMENT_OPEN, fd, &st, path, err);
    if (rc != SOP_OK) {
        close_quiet(fd, path);
        return io_fail(rc, err);
    }
    if (!S_ISREG(st.st_mode)) {
        close_quiet(fd, path);
        return sop__err_set(err, SOP_CORRUPT, 0, "registry: segment %s is not a regular file",
                            path);
    }
    *fd_out = fd;
    *size_out = (uint64_t)st.st_size;
    return SOP_OK;
}

static sop_rc wrong_size(const sop__registry *r, const char *path, uint64_t size, sop_err *err)
{
    return sop__err_set(err, SOP_CORRUPT, 0,
                        "registry: segment %s is %llu bytes, expected %llu (hash_mod %u x 4096): "
                        "the hash_mod changed or the file was truncated",
                        path, (unsigned long long)size, (unsigned long long)seg_bytes(r),
                        (unsigned)r->hash_mod);
}

/*
 * Sizes a new or zero-length segment i and makes it durable with its folder
 * (invariant 6), then registers it. If only the syncs fail, the segment is
 * registered anyway (it is whole) with its sync left to sop__registry_sync,
 * and the failure is returned.
 */
static sop_rc seg_finish(sop__registry *r, uint32_t i, int fd, const char *path, sop_err *err)
{
    sop_rc rc = sop__os_ftruncate(SOP__SITE_REG_SEGMENT_CREATE, fd, seg_bytes(r), path, err);
    if (rc != SOP_OK) {
        close_quiet(fd, path);
        return io_fail(rc, err);
    }
    rc = sop__os_fsync(SOP__SITE_REG_SYNC, fd, path, err);
    if (rc == SOP_OK)
        rc = sop__os_fsync_dir(SOP__SITE_REG_SYNC, r->dir, err);
    sop_rc reg = seg_register(r, i, fd, path, rc == SOP_OK ? err : NULL);
    if (reg != SOP_OK) {
        close_quiet(fd, path);
        return rc == SOP_OK ? reg : io_fail(rc, err);
    }
    if (rc != SOP_OK) {
        r->segs[i - 1].dirty = true;
        r->dir_sync_pending = true;
        return io_fail(rc, err);
    }
    return SOP_OK;
}

/*
 * Makes segment i usable: SOP_OK when it exists whole (its descriptor open),
 * SOP_NOTFOUND when it does not exist - or is a zero-length leftover of an
 * interrupted creation and !for_write; for_write finishes such a file.
 * Precondition: i <= nseg + 1.
 */
static sop_rc seg_ensure(sop__registry *r, uint32_t i, bool for_write, sop_err *err)
{
    int fd = -1;
    uint64_t size = 0;
    if (i <= r->nseg) {
        reg_seg *s = &r->segs[i - 1];
        if (s->fd >= 0)
            return SOP_OK;
        sop_rc rc = seg_open_file(r, s->path, &fd, &size, err);
        if (rc == SOP_NOTFOUND)
            return sop__err_set(err, SOP_CORRUPT, 0, "registry: segment %s disappeared", s->path);
        if (rc != SOP_OK)
            return rc;
        if (size != seg_bytes(r)) {
            close_quiet(fd, s->path);
            return wrong_size(r, s->path, size, err);
        }
        s->fd = fd;
        return SOP_OK;
    }
    const char *path = seg_path_into(r, i, r->probe);
    sop_rc rc = seg_open_file(r, path, &fd, &size, err);
    if (rc != SOP_OK)
        return rc;
    if (size == seg_bytes(r)) {
        rc = seg_register(r, i, fd, path, err);
        if (rc != SOP_OK)
            close_quiet(fd, path);
        return rc;
    }
    if (size == 0) {
        if (for_write && r->writable)
            return seg_finish(r, i, fd, path, err);
        close_quiet(fd, path);
        return sop__err_set_const(err, SOP_NOTFOUND, "registry: segment not created yet");
    }
    close_quiet(fd, path);
    return wrong_size(r, path, size, err);
}

/* Creates segment i = nseg + 1 (invariant 6). */
static sop_rc seg_create(sop__registry *r, uint32_t i, sop_err *err)
{
    /* The store folder is the caller's; create it if it is missing. */
    sop_rc rc = sop__os_mkdir(SOP__SITE_REG_SEGMENT_CREATE, r->dir, 0700, err);
    if (rc == SOP_OK)
        rc = sop__os_fsync_dir(SOP__SITE_REG_SYNC, r->parent, err);
    else if (rc == SOP_EXISTS)
        rc = SOP_OK;
    if (rc != SOP_OK)
        return io_fail(rc, err);
    const char *path = seg_path_into(r, i, r->probe);
    int fd = -1;
    rc = sop__os_open(SOP__SITE_REG_SEGMENT_CREATE, path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW,
                      0600, &fd, err);
    if (rc == SOP_EXISTS) /* another process is creating it: finish or use it */
        return seg_ensure(r, i, true, err);
    if (rc != SOP_OK)
        return io_fail(rc, err);
    return seg_finish(r, i, fd, path, err);
}

/* ---- Blocks ---- */

static sop_rc block_read(sop__registry *r, uint32_t i, uint32_t b, uint8_t *buf, sop_err *err)
{
    reg_seg *s = &r->segs[i - 1];
    sop_rc rc = sop__os_pread_full(SOP__SITE_REG_BLOCK_READ, s->fd, buf, SOP__REG_BLOCK,
                                   (uint64_t)b * SOP__REG_BLOCK, NULL, s->path, err);
    return rc == SOP_OK ? rc : io_fail(rc, err);
}

static sop_rc bad_checksum(const sop__registry *r, uint32_t i, uint32_t b, sop_err *err)
{
    return sop__err_set(err, SOP_CORRUPT, 0, "registry: bad checksum in block %u of %s",
                        (unsigned)b, r->segs[i - 1].path);
}

static sop_rc block_lock(sop__registry *r, uint32_t i, uint32_t b, sop__os_lock_mode mode,
                         sop_err *err)
{
    reg_seg *s = &r->segs[i - 1];
    sop_rc rc = sop__os_lock(SOP__SITE_REG_LOCK, s->fd, mode, (uint64_t)b * SOP__REG_BLOCK,
                             SOP__REG_BLOCK, true, s->path, err);
    return rc == SOP_OK ? rc : io_fail(rc, err);
}

/* If the unlock fails the lock must still go: closing the descriptor drops
 * every OFD lock it holds; the segment is reopened when next needed. */
static sop_rc block_unlock(sop__registry *r, uint32_t i, uint32_t b, sop_err *err)
{
    reg_seg *s = &r->segs[i - 1];
    sop_rc rc = sop__os_unlock(SOP__SITE_REG_LOCK, s->fd, (uint64_t)b * SOP__REG_BLOCK,
                               SOP__REG_BLOCK, s->path, err);
    if (rc != SOP_OK) {
        close_quiet(s->fd, s->path);
        s->fd = -1;
        return io_fail(rc, err);
    }
    return SOP_OK;
}

/* Reads block b of segment i for a lookup: no lock, unless the checksum
 * fails - then once more under a shared lock (invariant 5). */
static sop_rc block_read_checked(sop__registry *r, uint32_t i, uint32_t b, uint8_t *buf,
                                 sop_err *err)
{
    SOP__TRY(block_read(r, i, b, buf, err));
    if (block_valid(buf))
        return SOP_OK;
    SOP__TRY(block_lock(r, i, b, SOP__OS_LOCK_SHARED, err));
    sop_rc rc = block_read(r, i, b, buf, err);
    sop_rc urc = block_unlock(r, i, b, rc == SOP_OK ? err : NULL);
    if (rc != SOP_OK)
        return rc;
    if (urc != SOP_OK)
        return urc;
    return block_valid(buf) ? SOP_OK : bad_checksum(r, i, b, err);
}

/*
 * Whether the lid stored in slot s could be `lid` after a torn write: each
 * part of the stored lid that lies in one 512-byte sector is either the
 * corresponding part of `lid` or all zero (a write that inserted or deleted
 * `lid` reached only some sectors). Only a lid that a sector boundary splits
 * can qualify - in a 4096-byte block that is slot 33 (bytes 2046..2061).
 */
static bool lid_torn_match(unsigned s, const uint8_t *stored, const uint8_t lid[16])
{
    unsigned start = s * SOP__HANDLE_SIZE;
    unsigned boundary = (start / REG_SECTOR + 1) * REG_SECTOR;
    if (boundary >= start + 16)
        return false;
    unsigned cut = boundary - start;
    bool a_eq = memcmp(stored, lid, cut) == 0, a_zero = is_zero(stored, cut);
    bool b_eq = memcmp(stored + cut, lid + cut, 16 - cut) == 0;
    bool b_zero = is_zero(stored + cut, 16 - cut);
    return (a_eq || a_zero) && (b_eq || b_zero) && !(a_zero && b_zero);
}

/* Slot of `lid` in block buf (ideal slot first), or -1. `torn`: also accept
 * a torn record of it (REPAIR of a block with a bad checksum). */
static int block_find(const uint8_t *buf, const uint8_t lid[16], bool torn)
{
    unsigned ideal = ideal_slot_of(lid);
    if (memcmp(buf + ideal * SOP__HANDLE_SIZE, lid, 16) == 0)
        return (int)ideal;
    for (unsigned s = 0; s < SOP__REG_SLOTS; s++)
        if (s != ideal && memcmp(buf + s * SOP__HANDLE_SIZE, lid, 16) == 0)
            return (int)s;
    if (torn)
        for (unsigned s = 0; s < SOP__REG_SLOTS; s++)
            if (lid_torn_match(s, buf + s * SOP__HANDLE_SIZE, lid))
                return (int)s;
    return -1;
}

/* A free slot of block buf for `lid` (the ideal one if free), or -1. */
static int block_free_slot(const uint8_t *buf, const uint8_t lid[16])
{
    unsigned ideal = ideal_slot_of(lid);
    if (slot_empty(buf + ideal * SOP__HANDLE_SIZE))
        return (int)ideal;
    for (unsigned s = 0; s < SOP__REG_SLOTS; s++)
        if (slot_empty(buf + s * SOP__HANDLE_SIZE))
            return (int)s;
    return -1;
}

/* ---- Batches ---- */

/* One op or lookup of a batch, sorted by block index. */
typedef struct reg_ent {
    const uint8_t *lid;
    size_t pos;     /* index in the caller's array */
    uint32_t block; /* block index */
    uint32_t seg;   /* segment holding the record, 0: none found yet */
    int slot;
} reg_ent;

static int cmp_block_pos(const void *a, const void *b)
{
    const reg_ent *x = a, *y = b;
    if (x->block != y->block)
        return x->block < y->block ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cmp_block_lid_pos(const void *a, const void *b)
{
    const reg_ent *x = a, *y = b;
    if (x->block != y->block)
        return x->block < y->block ? -1 : 1;
    int c = memcmp(x->lid, y->lid, 16);
    if (c != 0)
        return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

#define REG_STACK_ENTS 16

sop_rc sop__registry_get(sop__registry *r, const uint8_t (*lids)[16], size_t n, sop__handle *out,
                         bool *found, sop_err *err)
{
    if (n == 0)
        return SOP_OK;
    if (lids == NULL || out == NULL || found == NULL)
        return sop__err_set_const(err, SOP_INVALID, "registry: get without arrays");
    reg_ent stack_ents[REG_STACK_ENTS];
    reg_ent *ents = stack_ents;
    if (n > REG_STACK_ENTS) {
        if (n > SIZE_MAX / sizeof(reg_ent) || (ents = sop__malloc(n * sizeof(reg_ent))) == NULL)
            return nomem(err);
    }
    size_t m = 0;
    for (size_t k = 0; k < n; k++) {
        found[k] = false;
        if (sop__uuid_is_nil(lids[k])) /* never stored (see apply) */
            continue;
        ents[m++] = (reg_ent){.lid = lids[k], .pos = k, .block = block_of(lids[k], r->hash_mod)};
    }
    if (m > 1)
        qsort(ents, m, sizeof(reg_ent), cmp_block_pos);
    sop_rc rc = ensure_scratch(r, 1, err);
    /* Segments past `absent` were missing when this call looked. */
    uint32_t absent = SOP__REG_SEGMENTS_MAX + 1;
    for (size_t g0 = 0, g1; rc == SOP_OK && g0 < m; g0 = g1) {
        uint32_t b = ents[g0].block;
        for (g1 = g0 + 1; g1 < m && ents[g1].block == b; g1++)
            ;
        size_t unresolved = g1 - g0;
        for (uint32_t i = 1; i < absent && unresolved > 0; i++) {
            rc = seg_ensure(r, i, false, err);
            if (rc == SOP_NOTFOUND) {
                absent = i;
                rc = SOP_OK;
                break;
            }
            if (rc != SOP_OK)
                break;
            uint8_t *buf = r->bufs;
            rc = block_read_checked(r, i, b, buf, err);
            if (rc != SOP_OK)
                break;
            for (size_t k = g0; k < g1; k++) {
                if (found[ents[k].pos])
                    continue;
                int s = block_find(buf, ents[k].lid, false);
                if (s >= 0) {
                    sop__handle_decode(buf + (size_t)s * SOP__HANDLE_SIZE, &out[ents[k].pos]);
                    found[ents[k].pos] = true;
                    unresolved--;
                }
            }
        }
    }
    if (ents != stack_ents)
        sop__free(ents);
    return rc;
}

/* REPAIR of a block with a bad checksum: a slot with a nil lid but other
 * bytes set is what is left of a torn insert or delete; no real record has a
 * nil lid, so it is cleared. */
static void block_clear_debris(uint8_t *buf)
{
    for (unsigned s = 0; s < SOP__REG_SLOTS; s++) {
        uint8_t *slot = buf + s * SOP__HANDLE_SIZE;
        if (is_zero(slot, 16) && !slot_empty(slot))
            memset(slot, 0, SOP__HANDLE_SIZE);
    }
}

/* Scratch for segment i and the exclusive lock on its block b (apply). */
static sop_rc apply_take(sop__registry *r, uint32_t i, uint32_t b, sop_err *err)
{
    SOP__TRY(ensure_scratch(r, i, err));
    SOP__TRY(block_lock(r, i, b, SOP__OS_LOCK_EXCLUSIVE, err));
    return SOP_OK;
}

static sop_rc apply_read(sop__registry *r, uint32_t i, uint32_t b, unsigned flags, sop_err *err)
{
    uint8_t *buf = buf_of(r, i);
    SOP__TRY(block_read(r, i, b, buf, err));
    r->changed[i - 1] = false;
    /* Recovery treats every block it replays as possibly torn: the first
     * replayed record that touches a torn block reseals it, and the
     * records after it must still get the torn-slot rules. */
    r->bad[i - 1] = !block_valid(buf) || (flags & SOP__REG_REPAIR);
    if (r->bad[i - 1]) {
        if (!(flags & SOP__REG_REPAIR))
            return bad_checksum(r, i, b, err);
        block_clear_debris(buf);
        r->changed[i - 1] = true; /* rewritten with a good checksum */
    }
    return SOP_OK;
}

/*
 * Applies the ops ents[0..m) (distinct lids, all in block index b) - the
 * locking protocol of invariant 4.
 */
static sop_rc apply_block(sop__registry *r, uint32_t b, const sop__reg_op *ops, reg_ent *ents,
                          size_t m, unsigned flags, sop_err *err)
{
    uint32_t held = 0; /* block b of segments 1..held is locked and read */
    sop_rc rc = SOP_OK;
    size_t unresolved = m;
    bool any_put = false;
    for (size_t k = 0; k < m; k++) {
        ents[k].seg = 0;
        any_put = any_put || ops[ents[k].pos].kind == SOP__REG_PUT;
    }

    /* 1. Find the existing records (invariant 2). Segment 1 is created
     * first if a PUT needs it: the lock on block b of segment 1 is what
     * keeps every other writer out of block b of every segment. */
    for (uint32_t i = 1; i <= SOP__REG_SEGMENTS_MAX && unresolved > 0; i++) {
        rc = seg_ensure(r, i, true, err);
        if (rc == SOP_NOTFOUND && i == 1 && any_put)
            rc = seg_create(r, i, err);
        if (rc == SOP_NOTFOUND) {
            rc = SOP_OK;
            break;
        }
        if (rc == SOP_OK)
            rc = apply_take(r, i, b, err);
        if (rc != SOP_OK)
            goto out;
        held = i;
        rc = apply_read(r, i, b, flags, err);
        if (rc != SOP_OK)
            goto out;
        const uint8_t *buf = buf_of(r, i);
        for (size_t k = 0; k < m; k++) {
            if (ents[k].seg != 0)
                continue;
            int s = block_find(buf, ents[k].lid, r->bad[i - 1]);
            if (s >= 0) {
                ents[k].seg = i;
                ents[k].slot = s;
                unresolved--;
            }
        }
    }

    /* 2. Decide every op in memory: deletes and replacements first (pass
     * 0), so the slots a batch frees are there for its new records (pass 1). */
    for (size_t step = 0; step < 2 * m; step++) {
        int pass = step < m ? 0 : 1;
        size_t k = step % m;
        const sop__handle *h = &ops[ents[k].pos].h;
        uint32_t i = ents[k].seg;
        if ((pass == 1) != (i == 0 && ops[ents[k].pos].kind == SOP__REG_PUT))
            continue;
        if (ops[ents[k].pos].kind == SOP__REG_DEL) {
            if (i == 0)
                continue; /* absent: nothing to do */
            uint8_t *slot = buf_of(r, i) + (size_t)ents[k].slot * SOP__HANDLE_SIZE;
            int32_t v = (int32_t)sop__le_get32(slot + H_VERSION);
            if ((flags & SOP__REG_IF_NEWER) && v > h->version)
                continue;
            memset(slot, 0, SOP__HANDLE_SIZE);
            r->changed[i - 1] = true;
            continue;
        }
        if (i != 0) {
            uint8_t *slot = buf_of(r, i) + (size_t)ents[k].slot * SOP__HANDLE_SIZE;
            if (flags & SOP__REG_IF_NEWER) {
                int32_t v = (int32_t)sop__le_get32(slot + H_VERSION);
                /* A block that failed its checksum may hold a torn copy of
                 * the very version being redone: rewrite equal versions. */
                bool newer = r->bad[i - 1] ? v <= h->version : v < h->version;
                if (!newer)
                    continue;
            }
            sop__handle_encode(h, slot);
            r->changed[i - 1] = true;
            continue;
        }
        /* New record: the first free slot of the lowest segment with room,
         * else block b of a new segment. */
        int s = -1;
        for (i = 1; i <= held; i++)
            if ((s = block_free_slot(buf_of(r, i), h->lid)) >= 0)
                break;
        if (s < 0) {
            i = held + 1;
            if (i > SOP__REG_SEGMENTS_MAX) {
                rc = sop__err_set(err, SOP_LIMIT, 0,
                                  "registry: block %u is full in all %u segments of %s*.reg",
                                  (unsigned)b, (unsigned)SOP__REG_SEGMENTS_MAX, r->prefix);
                goto out;
            }
            rc = seg_ensure(r, i, true, err);
            if (rc == SOP_NOTFOUND)
                rc = seg_create(r, i, err);
            if (rc == SOP_OK)
                rc = apply_take(r, i, b, err);
            if (rc != SOP_OK)
                goto out;
            held = i;
            rc = apply_read(r, i, b, flags, err);
            if (rc != SOP_OK)
                goto out;
            s = block_free_slot(buf_of(r, i), h->lid);
            if (s < 0) { /* impossible while block b of segment 1 is held (inv. 4) */
                rc = sop__err_set(err, SOP_INTERNAL, 0,
                                  "registry: block %u of new segment %s is already full",
                                  (unsigned)b, r->segs[i - 1].path);
                goto out;
            }
        }
        sop__handle_encode(h, buf_of(r, i) + (size_t)s * SOP__HANDLE_SIZE);
        r->changed[i - 1] = true;
    }

    /* 3. Write each changed block once. */
    for (uint32_t i = 1; i <= held; i++) {
        if (!r->changed[i - 1])
            continue;
        uint8_t *buf = buf_of(r, i);
        block_seal(buf);
        reg_seg *s = &r->segs[i - 1];
        s->dirty = true;
        rc = sop__os_pwrite_all(SOP__SITE_REG_BLOCK_WRITE, s->fd, buf, SOP__REG_BLOCK,
                                (uint64_t)b * SOP__REG_BLOCK, s->path, err);
        if (rc != SOP_OK) {
            io_fail(rc, err);
            goto out;
        }
    }

out:
    /* 4. Unlock in descending order; the first error wins. */
    for (uint32_t i = held; i >= 1; i--) {
        sop_rc urc = block_unlock(r, i, b, rc == SOP_OK ? err : NULL);
        if (rc == SOP_OK)
            rc = urc;
    }
    return rc;
}

sop_rc sop__registry_apply(sop__registry *r, const sop__reg_op *ops, size_t n, unsigned flags,
                           sop_err *err)
{
    if (n == 0)
        return SOP_OK;
    if (!r->writable)
        return sop__err_set_const(err, SOP_INVALID, "registry: opened read-only");
    if (ops == NULL || (flags & ~(SOP__REG_IF_NEWER | SOP__REG_REPAIR)) != 0)
        return sop__err_set_const(err, SOP_INVALID, "registry: bad apply arguments");
    for (size_t k = 0; k < n; k++) {
        if (ops[k].kind != SOP__REG_PUT && ops[k].kind != SOP__REG_DEL)
            return sop__err_set(err, SOP_INVALID, 0, "registry: op %zu has an unknown kind", k);
        /* A nil lid would encode an all-zero slot head: never a record. */
        if (sop__uuid_is_nil(ops[k].h.lid))
            return sop__err_set(err, SOP_INVALID, 0, "registry: op %zu has a nil logical ID", k);
    }
    reg_ent stack_ents[REG_STACK_ENTS];
    reg_ent *ents = stack_ents;
    if (n > REG_STACK_ENTS) {
        if (n > SIZE_MAX / sizeof(reg_ent) || (ents = sop__malloc(n * sizeof(reg_ent))) == NULL)
            return nomem(err);
    }
    for (size_t k = 0; k < n; k++)
        ents[k] =
            (reg_ent){.lid = ops[k].h.lid, .pos = k, .block = block_of(ops[k].h.lid, r->hash_mod)};
    if (n > 1)
        qsort(ents, n, sizeof(reg_ent), cmp_block_lid_pos);
    /* The same lid twice: the later op wins - keep the last of each run. */
    size_t m = 0;
    for (size_t k = 0; k < n; k++) {
        if (k + 1 < n && ents[k + 1].block == ents[k].block &&
            memcmp(ents[k + 1].lid, ents[k].lid, 16) == 0)
            continue;
        ents[m++] = ents[k];
    }
    sop_rc rc = SOP_OK;
    for (size_t g0 = 0, g1; rc == SOP_OK && g0 < m; g0 = g1) {
        uint32_t b = ents[g0].block;
        for (g1 = g0 + 1; g1 < m && ents[g1].block == b; g1++)
            ;
        rc = apply_block(r, b, ops, ents + g0, g1 - g0, flags, err);
    }
    if (ents != stack_ents)
        sop__free(ents);
    return rc;
}

sop_rc sop__registry_sync(sop__registry *r, sop_err *err)
{
    for (uint32_t i = 1; i <= r->nseg; i++) {
        reg_seg *s = &r->segs[i - 1];
        if (!s->dirty)
            continue;
        SOP__TRY(seg_ensure(r, i, false, err)); /* reopens one an unlock dropped */
        sop_rc rc = sop__os_fdatasync(SOP__SITE_REG_SYNC, s->fd, s->path, err);
        if (rc != SOP_OK)
            return io_fail(rc, err);
        s->dirty = false;
    }
    if (r->dir_sync_pending) {
        sop_rc rc = sop__os_fsync_dir(SOP__SITE_REG_SYNC, r->dir, err);
        if (rc != SOP_OK)
            return io_fail(rc, err);
        r->dir_sync_pending = false;
    }
    return SOP_OK;
}

/* ---- Scan ---- */

#define REG_SCAN_BLOCKS 64u /* blocks per read */

/* idmap value for a record's place: never NULL. */
static void *place_val(uint32_t seg, uint32_t b, unsigned s)
{
    uint64_t v = ((uint64_t)seg << 40) | ((uint64_t)b << 8) | s;
    return (void *)(uintptr_t)(v + 1);
}

static sop_rc duplicate(const sop__registry *r, const uint8_t lid[16], void *first, uint32_t seg,
                        uint32_t b, unsigned s, sop_err *err)
{
    uint64_t v = (uint64_t)(uintptr_t)first - 1;
    uint32_t seg0 = (uint32_t)(v >> 40);
    char id[SOP__UUID_TEXT_LEN + 1];
    sop__uuid_format(lid, id);
    return sop__err_set(err, SOP_CORRUPT, 0,
                        "registry: logical ID %s has two records: slot %u of block %u of %s "
                        "and slot %u of block %u of %s",
                        id, (unsigned)(v & 0xff), (unsigned)((v >> 8) & 0xffffffffu),
                        r->segs[seg0 - 1].path, s, (unsigned)b, r->segs[seg - 1].path);
}

sop_rc sop__registry_scan(sop__registry *r, sop_rc (*fn)(void *ctx, const sop__handle *h),
                          void *ctx, sop_err *err)
{
    uint8_t *chunk = sop__malloc((size_t)REG_SCAN_BLOCKS * SOP__REG_BLOCK);
    if (chunk == NULL)
        return nomem(err);
    sop__idmap seen;
    sop__idmap_init(&seen);
    sop_rc rc = SOP_OK;
    for (uint32_t i = 1; rc == SOP_OK && i <= SOP__REG_SEGMENTS_MAX; i++) {
        rc = seg_ensure(r, i, false, err);
        if (rc == SOP_NOTFOUND) {
            rc = SOP_OK;
            break;
        }
        for (uint32_t b0 = 0; rc == SOP_OK && b0 < r->hash_mod; b0 += REG_SCAN_BLOCKS) {
            uint32_t nb = r->hash_mod - b0 < REG_SCAN_BLOCKS ? r->hash_mod - b0 : REG_SCAN_BLOCKS;
            reg_seg *sg = &r->segs[i - 1];
            rc = sop__os_pread_full(SOP__SITE_REG_BLOCK_READ, sg->fd, chunk,
                                    (size_t)nb * SOP__REG_BLOCK, (uint64_t)b0 * SOP__REG_BLOCK,
                                    NULL, sg->path, err);
            if (rc != SOP_OK) {
                io_fail(rc, err);
                break;
            }
            for (uint32_t k = 0; rc == SOP_OK && k < nb; k++) {
                uint8_t *buf = chunk + (size_t)k * SOP__REG_BLOCK;
                uint32_t b = b0 + k;
                if (sop__le_get32(buf + REG_CRC_OFF) == 0 && is_zero(buf, REG_DATA))
                    continue;
                if (!block_valid(buf)) {
                    rc = block_read_checked(r, i, b, buf, err);
                    if (rc != SOP_OK)
                        break;
                }
                for (unsigned s = 0; s < SOP__REG_SLOTS; s++) {
                    const uint8_t *slot = buf + s * SOP__HANDLE_SIZE;
                    if (slot_empty(slot))
                        continue;
                    if (sop__uuid_is_nil(slot)) {
                        rc = sop__err_set(err, SOP_CORRUPT, 0,
                                          "registry: slot %u of block %u of %s has a nil "
                                          "logical ID",
                                          s, (unsigned)b, r->segs[i - 1].path);
                        break;
                    }
                    void *first = sop__idmap_get(&seen, slot);
                    if (first != NULL) {
                        rc = duplicate(r, slot, first, i, b, s, err);
                        break;
                    }
                    rc = sop__idmap_put(&seen, slot, place_val(i, b, s), err);
                    if (rc != SOP_OK)
                        break;
                    sop__handle h;
                    sop__handle_decode(slot, &h);
                    rc = fn(ctx, &h);
                    if (rc != SOP_OK) {
                        sop__err_set(err, rc, 0, "registry: scan stopped by its callback (%s)",
                                     sop_rc_name(rc));
                        break;
                    }
                }
            }
        }
    }
    sop__idmap_free(&seen);
    sop__free(chunk);
    return rc;
}
