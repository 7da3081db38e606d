/*
 * fault.h - fault injection: named I/O call sites, named crash points and
 * allocation failures (docs/fault_injection.md).
 *
 * In a normal build every hook compiles to nothing. In the fault build
 * (-DSOP_FAULT_INJECTION, used by the test suite) a test - or the SOP_FAULT
 * environment variable, for subprocess crash tests - can:
 *   - fail the Nth call of a named I/O site with EIO, ENOSPC, EROFS or a
 *     short write, once or persistently;
 *   - kill the process (SIGKILL) at the Nth pass of a named crash point or
 *     at the Nth call of an I/O site;
 *   - fail the Nth allocation, once or persistently.
 *
 * Sites and points are listed once, in the tables below, so they can be
 * enumerated (`--list-fault-points`) and a test can prove each was reached.
 *
 * Invariants:
 *  1. Normal build: SOP__FAULT_ALLOC_FAILS() is the constant 0 and
 *     SOP__FAULT_IO_HIT(site) is the constant SOP__FAULT_NONE - no call, no
 *     load, no counter. SOP__CRASH_POINT(id) is one relaxed load of the
 *     point observer (sop_set_point_observer, NULL unless an embedder's
 *     crash tests set it): crash points are passed a few times per commit,
 *     next to an fsync. Only the name tables (sop__fault_site_name ...
 *     sop__fault_list) and the observer exist in both builds.
 *  2. Fault build, nothing armed: an allocation hook costs one relaxed load
 *     of sop__fault_armed; an I/O site or crash point hook also does relaxed
 *     atomic increments of its call/hit counters (always counted, so a test
 *     can size its "fail call N" loop and prove every point was reached).
 *  3. "The Nth call" counts the calls of that site (of every site for
 *     SOP__SITE_ALL; of sop__malloc/calloc/realloc for allocations; passes of
 *     the point for crash points) made after the arming call: N=1 is the
 *     next one. Persistent: the Nth and every later call fail.
 *  4. An injected EIO/ENOSPC/EROFS replaces the operation: nothing reaches
 *     the file system (except close, which still releases the descriptor,
 *     as Linux does). SHORT_WRITE on a write writes the first n/2 bytes
 *     (rounded down: at least 1 byte when n >= 2) and then fails with ENOSPC;
 *     on any other operation it is an EIO.
 *  5. KILL is raise(SIGKILL) before the operation: the process dies as with
 *     kill -9, nothing is flushed or cleaned up.
 *  6. SOP_FAULT is parsed once, by the first hook call of the process (the
 *     armed flag starts set for that reason; N then counts from the start
 *     of the process, that first call included), or explicitly by
 *     sop__fault_load_env() (N counts from then). sop__fault_reset()
 *     disarms everything and means "ignore SOP_FAULT from now on" unless
 *     sop__fault_load_env() is called again. A bad item is skipped, never
 *     fatal, and reported by sop__fault_last_error().
 *  7. All entry points are thread-safe (atomic counters, one mutex for the
 *     rules). Nothing here allocates.
 */
#ifndef SOP_FAULT_H
#define SOP_FAULT_H

#include <stdbool.h>
#include <stddef.h>

#include "sop.h"

/*
 * X(ENUM_NAME, "dotted.name", "what happens there")
 * Add a site next to the module that uses it; names are lowercase
 * "<module>.<what>" and never reused for something else (crash tests name
 * them in SOP_FAULT strings).
 */
