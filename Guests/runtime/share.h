/* The file hypercalls of --share, raw: results are a value or a negative Linux errno. */
#ifndef SWIFTVMM_SHARE_H
#define SWIFTVMM_SHARE_H

#include <stdint.h>
#include "abi.h"

/* What a block's result holds until the VMM answers (no device: the call returns -ENOSYS). */
#define RT_HC_UNANSWERED ((int64_t)0x8000000000000000ull)

/* Whether the VM has a share (its window reads the magic), and whether it is read-only. */
int rt_share_present(void);
int rt_share_read_only(void);
/* Rings the port doorbells even at CPL 3 (tests of both paths). */
extern int rt_share_use_port;
int64_t rt_hypercall(unsigned call, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3);

#endif
