/*
 * sop.h - the public interface of libsop, the SOP ("Scalable Objects
 * Persistence") storage engine.
 *
 * This is the only header an application includes. Everything it declares
 * starts with sop_ / SOP_; every handle is opaque.
 *
 * Conventions (they hold for every function below unless it says otherwise):
 *
 *  1. Every fallible call returns a sop_rc and, when it fails and `err` is not
 *     NULL, fills the caller-owned sop_err with the code, the errno involved
 *     (0 if none) and a one-line message naming what failed and where.
 *  2. Out-parameters are written only on success.
 *  3. Every open/create has exactly one close; close(NULL) is a no-op.
 *  4. A handle is used by one thread at a time. Different handles may be used
 *     concurrently from different threads.
 *  5. Pointers returned into engine memory (keys and values of a sop_item)
 *     stay valid until the next call that moves or changes any cursor of the
 *     same B-tree, changes the tree, or closes it - whichever comes first.
 *  6. A B-tree that hit an error in the middle of a change (for example
 *     SOP_NOMEM while splitting a node) is poisoned: every later call returns
 *     SOP_POISONED and only close is legal. Errors detected before anything
 *     changed (bad arguments, SOP_EXISTS, SOP_NOTFOUND) do not poison.
 */
#ifndef SOP_H
#define SOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SOP_API __attribute__((visibility("default")))
#else
#define SOP_API
#endif

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

/*
 * The one table of result codes. X(NAME, value, message). Values are stable:
 * they appear in logs and in the pg_sop SQLSTATE map, so never renumber.
 */
#define SOP_RC_TABLE(X)                                                                            \
    X(OK, 0, "success")                                                                            \
    X(NOTFOUND, 1, "not found")                                                                    \
    X(EXISTS, 2, "already exists")                                                                 \
    X(INVALID, 3, "invalid argument")                                                              \
    X(NOMEM, 4, "out of memory")                                                                   \
    X(IO, 5, "I/O error")                                                                          \
    X(CORRUPT, 6, "data is corrupt")                                                               \
    X(CONFLICT, 7, "transaction conflict")                                                         \
    X(LOCKED, 8, "resource is locked")                                                             \
    X(TIMEOUT, 9, "timed out")                                                                     \
    X(POISONED, 10, "handle is unusable after an earlier error")                                   \
    X(BUSY, 11, "resource is busy")                                                                \
    X(UNSUPPORTED, 12, "operation not supported")                                                  \
    X(UNREACHABLE, 13, "coordination service unreachable")                                         \
    X(LIMIT, 14, "size limit exceeded")                                                            \
    X(INTERNAL, 15, "internal error")

typedef enum sop_rc {
#define SOP_RC_ENUM_(name, value, msg) SOP_##name = value,
    SOP_RC_TABLE(SOP_RC_ENUM_)
#undef SOP_RC_ENUM_
} sop_rc;

#define SOP_ERR_MSG_MAX 256

/* Caller-owned error detail. Zero-initialise it or call sop_err_clear. */
typedef struct sop_err {
    sop_rc code;               /* same value the call returned */
    int sys_errno;             /* errno behind the failure, 0 if none */
    char msg[SOP_ERR_MSG_MAX]; /* "registry: bad checksum in block 12 of people-1.reg" */
} sop_err;

/* "SOP_NOTFOUND" etc.; "SOP_UNKNOWN" for a value outside the table. */
SOP_API const char *sop_rc_name(sop_rc rc);
/* The table's message for rc ("not found"). */
SOP_API const char *sop_rc_message(sop_rc rc);
SOP_API void sop_err_clear(sop_err *err);

/* ------------------------------------------------------------------------
 * Limits
 * ------------------------------------------------------------------------ */

#define SOP_KEY_MAX             16384u  /* bytes in one key */
#define SOP_VALUE_INLINE_MAX    262144u /* bytes in one value kept inside a node */
#define SOP_SLOT_LENGTH_MIN     4u      /* items per node, even numbers only */
#define SOP_SLOT_LENGTH_MAX     10000u
#define SOP_SLOT_LENGTH_DEFAULT 2000u
#define SOP_ID_LEN              16u /* item and node IDs are 16-byte UUIDs */

/* ------------------------------------------------------------------------
 * Store options
 * ------------------------------------------------------------------------ */

/* Where a persistent store keeps its values (SOP's StoreOptions flags). */
typedef enum sop_value_placement {
    SOP_VALUES_IN_NODE = 0,  /* inside the node ("small data"): fastest reads */
    SOP_VALUES_SEPARATE = 1, /* one blob per value, written at commit ("medium data") */
    SOP_VALUES_ACTIVE = 2    /* one blob per value, written when added ("big data"):
                                commit stays quick however large the values */
} sop_value_placement;

#define SOP_VALUE_SEPARATE_MAX (1u << 30) /* bytes in one value kept in its own blob */

/* How long the shared (L2) cache - Redis coordination only - may keep a
 * store's registry handles, node bodies, values (globally_cached stores
 * only) and store info (SOP's StoreCacheConfig): durations in
 * milliseconds, zero or negative means "do not cache"; sliding: each read
 * extends the time to live. Kept with the store. Cached entries are hints:
 * commits validate against storage (docs/caching.md). */