#define SOP__IO_SITES(X)                                                                           \
    X(TEST_A, "test.a", "I/O layer self-test site A")                                              \
    X(TEST_B, "test.b", "I/O layer self-test site B")                                              \
    X(BLOB_OPEN, "blob.open", "blob store: open of a blob file")                                   \
    X(BLOB_WRITE, "blob.write", "blob store: write (and size) of a blob file")                     \
    X(BLOB_READ, "blob.read", "blob store: fstat and read of a blob file")                         \
    X(BLOB_SYNC, "blob.sync", "blob store: fsync of a blob file and its folders")                  \
    X(BLOB_CLOSE, "blob.close", "blob store: close of a written blob file")                        \
    X(BLOB_MKDIR, "blob.mkdir", "blob store: creation of the root and fan-out folders")            \
    X(BLOB_REMOVE, "blob.remove", "blob store: unlink of a blob file")                             \
    X(BLOB_LIST, "blob.list", "blob store: listing of the fan-out folders")                        \
    X(DB_HEADER, "db.header", "database header file: create, read")                                \
    X(DB_LOCK, "db.lock", "database lock file: open, commit lock")                                 \
    X(DB_SYNC, "db.sync", "checkpoint: sync of the database's file system")                        \
    X(COORD_LOCK, "coord.lock", "local coordination: lock file open, named lock and unlock")       \
    X(LOG_OPEN, "log.open", "transaction log: create, open, preallocate")                          \
    X(LOG_WRITE, "log.write", "transaction log: append a record")                                  \
    X(LOG_SYNC, "log.sync", "transaction log: fdatasync of a record (the commit point)")           \
    X(LOG_READ, "log.read", "transaction log: scan (recovery)")                                    \
    X(LOG_RESET, "log.reset", "transaction log: start over after a checkpoint")                    \
    X(PREP_WRITE, "prepared.write", "prepared transaction file: create")                           \
    X(PREP_READ, "prepared.read", "prepared transaction file: read, list")                         \
    X(PREP_REMOVE, "prepared.remove", "prepared transaction file: remove once decided")            \
    X(REPO_READ, "repo.read", "store info: read, list stores")                                     \
    X(REPO_WRITE, "repo.write", "store info: create, state update")                                \
    X(REPO_DROP, "repo.drop", "store folder: removal")                                             \
    X(EC_CONFIG, "ec.config", "erasure coding: the database's configuration file")                 \
    X(EC_MARKER, "ec.marker", "erasure coding: a drive folder's marker file")                      \
    X(REPL_STATE, "replication.state", "replication: read and write of a side's state file")       \
    X(REPL_LOCK, "replication.lock", "replication: barrier and state locks, generation hint")      \
    X(REPL_COPY, "replication.copy", "replication: reinstate's copy of the active side")           \
    X(REG_SEGMENT_OPEN, "registry.segment_open", "registry: open and size check of a segment")     \
    X(REG_SEGMENT_CREATE, "registry.segment_create", "registry: create and size a segment")        \
    X(REG_SEGMENT_CLOSE, "registry.segment_close", "registry: close of a segment")                 \
    X(REG_BLOCK_READ, "registry.block_read", "registry: read of a 4 KiB block")                    \
    X(REG_BLOCK_WRITE, "registry.block_write", "registry: write of a 4 KiB block")                 \
    X(REG_LOCK, "registry.lock", "registry: OFD lock and unlock of a block")                       \
    X(REG_SYNC, "registry.sync", "registry: fsync of a new segment, fdatasync of written ones")

#define SOP__CRASH_POINTS(X)                                                                       \
    X(TEST_POINT, "test.point", "fault layer self-test point")                                     \
    X(P1_LOCKED, "phase1.locked", "phase 1: commit lock taken, nothing validated yet")             \
    X(P1_VALIDATED, "phase1.validated", "phase 1: validated, commit record not written")           \
    X(P1_RECORD_WRITTEN, "phase1.record_written", "phase 1: record written, not yet synced")       \
    X(P1_DURABLE, "phase1.durable", "phase 1: record synced - the commit point passed")            \
    X(P2_STORES_CREATED, "phase2.stores_created", "phase 2: new stores created")                   \
    X(P2_BLOBS_WRITTEN, "phase2.blobs_written", "phase 2: node and value blobs written")           \
    X(P2_REGISTRY_HALF, "phase2.registry_half", "phase 2: some stores' registries updated")        \
    X(P2_STATE_WRITTEN, "phase2.state_written", "phase 2: store states updated")                   \
    X(P2_DEAD_REMOVED, "phase2.dead_removed", "phase 2: obsolete blobs removed")                   \
    X(P2_DONE, "phase2.done", "phase 2: finished, lock not yet released")                          \
    X(RB_ACTIVE_REMOVED, "rollback.values_removed", "rollback: actively persisted values removed") \
    X(PREP_DURABLE, "prepare.durable", "prepare: prepared file durable")                           \
    X(PREP_COMMIT_LOGGED, "prepared.commit_logged", "commit prepared: commit record durable")      \
    X(PREP_FILE_REMOVED, "prepared.file_removed", "commit/rollback prepared: file removed")        \
    X(CKPT_SYNCED, "checkpoint.synced", "checkpoint: files synced, log not yet reset")             \
    X(REC_LOG_REDONE, "recovery.log_redone", "recovery: one log redone, not yet removed")          \
    X(REC_ORPHANS_REMOVED, "recovery.orphans_removed", "recovery: orphan values removed")          \
    X(EC_SHARD_WRITTEN, "ec.shard_written", "erasure coding: one shard of a blob written")         \
    X(EC_SHARD_REPAIRED, "ec.shard_repaired", "erasure coding: one bad shard rewritten")           \
    X(REPL_FAILED_OVER, "replication.failed_over", "replication: new state durable on one side")   \
    X(REPL_COPIED, "replication.copied", "reinstate: copy synced, side not yet marked live")

