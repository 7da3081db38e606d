/*
 * fault.c - the fault-injection engine behind fault.h: name tables (both
 * builds), and in the fault build (-DSOP_FAULT_INJECTION) the per-site and
 * per-point counters, the armed rules, the SOP_FAULT parser and the hooks.
 *
 * Invariants (besides those of fault.h):
 *  1. site_calls[], all_calls and point_hits[] are only ever incremented
 *     (relaxed atomics) or zeroed by sop__fault_reset.
 *  2. rules[], nrules, alloc_calls, injected, env_loaded and last_error are
 *     read and written only under `mu`.
 *  3. sop__fault_armed == 0 exactly when env_loaded and no rule is live;
 *     it is recomputed under `mu` after every change (arm_update).
 *  4. A rule's `base` is the value of its counter when it was armed (0 for
 *     rules read lazily from SOP_FAULT by the first hook: there N counts from
 *     the start of the process, the call that triggered the read included);
 *     call number k (counter value after the increment) is the (k - base)th
 *     call for the rule.
 *  5. raise(SIGKILL) is called with `mu` released.
 *  6. Nothing here allocates (the parser works in fixed buffers), so an
 *     allocation hook can never recurse.
 */
#include "fault.h"

#include <string.h>

static const struct {
    const char *name, *desc;
} site_tab[] = {
#define SOP__SITE_TAB_(id, name, desc) {name, desc},
    SOP__IO_SITES(SOP__SITE_TAB_)
#undef SOP__SITE_TAB_
};

static const struct {
    const char *name, *desc;
} point_tab[] = {
#define SOP__POINT_TAB_(id, name, desc) {name, desc},
    SOP__CRASH_POINTS(SOP__POINT_TAB_)
#undef SOP__POINT_TAB_
};

_Static_assert(sizeof(site_tab) / sizeof(site_tab[0]) == SOP__SITE_COUNT, "site table");
_Static_assert(sizeof(point_tab) / sizeof(point_tab[0]) == SOP__POINT_COUNT, "point table");

const char *sop__fault_site_name(sop__site s)
{
    if (s == SOP__SITE_ALL)
        return "all";
    return (unsigned)s < SOP__SITE_COUNT ? site_tab[s].name : NULL;
}

const char *sop__fault_site_desc(sop__site s)
{
    if (s == SOP__SITE_ALL)
        return "every I/O site";
    return (unsigned)s < SOP__SITE_COUNT ? site_tab[s].desc : NULL;
}

const char *sop__fault_point_name(sop__point p)
{
    return (unsigned)p < SOP__POINT_COUNT ? point_tab[p].name : NULL;
}

void (*sop__point_observer)(const char *point);

SOP_API void sop_set_point_observer(void (*fn)(const char *point))
{
    __atomic_store_n(&sop__point_observer, fn, __ATOMIC_RELEASE);
}

void sop__point_observe(sop__point p)
{
    void (*fn)(const char *) = __atomic_load_n(&sop__point_observer, __ATOMIC_ACQUIRE);
    if (fn && (unsigned)p < SOP__POINT_COUNT)
        fn(point_tab[p].name);
}

const char *sop__fault_point_desc(sop__point p)
{
    return (unsigned)p < SOP__POINT_COUNT ? point_tab[p].desc : NULL;
}

const char *sop__fault_kind_name(sop__fault_kind k)
{
    switch (k) {
    case SOP__FAULT_NONE:
        return "NONE";
    case SOP__FAULT_EIO:
        return "EIO";
    case SOP__FAULT_ENOSPC:
        return "ENOSPC";
    case SOP__FAULT_EROFS:
        return "EROFS";
    case SOP__FAULT_SHORT_WRITE:
        return "SHORT_WRITE";
    case SOP__FAULT_KILL:
        return "KILL";
    case SOP__FAULT_STOP:
        return "STOP";
    }
    return NULL;
}

bool sop__fault_site_lookup(const char *name, sop__site *out)
{
    if (name == NULL)
        return false;
    if (strcmp(name, "all") == 0) {
        *out = SOP__SITE_ALL;
        return true;
    }
    for (unsigned i = 0; i < SOP__SITE_COUNT; i++) {
        if (strcmp(name, site_tab[i].name) == 0) {
            *out = (sop__site)i;
            return true;
        }
    }
    return false;
}

