/*
 * report.c - `bench --report CSV MD DAT PGDAT`: the medians of the raw CSV
 * lines (bench.c, w8.c, pg/run.sh) as the tables of docs/bench/results.md,
 * and the data files the charts plot (bench/results.gp).
 *
 * CSV: rep,config,workload,ops,secs,ops_per_s,capped,setup_s,wbytes_per_op,
 *      rbytes_per_op,p50_us,p99_us,retries,note
 * Every median is over the repetitions of one (config, workload); with an
 * even count it is the mean of the middle two. The ratio of ours to a peer
 * uses our best slot length for that workload, named in the table, and the
 * full grid follows.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bench_report(const char *csv, const char *md, const char *dat, const char *pgdat);

#define MAXV 16

typedef struct cell {
    char config[32], workload[16];
    int n;
    double rate[MAXV], wbytes[MAXV], p50[MAXV], p99[MAXV];
    bool capped;
    unsigned long long retries;
    char note[96];
} cell;

static cell *cells;
static size_t ncells, capcells;

static cell *find(const char *config, const char *workload, bool add)
{
    for (size_t i = 0; i < ncells; i++)
        if (strcmp(cells[i].config, config) == 0 && strcmp(cells[i].workload, workload) == 0)
            return &cells[i];
    if (!add)
        return NULL;
    if (ncells == capcells) {
        capcells = capcells ? capcells * 2 : 64;
        cells = realloc(cells, capcells * sizeof *cells);
        if (cells == NULL)
            exit(2);
    }
    cell *c = &cells[ncells++];
    memset(c, 0, sizeof *c);
    snprintf(c->config, sizeof c->config, "%s", config);
    snprintf(c->workload, sizeof c->workload, "%s", workload);
    return c;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double s[MAXV];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static double minmax(const double *v, int n, bool max)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        if (max ? v[i] > m : v[i] < m)
            m = v[i];
    return m;
}

/* Splits a CSV line in place (no quoting: the harness writes none). */
static int split(char *line, char **f, int max)
{
    int n = 0;
    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line; n < max;) {
        f[n++] = p;
        p = strchr(p, ',');
        if (p == NULL)
            break;
        *p++ = '\0';
    }
    return n;
}

static double rate(const char *config, const char *workload)
{
    cell *c = find(config, workload, false);
    return c && c->n ? median(c->rate, c->n) : 0;
}

static void fmt_rate(char *buf, size_t cap, double r)
{
    if (r >= 100)
        snprintf(buf, cap, "%.0f", r);
    else
        snprintf(buf, cap, "%.1f", r);
}

static const char *const ours[] = {"sop-64", "sop-500", "sop-2000"};
static const char *const cols[] = {"sop-64", "sop-500",     "sop-2000",      "sop-500-redis",
                                   "lmdb",   "sqlite-full", "sqlite-normal", "rocksdb"};
#define NCOLS (sizeof cols / sizeof cols[0])
static const char *const wl[] = {"W1", "W2", "W3", "W4", "W5", "W6", "W7"};
static const char *const wl_what[] = {
    "sequential insert, 1000/txn (keys/s)",
    "random insert, 1000/txn (keys/s)",
    "random point lookups, warm (gets/s)",
    "full ordered scan (items/s)",
    "100-key range scans (scans/s)",
    "1-item durable commits (commits/s)",
    "2 writers, disjoint keys (total commits/s)",
};

/* Our best slot length for a workload. */
static const char *best_ours(const char *w, double *r)
{
    const char *b = NULL;
    *r = 0;
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++) {
        double x = rate(ours[i], w);
        if (x > *r) {
            *r = x;
            b = ours[i];
        }
    }
    return b;
}

/* W8: the engine's and raw ISA-L's encode rates for kp_names[i]. */
static const char *const kp_names[] = {"2+1", "4+2"};

static void encode_rates(int i, double *engine, double *raw)
{
    char a[16], b[16];
    snprintf(a, sizeof a, "sop-%s", kp_names[i]);
    snprintf(b, sizeof b, "isal-%s", kp_names[i]);
    *engine = rate(a, "W8-encode");
    *raw = rate(b, "W8-encode");
}

static void target(FILE *o, const char *w, const char *peer, const char *peer_label, double goal)
{
    double r, p = rate(peer, w);
    const char *b = best_ours(w, &r);
    if (b == NULL || p <= 0) {
        fprintf(o, "| %s | %s | >= %.1fx | not measured | |\n", w, peer_label, goal);
        return;
    }
    double x = r / p;
    fprintf(o, "| %s | %s | >= %.1fx | **%.2fx** (%s %.0f vs %.0f) | %s |\n", w, peer_label, goal,
            x, b, r, p, x >= goal ? "met" : "**missed**");
}

