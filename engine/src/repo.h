/*
 * repo.h - the store repository: which stores a database holds and each
 * store's information, as folders and files under <db>/stores.
 *
 * Layout (docs/format.md, "Database folder"): <db>/stores/<name>/ holds
 * info (sop__storeinfo: a 512-byte state sector then the fixed part), the
 * registry segments <name>-<i>.reg and the blob fan-out blob/.
 *
 * Invariants:
 *  1. Only names that pass sop__store_name_valid become path components, so
 *     nothing outside <db>/stores is ever touched.
 *  2. A store exists iff its folder holds a readable info file; creation
 *     writes the info under a temporary name and renames it into place, so
 *     a half-created store is never listed.
 *  3. Writes here are not synced: the transaction log makes them durable
 *     and recovery redoes them (docs/recovery.md); sop__repo_* are
 *     idempotent so redo can repeat them.
 */
#ifndef SOP_REPO_H
#define SOP_REPO_H

#include <stdbool.h>
#include <stddef.h>

#include "codec.h"
#include "sop.h"

#define SOP__PATH_MAX 4096

/* [A-Za-z0-9_-]{1,128}, not starting with '-'. */
bool sop__store_name_valid(const char *name);
/* SOP_INVALID with a message saying what is wrong with the name. */
sop_rc sop__store_name_check(const char *name, sop_err *err);

/* <db>/stores/<name> and <db>/stores/<name>/info (SOP_LIMIT if too long). */
sop_rc sop__repo_store_dir(const char *db, const char *name, char *out, sop_err *err);

/* Like sop__repo_read, but ignores the state sector (seq, count,
 * updated_ms come back zero): for replaying a commit over a torn one. */
sop_rc sop__repo_read_fixed(const char *db, const char *name, sop__storeinfo *out, sop_err *err);
/* Creates <db>/stores/<name> (0700) if missing, without making a store. */
sop_rc sop__repo_ensure_dir(const char *db, const char *name, sop_err *err);
/* SOP_NOTFOUND when the store does not exist. */
sop_rc sop__repo_read(const char *db, const char *name, sop__storeinfo *out, sop_err *err);
/* Creates the store's folder and info file; a store that already exists
 * with the same root ID is left as it is (redo), with another is
 * SOP_EXISTS. replace_corrupt (recovery): an unreadable info file is
 * written again instead of refused. */
sop_rc sop__repo_create(const char *db, const sop__storeinfo *s, bool replace_corrupt,
                        sop_err *err);
/* Rewrites the state sector (seq, count, updated_ms) when s->seq is newer
 * than the one on disk (redo-safe). */
sop_rc sop__repo_write_state(const char *db, const sop__storeinfo *s, sop_err *err);
/* Removes the store: its folder is first renamed away (atomically invisible)
 * and then deleted. A missing store is not an error. */
sop_rc sop__repo_drop(const char *db, const char *name, sop_err *err);
/* The same for <parent>/<name> (an erasure-coding drive's store folder). */
sop_rc sop__repo_drop_dir(const char *parent, const char *name, sop_err *err);
/* Names of all stores, sorted; *names from sop__malloc, each entry too. */
sop_rc sop__repo_list(const char *db, char ***names, size_t *n, sop_err *err);
void sop__repo_list_free(char **names, size_t n);

#endif
