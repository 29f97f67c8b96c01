// File calls the C library declares only with _GNU_SOURCE.
#define _GNU_SOURCE
#include "chost.h"

#include <fcntl.h>
#include <unistd.h>

int chost_punch_hole(int fd, long long offset, long long length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
}

long long chost_seek_data(int fd, long long offset) { return lseek(fd, (off_t)offset, SEEK_DATA); }

long long chost_seek_hole(int fd, long long offset) { return lseek(fd, (off_t)offset, SEEK_HOLE); }
