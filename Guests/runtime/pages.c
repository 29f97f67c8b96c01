/* Page pool: every usable 4 KiB page of guest RAM above the image, as a stack of page numbers.
 * Its own arrays (the free stack and two spare arrays of the same size: the balloon's and one
 * for the application)
 * are carved out of the first usable pages, sized to the RAM present. */
#include "virtio.h"

extern char _end[];
static uint32_t *free_pfns;
static uint32_t *spares[2];
static uint64_t free_top, total;

uint32_t *rt_pages_spare(unsigned which) { return which < 2 ? spares[which] : 0; }

void rt_pages_init(const struct svmm_boot_info *info) {
    uint64_t floor = info->image_end > (uint64_t)(uintptr_t)_end ? info->image_end : (uint64_t)(uintptr_t)_end;
    floor = (floor + 4095) & ~4095ull;
    const struct svmm_memory_region *map = (const void *)(uintptr_t)info->memory_map_addr;
    uint64_t pages = 0;
    for (uint32_t i = 0; i < info->memory_map_count; i++)
        if (map[i].type == SVMM_MEM_RAM) pages += map[i].length / 4096;
    uint64_t metadata = (3 * pages * 4 + 4095) & ~4095ull; /* three u32 arrays */
    free_pfns = 0;
    free_top = total = 0;
    for (uint32_t i = 0; i < info->memory_map_count; i++) {
        if (map[i].type != SVMM_MEM_RAM) continue;
        uint64_t start = (map[i].base > floor ? map[i].base : floor + 0), end = map[i].base + map[i].length;
        start = (start + 4095) & ~4095ull;
        if (!free_pfns && start + metadata <= end) { /* the arrays go in the first region that fits them */
            free_pfns = (uint32_t *)(uintptr_t)start;
            spares[0] = free_pfns + pages;
            spares[1] = free_pfns + 2 * pages;
            start += metadata;
        }
        for (uint64_t page = start; page + 4096 <= end && free_pfns; page += 4096) {
            free_pfns[free_top++] = (uint32_t)(page >> 12);
            total++;
        }
    }
}

uint64_t rt_page_alloc(void) {
    return free_top ? (uint64_t)free_pfns[--free_top] << 12 : 0;
}

void rt_page_free(uint64_t address) {
    if (free_top < total) free_pfns[free_top++] = (uint32_t)(address >> 12);
}

uint64_t rt_pages_free(void) { return free_top; }
uint64_t rt_pages_total(void) { return total; }
