# pg_sop / libsop top-level build.
#
#   make                 build/lib/libsop.a, build/lib/libsop.so, build/bin/sop
#   make demo            install missing packages, build and install pg_sop, run the
#                        PostgreSQL demo (tests/pg/demo.sh, on a temporary instance)
#   make engine-demo     the engine-only demo (an in-memory B-tree, no PostgreSQL)
#   make test            install missing packages, build, install pg_sop, run every test:
#                        engine, CLI and the PostgreSQL suites (tests/pg/run_regress.sh)
#   make SANITIZE=address,undefined test     the engine and CLI tests under ASan/UBSan
#                        (build/san); the PostgreSQL suites run in plain `make test` only
#   make tsan            the threaded tests under ThreadSanitizer (build/san-tsan)
#   make lint            formatting, layering, exported symbols, banned calls, cppcheck
#   make test-long       the test suite with the long (documented) sizes
#   make bench           install the peers (LMDB, SQLite, RocksDB, gnuplot), run every
#                        workload on every engine and PostgreSQL (bench/run.sh, about
#                        15 minutes; BENCH_N=20000 BENCH_REPS=1 for a quick look) and
#                        write docs/bench/results.md and its charts. Not part of make test.
#   make pg              build the extension: PGXS in pg_sop/ against build/lib/libsop.a
#   make pg-install      make pg, then install it into PostgreSQL 15 (with sudo when not root);
#                        make install is the same
#   make pg-test         install missing packages, install pg_sop, run only the PostgreSQL
#                        suites (pg_regress over sql/, pg_isolation_regress over
#                        tests/pg/isolation/specs; tests/pg/run_regress.sh NAME... for some)
#
# The pg targets fail if pg_sop/Makefile is missing. The extension is never
# built with sanitizers: it links the plain build/lib/libsop.a. PostgreSQL
# servers never run as root: tests/pg/ runs them as the 'postgres' user then.
#
# The test suite links the fault-injection build of the engine
# (-DSOP_FAULT_INJECTION, build/fault); the library users get has no hooks.

.DEFAULT_GOAL := all
SHELL := /bin/bash

SANITIZE ?=
comma := ,
ifeq ($(SANITIZE),)
  BUILD := build
  OPT := -O2
  SANFLAGS :=
else
  # ThreadSanitizer cannot share objects with ASan: its own tree
  BUILD := build/san$(if $(filter thread,$(subst $(comma), ,$(SANITIZE))),-tsan)
  OPT := -O1
  SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

CC ?= cc
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
        -Wvla -Wpointer-arith -Wundef -Wimplicit-fallthrough -Wcast-align -Wwrite-strings
CPPFLAGS := -D_GNU_SOURCE -Iengine/include -Iengine/src
CFLAGS := -std=c11 -g $(OPT) -fPIC -fvisibility=hidden $(WARN) $(SANFLAGS) -MMD -MP
LDFLAGS := $(SANFLAGS)
LDLIBS := -lisal -lhiredis -lpthread -lm

