#!/bin/bash
# make sanitize: the thread sanitizer over the VMM as the integration tests drive it (multi-vCPU,
# pause/resume, the debugger and gdb stub, control clients, host mode), then the address
# sanitizer over the unit tests in-process. A report fails the run: TSan ends the VMM with status
# 66, which no test expects, and prints the report in the failing test's stderr.
set -eu
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}
GUESTS=$PWD/out/guests
echo "== thread sanitizer: building .build/tsan"
"$SWIFT" build --scratch-path .build/tsan --sanitize=thread --build-tests
# The sanitizer runtimes make calls of their own that no seccomp allow-list has.
SWIFTVMM_BIN=$PWD/.build/tsan/debug/swiftvmm SWIFTVMM_GUESTS=$GUESTS SWIFTVMM_NO_SECCOMP=1 \
TSAN_OPTIONS="exitcode=66 halt_on_error=0 second_deadlock_stack=1" \
    "$SWIFT" test --scratch-path .build/tsan --sanitize=thread --skip-build \
    --filter 'IntegrationTests|VMMTests' --skip SeccompTests
echo "== address sanitizer: the unit tests"
"$SWIFT" build --scratch-path .build/asan --sanitize=address --build-tests
# The seccomp violation test's child allows only write and exit_group: ASan's runtime makes calls
# of its own in the SIGSYS handler there, and the kernel then kills the child outright.
ASAN_OPTIONS="detect_leaks=0" "$SWIFT" test --scratch-path .build/asan --sanitize=address --skip-build \
    --skip IntegrationTests --skip HostScenarioTests --skip LinuxGuestTests --skip TimingSensitiveTests \
    --skip aViolationEndsTheProcessWithOneLineAndStatus159
echo "== sanitize: clean"
