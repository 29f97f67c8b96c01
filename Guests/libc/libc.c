/* The guest C library (libc.h): files over the share's hypercalls, console stdio, a heap. */
#define SVMM_LIBC_INTERNAL
#include "runtime/rt.h"
#include "runtime/share.h"
#include "libc/libc.h"

int errno;

static long result(int64_t value) {
    if (value < 0) { errno = (int)-value; return -1; }
    return (long)value;
}

static uint64_t addr(const void *p) { return (uint64_t)(uintptr_t)p; }

/* ---- console: descriptors 0-2 ---- */

static int console_read_byte(void) {
    while (!(inb(SVMM_PORT_COM1 + 5) & 0x01)) cpu_relax(); /* LSR.DR */
    return inb(SVMM_PORT_COM1);
}

static ssize_t console_read(char *buf, size_t count) {
    size_t n = 0;
    while (n < count) { /* up to the end of a line, as a terminal delivers it */
        char c = (char)console_read_byte();
        buf[n++] = c;
        if (c == '\n') break;
    }
    return (ssize_t)n;
}

static void console_write(const char *buf, size_t count) {
    for (size_t i = 0; i < count; i++) rt_putc(buf[i]);
}

/* ---- files ---- */

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    unsigned mode = (flags & O_CREAT) ? va_arg(ap, unsigned) : 0;
    va_end(ap);
    return (int)result(rt_hypercall(SVMM_HC_OPEN, addr(path), (uint64_t)(unsigned)flags, mode, 0));
}

int close(int fd) {
    if (fd >= 0 && fd <= 2) return 0;
    return (int)result(rt_hypercall(SVMM_HC_CLOSE, (uint64_t)(unsigned)fd, 0, 0, 0));
}

ssize_t read(int fd, void *buf, size_t count) {
    if (fd == 0) return console_read(buf, count);
    return result(rt_hypercall(SVMM_HC_READ, (uint64_t)(unsigned)fd, addr(buf), count, 0));
}

ssize_t write(int fd, const void *buf, size_t count) {
    if (fd == 1 || fd == 2) { console_write(buf, count); return (ssize_t)count; }
    return result(rt_hypercall(SVMM_HC_WRITE, (uint64_t)(unsigned)fd, addr(buf), count, 0));
}

ssize_t pread(int fd, void *buf, size_t count, off_t offset) {
    return result(rt_hypercall(SVMM_HC_PREAD, (uint64_t)(unsigned)fd, addr(buf), count, (uint64_t)offset));
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    return result(rt_hypercall(SVMM_HC_PWRITE, (uint64_t)(unsigned)fd, addr(buf), count, (uint64_t)offset));
}

off_t lseek(int fd, off_t offset, int whence) {
    return result(rt_hypercall(SVMM_HC_LSEEK, (uint64_t)(unsigned)fd, (uint64_t)offset, (uint64_t)(unsigned)whence, 0));
}

int fstat(int fd, struct stat *st) { return (int)result(rt_hypercall(SVMM_HC_FSTAT, (uint64_t)(unsigned)fd, addr(st), 0, 0)); }
int stat(const char *path, struct stat *st) { return (int)result(rt_hypercall(SVMM_HC_STAT, addr(path), addr(st), 0, 0)); }
int unlink(const char *path) { return (int)result(rt_hypercall(SVMM_HC_UNLINK, addr(path), 0, 0, 0)); }
int mkdir(const char *path, mode_t mode) { return (int)result(rt_hypercall(SVMM_HC_MKDIR, addr(path), mode, 0, 0)); }
int rmdir(const char *path) { return (int)result(rt_hypercall(SVMM_HC_RMDIR, addr(path), 0, 0, 0)); }
int rename(const char *old, const char *new_path) { return (int)result(rt_hypercall(SVMM_HC_RENAME, addr(old), addr(new_path), 0, 0)); }
int chdir(const char *path) { return (int)result(rt_hypercall(SVMM_HC_CHDIR, addr(path), 0, 0, 0)); }
int fsync(int fd) { return (int)result(rt_hypercall(SVMM_HC_FSYNC, (uint64_t)(unsigned)fd, 0, 0, 0)); }