bool sop__fault_point_lookup(const char *name, sop__point *out)
{
    if (name == NULL)
        return false;
    for (unsigned i = 0; i < SOP__POINT_COUNT; i++) {
        if (strcmp(name, point_tab[i].name) == 0) {
            *out = (sop__point)i;
            return true;
        }
    }
    return false;
}

void sop__fault_list(sop__fault_list_fn *fn, void *ctx)
{
    for (unsigned i = 0; i < SOP__SITE_COUNT; i++)
        fn(ctx, false, site_tab[i].name, site_tab[i].desc);
    for (unsigned i = 0; i < SOP__POINT_COUNT; i++)
        fn(ctx, true, point_tab[i].name, point_tab[i].desc);
}

#ifdef SOP_FAULT_INJECTION

#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "err.h"

#define RULES_MAX 32
#define SPEC_MAX  1024

typedef enum target { T_SITE, T_POINT, T_ALLOC } target;

typedef struct rule {
    target t;
    unsigned idx; /* site (or SOP__SITE_ALL) / point; unused for T_ALLOC */
    unsigned long nth;
    unsigned long base; /* invariant 4 */
    sop__fault_kind kind;
    bool persistent;
    bool spent; /* a once-rule that fired */
} rule;

/* Starts at 1 so the first hook reads SOP_FAULT (fault.h invariant 6). */
atomic_int sop__fault_armed = 1;

static atomic_ulong site_calls[SOP__SITE_COUNT];
static atomic_ulong all_calls;
static atomic_ulong point_hits[SOP__POINT_COUNT];

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static rule rules[RULES_MAX];
static unsigned nrules;
static unsigned long alloc_calls; /* counted only while armed */
static unsigned long injected;
static bool env_loaded;
static char last_error[SOP_ERR_MSG_MAX];

/* Under mu: invariant 3. */
static void arm_update(void)
{
    int live = !env_loaded;
    for (unsigned i = 0; i < nrules && !live; i++)
        live = !rules[i].spent;
    atomic_store_explicit(&sop__fault_armed, live, memory_order_relaxed);
}

static unsigned long counter_now(target t, unsigned idx)
{
    switch (t) {
    case T_SITE:
        if (idx == (unsigned)SOP__SITE_ALL)
            return atomic_load_explicit(&all_calls, memory_order_relaxed);
        return atomic_load_explicit(&site_calls[idx], memory_order_relaxed);
    case T_POINT:
        return atomic_load_explicit(&point_hits[idx], memory_order_relaxed);
    case T_ALLOC:
        return alloc_calls;
    }
    return 0;
}

/* Under mu. false (and last_error set) when the table is full. */
static bool add_rule(target t, unsigned idx, unsigned long nth, sop__fault_kind kind,
                     bool persistent, bool from_start)
{
    if (nrules == RULES_MAX) {
        snprintf(last_error, sizeof(last_error),
                 "fault: too many rules armed (at most %d); rule ignored", RULES_MAX);
        return false;
    }
    rule *r = &rules[nrules++];
    r->t = t;
    r->idx = idx;
    r->nth = nth ? nth : 1;
    r->base = from_start ? 0 : counter_now(t, idx);
    r->kind = kind;
    r->persistent = persistent;
    r->spent = false;
    return true;
}

static int load_env_locked(bool from_start);

/*
 * The slow path of every hook. `count` is the hook's counter value after
 * its increment (for sites), `all` the all-sites counter; for allocations
 * the counter is bumped here. Returns the fault to inject.
 */
static sop__fault_kind decide(target t, unsigned idx, unsigned long count, unsigned long all)
{
    sop__fault_kind fire = SOP__FAULT_NONE;
    pthread_mutex_lock(&mu);
    if (!env_loaded)
        load_env_locked(true);
    if (t == T_ALLOC)
        count = ++alloc_calls;
    for (unsigned i = 0; i < nrules; i++) {
        rule *r = &rules[i];
        if (r->spent || r->t != t)
            continue;
        unsigned long c = count;
        if (t == T_SITE && r->idx == (unsigned)SOP__SITE_ALL)
            c = all;
        else if (t != T_ALLOC && r->idx != idx)
            continue;
        if (c <= r->base)
            continue;
        unsigned long k = c - r->base;
        if (k == r->nth || (r->persistent && k > r->nth)) {
            fire = r->kind;
            if (!r->persistent)
                r->spent = true;
            break;
        }
    }
    if (fire != SOP__FAULT_NONE) {
        injected++;
        arm_update();
    }
    pthread_mutex_unlock(&mu);
    if (fire == SOP__FAULT_KILL)
        raise(SIGKILL); /* invariant 5 */
    if (fire == SOP__FAULT_STOP) {
        raise(SIGSTOP); /* until someone sends SIGCONT */
        fire = SOP__FAULT_NONE;
    }
    return fire;
}

