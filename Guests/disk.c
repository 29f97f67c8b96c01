/* disk: drives a virtio-blk disk through the runtime's driver and prints what it saw.
 *
 *   nth=N           use the N-th disk (default 0); disks=N checksums disks 0 .. N-1
 *   id=1            read the serial number (GET_ID)
 *   sum=1           FNV-1a 64 checksum of the whole disk (sectors=N: of its first N sectors)
 *   write=S count=N seed=X   write a pattern to sectors S .. S+N-1, flush, read back and compare
 *   beyond=1        reads past the end, straddling it, and at sector 2^63: each must fail
 *   zeroes=S count=N / discard=S count=N   WRITE_ZEROES (then read back) or DISCARD a range
 *   hostile=1       malformed requests, then a descriptor outside RAM (the device must ask for a
 *                   reset), then a reset and a read that works again
 *   wait=1          before anything else, print "waiting for input" and wait for a byte on COM1
 *   stream=N        N rounds (pause=MS apart): write sector i with a pattern, read it and the
 *                   sector before back, print "disk seq=i hash=..." of everything read so far
 *   bench=N batch=K 4 KiB reads: N sequential, then N at random sectors, K per notification;
 *                   with writes=1 also N sequential 4 KiB writes; then N reads made available one
 *                   at a time with K in flight (the device suppresses notifications while busy)
 * Ends with V = 0, or 1 when the driver could not start or a check inside the guest failed. */
#include "runtime/blk.h"

static uint8_t ring[4096] __attribute__((aligned(4096)));
static uint8_t buffer[64 * 1024] __attribute__((aligned(4096)));
static uint8_t bench_buffers[RT_BLK_BATCH][4096] __attribute__((aligned(4096)));
static struct rt_blk disk;

static uint64_t fnv(uint64_t hash, const uint8_t *bytes, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) hash = (hash ^ bytes[i]) * 0x100000001b3ull;
    return hash;
}

static uint8_t pattern(uint64_t seed, uint64_t sector, unsigned offset) {
    uint64_t x = (sector + 1) * 0x9E3779B97F4A7C15ull ^ (seed + 1) * 0xC2B2AE3D27D4EB4Full ^ offset * 0x165667B1ull;
    return (uint8_t)(x >> 29);
}

static int start(unsigned nth) {
    if (rt_blk_init(&disk, rt_boot_info, nth, ring) != 0) {
        rt_printf("disk %u: no virtio-blk device\n", nth);
        return -1;
    }
    return 0;
}

static int checksum(unsigned nth, uint64_t limit) {
    if (start(nth) != 0) return -1;
    uint64_t sectors = limit && limit < disk.capacity ? limit : disk.capacity, hash = 0xcbf29ce484222325ull;
    for (uint64_t sector = 0; sector < sectors;) {
        uint64_t n = sectors - sector < sizeof buffer / 512 ? sectors - sector : sizeof buffer / 512;
        int status = rt_blk_request(&disk, VIRTIO_BLK_T_IN, sector, buffer, (uint32_t)(n * 512));
        if (status != 0) {
            rt_printf("disk %u: read at %llu: status %d\n", nth, (unsigned long long)sector, status);
            return -1;
        }
        hash = fnv(hash, buffer, n * 512);
        sector += n;
    }
    rt_printf("disk %u checksum %016llx over %llu sectors\n", nth, (unsigned long long)hash, (unsigned long long)sectors);
    return 0;
}