char *getcwd(char *buf, size_t size) {
    return result(rt_hypercall(SVMM_HC_GETCWD, addr(buf), size, 0, 0)) < 0 ? 0 : buf;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    return (int)result(rt_hypercall(SVMM_HC_CLOCK_GETTIME, (uint64_t)(unsigned)clock, addr(ts), 0, 0));
}

time_t time(time_t *t) {
    struct timespec ts = { 0, 0 };
    if (clock_gettime(CLOCK_REALTIME, &ts) < 0) return -1;
    if (t) *t = ts.tv_sec;
    return ts.tv_sec;
}

/* ---- directories ---- */

struct svmm_dir { int fd; long used, filled; struct dirent entry; char buf[4096]; };

DIR *opendir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return 0;
    DIR *dir = malloc(sizeof *dir);
    if (!dir) { close(fd); errno = ENOMEM; return 0; }
    dir->fd = fd;
    dir->used = dir->filled = 0;
    return dir;
}

struct dirent *readdir(DIR *dir) {
    if (dir->used >= dir->filled) {
        long n = result(rt_hypercall(SVMM_HC_GETDENTS, (uint64_t)(unsigned)dir->fd, addr(dir->buf), sizeof dir->buf, 0));
        if (n <= 0) return 0;
        dir->filled = n;
        dir->used = 0;
    }
    /* linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name */
    const char *record = dir->buf + dir->used;
    uint16_t length;
    memcpy(&dir->entry.d_ino, record, 8);
    memcpy(&length, record + 16, 2);
    dir->entry.d_type = (unsigned char)record[18];
    size_t name = strlen(record + 19);
    if (name > 255) name = 255;
    memcpy(dir->entry.d_name, record + 19, name);
    dir->entry.d_name[name] = 0;
    dir->used += length ? length : dir->filled; /* a zero length would loop: end the buffer */
    return &dir->entry;
}

int closedir(DIR *dir) {
    int r = close(dir->fd);
    free(dir);
    return r;
}

/* ---- stdio ---- */

struct svmm_file { int fd; int eof; long used, filled; char buf[512]; };
static struct svmm_file console_in = { 0, 0, 0, 0, {0} }, console_out = { 1, 0, 0, 0, {0} }, console_err = { 2, 0, 0, 0, {0} };
FILE *stdin = &console_in, *stdout = &console_out, *stderr = &console_err;

FILE *fopen(const char *path, const char *mode) {
    int flags = mode[0] == 'r' ? (mode[1] == '+' ? O_RDWR : O_RDONLY)
              : mode[0] == 'w' ? O_WRONLY | O_CREAT | O_TRUNC : O_WRONLY | O_CREAT | O_APPEND;
    int fd = open(path, flags, 0644);
    if (fd < 0) return 0;
    FILE *f = malloc(sizeof *f);
    if (!f) { close(fd); errno = ENOMEM; return 0; }
    f->fd = fd;
    f->eof = 0;
    f->used = f->filled = 0;
    return f;
}

int fclose(FILE *f) {
    if (f == stdin || f == stdout || f == stderr) return 0;
    int r = close(f->fd);
    free(f);
    return r;
}

int fgetc(FILE *f) {
    if (f->used >= f->filled) {
        if (f->eof) return EOF;
        ssize_t n = read(f->fd, f->buf, sizeof f->buf);
        if (n <= 0) { f->eof = 1; return EOF; }
        f->filled = n;
        f->used = 0;
    }
    return (unsigned char)f->buf[f->used++];
}

char *fgets(char *s, int size, FILE *f) {
    int n = 0;
    while (n + 1 < size) {
        int c = fgetc(f);
        if (c == EOF) break;
        s[n++] = (char)c;
        if (c == '\n') break;
    }
    if (n == 0) return 0;
    s[n] = 0;
    return s;
}

