/* envcheck: the guest checks its own environment and reports each check on the console.
 * Exit V = 0 when everything holds, else V = 0x40 + number of failed checks.
 * Command line: mem=SIZE cpus=N (what the host was asked for). */
#include "runtime/rt.h"



static void signature(uint32_t leaf, char out[13], uint32_t *max) {
    uint32_t a, b, c, d;
    rt_cpuid(leaf, 0, &a, &b, &c, &d);
    memcpy(out, &b, 4);
    memcpy(out + 4, &c, 4);
    memcpy(out + 8, &d, 4);
    out[12] = 0;
    *max = a;
}

/* Writes a pattern to the last page of each RAM region and reads it back. */
static void check_ram_tops(const struct svmm_boot_info *info) {
    const struct svmm_memory_region *map = (const void *)info->memory_map_addr;
    uint64_t total = 0, top = 0;
    for (uint32_t i = 0; i < info->memory_map_count; i++) {
        total += map[i].length;
        if (map[i].base + map[i].length > top) top = map[i].base + map[i].length;
        if (map[i].type != SVMM_MEM_RAM) continue;
        volatile uint64_t *last = (volatile uint64_t *)(map[i].base + map[i].length - 4096);
        for (int w = 0; w < 512; w++) last[w] = 0x5157494654564D4Dull ^ (uint64_t)w ^ (uint64_t)last;
        int good = 1;
        for (int w = 0; w < 512; w++) good &= last[w] == (0x5157494654564D4Dull ^ (uint64_t)w ^ (uint64_t)last);
        rt_check(good, "ram-top", "last page of region 0x%lx-0x%lx reads back", map[i].base, map[i].base + map[i].length);
    }
    rt_check(total == info->ram_size, "memory-map", "regions add up to %lu bytes (ram_size %lu), top 0x%lx",
          total, info->ram_size, top);
}

int main(const struct svmm_boot_info *info) {
    rt_check(info->magic == SVMM_BOOTINFO_MAGIC && info->version == SVMM_BOOTINFO_VERSION && info->size == SVMM_BOOTINFO_SIZE,
          "boot-info", "magic 0x%x version %u size %u", info->magic, info->version, info->size);
    uint64_t want_mem = rt_cmdline_u64("mem", 0);
    rt_check(want_mem && info->ram_size == want_mem, "ram-size", "boot info says %lu, host asked for %lu",
          info->ram_size, want_mem);
    uint64_t want_cpus = rt_cmdline_u64("cpus", 1);
    rt_check(info->cpu_count == want_cpus, "cpu-count", "boot info says %u, host asked for %lu",
          info->cpu_count, want_cpus);
    rt_check(current_cpl() == 3, "cpl", "main runs at CPL %u", current_cpl());

    uint32_t a, b, c, d, max;
    rt_cpuid(1, 0, &a, &b, &c, &d);
    rt_check((c >> 31) & 1, "cpuid-hypervisor-bit", "leaf 1 ecx 0x%x", c);
    char sig[13];
    signature(0x40000000, sig, &max);
    rt_check(memcmp(sig, "swiftvmm\0\0\0\0", 12) == 0, "cpuid-vendor", "leaf 0x40000000 reads \"%s\", max leaf 0x%x", sig, max);
    signature(0x40000100, sig, &max);
    rt_check(memcmp(sig, "KVMKVMKVM\0\0\0", 12) == 0, "cpuid-kvm-leaves", "leaf 0x40000100 reads \"%s\", max leaf 0x%x", sig, max);

    check_ram_tops(info);

    /* Unclaimed port and MMIO reads return all-ones. */
    rt_check(inb(0x520) == 0xFF && inw(0x522) == 0xFFFF && inl(0x524) == 0xFFFFFFFFu, "unclaimed-port",
          "reads of ports 0x520-0x527 return all-ones");
    volatile uint32_t *hole = (volatile uint32_t *)0xD0000000ull;
    uint32_t mmio = *hole;
    volatile uint64_t *hole64 = (volatile uint64_t *)0xD0001000ull;
    uint64_t mmio64 = *hole64;
    *hole = 0x12345678; /* unclaimed write: dropped and counted by the host */
    rt_check(mmio == 0xFFFFFFFFu && mmio64 == ~0ull, "unclaimed-mmio", "reads in the hole gave 0x%x and 0x%lx", mmio, mmio64);

    /* String I/O: REP INSB from an unclaimed port fills all-ones; REP OUTSB prints a line. */
    uint8_t buffer[8];
    memset(buffer, 0, sizeof buffer);
    void *dst = buffer;
    uint64_t count = sizeof buffer;
    __asm__ volatile("rep insb" : "+D"(dst), "+c"(count) : "d"(0x518) : "memory");
    int all = 1;
    for (unsigned i = 0; i < sizeof buffer; i++) all &= buffer[i] == 0xFF;
    rt_check(all && count == 0, "rep-insb", "8 bytes of all-ones from port 0x518");
    static const char line[] = "ok   rep-outsb: this line came through one string-I/O exit\n";
    const void *src = line;
    count = sizeof line - 1;
    __asm__ volatile("rep outsb" : "+S"(src), "+c"(count) : "d"(SVMM_PORT_COM1) : "memory");

    /* The UART's scratch register keeps what is written. */
    outb(SVMM_PORT_COM1 + 7, 0xA5);
    rt_check(inb(SVMM_PORT_COM1 + 7) == 0xA5, "uart-scratch", "scratch register round trip");

    rt_printf("envcheck: %d failure(s)\n", rt_check_failures);
    return rt_check_failures ? 0x40 + rt_check_failures : 0;
}
