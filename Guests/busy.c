/* busy: ring-3 busy work. Runs iterations=N rounds of an xorshift mix at CPL 3 and prints the
 * result and the TSC cycles it took; exits V = 0 when it really ran at CPL 3. */
#include "runtime/rt.h"

int main(const struct svmm_boot_info *info) {
    (void)info;
    uint64_t iterations = rt_cmdline_u64("iterations", 100000000);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    uint64_t start = rdtsc();
    for (uint64_t i = 0; i < iterations; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    uint64_t cycles = rdtsc() - start;
    rt_printf("busy: %lu iterations at cpl %u, result 0x%lx, %lu TSC cycles (%lu per iteration x100)\n",
              iterations, current_cpl(), x, cycles, iterations ? cycles * 100 / iterations : 0);
    return current_cpl() == 3 ? 0 : 1;
}