int fputs(const char *s, FILE *f) { return write(f->fd, s, strlen(s)) < 0 ? EOF : 0; }
int fputc(int c, FILE *f) { char ch = (char)c; return write(f->fd, &ch, 1) < 0 ? EOF : c; }
int putchar(int c) { return fputc(c, stdout); }
int puts(const char *s) { return fputs(s, stdout) == EOF || fputc('\n', stdout) == EOF ? EOF : 0; }
int fflush(FILE *f) { (void)f; return 0; }

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) { return rt_vsnprintf(buf, size, fmt, ap); }

/* snprintf is the runtime's rt_snprintf under its C library name (an alias in rt.c). */

int vfprintf(FILE *f, const char *fmt, va_list ap) {
    char small[512];
    va_list copy;
    va_copy(copy, ap);
    int n = rt_vsnprintf(small, sizeof small, fmt, copy);
    va_end(copy);
    if (n < 0) return n;
    if ((size_t)n < sizeof small) return write(f->fd, small, (size_t)n) < 0 ? -1 : n;
    char *big = malloc((size_t)n + 1);
    if (!big) return -1;
    rt_vsnprintf(big, (size_t)n + 1, fmt, ap);
    int r = write(f->fd, big, (size_t)n) < 0 ? -1 : n;
    free(big);
    return r;
}

int fprintf(FILE *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vfprintf(f, fmt, ap);
    va_end(ap);
    return n;
}

int printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vfprintf(stdout, fmt, ap);
    va_end(ap);
    return n;
}

const char *strerror(int code) {
    switch (code) {
    case 0: return "Success";
    case EPERM: return "Operation not permitted";
    case ENOENT: return "No such file or directory";
    case EIO: return "Input/output error";
    case ENXIO: return "No such device or address";
    case EBADF: return "Bad file descriptor";
    case ENOMEM: return "Cannot allocate memory";
    case EACCES: return "Permission denied";
    case EFAULT: return "Bad address";
    case EEXIST: return "File exists";
    case EXDEV: return "Invalid cross-device link";
    case ENOTDIR: return "Not a directory";
    case EISDIR: return "Is a directory";
    case EINVAL: return "Invalid argument";
    case EMFILE: return "Too many open files";
    case ENOSPC: return "No space left on device";
    case EROFS: return "Read-only file system";
    case ERANGE: return "Numerical result out of range";
    case ENAMETOOLONG: return "File name too long";
    case ENOSYS: return "Function not implemented";
    case ENOTEMPTY: return "Directory not empty";
    case ELOOP: return "Too many levels of symbolic links";
    default: return "Unknown error";
    }
}

void perror(const char *what) { fprintf(stderr, "%s: %s\n", what, strerror(errno)); }

/* ---- heap: power-of-two size classes from 32 bytes, each block behind a 16-byte header ---- */

extern char _end[];
static uint64_t heap_next, heap_end;
static void *free_lists[48];

struct block_header { uint64_t size_class, magic; };
#define HEAP_MAGIC 0x5356484541504b31ull

static void heap_init(const struct svmm_boot_info *info) {
    uint64_t start = (uint64_t)(uintptr_t)_end;
    if (info->image_end > start) start = info->image_end;
    start = (start + 4095) & ~4095ull;
    const struct svmm_memory_region *map = (const void *)(uintptr_t)info->memory_map_addr;
    for (uint32_t i = 0; i < info->memory_map_count; i++) {
        if (map[i].type != SVMM_MEM_RAM || start < map[i].base || start >= map[i].base + map[i].length) continue;
        heap_next = start;
        heap_end = map[i].base + map[i].length;
    }
}

void *malloc(size_t size) {
    if (size > (1ull << 40)) { errno = ENOMEM; return 0; }
    unsigned k = 5;
    while ((1ull << k) < size + sizeof(struct block_header)) k++;
    struct block_header *block = free_lists[k];
    if (block) {
        free_lists[k] = *(void **)(block + 1);
    } else {
        uint64_t bytes = 1ull << k;
        if (heap_end - heap_next < bytes) { errno = ENOMEM; return 0; }
        block = (struct block_header *)(uintptr_t)heap_next;
        heap_next += bytes;
    }
    block->size_class = k;
    block->magic = HEAP_MAGIC;
    return block + 1;
}