typedef struct sop_cache_config {
    int64_t registry_ms, node_ms, value_ms, store_info_ms;
    bool registry_sliding, node_sliding, value_sliding, store_info_sliding;
} sop_cache_config;

typedef struct sop_store_options {
    /* Items per node: even, SOP_SLOT_LENGTH_MIN..SOP_SLOT_LENGTH_MAX. */
    uint32_t slot_length;
    /* true: one item per key (SOP_EXISTS on a second add). false: duplicate
     * keys allowed; items with equal keys are ordered by item ID, and item IDs
     * are time-ordered (UUIDv7), so duplicates list in insertion order within
     * one process (to the millisecond across processes). */
    bool is_unique;
    /* On a full leaf, first move items into a neighbour leaf with room (via
     * the parent) before splitting: fuller nodes, slightly costlier inserts. */
    bool leaf_load_balancing;
    /* 0: keys order by memcmp (shorter prefix first). N > 0: keys are tuples
     * (sop_tuple_*) and only their first N fields order them; later fields are
     * carried data that sop_cursor_update_key may change. */
    uint32_t key_order_fields;
    /* Persistent stores only (sop_store_create): */
    sop_value_placement value_placement;
    /* Values may be cached across processes (L2); in-node values never are. */
    bool globally_cached;
    /* A streaming store (docs/streaming.md): set by sop_stream_create, and
     * reported by sop_db_store_info. sop_store_create accepts it only with
     * is_unique, key_order_fields 2 and values outside the node. */
    bool streaming;
    const char *description; /* NULL or up to 512 bytes, kept in the store's info */
    sop_cache_config cache;  /* sop_store_options_init: nothing cached */
} sop_store_options;

/* Fills o with the defaults: slot_length 2000, unique, no load balancing,
 * memcmp order, values in the node, no description. */
SOP_API void sop_store_options_init(sop_store_options *o);

/* ------------------------------------------------------------------------
 * B-trees and cursors
 *
 * A sop_btree is one ordered collection of items. An item is a key (bytes), a
 * value (bytes), a 16-byte item ID unique within the tree and a 32-bit item
 * version (1 when added, +1 on every change). Order: by key (see
 * key_order_fields), then - in duplicate-key trees - by item ID.
 *
 * Any number of cursors may be open on one tree. A change made through one
 * cursor (or through the tree-level calls) leaves the others valid: each
 * keeps its place by the key and ID of its item and finds it again on its
 * next move. If that item was removed, the cursor sits in the gap it left:
 * next gives the following item, prev the preceding one, and reading the
 * current item gives SOP_NOTFOUND.
 * ------------------------------------------------------------------------ */

typedef struct sop_btree sop_btree;
typedef struct sop_cursor sop_cursor;

typedef struct sop_item {
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    uint8_t id[SOP_ID_LEN];
    uint32_t version;
} sop_item;

typedef struct sop_btree_stats {
    uint64_t count;  /* items */
    uint64_t nodes;  /* nodes reachable from the root */
    uint64_t leaves; /* of which leaves */
    uint32_t height; /* levels; 0 for an empty tree, 1 for a lone root */
    uint32_t slot_length;
    double fill; /* items / (nodes * slot_length) */
} sop_btree_stats;

/*
 * Opens a new, empty B-tree held in memory (no files, no transactions).
 * Errors: SOP_INVALID (bad options), SOP_NOMEM.
 */
SOP_API sop_rc sop_btree_open_memory(const sop_store_options *opts, sop_btree **out, sop_err *err);
/* Frees the tree and every item. All its cursors must be closed first. */
SOP_API void sop_btree_close(sop_btree *bt);

SOP_API uint64_t sop_btree_count(const sop_btree *bt);

/*
 * Tree-level changes. The key must be 1..SOP_KEY_MAX bytes (SOP_INVALID
 * otherwise, or SOP_LIMIT), the value 0..SOP_VALUE_INLINE_MAX (SOP_LIMIT).
 *
 * add:               SOP_EXISTS if the tree is unique and holds the key.
 * add_if_not_exists: SOP_EXISTS if any item holds the key (in any tree).
 * upsert:            updates the first item with the key, or adds one.
 * update:            replaces the value of the first item with the key;
 *                    SOP_NOTFOUND if none.
 * remove:            removes the first item with the key; SOP_NOTFOUND if none.
 * When `id_out` is not NULL it receives the ID of the item added or changed.
 */
SOP_API sop_rc sop_btree_add(sop_btree *bt, const void *key, size_t key_len, const void *value,
                             size_t value_len, uint8_t id_out[SOP_ID_LEN], sop_err *err);
SOP_API sop_rc sop_btree_add_if_not_exists(sop_btree *bt, const void *key, size_t key_len,
                                           const void *value, size_t value_len,
                                           uint8_t id_out[SOP_ID_LEN], sop_err *err);
SOP_API sop_rc sop_btree_upsert(sop_btree *bt, const void *key, size_t key_len, const void *value,
                                size_t value_len, uint8_t id_out[SOP_ID_LEN], sop_err *err);
SOP_API sop_rc sop_btree_update(sop_btree *bt, const void *key, size_t key_len, const void *value,
                                size_t value_len, sop_err *err);
SOP_API sop_rc sop_btree_remove(sop_btree *bt, const void *key, size_t key_len, sop_err *err);
/* Copies nothing: `out` points into the tree (convention 5). SOP_NOTFOUND if
 * no item has the key; with duplicates, the first one. */