static void write_test(uint64_t first, uint64_t count, uint64_t seed) {
    uint64_t per = sizeof buffer / 512;
    for (uint64_t done = 0; done < count;) {
        uint64_t n = count - done < per ? count - done : per;
        for (uint64_t s = 0; s < n; s++)
            for (unsigned b = 0; b < 512; b++) buffer[s * 512 + b] = pattern(seed, first + done + s, b);
        int status = rt_blk_request(&disk, VIRTIO_BLK_T_OUT, first + done, buffer, (uint32_t)(n * 512));
        if (status != 0) {
            rt_printf("write %llu sectors at %llu: status %d\n", (unsigned long long)count, (unsigned long long)first, status);
            return;
        }
        done += n;
    }
    rt_printf("write %llu sectors at %llu: status 0\n", (unsigned long long)count, (unsigned long long)first);
    rt_printf("flush: status %d\n", rt_blk_request(&disk, VIRTIO_BLK_T_FLUSH, 0, 0, 0));
    for (uint64_t done = 0; done < count;) {
        uint64_t n = count - done < per ? count - done : per;
        memset(buffer, 0, sizeof buffer);
        if (rt_blk_request(&disk, VIRTIO_BLK_T_IN, first + done, buffer, (uint32_t)(n * 512)) != 0) {
            rt_printf("readback: read failed at %llu\n", (unsigned long long)(first + done));
            rt_check_failures++;
            return;
        }
        for (uint64_t s = 0; s < n; s++)
            for (unsigned b = 0; b < 512; b++)
                if (buffer[s * 512 + b] != pattern(seed, first + done + s, b)) {
                    rt_printf("readback: mismatch at sector %llu\n", (unsigned long long)(first + done + s));
                    rt_check_failures++;
                    return;
                }
        done += n;
    }
    rt_printf("readback: ok\n");
}

static void zeroes_test(uint64_t first, uint64_t count) {
    int status = rt_blk_ranges(&disk, VIRTIO_BLK_T_WRITE_ZEROES, first, (uint32_t)count, 0);
    rt_printf("write-zeroes %llu sectors at %llu: status %d\n", (unsigned long long)count, (unsigned long long)first, status);
    if (status != 0) return;
    for (uint64_t s = 0; s < count; s++) {
        memset(buffer, 0xAA, 512);
        if (rt_blk_request(&disk, VIRTIO_BLK_T_IN, first + s, buffer, 512) != 0) { rt_check_failures++; return; }
        for (unsigned b = 0; b < 512; b++)
            if (buffer[b]) {
                rt_printf("zeroes readback: mismatch at sector %llu\n", (unsigned long long)(first + s));
                rt_check_failures++;
                return;
            }
    }
    rt_printf("zeroes readback: ok\n");
}

/* A chain of the given descriptors, made available and notified; waits for it to be used.
 * Returns the used length, or -1 when the device did not use it. */
