/* Guest-side virtio-blk driver: synchronous requests and batches on one queue, polled. */
#ifndef SWIFTVMM_BLK_H
#define SWIFTVMM_BLK_H

#include "virtio.h"

#define VIRTIO_BLK_F_SEG_MAX (1ull << 2)
#define VIRTIO_BLK_F_RO (1ull << 5)
#define VIRTIO_BLK_F_BLK_SIZE (1ull << 6)
#define VIRTIO_BLK_F_FLUSH (1ull << 9)
#define VIRTIO_BLK_F_DISCARD (1ull << 13)
#define VIRTIO_BLK_F_WRITE_ZEROES (1ull << 14)

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

/* Requests one batch may hold: three descriptors each (header, data, status). */
#define RT_BLK_BATCH (RT_VQ_SIZE / 3)

struct rt_blk_header { uint32_t type; uint32_t reserved; uint64_t sector; };

struct rt_blk {
    uint64_t base;
    unsigned irq;
    uint64_t features;
    uint64_t capacity; /* 512-byte sectors */
    uint32_t seg_max, blk_size;
    struct rt_vq queue;
    struct rt_blk_header headers[RT_BLK_BATCH];
    volatile uint8_t status[RT_BLK_BATCH];
    uint64_t notifications, suppressed; /* notifications made, and left out (NO_NOTIFY) */
};

/* Starts the `nth` virtio-blk device (negotiating SEG_MAX, RO, BLK_SIZE, FLUSH, DISCARD and
 * WRITE_ZEROES when offered); `ring` is one 4 KiB page. Returns 0, or -1. */
int rt_blk_init(struct rt_blk *disk, const struct svmm_boot_info *info, unsigned nth, void *ring);
/* One request, waited for: type, first sector, a data buffer (NULL/0 for none; device-writable
 * for IN and GET_ID). Returns the status byte, or -1 when the device never answered. */
int rt_blk_request(struct rt_blk *disk, uint32_t type, uint64_t sector, void *data, uint32_t length);
/* `count` (at most RT_BLK_BATCH) requests made available at once, one notification, then all
 * waited for. Statuses land in disk->status[0..count). Returns 0, or -1. */
int rt_blk_batch(struct rt_blk *disk, uint32_t type, const uint64_t *sectors, void *const *buffers, uint32_t length, unsigned count);
/* `count` requests kept `depth` (at most RT_BLK_BATCH) in flight: each made available and
 * notified on its own (unless the device suppresses notifications), the oldest waited for when
 * `depth` are outstanding. The sector of request i is sectors[i % depth]. Returns 0, or -1. */
int rt_blk_pipeline(struct rt_blk *disk, uint32_t type, const uint64_t *sectors, void *const *buffers, uint32_t length, uint64_t count,
                    unsigned depth);
/* DISCARD or WRITE_ZEROES of one range; returns the status byte, or -1. */
int rt_blk_ranges(struct rt_blk *disk, uint32_t type, uint64_t sector, uint32_t sectors, uint32_t flags);

#endif
