/* fs.c - outputs that appear whole or not at all.
 *
 * Files: written to "<path>.tmp-<pid>-<n>" in the same folder with write(2), fsync'd, renamed
 * over <path>, and the folder fsync'd. Folders of several files: built as
 * "<dir>.tmp-<pid>-<n>/" and renamed into place as one (an existing folder is swapped out with
 * renameat2(RENAME_EXCHANGE) where the file system has it, else moved aside to
 * "<dir>.old-<pid>-<n>" first). A process killed half-way leaves only names of those two forms;
 * lt_fs_clean_stale() removes them at the next start (a ".old-" folder whose final name is
 * missing is moved back: it is the only whole copy). Plain write/rename/fsync calls are used on
 * purpose, so that tests/reliability's LD_PRELOAD shim can make any one of them fail. */
#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned lt_tmp_counter; /* distinguishes temporaries of one process (not thread-critical:
                                   pid + counter + O_EXCL on open) */

static char *tmp_sibling(const char *path, const char *kind) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    char *s = lt_malloc(n + 48, "a temporary path");
    if (!s) return NULL;
    unsigned k = __atomic_add_fetch(&lt_tmp_counter, 1, __ATOMIC_RELAXED);
    snprintf(s, n + 48, "%.*s.%s-%ld-%u", (int)n, path, kind, (long)getpid(), k);
    return s;
}

char *lt_fs_tmp_name(const char *path) { return tmp_sibling(path, "tmp"); }

/* The folder a path lives in ("." for a bare name). */
static char *parent_of(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    while (n > 0 && path[n - 1] != '/') n--;
    if (n == 0) return lt_strdup(".");
    while (n > 1 && path[n - 1] == '/') n--;
    return lt_strndup(path, n);
}

lt_status lt_fs_sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return lt_error(LT_ERR_IO, "%s: cannot open the folder to sync it: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* some file systems cannot fsync a folder (EINVAL): the rename is then as durable as they allow */
    if (rc != 0 && e != EINVAL && e != EROFS)
        return lt_error(LT_ERR_IO, "%s: syncing the folder failed: %s", dir, strerror(e));
    return LT_OK;
}

static lt_status sync_parent(const char *path) {
    char *dir = parent_of(path);
    if (!dir) return LT_ERR_OUT_OF_MEMORY;
    lt_status st = lt_fs_sync_dir(dir);
    free(dir);
    return st;
}

lt_status lt_fs_write_all(int fd, const void *data, size_t len, const char *what) {
    const char *p = data;
    while (len > 0) {
        ssize_t k = write(fd, p, len);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0)
            return lt_error(LT_ERR_IO, "writing %s failed%s: %s", what, errno == ENOSPC ? " (the disk is full)" : "",
                            strerror(errno));
        if (k == 0) return lt_error(LT_ERR_IO, "writing %s failed: no progress (disk full?)", what);
        p += k;
        len -= (size_t)k;
    }
    return LT_OK;
}

/* ---- one file ---- */

struct lt_atomic_file { int fd; char *path, *tmp; };