static int raw_chain(const struct rt_vring_desc *descs, unsigned n) {
    struct rt_vq *q = &disk.queue;
    for (unsigned i = 0; i < n; i++) {
        q->desc[i] = descs[i];
        if (i + 1 < n) { q->desc[i].flags |= VIRTQ_DESC_F_NEXT; q->desc[i].next = (uint16_t)(i + 1); }
    }
    q->avail->ring[q->avail->idx % q->size] = 0;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    q->avail->idx = (uint16_t)(q->avail->idx + 1);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    rt_mmio_write32(disk.base + VIRTIO_REG_QUEUE_NOTIFY, 0);
    for (uint64_t spins = 0; q->used->idx == q->last_used; spins++) {
        if (spins > (1ull << 26) || (rt_virtio_status(disk.base) & VIRTIO_STATUS_NEEDS_RESET)) return -1;
        cpu_relax();
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    int length = (int)q->used->ring[q->last_used % q->size].len;
    q->last_used++;
    return length;
}

static void hostile_test(void) {
    static struct rt_blk_header header __attribute__((aligned(16)));
    static volatile uint8_t status;
    uint64_t h = (uint64_t)(uintptr_t)&header, s = (uint64_t)(uintptr_t)&status, b = (uint64_t)(uintptr_t)buffer;
    header = (struct rt_blk_header){ VIRTIO_BLK_T_IN, 0, 0 };
    struct rt_vring_desc no_status[2] = { { h, 16, 0, 0 }, { b, 512, 0, 0 } }; /* nothing device-writable */
    rt_printf("no status byte: used length %d\n", raw_chain(no_status, 2));
    status = 0xFF;
    struct rt_vring_desc short_header[2] = { { h, 8, 0, 0 }, { s, 1, VIRTQ_DESC_F_WRITE, 0 } };
    int used = raw_chain(short_header, 2);
    rt_printf("short header: used length %d, status %d\n", used, status);
    status = 0xFF;
    struct rt_vring_desc odd_length[3] = { { h, 16, 0, 0 }, { b, 100, VIRTQ_DESC_F_WRITE, 0 }, { s, 1, VIRTQ_DESC_F_WRITE, 0 } };
    used = raw_chain(odd_length, 3);
    rt_printf("odd length: used length %d, status %d\n", used, status);
    header.type = 99;
    status = 0xFF;
    struct rt_vring_desc unknown[2] = { { h, 16, 0, 0 }, { s, 1, VIRTQ_DESC_F_WRITE, 0 } };
    used = raw_chain(unknown, 2);
    rt_printf("unknown type: used length %d, status %d\n", used, status);
    header = (struct rt_blk_header){ VIRTIO_BLK_T_IN, 0, 0 };
    struct rt_vring_desc outside[3] = { { h, 16, 0, 0 }, { 0xFFFFFFFF000ull, 4096, VIRTQ_DESC_F_WRITE, 0 }, { s, 1, VIRTQ_DESC_F_WRITE, 0 } };
    used = raw_chain(outside, 3);
    rt_printf("buffer outside RAM: used %d, needs reset %d\n", used, (rt_virtio_status(disk.base) & VIRTIO_STATUS_NEEDS_RESET) != 0);
    if (start(0) != 0) { rt_check_failures++; return; }
    rt_printf("after reset: read status %d\n", rt_blk_request(&disk, VIRTIO_BLK_T_IN, 0, buffer, 512));
}

static void wait_for_input(void) {
    rt_printf("waiting for input\n");
    while (!(inb(0x3FD) & 1)) cpu_relax();
    (void)inb(0x3F8);
}

static void stream(uint64_t rounds, uint64_t pause_ms) {
    uint64_t hz = rt_tsc_hz(), hash = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < rounds && i < disk.capacity; i++) {
        for (unsigned b = 0; b < 512; b++) buffer[b] = pattern(i, i, b);
        if (rt_blk_request(&disk, VIRTIO_BLK_T_OUT, i, buffer, 512) != 0) { rt_check_failures++; return; }
        memset(buffer, 0, 1024);
        uint64_t first = i ? i - 1 : 0;
        if (rt_blk_request(&disk, VIRTIO_BLK_T_IN, first, buffer, 1024) != 0) { rt_check_failures++; return; }
        hash = fnv(hash, buffer, 1024);
        rt_printf("disk seq=%llu hash=%016llx\n", (unsigned long long)i, (unsigned long long)hash);
        uint64_t until = rdtsc() + pause_ms * (hz / 1000);
        while (rdtsc() < until) cpu_relax();
    }
    rt_printf("disk stream done hash=%016llx\n", (unsigned long long)hash);
}

static void bench(uint64_t n, unsigned batch, int writes) {
    uint64_t hz = rt_tsc_hz(), span = disk.capacity / 8; /* 4 KiB blocks on the disk */
    if (!span) return;
    void *buffers[RT_BLK_BATCH];
    for (unsigned i = 0; i < RT_BLK_BATCH; i++) buffers[i] = bench_buffers[i];
    const char *names[3] = { "seq-read-4k", "rand-read-4k", "seq-write-4k" };
    for (int kind = 0; kind < (writes ? 3 : 2); kind++) {
        uint64_t rng = 0x2545F4914F6CDD1Dull, notified = disk.notifications, begin = rdtsc(), done = 0, next = 0;
        while (done < n) {
            unsigned k = n - done < batch ? (unsigned)(n - done) : batch;
            uint64_t sectors[RT_BLK_BATCH];
            for (unsigned i = 0; i < k; i++) {
                if (kind == 1) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; sectors[i] = (rng % span) * 8; }
                else sectors[i] = (next++ % span) * 8;
            }
            if (rt_blk_batch(&disk, kind == 2 ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, sectors, buffers, 4096, k) != 0) { rt_check_failures++; return; }
            for (unsigned i = 0; i < k; i++) if (disk.status[i] != 0) { rt_check_failures++; return; }
            done += k;
        }
        uint64_t ns = (rdtsc() - begin) * 1000000000ull / (hz ? hz : 1);
        rt_printf("bench %s: %llu requests in %llu ns, %llu ns/request, %llu KiB/s, %llu notifications, batch %u\n", names[kind],
                  (unsigned long long)n, (unsigned long long)ns, (unsigned long long)(ns / n),
                  (unsigned long long)(ns ? n * 4 * 1000000000ull / ns : 0), (unsigned long long)(disk.notifications - notified), batch);
    }
    /* Requests made available one at a time, `batch` kept in flight: each would notify, but the
     * device suppresses notifications while its worker is busy. */
    uint64_t sectors[RT_BLK_BATCH];
    for (unsigned i = 0; i < RT_BLK_BATCH; i++) sectors[i] = (uint64_t)i * 8 % (span * 8);
    uint64_t notified = disk.notifications, suppressed = disk.suppressed, begin = rdtsc();
    if (rt_blk_pipeline(&disk, VIRTIO_BLK_T_IN, sectors, buffers, 4096, n, batch) != 0) { rt_check_failures++; return; }
    for (unsigned i = 0; i < batch; i++) if (disk.status[i] != 0) { rt_check_failures++; return; }
    uint64_t ns = (rdtsc() - begin) * 1000000000ull / (hz ? hz : 1);
    rt_printf("bench depth-read-4k: %llu requests in %llu ns, %llu ns/request, %llu KiB/s, %llu notifications, depth %u, %llu suppressed\n",
              (unsigned long long)n, (unsigned long long)ns, (unsigned long long)(ns / n), (unsigned long long)(ns ? n * 4 * 1000000000ull / ns : 0),
              (unsigned long long)(disk.notifications - notified), batch, (unsigned long long)(disk.suppressed - suppressed));
}

