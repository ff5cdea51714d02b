# The MoE supernode runtime. Plain make, in the manner of NCCL:
#   make            release build into build/
#   make deps       install the Debian packages the project needs (as root), no-op if present
#   make run        deps + build + the main job on the simulated supernode
#   make test       deps + build + layer check + every test (doctest)
#   make bench      deps + build + every benchmark; writes build/bench.json
#   make check-layers   fail if a lower layer includes a higher one
#   make fuzz       build the protocol fuzzer (clang + libFuzzer) and run it FUZZ_SECONDS (20)
# Switches: DEBUG=1 (no optimisation, expensive asserts), ASAN=1 (address + UB sanitizers),
# TSAN=1 (thread sanitizer; the simulated HBM then maps a 1 GiB window per NPU, as TSAN's
# address space is smaller).
# Each variant builds in its own folder (build/, build/debug/, build/asan/).

SHELL := /bin/bash
.DEFAULT_GOAL := all

BUILD_ROOT := build
ifeq ($(ASAN),1)
  BUILD := $(BUILD_ROOT)/asan
  VARIANT_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
                   -fno-sanitize-recover=undefined -DMOE_ASSERT_LEVEL=2
  VARIANT_LDFLAGS := -fsanitize=address,undefined
else ifeq ($(TSAN),1)
  BUILD := $(BUILD_ROOT)/tsan
  VARIANT_FLAGS := -O1 -g -fsanitize=thread -DMOE_ASSERT_LEVEL=2
  VARIANT_LDFLAGS := -fsanitize=thread
  TEST_ENV := MOE_SIM_HBM_VA_WINDOW_BYTES=1073741824
else ifeq ($(DEBUG),1)
  BUILD := $(BUILD_ROOT)/debug
  VARIANT_FLAGS := -O0 -g3 -DMOE_ASSERT_LEVEL=2
else
  BUILD := $(BUILD_ROOT)
  VARIANT_FLAGS := -O2 -g1 -DNDEBUG
endif

CXX ?= g++
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
OBJ := $(BUILD)/obj
GEN := $(BUILD)/gen
BIN := $(BUILD)/bin

CXXFLAGS := -std=c++20 -pthread -Wall -Wextra -Wno-unused-parameter -Werror=return-type \
            -I. -I$(GEN) $(VARIANT_FLAGS) $(EXTRA_CXXFLAGS)
DEPFLAGS = -MMD -MP
LDFLAGS := -pthread $(VARIANT_LDFLAGS)
LDLIBS := -lflatbuffers -lhwloc -lmimalloc -lopenblas -lm

# ---- sources: every .cpp under a layer folder is product code ----
LIB_DIRS := runtime memory interconnect models firmware-sim tools/lib
LIB_SRCS := $(shell find $(LIB_DIRS) -name '*.cpp' 2>/dev/null | sort)
TEST_SRCS := $(shell find tests -name '*.cpp' 2>/dev/null | sort)
FBS := $(shell find $(LIB_DIRS) tools -name '*.fbs' 2>/dev/null | sort)
GEN_HDRS := $(patsubst %.fbs,$(GEN)/%_generated.h,$(FBS)) $(patsubst %.fbs,$(GEN)/%_fbs_text.h,$(FBS))

LIB_OBJS := $(patsubst %.cpp,$(OBJ)/%.o,$(LIB_SRCS))
TEST_OBJS := $(patsubst %.cpp,$(OBJ)/%.o,$(TEST_SRCS))

# Each tool binary: name -> folder of its sources.
TOOLS := moe:tools/moe moe-bench:tools/bench moe-bringup:tools/bringup moed:tools/moed
tool_name = $(word 1,$(subst :, ,$(1)))
tool_dir = $(word 2,$(subst :, ,$(1)))
TOOL_BINS := $(foreach t,$(TOOLS),$(BIN)/$(call tool_name,$(t)))
TEST_BIN := $(BIN)/moe-tests

.PHONY: all deps run test bench check-layers clean help fuzz
all: $(TOOL_BINS) $(TEST_BIN)

help:
	@sed -n '1,11p' Makefile | sed 's/^# \{0,1\}//'

deps:
	@tools/install-deps.sh

.SECONDARY: $(GEN_HDRS)

$(GEN)/%_generated.h: %.fbs
	@mkdir -p $(dir $@)
	flatc --cpp --scoped-enums -o $(dir $@) $<

# The schema's own text, for parsing JSON descriptions at run time.
$(GEN)/%_fbs_text.h: %.fbs
	@mkdir -p $(dir $@)
	@{ printf 'R"MOEFBS('; cat $<; printf ')MOEFBS"\n'; } > $@

$(OBJ)/%.o: %.cpp | $(GEN_HDRS)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(DEPFLAGS) -c $< -o $@

