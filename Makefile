# swiftvmm: `make run` boots the hello guest; `make test` runs unit and integration tests.
SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
CC := gcc
AS := as
LD := ld
OBJCOPY := objcopy

OUT := out/guests
BENCH_EXITS ?= 200000

GUEST_CFLAGS := -std=gnu11 -O2 -g -ffreestanding -fno-stack-protector -fno-pic -fno-pie \
	-mno-red-zone -mgeneral-regs-only -fno-asynchronous-unwind-tables -fno-builtin \
	-Wall -Wextra -Werror -IGuests
GUEST_LDFLAGS := -nostdlib -Wl,--no-warn-rwx-segments -static -no-pie -Wl,-T,Guests/runtime/guest.ld -Wl,--build-id=none \
	-Wl,-z,max-page-size=4096 -Wl,-z,noexecstack
RUNTIME_OBJS := $(OUT)/runtime/start.o $(OUT)/runtime/rt.o $(OUT)/runtime/pages.o $(OUT)/runtime/virtio.o $(OUT)/runtime/blk.o $(OUT)/runtime/net.o $(OUT)/runtime/share.o
C_GUESTS := hello envcheck busy echo smp rtc timer ticks seq memhog badballoon cpuburn hostile soak samepages stealtime dirty fshostile disk net
# Programs written against POSIX (Guests/libc/posix.h), built as guests over the guest C library
# (files through --share) and as native Linux programs from the same source.
LIBC_PROGRAMS := postmark fscheck
NATIVE := out/native
GUESTS := $(foreach g,$(C_GUESTS),$(OUT)/$(g).elf $(OUT)/$(g).bin) \
	$(OUT)/realmode.bin $(OUT)/triplefault.elf $(OUT)/portloop.bin $(OUT)/debugme.elf $(OUT)/kmxcsr.elf \
	$(OUT)/mbcheck.elf $(OUT)/mbsmp.elf $(OUT)/mbcount.elf $(OUT)/mbpc.elf $(OUT)/mb64.elf $(OUT)/mbkludge.bin \
	$(foreach p,$(LIBC_PROGRAMS),$(OUT)/$(p).elf $(NATIVE)/$(p))

DEBUG_BIN = $(shell $(SWIFT) build --show-bin-path)/swiftvmm
# Release builds are fully static executables (the Swift runtime and glibc linked in): nothing for
# ld.so to relocate at start, and only the code a run touches is resident. Against the runtime
# alone linked statically, `run hello.elf` went from 10.6 to 9.4 ms of CPU and the resident
# overhead from 10.2 to 7.0 MiB (docs/benchmarks.md).
# The release link (lld) places the code `run` executes at start-up first, in the order it runs
# (tools/startup.order, made by `make startup-order`): on Linux a file-backed page fault maps the
# 64 KiB around it, so start-up code spread over 13 MiB of text kept ~100 such windows resident.
# Ordered, the overhead of `run hello.elf` went from 8.8 to 6.0 MiB (docs/benchmarks.md).
STARTUP_ORDER = $(CURDIR)/tools/startup.order
RELEASE_FLAGS = -c release -Xswiftc -static-executable -Xswiftc -use-ld=lld \
	-Xlinker --symbol-ordering-file=$(STARTUP_ORDER) -Xlinker --no-warn-symbol-ordering
