# metac: one file, no recursive make. `make V=1` shows full commands.
#   make              static ./metac
#   make SANITIZE=1   dynamic ASan+UBSan build (objects under build/san)
#   make check        unit and integration tests (installs deps if missing)
#   make fuzz         every libFuzzer target for FUZZ_SECONDS each
#   make bench        side-by-side benchmarks

CC      ?= gcc
COMMA   := ,
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Wshadow -Wno-unused-parameter \
           -D_GNU_SOURCE -I. -I/usr/include/fuse3 -MMD -MP
LIBS    := -lsodium -lsqlite3 -lfuse3 -lopus -ljpeg -lz -lxcb-shm -lxcb-xtest -lxcb-damage \
           -lxcb-xfixes -lxcb -lXau -lXdmcp -lusb-1.0 -lseccomp -lpthread -lm

ifeq ($(SANITIZE),1)
O       := build/san
CFLAGS  += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
           -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
else
O       := build/rel
LDFLAGS += -static -Lbuild/nodl
CFLAGS  += -DMETAC_STATIC
STATIC_DEPS := build/nodl/libsqlite3.a build/nodl/libfuse3.a
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRC  := $(wildcard lib/*.c wire/*.c proto/*.c fs9p/*.c nbd/*.c vxlan/*.c rfb/*.c audio/*.c usbip/*.c svc/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(O)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(O)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SECONDS ?= 30

all: metac

metac: $(O)/metac
	$(Q)cp $< $@.tmp && mv -f $@.tmp $@

$(O)/metac: $(O)/metac.o $(O)/lib/nodl.o $(O)/libmetac.a $(STATIC_DEPS)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(O)/metac.o $(O)/lib/nodl.o $(O)/libmetac.a $(LIBS)

# Copies of Debian's libsqlite3.a and libfuse3.a whose dlopen family is
# renamed to lib/nodl.c's stubs: see there for why. (libfuse's modules
# come with its high-level API, which the archive drags in.)
build/nodl/lib%.a: $(shell $(CC) -print-file-name=libsqlite3.a) \
		   $(shell $(CC) -print-file-name=libfuse3.a)
	@mkdir -p $(@D)
	@echo "  OBJCOPY $@"
	$(Q)objcopy --redefine-sym dlopen=metac_nodl_dlopen \
		--redefine-sym dlsym=metac_nodl_dlsym \
		--redefine-sym dlclose=metac_nodl_dlclose \
		--redefine-sym dlerror=metac_nodl_dlerror \
		$(shell $(CC) -print-file-name=lib$*.a) $@

$(O)/libmetac.a: $(LIB_OBJ)
	@echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^

$(O)/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(O)/tests/%: tests/unit/%.c tests/unit/unit.h $(O)/libmetac.a $(STATIC_DEPS)
	@mkdir -p $(@D)
	@echo "  TEST    $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(O)/lib/nodl.o $(O)/libmetac.a $(LIBS)

unit: $(UNIT_BIN)

deps:
	$(Q)./contrib/install-deps.sh

# Tests run $(O)/metac, so that `make SANITIZE=1 check` tests the
# sanitized build and leaves the static ./metac alone.
# The fuzz targets are built too: tests/integration/fuzz_corpus.sh
# replays their seed corpora (crashes found once stay found).
check: deps
	$(Q)$(MAKE) --no-print-directory $(if $(SANITIZE),,metac) $(O)/metac unit fuzz-build
	$(Q)METAC=$(CURDIR)/$(O)/metac UNIT_DIR=$(CURDIR)/$(O)/tests FUZZ_DIR=$(CURDIR)/build/fuzz \
		./tests/run.sh

# libFuzzer targets: clang, always sanitized, linked against the sources directly.
# Not svc/: the applets there need metac.c's applet table (and main).
FUZZ_CFLAGS := -std=gnu11 -g -O1 -D_GNU_SOURCE -I. -I/usr/include/fuse3 \
               -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer
# The library is compiled once for every target (with coverage, without
# libFuzzer's main), each target then links it.
FUZZ_LIB_SRC := $(filter-out svc/%,$(LIB_SRC))
FUZZ_OBJ     := $(FUZZ_LIB_SRC:%.c=build/fuzz/obj/%.o)
build/fuzz/obj/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC/FUZZ $<"
	$(Q)clang $(subst fuzzer$(COMMA),fuzzer-no-link$(COMMA),$(FUZZ_CFLAGS)) -MMD -MP -c -o $@ $<

build/fuzz/libfuzz.a: $(FUZZ_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

build/fuzz/%: tests/fuzz/%.c build/fuzz/libfuzz.a
	@mkdir -p $(@D)
	@echo "  FUZZ    $@"
	$(Q)clang $(FUZZ_CFLAGS) -o $@ $< build/fuzz/libfuzz.a $(LIBS)

fuzz-build: $(FUZZ_BIN)

fuzz: deps fuzz-build
	$(Q)for f in $(FUZZ_BIN); do \
		n=$$(basename $$f); mkdir -p build/fuzz/corpus/$$n; \
		echo "== $$n ($(FUZZ_SECONDS)s)"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		    build/fuzz/corpus/$$n tests/fuzz/corpus/$$n || exit 1; \
	done

bench: deps metac
	$(Q)METAC=$(CURDIR)/metac ./tests/bench/run.sh

# The initramfs run --service=computevm boots (the daemon also makes it
# on first use): this binary as /init, and the installed cloud kernel's
# modules it needs.
vm-initrd: metac
	$(Q)./metac vm initrd -o build/computevm-initrd.img

# make install [DESTDIR=...] [PREFIX=/usr/local]: the binary, its applet
# links, the man page, bash completion and the systemd unit.
PREFIX ?= /usr/local
install: metac
	install -D -m 0755 metac $(DESTDIR)$(PREFIX)/bin/metac
	./metac --install $(DESTDIR)$(PREFIX)/bin
	install -D -m 0644 contrib/metac.1 $(DESTDIR)$(PREFIX)/share/man/man1/metac.1
	install -D -m 0644 contrib/metac.bash-completion \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/metac
	sed 's|/usr/local/bin/metac|$(PREFIX)/bin/metac|' contrib/metac.service | \
		install -D -m 0644 /dev/stdin $(DESTDIR)/etc/systemd/system/metac.service

clean:
	rm -rf build metac

.PHONY: all check unit deps fuzz fuzz-build bench clean vm-initrd install
.SECONDARY:

-include $(LIB_OBJ:.o=.d) $(O)/metac.d $(FUZZ_OBJ:.o=.d)