SOP_API sop_rc sop_btree_get(sop_btree *bt, const void *key, size_t key_len, sop_item *out,
                             sop_err *err);

/* Walks the whole tree and checks every structural invariant (docs/btree.md):
 * order within and across nodes, separators, fill bounds, equal leaf depth,
 * counts. SOP_CORRUPT with the first violation found. */
SOP_API sop_rc sop_btree_check(sop_btree *bt, sop_err *err);
SOP_API sop_rc sop_btree_stats_get(sop_btree *bt, sop_btree_stats *out, sop_err *err);

SOP_API sop_rc sop_cursor_open(sop_btree *bt, sop_cursor **out, sop_err *err);
SOP_API void sop_cursor_close(sop_cursor *c);

/* Positioning. Each returns SOP_OK when the cursor is on an item and
 * SOP_NOTFOUND when there is none in that direction (the cursor is then
 * unpositioned; next/prev from there return SOP_NOTFOUND). */
SOP_API sop_rc sop_cursor_first(sop_cursor *c, sop_err *err);
SOP_API sop_rc sop_cursor_last(sop_cursor *c, sop_err *err);
SOP_API sop_rc sop_cursor_next(sop_cursor *c, sop_err *err);
SOP_API sop_rc sop_cursor_prev(sop_cursor *c, sop_err *err);
/*
 * find: SOP_OK and the cursor on the first item (lowest ID among duplicates)
 * whose key equals `key`; otherwise SOP_NOTFOUND with the cursor on the first
 * item whose key is greater (or unpositioned if there is none) - so a range
 * scan is find + next.
 * find_last: mirror image for descending scans: the last item with the key,
 * or else the last item whose key is smaller.
 * find_id: the item with this key and this ID; SOP_NOTFOUND (unpositioned)
 * if there is none.
 */
SOP_API sop_rc sop_cursor_find(sop_cursor *c, const void *key, size_t key_len, sop_err *err);
SOP_API sop_rc sop_cursor_find_last(sop_cursor *c, const void *key, size_t key_len, sop_err *err);
SOP_API sop_rc sop_cursor_find_id(sop_cursor *c, const void *key, size_t key_len,
                                  const uint8_t id[SOP_ID_LEN], sop_err *err);
/* The current item; SOP_NOTFOUND when the cursor is not on one. */
SOP_API sop_rc sop_cursor_item(sop_cursor *c, sop_item *out, sop_err *err);
/* Like sop_cursor_item, but a value kept outside the node (separate and
 * active placements) is not read: `value` is NULL and `value_len` is its
 * length. In-node values are returned as by sop_cursor_item. */
SOP_API sop_rc sop_cursor_item_meta(sop_cursor *c, sop_item *out, sop_err *err);
SOP_API bool sop_cursor_on_item(const sop_cursor *c);

/* Changes through a cursor. add flags: */
#define SOP_ADD               0u /* like sop_btree_add */
#define SOP_ADD_IF_NOT_EXISTS 1u /* like sop_btree_add_if_not_exists */
#define SOP_ADD_UPSERT        2u /* like sop_btree_upsert */
/* Adds an item and leaves the cursor on it (on SOP_EXISTS: on the existing
 * item that blocked the add). */
SOP_API sop_rc sop_cursor_add(sop_cursor *c, const void *key, size_t key_len, const void *value,
                              size_t value_len, unsigned flags, sop_err *err);
/* Replace the current item's value / key. A new key must order equal to the
 * old one (only the carried fields of a tuple key may change): SOP_INVALID
 * otherwise. SOP_NOTFOUND when the cursor is not on an item. */
SOP_API sop_rc sop_cursor_update_value(sop_cursor *c, const void *value, size_t value_len,
                                       sop_err *err);
SOP_API sop_rc sop_cursor_update_key(sop_cursor *c, const void *key, size_t key_len, sop_err *err);
/* Removes the current item; the cursor is left in the gap (see above). */
SOP_API sop_rc sop_cursor_remove(sop_cursor *c, sop_err *err);

/* ------------------------------------------------------------------------
 * Databases, transactions and persistent stores
 *
 * A database is a folder (created by sop_db_init) holding any number of
 * stores. Every access to a store happens in a transaction. A write
 * transaction becomes durable at one point: a checksummed, fsynced commit
 * record in the opening process's transaction log (docs/commit.md). A crash
 * before that point leaves no trace of the transaction; a crash after it
 * is finished by recovery, which runs when a database is opened and on
 * demand (docs/recovery.md).
 *
 * Concurrency: any number of processes may open one database. Reads never
 * lock; commits serialise on the database's commit lock and validate that
 * every node the transaction read is unchanged (SOP_CONFLICT otherwise:
 * roll back and retry).
 * ------------------------------------------------------------------------ */

typedef struct sop_db sop_db;
typedef struct sop_txn sop_txn;

/* How the processes sharing a database coordinate (docs/locking.md). */
typedef enum sop_coordination {
    /* One host, no server: OFD locks on the database's lock file, released
     * by the kernel when a process dies. The default. */
    SOP_COORD_LOCAL = 0,
    /* Redis: locks with an owner token and a TTL, and the L2 cache, shared
     * by processes on many hosts (the database folder on shared storage). */
    SOP_COORD_REDIS = 1
} sop_coordination;