bool sop__fault_alloc_fails(void)
{
    return decide(T_ALLOC, 0, 0, 0) != SOP__FAULT_NONE;
}

void sop__fault_point(sop__point p)
{
    if ((unsigned)p >= SOP__POINT_COUNT)
        return;
    unsigned long c = atomic_fetch_add_explicit(&point_hits[p], 1, memory_order_relaxed) + 1;
    if (SOP__UNLIKELY(SOP__FAULT_ARMED_()))
        decide(T_POINT, (unsigned)p, c, 0);
}

sop__fault_kind sop__fault_io_hit(sop__site s)
{
    if ((unsigned)s >= SOP__SITE_COUNT)
        return SOP__FAULT_NONE;
    unsigned long c = atomic_fetch_add_explicit(&site_calls[s], 1, memory_order_relaxed) + 1;
    unsigned long a = atomic_fetch_add_explicit(&all_calls, 1, memory_order_relaxed) + 1;
    if (SOP__LIKELY(!SOP__FAULT_ARMED_()))
        return SOP__FAULT_NONE;
    return decide(T_SITE, (unsigned)s, c, a);
}

void sop__fault_reset(void)
{
    pthread_mutex_lock(&mu);
    nrules = 0;
    alloc_calls = 0;
    injected = 0;
    env_loaded = true;
    last_error[0] = '\0';
    for (unsigned i = 0; i < SOP__SITE_COUNT; i++)
        atomic_store_explicit(&site_calls[i], 0, memory_order_relaxed);
    atomic_store_explicit(&all_calls, 0, memory_order_relaxed);
    for (unsigned i = 0; i < SOP__POINT_COUNT; i++)
        atomic_store_explicit(&point_hits[i], 0, memory_order_relaxed);
    arm_update();
    pthread_mutex_unlock(&mu);
}

void sop__fault_io(sop__site site, unsigned nth, sop__fault_kind kind, bool persistent)
{
    pthread_mutex_lock(&mu);
    if (((unsigned)site > SOP__SITE_COUNT) || kind == SOP__FAULT_NONE ||
        sop__fault_kind_name(kind) == NULL)
        snprintf(last_error, sizeof(last_error), "fault: bad site %d or kind %d; rule ignored",
                 (int)site, (int)kind);
    else
        add_rule(T_SITE, (unsigned)site, nth, kind, persistent, false);
    arm_update();
    pthread_mutex_unlock(&mu);
}

void sop__fault_kill_at(sop__point p, unsigned nth)
{
    pthread_mutex_lock(&mu);
    if ((unsigned)p >= SOP__POINT_COUNT)
        snprintf(last_error, sizeof(last_error), "fault: bad point %d; rule ignored", (int)p);
    else
        add_rule(T_POINT, (unsigned)p, nth, SOP__FAULT_KILL, false, false);
    arm_update();
    pthread_mutex_unlock(&mu);
}

void sop__fault_stop_at(sop__point p, unsigned nth)
{
    pthread_mutex_lock(&mu);
    if ((unsigned)p >= SOP__POINT_COUNT)
        snprintf(last_error, sizeof(last_error), "fault: bad point %d; rule ignored", (int)p);
    else
        add_rule(T_POINT, (unsigned)p, nth, SOP__FAULT_STOP, false, false);
    arm_update();
    pthread_mutex_unlock(&mu);
}

void sop__fault_alloc(unsigned nth, bool persistent)
{
    pthread_mutex_lock(&mu);
    add_rule(T_ALLOC, 0, nth, SOP__FAULT_EIO, persistent, false);
    arm_update();
    pthread_mutex_unlock(&mu);
}

unsigned long sop__fault_site_calls(sop__site s)
{
    if ((unsigned)s > SOP__SITE_COUNT)
        return 0;
    return counter_now(T_SITE, (unsigned)s);
}

unsigned long sop__fault_point_hits(sop__point p)
{
    if ((unsigned)p >= SOP__POINT_COUNT)
        return 0;
    return counter_now(T_POINT, (unsigned)p);
}

