/* A PostMark-style file system benchmark (our own implementation of the workload PostMark
 * describes, not its code): a pool of files with sizes in a range, spread over subdirectories;
 * transactions that each pair a read-or-append with a create-or-delete, by configurable biases;
 * then deletion of the rest. Commands as PostMark's ("set number 10", "set transactions 10",
 * "set size 500 10000", "set subdirectories 2", "set bias read 5", "run", "quit", ...), from the
 * script named by the first argument or from stdin; the report in PostMark's layout.
 * Builds natively (cc) and as a swiftvmm guest (SVMM_GUEST, files through --share); integer
 * arithmetic only, so both builds print the same counts for the same seed. */
#include "libc/posix.h"

struct settings {
    unsigned long number, transactions, size_low, size_high, subdirectories, read_block, write_block, seed;
    long bias_read, bias_create; /* 0-10: chance in ten of a read (vs append), a create (vs delete); -1: never */
    char location[256];
};

struct counts {
    unsigned long created_alone, created_mixed, read, appended, deleted_alone, deleted_mixed;
    unsigned long bytes_read, bytes_written;
    uint64_t total_us, transactions_us;
};

struct pool {
    unsigned long *live; /* ids of existing files */
    unsigned long live_count, next_id;
};

static uint64_t rng_state;