typedef struct sop_redis_options {
    const char *host;     /* default "127.0.0.1" */
    uint16_t port;        /* default 6379 */
    const char *user;     /* ACL user for AUTH; NULL: the default user */
    const char *password; /* NULL: no AUTH */
    uint32_t database;    /* SELECT index (default 0) */
    uint32_t timeout_ms;  /* connect and every command (default 2000) */
} sop_redis_options;

/*
 * Erasure coding (docs/erasure_coding.md): every blob (node body or separately
 * stored value) of the stores it covers is split by Reed-Solomon into
 * data_shards pieces plus parity_shards parity pieces, shard i written under
 * paths[i] (one folder per drive). Any parity_shards of them may be lost or
 * rot: every shard a read uses is checksummed, and the missing or bad ones
 * are rebuilt from the others (and rewritten when `repair`). More damage than
 * that is SOP_CORRUPT, never wrong bytes.
 */
#define SOP_EC_SHARDS_MAX 32u /* data + parity shards */
typedef struct sop_ec_config {
    /* NULL or "": the database's default, for every store without an entry
     * of its own; otherwise the store (which need not exist yet) it is for. */
    const char *store;
    uint32_t data_shards;     /* >= 1 */
    uint32_t parity_shards;   /* >= 1, data + parity <= SOP_EC_SHARDS_MAX */
    const char *const *paths; /* data + parity distinct folders, one per drive */
    bool repair;              /* SOP's repair_corrupted_shards */
} sop_ec_config;

typedef struct sop_db_options {
    /* sop_db_init only: the registry's hash modulus (SOP's
     * RegistryHashModValue): 250 (the default and minimum) .. 750000. Fixed
     * for the database's life: 250 x 4 KiB = 1 MiB per registry segment. */
    uint32_t registry_hash_mod;
    /* How long a commit waits for the commit lock (default 30000). */
    uint32_t lock_timeout_ms;
    /* Log bytes after which a commit checkpoints: syncs the files the log
     * protects and starts the log over (default 16 MiB). */
    uint64_t checkpoint_bytes;
    /* SOP_COORD_LOCAL (default) or SOP_COORD_REDIS with `redis`. */
    sop_coordination coordination;
    sop_redis_options redis;
    /* Redis only: how long the commit lock lives unless its holder extends
     * it (default 15000). A holder paused longer loses it; storage fencing
     * keeps its late writes out (docs/locking.md). */
    uint32_t lock_ttl_ms;
    /* The process-wide L1 cache of decoded nodes, in bytes (default 64 MiB;
     * the largest value any open database asked for wins). */
    uint64_t l1_cache_bytes;
    /* Erasure coding: ec_count entries, at most one per store plus one
     * default. sop_db_init records them with the database (they decide where
     * every blob lives, so they are fixed for its life). sop_db_open with
     * ec_count 0 uses the recorded ones; with entries, they must name the
     * same stores, shard counts and paths (SOP_INVALID otherwise) and their
     * `repair` flags override the recorded ones. */
    const sop_ec_config *ec;
    uint32_t ec_count;
    /* Active/passive replication (docs/replication.md): a second folder, on
     * another drive, that receives every write of the database folder
     * (registry, store information, logs, blobs of stores that are not
     * erasure coded). sop_db_init sets it up; on an existing database the
     * passive side starts stale and sop_db_reinstate fills it. sop_db_open
     * finds it recorded: NULL uses the recorded one, a path must match it
     * (SOP_INVALID otherwise). */
    const char *passive_path;
} sop_db_options;

SOP_API void sop_db_options_init(sop_db_options *o);

/* Creates a database folder (and its parents' last component, 0700).
 * SOP_EXISTS if it already holds a database with another hash modulus
 * (changing it later would make data unreachable); opening an existing one
 * with the same modulus is not an error. */
SOP_API sop_rc sop_db_init(const char *dir, const sop_db_options *opts, sop_err *err);
/* Opens a database and runs recovery. Errors: SOP_NOTFOUND (no database
 * there), SOP_CORRUPT, SOP_IO, SOP_TIMEOUT (commit lock). */
SOP_API sop_rc sop_db_open(const char *dir, const sop_db_options *opts, sop_db **out, sop_err *err);
/* Checkpoints and closes. All transactions must have ended. */
SOP_API void sop_db_close(sop_db *db);
/* Finishes whatever a crashed process left: committed transactions are
 * rolled forward, interrupted ones rolled back; prepared ones are left for
 * their coordinator. Runs on open; safe to run any time. */
SOP_API sop_rc sop_db_recover(sop_db *db, sop_err *err);
typedef struct sop_check_report {
    uint64_t stores;   /* stores checked */
    uint64_t items;    /* items counted by walking every tree */
    uint64_t nodes;    /* nodes reached */
    uint64_t blobs;    /* blob files seen */
    uint64_t problems; /* problems reported */
} sop_check_report;

/*
 * Checks the whole database, like PostgreSQL's amcheck (docs/recovery.md):
 * every registry block checksum; every live handle resolves to a readable
 * node body of the right node; every tree's order, separator, fill and
 * depth invariants; every store's count equals its items; no blob is
 * unaccounted for (orphans). Each problem is passed to `problem` (may be
 * NULL) as one line naming the store, file and what is wrong. Returns
 * SOP_OK when clean, SOP_CORRUPT when any problem was found, another code
 * if the check itself could not run. Runs recovery first.
 */