typedef enum sop__site {
#define SOP__SITE_ENUM_(id, name, desc) SOP__SITE_##id,
    SOP__IO_SITES(SOP__SITE_ENUM_)
#undef SOP__SITE_ENUM_
        SOP__SITE_COUNT
} sop__site;

/* For sop__fault_io: "any site" (counts the calls of every site). */
#define SOP__SITE_ALL ((sop__site)SOP__SITE_COUNT)

typedef enum sop__point {
#define SOP__POINT_ENUM_(id, name, desc) SOP__POINT_##id,
    SOP__CRASH_POINTS(SOP__POINT_ENUM_)
#undef SOP__POINT_ENUM_
        SOP__POINT_COUNT
} sop__point;

/* What an armed fault does. NONE is "proceed" (the hook's usual answer). */
typedef enum sop__fault_kind {
    SOP__FAULT_NONE = 0,
    SOP__FAULT_EIO,         /* the operation fails with EIO */
    SOP__FAULT_ENOSPC,      /* ... with ENOSPC */
    SOP__FAULT_EROFS,       /* ... with EROFS */
    SOP__FAULT_SHORT_WRITE, /* a write stores n/2 bytes, then ENOSPC; else EIO */
    SOP__FAULT_KILL,        /* raise(SIGKILL) before the operation */
    SOP__FAULT_STOP         /* crash points only: raise(SIGSTOP) - a paused process */
} sop__fault_kind;

/* ---- Name tables: in both builds (they cost a few strings, no hooks) ---- */

/* "test.a"; NULL for a value outside the table (SOP__SITE_ALL gives "all"). */
const char *sop__fault_site_name(sop__site s);
const char *sop__fault_site_desc(sop__site s);
const char *sop__fault_point_name(sop__point p);
const char *sop__fault_point_desc(sop__point p);
/* "EIO", "ENOSPC", "EROFS", "SHORT_WRITE", "KILL", "NONE"; NULL if unknown. */
const char *sop__fault_kind_name(sop__fault_kind k);
/* Exact, case-sensitive name lookups; "all" finds SOP__SITE_ALL. false and
 * *out untouched when there is no such name. */
bool sop__fault_site_lookup(const char *name, sop__site *out);
bool sop__fault_point_lookup(const char *name, sop__point *out);

/* Calls fn once per I/O site (is_point false) and once per crash point
 * (is_point true), in table order - for `sop --list-fault-points`. */
typedef void sop__fault_list_fn(void *ctx, bool is_point, const char *name, const char *desc);
void sop__fault_list(sop__fault_list_fn *fn, void *ctx);

/* Calls the observer, if one is set, with the point's name. */
void sop__point_observe(sop__point p);
#if defined(__GNUC__)
#define SOP__POINT_OBSERVED_() (__atomic_load_n(&sop__point_observer, __ATOMIC_RELAXED) != NULL)
#else
#define SOP__POINT_OBSERVED_() (sop__point_observer != NULL)
#endif
extern void (*sop__point_observer)(const char *point);