ENGINE_SRC := $(wildcard engine/src/*.c)
OBJ := $(ENGINE_SRC:engine/src/%.c=$(BUILD)/obj/%.o)
FOBJ := $(ENGINE_SRC:engine/src/%.c=$(BUILD)/fault/obj/%.o)
LIB_A := $(BUILD)/lib/libsop.a
LIB_SO := $(BUILD)/lib/libsop.so
FLIB_A := $(BUILD)/fault/lib/libsop.a

TEST_SRC := $(wildcard tests/engine/test_*.c)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
TEST_BIN := $(TEST_SRC:tests/engine/%.c=$(BUILD)/tests/%) \
            $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/tests/%)
DEMO := $(BUILD)/bin/sop-demo
CLI_SRC := $(wildcard engine/cli/*.c)
CLI := $(if $(CLI_SRC),$(BUILD)/bin/sop)

# The PostgreSQL extension (pg_sop/, built with PGXS) and its suites, which
# run in plain builds only.
PG_CONFIG ?= /usr/bin/pg_config
PG_MAKE = $(MAKE) --no-print-directory -C pg_sop USE_PGXS=1 PG_CONFIG=$(PG_CONFIG)
SUDO = $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null || echo sudo)
PG_TESTS := $(if $(SANITIZE),,tests/pg/run_regress.sh tests/pg/test_interop.sh tests/pg/run_tap.sh)
PG_INSTALL_STEP = $(if $(SANITIZE),@echo "make: SANITIZE is set: the PostgreSQL suites run in plain make test only",@$(MAKE) --no-print-directory pg-install)

.PHONY: bench bench-bin all deps demo engine-demo test test-long lint format clean fuzz tsan pg pg-check pg-install pg-test install
all: $(LIB_A) $(LIB_SO) $(CLI)

$(BUILD)/obj/%.o: engine/src/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/fault/obj/%.o: engine/src/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -DSOP_FAULT_INJECTION $(CFLAGS) -c $< -o $@

$(LIB_A): $(OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(LIB_SO): $(OBJ)
	@mkdir -p $(@D)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,libsop.so.0 -o $@ $^ $(LDLIBS)

$(FLIB_A): $(FOBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/tests/t.o: tests/t.c tests/t.h
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -DSOP_FAULT_INJECTION -Itests $(CFLAGS) -c $< -o $@

$(BUILD)/tests/%: tests/engine/%.c $(BUILD)/tests/t.o $(FLIB_A)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -DSOP_FAULT_INJECTION -Itests $(CFLAGS) -o $@ $< $(BUILD)/tests/t.o \
	    $(FLIB_A) $(LDFLAGS) $(LDLIBS)

# A fuzz target replayed over its seed corpus (and random mutations of it).
$(BUILD)/tests/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(BUILD)/tests/t.o $(FLIB_A)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -DSOP_FAULT_INJECTION -DSOP_FUZZ_CORPUS='"tests/fuzz/corpus/$*"' -Itests \
	    $(CFLAGS) -Wno-missing-prototypes -o $@ $< tests/fuzz/replay.c $(BUILD)/tests/t.o \
	    $(FLIB_A) $(LDFLAGS) $(LDLIBS)

# Coverage-guided fuzzing with libFuzzer (clang): make fuzz, then e.g.
#   build/fuzz/fuzz_tuple -max_total_time=60 tests/fuzz/corpus/tuple
fuzz: $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(ENGINE_SRC)
	@mkdir -p $(@D)
	clang $(CPPFLAGS) -DSOP_FAULT_INJECTION -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined \
	    -o $@ $< $(ENGINE_SRC) $(LDLIBS)

$(BUILD)/bin/sop: $(CLI_SRC) $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $(CLI_SRC) $(LIB_A) $(LDFLAGS) $(LDLIBS)

$(DEMO): engine/examples/demo.c $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LIB_A) $(LDFLAGS) $(LDLIBS)

deps:
	@.ci/deps

# The benchmarks (bench/, docs/bench/): one harness over libsop and its peers.
# make bench BENCH_N=20000 BENCH_REPS=1 ...: bench/run.sh lists the settings.
export BENCH_N BENCH_REPS BENCH_W6_SECS BENCH_W7_SECS BENCH_CAP_S BENCH_DIR BENCH_SKIP_PG BENCH_PG_WARMUP
BENCH_PKGS := liblmdb-dev libsqlite3-dev librocksdb-dev gnuplot-nox
BENCH_SRC := $(wildcard bench/*.c)
build/bench/bench: $(BENCH_SRC) bench/bench.h build/lib/libsop.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -std=c11 -g -O2 $(WARN) -o $@ $(BENCH_SRC) build/lib/libsop.a \
	    -llmdb -lsqlite3 -lrocksdb $(LDLIBS)

bench-bin:
	@$(MAKE) --no-print-directory SANITIZE= build/lib/libsop.a build/bench/bench

bench:
	@.ci/deps $(BENCH_PKGS)
	@$(MAKE) --no-print-directory bench-bin pg-install
	@bench/run.sh

# The PostgreSQL demo: a temporary instance, pg_sop, 100,000 rows (tests/pg/demo.sh).
demo: deps
	@$(MAKE) --no-print-directory pg-install
	@tests/pg/demo.sh

# The engine-only demo: an in-memory B-tree (engine/examples/demo.c).
engine-demo: deps
	@$(MAKE) --no-print-directory $(DEMO)
	$(DEMO)

test: deps
	@$(MAKE) --no-print-directory $(TEST_BIN) $(LIB_A) $(LIB_SO) $(CLI)
	$(PG_INSTALL_STEP)
	@SOP_CLI=$(CURDIR)/$(CLI) tests/run $(TEST_BIN) $(wildcard tests/cli/test_*.sh) $(PG_TESTS)

# The extension always links the plain (unsanitized) library, whatever SANITIZE says.
pg-check:
	@[ -f pg_sop/Makefile ] || { echo "make: pg_sop/Makefile is missing: the pg_sop extension has not landed, nothing to build" >&2; exit 1; }
	@command -v $(PG_CONFIG) >/dev/null || { echo "make: $(PG_CONFIG) is missing: install postgresql-server-dev-15 (.ci/deps, or make deps)" >&2; exit 1; }

pg: pg-check
	@$(MAKE) --no-print-directory SANITIZE= build/lib/libsop.a
	$(PG_MAKE)

pg-install: pg
	$(SUDO) $(PG_MAKE) install

# make install: the extension into the local PostgreSQL 15 (as pg-install)
install: pg-install

pg-test: deps
	@$(MAKE) --no-print-directory pg-install SANITIZE= build/bin/sop
	@SOP_CLI=$(CURDIR)/build/bin/sop tests/run $(PG_TESTS)

# The threaded tests under ThreadSanitizer (build/san-tsan).
TSAN_TESTS := test_threads test_coord_redis
tsan: deps
	@$(MAKE) --no-print-directory SANITIZE=thread $(TSAN_TESTS:%=build/san-tsan/tests/%)
	@TSAN_OPTIONS=halt_on_error=1 tests/run $(TSAN_TESTS:%=build/san-tsan/tests/%)

test-long: deps
	@$(MAKE) --no-print-directory $(TEST_BIN) $(CLI)
	$(PG_INSTALL_STEP)
	@SOP_TEST_LONG=1 SOP_CLI=$(CURDIR)/$(CLI) tests/run $(TEST_BIN) $(wildcard tests/cli/test_*.sh) $(PG_TESTS)

lint: $(LIB_SO)
	@.ci/lint $(LIB_SO)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build
	[ ! -f pg_sop/Makefile ] || ! command -v $(PG_CONFIG) >/dev/null || $(PG_MAKE) clean

-include $(OBJ:.o=.d) $(FOBJ:.o=.d) $(TEST_BIN:=.d) $(BUILD)/tests/t.d
