/* fshostile: hostile file hypercalls against --share. Prints "CASE: RESULT" (the raw result:
 * a value or -errno) for each; the test checks the documented errors, that the VMM kept
 * running, and that nothing outside the share was read, created or changed. The share holds
 * what the test put there: "inside" (a file), "link_out" (a symbolic link to a file outside),
 * "dir_out" (a link to a directory outside), "proc_root" (a link to /proc/self/root), "fifo". */
#include "runtime/rt.h"
#include "runtime/share.h"

static uint64_t a(const void *p) { return (uint64_t)(uintptr_t)p; }
static void show(const char *what, int64_t r) { rt_printf("%s: %ld\n", what, r); }
static int64_t hc(unsigned call, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3) { return rt_hypercall(call, a0, a1, a2, a3); }

static uint64_t ram_end(const struct svmm_boot_info *info) {
    const struct svmm_memory_region *map = (const void *)(uintptr_t)info->memory_map_addr;
    uint64_t end = 0;
    for (uint32_t i = 0; i < info->memory_map_count; i++)
        if (map[i].type == SVMM_MEM_RAM && map[i].base < SVMM_MMIO_HOLE_START && map[i].base + map[i].length > end) end = map[i].base + map[i].length;
    return end;
}

static char buf[8192];
static char longpath[5000];