define tool_rule
$(BIN)/$(call tool_name,$(1)): $(patsubst %.cpp,$(OBJ)/%.o,$(shell find $(call tool_dir,$(1)) -name '*.cpp' 2>/dev/null | sort)) $(LIB_OBJS)
	@mkdir -p $$(dir $$@)
	$$(CXX) $$(LDFLAGS) $$^ $$(LDLIBS) -o $$@
endef
$(foreach t,$(TOOLS),$(eval $(call tool_rule,$(t))))

$(TEST_BIN): $(TEST_OBJS) $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

check-layers:
	@tools/check-layers.sh .

run: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all
	$(BIN)/moe run

# Tests find their helper scripts and binaries through MOE_SOURCE_ROOT / MOE_BIN_DIR.
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@tools/check-layers.sh .
	@$(fuzz_in_test)
	$(TEST_ENV) MOE_SOURCE_ROOT=$(CURDIR) MOE_BIN_DIR=$(CURDIR)/$(BIN) $(TEST_BIN) $(TEST_ARGS)

bench: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all
	$(BIN)/moe-bench --json $(BUILD)/bench.json $(BENCH_ARGS)

clean:
	rm -rf $(BUILD_ROOT)

# ---- fuzzing: the protocol frame decoder under libFuzzer (Debian: clang, libclang-rt-dev) ----
# `make fuzz` builds build/fuzz/fuzz_frame (tools/fuzz/) with clang, writes a seed corpus of
# valid frames and runs it FUZZ_SECONDS; `make test` runs it FUZZ_TEST_SECONDS (seeded) when
# clang with libFuzzer is present, and says it skipped otherwise (0 skips it always).
FUZZ_CXX ?= clang++
FUZZ_SECONDS ?= 20
FUZZ_TEST_SECONDS ?= 10
FUZZ_DIR := $(BUILD_ROOT)/fuzz
FUZZ_FLAGS := -std=c++20 -O1 -g -I. -I$(GEN) -fsanitize=address,undefined \
              -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_LIB_OBJS := $(patsubst %.cpp,$(FUZZ_DIR)/obj/%.o,$(sort $(wildcard runtime/base/*.cpp tools/lib/protocol/*.cpp)))
# Evaluated only when used: "yes" when FUZZ_CXX links a libFuzzer target.
FUZZ_OK = $(shell printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' | \
            $(FUZZ_CXX) -x c++ -fsanitize=fuzzer - -o /dev/null >/dev/null 2>&1 && echo yes)

$(FUZZ_DIR)/obj/%.o: %.cpp | $(GEN_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_DIR)/fuzz_frame: $(FUZZ_DIR)/obj/tools/fuzz/fuzz_frame.o $(FUZZ_LIB_OBJS)
	$(FUZZ_CXX) -fsanitize=fuzzer,address,undefined $^ -lflatbuffers -pthread -o $@

$(FUZZ_DIR)/fuzz_corpus: $(FUZZ_DIR)/obj/tools/fuzz/fuzz_corpus.o $(FUZZ_LIB_OBJS)
	$(FUZZ_CXX) -fsanitize=fuzzer-no-link,address,undefined $^ -lflatbuffers -pthread -o $@

fuzz: deps
	@[ "$(FUZZ_OK)" = yes ] || { echo "make fuzz: $(FUZZ_CXX) cannot link a libFuzzer target (Debian: apt-get install clang libclang-rt-dev)" >&2; exit 1; }
	@$(MAKE) --no-print-directory -j$(JOBS) $(FUZZ_DIR)/fuzz_frame $(FUZZ_DIR)/fuzz_corpus
	@rm -rf $(FUZZ_DIR)/seeds && mkdir -p $(FUZZ_DIR)/seeds $(FUZZ_DIR)/corpus
	$(FUZZ_DIR)/fuzz_corpus $(FUZZ_DIR)/seeds
	$(FUZZ_DIR)/fuzz_frame -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_ARGS) $(FUZZ_DIR)/corpus $(FUZZ_DIR)/seeds

define fuzz_in_test
if [ "$(FUZZ_TEST_SECONDS)" = 0 ]; then echo "make test: protocol fuzzer skipped (FUZZ_TEST_SECONDS=0)"; \
elif [ "$(FUZZ_OK)" != yes ]; then echo "make test: protocol fuzzer skipped: $(FUZZ_CXX) with libFuzzer not found (Debian: clang libclang-rt-dev)"; \
else echo "make test: protocol fuzzer, $(FUZZ_TEST_SECONDS) s (log: $(FUZZ_DIR)/test.log)"; mkdir -p $(FUZZ_DIR); \
  if $(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_TEST_SECONDS) FUZZ_ARGS=-seed=1 > $(FUZZ_DIR)/test.log 2>&1; \
  then grep -E '^Done [0-9]+ runs' $(FUZZ_DIR)/test.log || true; \
  else tail -n 40 $(FUZZ_DIR)/test.log; echo "make test: the protocol fuzzer failed (artifacts in $(FUZZ_DIR)/)"; exit 1; fi; fi
endef

-include $(shell find $(OBJ) $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)
