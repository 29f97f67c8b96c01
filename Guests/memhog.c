/* memhog: allocates and touches, then frees, guest memory in phases given on the command line,
 * serving the balloon all along (inflate/deflate to the host's target, statistics on request).
 *
 *   phases=STEP,STEP,...   STEP is one of
 *     touch:SIZE[@RATE]    allocate SIZE and write every page (at RATE bytes per second if given)
 *     free:SIZE[@RATE]     give SIZE of the touched memory back to the guest's free pool
 *     hold:SECONDS         keep serving the balloon for a while
 *     serve                serve the balloon until the host stops the VM
 *     end                  exit (V = 0, or 0x60 when a check failed)
 *   reuse=1                after each deflate, allocate and touch the returned pages, checking they
 *                          read zero first (the host gave them back as fresh zero pages)
 *   oom=wait               when the pool runs dry, wait for the host to grant memory (deflate)
 *                          instead of taking pages back from the balloon on its own
 * Sizes take K/M/G suffixes. Free memory is reported through the balloon's statistics queue. */
#include "runtime/virtio.h"

static uint32_t *held;
static uint64_t held_count, failures, reuse, oom_wait;

static void report(const char *what) {
    rt_printf("memhog: %s: held %lu MiB, free %lu MiB, balloon %lu MiB (target %lu MiB)\n", what,
              held_count >> 8, rt_pages_free() >> 8, rt_balloon.pages >> 8, rt_balloon.target >> 8);
}

/* Serves the balloon; reuses pages it returned when asked to. */
static void serve_balloon(void) {
    uint64_t before = rt_balloon.pages, returned = rt_balloon_poll();
    if (rt_balloon.pages != before) report(rt_balloon.pages > before ? "balloon inflated" : "balloon deflated");
    if (!reuse || !returned) return;
    uint64_t nonzero = 0, count = 0;
    for (uint64_t page; count < returned && (page = rt_page_alloc()); count++) {
        volatile uint64_t *words = (volatile uint64_t *)(uintptr_t)page;
        uint64_t bits = 0;
        for (int w = 0; w < 512; w++) bits |= words[w];
        if (bits) nonzero++;
        for (int w = 0; w < 512; w += 8) words[w] = page ^ (uint64_t)w;
        held[held_count++] = (uint32_t)(page >> 12);
    }
    if (nonzero) failures++;
    rt_printf("memhog: reused %lu deflated pages, %lu read non-zero before use\n", count, nonzero);
}

/* Serves the balloon until the TSC reaches `deadline`. */
static void pause_until(uint64_t deadline) {
    while (rdtsc() < deadline) {
        serve_balloon();
        rt_sleep_ns(10000000);
    }
}

/* ns * tsc_hz overflows 64 bits past about 7.5 s: whole seconds and the rest apart. */
static void pause_serving(uint64_t ns) {
    uint64_t hz = rt_tsc_hz();
    pause_until(rdtsc() + ns / 1000000000ull * hz + ns % 1000000000ull * hz / 1000000000ull);
}

/* Paces work to `rate` bytes per second in tenth-of-a-second steps against the wall clock. */
struct pacer { uint64_t next, tick; };
static struct pacer pacer_start(void) { uint64_t tick = rt_tsc_hz() / 10; return (struct pacer){ rdtsc() + tick, tick }; }
static void pacer_wait(struct pacer *p) { pause_until(p->next); p->next += p->tick; }

static uint64_t parse_size(const char **p) {
    uint64_t value = 0;
    while (**p >= '0' && **p <= '9') value = value * 10 + (uint64_t)(*(*p)++ - '0');
    switch (**p) {
    case 'K': case 'k': value <<= 10; (*p)++; break;
    case 'M': case 'm': value <<= 20; (*p)++; break;
    case 'G': case 'g': value <<= 30; (*p)++; break;
    }
    return value;
}

