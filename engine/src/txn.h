/*
 * txn.h - databases, transactions and the stores opened in them: the
 * structures db.c, txn.c and api.c share (docs/commit.md, docs/recovery.md).
 *
 * Invariants:
 *  1. A sop_db and everything opened from it (transactions, trees, cursors)
 *     is used by one thread at a time; open the database once per thread
 *     for parallelism. Processes coordinate through the database's lock
 *     file (OFD locks) and their logs.
 *  2. A write transaction changes nothing on disk before its commit point,
 *     except actively persisted values, which are announced first by an
 *     INTENT record in the log (so recovery can remove them if the
 *     transaction never commits).
 *  3. The commit point is the fdatasync of the COMMIT record; phase 2 only
 *     replays that record (sop__redo_apply), which recovery can repeat.
 *  4. Every COMMIT record carries a sequence number taken under the commit
 *     lock; recovery replays records in that order.
 */
#ifndef SOP_TXN_H
#define SOP_TXN_H

#include <stdbool.h>
#include <stdint.h>

#include "blob.h"
#include "btree.h"
#include "codec.h"
#include "coord.h"
#include "erasure.h"
#include "idmap.h"
#include "l2.h"
#include "memrepo.h"
#include "registry.h"
#include "repo.h"
#include "sop.h"
#include "txnlog.h"

/* ---- databases ---- */

typedef struct sop__dbstore {
    char name[SOP__STORE_NAME_MAX + 1];
    sop__registry *reg;
    sop__blobstore *blobs;
    /* the store info's L2 TTL, as last read from its info (0: unknown) */
    int64_t info_ms;
    bool info_sliding;
} sop__dbstore;

/* Early-written values a rollback could not remove (an I/O error): retried
 * at every checkpoint, and announced again by INTENT records whenever the
 * log starts over, so recovery removes them if this process cannot. */
typedef struct sop__abandoned {
    uint8_t txid[16];
    char name[SOP__STORE_NAME_MAX + 1];
    uint8_t (*ids)[16];
    size_t n;
} sop__abandoned;

struct sop_db {
    char dir[SOP__PATH_MAX];
    char txlog[SOP__PATH_MAX];
    char lockpath[SOP__PATH_MAX];
    sop_db_options opts;
    uint32_t hash_mod;
    int lock_fd;
    int dir_fd;  /* for syncfs */
    int ckpt_fd; /* the checkpoint mark's file: lock_fd, or "checkpoint" if replicated */
    char ckptpath[SOP__PATH_MAX];
    struct sop__repl *repl; /* active/passive replication (NULL: none) */
    bool locked;            /* this handle holds the commit lock */
    sop__coord *coord;      /* locks (and the L2 cache) shared with other processes */
    sop__l2 l2;             /* the shared cache, over coord (l2.h) */
    bool coord_expires;     /* its locks have a TTL (redis): holders can go stale */
    char commit_key[SOP__COORD_KEY_MAX];
    uint8_t lock_token[SOP__COORD_TOKEN_LEN];
    int64_t lock_taken_ms; /* when the commit lock was taken or last extended */
    uint64_t fence_seq;    /* the commit sequence number seen under the lock */
    uint8_t id[16];        /* the database's UUID (its header) */
    sop__ecconf *ec;       /* erasure-coding entries (file "erasure"), ec_n of them */
    uint32_t ec_n;
    sop__log *log;
    uint64_t log_max_seq; /* highest seq in our log since its last reset */
    sop__dbstore *stores;
    size_t nstores, capstores;
    struct sop_txn *txns; /* open transactions (their intents survive log resets) */
    sop__abandoned *abandoned;
    size_t nabandoned;
    /* committed prepared transactions whose file could not be removed: the
     * log (which proves they committed) is not reset until it is */
};

/* Appends (not syncs) an INTENT record: a transaction is about to write
 * these value blobs before its commit. */
sop_rc sop__db_append_intent(sop_db *db, const uint8_t txid[16], const char *store,
                             const uint8_t (*ids)[16], size_t n, sop_err *err);
