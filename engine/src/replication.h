/*
 * replication.h - active/passive replication of a database folder
 * (docs/replication.md; formats in docs/format.md, "Replication state").
 *
 * A replicated database has two sides: side 0 is the database folder the
 * engine is given, side 1 the passive path. Everything in side 0 but the
 * lock file and the state file itself is mirrored to side 1 by the os
 * layer (os.h, "Mirrored folders"); this module is the policy behind it:
 *  - the state (generation, active side, stale sides, why) is a small
 *    checksummed file `replication` in each side; the valid one with the
 *    highest generation wins;
 *  - a change of state is made under an exclusive OFD lock on byte 3 of the
 *    lock file, written durably to every live side (and, best effort, to
 *    the failed one), then announced through the generation hint in the
 *    lock file, which every mutating call compares with its view;
 *  - every mutating call holds byte 2 of the lock file shared (the
 *    barrier); reinstate holds it exclusive while it copies, so no write
 *    can miss the side it brings back.
 *
 * Invariants:
 *  1. A side marked stale is never read, written or failed over to until
 *     reinstate has copied the active side over it and marked it live.
 *  2. A failure of the passive side is recorded durably on the active side
 *     before the call that met it returns: a commit is acknowledged only
 *     when its record reached both sides or the passive is durably stale.
 *  3. Failover (the active side failed with a qualifying errno) happens
 *     only to a side that is live in the newest state this process can see
 *     and only if no newer state was announced than the sides show (a state
 *     written only to the failed side); otherwise it is refused and the
 *     call fails with a message saying why.
 *  4. The generation only grows; each state change is +1.
 */
#ifndef SOP_REPLICATION_H
#define SOP_REPLICATION_H

#include <stdbool.h>
#include <stdint.h>

#include "os.h"
#include "sop.h"

typedef struct sop__repl sop__repl;

/* Whether `dir` holds a replication state file (SOP_OK / SOP_NOTFOUND). */
sop_rc sop__repl_present(const char *dir, sop_err *err);

/* Sets up replication of database folder dir (which must exist) to
 * passive. fresh: a new database (both sides live, generation 1);
 * otherwise side 1 starts stale until reinstated. An existing setup must
 * name the same passive path. */
sop_rc sop__repl_setup(const char *dir, const char *passive, const uint8_t id[16], bool fresh,
                       sop_err *err);

/* Reads the state of both sides and starts mirroring dir (shared with
 * other handles of the same folder in this process). passive may be NULL
 * (the recorded one is used) and must match it otherwise. id: the
 * database's, NULL to take it from the state. */
sop_rc sop__repl_attach(const char *dir, const char *passive, sop__repl **out, sop_err *err);
void sop__repl_detach(sop__repl *r);
/* The database ID the state files carry. */
void sop__repl_id(const sop__repl *r, uint8_t id[16]);

/* Brings this process's view up to date (another process may have failed
 * over or reinstated). Call with the commit lock held and before lock-free
 * validation. */
sop_rc sop__repl_check(sop__repl *r, sop_err *err);

/* Makes the other side active (it must be live). */
sop_rc sop__repl_switch(sop__repl *r, sop_err *err);

/* Copies the active side over the stale one and marks it live. The caller
 * holds the commit lock; other processes' writes wait meanwhile. progress
 * (may be NULL) is called as files are copied. SOP_OK with *copied false:
 * no side was stale. */
sop_rc sop__repl_reinstate(sop__repl *r,
                           void (*progress)(void *ctx, uint64_t bytes, uint64_t files), void *ctx,
                           bool *copied, sop_err *err);

/* The state as this process sees it. paths point into r. */
void sop__repl_info(sop__repl *r, sop_replication_info *out);

#endif