SOP_API sop_rc sop_db_check(sop_db *db, void (*problem)(void *ctx, const char *msg), void *ctx,
                            sop_check_report *report, sop_err *err);

/*
 * Scrub (`sop scrub DIR`): reads every shard of every live blob of every
 * erasure-coded store (and every blob of the other stores), verifies each,
 * and with `repair` rewrites the missing and corrupt shards that can be
 * rebuilt. Each problem goes to `problem` (may be NULL) as one line;
 * `progress` (may be NULL) is called as blobs are done, per store. Returns
 * SOP_OK when every blob is readable (repaired or not: see the report),
 * SOP_CORRUPT when some blob cannot be read.
 */
typedef struct sop_scrub_report {
    uint64_t stores;          /* stores scrubbed */
    uint64_t blobs;           /* live blobs read */
    uint64_t shards;          /* shards read and verified (a plain blob counts one) */
    uint64_t bad_shards;      /* missing, unreadable or failing verification */
    uint64_t repaired_shards; /* of those, rewritten */
    uint64_t lost_blobs;      /* blobs that could not be read (too many bad shards) */
    uint64_t orphan_blobs;    /* blobs no store refers to (removed when repairing) */
} sop_scrub_report;
SOP_API sop_rc sop_db_scrub(sop_db *db, bool repair,
                            void (*progress)(void *ctx, const char *store, uint64_t done,
                                             uint64_t total),
                            void (*problem)(void *ctx, const char *msg), void *ctx,
                            sop_scrub_report *report, sop_err *err);

/* The health of each drive folder of each erasure-coding entry (`sop status
 * DIR`). store: NULL for the default entry. state: SOP_OK; SOP_NOTFOUND (the
 * folder or its marker is missing - a replaced drive; the marker is written
 * again on open); SOP_INVALID (the marker belongs to another database or
 * shard: wrong path order); SOP_IO or SOP_CORRUPT (unreadable). */
typedef struct sop_ec_drive {
    const char *store;
    uint32_t index, data_shards, parity_shards;
    const char *path;
    bool repair;
    sop_rc state;
    char detail[SOP_ERR_MSG_MAX];
} sop_ec_drive;
SOP_API sop_rc sop_db_ec_drives(sop_db *db, void (*fn)(void *ctx, const sop_ec_drive *drive),
                                void *ctx, sop_err *err);

/* ------------------------------------------------------------------------
 * Replication (docs/replication.md)
 * ------------------------------------------------------------------------ */

typedef struct sop_replication_info {
    bool enabled;         /* false: the database has no passive side */
    int active;           /* 0: the database folder, 1: the passive path */
    const char *paths[2]; /* valid while the database is open */
    bool stale[2];        /* a stale side is not written until reinstated */
    uint64_t generation;  /* of the state; +1 at each change */
    int64_t changed_ms;   /* when the state last changed (Unix ms) */
    char reason[160];     /* why the last side went stale ("" if none) */
} sop_replication_info;

SOP_API sop_rc sop_db_replication(sop_db *db, sop_replication_info *out, sop_err *err);
/* Makes the passive side active (planned switch-over). SOP_INVALID when it
 * is stale or the database is not replicated. Failures of the active side
 * fail over by themselves; this is for maintenance. */
SOP_API sop_rc sop_db_failover(sop_db *db, sop_err *err);
/* Brings a stale side back (a replaced or repaired drive): copies the
 * active side over it and marks it live, while the database stays open
 * (commits wait during the copy). progress (may be NULL) reports bytes and
 * files copied. SOP_OK also when nothing was stale. */
SOP_API sop_rc sop_db_reinstate(sop_db *db,
                                void (*progress)(void *ctx, uint64_t bytes, uint64_t files),
                                void *ctx, sop_err *err);

/* The hash modulus the database was created with. */
SOP_API uint32_t sop_db_hash_mod(const sop_db *db);

typedef enum sop_txn_mode {
    SOP_TXN_NOCHECK = 0, /* reads only, nothing validated at commit */
    SOP_TXN_WRITE = 1,   /* reads and writes, two-phase commit */
    SOP_TXN_READ = 2     /* reads only; commit validates they are unchanged */
} sop_txn_mode;

/* max_duration_ms: 0 = 15 minutes; at most 1 hour. A transaction older
 * than that can only be rolled back (SOP_TIMEOUT). */
SOP_API sop_rc sop_txn_begin(sop_db *db, sop_txn_mode mode, uint32_t max_duration_ms, sop_txn **out,
                             sop_err *err);
/* Phase 1 and phase 2. SOP_CONFLICT: something the transaction read changed
 * (it is rolled back; retry). */
SOP_API sop_rc sop_txn_commit(sop_txn *t, sop_err *err);
/* Phase 1: validates, then makes the transaction durable (the commit
 * point) - after SOP_OK it will commit even if the process dies. It holds
 * the commit lock until phase 2, so call phase 2 promptly. */
SOP_API sop_rc sop_txn_phase1(sop_txn *t, sop_err *err);
/* Phase 2: makes the changes visible. Idempotent; if it fails (or the
 * process dies), recovery finishes it from the log. */