/* Hands over values a rollback failed to remove (copies ids). */
sop_rc sop__db_abandon(sop_db *db, const uint8_t txid[16], const char *store,
                       const uint8_t (*ids)[16], size_t n, sop_err *err);

/* Every value ID named by an INTENT record of any log (live or dead): the
 * early-written values of transactions that may still commit; and whether
 * any prepared transaction exists. For scrub, under the commit lock. */
sop_rc sop__db_unfinished_values(sop_db *db, sop__idmap *ids, bool *prepared, sop_err *err);
/* Value IDs referenced by the committed tree of a store. */
sop_rc sop__db_store_refs(sop_db *db, const char *name, sop__idmap *refs, sop_err *err);

/* Store handles (registry, blobs), cached per database handle; _find
 * only looks among those already open (NULL if not). */
sop__dbstore *sop__db_store_find(sop_db *db, const char *name);
sop_rc sop__db_store(sop_db *db, const char *name, sop__dbstore **out, sop_err *err);
/* Forgets a store's handles (it was dropped). */
void sop__db_forget_store(sop_db *db, const char *name);

/* The commit lock, through the coordination backend, with the database's
 * lock timeout (and deadline_ms if earlier); and its release. Taking it
 * records the fence: the commit sequence number at that moment. */
sop_rc sop__db_lock(sop_db *db, int64_t deadline_ms, sop_err *err);
void sop__db_unlock(sop_db *db);
/* Redis: extends the commit lock's TTL once a third of it has passed, so
 * that others do not start work a slow holder will fence off. Best effort:
 * a lost lock is not an error here - the claim's fence decides. */
void sop__db_lock_keepalive(sop_db *db);
/* Under the commit lock, atomically on storage: if no commit claimed a
 * sequence number since the lock was taken (the fence), claim the next one
 * and set the marker that says this process is applying it (so whoever
 * takes the lock after a crash redoes it). SOP_CONFLICT otherwise. */
sop_rc sop__db_claim_seq(sop_db *db, uint64_t *seq, sop_err *err);
/* Phase 2 of seq failed: says in the marker that this (live) process
 * leaves the commit to whoever takes the lock next. Until it does, a live
 * committer's marker is waited for, never finished by others. */
void sop__db_hand_off(sop_db *db, uint64_t seq);
/* Clears this process's marker for seq (no-op if it is not there). */
sop_rc sop__db_clear_pending(sop_db *db, uint64_t seq, sop_err *err);
/* The commit sequence number and whether a commit is being (or was left
 * half) applied: a consistent snapshot of the state sector. */
sop_rc sop__db_state(sop_db *db, uint64_t *seq, bool *pending, sop_err *err);
/* Not holding the lock: finish a half-applied commit, if there is one (a
 * reader that found a node or value gone calls this before reporting
 * SOP_CONFLICT, so its retry sees a finished state). */
sop_rc sop__db_finish_pending(sop_db *db, sop_err *err);
/* Under the commit lock: recover a commit a dead process left half applied. */
sop_rc sop__db_recover_pending(sop_db *db, sop_err *err);
/* After a commit: checkpoint when the log has grown past the threshold. */
sop_rc sop__db_maybe_checkpoint(sop_db *db, sop_err *err);

/* Prepared transactions: <txlog>/<txid>.prep */
sop_rc sop__db_prepared_path(const sop_db *db, const uint8_t txid[16], char *out, sop_err *err);
/* Reads a prepared file: its info and redo payload (from sop__malloc). */
sop_rc sop__db_prepared_read(const char *path, sop_prepared_info *info, uint8_t **payload,
                             size_t *len, sop_err *err);
/* Writes one durably (temporary name, fsync, rename, folder fsync). */
sop_rc sop__db_prepared_write(sop_db *db, const uint8_t txid[16], const char *owner,
                              const uint8_t *payload, size_t len, sop_err *err);
/* Every node claimed by a prepared transaction of this store: fn(lid). */
sop_rc sop__db_prepared_claims(sop_db *db,
                               sop_rc (*fn)(void *ctx, const char *store, const uint8_t lid[16]),
                               void *ctx, sop_err *err);

/* ---- the redo payload (COMMIT records and prepared files) ---- */

