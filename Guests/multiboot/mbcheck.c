/* mbcheck: checks what a multiboot boot loader promises and prints every field, so the test can
 * compare them with the command line it used. Command-line switches (after the kernel's path):
 *   testdev=1    exercise pc-testdev (needs --test-devices): scratch ports, MMIO window, page
 *                flush, and IRQ lines 3 (master PIC) and 10 (slave PIC) arriving on their vectors
 *   exitwidth=N  leave through the debug-exit port with an N-byte write (1, 2 or 4)
 *   shutdown=1   leave through the 0x8900 "Shutdown" port instead
 *   reset=kbd|cf9  reset the machine through the i8042 (0xfe to port 0x64) or port 0xcf9
 * Exit value: 0 when every check passed, else 0x40 + failures. */
#include "mbrt.h"

extern char irq_stub_master[], irq_stub_slave[];
extern volatile uint32_t irq_count_master, irq_count_slave;

static unsigned failures;

static void check(int ok, const char *what) {
    if (!ok) {
        failures++;
        mb_printf("mbcheck: FAIL %s\n", what);
    }
}

static int overlaps(uint32_t start, uint32_t end, uint32_t other_start, uint32_t other_end) {
    return start < other_end && other_start < end;
}

/* A region the boot loader put in memory must avoid the first page and the kernel. */
static void check_placed(uint32_t start, uint32_t length, const char *what) {
    check(start >= 0x1000 && !overlaps(start, start + length, 0x100000, (uint32_t)_end), what);
}

struct idt_gate { uint16_t offset_low, selector; uint8_t zero, type; uint16_t offset_high; } __attribute__((packed));
static struct idt_gate idt[0x30];

static void set_gate(int vector, void *handler) {
    uint32_t address = (uint32_t)handler;
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    idt[vector] = (struct idt_gate){ (uint16_t)address, cs, 0, 0x8E, (uint16_t)(address >> 16) };
}

static int wait_for(volatile uint32_t *counter, uint32_t target) {
    for (uint32_t spin = 0; spin < 200000; spin++) {
        if (*counter >= target) return 1;
        __asm__ volatile("pause");
    }
    return 0;
}

static void test_devices(void) {
    outl(0xe0, 0x12345678);
    check(inl(0xe0) == 0x12345678, "pc-testdev scratch 0xe0 reads back");
    check(inb(0xe2) == 0x34, "pc-testdev scratch byte 0xe2");
    outb(0xe9, 0xab);
    check(inb(0xe9) == 0xab && inb(0xe8) == 0, "pc-testdev byte scratch 0xe8-0xeb");
    volatile uint32_t *window = (volatile uint32_t *)0xff000000;
    window[0] = 0xdeadbeef;
    window[0x3fff] = 0x600dcafe;
    check(window[0] == 0xdeadbeef && window[0x3fff] == 0x600dcafe && window[1] == 0, "pc-testdev MMIO window");
    volatile uint32_t *page = (volatile uint32_t *)0x200000;
    *page = 0x5a5a1234;
    outl(0xe4, 0x200000);
    check(*page == 0x5a5a1234, "page flush keeps the page's contents");

    /* PICs: master at vectors 0x20-0x27, slave at 0x28-0x2f; only IRQ 3, the cascade and IRQ 10 unmasked. */
    set_gate(0x23, irq_stub_master);
    set_gate(0x2a, irq_stub_slave);
    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) idtr = { sizeof idt - 1, (uint32_t)idt };
    __asm__ volatile("lidt %0" : : "m"(idtr));
    outb(0x20, 0x11); outb(0xa0, 0x11);
    outb(0x21, 0x20); outb(0xa1, 0x28);
    outb(0x21, 0x04); outb(0xa1, 0x02);
    outb(0x21, 0x01); outb(0xa1, 0x01);
    outb(0x21, (uint8_t)~((1 << 3) | (1 << 2)));
    outb(0xa1, (uint8_t)~(1 << 2));
    __asm__ volatile("sti");
    outb(0x2003, 1);
    int master = wait_for(&irq_count_master, 1);
    outb(0x2003, 0);
    outb(0x200a, 1);
    int slave = wait_for(&irq_count_slave, 1);
    outb(0x200a, 0);
    __asm__ volatile("cli");
    mb_printf("mbcheck: testdev irq3 -> vector 0x23 x%u, irq10 -> vector 0x2a x%u\n", irq_count_master, irq_count_slave);
    check(master && irq_count_master == 1, "IRQ 3 arrived once on vector 0x23");
    check(slave && irq_count_slave == 1, "IRQ 10 arrived once on vector 0x2a");
}

