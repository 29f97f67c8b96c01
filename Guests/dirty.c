/* dirty: writes a working set at a steady rate and streams what it did, so a snapshot or a
 * migration can be checked to continue exactly. Every step writes one 4 KiB page of the working
 * set, chosen and filled from a xorshift stream, and folds (step, page, value) into a running
 * checksum; every `every` steps it prints "seq=N sum=HEX". The bytes printed depend only on the
 * command line, never on timing: an interrupted-and-restored run prints exactly what an
 * uninterrupted one does. At the end it checksums the whole working set ("ram=HEX"), so RAM that
 * came back wrong is seen too.
 *   wss=SIZE     working set (default 16M), taken from the page pool
 *   rate=SIZE    bytes dirtied per second (default 4M; 0 = as fast as it can)
 *   steps=N      pages written in all (default 4096)
 *   every=N      steps between lines (default 256)
 *   balloon=1    first let the balloon reach the host's target (--balloon-target) and say so
 *   hold=1       after the last line, wait (halted) until the host ends the VM
 *   fill=1       first write every page of the working set once (all of it non-zero)
 * With more than one vCPU, vCPU 1 runs a stream of its own over the second half of the working
 * set (its checksum printed at the end as "sum1=HEX"); vCPU 0 prints. Exit V = 0, or 0x30 when
 * the working set does not fit. */
#include "runtime/rt.h"
#include "runtime/virtio.h"

struct stream {
    uint64_t state, sum, done;
    uint32_t *pages; /* page numbers (address >> 12) of this stream's part of the working set */
    uint64_t count;
};

static uint32_t *pages;
static uint64_t page_count;
static uint64_t steps, every, rate;
static struct stream second;
static volatile uint32_t go, second_done;

static uint64_t next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static uint64_t mix(uint64_t sum, uint64_t value) { return (sum ^ value) * 0x100000001b3ull + (sum >> 29); }

/* One step: a page of the stream's part, filled with words derived from one random value. */
static void step(struct stream *s) {
    uint64_t r = next(&s->state);
    uint64_t index = r % s->count;
    volatile uint64_t *words = (volatile uint64_t *)(uintptr_t)((uint64_t)s->pages[index] << 12);
    for (unsigned w = 0; w < 512; w++) words[w] = r ^ ((uint64_t)w * 0x9e3779b97f4a7c15ull) ^ s->done;
    s->sum = mix(mix(mix(s->sum, s->done), index), r);
    s->done++;
}

/* Waits until `done` steps are due at `rate` bytes a second from `start` (TSC ticks). */
static void pace(uint64_t start, uint64_t done, uint64_t hz) {
    if (!rate) return;
    uint64_t bytes = done * 4096;
    uint64_t due = start + bytes / rate * hz + bytes % rate * hz / rate;
    while (rdtsc() < due) rt_sleep_ns(5000000);
}

void ap_main(const struct svmm_boot_info *info, unsigned cpu) {
    (void)info;
    if (cpu != 1) for (;;) rt_wait_for_interrupt();
    while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE)) cpu_relax();
    while (second.done < steps) step(&second);
    __atomic_store_n(&second_done, 1, __ATOMIC_RELEASE);
    for (;;) rt_wait_for_interrupt();
}

int main(const struct svmm_boot_info *info) {
    uint64_t wss = rt_cmdline_u64("wss", 16 << 20);
    rate = rt_cmdline_u64("rate", 4 << 20);
    steps = rt_cmdline_u64("steps", 4096);
    every = rt_cmdline_u64("every", 256);
    if (!every) every = 1;
    rt_pages_init(info);
    if (info->flags & SVMM_BOOTINFO_FLAG_IRQCHIP) rt_timer_start(100);
    if (rt_cmdline_u64("balloon", 0) && rt_balloon_init(info) == 0) {
        /* The target is the host's; the guest waits for it (bounded), so the output never
         * depends on how fast the host asked. */
        for (unsigned tries = 0; tries < 1000 && (rt_balloon.target == 0 || rt_balloon.pages != rt_balloon.target); tries++) {
            rt_balloon_poll();
            rt_sleep_ns(10000000);
        }
        rt_printf("dirty: balloon holds %lu MiB\n", rt_balloon.pages >> 8);
    }
    page_count = wss >> 12;
    pages = rt_pages_spare(1);
    for (uint64_t i = 0; i < page_count; i++) {
        uint64_t page = rt_page_alloc();
        if (!page) {
            rt_printf("dirty: only %lu of %lu pages free\n", i, page_count);
            return 0x30;
        }
        pages[i] = (uint32_t)(page >> 12);
    }
    uint32_t cpus = info->cpu_count > 1 && rt_cpus_online > 1 ? 2 : 1;
    struct stream first = { .state = 0x2545f4914f6cdd1dull, .pages = pages, .count = cpus == 2 ? page_count / 2 : page_count };
    if (cpus == 2) {
        second = (struct stream){ .state = 0x9e3779b97f4a7c15ull, .pages = pages + page_count / 2, .count = page_count - page_count / 2 };
        __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
    }
    if (rt_cmdline_u64("fill", 0))
        for (uint64_t i = 0; i < page_count; i++) {
            volatile uint64_t *words = (volatile uint64_t *)(uintptr_t)((uint64_t)pages[i] << 12);
            for (unsigned w = 0; w < 512; w++) words[w] = i * 512 + w + 1;
        }
    rt_printf("dirty: %lu MiB working set, %lu steps, %u stream(s)\n", wss >> 20, steps, cpus);
    uint64_t hz = rt_tsc_hz(), start = rdtsc();
    while (first.done < steps) {
        step(&first);
        if (first.done % every == 0) rt_printf("seq=%lu sum=%016lx\n", first.done / every, first.sum);
        pace(start, first.done, hz);
    }
    while (cpus == 2 && !__atomic_load_n(&second_done, __ATOMIC_ACQUIRE)) rt_sleep_ns(1000000);
    uint64_t ram = 0;
    for (uint64_t i = 0; i < page_count; i++) {
        volatile uint64_t *words = (volatile uint64_t *)(uintptr_t)((uint64_t)pages[i] << 12);
        for (unsigned w = 0; w < 512; w++) ram = mix(ram, words[w]);
    }
    rt_printf("done seq=%lu sum=%016lx sum1=%016lx ram=%016lx\n", first.done / every, first.sum, second.sum, ram);
    if (rt_cmdline_u64("hold", 0)) for (;;) rt_wait_for_interrupt();
    return 0;
}
