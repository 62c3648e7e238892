# phx-c: Phoenix Channels in C.  One Makefile for the whole tree.
#
#   make            build the library, the launcher and the tests
#   make run        set up, build and run the example chat app (PORT=4000);
#                   NODES=3: a cluster of 3 nodes on PORT, PORT+1, PORT+2
#   make test       set up, build and run every test
#   make bench      set up, build and run the benchmarks
#   make bench-phoenix  the channels scenarios against phx-chat and a real
#                   Phoenix 1.7.24 node (built from /work/shared/phoenix-ref), ratios
#   make install    PREFIX=/usr/local: library, headers, pkg-config file
#   make fuzz       build the libFuzzer targets (fuzz/) with clang and run each
#                   for FUZZ_SECONDS (60) with its corpus; fails on any crash
#   make fuzz-build only build them (into build-fuzz/)
#   SANITIZER=address|thread   build into build-address/ or build-thread/

CC        ?= cc
SANITIZER ?=
PORT      ?= 4000
NODES     ?= 1
PREFIX    ?= /usr/local
BUILD     := build$(if $(SANITIZER),-$(SANITIZER))

CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -Wall -Wextra -Werror -pthread -fno-strict-aliasing
CPPFLAGS += -I. -D_GNU_SOURCE -MMD -MP
LDLIBS   += -lev -lnng -lmsgpackc -lhiredis -lcjson -lssl -lcrypto -lpthread -lm

ifeq ($(SANITIZER),address)
  CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address,undefined
else ifeq ($(SANITIZER),thread)
  CFLAGS  += -fsanitize=thread -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=thread
else ifneq ($(SANITIZER),)
  $(error SANITIZER must be address or thread)
endif

# Library: folders in dependency order (runtime <- cluster <- channels <- transports <- bin).
LIB_DIRS := runtime cluster channels transports bin
LIB_SRC  := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libphx.a

# Programs.
CHAT_SRC := $(wildcard examples/chat/*.c)
CHAT_OBJ := $(CHAT_SRC:%.c=$(BUILD)/%.o)
CHAT     := $(BUILD)/phx-chat
DEMO     := $(BUILD)/rt-demo

# Tests: every test/<dir>/test_*.c is one executable.
TEST_SRC := $(wildcard test/*/test_*.c)
TEST_BIN := $(TEST_SRC:%.c=$(BUILD)/%)
RT_TESTS := $(filter $(BUILD)/test/runtime/%,$(TEST_BIN))

# Benchmarks: every bench/*.c with a main is one executable; BENCH_PARTS are
# linked into the programs (and tests) that use them.
BENCH_PARTS := bench/lp_client.c
BENCH_PART_OBJ := $(BENCH_PARTS:%.c=$(BUILD)/%.o)
BENCH_SRC := $(filter-out $(BENCH_PARTS),$(wildcard bench/*.c))
BENCH_BIN := $(BENCH_SRC:%.c=$(BUILD)/%)

.PHONY: all lib run test test-unit test-runtime soak bench bench-phoenix install setup fmt clean fuzz fuzz-build
all: $(LIB) $(TEST_BIN) $(BENCH_BIN) $(if $(CHAT_SRC),$(CHAT)) $(DEMO)

lib: $(LIB)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(CHAT): $(CHAT_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(DEMO): $(BUILD)/examples/rt_demo.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/test/%: $(BUILD)/test/%.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# The long-poll client: loadgen's --transport longpoll, and its unit test.
$(BUILD)/bench/loadgen $(BUILD)/test/bench/test_lp_client: $(BUILD)/bench/lp_client.o

setup:
	@sh scripts/setup.sh build

run:
	@sh scripts/setup.sh build
	@$(MAKE) --no-print-directory all
	@if [ -z "$(CHAT_SRC)" ]; then exec $(DEMO); \
	elif [ "$(NODES)" = 1 ]; then exec $(CHAT) --port $(PORT); \
	else exec $(CHAT) cluster --nodes $(NODES) --port $(PORT); fi

# Unit tests of every folder, then the integration suites.
test:
	@sh scripts/setup.sh test
	@$(MAKE) --no-print-directory all
	@sh test/run.sh $(BUILD)

# Runtime tests only (CI runs them under ThreadSanitizer).
test-runtime: $(RT_TESTS)
	@sh test/run.sh $(BUILD) runtime

# The soak test (not in CI): SOAK_MINUTES (default 60) of mixed load on a
# 3-node cluster; results in results/soak/.  SANITIZER=address: ASan nodes.
soak:
	@sh scripts/setup.sh build
	@[ -d test/integration/node_modules ] || (cd test/integration && npm ci --no-audit --no-fund --loglevel=error)
	@$(MAKE) --no-print-directory $(CHAT)
	@SOAK_SANITIZER=$(SANITIZER) node test/soak/soak.js $(BUILD)

bench:
	@sh scripts/setup.sh bench
	@$(MAKE) --no-print-directory all
	@sh bench/run.sh $(BUILD)

bench-phoenix:
	@sh scripts/setup.sh bench-phoenix
	@$(MAKE) --no-print-directory all
	@sh bench/run.sh $(BUILD) phoenix

install: $(LIB)
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/phx
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/libphx.a
	for h in runtime/rt.h runtime/buf.h channels/channels.h channels/pubsub.h transports/transports.h transports/http.h cluster/cluster.h bin/launcher.h; do \
	  if [ -f $$h ]; then install -d $(DESTDIR)$(PREFIX)/include/phx/$$(dirname $$h); \
	  install -m 644 $$h $(DESTDIR)$(PREFIX)/include/phx/$$h; fi; done
	sed -e 's|@PREFIX@|$(PREFIX)|' scripts/phx.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/phx.pc

# Fuzzing (fuzz/README.md): every fuzz/fuzz_*.c is one libFuzzer target,
# linked with the library's sources compiled by clang with the same
# instrumentation, in build-fuzz/ (never the normal build).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_CFLAGS  := -O1 -g -std=gnu11 -Wall -Wextra -Werror -pthread -fno-strict-aliasing \
                -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
                -fno-sanitize-recover=undefined
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_SRC     := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN     := $(FUZZ_SRC:fuzz/%.c=$(FUZZ_BUILD)/%)

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/libphx.a: $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/fuzz/fuzz_%.o $(FUZZ_BUILD)/libphx.a
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined $^ $(LDLIBS) -o $@

# The targets' objects are kept (not intermediate files make would delete).
.SECONDARY: $(FUZZ_SRC:%.c=$(FUZZ_BUILD)/%.o)

fuzz-build:
	@sh scripts/setup.sh fuzz
	@$(MAKE) --no-print-directory $(FUZZ_BIN)

fuzz: fuzz-build
	@sh fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fmt:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-address build-thread build-fuzz

-include $(shell find $(BUILD) $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
