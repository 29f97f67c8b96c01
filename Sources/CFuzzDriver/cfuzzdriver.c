// libFuzzer's entry for programs that keep their own main (LLVMFuzzerRunDriver, in libFuzzer
// since LLVM 13). Declared weak: ordinary builds of swiftvmm-fuzz do not link libFuzzer, and there
// the symbol is null and the tool replays corpus files instead.
#include "cfuzzdriver.h"

extern int LLVMFuzzerRunDriver(int *argc, char ***argv, cfuzz_callback callback) __attribute__((weak));

int cfuzz_available(void) { return LLVMFuzzerRunDriver != 0; }

int cfuzz_run_driver(int *argc, char ***argv, cfuzz_callback callback) {
    if (!LLVMFuzzerRunDriver) return -1;
    return LLVMFuzzerRunDriver(argc, argv, callback);
}
