/* mbcount: a multiboot kernel that counts at CPL 0 in 32-bit protected mode without paging and
 * prints a running checksum every so often, so a snapshot or migration of a guest that is not in
 * long mode can be checked to continue exactly. Command-line switches (after the kernel's path):
 *   lines=N   lines to print (default 40)
 *   work=N    loop iterations between lines (default 20000)
 * Its output depends only on those. Exit value 0. */
#include "mbrt.h"

void mb_main(uint32_t magic, struct mb_info *info, uint32_t eflags, uint32_t cr0);
void mb_main(uint32_t magic, struct mb_info *info, uint32_t eflags, uint32_t cr0) {
    (void)eflags;
    (void)cr0;
    const char *cmdline = magic == MB_BOOTLOADER_MAGIC && (info->flags & 4) ? (const char *)(uintptr_t)info->cmdline : "";
    char value[16];
    uint32_t lines = mb_cmdline_value(cmdline, "lines", value, sizeof value) ? mb_parse_u32(value) : 40;
    uint32_t work = mb_cmdline_value(cmdline, "work", value, sizeof value) ? mb_parse_u32(value) : 20000;
    static volatile uint32_t table[1024]; /* memory the count also goes through */
    uint32_t sum = 0x811c9dc5u;
    for (uint32_t line = 1; line <= lines; line++) {
        for (uint32_t i = 0; i < work; i++) {
            sum = (sum ^ i ^ line) * 0x01000193u;
            table[sum & 1023] += sum;
        }
        mb_printf("mbcount: line %u sum %x\n", line, sum ^ table[line & 1023]);
    }
    mb_exit(0, 1);
}