unsigned long sop__fault_injected(void)
{
    pthread_mutex_lock(&mu);
    unsigned long n = injected;
    pthread_mutex_unlock(&mu);
    return n;
}

/* ---- SOP_FAULT parser ---- */

static bool str_ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
    return *a == *b;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* A decimal 1..ULONG_MAX/2 with nothing after it. */
static bool parse_nth(const char *s, unsigned long *out)
{
    if (!isdigit((unsigned char)*s))
        return false;
    unsigned long v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        if (v > (~0UL / 2 - 9) / 10)
            return false;
        v = v * 10 + (unsigned long)(*s - '0');
    }
    if (*s != '\0' || v == 0)
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    if (strcmp(s, "1") == 0 || str_ieq(s, "true") || str_ieq(s, "yes")) {
        *out = true;
        return true;
    }
    if (strcmp(s, "0") == 0 || str_ieq(s, "false") || str_ieq(s, "no")) {
        *out = false;
        return true;
    }
    return false;
}

static bool parse_err_kind(const char *s, sop__fault_kind *out)
{
    static const struct {
        const char *name;
        sop__fault_kind kind;
    } tab[] = {{"EIO", SOP__FAULT_EIO},
               {"ENOSPC", SOP__FAULT_ENOSPC},
               {"EROFS", SOP__FAULT_EROFS},
               {"SHORT_WRITE", SOP__FAULT_SHORT_WRITE},
               {"short", SOP__FAULT_SHORT_WRITE}};
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        if (str_ieq(s, tab[i].name)) {
            *out = tab[i].kind;
            return true;
        }
    }
    return false;
}

/*
 * Parses one item ("site=test.a:nth=3:err=EIO") in place and, under mu,
 * arms it. On failure fills why[] and arms nothing.
 */
static bool parse_item(char *item, bool from_start, char *why, size_t why_len)
{
    bool have_target = false, have_nth = false, have_err = false, have_action = false;
    bool have_persist = false, persistent = false, kill = false, stop = false;
    target t = T_SITE;
    unsigned idx = 0;
    unsigned long nth = 1;
    sop__fault_kind kind = SOP__FAULT_EIO;

    char *save = NULL;
    for (char *f = strtok_r(item, ":", &save); f; f = strtok_r(NULL, ":", &save)) {
        f = trim(f);
        char *val = strchr(f, '=');
        if (val)
            *val++ = '\0';
        const char *key = trim(f);
        if (val)
            val = trim(val);
        bool dup = false;
        if (strcmp(key, "site") == 0 || strcmp(key, "point") == 0 || strcmp(key, "alloc") == 0) {
            dup = have_target;
            have_target = true;
            if (strcmp(key, "alloc") == 0) {
                if (val) {
                    snprintf(why, why_len, "\"alloc\" takes no value");
                    return false;
                }
                t = T_ALLOC;
            } else if (val == NULL || *val == '\0') {
                snprintf(why, why_len, "\"%s\" needs a name", key);
                return false;
            } else if (key[0] == 's') {
                sop__site s;
                if (!sop__fault_site_lookup(val, &s)) {
                    snprintf(why, why_len, "unknown site \"%.64s\"", val);
                    return false;
                }
                t = T_SITE;
                idx = (unsigned)s;
            } else {
                sop__point p;
                if (!sop__fault_point_lookup(val, &p)) {
                    snprintf(why, why_len, "unknown point \"%.64s\"", val);
                    return false;
                }
                t = T_POINT;
                idx = (unsigned)p;
            }
        } else if (val == NULL) {
            snprintf(why, why_len, "unknown field \"%.32s\" (expected key=value)", key);
            return false;
        } else if (strcmp(key, "nth") == 0) {
            dup = have_nth;
            have_nth = true;
            if (!parse_nth(val, &nth)) {
                snprintf(why, why_len, "bad nth \"%.32s\" (expected a number >= 1)", val);
                return false;
            }
        } else if (strcmp(key, "err") == 0) {
            dup = have_err;
            have_err = true;
            if (!parse_err_kind(val, &kind)) {
                snprintf(why, why_len,
                         "bad err \"%.32s\" (expected EIO, ENOSPC, EROFS or SHORT_WRITE)", val);
                return false;
            }
        } else if (strcmp(key, "action") == 0) {
            dup = have_action;
            have_action = true;
            if (str_ieq(val, "kill"))
                kill = true;
            else if (str_ieq(val, "stop"))
                stop = true;
            else if (str_ieq(val, "fail"))
                kill = false;
            else {
                snprintf(why, why_len, "bad action \"%.32s\" (expected kill, stop or fail)", val);
                return false;
            }
        } else if (strcmp(key, "persist") == 0) {
            dup = have_persist;
            have_persist = true;
            if (!parse_bool(val, &persistent)) {
                snprintf(why, why_len, "bad persist \"%.32s\" (expected 0 or 1)", val);
                return false;
            }
        } else {
            snprintf(why, why_len, "unknown field \"%.32s\"", key);
            return false;
        }
        if (dup) {
            snprintf(why, why_len, "field \"%.32s\" given twice", key);
            return false;
        }
    }
    if (!have_target) {
        snprintf(why, why_len, "no site=, point= or alloc");
        return false;
    }
    switch (t) {
    case T_SITE:
        if (stop) {
            snprintf(why, why_len, "action=stop is for crash points only");
            return false;
        }
        if (kill && have_err) {
            snprintf(why, why_len, "both err= and action=kill");
            return false;
        }
        if (kill)
            kind = SOP__FAULT_KILL;
        break;
    case T_POINT:
        if (have_err || (have_action && !kill && !stop) || have_persist) {
            snprintf(why, why_len, "a crash point only takes nth= and action=kill or stop");
            return false;
        }
        kind = stop ? SOP__FAULT_STOP : SOP__FAULT_KILL;
        persistent = false;
        break;
    case T_ALLOC:
        if (have_err || kill || stop) {
            snprintf(why, why_len, "alloc only takes nth= and persist=");
            return false;
        }
        break;
    }
    if (!add_rule(t, idx, nth, kind, persistent, from_start)) {
        snprintf(why, why_len, "too many rules armed (at most %d)", RULES_MAX);
        return false;
    }
    return true;
}

