/*
 * bench.h - the benchmark harness (make bench, docs/bench/): one driver, one
 * adapter per engine. Every engine runs the same workloads over the same keys
 * and values in the same order; an adapter only translates the calls below to
 * its engine's API. Durable means: when wcommit returns, the data survives a
 * power loss in that engine's own documented setting.
 */
#ifndef SOP_BENCH_H
#define SOP_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define B_KEY_LEN 16u
#define B_VAL_LEN 100u

enum { B_OK = 0, B_RETRY = 1, B_ERR = -1 }; /* RETRY: conflict / busy: redo the txn */

/* Capabilities of an adapter. */
#define CAP_MULTIPROC 1u /* W7: two processes open the same database */
#define CAP_THREADS   2u /* W7: two threads share one handle (single-process engines) */

typedef struct eng eng; /* adapter-private */

typedef struct eng_cfg {
    const char *dir;      /* an existing, empty (on create) directory of its own */
    uint64_t cache_bytes; /* the same cache budget for every engine */
    uint32_t slot_length; /* sop */
    bool redis;           /* sop: Redis coordination on 127.0.0.1:redis_port */
    uint16_t redis_port;
    int sync_mode; /* sqlite: 2 = FULL, 1 = NORMAL */
} eng_cfg;

typedef struct eng_ops {
    const char *name; /* "lmdb", "sqlite", ... (the config adds its suffix) */
    unsigned caps;    /* CAP_* */
    /* create: make the database (and its one table/store) in cfg->dir. */
    int (*open)(eng **e, const eng_cfg *c, bool create);
    void (*close)(eng *e);
    /* One write transaction: wbegin, puts, wcommit. put of a key that exists
     * is an error (every workload writes new keys). wcommit returns only when
     * the transaction is durable (per the engine's mode). B_RETRY from put or
     * wcommit: the transaction was abandoned (rolled back); redo it. */
    int (*wbegin)(eng *e);
    int (*put)(eng *e, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl);
    int (*wcommit)(eng *e);
    /* One read transaction / snapshot around a batch of reads. */
    int (*rbegin)(eng *e);
    int (*rend)(eng *e);
    /* get: B_OK and *v,*vl pointing at the value (valid until the next call
     * on e), 1 = B_RETRY is never returned, B_ERR when missing or failed. */
    int (*get)(eng *e, const uint8_t *k, size_t kl, const uint8_t **v, size_t *vl);
    /* Ordered iteration: seek to the first key >= k (k NULL: the first key),
     * then next. cur_key/cur_val point into the engine, valid until the next
     * call. it_seek/it_next return B_OK on an item, 1 at the end, B_ERR. */
    int (*it_seek)(eng *e, const uint8_t *k, size_t kl);
    int (*it_next)(eng *e);
    void (*it_cur)(eng *e, const uint8_t **k, size_t *kl, const uint8_t **v, size_t *vl);
    void (*it_close)(eng *e);
    /* Untimed, after a load and before the reads: whatever the engine's
     * users would run (checkpoint, flush + compaction) or nothing. */
    int (*settle)(eng *e);
    /* One line: every option set, for results.md. */
    void (*describe)(const eng_cfg *c, char *buf, size_t cap);
} eng_ops;

extern const eng_ops eng_sop_ops;
extern const eng_ops eng_lmdb_ops;
extern const eng_ops eng_sqlite_ops;
extern const eng_ops eng_rocksdb_ops;

/* splitmix64: the harness's one mixing function (keys, values, seeds). */
uint64_t b_mix(uint64_t x);

/* Error reporting from adapters: prints "bench: <engine>: msg" to stderr. */
void b_fail(const char *engine, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