static void throughput(FILE *o)
{
    fputs("## Throughput (median ops/s; min-max over the repetitions)\n\n| workload |", o);
    for (size_t c = 0; c < NCOLS; c++)
        fprintf(o, " %s |", cols[c]);
    fputs("\n|---|", o);
    for (size_t c = 0; c < NCOLS; c++)
        fputs("---:|", o);
    fputc('\n', o);
    for (size_t w = 0; w < sizeof wl / sizeof wl[0]; w++) {
        fprintf(o, "| %s %s |", wl[w], wl_what[w]);
        for (size_t c = 0; c < NCOLS; c++) {
            cell *x = find(cols[c], wl[w], false);
            if (x == NULL || x->n == 0) {
                fputs(" - |", o);
                continue;
            }
            char m[32], lo[32], hi[32];
            fmt_rate(m, sizeof m, median(x->rate, x->n));
            fmt_rate(lo, sizeof lo, minmax(x->rate, x->n, false));
            fmt_rate(hi, sizeof hi, minmax(x->rate, x->n, true));
            fprintf(o, " %s%s <sub>%s-%s</sub> |", m, x->capped ? "\\*" : "", lo, hi);
        }
        fputc('\n', o);
    }
    fputs("\n\\* capped: the phase reached the time cap and the rate is over the part done.\n"
          "`-`: not run for that configuration (see Settings).\n\n",
          o);
}

static void ratios(FILE *o)
{
    fputs("## Targets (ours / peer, same run; ours = our best slot length for the workload)\n\n"
          "| workload | peer | target | ratio (ops/s ours vs peer) | |\n|---|---|---|---|---|\n",
          o);
    target(o, "W1", "sqlite-full", "SQLite FULL", 1.0);
    target(o, "W1", "lmdb", "LMDB", 0.7);
    target(o, "W2", "lmdb", "LMDB", 1.0);
    target(o, "W2", "sqlite-full", "SQLite FULL", 1.0);
    target(o, "W2", "sqlite-normal", "SQLite NORMAL", 1.0);
    target(o, "W3", "lmdb", "LMDB", 1.0);
    target(o, "W4", "lmdb", "LMDB", 1.0);
    target(o, "W5", "lmdb", "LMDB", 1.0);
    target(o, "W6", "sqlite-full", "SQLite FULL", 1.0);
    /* W7: ours with two writers against ours with one, per config */
    for (size_t i = 0; i < sizeof ours / sizeof ours[0] + 1; i++) {
        const char *c = i < 3 ? ours[i] : "sop-500-redis";
        double w6 = rate(c, "W6"), w7 = rate(c, "W7");
        if (w6 <= 0 || w7 <= 0)
            continue;
        fprintf(o, "| W7 | own W6 (%s) | >= 1.5x | **%.2fx** (%.0f vs %.0f) | %s |\n", c, w7 / w6,
                w7, w6, w7 / w6 >= 1.5 ? "met" : "**missed**");
    }
    for (int i = 0; i < 2; i++) {
        double x, y;
        encode_rates(i, &x, &y);
        if (x > 0 && y > 0)
            fprintf(
                o, "| W8 encode %s | raw ISA-L | >= 0.8x | **%.2fx** (%.0f vs %.0f MiB/s) | %s |\n",
                kp_names[i], x / y, x, y, x / y >= 0.8 ? "met" : "**missed**");
    }
    fputs("\n### Every slot length against every peer\n\n| workload | ours |", o);
    static const char *const peers[] = {"lmdb", "sqlite-full", "sqlite-normal", "rocksdb"};
    for (size_t p = 0; p < 4; p++)
        fprintf(o, " / %s |", peers[p]);
    fputs("\n|---|---|---:|---:|---:|---:|\n", o);
    for (size_t w = 0; w < sizeof wl / sizeof wl[0]; w++)
        for (size_t i = 0; i < 3; i++) {
            double r = rate(ours[i], wl[w]);
            if (r <= 0)
                continue;
            fprintf(o, "| %s | %s |", wl[w], ours[i]);
            for (size_t p = 0; p < 4; p++) {
                double x = rate(peers[p], wl[w]);
                if (x > 0)
                    fprintf(o, " %.2fx |", r / x);
                else
                    fputs(" - |", o);
            }
            fputc('\n', o);
        }
    fputc('\n', o);
}

static void details(FILE *o)
{
    fputs("## Write cost and commit latency (medians)\n\n"
          "Bytes written per operation come from `/proc/self/io` (write_bytes) of the process "
          "running the phase (the engine's own threads included; W7 writers are other "
          "processes and are not counted). Latency is per commit in W6.\n\n"
          "| config | W1 B/key | W2 B/key | W6 B/commit | W6 p50 us | W6 p99 us | W7 retries |\n"
          "|---|---:|---:|---:|---:|---:|---:|\n",
          o);
    for (size_t c = 0; c < NCOLS; c++) {
        fprintf(o, "| %s |", cols[c]);
        static const char *const w[] = {"W1", "W2", "W6"};
        for (int i = 0; i < 3; i++) {
            cell *x = find(cols[c], w[i], false);
            if (x && x->n)
                fprintf(o, " %.0f |", median(x->wbytes, x->n));
            else
                fputs(" - |", o);
        }
        cell *x = find(cols[c], "W6", false);
        if (x && x->n)
            fprintf(o, " %.0f | %.0f |", median(x->p50, x->n), median(x->p99, x->n));
        else
            fputs(" - | - |", o);
        x = find(cols[c], "W7", false);
        if (x && x->n)
            fprintf(o, " %llu (total) |\n", x->retries);
        else
            fputs(" - |\n", o);
    }
    fputc('\n', o);
}