RELEASE_BIN = $(shell $(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)/swiftvmm

.PHONY: all build release startup-order guests run test unit-test bench bench-linux fuzz sanitize soak clean linux-stock linux-small test-linux setup setup-test
all: build guests

# What a fresh machine lacks (tools/setup.sh: apt-get as root, else the command to run).
setup:
	@tools/setup.sh run
setup-test:
	@tools/setup.sh test

guests: $(GUESTS)

$(OUT)/runtime/%.o: Guests/runtime/%.c Guests/runtime/rt.h Guests/runtime/virtio.h Guests/runtime/blk.h Guests/runtime/net.h Guests/runtime/share.h Guests/runtime/abi.h | $(OUT)/runtime
	$(CC) $(GUEST_CFLAGS) -c $< -o $@
$(OUT)/runtime/%.o: Guests/runtime/%.S | $(OUT)/runtime
	$(CC) $(GUEST_CFLAGS) -c $< -o $@
$(OUT)/%.o: Guests/%.c Guests/runtime/rt.h Guests/runtime/virtio.h Guests/runtime/blk.h Guests/runtime/net.h Guests/runtime/abi.h | $(OUT)
	$(CC) $(GUEST_CFLAGS) -c $< -o $@
$(OUT)/%.elf: $(OUT)/%.o $(RUNTIME_OBJS) Guests/runtime/guest.ld
	$(CC) $(GUEST_LDFLAGS) $< $(RUNTIME_OBJS) -o $@
$(OUT)/libc/libc.o: Guests/libc/libc.c Guests/libc/libc.h Guests/runtime/rt.h Guests/runtime/share.h Guests/runtime/abi.h | $(OUT)/libc
	$(CC) $(GUEST_CFLAGS) -c $< -o $@
$(OUT)/libc/%.o: Guests/postmark/%.c Guests/libc/libc.h Guests/libc/posix.h Guests/runtime/abi.h | $(OUT)/libc
	$(CC) $(GUEST_CFLAGS) -DSVMM_GUEST -c $< -o $@
$(foreach p,$(LIBC_PROGRAMS),$(OUT)/$(p).elf): $(OUT)/%.elf: $(OUT)/libc/%.o $(OUT)/libc/libc.o $(RUNTIME_OBJS) Guests/runtime/guest.ld
	$(CC) $(GUEST_LDFLAGS) $< $(OUT)/libc/libc.o $(RUNTIME_OBJS) -o $@
$(NATIVE)/%: Guests/postmark/%.c Guests/libc/posix.h | $(NATIVE)
	$(CC) -std=gnu11 -O2 -Wall -Wextra -Werror -IGuests $< -o $@
$(OUT)/triplefault.elf: Guests/triplefault.S Guests/runtime/guest.ld | $(OUT)
	$(CC) $(GUEST_CFLAGS) -c $< -o $(OUT)/triplefault.o
	$(CC) $(GUEST_LDFLAGS) $(OUT)/triplefault.o -o $@
# Kernel mode only, no runtime: the debugger's and gdb stub's test guest.
$(OUT)/debugme.elf: Guests/debugme.c Guests/runtime/abi.h Guests/runtime/kernel.h Guests/runtime/guest.ld | $(OUT)
	$(CC) $(GUEST_CFLAGS) -O1 -c $< -o $(OUT)/debugme.o
	$(CC) $(GUEST_LDFLAGS) $(OUT)/debugme.o -o $@
# Kernel mode only: ldmxcsr/stmxcsr at CPL 0 (the PVM compatibility layer's test guest).
$(OUT)/kmxcsr.elf: Guests/kmxcsr.c Guests/runtime/abi.h Guests/runtime/kernel.h Guests/runtime/guest.ld | $(OUT)
	$(CC) $(filter-out -mgeneral-regs-only,$(GUEST_CFLAGS)) -mno-sse2 -c $< -o $(OUT)/kmxcsr.o
	$(CC) $(GUEST_LDFLAGS) $(OUT)/kmxcsr.o -o $@
# Multiboot test kernels: 32-bit code built without a 32-bit libc (freestanding, linked by ld).
# Address 0 is ordinary RAM to these kernels (the SMP trampoline goes there).
MB_CFLAGS := -m32 -std=gnu11 -O2 -ffreestanding -fno-stack-protector -fno-pic -fno-pie -mno-sse -mno-mmx \
	-fno-delete-null-pointer-checks --param=min-pagesize=0 \
	-fno-asynchronous-unwind-tables -fno-builtin -Wall -Wextra -Werror -IGuests
MB_RUNTIME := $(OUT)/multiboot/mbentry.o $(OUT)/multiboot/mbrt.o
$(OUT)/multiboot/%.o: Guests/multiboot/%.c Guests/multiboot/mbrt.h Guests/runtime/abi.h | $(OUT)/multiboot
	$(CC) $(MB_CFLAGS) -c $< -o $@
$(OUT)/multiboot/%.o: Guests/multiboot/%.S | $(OUT)/multiboot
	$(CC) $(MB_CFLAGS) -c $< -o $@
$(OUT)/mbcheck.elf $(OUT)/mbsmp.elf $(OUT)/mbcount.elf $(OUT)/mbpc.elf: $(OUT)/%.elf: $(OUT)/multiboot/%.o $(MB_RUNTIME) Guests/runtime/guest.ld
	$(LD) -m elf_i386 -T Guests/runtime/guest.ld -z max-page-size=4096 --no-warn-rwx-segments $(MB_RUNTIME) $< -o $@
$(OUT)/mb64.elf: Guests/multiboot/mb64.S Guests/runtime/guest.ld | $(OUT)/multiboot
	$(CC) -c $< -o $(OUT)/multiboot/mb64.o
	$(LD) -m elf_x86_64 -T Guests/runtime/guest.ld -z max-page-size=4096 --no-warn-rwx-segments $(OUT)/multiboot/mb64.o -o $@
$(OUT)/mbkludge.bin: Guests/multiboot/mbkludge.S | $(OUT)/multiboot
	$(CC) -m32 -c $< -o $(OUT)/multiboot/mbkludge.o
	$(LD) -m elf_i386 -Ttext 0x100000 --oformat binary $(OUT)/multiboot/mbkludge.o -o $@
$(OUT)/%.bin: $(OUT)/%.elf
	$(OBJCOPY) -O binary $< $@
# 16-bit real-mode flat binaries, position-independent, linked at 0.
$(OUT)/realmode.bin: Guests/realmode.S | $(OUT)
	$(AS) --32 $< -o $(OUT)/realmode.o
	$(LD) -m elf_i386 -Ttext 0 --oformat binary $(OUT)/realmode.o -o $@
$(OUT)/portloop.bin: Guests/bench/portloop.S Makefile | $(OUT)
	$(AS) --32 --defsym N=$(BENCH_EXITS) $< -o $(OUT)/portloop.o
	$(LD) -m elf_i386 -Ttext 0 --oformat binary $(OUT)/portloop.o -o $@
$(OUT) $(OUT)/runtime $(OUT)/multiboot $(OUT)/libc $(NATIVE):
	mkdir -p $@

build:
	$(SWIFT) build

release:
	@# SwiftPM does not see the order file change; relink when it is newer than the binary.
	@# (find compares to the nanosecond; the shell's -nt only to the second)
	@if [ -e $(RELEASE_BIN) ] && [ -n "$$(find $(STARTUP_ORDER) -newer $(RELEASE_BIN))" ]; then rm -f $(RELEASE_BIN); fi
	$(SWIFT) build $(RELEASE_FLAGS)

# Retraces start-up and rewrites tools/startup.order (minutes: it single-steps the VMM).
startup-order: setup
	tools/text-order.sh

# Boots the default guest. Its main() returns 0, which the runtime reports through the
# debug-exit port as status (0 << 1) | 1 = 1: the "passed" status of QEMU-style test kernels.
run: setup
	@$(MAKE) --no-print-directory build guests
	@$(DEBUG_BIN) run $(OUT)/hello.elf --cmdline "$(or $(CMDLINE),from make run)"; \
	status=$$?; if [ $$status -ne 1 ]; then echo "hello guest ended with status $$status (expected 1)"; exit 1; fi

unit-test:
	$(SWIFT) test --skip IntegrationTests --skip HostScenarioTests --skip LinuxGuestTests

# Tests that measure time (the timer guest) or the CPU time and memory of many VMs (the host
# scenarios) run in phases of their own, after the rest, so parallel tests cannot distort them.
TEST_ENV = SWIFTVMM_BIN=$(DEBUG_BIN) SWIFTVMM_GUESTS=$(CURDIR)/$(OUT)
test: setup-test
	@$(MAKE) --no-print-directory build guests
	$(TEST_ENV) $(SWIFT) test --skip HostScenarioTests --skip TimingSensitiveTests --skip LinuxGuestTests
	$(TEST_ENV) $(SWIFT) test --filter TimingSensitiveTests
	$(TEST_ENV) $(SWIFT) test --filter HostScenarioTests

# Linux guests (docs/linux.md): Debian's cloud kernel with a busybox initramfs, and our small
# kernel built from Debian's linux-source (cached in ~/.cache/swiftvmm, rebuilt when
# Guests/linux/small.config changes). make test-linux boots them; it takes tens of minutes on PVM.
LINUX_OUT := out/linux
linux-stock:
	tools/linux-stock.sh $(LINUX_OUT)/stock
linux-small:
	tools/linux-small.sh $(LINUX_OUT)/small
test-linux: build linux-stock linux-small
	SWIFTVMM_BIN=$(DEBUG_BIN) SWIFTVMM_LINUX=$(CURDIR)/$(LINUX_OUT) $(SWIFT) test --filter LinuxGuestTests

# libFuzzer campaigns over every fuzz target (tools/fuzz.sh; FUZZ_RUNS, FUZZ_SECONDS, FUZZ_JOBS,
# FUZZ_TARGETS); not part of make test, which replays the committed corpora instead.
fuzz:
	@tools/fuzz.sh

# 8 VMs for 10 minutes: byte-exact serial output, flat RSS, no descriptor or thread growth (tools/soak.sh).
soak: release guests
	SWIFTVMM_BIN=$(RELEASE_BIN) SWIFTVMM_GUESTS=$(CURDIR)/$(OUT) tools/soak.sh

# Thread sanitizer over the integration tests, address sanitizer over the unit tests (tools/sanitize.sh).
sanitize: setup-test guests
	@tools/sanitize.sh

bench: release guests
	SWIFTVMM_BIN=$(RELEASE_BIN) SWIFTVMM_GUESTS=$(CURDIR)/$(OUT) BENCH_EXITS=$(BENCH_EXITS) bench/run.sh

# Linux boot times and the VMM's memory while Linux runs (over ten minutes on PVM; seconds on
# VT-x/AMD-V). BENCH_LINUX=small or stock runs one of them.
bench-linux: release linux-stock linux-small
	bench/linux.py $(RELEASE_BIN) $(CURDIR)/$(LINUX_OUT) $(BENCH_LINUX)

clean:
	rm -rf out .build
