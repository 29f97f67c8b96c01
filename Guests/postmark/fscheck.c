/* fscheck: the guest C library's file calls, step by step, each result printed in a form that
 * does not depend on where the directory lives. Built natively and as a guest (SVMM_GUEST); run
 * in an empty directory (natively its working directory, as a guest the share's root), both
 * builds must print the same lines. */
#include "libc/posix.h"

static const char *error_name(int code) {
    switch (code) {
    case ENOENT: return "ENOENT"; case EBADF: return "EBADF"; case EEXIST: return "EEXIST";
    case ENOTDIR: return "ENOTDIR"; case EISDIR: return "EISDIR"; case EINVAL: return "EINVAL";
    case ENOTEMPTY: return "ENOTEMPTY"; case ERANGE: return "ERANGE"; case EROFS: return "EROFS";
    case EXDEV: return "EXDEV"; case EACCES: return "EACCES"; case ELOOP: return "ELOOP";
    default: return "E?";
    }
}

static void show(const char *step, long r) {
    if (r < 0) printf("%s: -1 %s\n", step, error_name(errno));
    else printf("%s: %ld\n", step, r);
}

static char root[512];

static void show_cwd(const char *step) {
    char buf[512];
    if (!getcwd(buf, sizeof buf)) { show(step, -1); return; }
    const char *rest = strcmp(root, "/") == 0 ? buf : buf + strlen(root);
    printf("%s: %s\n", step, *rest ? rest : "/");
}

static int compare_names(const char *a, const char *b) { return strcmp(a, b); }

static void list(const char *step, const char *path) {
    char names[16][256];
    int n = 0;
    DIR *dir = opendir(path);
    if (!dir) { show(step, -1); return; }
    struct dirent *e;
    while ((e = readdir(dir)) && n < 16) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        strcpy(names[n++], e->d_name);
    }
    closedir(dir);
    for (int i = 1; i < n; i++) /* insertion sort: listing order is the file system's */
        for (int j = i; j > 0 && compare_names(names[j - 1], names[j]) > 0; j--) {
            char t[256];
            strcpy(t, names[j]); strcpy(names[j], names[j - 1]); strcpy(names[j - 1], t);
        }
    printf("%s:", step);
    for (int i = 0; i < n; i++) printf(" %s", names[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    (void)argc; (void)argv;
    char buf[256];
    struct stat st;
    if (!getcwd(root, sizeof root)) { printf("getcwd failed\n"); return 2; }
    show_cwd("cwd");
    show("mkdir d", mkdir("d", 0755));
    show("mkdir d again", mkdir("d", 0755));
    int fd = open("d/f", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    show("open d/f create", fd >= 0 ? 3 : -1);
    for (int i = 0; i < 3; i++) show("write", write(fd, "hello world\n", 12));
    show("close", close(fd));
    show("close again", close(fd));
    show("stat d/f", stat("d/f", &st) < 0 ? -1 : (long)st.st_size);
    show("stat d/f is regular", stat("d/f", &st) < 0 ? -1 : S_ISREG(st.st_mode));
    show("stat d is directory", stat("d", &st) < 0 ? -1 : S_ISDIR(st.st_mode));
    fd = open("d/f", O_RDWR);
    show("fstat", fstat(fd, &st) < 0 ? -1 : (long)st.st_size);
    long n = read(fd, buf, 5);
    buf[n > 0 ? n : 0] = 0;
    printf("read 5: %ld %s\n", n, buf);
    show("lseek set 6", lseek(fd, 6, SEEK_SET));
    n = read(fd, buf, 6);
    buf[n > 0 ? n : 0] = 0;
    printf("read 6: %ld %s", n, buf);
    show("pwrite XY at 2", pwrite(fd, "XY", 2, 2));
    n = pread(fd, buf, 12, 0);
    buf[n > 0 ? n : 0] = 0;
    printf("pread 12 at 0: %ld %s", n, buf);
    show("lseek end", lseek(fd, 0, SEEK_END));
    show("lseek before start", lseek(fd, -100, SEEK_SET));
    show("read at end", read(fd, buf, 10));
    show("fsync", fsync(fd));
    show("close", close(fd));
    show("rename d/f d/g", rename("d/f", "d/g"));
    show("stat d/f", stat("d/f", &st));
    show("stat d/g", stat("d/g", &st) < 0 ? -1 : (long)st.st_size);
    show("open missing", open("missing", O_RDONLY));
    show("open d/g/x", open("d/g/x", O_RDONLY));
    show("open excl existing", open("d/g", O_CREAT | O_EXCL | O_WRONLY, 0644));
    show("open dir for writing", open("d", O_WRONLY));
    show("open file as directory", open("d/g", O_RDONLY | O_DIRECTORY));
    fd = open("d", O_RDONLY | O_DIRECTORY);
    show("read a directory", read(fd, buf, 10));
    close(fd);
    show("close 99", close(99));
    show("read 77", read(77, buf, 1));
    show("chdir d", chdir("d"));
    show_cwd("cwd in d");
    show("chdir d/g", chdir("g"));
    fd = open("../d/g", O_RDONLY);
    show("open ../d/g", fd >= 0 ? 3 : -1);
    close(fd);
    fd = open("h", O_CREAT | O_WRONLY, 0600);
    show("write h", write(fd, "x", 1));
    close(fd);
    list("list .", ".");
    show("rmdir non-empty ..", rmdir("../d"));
    show("chdir ..", chdir(".."));
    show_cwd("cwd back");
    /* A larger file in pieces, read back in other pieces. */
    char *big = malloc(100000);
    for (int i = 0; i < 100000; i++) big[i] = (char)(i * 7 + i / 251);
    fd = open("big", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    long total = 0;
    for (int i = 0; i < 100000; i += 30000) total += write(fd, big + i, 100000 - i < 30000 ? 100000 - i : 30000);
    close(fd);
    show("wrote big", total);
    memset(big, 0, 100000);
    fd = open("big", O_RDONLY);
    total = 0;
    while ((n = read(fd, big + total, 100000 - total < 4096 ? 100000 - total : 4096)) > 0) total += n;
    close(fd);
    unsigned long sum = 0;
    for (int i = 0; i < 100000; i++) sum = sum * 31 + (unsigned char)big[i];
    printf("read big: %ld sum %lu\n", total, sum);
    free(big);
    list("list root", ".");
    show("unlink big", unlink("big"));
    show("unlink d/g", unlink("d/g"));
    show("unlink d/h", unlink("d/h"));
    show("unlink d/h again", unlink("d/h"));
    show("rmdir d", rmdir("d"));
    list("list root at end", ".");
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    clock_gettime(CLOCK_MONOTONIC, &b);
    show("monotonic clock runs forward", (b.tv_sec > a.tv_sec || (b.tv_sec == a.tv_sec && b.tv_nsec >= a.tv_nsec)));
    clock_gettime(CLOCK_REALTIME, &a);
    show("realtime after 2020", a.tv_sec > 1577836800);
    printf("fscheck: done\n");
    return 0;
}
