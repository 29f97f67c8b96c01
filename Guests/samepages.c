/* samepages: fills guest memory with content that other VMs hold too, for the host's page
 * sharing (KSM) to merge, then rewrites part of it and checks every byte.
 *
 *   same=SIZE     pages whose content depends only on their index: identical in every VM
 *                 started with the same sizes (each page differs from the others)
 *   zero=SIZE     pages written with zeros
 *   unique=SIZE   pages whose content also depends on seed=N: this VM's own
 *   hold=SECONDS  wait (halted between timer ticks) before rewriting: the host merges meanwhile;
 *                 with a balloon, the host ends the wait early by setting a balloon target
 *   rewrite=SIZE  then give the first SIZE of the same pages content of this VM's own (seed)
 *   after=SECONDS wait again, then check every page and end (V = 0 passed, 0x60 a page differed)
 * Sizes take K/M/G suffixes. */
#include "runtime/virtio.h"

static uint32_t *pages; /* page numbers, in the pool's spare array */
static uint64_t same_count, zero_count, unique_count, rewritten, seed;

enum kind { SAME, ZERO, UNIQUE, REWRITTEN };

/* Word `w` of page `index` of a kind: a mix that makes every page and every VM's own pages distinct. */
static uint64_t word(enum kind kind, uint64_t index, unsigned w) {
    if (kind == ZERO) return 0;
    uint64_t value = (index + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)w * 0xC2B2AE3D27D4EB4Full;
    if (kind == UNIQUE || kind == REWRITTEN) value ^= (seed + 1) * 0x165667B19E3779F9ull ^ ((uint64_t)kind << 56);
    return value;
}

static void fill(uint64_t first, uint64_t count, enum kind kind) {
    for (uint64_t i = first; i < first + count; i++) {
        volatile uint64_t *words = (volatile uint64_t *)(uintptr_t)((uint64_t)pages[i] << 12);
        for (unsigned w = 0; w < 512; w++) words[w] = word(kind, i, w);
    }
}

/* Pages of [first, first + count) whose words are not what `kind` wrote. */
static uint64_t check(uint64_t first, uint64_t count, enum kind kind) {
    uint64_t bad = 0;
    for (uint64_t i = first; i < first + count; i++) {
        volatile uint64_t *words = (volatile uint64_t *)(uintptr_t)((uint64_t)pages[i] << 12);
        for (unsigned w = 0; w < 512; w++) {
            if (words[w] != word(kind, i, w)) { bad++; break; }
        }
    }
    return bad;
}

static uint64_t size_argument(const char *key) {
    char text[24];
    if (rt_cmdline_get(key, text, sizeof text) <= 0) return 0;
    uint64_t value = 0;
    const char *p = text;
    while (*p >= '0' && *p <= '9') value = value * 10 + (uint64_t)(*p++ - '0');
    if (*p == 'K' || *p == 'k') value <<= 10;
    else if (*p == 'M' || *p == 'm') value <<= 20;
    else if (*p == 'G' || *p == 'g') value <<= 30;
    return value >> 12;
}

int main(const struct svmm_boot_info *info) {
    rt_pages_init(info);
    if (info->flags & SVMM_BOOTINFO_FLAG_IRQCHIP) rt_timer_start(100);
    same_count = size_argument("same");
    zero_count = size_argument("zero");
    unique_count = size_argument("unique");
    rewritten = size_argument("rewrite");
    seed = rt_cmdline_u64("seed", 0);
    if (rewritten > same_count) rewritten = same_count;
    uint64_t total = same_count + zero_count + unique_count;
    if (total == 0 || total > rt_pages_free()) {
        rt_printf("samepages: %lu pages asked, %lu free\n", total, rt_pages_free());
        return 0x61;
    }
    pages = rt_pages_spare(1);
    for (uint64_t i = 0; i < total; i++) pages[i] = (uint32_t)(rt_page_alloc() >> 12);
    fill(0, same_count, SAME);
    fill(same_count, zero_count, ZERO);
    fill(same_count + zero_count, unique_count, UNIQUE);
    rt_printf("samepages: filled same %lu MiB, zero %lu MiB, unique %lu MiB (seed %lu)\n", same_count >> 8, zero_count >> 8,
              unique_count >> 8, seed);
    int balloon = rt_balloon_init(info) == 0;
    uint64_t hz = rt_tsc_hz(), hold = rt_cmdline_u64("hold", 0);
    uint64_t deadline = rdtsc() + (hold < 3600 ? hold : 3600) * hz;
    while (rdtsc() < deadline && !(balloon && rt_balloon.target)) {
        if (balloon) rt_balloon_poll();
        rt_sleep_ns(10000000);
    }
    if (balloon) rt_balloon_poll();
    uint64_t started = rdtsc();
    fill(0, rewritten, REWRITTEN);
    uint64_t ns = (rdtsc() - started) * 1000ull / (hz / 1000000ull ? hz / 1000000ull : 1);
    rt_printf("samepages: rewrote %lu MiB (%s) in %lu us, %lu ns a page\n", rewritten >> 8,
              balloon && rt_balloon.target ? "the host asked" : "hold elapsed", ns / 1000, rewritten ? ns / rewritten : 0);
    rt_sleep_ns(rt_cmdline_u64("after", 0) * 1000000000ull);
    uint64_t bad = check(0, rewritten, REWRITTEN) + check(rewritten, same_count - rewritten, SAME)
        + check(same_count, zero_count, ZERO) + check(same_count + zero_count, unique_count, UNIQUE);
    rt_printf("samepages: checked %lu MiB: %s (%lu pages differ)\n", total >> 8, bad ? "FAIL" : "ok", bad);
    return bad ? 0x60 : 0;
}