int main(const struct svmm_boot_info *info) {
    (void)info;
    uint64_t disks = rt_cmdline_u64("disks", 0);
    if (disks) {
        for (unsigned n = 0; n < disks; n++)
            if (checksum(n, 0) != 0) return 1;
        return 0;
    }
    unsigned nth = (unsigned)rt_cmdline_u64("nth", 0);
    if (rt_cmdline_u64("wait", 0)) wait_for_input();
    if (start(nth) != 0) return 1;
    rt_printf("disk %u: capacity %llu sectors, features 0x%llx, read-only %d, seg_max %u, blk_size %u, irq %u\n", nth,
              (unsigned long long)disk.capacity, (unsigned long long)disk.features, (disk.features & VIRTIO_BLK_F_RO) != 0,
              disk.seg_max, disk.blk_size, disk.irq);
    if (rt_cmdline_u64("id", 0)) {
        char id[21] = { 0 };
        int status = rt_blk_request(&disk, VIRTIO_BLK_T_GET_ID, 0, id, 20);
        rt_printf("disk id: '%s' status %d\n", id, status);
    }
    uint64_t count = rt_cmdline_u64("count", 1), none = ~0ull;
    uint64_t write = rt_cmdline_u64("write", none), zeroes = rt_cmdline_u64("zeroes", none), discard = rt_cmdline_u64("discard", none);
    if (write != none) write_test(write, count, rt_cmdline_u64("seed", 1));
    if (zeroes != none) zeroes_test(zeroes, count);
    if (discard != none) {
        rt_printf("discard %llu sectors at %llu: status %d\n", (unsigned long long)count, (unsigned long long)discard,
                  rt_blk_ranges(&disk, VIRTIO_BLK_T_DISCARD, discard, (uint32_t)count, 0));
    }
    if (rt_cmdline_u64("beyond", 0)) {
        rt_printf("beyond-end read: status %d\n", rt_blk_request(&disk, VIRTIO_BLK_T_IN, disk.capacity, buffer, 512));
        rt_printf("straddling read: status %d\n", rt_blk_request(&disk, VIRTIO_BLK_T_IN, disk.capacity - 1, buffer, 1024));
        rt_printf("huge sector read: status %d\n", rt_blk_request(&disk, VIRTIO_BLK_T_IN, 1ull << 63, buffer, 512));
    }
    if (rt_cmdline_u64("hostile", 0)) hostile_test();
    uint64_t rounds = rt_cmdline_u64("stream", 0);
    if (rounds) stream(rounds, rt_cmdline_u64("pause", 100));
    uint64_t requests = rt_cmdline_u64("bench", 0);
    if (requests) {
        uint64_t batch = rt_cmdline_u64("batch", 1);
        bench(requests, (unsigned)(batch < 1 ? 1 : batch > RT_BLK_BATCH ? RT_BLK_BATCH : batch), (int)rt_cmdline_u64("writes", 0));
    }
    if (rt_cmdline_u64("sum", 0) && checksum(nth, rt_cmdline_u64("sectors", 0)) != 0) return 1;
    return rt_check_failures ? 1 : 0;
}