lt_status lt_atomic_open(const char *path, int overwrite, lt_atomic_file **out) {
    *out = NULL;
    if (!overwrite && access(path, F_OK) == 0)
        return lt_error(LT_ERR_EXISTS, "%s already exists (pass --overwrite, or overwrite=1, to replace it)", path);
    lt_atomic_file *a = lt_calloc(1, sizeof *a, "an output file");
    if (!a) return LT_ERR_OUT_OF_MEMORY;
    a->path = lt_strdup(path);
    a->tmp = lt_fs_tmp_name(path);
    if (!a->path || !a->tmp) { free(a->path); free(a->tmp); free(a); return LT_ERR_OUT_OF_MEMORY; }
    a->fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (a->fd < 0) {
        lt_status st = lt_error(LT_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        free(a->path); free(a->tmp); free(a);
        return st;
    }
    *out = a;
    return LT_OK;
}

lt_status lt_atomic_write(lt_atomic_file *a, const void *data, size_t len) {
    return lt_fs_write_all(a->fd, data, len, a->path);
}

void lt_atomic_abort(lt_atomic_file *a) {
    if (!a) return;
    if (a->fd >= 0) close(a->fd);
    unlink(a->tmp);
    free(a->path); free(a->tmp); free(a);
}

lt_status lt_atomic_commit(lt_atomic_file *a) {
    lt_status st = LT_OK;
    if (fsync(a->fd) != 0)
        st = lt_error(LT_ERR_IO, "writing %s failed%s: %s", a->path, errno == ENOSPC ? " (the disk is full)" : "",
                      strerror(errno));
    if (close(a->fd) != 0 && st == LT_OK)
        st = lt_error(LT_ERR_IO, "closing %s failed: %s", a->path, strerror(errno));
    a->fd = -1;
    if (st == LT_OK && rename(a->tmp, a->path) != 0)
        st = lt_error(LT_ERR_IO, "cannot rename %s to %s: %s", a->tmp, a->path, strerror(errno));
    if (st != LT_OK) unlink(a->tmp);
    else st = sync_parent(a->path);
    free(a->path); free(a->tmp); free(a);
    return st;
}

lt_status lt_write_file_atomic(const char *path, const void *data, size_t len, int overwrite) {
    lt_atomic_file *a;
    LT_TRY(lt_atomic_open(path, overwrite, &a));
    lt_status st = lt_atomic_write(a, data, len);
    if (st != LT_OK) { lt_atomic_abort(a); return st; }
    return lt_atomic_commit(a);
}

/* ---- trees ---- */

lt_status lt_fs_remove_tree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? LT_OK : lt_error(LT_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        if (unlink(path) != 0) return lt_error(LT_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
        return LT_OK;
    }
    DIR *d = opendir(path);
    if (!d) return lt_error(LT_ERR_IO, "cannot read folder %s: %s", path, strerror(errno));
    lt_status st = LT_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = lt_path_join(path, e->d_name);
        if (!p) { st = LT_ERR_OUT_OF_MEMORY; break; }
        lt_status s = lt_fs_remove_tree(p);
        if (s != LT_OK && st == LT_OK) st = s;
        free(p);
    }
    closedir(d);
    if (rmdir(path) != 0 && st == LT_OK) st = lt_error(LT_ERR_IO, "cannot remove folder %s: %s", path, strerror(errno));
    return st;
}

int lt_fs_dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    return empty;
}

/* ---- folders built aside and renamed as one ---- */