#ifdef SOP_FAULT_INJECTION
#include <stdatomic.h>

/* Non-zero while any rule is armed or SOP_FAULT has not been read yet. */
extern atomic_int sop__fault_armed;

/* ---- Hooks (use the macros below, not these) ---- */
bool sop__fault_alloc_fails(void);
void sop__fault_point(sop__point p);
sop__fault_kind sop__fault_io_hit(sop__site s);

#if defined(__GNUC__)
#define SOP__UNLIKELY_F(x) __builtin_expect(!!(x), 0)
#else
#define SOP__UNLIKELY_F(x) (x)
#endif
#define SOP__FAULT_ARMED_()      atomic_load_explicit(&sop__fault_armed, memory_order_relaxed)
#define SOP__FAULT_ALLOC_FAILS() (SOP__UNLIKELY_F(SOP__FAULT_ARMED_()) && sop__fault_alloc_fails())
#define SOP__CRASH_POINT(id)                                                                       \
    (sop__fault_point(SOP__POINT_##id),                                                            \
     SOP__POINT_OBSERVED_() ? sop__point_observe(SOP__POINT_##id) : (void)0)
/* Counts one call of `site`; returns the fault to inject (SOP__FAULT_NONE:
 * proceed). Never returns SOP__FAULT_KILL: it kills. Used by os.c only. */
#define SOP__FAULT_IO_HIT(site) sop__fault_io_hit(site)

/* ---- Arming API for tests (fault build only) ---- */

/* Disarms every rule, zeroes every counter and the last parse error, and
 * stops SOP_FAULT from being read lazily (invariant 6). */
void sop__fault_reset(void);
/* Fail the nth (0 is taken as 1) call of `site` (or SOP__SITE_ALL) from now
 * on with `kind`; persistent: that call and every later one. Rules add up;
 * the first matching rule (in arming order) decides. At most 32 rules: more
 * are ignored and reported by sop__fault_last_error(). */
void sop__fault_io(sop__site site, unsigned nth, sop__fault_kind kind, bool persistent);
/* raise(SIGKILL) at the nth pass (0 is taken as 1) of point p from now on. */
void sop__fault_kill_at(sop__point p, unsigned nth);
/* Pauses the process (SIGSTOP) at the nth pass of point p. */
void sop__fault_stop_at(sop__point p, unsigned nth);
/* Make the nth sop__malloc/calloc/realloc from now on return NULL. */
void sop__fault_alloc(unsigned nth, bool persistent);

/* Calls of a site (SOP__SITE_ALL: of every site) and passes of a point
 * since the start or the last reset. Counted even when nothing is armed. */
unsigned long sop__fault_site_calls(sop__site s);
unsigned long sop__fault_point_hits(sop__point p);
/* Faults injected (alloc failures included) since the start or the last
 * reset - a "fail call N = 1, 2, ..." loop ends when a run injects none. */
unsigned long sop__fault_injected(void);

/*
 * Arms the rules in a SOP_FAULT-syntax string (docs/fault_injection.md):
 *   "site=test.a:nth=3:err=EIO:persist=1;point=test.point:nth=2:action=kill;alloc:nth=5"
 * Good items are armed even when others are bad. SOP_INVALID (message naming
 * the first bad item, also kept for sop__fault_last_error) if any was bad.
 */
sop_rc sop__fault_parse(const char *spec, sop_err *err);
/* Parses getenv("SOP_FAULT") now (see invariant 6); returns how many rules
 * it armed. A bad item is skipped and recorded for sop__fault_last_error. */
int sop__fault_load_env(void);
/* The message of the last rejected item or rule since the last reset, or
 * NULL. Points into a static buffer valid until the next fault call. */
const char *sop__fault_last_error(void);

#else
#define SOP__FAULT_ALLOC_FAILS() 0
#define SOP__CRASH_POINT(id)                                                                       \
    (SOP__POINT_OBSERVED_() ? sop__point_observe(SOP__POINT_##id) : (void)0)
#define SOP__FAULT_IO_HIT(site) ((void)(site), SOP__FAULT_NONE)
#endif

#endif
