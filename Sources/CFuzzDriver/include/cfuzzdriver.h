#ifndef CFUZZDRIVER_H
#define CFUZZDRIVER_H
#include <stddef.h>
#include <stdint.h>

/// One fuzz input: returns 0 (libFuzzer's contract).
typedef int (*cfuzz_callback)(const uint8_t *data, size_t size);

/// Whether libFuzzer is linked in (the `make fuzz` build: -sanitize=fuzzer).
int cfuzz_available(void);

/// Hands the command line to libFuzzer, which calls `callback` for each input; returns its exit
/// status, or -1 when libFuzzer is not linked in.
int cfuzz_run_driver(int *argc, char ***argv, cfuzz_callback callback);

#endif
