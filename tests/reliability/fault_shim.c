/* fault_shim.c - an LD_PRELOAD library for the fault-injection suite: makes chosen write(2),
 * rename(2), renameat2(2) or fsync(2) calls fail with an errno, or pause (so that the driver can
 * send SIGINT / SIGTERM / SIGKILL at exactly that point), then go on.
 *
 * LT_FAULT holds rules separated by ';', each  OP:MATCH:N:ACTION[:ERRNO]
 *   OP      write | rename | fsync  (rename covers renameat2)
 *   MATCH   a substring of the file's path (write/fsync: the path of the descriptor; rename: the
 *           source or the destination); a trailing '$' anchors it at the path's end; "*" matches
 *           every path
 *   N       the rule fires on its Nth matching call (1-based); "N+" on that one and every later one
 *   ACTION  fail  -> the call returns -1 with ERRNO (ENOSPC, EIO, EDQUOT, EACCES; default EIO)
 *           pause -> appends "OP PATH\n" to the file LT_FAULT_MARK, sleeps up to 20 s (a signal
 *                    ends the sleep early), then makes the real call
 * Writes to descriptors that are not regular files (the terminal, pipes) are never counted.
 * The shim writes nothing else and changes nothing when LT_FAULT is unset. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { OP_WRITE, OP_RENAME, OP_FSYNC };

typedef struct rule {
    int op;
    char match[256];
    long nth;
    int and_later;
    int pause;
    int err;
    long seen;
} rule;

static rule rules[16];
static int n_rules = -1;

static int parse_errno(const char *s) {
    if (!strcmp(s, "ENOSPC")) return ENOSPC;
    if (!strcmp(s, "EDQUOT")) return EDQUOT;
    if (!strcmp(s, "EACCES")) return EACCES;
    return EIO;
}

static void load_rules(void) {
    if (n_rules >= 0) return;
    n_rules = 0;
    const char *env = getenv("LT_FAULT");
    if (!env || !*env) return;
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", env);
    char *save = NULL;
    for (char *r = strtok_r(buf, ";", &save); r && n_rules < 16; r = strtok_r(NULL, ";", &save)) {
        char *f[5] = {0};
        int k = 0;
        char *s2 = NULL;
        for (char *p = strtok_r(r, ":", &s2); p && k < 5; p = strtok_r(NULL, ":", &s2)) f[k++] = p;
        if (k < 4) continue;
        rule *u = &rules[n_rules];
        memset(u, 0, sizeof *u);
        u->op = !strcmp(f[0], "write") ? OP_WRITE : !strcmp(f[0], "rename") ? OP_RENAME : OP_FSYNC;
        snprintf(u->match, sizeof u->match, "%s", f[1]);
        u->nth = strtol(f[2], NULL, 10);
        u->and_later = strchr(f[2], '+') != NULL;
        u->pause = !strcmp(f[3], "pause");
        u->err = parse_errno(k > 4 ? f[4] : "EIO");
        n_rules++;
    }
}

static void mark(const char *op, const char *path) {
    const char *m = getenv("LT_FAULT_MARK");
    if (!m) return;
    int fd = open(m, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (fd < 0) return;
    char line[1200];
    int n = snprintf(line, sizeof line, "%s %s\n", op, path);
    ssize_t (*real_write)(int, const void *, size_t) = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (real_write && n > 0) real_write(fd, line, (size_t)n);
    close(fd);
}

static void pause_here(void) {
    struct timespec ts = {20, 0};
    nanosleep(&ts, NULL); /* a signal (the driver's) returns early */
}

static int matches(const char *path, const char *m) {
    if (!path) return 0;
    size_t n = strlen(m);
    if (n && m[n - 1] == '$') {
        size_t k = strlen(path);
        return k >= n - 1 && !strncmp(path + k - (n - 1), m, n - 1);
    }
    return strstr(path, m) != NULL;
}

/* 0: go on; 1: fail with *err. Pauses inside when a pause rule fires. */
static int decide(int op, const char *path1, const char *path2, const char *opname, int *err) {
    load_rules();
    for (int i = 0; i < n_rules; i++) {
        rule *u = &rules[i];
        if (u->op != op) continue;
        int hit = !strcmp(u->match, "*") || matches(path1, u->match) || matches(path2, u->match);
        if (!hit) continue;
        long k = ++u->seen;
        if (!(k == u->nth || (u->and_later && k >= u->nth))) continue;
        if (u->pause) {
            mark(opname, path2 ? path2 : path1 ? path1 : "?");
            pause_here();
            return 0;
        }
        *err = u->err;
        return 1;
    }
    return 0;
}

static int fd_path(int fd, char *buf, size_t cap) {
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) return 0;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, cap - 1);
    if (n <= 0) return 0;
    buf[n] = 0;
    return 1;
}

ssize_t write(int fd, const void *data, size_t len) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    char path[1024];
    int err;
    if (fd > 2 && fd_path(fd, path, sizeof path) && decide(OP_WRITE, path, NULL, "write", &err)) {
        errno = err;
        return -1;
    }
    return real(fd, data, len);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    char path[1024];
    int err;
    if (fd_path(fd, path, sizeof path) && decide(OP_FSYNC, path, NULL, "fsync", &err)) {
        errno = err;
        return -1;
    }
    return real(fd);
}

int rename(const char *from, const char *to) {
    static int (*real)(const char *, const char *);
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int err;
    if (decide(OP_RENAME, from, to, "rename", &err)) {
        errno = err;
        return -1;
    }
    return real(from, to);
}

int renameat2(int olddirfd, const char *from, int newdirfd, const char *to, unsigned int flags) {
    static int (*real)(int, const char *, int, const char *, unsigned int);
    if (!real) real = (int (*)(int, const char *, int, const char *, unsigned int))dlsym(RTLD_NEXT, "renameat2");
    int err;
    if (decide(OP_RENAME, from, to, "rename", &err)) {
        errno = err;
        return -1;
    }
    return real(olddirfd, from, newdirfd, to, flags);
}
