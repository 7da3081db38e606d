/*
 * txnlog.h - a process's transaction log: an append-only file of
 * checksummed records under <db>/txlog/<owner>.log (docs/format.md,
 * "Transaction log"; docs/commit.md).
 *
 * The COMMIT record of a transaction holds everything phase 2 needs (new
 * node bodies, handle changes, store states, blobs to delete); the one
 * fdatasync that makes it durable is the transaction's commit point.
 *
 * Invariants:
 *  1. The owner holds an exclusive OFD lock on byte 0 of its log for as
 *     long as it has it open; a log whose lock can be taken belongs to a
 *     dead process (recovery takes it over).
 *  2. Records follow the 4096-byte header back to back. A record counts
 *     only if its magic, epoch (the header's) and CRC-32C are right; a scan
 *     stops at the first that is not (a torn tail of an unsynced append).
 *  3. Starting over (after a checkpoint) bumps the epoch in the header and
 *     syncs it before new records are written, so stale records past the
 *     new end can never be mistaken for new ones.
 */
#ifndef SOP_TXNLOG_H
#define SOP_TXNLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sop.h"

#define SOP__LOG_HEADER 4096u
#define SOP__LOG_RECHDR 48u

enum {
    SOP__LOG_COMMIT = 1, /* a committed transaction's redo payload */
    SOP__LOG_INTENT = 2  /* value blobs a transaction is about to write early */
};

typedef struct sop__logrec {
    uint8_t type;
    uint8_t txid[16];
    uint64_t seq; /* global commit order (COMMIT records) */
    const uint8_t *payload;
    size_t len;
} sop__logrec;

typedef struct sop__log sop__log;

/* Creates and locks a new log in `dir` (the txlog folder). */
sop_rc sop__log_create(const char *dir, uint64_t prealloc, sop__log **out, sop_err *err);
/* Appends a record (not synced). */
sop_rc sop__log_append(sop__log *l, uint8_t type, const uint8_t txid[16], uint64_t seq,
                       const void *payload, size_t len, sop_err *err);
/* Undoes the last append when it could not be made durable: its header is
 * overwritten with zeros and synced, so the record can never count, even
 * if its bytes reach the disk later. SOP_IO if that fails too (the log is
 * then unusable: the caller must stop committing through it). */
sop_rc sop__log_retract(sop__log *l, sop_err *err);
/* fdatasync: everything appended so far is durable. */
sop_rc sop__log_sync(sop__log *l, sop_err *err);
/* Bytes of records since the last reset. */
uint64_t sop__log_used(const sop__log *l);
/* Starts the log over (new epoch, synced). */
sop_rc sop__log_reset(sop__log *l, sop_err *err);
/* Closes (unlocking); with remove, deletes the file first. */
void sop__log_close(sop__log *l, bool remove);
const char *sop__log_path(const sop__log *l);

/* Takes over another process's log: SOP_LOCKED if its owner is alive.
 * The returned fd holds the lock; close it to release. */
sop_rc sop__log_claim(const char *path, int *fd_out, sop_err *err);
/* Calls fn for every valid record of the log open on fd, in order. */
sop_rc sop__log_scan(int fd, const char *path, sop_rc (*fn)(void *ctx, const sop__logrec *r),
                     void *ctx, sop_err *err);

#endif
