/*
 * err.h - building sop_err values inside the engine.
 *
 * Invariants:
 *  1. Every fallible internal function returns sop_rc and, on failure, has
 *     filled `err` (when not NULL) through sop__err_set; the returned code and
 *     err->code are equal.
 *  2. errno never becomes a sop_rc; it travels in err->sys_errno.
 *  3. Messages name what failed and where ("node: heap of 4294967296 bytes
 *     exceeds the node limit"), without a trailing newline.
 */
#ifndef SOP_ERR_H
#define SOP_ERR_H

#include "sop.h"

#if defined(__GNUC__)
#define SOP__PRINTF(f, a) __attribute__((format(printf, f, a)))
#define SOP__UNLIKELY(x)  __builtin_expect(!!(x), 0)
#define SOP__LIKELY(x)    __builtin_expect(!!(x), 1)
#else
#define SOP__PRINTF(f, a)
#define SOP__UNLIKELY(x) (x)
#define SOP__LIKELY(x)   (x)
#endif

/* Fills err (if not NULL) and returns rc. sys_errno may be 0. */
sop_rc sop__err_set(sop_err *err, sop_rc rc, int sys_errno, const char *fmt, ...) SOP__PRINTF(4, 5);

/* Like sop__err_set with a constant message and no errno: cheap enough for
 * the ends of scans and missed lookups. */
sop_rc sop__err_set_const(sop_err *err, sop_rc rc, const char *msg);

/* Prepends "prefix: " to an already-filled message (keeps code and errno). */
void sop__err_prefix(sop_err *err, const char *fmt, ...) SOP__PRINTF(2, 3);

/* Propagate a failure: `SOP__TRY(rc = f(...));` returns rc from the caller. */
#define SOP__TRY(expr)                                                                             \
    do {                                                                                           \
        sop_rc sop__try_rc_ = (expr);                                                              \
        if (SOP__UNLIKELY(sop__try_rc_ != SOP_OK))                                                 \
            return sop__try_rc_;                                                                   \
    } while (0)

#endif
