# pg_sop / libsop top-level build.
#
#   make                 build/lib/libsop.a, build/lib/libsop.so
#   make demo            install missing packages, build, run the demo
#   make test            install missing packages, build, run every test
#   make SANITIZE=address,undefined test     the same under ASan/UBSan (build/san)
#   make tsan            the threaded tests under ThreadSanitizer (build/san-tsan)
#   make lint            formatting, layering, exported symbols, banned calls, cppcheck
#   make test-long       the test suite with the long (documented) sizes
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

.PHONY: all deps demo test test-long lint format clean fuzz tsan
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

demo: deps
	@$(MAKE) --no-print-directory $(DEMO)
	$(DEMO)

test: deps
	@$(MAKE) --no-print-directory $(TEST_BIN) $(LIB_A) $(LIB_SO) $(CLI)
	@SOP_CLI=$(CURDIR)/$(CLI) tests/run $(TEST_BIN) $(wildcard tests/cli/test_*.sh)

# The threaded tests under ThreadSanitizer (build/san-tsan).
TSAN_TESTS := test_threads test_coord_redis
tsan: deps
	@$(MAKE) --no-print-directory SANITIZE=thread $(TSAN_TESTS:%=build/san-tsan/tests/%)
	@TSAN_OPTIONS=halt_on_error=1 tests/run $(TSAN_TESTS:%=build/san-tsan/tests/%)

test-long: deps
	@$(MAKE) --no-print-directory $(TEST_BIN) $(CLI)
	@SOP_TEST_LONG=1 SOP_CLI=$(CURDIR)/$(CLI) tests/run $(TEST_BIN) $(wildcard tests/cli/test_*.sh)

lint: $(LIB_SO)
	@.ci/lint $(LIB_SO)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(OBJ:.o=.d) $(FOBJ:.o=.d) $(TEST_BIN:=.d) $(BUILD)/tests/t.d
