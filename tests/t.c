/*
 * t.c - runner for tests written with t.h (see there for the contract).
 */
#include "t.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define T_MAX 512

static struct {
    const char *name;
    t_fn fn;
} tests[T_MAX];
static int ntests;
static jmp_buf jump;
static char why[1024];
static char tmpdir[4096];

void t_register(const char *name, t_fn fn)
{
    if (ntests == T_MAX) {
        fprintf(stderr, "t: too many tests\n");
        exit(2);
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
}

static bool in_child;

void t_in_child(void)
{
    in_child = true;
}

void t_fail(const char *file, int line, const char *fmt, ...)
{
    int n = snprintf(why, sizeof(why), "%s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + n, sizeof(why) - (size_t)n, fmt, ap);
    va_end(ap);
    if (in_child) {
        fprintf(stderr, "child: %s\n", why);
        _exit(2);
    }
    longjmp(jump, 1);
}

void t_skip(const char *reason)
{
    snprintf(why, sizeof(why), "%s", reason);
    longjmp(jump, 2);
}

uint64_t t_seed(void)
{
    const char *env = getenv("SOP_TEST_SEED");
    uint64_t seed;
    if (env && *env) {
        seed = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    printf("#   seed %" PRIu64 " (replay: SOP_TEST_SEED=%" PRIu64 ")\n", seed, seed);
    fflush(stdout);
    return seed;
}

const char *t_errmsg(const sop_err *err)
{
    return err ? err->msg : "";
}

bool t_long(void)
{
    const char *env = getenv("SOP_TEST_LONG");
    return env && strcmp(env, "1") == 0;
}

const char *t_tmpdir(void)
{
    if (tmpdir[0])
        return tmpdir;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/soptest.XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(tmpdir) == NULL)
        t_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
    return tmpdir;
}

const char *t_db_fresh(void)
{
    static char dir[4096];
    static int n;
    sop_err err = {0};
    snprintf(dir, sizeof(dir), "%s/db%d", t_tmpdir(), n++);
    CHECK_OK(sop_db_init(dir, NULL, &err), &err);
    return dir;
}

sop_db *t_db_open(const char *dir)
{
    sop_err err = {0};
    sop_db *db = NULL;
    CHECK_OK(sop_db_open(dir, NULL, &db, &err), &err);
    return db;
}

uint64_t t_db_check_clean(sop_db *db)
{
    sop_err err = {0};
    sop_check_report rep;
    CHECK_OK(sop_db_check(db, NULL, NULL, &rep, &err), &err);
    CHECK_EQ(rep.problems, 0);
    return rep.blobs;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void t_rng_seed(t_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) { /* splitmix64 */
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

uint64_t t_rng_next(t_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return result;
}

uint64_t t_rng_below(t_rng *r, uint64_t n)
{
    return n ? t_rng_next(r) % n : 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- Private redis-servers (t.h) ---- */

#define T_REDIS_MAX     8
#define T_REDIS_WAIT_MS 5000

static pid_t redis_pids[T_REDIS_MAX]; /* running servers, for the runner */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void redis_untrack(pid_t pid)
{
    for (int i = 0; i < T_REDIS_MAX; i++)
        if (redis_pids[i] == pid)
            redis_pids[i] = 0;
}

/* The runner, after each test: servers the test left running die. */
static void redis_kill_all(void)
{
    for (int i = 0; i < T_REDIS_MAX; i++) {
        if (redis_pids[i] > 0) {
            kill(redis_pids[i], SIGKILL);
            waitpid(redis_pids[i], NULL, 0);
            redis_pids[i] = 0;
        }
    }
}

uint16_t t_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        t_fail(__FILE__, __LINE__, "socket: %s", strerror(errno));
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) < 0) {
        int e = errno;
        close(s);
        t_fail(__FILE__, __LINE__, "finding a free port: %s", strerror(e));
    }
    close(s);
    return ntohs(a.sin_port);
}

/* The last non-empty line of the server's log, for failure messages. */
static void log_tail(const char *path, char *out, size_t n)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f))
        if (line[0] != '\n' && line[0] != '\0') {
            line[strcspn(line, "\r\n")] = '\0';
            snprintf(out, n, "%.*s", (int)(n - 1), line);
        }
    fclose(f);
}

/* Starts redis-server on r->port: 0 once it answers PING, 1 if it exited
 * (its port taken, say); fails the test on anything else. */