int main(const struct svmm_boot_info *info) {
    if (!rt_share_present()) { rt_puts("fshostile: no share\n"); return 0x20; }
    if (rt_cmdline_u64("port", 0)) rt_share_use_port = 1;
    int ro = rt_share_read_only();
    rt_printf("fshostile: share present, read-only=%d\n", ro);
    show("escape dotdot", hc(SVMM_HC_OPEN, a("../../etc/passwd"), 0, 0, 0));
    show("absolute etc passwd", hc(SVMM_HC_OPEN, a("/etc/passwd"), 0, 0, 0));
    show("symlink out", hc(SVMM_HC_OPEN, a("link_out"), 0, 0, 0));
    show("symlink out stat", hc(SVMM_HC_STAT, a("link_out"), a(buf), 0, 0));
    show("symlink dir out", hc(SVMM_HC_OPEN, a("dir_out/secret"), 0, 0, 0));
    show("create through dir link", hc(SVMM_HC_OPEN, a("dir_out/created"), 0101, 0644, 0));
    show("mkdir through dir link", hc(SVMM_HC_MKDIR, a("dir_out/newdir"), 0755, 0, 0));
    show("proc root link", hc(SVMM_HC_OPEN, a("proc_root/etc/passwd"), 0, 0, 0));
    show("proc self root", hc(SVMM_HC_OPEN, a("/proc/self/root/etc/passwd"), 0, 0, 0));
    show("chdir out", hc(SVMM_HC_CHDIR, a(".."), 0, 0, 0));
    show("rename out", hc(SVMM_HC_RENAME, a("inside"), a("../stolen"), 0, 0));
    show("rename into dir link", hc(SVMM_HC_RENAME, a("inside"), a("dir_out/stolen"), 0, 0));
    show("fifo", hc(SVMM_HC_OPEN, a("fifo"), 0, 0, 0));
    show("bad flags", hc(SVMM_HC_OPEN, a("inside"), 0x80000000ull, 0, 0));
    show("close 0", hc(SVMM_HC_CLOSE, 0, 0, 0, 0));
    show("close 1000", hc(SVMM_HC_CLOSE, 1000, 0, 0, 0));
    show("close 2^40", hc(SVMM_HC_CLOSE, 1ull << 40, 0, 0, 0));
    show("read fd -1", hc(SVMM_HC_READ, ~0ull, a(buf), 10, 0));
    show("unknown call", hc(30, 0, 0, 0, 0));
    int64_t fd = hc(SVMM_HC_OPEN, a("inside"), 0, 0, 0);
    show("open inside", fd);
    uint64_t end = ram_end(info);
    show("read straddling end of RAM", hc(SVMM_HC_READ, (uint64_t)fd, end - 10, 100, 0));
    show("read into MMIO hole", hc(SVMM_HC_READ, (uint64_t)fd, SVMM_MMIO_HOLE_START, 100, 0));
    show("read past 4G", hc(SVMM_HC_READ, (uint64_t)fd, 1ull << 40, 100, 0));
    show("read length 2^63", hc(SVMM_HC_PREAD, (uint64_t)fd, a(buf), 1ull << 63, 0));
    show("pread offset 2^63", hc(SVMM_HC_PREAD, (uint64_t)fd, a(buf), 10, 1ull << 63));
    show("lseek to -2^63", hc(SVMM_HC_LSEEK, (uint64_t)fd, 1ull << 63, 0, 0));
    show("lseek whence 99", hc(SVMM_HC_LSEEK, (uint64_t)fd, 0, 99, 0));
    show("fstat into MMIO hole", hc(SVMM_HC_FSTAT, (uint64_t)fd, SVMM_MMIO_HOLE_START, 0, 0));
    show("write length 2^63", hc(SVMM_HC_WRITE, (uint64_t)fd, a(buf), 1ull << 63, 0));
    show("getcwd size 1", hc(SVMM_HC_GETCWD, a(buf), 1, 0, 0));
    show("clock id 9", hc(SVMM_HC_CLOCK_GETTIME, 9, a(buf), 0, 0));
    show("path at end of RAM", hc(SVMM_HC_OPEN, end - 1, 0, 0, 0));
    memset(longpath, 'a', sizeof longpath);
    show("path without NUL", hc(SVMM_HC_OPEN, a(longpath), 0, 0, 0));
    show("path in MMIO hole", hc(SVMM_HC_OPEN, SVMM_MMIO_HOLE_START + 0x10000, 0, 0, 0));
    /* A block outside RAM: nothing to answer in; the VMM must ignore it and keep going. */
    if (rt_share_use_port) outl(SVMM_SHARE_PORT + SVMM_HC_CLOSE, 0xFFFFFFF0u);
    else *(volatile uint64_t *)(uintptr_t)(SVMM_SHARE_MMIO + SVMM_SHARE_DOORBELLS + 8 * SVMM_HC_CLOSE) = 1ull << 50;
    show("block outside RAM survived", 1);
    show("write to share", hc(SVMM_HC_OPEN, a("new"), 0101, 0644, 0));
    show("mkdir on share", hc(SVMM_HC_MKDIR, a("newdir"), 0755, 0, 0));
    show("unlink on share", hc(SVMM_HC_UNLINK, a("nothing"), 0, 0, 0));
    show("write to read-only fd", hc(SVMM_HC_WRITE, (uint64_t)fd, a(buf), 1, 0));
    int64_t n = hc(SVMM_HC_READ, (uint64_t)fd, a(buf), sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    rt_printf("inside says: %s\n", buf);
    hc(SVMM_HC_CLOSE, (uint64_t)fd, 0, 0, 0);
    /* The open-file cap: opens succeed up to the limit, then EMFILE; closing frees them. */
    unsigned opened = 0, emfile = 0, other = 0;
    int64_t first = -1, last = -1;
    for (unsigned i = 0; i < 10000; i++) {
        int64_t r = hc(SVMM_HC_OPEN, a("inside"), 0, 0, 0);
        if (r >= 0) { opened++; if (first < 0) first = r; last = r; }
        else if (r == -24) emfile++;
        else other++;
    }
    rt_printf("opens: ok=%u emfile=%u other=%u first=%ld last=%ld\n", opened, emfile, other, first, last);
    for (int64_t d = first; d >= 0 && d <= last; d++) hc(SVMM_HC_CLOSE, (uint64_t)d, 0, 0, 0);
    show("open after closing all", hc(SVMM_HC_OPEN, a("inside"), 0, 0, 0));
    rt_puts("fshostile: done\n");
    return 0;
}
