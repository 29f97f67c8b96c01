/* A small C library for swiftvmm guests: POSIX-style files over the share's hypercalls
 * (--share), stdio-style printing to the console, malloc. Enough for an ordinary C program to
 * build as a guest with few changes, the way a unikernel's libc forwards its calls to the host.
 * Include it instead of the system headers (Guests/libc/posix.h picks one or the other), and
 * write main(argc, argv) as usual: argv comes from the guest's command line.
 * Descriptors 0-2 are the console (COM1); files are 3 and up. No floating point in printf. */
#ifndef SWIFTVMM_LIBC_H
#define SWIFTVMM_LIBC_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include "runtime/abi.h"

typedef long ssize_t;
typedef long off_t;
typedef unsigned int mode_t;
typedef long time_t;
typedef int clockid_t;

extern int errno;

#define O_RDONLY 0
#define O_WRONLY 1
#define O_RDWR 2
#define O_CREAT 0100
#define O_EXCL 0200
#define O_TRUNC 01000
#define O_APPEND 02000
#define O_DIRECTORY 0200000
#define O_NOFOLLOW 0400000
#define O_CLOEXEC 02000000
#define SEEK_SET 0
#define SEEK_CUR 1
#define SEEK_END 2

#define EPERM 1
#define ENOENT 2
#define EIO 5
#define ENXIO 6
#define EBADF 9
#define ENOMEM 12
#define EACCES 13
#define EFAULT 14
#define EEXIST 17
#define EXDEV 18
#define ENOTDIR 20
#define EISDIR 21
#define EINVAL 22
#define EMFILE 24
#define ENOSPC 28
#define EROFS 30
#define ERANGE 34
#define ENAMETOOLONG 36
#define ENOSYS 38
#define ENOTEMPTY 39
#define ELOOP 40

#define S_IFMT 0170000
#define S_IFDIR 0040000
#define S_IFREG 0100000
#define S_IFLNK 0120000
#define S_ISDIR(m) (((m) & S_IFMT) == S_IFDIR)
#define S_ISREG(m) (((m) & S_IFMT) == S_IFREG)

struct stat {
    uint64_t st_ino, st_size, st_blocks;
    uint32_t st_mode, st_nlink, st_uid, st_gid;
    int64_t st_atime_ns, st_mtime_ns, st_ctime_ns;
};

struct timespec { time_t tv_sec; long tv_nsec; };
#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1

int open(const char *path, int flags, ...);
int close(int fd);
ssize_t read(int fd, void *buf, size_t count);
ssize_t write(int fd, const void *buf, size_t count);
ssize_t pread(int fd, void *buf, size_t count, off_t offset);
ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset);
off_t lseek(int fd, off_t offset, int whence);
int fstat(int fd, struct stat *st);
int stat(const char *path, struct stat *st);
int unlink(const char *path);
int mkdir(const char *path, mode_t mode);
int rmdir(const char *path);
int rename(const char *old, const char *new_path);
char *getcwd(char *buf, size_t size);
int chdir(const char *path);
int fsync(int fd);
int clock_gettime(clockid_t clock, struct timespec *ts);
time_t time(time_t *t);

/* Directory listing (getdents64 records underneath). */
#define DT_DIR 4
#define DT_REG 8
struct dirent { uint64_t d_ino; unsigned char d_type; char d_name[256]; };
typedef struct svmm_dir DIR;
DIR *opendir(const char *path);
struct dirent *readdir(DIR *dir);
int closedir(DIR *dir);

/* stdio: stdout and stderr write to the console, stdin reads the console, fopen opens a file of
 * the share for reading or writing ("r", "w", "a"). */
typedef struct svmm_file FILE;
extern FILE *stdin, *stdout, *stderr;
#define EOF (-1)
FILE *fopen(const char *path, const char *mode);
int fclose(FILE *f);
char *fgets(char *s, int size, FILE *f);
int fgetc(FILE *f);
int fputs(const char *s, FILE *f);
int fputc(int c, FILE *f);
int fflush(FILE *f);
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int fprintf(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int vfprintf(FILE *f, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int puts(const char *s);
int putchar(int c);
void perror(const char *what);
const char *strerror(int code);

void *malloc(size_t size);
void *calloc(size_t count, size_t size);
void *realloc(void *p, size_t size);
void free(void *p);
__attribute__((noreturn)) void exit(int status);
int atoi(const char *s);
long atol(const char *s);
unsigned long strtoul(const char *s, char **end, int base);

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strcpy(char *d, const char *s);
char *strncpy(char *d, const char *s, size_t n);
char *strcat(char *d, const char *s);
char *strchr(const char *s, int c);
char *strrchr(const char *s, int c);
int isspace(int c);
int isdigit(int c);
int tolower(int c);

/* The program's main(argc, argv), called by the library's entry. */
#ifndef SVMM_LIBC_INTERNAL
#define main svmm_main
#endif
int svmm_main(int argc, char **argv);

#endif