lt_status lt_fs_dir_begin(const char *dir, char **tmp_dir) {
    *tmp_dir = NULL;
    char *parent = parent_of(dir);
    if (!parent) return LT_ERR_OUT_OF_MEMORY;
    lt_status st = lt_mkdirs(parent);
    free(parent);
    if (st != LT_OK) return lt_error_wrap(st, "cannot create folder %s", dir);
    char *tmp = tmp_sibling(dir, "tmp");
    if (!tmp) return LT_ERR_OUT_OF_MEMORY;
    if (mkdir(tmp, 0777) != 0) {
        st = lt_error(LT_ERR_IO, "cannot create folder %s: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    *tmp_dir = tmp;
    return LT_OK;
}

void lt_fs_dir_abort(char *tmp_dir) {
    if (!tmp_dir) return;
    char saved[4096];
    snprintf(saved, sizeof saved, "%s", lt_last_error()); /* cleanup must not hide the real error */
    lt_fs_remove_tree(tmp_dir);
    lt_error(LT_OK, "%s", saved);
    free(tmp_dir);
}

lt_status lt_fs_dir_commit(char *tmp_dir, const char *dir) {
    lt_status st = lt_fs_sync_dir(tmp_dir);
    struct stat sb;
    int exists = st == LT_OK && lstat(dir, &sb) == 0;
    if (st == LT_OK && exists) {
        if (!S_ISDIR(sb.st_mode)) st = lt_error(LT_ERR_EXISTS, "%s exists and is not a folder", dir);
#ifdef RENAME_EXCHANGE
        else if (renameat2(AT_FDCWD, tmp_dir, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
            /* tmp_dir now holds the previous folder */
            st = sync_parent(dir);
            lt_fs_remove_tree(tmp_dir);
            free(tmp_dir);
            return st;
        } else if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
            st = lt_error(LT_ERR_IO, "cannot swap %s into place: %s", dir, strerror(errno));
        }
#endif
        if (st == LT_OK) { /* no exchange here: the previous folder moves aside first */
            char *old = tmp_sibling(dir, "old");
            if (!old) st = LT_ERR_OUT_OF_MEMORY;
            else if (rename(dir, old) != 0)
                st = lt_error(LT_ERR_IO, "cannot move the previous %s aside: %s", dir, strerror(errno));
            else if (rename(tmp_dir, dir) != 0) {
                st = lt_error(LT_ERR_IO, "cannot rename %s to %s: %s", tmp_dir, dir, strerror(errno));
                rename(old, dir);
            } else {
                st = sync_parent(dir);
                lt_fs_remove_tree(old);
            }
            free(old);
            if (st == LT_OK) { free(tmp_dir); return LT_OK; }
        }
    } else if (st == LT_OK) {
        if (rename(tmp_dir, dir) != 0) st = lt_error(LT_ERR_IO, "cannot rename %s to %s: %s", tmp_dir, dir, strerror(errno));
        else st = sync_parent(dir);
        if (st == LT_OK) { free(tmp_dir); return LT_OK; }
    }
    lt_fs_dir_abort(tmp_dir);
    return st;
}

/* ---- what a killed run leaves behind ---- */

/* "<base>.tmp-<pid>-<n>" or "<base>.old-<pid>-<n>" (kind 1 / 2), the older "<base>.tmp.<pid>"
 * files (kind 1) and "checkpoint-N.tmp" / ".old" folders (kind 1 / 2, pid 0); 0 otherwise.
 * *base_len is the length of <base>. */
static int temp_kind(const char *name, long *pid, size_t *base_len) {
    size_t n = strlen(name);
    *pid = 0;
    for (size_t i = n; i-- > 0;) {
        if (name[i] != '.') continue;
        const char *s = name + i + 1;
        int kind = !strncmp(s, "tmp-", 4) ? 1 : !strncmp(s, "old-", 4) ? 2 : 0;
        if (kind) {
            char *end;
            long p = strtol(s + 4, &end, 10);
            if (end != s + 4 && *end == '-' && end[1]) {
                char *end2;
                strtoul(end + 1, &end2, 10);
                if (!*end2) { *pid = p; *base_len = i; return kind; }
            }
        }
        if (!strncmp(s, "tmp.", 4)) {
            char *end;
            long p = strtol(s + 4, &end, 10);
            if (end != s + 4 && !*end) { *pid = p; *base_len = i; return 1; }
        }
        if (!strncmp(name, "checkpoint-", 11) && (!strcmp(s, "tmp") || !strcmp(s, "old"))) {
            *base_len = i;
            return s[0] == 't' ? 1 : 2;
        }
        break; /* only the last dot counts */
    }
    return 0;
}

int lt_fs_is_temp_name(const char *name) {
    long pid;
    size_t bl;
    return temp_kind(name, &pid, &bl) != 0;
}

int lt_fs_clean_stale(const char *dir, const char *only_base) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    char saved[4096];
    snprintf(saved, sizeof saved, "%s", lt_last_error());
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid;
        size_t bl;
        int kind = temp_kind(e->d_name, &pid, &bl);
        if (!kind) continue;
        if (only_base && (strlen(only_base) != bl || strncmp(e->d_name, only_base, bl))) continue;
        if (pid > 0 && pid == (long)getpid()) continue;
        if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
            LT_LOGW("%s/%s: a temporary of process %ld, which is still running; left alone", dir, e->d_name, pid);
            continue;
        }
        char *p = lt_path_join(dir, e->d_name);
        char *base = p ? lt_strndup(p, strlen(dir) + (dir[strlen(dir) - 1] == '/' ? 0 : 1) + bl) : NULL;
        if (!p || !base) { free(p); free(base); break; }
        if (kind == 2 && access(base, F_OK) != 0 && rename(p, base) == 0) {
            LT_LOGW("%s: restored from %s, left aside by a run that was killed while replacing it", base, p);
        } else if (lt_fs_remove_tree(p) == LT_OK) {
            LT_LOGW("removed %s, a temporary left by a run that was killed or failed%s", p,
                    pid > 0 ? "" : " (an older loratune)");
            n++;
        }
        free(p);
        free(base);
    }
    closedir(d);
    lt_error(LT_OK, "%s", saved);
    return n;
}

char *lt_fs_first_missing(const char *path) {
    if (access(path, F_OK) == 0) return NULL;
    char *p = lt_strdup(path);
    if (!p) return NULL;
    /* walk up while the parent is missing too */
    for (;;) {
        char *slash = strrchr(p, '/');
        if (!slash || slash == p) break;
        *slash = 0;
        if (access(p, F_OK) == 0) { *slash = '/'; break; }
    }
    return p;
}
