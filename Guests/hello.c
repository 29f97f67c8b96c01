/* hello: prints a greeting and the command line from CPL 3, then exits with status 1 (V = 0),
 * or V = exit=N from the command line. */
#include "runtime/rt.h"

int main(const struct svmm_boot_info *info) {
    rt_printf("Hello from a swiftvmm guest! cpl=%u ram=%lu MiB cpus=%u\n",
              current_cpl(), info->ram_size >> 20, info->cpu_count);
    if (info->cmdline_len) rt_printf("cmdline: %s\n", rt_cmdline());
    return (int)rt_cmdline_u64("exit", 0);
}
