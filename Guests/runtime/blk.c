/* Guest-side virtio-blk: requests are three descriptors (header, data, status) in slot i's
 * descriptors 3i .. 3i+2, made available together and waited for by polling the used ring.
 * Runs at CPL 3: the notification is one MMIO write (one exit), the rest is native. */
#include "blk.h"

int rt_blk_init(struct rt_blk *disk, const struct svmm_boot_info *info, unsigned nth, void *ring) {
    memset(disk, 0, sizeof *disk);
    if (rt_virtio_find(info, 2, nth, &disk->base, &disk->irq) != 0) return -1;
    rt_vq_init(&disk->queue, 0, ring);
    uint64_t wanted = VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_RO | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH |
                      VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES;
    disk->features = rt_virtio_setup(disk->base, 2, wanted, &disk->queue, 1);
    if (!disk->features) return -1;
    uint64_t config = disk->base + VIRTIO_REG_CONFIG;
    disk->capacity = rt_mmio_read32(config) | (uint64_t)rt_mmio_read32(config + 4) << 32;
    disk->seg_max = (disk->features & VIRTIO_BLK_F_SEG_MAX) ? rt_mmio_read32(config + 12) : 1;
    disk->blk_size = (disk->features & VIRTIO_BLK_F_BLK_SIZE) ? rt_mmio_read32(config + 20) : 512;
    rt_mmio_write32(disk->base + VIRTIO_REG_STATUS, rt_virtio_status(disk->base) | VIRTIO_STATUS_DRIVER_OK);
    return 0;
}

/* Fills slot `slot`'s descriptors and puts it on the available ring (no notification). */
static void post(struct rt_blk *disk, unsigned slot, uint32_t type, uint64_t sector, void *data, uint32_t length) {
    struct rt_vq *q = &disk->queue;
    uint16_t head = (uint16_t)(3 * slot);
    disk->headers[slot] = (struct rt_blk_header){ type, 0, sector };
    disk->status[slot] = 0xFF;
    int device_writes = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
    q->desc[head] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)&disk->headers[slot], sizeof disk->headers[slot], VIRTQ_DESC_F_NEXT, (uint16_t)(head + 1) };
    uint16_t status_desc = (uint16_t)(head + 1);
    if (length) {
        q->desc[head + 1] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)data, length,
                                                    (uint16_t)(VIRTQ_DESC_F_NEXT | (device_writes ? VIRTQ_DESC_F_WRITE : 0)), (uint16_t)(head + 2) };
        status_desc = (uint16_t)(head + 2);
    } else {
        q->desc[head].next = status_desc;
    }
    q->desc[status_desc] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)&disk->status[slot], 1, VIRTQ_DESC_F_WRITE, 0 };
    q->avail->ring[q->avail->idx % q->size] = head;
    __atomic_thread_fence(__ATOMIC_RELEASE); /* the entry before the index that publishes it */
    q->avail->idx = (uint16_t)(q->avail->idx + 1);
}

/* Notifies unless the device said it need not (VIRTQ_USED_F_NO_NOTIFY: it is busy and will look
 * at the ring again by itself). The fence orders the new available index before the flag's read. */
static void notify(struct rt_blk *disk) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (disk->queue.used->flags & 1) { disk->suppressed++; return; }
    rt_mmio_write32(disk->base + VIRTIO_REG_QUEUE_NOTIFY, 0);
    disk->notifications++;
}

int rt_blk_batch(struct rt_blk *disk, uint32_t type, const uint64_t *sectors, void *const *buffers, uint32_t length, unsigned count) {
    if (count == 0 || count > RT_BLK_BATCH) return -1;
    for (unsigned i = 0; i < count; i++) post(disk, i, type, sectors[i], buffers[i], length);
    notify(disk);
    for (unsigned i = 0; i < count; i++) {
        if (rt_virtio_wait_used(&disk->queue) < 0) return -1;
    }
    return 0;
}

int rt_blk_pipeline(struct rt_blk *disk, uint32_t type, const uint64_t *sectors, void *const *buffers, uint32_t length, uint64_t count,
                    unsigned depth) {
    if (depth == 0 || depth > RT_BLK_BATCH) return -1;
    uint64_t outstanding = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (outstanding == depth) { /* used in order: the oldest slot is free again */
            if (rt_virtio_wait_used(&disk->queue) < 0) return -1;
            outstanding--;
        }
        unsigned slot = (unsigned)(i % depth);
        post(disk, slot, type, sectors[i % depth], buffers[slot], length);
        notify(disk);
        outstanding++;
    }
    while (outstanding--) if (rt_virtio_wait_used(&disk->queue) < 0) return -1;
    return 0;
}

int rt_blk_request(struct rt_blk *disk, uint32_t type, uint64_t sector, void *data, uint32_t length) {
    void *buffers[1] = { data };
    if (rt_blk_batch(disk, type, &sector, buffers, length, 1) != 0) return -1;
    return disk->status[0];
}

int rt_blk_ranges(struct rt_blk *disk, uint32_t type, uint64_t sector, uint32_t sectors, uint32_t flags) {
    static struct { uint64_t sector; uint32_t sectors; uint32_t flags; } range __attribute__((aligned(16)));
    range.sector = sector;
    range.sectors = sectors;
    range.flags = flags;
    /* The range is device-readable data: `post` marks only IN and GET_ID buffers writable. */
    return rt_blk_request(disk, type, 0, &range, sizeof range);
}