SOP_API sop_rc sop_txn_phase2(sop_txn *t, sop_err *err);
/* Discards the transaction's changes. Legal in any state before phase 1
 * succeeded; a no-op after rollback. */
SOP_API sop_rc sop_txn_rollback(sop_txn *t, sop_err *err);
/* Ends a transaction handle: rolls back if still active, frees its
 * stores' trees. Close their cursors first. (Between commit/rollback and this call,
 * calls on its trees and cursors return SOP_INVALID.) */
SOP_API void sop_txn_free(sop_txn *t);
SOP_API void sop_txn_id(const sop_txn *t, uint8_t txid[SOP_ID_LEN]);

/*
 * For external coordinators (pg_sop): phase 1 in state PREPARED under an
 * owner tag. The transaction's changes are durable but invisible, and the
 * nodes it touched stay claimed: other commits touching them get
 * SOP_CONFLICT until it is decided. Any process can then commit or roll it
 * back by its ID. Prepared transactions are never decided by age.
 */
SOP_API sop_rc sop_txn_prepare(sop_txn *t, const char *owner, uint8_t txid_out[SOP_ID_LEN],
                               sop_err *err);
SOP_API sop_rc sop_db_commit_prepared(sop_db *db, const uint8_t txid[SOP_ID_LEN], sop_err *err);
SOP_API sop_rc sop_db_rollback_prepared(sop_db *db, const uint8_t txid[SOP_ID_LEN], sop_err *err);

typedef struct sop_prepared_info {
    uint8_t txid[SOP_ID_LEN];
    char owner[256];
    int64_t prepared_ms; /* Unix milliseconds */
} sop_prepared_info;
/* Calls fn for every prepared (in-doubt) transaction. */
SOP_API sop_rc sop_db_list_prepared(sop_db *db,
                                    void (*fn)(void *ctx, const sop_prepared_info *info), void *ctx,
                                    sop_err *err);

/*
 * For an embedder's crash tests (pg_sop's pg_sop.debug_pause_at): fn is
 * called with the name of every crash point the engine passes in any
 * thread ("phase1.durable", "prepared.commit_logged", ...; `sop
 * --list-fault-points` lists them, docs/fault_injection.md), in the
 * committing thread, possibly with the commit lock held. NULL removes it.
 * Not for production use: fn must not call the engine.
 */
SOP_API void sop_set_point_observer(void (*fn)(const char *point));

/* Store names: 1..128 bytes of [A-Za-z0-9_-], not starting with '-'. */
/* Creates a store in a write transaction (visible to others when it
 * commits; gone if it rolls back). SOP_EXISTS if a store has the name. The
 * returned tree belongs to the transaction and is valid until it ends. */
SOP_API sop_rc sop_store_create(sop_txn *t, const char *name, const sop_store_options *opts,
                                sop_btree **out, sop_err *err);
SOP_API sop_rc sop_store_open(sop_txn *t, const char *name, sop_btree **out, sop_err *err);
/* Drops a store (and all its items) when the transaction commits. */
SOP_API sop_rc sop_store_drop(sop_txn *t, const char *name, sop_err *err);

typedef struct sop_store_info {
    char name[129];
    char description[513];
    sop_store_options options; /* description points into this struct */
    uint64_t count;
    int64_t created_ms, updated_ms;
    uint8_t root_id[SOP_ID_LEN];
} sop_store_info;
/* Calls fn for every committed store, in name order. */
SOP_API sop_rc sop_db_stores(sop_db *db, void (*fn)(void *ctx, const sop_store_info *info),
                             void *ctx, sop_err *err);
SOP_API sop_rc sop_db_store_info(sop_db *db, const char *name, sop_store_info *out, sop_err *err);

/* ------------------------------------------------------------------------
 * Streaming stores (docs/streaming.md)
 *
 * Values far larger than memory, kept as a sequence of chunks. A streaming
 * store is a persistent store whose items are chunks: the item key is the
 * tuple (key as text, chunk index as int) - so a value's chunks sit next to
 * each other in index order - and the item value is the chunk's bytes,
 * written to its own blob when it is added (active placement), so commit
 * only publishes references however large the value. A value is the
 * concatenation of its chunks in index order; a key exists while it has at
 * least one chunk. Everything happens in the transaction the stream was
 * opened in: a rolled-back (or killed) upload leaves nothing behind.
 *
 * Keys are at least one byte, any bytes (their encoding plus 9 bytes for
 * the chunk index must fit SOP_KEY_MAX: SOP_LIMIT otherwise). The tree-level
 * calls on a streaming store's tree accept only such (text, chunk) keys
 * (SOP_INVALID otherwise). Chunks are 0..SOP_VALUE_SEPARATE_MAX
 * bytes; chunk indexes are 0..INT64_MAX. A chunk's size is the size of the
 * write that made it. Memory use is bounded by the chunk size: a writer
 * holds no chunk after its write returns, a reader holds one chunk.
 * ------------------------------------------------------------------------ */

typedef struct sop_stream sop_stream;               /* a streaming store in a transaction */
typedef struct sop_stream_writer sop_stream_writer; /* the encoder of one value */
typedef struct sop_stream_reader sop_stream_reader; /* the decoder of one value */