static void w8(FILE *o)
{
    fputs("## W8: 1 MiB values, erasure coding (MiB/s, medians)\n\n"
          "| configuration | write | read | bytes written per value |\n|---|---:|---:|---:|\n",
          o);
    static const char *const ec[] = {"ec-none", "ec-2+1", "ec-4+2"};
    for (int i = 0; i < 3; i++) {
        cell *x = find(ec[i], "W8-write", false);
        fprintf(o, "| %s | %.1f | %.1f | %.0f |\n", ec[i], rate(ec[i], "W8-write"),
                rate(ec[i], "W8-read"), x && x->n ? median(x->wbytes, x->n) : 0);
    }
    fputs("\n| encode (1 MiB blobs, MiB of input/s) | raw ISA-L | engine | ratio |\n"
          "|---|---:|---:|---:|\n",
          o);
    for (int i = 0; i < 2; i++) {
        double x, y;
        encode_rates(i, &x, &y);
        fprintf(o, "| %s | %.0f | %.0f | %.2fx |\n", kp_names[i], y, x, y > 0 ? x / y : 0);
    }
    fputc('\n', o);
}

static void pg(FILE *o, FILE *d)
{
    static const char *const t[] = {"pg-insert", "pg-lookup", "pg-scan", "pg-range"};
    static const char *const what[] = {"INSERT, 1000 rows per transaction",
                                       "point lookups through a join (shuffled keys)",
                                       "full ordered scan", "range queries of 100 rows"};
    fputs("## PostgreSQL: pg_sop foreign table vs heap table with a primary key (rows/s, "
          "medians)\n\n| test | heap | pg_sop | ratio | target |\n|---|---:|---:|---:|---|\n",
          o);
    fputs("test heap pg_sop\n", d);
    for (int i = 0; i < 4; i++) {
        double h = rate("pg-heap", t[i]), s = rate("pg-sop", t[i]);
        if (h <= 0 && s <= 0)
            continue;
        fprintf(o, "| %s | %.0f | %.0f | **%.2fx** | >= 1.0x %s |\n", what[i], h, s,
                h > 0 ? s / h : 0, h > 0 && s / h >= 1.0 ? "met" : "**missed**");
        fprintf(d, "%s %.1f %.1f\n", t[i] + 3, h, s);
    }
    fputc('\n', o);
}

int bench_report(const char *csv, const char *md, const char *dat, const char *pgdat)
{
    FILE *in = fopen(csv, "r");
    if (in == NULL) {
        perror(csv);
        return 2;
    }
    char line[1024];
    while (fgets(line, sizeof line, in)) {
        char *f[14];
        if (split(line, f, 14) < 14 || strcmp(f[0], "rep") == 0)
            continue;
        cell *c = find(f[1], f[2], true);
        if (c->n == MAXV) {
            fprintf(stderr, "bench --report: more than %d results for %s %s: the rest ignored\n",
                    MAXV, f[1], f[2]);
            continue;
        }
        c->rate[c->n] = atof(f[5]);
        c->capped |= atoi(f[6]) != 0;
        c->wbytes[c->n] = atof(f[8]);
        c->p50[c->n] = *f[10] ? atof(f[10]) : 0;
        c->p99[c->n] = *f[11] ? atof(f[11]) : 0;
        c->retries += strtoull(f[12], NULL, 10);
        snprintf(c->note, sizeof c->note, "%s", f[13]);
        c->n++;
    }
    fclose(in);
    FILE *o = fopen(md, "w"), *d = fopen(dat, "w"), *pd = fopen(pgdat, "w");
    if (o == NULL || d == NULL || pd == NULL) {
        perror("bench --report");
        return 2;
    }
    throughput(o);
    ratios(o);
    details(o);
    w8(o);
    pg(o, pd);
    fputs("workload", d);
    for (size_t c = 0; c < NCOLS; c++)
        fprintf(d, " %s", cols[c]);
    fputc('\n', d);
    for (size_t w = 0; w < sizeof wl / sizeof wl[0]; w++) {
        fprintf(d, "%s", wl[w]);
        for (size_t c = 0; c < NCOLS; c++) {
            double r = rate(cols[c], wl[w]);
            if (r > 0)
                fprintf(d, " %.1f", r);
            else
                fputs(" ?", d);
        }
        fputc('\n', d);
    }
    fclose(o);
    fclose(d);
    fclose(pd);
    return 0;
}
