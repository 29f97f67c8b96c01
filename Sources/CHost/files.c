// File calls the C library declares only with _GNU_SOURCE.
#define _GNU_SOURCE
#include "chost.h"

#include <fcntl.h>
#include <errno.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

int chost_punch_hole(int fd, long long offset, long long length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
}

int chost_zero_range(int fd, long long offset, long long length) {
    return fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
}

long long chost_seek_data(int fd, long long offset) { return lseek(fd, (off_t)offset, SEEK_DATA); }

long long chost_seek_hole(int fd, long long offset) { return lseek(fd, (off_t)offset, SEEK_HOLE); }

int chost_openat2(int dirfd, const char *path, unsigned long long flags, unsigned long long mode,
                  unsigned long long resolve) {
    struct open_how how = {.flags = flags, .mode = mode, .resolve = resolve};
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

long chost_getdents64(int fd, void *buffer, unsigned long length) {
    long bytes = syscall(SYS_getdents64, fd, buffer, length);
    return bytes < 0 ? -errno : bytes;
}