/* Creates a streaming store in a write transaction. From opts (NULL: the
 * defaults below) it takes slot_length, leaf_load_balancing, description
 * and cache; the rest is fixed: unique keys, (key, chunk) tuple keys,
 * values actively persisted, never globally cached. Default slot_length
 * when opts is NULL: 500. SOP_EXISTS if a store has the name. */
SOP_API sop_rc sop_stream_create(sop_txn *t, const char *name, const sop_store_options *opts,
                                 sop_stream **out, sop_err *err);
/* Opens one. SOP_NOTFOUND: no store; SOP_INVALID: not a streaming store. */
SOP_API sop_rc sop_stream_open(sop_txn *t, const char *name, sop_stream **out, sop_err *err);
/* Closes the stream and any of its readers. A writer still open is dropped
 * unfinished and the transaction can then only be rolled back. Close every
 * stream before sop_txn_free. */
SOP_API void sop_stream_close(sop_stream *s);
/* The store's tree (owned by the transaction), for its stats or a check. */
SOP_API sop_btree *sop_stream_btree(sop_stream *s);

/* Writers (SOP's encoder): each sop_stream_write makes the next chunk, 0, 1,
 * 2, ... Modes:
 *  SOP_STREAM_ADD, SOP_STREAM_ADD_IF_NOT_EXISTS: a new value; SOP_EXISTS
 *    (and no writer) if the key has chunks. In a unique store the two are
 *    the same; both names are kept for SOP parity.
 *  SOP_STREAM_UPDATE: replaces an existing value (SOP_NOTFOUND if none):
 *    write N overwrites chunk N, and close removes the old chunks past the
 *    last one written.
 *  SOP_STREAM_UPSERT: UPDATE if the key has chunks, else ADD.
 * A value needs sop_stream_writer_close to be complete: commit and prepare
 * refuse (SOP_INVALID) while a writer of the transaction is open. */
#define SOP_STREAM_ADD               0u
#define SOP_STREAM_ADD_IF_NOT_EXISTS 1u
#define SOP_STREAM_UPDATE            2u
#define SOP_STREAM_UPSERT            3u
SOP_API sop_rc sop_stream_writer_open(sop_stream *s, const void *key, size_t key_len, unsigned mode,
                                      sop_stream_writer **out, sop_err *err);
/* Writes one chunk (durably, before it returns). An error poisons the
 * transaction if the store was changed half way (convention 6). */
SOP_API sop_rc sop_stream_write(sop_stream_writer *w, const void *chunk, size_t len, sop_err *err);
/* Finishes the value and frees the writer (also on error). A writer that
 * wrote nothing leaves one empty chunk, so an empty value exists. chunks
 * (may be NULL) receives the number of chunks the value now has. */
SOP_API sop_rc sop_stream_writer_close(sop_stream_writer *w, uint64_t *chunks, sop_err *err);

/* Positioning for a reader. find: the first chunk of the key; find_chunk:
 * chunk `index` of it. SOP_NOTFOUND (the stream is then unpositioned) if
 * there is none. */
SOP_API sop_rc sop_stream_find(sop_stream *s, const void *key, size_t key_len, sop_err *err);
SOP_API sop_rc sop_stream_find_chunk(sop_stream *s, const void *key, size_t key_len, uint64_t index,
                                     sop_err *err);
/* A reader (SOP's decoder) from the stream's position to the end of that
 * key's value. SOP_NOTFOUND if the stream is not positioned. The reader
 * has its own position: later finds do not move it. */
SOP_API sop_rc sop_stream_reader_open(sop_stream *s, sop_stream_reader **out, sop_err *err);
/* Copies up to `cap` bytes into buf: *got > 0, or 0 at the end of the
 * value. A chunk larger than `cap` is returned across several reads and
 * read from storage once. */
SOP_API sop_rc sop_stream_read(sop_stream_reader *r, void *buf, size_t cap, size_t *got,
                               sop_err *err);
/* The rest of the current chunk without copying (valid until the next call
 * on this reader): SOP_OK with *data, *len and the chunk's index, or
 * SOP_NOTFOUND at the end of the value. */
SOP_API sop_rc sop_stream_read_chunk(sop_stream_reader *r, const void **data, size_t *len,
                                     uint64_t *index, sop_err *err);
SOP_API void sop_stream_reader_close(sop_stream_reader *r);

/* Direct chunk management. add: SOP_EXISTS if the chunk is there; update
 * and remove: SOP_NOTFOUND if it is not. Removing a value's last chunk
 * removes the key. */
SOP_API sop_rc sop_stream_add_chunk(sop_stream *s, const void *key, size_t key_len, uint64_t index,
                                    const void *chunk, size_t len, sop_err *err);
SOP_API sop_rc sop_stream_update_chunk(sop_stream *s, const void *key, size_t key_len,
                                       uint64_t index, const void *chunk, size_t len, sop_err *err);
SOP_API sop_rc sop_stream_remove_chunk(sop_stream *s, const void *key, size_t key_len,
                                       uint64_t index, sop_err *err);
/* Removes every chunk of the key. SOP_NOTFOUND if it has none. */
SOP_API sop_rc sop_stream_remove(sop_stream *s, const void *key, size_t key_len, sop_err *err);

/* One key: its chunk count, total bytes, and the first and last chunk
 * indexes (chunks == last - first + 1 unless chunks were removed). `key`
 * points into engine memory, valid during the callback only. */