static uint64_t next_random(void) { /* xorshift64*: the same sequence in every build */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static unsigned long random_in(unsigned long low, unsigned long high) {
    return high <= low ? low : low + (unsigned long)(next_random() % (high - low + 1));
}

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static char *data_block;
static unsigned long data_size;

static void file_name(const struct settings *s, unsigned long id, char *name, unsigned long size) {
    if (s->subdirectories)
        snprintf(name, size, "%s/s%lu/pm%lu", s->location, id % s->subdirectories, id);
    else
        snprintf(name, size, "%s/pm%lu", s->location, id);
}

static int fail(const char *what, const char *name) {
    printf("postmark: %s %s: %s\n", what, name, strerror(errno));
    return -1;
}

static int write_bytes(int fd, unsigned long bytes, unsigned long block, struct counts *c, const char *name) {
    while (bytes) {
        unsigned long n = bytes < block ? bytes : block;
        unsigned long offset = (unsigned long)(next_random() % (data_size - n + 1));
        long written = write(fd, data_block + offset, n);
        if (written != (long)n) return fail("write", name);
        c->bytes_written += n;
        bytes -= n;
    }
    return 0;
}

static int create_file(const struct settings *s, struct pool *p, struct counts *c, int mixed) {
    char name[320];
    unsigned long id = p->next_id++;
    file_name(s, id, name, sizeof name);
    int fd = open(name, O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0) return fail("create", name);
    int r = write_bytes(fd, random_in(s->size_low, s->size_high), s->write_block, c, name);
    close(fd);
    if (r < 0) return r;
    p->live[p->live_count++] = id;
    if (mixed) c->created_mixed++; else c->created_alone++;
    return 0;
}

static int delete_file(const struct settings *s, struct pool *p, struct counts *c, unsigned long slot, int mixed) {
    char name[320];
    file_name(s, p->live[slot], name, sizeof name);
    if (unlink(name) < 0) return fail("delete", name);
    p->live[slot] = p->live[--p->live_count];
    if (mixed) c->deleted_mixed++; else c->deleted_alone++;
    return 0;
}

static int read_file(const struct settings *s, struct pool *p, struct counts *c, unsigned long slot, char *buffer) {
    char name[320];
    file_name(s, p->live[slot], name, sizeof name);
    int fd = open(name, O_RDONLY);
    if (fd < 0) return fail("open", name);
    long n;
    while ((n = read(fd, buffer, s->read_block)) > 0) c->bytes_read += (unsigned long)n;
    close(fd);
    if (n < 0) return fail("read", name);
    c->read++;
    return 0;
}

static int append_file(const struct settings *s, struct pool *p, struct counts *c, unsigned long slot) {
    char name[320];
    file_name(s, p->live[slot], name, sizeof name);
    int fd = open(name, O_WRONLY | O_APPEND);
    if (fd < 0) return fail("open", name);
    int r = write_bytes(fd, random_in(s->size_low, s->size_high), s->write_block, c, name);
    close(fd);
    if (r < 0) return r;
    c->appended++;
    return 0;
}

static unsigned long per_second(unsigned long count, uint64_t us) { return (unsigned long)((uint64_t)count * 1000000u / (us ? us : 1)); }

static void print_seconds(uint64_t us) { printf("%lu.%03lu", (unsigned long)(us / 1000000u), (unsigned long)(us / 1000u % 1000u)); }

static void print_megabytes(unsigned long bytes) {
    unsigned long hundredths = (unsigned long)((uint64_t)bytes * 100u / 1048576u);
    printf("%lu.%02lu", hundredths / 100, hundredths % 100);
}

static void report(const struct counts *c) {
    unsigned long created = c->created_alone + c->created_mixed, deleted = c->deleted_alone + c->deleted_mixed;
    uint64_t alone_create_us = c->total_us - c->transactions_us; /* creation and deletion phases together */
    printf("Time:\n\t");
    print_seconds(c->total_us);
    printf(" seconds total\n\t");
    print_seconds(c->transactions_us);
    printf(" seconds of transactions (%lu per second)\n\n", per_second(c->read + c->appended, c->transactions_us));
    printf("Files:\n");
    printf("\t%lu created (%lu per second)\n", created, per_second(created, c->total_us));
    printf("\t\tCreation alone: %lu files (%lu per second)\n", c->created_alone, per_second(c->created_alone, alone_create_us));
    printf("\t\tMixed with transactions: %lu files (%lu per second)\n", c->created_mixed, per_second(c->created_mixed, c->transactions_us));
    printf("\t%lu read (%lu per second)\n", c->read, per_second(c->read, c->transactions_us));
    printf("\t%lu appended (%lu per second)\n", c->appended, per_second(c->appended, c->transactions_us));
    printf("\t%lu deleted (%lu per second)\n", deleted, per_second(deleted, c->total_us));
    printf("\t\tDeletion alone: %lu files (%lu per second)\n", c->deleted_alone, per_second(c->deleted_alone, alone_create_us));
    printf("\t\tMixed with transactions: %lu files (%lu per second)\n\n", c->deleted_mixed, per_second(c->deleted_mixed, c->transactions_us));
    printf("Data:\n\t");
    print_megabytes(c->bytes_read);
    printf(" megabytes read (");
    print_megabytes(per_second(c->bytes_read, c->total_us));
    printf(" megabytes per second)\n\t");
    print_megabytes(c->bytes_written);
    printf(" megabytes written (");
    print_megabytes(per_second(c->bytes_written, c->total_us));
    printf(" megabytes per second)\n");
    /* Exact counts in one line, for comparing runs. */
    printf("postmark: created=%lu read=%lu appended=%lu deleted=%lu bytes_read=%lu bytes_written=%lu us=%lu\n",
           created, c->read, c->appended, deleted, c->bytes_read, c->bytes_written, (unsigned long)c->total_us);
}

static int run(const struct settings *s) {
    struct counts c;
    struct pool p;
    memset(&c, 0, sizeof c);
    memset(&p, 0, sizeof p);
    rng_state = s->seed ? s->seed : 1;
    data_size = s->write_block * 4 + 4096;
    data_block = malloc(data_size);
    char *buffer = malloc(s->read_block);
    p.live = malloc((s->number + s->transactions + 1) * sizeof *p.live);
    if (!data_block || !buffer || !p.live) { printf("postmark: out of memory\n"); return -1; }
    for (unsigned long i = 0; i < data_size; i++) data_block[i] = (char)('a' + next_random() % 26);
    char name[320];
    if (strcmp(s->location, ".") != 0 && mkdir(s->location, 0755) < 0 && errno != EEXIST) return fail("mkdir", s->location);
    for (unsigned long d = 0; d < s->subdirectories; d++) {
        snprintf(name, sizeof name, "%s/s%lu", s->location, d);
        if (mkdir(name, 0755) < 0) return fail("mkdir", name);
    }
    uint64_t start = now_us();
    printf("Creating files...");
    for (unsigned long i = 0; i < s->number; i++) if (create_file(s, &p, &c, 0) < 0) return -1;
    printf("Done\nPerforming transactions...");
    uint64_t transactions_start = now_us();
    for (unsigned long t = 0; t < s->transactions; t++) {
        if (p.live_count && s->bias_read >= 0) {
            unsigned long slot = (unsigned long)(next_random() % p.live_count);
            int r = (long)(next_random() % 10) < s->bias_read ? read_file(s, &p, &c, slot, buffer) : append_file(s, &p, &c, slot);
            if (r < 0) return -1;
        }
        if (s->bias_create >= 0) {
            if ((long)(next_random() % 10) < s->bias_create || !p.live_count) {
                if (create_file(s, &p, &c, 1) < 0) return -1;
            } else if (delete_file(s, &p, &c, (unsigned long)(next_random() % p.live_count), 1) < 0) return -1;
        }
    }
    c.transactions_us = now_us() - transactions_start;
    printf("Done\nDeleting files...");
    while (p.live_count) if (delete_file(s, &p, &c, p.live_count - 1, 0) < 0) return -1;
    for (unsigned long d = 0; d < s->subdirectories; d++) {
        snprintf(name, sizeof name, "%s/s%lu", s->location, d);
        if (rmdir(name) < 0) return fail("rmdir", name);
    }
    c.total_us = now_us() - start;
    printf("Done\n");
    report(&c);
    free(p.live);
    free(buffer);
    free(data_block);
    return 0;
}

static void show(const struct settings *s) {
    printf("Current configuration is:\n");
    printf("The base number of files is %lu\n", s->number);
    printf("Transactions: %lu\n", s->transactions);
    printf("Files range between %lu bytes and %lu bytes in size\n", s->size_low, s->size_high);
    printf("Working directory: %s\n", s->location);
    printf("%lu subdirectories will be used\n", s->subdirectories);
    printf("Block sizes are: read=%lu bytes, write=%lu bytes\n", s->read_block, s->write_block);
    printf("Biases are: read/append=%ld, create/delete=%ld\n", s->bias_read, s->bias_create);
    printf("Random number generator seed is %lu\n", s->seed);
}

/* Splits `line` at blanks into at most 8 words; returns their number. */
static int words(char *line, char **word) {
    int n = 0;
    for (char *p = line; *p && n < 8;) {
        while (*p && isspace(*p)) *p++ = 0;
        if (!*p) break;
        word[n++] = p;
        while (*p && !isspace(*p)) p++;
    }
    return n;
}

/* One command; 1 to quit, -1 on a failed run. */
static int command(struct settings *s, char *line) {
    char *w[8];
    int n = words(line, w);
    if (n == 0 || w[0][0] == '#') return 0;
    if (!strcmp(w[0], "quit") || !strcmp(w[0], "exit")) return 1;
    if (!strcmp(w[0], "run")) return run(s) < 0 ? -1 : 0;
    if (!strcmp(w[0], "show")) { show(s); return 0; }
    if (!strcmp(w[0], "help")) {
        printf("set size LOW [HIGH] | set number N | set transactions N | set subdirectories N | set location DIR\n"
               "set read BYTES | set write BYTES | set bias read N | set bias create N | set seed N | set buffering B\n"
               "set report terse|verbose | show | run | quit\n");
        return 0;
    }
    if (strcmp(w[0], "set") || n < 3) { printf("postmark: unknown command: %s\n", w[0]); return 0; }
    unsigned long v = strtoul(w[2], 0, 10);
    if (!strcmp(w[1], "size")) { s->size_low = v; s->size_high = n > 3 ? strtoul(w[3], 0, 10) : v; if (s->size_high < s->size_low) s->size_high = s->size_low; }
    else if (!strcmp(w[1], "number")) s->number = v;
    else if (!strcmp(w[1], "transactions")) s->transactions = v;
    else if (!strcmp(w[1], "subdirectories")) s->subdirectories = v;
    else if (!strcmp(w[1], "location")) { strncpy(s->location, w[2], sizeof s->location - 1); }
    else if (!strcmp(w[1], "read")) s->read_block = v ? v : 1;
    else if (!strcmp(w[1], "write")) s->write_block = v ? v : 1;
    else if (!strcmp(w[1], "seed")) s->seed = v;
    else if (!strcmp(w[1], "bias") && n > 3) {
        long b = atol(w[3]);
        if (b > 10) b = 10;
        if (b < -1) b = -1;
        if (!strcmp(w[2], "read")) s->bias_read = b; else if (!strcmp(w[2], "create")) s->bias_create = b;
    }
    else if (!strcmp(w[1], "buffering") || !strcmp(w[1], "report")) { /* accepted: every transfer is unbuffered here */ }
    else printf("postmark: unknown setting: %s\n", w[1]);
    return 0;
}

int main(int argc, char **argv) {
    struct settings s = { 500, 500, 500, 10000, 0, 512, 512, 42, 5, 5, "." };
    FILE *script = stdin;
    if (argc > 1 && !(script = fopen(argv[1], "r"))) { printf("postmark: %s: %s\n", argv[1], strerror(errno)); return 2; }
    char line[512];
    int status = 0;
    while (fgets(line, sizeof line, script)) {
        if (script == stdin) { printf("pm>%s", line); }
        int r = command(&s, line);
        if (r < 0) { status = 3; break; }
        if (r > 0) break;
    }
    if (script != stdin) fclose(script);
    return status;
}