/* Moves `bytes` in steps of a tenth of a second's worth at `rate` (0: all at once). */
static void touch(uint64_t bytes, uint64_t rate) {
    uint64_t pages = bytes >> 12, step = rate ? (rate >> 12) / 10 : pages, oom_before = rt_balloon.oom_deflated;
    if (!step) step = 1;
    struct pacer pace = pacer_start();
    for (uint64_t done = 0; done < pages;) {
        uint64_t chunk_end = done + step < pages ? done + step : pages;
        while (done < chunk_end) {
            uint64_t page = oom_wait ? rt_page_alloc() : rt_balloon_page_alloc();
            if (!page && oom_wait) { /* the coordinator will grow us: keep serving the balloon until it does */
                pause_serving(50000000);
                continue;
            }
            if (!page) { rt_printf("memhog: out of memory after %lu of %lu pages\n", done, pages); failures++; return; }
            volatile uint64_t *words = (volatile uint64_t *)(uintptr_t)page;
            for (int w = 0; w < 512; w += 8) words[w] = page ^ (uint64_t)w;
            held[held_count++] = (uint32_t)(page >> 12);
            done++;
        }
        if (rate) pacer_wait(&pace);
    }
    if (rt_balloon.oom_deflated > oom_before)
        rt_printf("memhog: took %lu pages back from the balloon under memory pressure (deflate on OOM)\n",
                  rt_balloon.oom_deflated - oom_before);
}

static void release(uint64_t bytes, uint64_t rate) {
    uint64_t pages = bytes >> 12, step = rate ? (rate >> 12) / 10 : pages;
    if (!step) step = 1;
    struct pacer pace = pacer_start();
    for (uint64_t done = 0; done < pages && held_count;) {
        for (uint64_t i = 0; i < step && done < pages && held_count; i++, done++)
            rt_page_free((uint64_t)held[--held_count] << 12);
        if (rate) pacer_wait(&pace);
    }
}

int main(const struct svmm_boot_info *info) {
    rt_pages_init(info);
    held = rt_pages_spare(1);
    reuse = rt_cmdline_u64("reuse", 0);
    char oom[8];
    oom_wait = rt_cmdline_get("oom", oom, sizeof oom) > 0 && !strncmp(oom, "wait", 5);
    int balloon = rt_balloon_init(info) == 0;
    if (info->flags & SVMM_BOOTINFO_FLAG_IRQCHIP) rt_timer_start(100);
    rt_printf("memhog: ready: pool %lu MiB, balloon %s (features 0x%lx)\n", rt_pages_total() >> 8,
              balloon ? "found" : "absent", rt_balloon.features);
    serve_balloon();
    char phases[512];
    if (rt_cmdline_get("phases", phases, sizeof phases) < 0) phases[0] = 0;
    for (const char *p = phases; *p;) {
        char name[8] = { 0 };
        unsigned n = 0;
        while (*p && *p != ':' && *p != ',' && n < sizeof name - 1) name[n++] = *p++;
        uint64_t amount = 0, rate = 0;
        if (*p == ':') { p++; amount = parse_size(&p); }
        if (*p == '@') { p++; rate = parse_size(&p); }
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
        char what[48];
        if (!strncmp(name, "touch", 6)) { touch(amount, rate); rt_snprintf(what, sizeof what, "touch %lu MiB done", amount >> 20); }
        else if (!strncmp(name, "free", 5)) { release(amount, rate); rt_snprintf(what, sizeof what, "free %lu MiB done", amount >> 20); }
        else if (!strncmp(name, "hold", 5)) { pause_serving(amount * 1000000000ull); rt_snprintf(what, sizeof what, "hold %lu s done", amount); }
        else if (!strncmp(name, "serve", 6)) { report("serving"); for (;;) { serve_balloon(); if (!rt_balloon_pending()) rt_sleep_ns(20000000); } }
        else if (!strncmp(name, "end", 4)) break;
        else { rt_printf("memhog: unknown phase '%s'\n", name); return 0x61; }
        serve_balloon();
        report(what);
    }
    report("end");
    return failures ? 0x60 : 0;
}