/* Under mu. Returns the number of rules armed; first bad item in first_bad. */
static int parse_locked(const char *spec, bool from_start, char *first_bad, size_t first_bad_len)
{
    char buf[SPEC_MAX];
    int armed = 0;
    first_bad[0] = '\0';
    if (spec == NULL)
        return 0;
    if (strlen(spec) >= sizeof(buf)) {
        snprintf(first_bad, first_bad_len, "SOP_FAULT: spec longer than %d bytes ignored",
                 SPEC_MAX - 1);
        return 0;
    }
    memcpy(buf, spec, strlen(spec) + 1);
    char *save = NULL;
    unsigned n = 0;
    for (char *item = strtok_r(buf, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        n++;
        item = trim(item);
        if (*item == '\0')
            continue;
        char copy[SPEC_MAX];
        snprintf(copy, sizeof(copy), "%s", item);
        char why[128];
        if (parse_item(item, from_start, why, sizeof(why)))
            armed++;
        else if (first_bad[0] == '\0')
            snprintf(first_bad, first_bad_len, "SOP_FAULT: item %u \"%.60s\": %s", n, copy, why);
    }
    return armed;
}

static int load_env_locked(bool from_start)
{
    char bad[SOP_ERR_MSG_MAX];
    env_loaded = true;
    int armed = parse_locked(getenv("SOP_FAULT"), from_start, bad, sizeof(bad));
    if (bad[0])
        memcpy(last_error, bad, sizeof(bad));
    arm_update();
    return armed;
}

int sop__fault_load_env(void)
{
    pthread_mutex_lock(&mu);
    int armed = load_env_locked(false);
    pthread_mutex_unlock(&mu);
    return armed;
}

sop_rc sop__fault_parse(const char *spec, sop_err *err)
{
    char bad[SOP_ERR_MSG_MAX];
    pthread_mutex_lock(&mu);
    parse_locked(spec, false, bad, sizeof(bad));
    if (bad[0])
        memcpy(last_error, bad, sizeof(bad));
    arm_update();
    pthread_mutex_unlock(&mu);
    if (bad[0])
        return sop__err_set(err, SOP_INVALID, 0, "%s", bad);
    return SOP_OK;
}

const char *sop__fault_last_error(void)
{
    pthread_mutex_lock(&mu);
    const char *e = last_error[0] ? last_error : NULL;
    pthread_mutex_unlock(&mu);
    return e;
}

#endif /* SOP_FAULT_INJECTION */