/* Applies a redo payload: creates/drops stores, writes blobs, updates
 * registries and store states, removes obsolete blobs. Idempotent.
 * recovering: registry blocks with bad checksums are repaired (REPAIR). */
sop_rc sop__redo_apply(sop_db *db, const uint8_t *payload, size_t len, bool recovering,
                       sop_err *err);
/* Parses a whole payload without applying it: SOP_OK or SOP_CORRUPT with
 * the offset (for the fuzz target and for reading prepared files). */
sop_rc sop__redo_check(const uint8_t *payload, size_t len, sop_err *err);
/* Calls fn for every (store, lid) whose handle the payload changes. */
sop_rc sop__redo_claims(const uint8_t *payload, size_t len,
                        sop_rc (*fn)(void *ctx, const char *store, const uint8_t lid[16]),
                        void *ctx, sop_err *err);
/* Removes the blobs a payload would have written or had written early
 * (actively persisted values): the rollback of a prepared transaction. */
sop_rc sop__redo_discard(sop_db *db, const uint8_t *payload, size_t len, sop_err *err);

/* ---- stores opened in a transaction ---- */

typedef enum sop__txnode_state {
    SOP__TXN_READ,   /* read: validated at commit */
    SOP__TXN_DIRTY,  /* read, then changed: a new body at commit */
    SOP__TXN_NEW,    /* created by this transaction */
    SOP__TXN_REMOVED /* read, then dropped by the tree */
} sop__txnode_state;

typedef struct sop__txnode {
    sop__node *node;
    sop__handle h; /* as read (zero for new nodes) */
    sop__txnode_state state;
    uint8_t newphys[16]; /* phase 1: where the new body goes */
} sop__txnode;

/* A value kept outside the node (separate / active placement): the item's
 * value in the node is this 24-byte reference: blob ID, length, CRC-32C
 * (docs/format.md, "Value references"). */
#define SOP__VALREF_SIZE 24

typedef struct sop__txstore sop__txstore;

/* The public tree handle: in memory, or a store in a transaction. */
struct sop_btree {
    sop__btree core;
    sop__memrepo mem; /* memory trees only */
    sop__cursor cur;  /* for the tree-level calls */
    sop__txstore *ts; /* NULL: memory tree */
};

typedef struct sop__pending_value {
    uint8_t id[16];
    uint8_t *data;
    size_t len;
} sop__pending_value;

/* Item-level actions a write transaction made on a store, in order, kept
 * so that a commit whose nodes were changed by others can replay them on
 * the fresh tree (commit merging, docs/locking.md). */
typedef enum sop__act_kind {
    SOP__ACT_ADD = 1,    /* key, id, raw value (as stored in the node) */
    SOP__ACT_UPDATE,     /* key, id, version seen, new raw value */
    SOP__ACT_REMOVE,     /* key, id, version seen */
    SOP__ACT_UPDATE_KEY, /* old key, id, version seen, new key (as the value) */
    SOP__ACT_READ,       /* key, id, version seen */
    SOP__ACT_ABSENT,     /* key (and id, if not zero) was not there */
    SOP__ACT_PRESENT     /* key was there */
} sop__act_kind;

/* Acts past this size make a store's transaction unmergeable. */
#define SOP__ACTS_MAX (64u << 20)

struct sop__txstore {
    struct sop_btree bt;
    struct sop_txn *txn;
    sop__storeinfo info; /* as read when opened (or as created) */
    uint64_t count_at_open;
    bool created, dropped;
    bool info_cached; /* info came from the L2 cache: validated by its seq */
    sop__idmap nodes; /* lid -> sop__txnode */
    /* separately stored values written by this transaction */
    sop__pending_value *pending;
    size_t npending, cappending;
    uint8_t (*dead)[16]; /* value blobs to remove when the transaction commits */
    size_t ndead, capdead;
    uint8_t (*active)[16]; /* value blobs already written (active placement) */
    size_t nactive, capactive;
    uint8_t *vbuf; /* the last value read from a blob (sop_item points here) */
    /* the item actions (records: kind u8, id 16, version u32, klen u32,
     * vlen u32, key, value); mergeable is false once the transaction read
     * ranges (cursor moves) or the log outgrew SOP__ACTS_MAX */
    uint8_t *acts;
    size_t nacts, capacts;
    bool unmergeable;
    struct sop__txstore *next;
};

