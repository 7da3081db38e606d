/*
 * fault.h - fault injection: named I/O call sites, named crash points and
 * allocation failures (docs/fault_injection.md).
 *
 * In a normal build every hook compiles to nothing. In the fault build
 * (-DSOP_FAULT_INJECTION, used by the test suite) a test - or the SOP_FAULT
 * environment variable, for subprocess crash tests - can:
 *   - fail the Nth call of a named I/O site with EIO, ENOSPC, EROFS or a
 *     short write, once or persistently;
 *   - kill the process (SIGKILL) at the Nth pass of a named crash point;
 *   - fail the Nth allocation, once or persistently.
 *
 * Sites and points are listed once, in the tables below, so they can be
 * enumerated (`--list-fault-points`) and a test can prove each was reached.
 */
#ifndef SOP_FAULT_H
#define SOP_FAULT_H

#include <stdbool.h>
#include <stddef.h>

/* X(ENUM_NAME, "dotted.name", "what happens there") */
#define SOP__IO_SITES(X)                                                                           \
    X(TEST_A, "test.a", "I/O layer self-test site A")                                              \
    X(TEST_B, "test.b", "I/O layer self-test site B")

#define SOP__CRASH_POINTS(X) X(TEST_POINT, "test.point", "fault layer self-test point")

typedef enum sop__site {
#define SOP__SITE_ENUM_(id, name, desc) SOP__SITE_##id,
    SOP__IO_SITES(SOP__SITE_ENUM_)
#undef SOP__SITE_ENUM_
        SOP__SITE_COUNT
} sop__site;

typedef enum sop__point {
#define SOP__POINT_ENUM_(id, name, desc) SOP__POINT_##id,
    SOP__CRASH_POINTS(SOP__POINT_ENUM_)
#undef SOP__POINT_ENUM_
        SOP__POINT_COUNT
} sop__point;

#ifdef SOP_FAULT_INJECTION
extern volatile int sop__fault_armed; /* any fault configured: the fast-path test */
bool sop__fault_alloc_fails(void);
void sop__fault_point(sop__point p);
#define SOP__FAULT_ALLOC_FAILS() (SOP__UNLIKELY_F(sop__fault_armed) && sop__fault_alloc_fails())
#define SOP__CRASH_POINT(id) sop__fault_point(SOP__POINT_##id)
#if defined(__GNUC__)
#define SOP__UNLIKELY_F(x) __builtin_expect(!!(x), 0)
#else
#define SOP__UNLIKELY_F(x) (x)
#endif
#else
#define SOP__FAULT_ALLOC_FAILS() 0
#define SOP__CRASH_POINT(id) ((void)0)
#endif

#endif