typedef struct sop_stream_entry {
    const void *key;
    size_t key_len;
    uint64_t chunks;
    uint64_t bytes;
    uint64_t first_chunk, last_chunk;
} sop_stream_entry;
/* The entry of one key (without reading any chunk). SOP_NOTFOUND if it
 * has no chunks. out->key is the caller's key. */
SOP_API sop_rc sop_stream_stat(sop_stream *s, const void *key, size_t key_len,
                               sop_stream_entry *out, sop_err *err);
/* Calls fn for every key in key order, starting at the first key >= `from`
 * (from NULL: the first key), until fn returns false. Reads no chunk. */
SOP_API sop_rc sop_stream_list(sop_stream *s, const void *from, size_t from_len,
                               bool (*fn)(void *ctx, const sop_stream_entry *e), void *ctx,
                               sop_err *err);

/* ------------------------------------------------------------------------
 * Order-preserving tuple codec
 *
 * Encodes typed values so that memcmp of two encodings has the sign of the
 * typed comparison, element by element (a tuple that is a prefix of another
 * sorts first). Types follow PostgreSQL's semantics: integers of any width
 * share one encoding; float8 orders -inf < ... < -0.0 = 0.0 < ... < +inf < NaN
 * with every NaN equal (so -0.0 decodes as 0.0 and NaN as the canonical NaN);
 * text and bytea order bytewise (text = collation "C"); timestamps are
 * PostgreSQL microseconds since 2000-01-01 with INT64_MIN/INT64_MAX as
 * -infinity/infinity, dates are days since 2000-01-01. A NULL sorts before
 * every value (nulls_last false) or after every value (nulls_last true).
 * The byte format is in docs/format.md.
 * ------------------------------------------------------------------------ */

typedef enum sop_tuple_type {
    SOP_TUPLE_NULL = 0,
    SOP_TUPLE_BOOL,
    SOP_TUPLE_INT,
    SOP_TUPLE_FLOAT8,
    SOP_TUPLE_TEXT,
    SOP_TUPLE_BYTEA,
    SOP_TUPLE_UUID,
    SOP_TUPLE_TIMESTAMP,
    SOP_TUPLE_TIMESTAMPTZ,
    SOP_TUPLE_DATE
} sop_tuple_type;

/*
 * Appends encodings to buf[0..cap). `len` is the length the whole encoding
 * needs, even past `cap`: when len > cap the output was cut short - grow the
 * buffer and encode again. No call allocates.
 */
typedef struct sop_tuple_writer {
    uint8_t *buf;
    size_t cap;
    size_t len;
} sop_tuple_writer;

SOP_API void sop_tuple_writer_init(sop_tuple_writer *w, void *buf, size_t cap);
SOP_API void sop_tuple_put_null(sop_tuple_writer *w, bool nulls_last);
SOP_API void sop_tuple_put_bool(sop_tuple_writer *w, bool v);
SOP_API void sop_tuple_put_int(sop_tuple_writer *w, int64_t v);
SOP_API void sop_tuple_put_float8(sop_tuple_writer *w, double v);
SOP_API void sop_tuple_put_text(sop_tuple_writer *w, const void *s, size_t n);
SOP_API void sop_tuple_put_bytea(sop_tuple_writer *w, const void *p, size_t n);
SOP_API void sop_tuple_put_uuid(sop_tuple_writer *w, const uint8_t uuid[16]);
SOP_API void sop_tuple_put_timestamp(sop_tuple_writer *w, int64_t usec);
SOP_API void sop_tuple_put_timestamptz(sop_tuple_writer *w, int64_t usec);
SOP_API void sop_tuple_put_date(sop_tuple_writer *w, int32_t days);

/* One decoded element. For TEXT/BYTEA, `raw` points at the escaped bytes in
 * the input and `len` is the unescaped length (copy with
 * sop_tuple_value_copy); for UUID, `raw` points at the 16 bytes. */
typedef struct sop_tuple_value {
    sop_tuple_type type;
    bool nulls_last; /* NULL only */
    bool b;          /* BOOL */
    int64_t i;       /* INT, TIMESTAMP, TIMESTAMPTZ */
    double f;        /* FLOAT8 */
    int32_t date;    /* DATE */
    const uint8_t *raw;
    size_t raw_len;
    size_t len;
} sop_tuple_value;

typedef struct sop_tuple_reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
} sop_tuple_reader;

SOP_API void sop_tuple_reader_init(sop_tuple_reader *r, const void *buf, size_t len);
/* SOP_OK with the next element, SOP_NOTFOUND at the end, SOP_CORRUPT (with
 * the offset in err) on malformed input. Never reads outside buf. */
SOP_API sop_rc sop_tuple_next(sop_tuple_reader *r, sop_tuple_value *out, sop_err *err);
/* Writes v->len unescaped bytes of a TEXT/BYTEA value to dst. */
SOP_API void sop_tuple_value_copy(const sop_tuple_value *v, void *dst);
/* Length in bytes of the first `nfields` elements of an encoded tuple (all
 * of it if it has fewer). SOP_CORRUPT on malformed input. */
SOP_API sop_rc sop_tuple_prefix_length(const void *key, size_t len, uint32_t nfields, size_t *out,
                                       sop_err *err);

#ifdef __cplusplus
}
#endif

#endif /* SOP_H */