typedef enum sop__txn_state {
    SOP__TXN_ACTIVE,
    SOP__TXN_PHASE1_DONE,
    SOP__TXN_PREPARED,
    SOP__TXN_COMMITTED,
    SOP__TXN_ROLLED_BACK
} sop__txn_state;

struct sop_txn {
    sop_db *db;
    sop_txn_mode mode;
    sop__txn_state state;
    bool poisoned;
    int64_t deadline_ms;
    uint8_t id[16];
    sop__txstore *stores;
    uint8_t *redo; /* built by phase 1 */
    size_t redo_len;
    uint64_t seq;
    bool preparing; /* build_redo writes store states relative (db.c) */
    bool no_cache;  /* read every node from its blob (the checker) */
    uint32_t holds; /* open stream writers: commit waits for them (sop__txn_hold) */
    struct sop_txn *next_open;
};

/* Opening, creating and dropping stores in a transaction (api.c wraps). */
sop_rc sop__txn_store_open(sop_txn *t, const char *name, sop__txstore **out, sop_err *err);
sop_rc sop__txn_store_create(sop_txn *t, const char *name, const sop_store_options *o,
                             sop__txstore **out, sop_err *err);
sop_rc sop__txn_store_drop(sop_txn *t, const char *name, sop_err *err);
/* Refuses writes outside an active write transaction. */
sop_rc sop__txn_check_write(const sop__txstore *ts, sop_err *err);
sop_rc sop__txn_check_active(const sop_txn *t, sop_err *err);
/* An open stream writer (+1 when opened, -1 when closed): phase 1 and
 * prepare refuse while any is open. */
void sop__txn_hold(sop_txn *t, int delta);
/* Hands the caller the buffer of the last value read from a blob, when
 * `val` (from sop__txstore_value_get) is that buffer: the caller frees it
 * with sop__free. NULL when the value lives elsewhere (a pending value). */
void *sop__txstore_value_take(sop__txstore *ts, const void *val);

/* Parses a value reference: blob ID, length, CRC-32C (SOP_CORRUPT if it is
 * not one). */
sop_rc sop__valref_parse(const char *store, const uint8_t *ref, size_t reflen, const uint8_t **id,
                         uint32_t *len, uint32_t *crc, sop_err *err);
/* Values of separate/active stores. */
bool sop__txstore_refs_values(const sop__txstore *ts);
/* Stores a value and returns the reference to put in the node. */
sop_rc sop__txstore_value_put(sop__txstore *ts, const void *val, size_t len,
                              uint8_t ref[SOP__VALREF_SIZE], sop_err *err);
/* The value a reference names (valid until the next call on this store). */
sop_rc sop__txstore_value_get(sop__txstore *ts, const uint8_t *ref, size_t reflen,
                              const uint8_t **val, size_t *len, sop_err *err);
/* The value a reference names is no longer used once this commits. */
sop_rc sop__txstore_value_drop(sop__txstore *ts, const uint8_t *ref, size_t reflen, sop_err *err);

/* Whether the store's item actions are being recorded (a write transaction
 * that has not read ranges or outgrown the log). */
bool sop__txstore_recording(const sop__txstore *ts);
/* Records an item action (no-op for memory trees and read transactions;
 * a failure to record only makes the store unmergeable). id and val may be
 * NULL. */
void sop__txstore_note(sop__txstore *ts, sop__act_kind kind, const uint8_t *key, uint32_t klen,
                       const uint8_t *id, uint32_t version, const uint8_t *val, uint32_t vlen);
/* The transaction read a range (cursor moves): validated per node only. */
void sop__txstore_note_scan(sop__txstore *ts);

/* Marks the transaction unusable after a failed change. */
void sop__txn_poison(sop_txn *t);

/* The transactional node repository. */
extern const sop__repo_ops sop__txrepo_ops;

int64_t sop__now_ms(void);

#endif