static int redis_try_start(t_redis *r)
{
    const char *dir = t_tmpdir();
    char port[8], words[sizeof(r->extra)];
    snprintf(port, sizeof(port), "%u", (unsigned)r->port);
    snprintf(r->log, sizeof(r->log), "%s/redis-%u.log", dir, (unsigned)r->port);
    snprintf(words, sizeof(words), "%s", r->extra);
    const char *argv[80] = {"redis-server", "--port", port,    "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no",     "--dir", dir};
    int argc = 11;
    char *save = NULL;
    for (char *w = strtok_r(words, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        if (argc == 79)
            t_fail(__FILE__, __LINE__, "t_redis_start: too many extra arguments");
        argv[argc++] = w;
    }
    argv[argc] = NULL;

    int pfd[2]; /* close-on-exec: the child reports a failed exec through it */
    if (pipe2(pfd, O_CLOEXEC) < 0)
        t_fail(__FILE__, __LINE__, "pipe2: %s", strerror(errno));
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        t_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(pfd[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(r->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int in = open("/dev/null", O_RDONLY);
        if (fd >= 0 && in >= 0) {
            dup2(in, 0);
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], (char *const *)argv);
        int e = errno;
        if (write(pfd[1], &e, sizeof(e)) < 0)
            _exit(126);
        _exit(127);
    }
    close(pfd[1]);
    int e = 0;
    ssize_t got;
    while ((got = read(pfd[0], &e, sizeof(e))) < 0 && errno == EINTR)
        ;
    close(pfd[0]);
    if (got == (ssize_t)sizeof(e)) {
        waitpid(pid, NULL, 0);
        t_fail(__FILE__, __LINE__,
               "cannot run redis-server (%s): the Redis tests need it installed "
               "(apt-get install redis-server; .ci/deps does)",
               strerror(e));
    }
    int slot = 0;
    while (slot < T_REDIS_MAX && redis_pids[slot] != 0)
        slot++;
    if (slot == T_REDIS_MAX) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        t_fail(__FILE__, __LINE__, "t_redis_start: more than %d servers at once", T_REDIS_MAX);
    }
    redis_pids[slot] = pid;
    r->pid = pid;

    double deadline = now_ms() + T_REDIS_WAIT_MS;
    while (now_ms() < deadline) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            redis_untrack(pid);
            r->pid = 0;
            return 1;
        }
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
        bool up = false;
        if (c && !c->err) {
            struct timeval rtv = {1, 0};
            redisSetTimeout(c, rtv);
            redisReply *rep = redisCommand(c, "PING"); /* PONG, or NOAUTH: up */
            up = rep != NULL;
            if (rep)
                freeReplyObject(rep);
        }
        redisFree(c);
        /* still ours: another server on the port would have made ours exit */
        if (up && waitpid(pid, NULL, WNOHANG) == 0)
            return 0;
        sleep_ms(10);
    }
    t_redis_stop(r);
    char tail[300];
    log_tail(r->log, tail, sizeof(tail));
    t_fail(__FILE__, __LINE__, "redis-server on port %u did not answer PING within %d ms (%s: %s)",
           (unsigned)r->port, T_REDIS_WAIT_MS, r->log, tail);
}

void t_redis_start(t_redis *r, const char *extra_args)
{
    memset(r, 0, sizeof(*r));
    if (extra_args && strlen(extra_args) >= sizeof(r->extra))
        t_fail(__FILE__, __LINE__, "t_redis_start: extra arguments too long");
    snprintf(r->extra, sizeof(r->extra), "%s", extra_args ? extra_args : "");
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = t_free_port();
        if (redis_try_start(r) == 0)
            return;
    }
    char tail[300];
    log_tail(r->log, tail, sizeof(tail));
    t_fail(__FILE__, __LINE__, "redis-server exited at start, 5 times (%s: %s)", r->log, tail);
}

void t_redis_stop(t_redis *r)
{
    if (r->pid <= 0)
        return;
    pid_t pid = r->pid;
    kill(pid, SIGTERM);
    double deadline = now_ms() + 5000;
    pid_t w;
    while ((w = waitpid(pid, NULL, WNOHANG)) == 0 && now_ms() < deadline)
        sleep_ms(5);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    redis_untrack(pid);
    r->pid = 0;
}

void t_redis_restart(t_redis *r)
{
    t_redis_stop(r);
    for (int attempt = 0; attempt < 20; attempt++) { /* the port may linger a moment */
        if (redis_try_start(r) == 0)
            return;
        sleep_ms(50);
    }
    char tail[300];
    log_tail(r->log, tail, sizeof(tail));
    t_fail(__FILE__, __LINE__, "redis-server did not restart on port %u (%s: %s)",
           (unsigned)r->port, r->log, tail);
}

redisContext *t_redis_connect(const t_redis *r, const char *password)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (c == NULL || c->err) {
        char reason[128];
        snprintf(reason, sizeof(reason), "%s", c ? c->errstr : "out of memory");
        redisFree(c);
        t_fail(__FILE__, __LINE__, "connecting to redis on port %u: %s", (unsigned)r->port, reason);
    }
    struct timeval rtv = {10, 0};
    redisSetTimeout(c, rtv);
    if (password) {
        redisReply *rep = redisCommand(c, "AUTH %s", password);
        bool ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            t_fail(__FILE__, __LINE__, "AUTH on redis port %u failed", (unsigned)r->port);
        }
    }
    return c;
}

int main(int argc, char **argv)
{
    const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    const char *filter = argc > 1 ? argv[1] : NULL;
    static int passed, failed, skipped; /* static: survive the longjmp */
    setvbuf(stdout, NULL, _IOLBF, 0);
    static int i;
    for (i = 0; i < ntests; i++) {
        if (filter && !strstr(tests[i].name, filter))
            continue;
        tmpdir[0] = '\0';
        double t0 = now_ms();
        int r = setjmp(jump);
        if (r == 0) {
            tests[i].fn();
            printf("ok - %s (%.0f ms)\n", tests[i].name, now_ms() - t0);
            passed++;
        } else if (r == 1) {
            printf("FAIL - %s: %s\n", tests[i].name, why);
            failed++;
        } else {
            printf("skip - %s: %s\n", tests[i].name, why);
            skipped++;
        }
        redis_kill_all();
        if (tmpdir[0] && r != 1)
            nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        else if (tmpdir[0])
            printf("#   kept %s\n", tmpdir);
    }
    printf("# %s: %d passed, %d failed", prog, passed, failed);
    if (skipped)
        printf(", %d skipped", skipped);
    printf("\n");
    return failed ? 1 : 0;
}
