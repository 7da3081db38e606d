/*
 * replay.c - runs a libFuzzer target (LLVMFuzzerTestOneInput) inside the
 * normal test suite, without clang: every file of its seed corpus
 * (SOP_FUZZ_CORPUS, a folder), then seeded random mutations of them
 * (bit flips, byte sets, truncations, insertions, splices). A crash or a
 * sanitizer report is the failure; `make fuzz` builds the same target for
 * real coverage-guided fuzzing.
 */
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "t.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct input {
    uint8_t *data;
    size_t len;
} input;

static input *corpus;
static size_t ncorpus;

static void load_corpus(void)
{
    if (corpus)
        return;
    DIR *d = opendir(SOP_FUZZ_CORPUS);
    CHECK_MSG(d != NULL, "no corpus folder %s", SOP_FUZZ_CORPUS);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", SOP_FUZZ_CORPUS, e->d_name);
        FILE *f = fopen(path, "rb");
        CHECK_MSG(f != NULL, "cannot open %s", path);
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        corpus = realloc(corpus, sizeof(input) * (ncorpus + 1));
        corpus[ncorpus].data = malloc(n > 0 ? (size_t)n : 1);
        corpus[ncorpus].len = fread(corpus[ncorpus].data, 1, (size_t)n, f);
        fclose(f);
        ncorpus++;
    }
    closedir(d);
    CHECK_MSG(ncorpus > 0, "empty corpus %s", SOP_FUZZ_CORPUS);
}

TEST(replay_seed_corpus)
{
    load_corpus();
    for (size_t i = 0; i < ncorpus; i++) {
        /* exact-size copies so ASan sees any read past the end */
        uint8_t *copy = malloc(corpus[i].len ? corpus[i].len : 1);
        memcpy(copy, corpus[i].data, corpus[i].len);
        LLVMFuzzerTestOneInput(copy, corpus[i].len);
        free(copy);
    }
    printf("#   %zu corpus inputs\n", ncorpus);
}

TEST(random_mutations_of_the_corpus)
{
    load_corpus();
    t_rng rng;
    t_rng_seed(&rng, t_seed());
    unsigned rounds = t_long() ? 200000 : 20000;
    for (unsigned r = 0; r < rounds; r++) {
        const input *src = &corpus[t_rng_below(&rng, ncorpus)];
        size_t len = src->len;
        uint8_t *buf = malloc(len + 64);
        memcpy(buf, src->data, len);
        unsigned edits = 1 + (unsigned)t_rng_below(&rng, 4);
        for (unsigned k = 0; k < edits; k++) {
            switch (t_rng_below(&rng, 5)) {
            case 0: /* flip a bit */
                if (len)
                    buf[t_rng_below(&rng, len)] ^= (uint8_t)(1u << t_rng_below(&rng, 8));
                break;
            case 1: /* set a byte to an interesting value */
                if (len) {
                    static const uint8_t vals[] = {0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe};
                    buf[t_rng_below(&rng, len)] = vals[t_rng_below(&rng, sizeof(vals))];
                }
                break;
            case 2: /* truncate */
                len = (size_t)t_rng_below(&rng, len + 1);
                break;
            case 3: /* insert a random byte */
                if (len < src->len + 60) {
                    size_t at = (size_t)t_rng_below(&rng, len + 1);
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (uint8_t)t_rng_next(&rng);
                    len++;
                }
                break;
            default: { /* splice the tail of another input */
                const input *o = &corpus[t_rng_below(&rng, ncorpus)];
                size_t at = (size_t)t_rng_below(&rng, len + 1);
                size_t take = o->len < 60 ? o->len : 60;
                buf = realloc(buf, at + take + 64);
                memcpy(buf + at, o->data + (o->len - take), take);
                len = at + take;
            }
            }
        }
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, buf, len);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
        free(buf);
    }
    printf("#   %u mutated inputs\n", rounds);
}