void free(void *p) {
    if (!p) return;
    struct block_header *block = (struct block_header *)p - 1;
    if (block->magic != HEAP_MAGIC || block->size_class >= 48) return; /* not ours, or freed twice */
    block->magic = 0;
    *(void **)p = free_lists[block->size_class];
    free_lists[block->size_class] = block;
}

void *calloc(size_t count, size_t size) {
    if (size && count > ((size_t)1 << 40) / size) { errno = ENOMEM; return 0; }
    void *p = malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void *realloc(void *p, size_t size) {
    if (!p) return malloc(size);
    struct block_header *block = (struct block_header *)p - 1;
    size_t capacity = (1ull << block->size_class) - sizeof *block;
    if (size <= capacity) return p;
    void *q = malloc(size);
    if (!q) return 0;
    memcpy(q, p, capacity);
    free(p);
    return q;
}

__attribute__((noreturn)) void exit(int status) { rt_exit((uint32_t)status); }

/* ---- strings ---- */

void *memmove(void *d, const void *s, size_t n) {
    unsigned char *dp = d;
    const unsigned char *sp = s;
    if (dp < sp) { for (size_t i = 0; i < n; i++) dp[i] = sp[i]; }
    else { for (size_t i = n; i > 0; i--) dp[i - 1] = sp[i - 1]; }
    return d;
}

int strcmp(const char *a, const char *b) {
    while (*a && *a == *b) { a++; b++; }
    return (unsigned char)*a - (unsigned char)*b;
}

char *strcpy(char *d, const char *s) { char *r = d; while ((*d++ = *s++)) {} return r; }

char *strncpy(char *d, const char *s, size_t n) {
    size_t i = 0;
    for (; i < n && s[i]; i++) d[i] = s[i];
    for (; i < n; i++) d[i] = 0;
    return d;
}

char *strcat(char *d, const char *s) { strcpy(d + strlen(d), s); return d; }

char *strchr(const char *s, int c) {
    for (;; s++) { if (*s == (char)c) return (char *)s; if (!*s) return 0; }
}

char *strrchr(const char *s, int c) {
    const char *found = 0;
    for (;; s++) { if (*s == (char)c) found = s; if (!*s) return (char *)found; }
}

int isspace(int c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
int isdigit(int c) { return c >= '0' && c <= '9'; }
int tolower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

unsigned long strtoul(const char *s, char **end, int base) {
    while (isspace(*s)) s++;
    if ((base == 0 || base == 16) && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) { s += 2; base = 16; }
    if (base == 0) base = 10;
    unsigned long v = 0;
    for (;; s++) {
        int d = isdigit(*s) ? *s - '0' : (tolower(*s) >= 'a' && tolower(*s) <= 'z') ? tolower(*s) - 'a' + 10 : 99;
        if (d >= base) break;
        v = v * (unsigned long)base + (unsigned long)d;
    }
    if (end) *end = (char *)s;
    return v;
}

long atol(const char *s) {
    while (isspace(*s)) s++;
    int negative = *s == '-';
    if (*s == '-' || *s == '+') s++;
    long v = (long)strtoul(s, 0, 10);
    return negative ? -v : v;
}

int atoi(const char *s) { return (int)atol(s); }

/* ---- entry: argv from the command line, split at spaces ---- */

int main(const struct svmm_boot_info *info) {
    static char line[1024];
    static char *argv[64];
    heap_init(info);
    if (rt_cmdline_u64("share_port", 0)) rt_share_use_port = 1;
    const char *cmdline = rt_cmdline();
    size_t n = strlen(cmdline);
    if (n >= sizeof line) n = sizeof line - 1;
    memcpy(line, cmdline, n);
    line[n] = 0;
    int argc = 0;
    argv[argc++] = "guest";
    for (char *p = line; *p && argc < 63;) {
        while (*p == ' ') *p++ = 0;
        if (!*p) break;
        if (strncmp(p, "share_port=", 11) != 0) argv[argc++] = p; /* the library's own option */
        while (*p && *p != ' ') p++;
    }
    argv[argc] = 0;
    return svmm_main(argc, argv);
}