void mb_main(uint32_t magic, struct mb_info *info, uint32_t eflags, uint32_t cr0);
void mb_main(uint32_t magic, struct mb_info *info, uint32_t eflags, uint32_t cr0) {
    uint16_t cs, ds;
    __asm__ volatile("mov %%cs, %0; mov %%ds, %1" : "=r"(cs), "=r"(ds));
    mb_printf("mbcheck: eax=0x%x ebx=0x%x eflags=0x%x cr0=0x%x cs=0x%x\n", magic, (uint32_t)info, eflags, cr0, cs);
    check(magic == MB_BOOTLOADER_MAGIC, "EAX holds 0x2BADB002");
    check((cr0 & 1) && !(cr0 & 0x80000000u), "protected mode, paging off");
    check(!(eflags & 0x200), "interrupts off at entry");
    check((cs & 3) == 0 && (ds & 3) == 0, "ring 0 segments");
    check_placed((uint32_t)info, sizeof *info, "info block clear of page 0 and the kernel");

    char signature[5] = { 0 };
    uint64_t ram = 0, max_ram = 1;
    uint16_t cpus = 0;
    fw_cfg_read(0x00, signature, 4);
    fw_cfg_read(0x03, &ram, 8);
    fw_cfg_read(0x05, &cpus, 2);
    fw_cfg_read(0x11, &max_ram, 8);
    uint32_t unknown = 0xffffffff;
    fw_cfg_read(0x7777, &unknown, 4);
    mb_printf("mbcheck: fw_cfg signature=%s ram=%u MiB cpus=%u max_ram=%u unknown=0x%x\n", signature,
              (uint32_t)(ram >> 20), cpus, (uint32_t)max_ram, unknown);
    check(mb_memcmp(signature, "QEMU", 4) == 0 && max_ram == 0 && unknown == 0, "fw_cfg signature, max RAM, unknown key");

    mb_printf("mbcheck: flags=0x%x mem_lower=%u mem_upper=%u\n", info->flags, info->mem_lower, info->mem_upper);
    check((info->flags & 0x24d) == 0x24d, "flags: mem, cmdline, mods, mmap, loader name");
    uint64_t low = ram < 0xC0000000ull ? ram : 0xC0000000ull;
    check(info->mem_lower == 639 && info->mem_upper == (uint32_t)((low - 0x100000) >> 10), "mem_lower/mem_upper match RAM");

    const char *cmdline = (const char *)info->cmdline;
    mb_printf("mbcheck: cmdline=[%s]\n", cmdline);
    check_placed(info->cmdline, (uint32_t)mb_strlen(cmdline) + 1, "cmdline clear of page 0 and the kernel");
    size_t first = 0;
    while (cmdline[first] && cmdline[first] != ' ') first++;
    check(first >= 11 && mb_memcmp(cmdline + first - 11, "mbcheck.elf", 11) == 0, "cmdline starts with the kernel's path");
    mb_printf("mbcheck: loader=[%s]\n", (const char *)info->boot_loader_name);

    uint64_t usable = 0;
    check_placed(info->mmap_addr, info->mmap_length, "memory map clear of page 0 and the kernel");
    for (uint32_t offset = 0; offset < info->mmap_length;) {
        struct mb_mmap_entry *entry = (struct mb_mmap_entry *)(info->mmap_addr + offset);
        mb_printf("mbcheck: mmap base=0x%x_%x length=0x%x_%x type=%u\n", (uint32_t)(entry->base >> 32), (uint32_t)entry->base,
                  (uint32_t)(entry->length >> 32), (uint32_t)entry->length, entry->type);
        if (entry->type == 1) {
            usable += entry->length;
            check(!overlaps((uint32_t)entry->base, (uint32_t)(entry->base + entry->length), 0x9fc00, 0x100000) || entry->base >= 0x100000000ull,
                  "no RAM entry over the BIOS areas");
        }
        offset += entry->size + 4;
    }
    check(usable == ram - (0x100000 - 0x9fc00), "memory map covers all RAM but the BIOS areas");

    mb_printf("mbcheck: mods_count=%u\n", info->mods_count);
    struct mb_module *modules = (struct mb_module *)info->mods_addr;
    for (uint32_t i = 0; i < info->mods_count; i++) {
        const char *content = (const char *)modules[i].start;
        char line[64];
        size_t n = 0;
        while (n + 1 < sizeof line && content + n < (const char *)modules[i].end && content[n] != '\n') { line[n] = content[n]; n++; }
        line[n] = 0;
        mb_printf("mbcheck: module %u start=0x%x size=%u string=[%s] first_line=[%s]\n", i, modules[i].start,
                  modules[i].end - modules[i].start, (const char *)modules[i].string, line);
        check((modules[i].start & 0xfff) == 0, "module page-aligned");
        check_placed(modules[i].start, modules[i].end - modules[i].start, "module clear of page 0 and the kernel");
        check(!overlaps(modules[i].start, modules[i].end, (uint32_t)info, (uint32_t)info + sizeof *info), "module clear of the info block");
    }

    char value[16];
    if (mb_cmdline_value(cmdline, "testdev", value, sizeof value)) test_devices();
    mb_printf("mbcheck: %u failure(s)\n", failures);
    if (mb_cmdline_value(cmdline, "reset", value, sizeof value)) {
        if (value[0] == 'k') outb(0x64, 0xfe);
        else outb(0xcf9, 0x06);
    }
    if (mb_cmdline_value(cmdline, "shutdown", value, sizeof value)) {
        for (const char *p = "Shutdown"; *p; p++) outb(0x8900, (uint8_t)*p);
    }
    int width = mb_cmdline_value(cmdline, "exitwidth", value, sizeof value) ? (int)mb_parse_u32(value) : 1;
    mb_exit(failures ? 0x40 + failures : 0, width);
}
