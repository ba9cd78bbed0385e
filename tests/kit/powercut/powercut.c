/* powercut.c: an LD_PRELOAD shim that keeps the "durable image" of a directory, so that a
 * test can simulate a power cut (writes not yet fsynced are discarded).
 *
 * Environment:
 *   POWERCUT_DIR     absolute, canonical path of the watched directory (the agent's data dir)
 *   POWERCUT_SHADOW  directory holding the durable image (outside POWERCUT_DIR)
 * Without both, every call passes straight through.
 *
 * Model of durability (what survives a power cut):
 * - File data: a file's content becomes durable only when fsync() or fdatasync() is called
 *   on it (on any descriptor of it, by this process). At that moment its *current* content
 *   (the page cache, including what other descriptors or an earlier, killed process wrote)
 *   is what the disk holds: the ranges written since the last fsync are copied from the
 *   real file into the shadow copy, and the shadow copy takes the real file's size.
 *   The first fsync of a file in a process copies the whole file, because writes made by an
 *   earlier (SIGKILLed) process were not tracked: a real fsync would flush them too.
 * - Names: creating, deleting and renaming files (open O_CREAT, unlink, rename, mkdir) become
 *   durable only when fsync() is called on the directory: the directory's whole listing at
 *   that moment becomes its durable listing (POSIX-strict; ext4 is usually more generous).
 *   A name that is durable but whose data was never fsynced comes back as an empty file.
 *   A file never named in a durable listing vanishes.
 * - Permissions: a file's mode is taken at its fsync (and listed at its directory's fsync,
 *   which is what a file never fsynced comes back with).
 * - Identity: a file is known by a "user.powercut" extended attribute (a unique id set on
 *   first sight), not by its inode number, which the file system reuses.
 * - Seen: pwrite, pwrite64, pwritev, pwritev64, pwritev2 (exact ranges); write, writev
 *   (the whole file is re-copied at the next fsync); ftruncate, ftruncate64 (size change).
 *   That is everything SQLite's unix VFS and Python's file objects use on Linux.
 * - Not seen (documented limits): writes through a shared mmap after the first fsync (SQLite
 *   maps only its -shm file, which it never fsyncs), stdio (fwrite goes through libc
 *   internals), sync()/syncfs(), path-based truncate(), copy_file_range/sendfile, hard links
 *   and copies that carry the xattr, and O_DIRECT/O_SYNC opens (treated as unsynced).
 * - A process killed during a flush leaves a shadow copy with some ranges copied and some
 *   not: a file torn at fsync, which is also what a real power cut during fsync may leave.
 *
 * The test kit (tests/kit/powercut.py) records the baseline image and restores it after a
 * SIGKILL: that restore is the power cut.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define XATTR "user.powercut"
#define ID_MAX 64
#define MAX_FDS 65536
#define MAX_RANGES 4096
#define MAX_FILES 1024

enum { FD_UNKNOWN = 0, FD_FILE = 1, FD_DIR = 2, FD_OTHER = 3 };

struct range {
    off_t start, end;
};

struct file {
    dev_t dev;
    ino_t ino;
    char id[ID_MAX];
    int full; /* copy the whole file at the next fsync */
    int used;
    size_t nranges;
    struct range ranges[MAX_RANGES];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char watched[PATH_MAX];
static size_t watched_len;
static char shadow[PATH_MAX];
static int enabled;
static unsigned char fd_kind[MAX_FDS];
static short fd_file[MAX_FDS];
static struct file *files;
static unsigned long id_counter;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_close)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);

#define RESOLVE(name) real_##name = dlsym(RTLD_NEXT, #name)

__attribute__((constructor)) static void powercut_init(void) {
    RESOLVE(write);
    RESOLVE(writev);
    RESOLVE(pwrite);
    RESOLVE(pwrite64);
    RESOLVE(pwritev);
    RESOLVE(pwritev64);
    RESOLVE(pwritev2);
    RESOLVE(ftruncate);
    RESOLVE(ftruncate64);
    RESOLVE(fsync);
    RESOLVE(fdatasync);
    RESOLVE(close);
    RESOLVE(dup2);
    RESOLVE(dup3);
    const char *dir = getenv("POWERCUT_DIR");
    const char *shadow_dir = getenv("POWERCUT_SHADOW");
    if (dir == NULL || shadow_dir == NULL || dir[0] != '/' || shadow_dir[0] != '/') return;
    if (strlen(dir) >= sizeof watched || strlen(shadow_dir) >= sizeof shadow - 64) return;
    strcpy(watched, dir);
    watched_len = strlen(watched);
    while (watched_len > 1 && watched[watched_len - 1] == '/') watched[--watched_len] = '\0';
    strcpy(shadow, shadow_dir);
    files = calloc(MAX_FILES, sizeof *files);
    if (files == NULL) return;
    enabled = 1;
}

static void die(const char *what, const char *path) {
    /* The durable image can no longer be trusted: stop loudly rather than lie. */
    char message[PATH_MAX + 128];
    int n = snprintf(message, sizeof message, "powercut: %s %s: %s\n", what, path,
                     strerror(errno));
    if (n > 0) real_write(2, message, (size_t)n);
    abort();
}

/* The path of fd relative to the watched directory ("." for itself), or NULL. */
static const char *relative_path(int fd, char *buffer, size_t size) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buffer, size - 1);
    if (n <= 0) return NULL;
    buffer[n] = '\0';
    if (strncmp(buffer, watched, watched_len) != 0) return NULL;
    if (buffer[watched_len] == '\0') return ".";
    if (buffer[watched_len] != '/') return NULL;
    return buffer + watched_len + 1;
}

static void new_id(char *id) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(id, ID_MAX, "%d-%ld%09ld-%lu", (int)getpid(), (long)now.tv_sec, now.tv_nsec,
             ++id_counter);
}

/* The file's id from its xattr, set now if it has none. Returns 0 on success. */
static int file_id(int fd, char *id) {
    ssize_t n = fgetxattr(fd, XATTR, id, ID_MAX - 1);
    if (n > 0) {
        id[n] = '\0';
        return 0;
    }
    new_id(id);
    return fsetxattr(fd, XATTR, id, strlen(id), 0);
}

/* Classify fd (lock held). */
static int classify(int fd) {
    if (fd < 0 || fd >= MAX_FDS) return FD_OTHER;
    if (fd_kind[fd] != FD_UNKNOWN) return fd_kind[fd];
    struct stat st;
    char path[PATH_MAX];
    int kind = FD_OTHER;
    if (fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) &&
        relative_path(fd, path, sizeof path) != NULL) {
        kind = S_ISDIR(st.st_mode) ? FD_DIR : FD_FILE;
    }
    if (kind == FD_FILE) {
        char id[ID_MAX];
        if (file_id(fd, id) != 0) die("cannot set the xattr of", path);
        int slot = -1, free_slot = -1;
        for (int i = 0; i < MAX_FILES; i++) {
            if (files[i].used && strcmp(files[i].id, id) == 0) {
                slot = i;
                break;
            }
            if (!files[i].used && free_slot < 0) free_slot = i;
        }
        if (slot < 0) {
            /* Forget entries of the same inode number: it was reused by a new file. */
            for (int i = 0; i < MAX_FILES; i++)
                if (files[i].used && files[i].dev == st.st_dev && files[i].ino == st.st_ino) {
                    files[i].used = 0;
                    if (free_slot < 0) free_slot = i;
                }
            if (free_slot < 0) die("too many files under", watched);
            slot = free_slot;
            struct file *f = &files[slot];
            f->used = 1;
            f->dev = st.st_dev;
            f->ino = st.st_ino;
            strcpy(f->id, id);
            f->full = 1;
            f->nranges = 0;
        }
        fd_file[fd] = (short)slot;
    }
    fd_kind[fd] = (unsigned char)kind;
    return kind;
}

static void forget_fd(int fd) {
    if (!enabled || fd < 0 || fd >= MAX_FDS) return;
    pthread_mutex_lock(&lock);
    fd_kind[fd] = FD_UNKNOWN;
    pthread_mutex_unlock(&lock);
}

static void add_range(struct file *f, off_t start, off_t end) {
    if (f->full || end <= start) return;
    if (f->nranges > 0) {
        struct range *last = &f->ranges[f->nranges - 1];
        if (start <= last->end && end >= last->start) {
            if (start < last->start) last->start = start;
            if (end > last->end) last->end = end;
            return;
        }
    }
    if (f->nranges == MAX_RANGES) {
        f->full = 1;
        f->nranges = 0;
        return;
    }
    f->ranges[f->nranges].start = start;
    f->ranges[f->nranges].end = end;
    f->nranges++;
}

static void record(int fd, off_t start, ssize_t written, int whole) {
    if (!enabled || written < 0) return;
    if (fd >= 0 && fd < MAX_FDS && __atomic_load_n(&fd_kind[fd], __ATOMIC_RELAXED) == FD_OTHER)
        return;
    pthread_mutex_lock(&lock);
    if (classify(fd) == FD_FILE) {
        struct file *f = &files[fd_file[fd]];
        if (whole) {
            f->full = 1;
            f->nranges = 0;
        } else {
            add_range(f, start, start + written);
        }
    }
    pthread_mutex_unlock(&lock);
}

static void copy_range(int from, int to, off_t start, off_t end, const char *path) {
    char buffer[1 << 16];
    while (start < end) {
        size_t want = (size_t)(end - start) < sizeof buffer ? (size_t)(end - start) : sizeof buffer;
        ssize_t n = pread(from, buffer, want, start);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("cannot read", path);
        if (n == 0) return;
        for (ssize_t done = 0; done < n;) {
            ssize_t m = real_pwrite(to, buffer + done, (size_t)(n - done), start + done);
            if (m < 0 && errno == EINTR) continue;
            if (m < 0) die("cannot write the shadow of", path);
            done += m;
        }
        start += n;
    }
}

/* Make the file behind fd durable in the shadow (lock held). */
static void flush_file(int fd, struct file *f) {
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int from = open(link, O_RDONLY | O_CLOEXEC);
    if (from < 0) die("cannot reopen", link);
    snprintf(target, sizeof target, "%s/data/%s", shadow, f->id);
    int to = open(target, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (to < 0) die("cannot open", target);
    struct stat st;
    if (fstat(from, &st) != 0) die("cannot stat", link);
    if (real_ftruncate(to, st.st_size) != 0) die("cannot size", target);
    if (fchmod(to, st.st_mode & 07777) != 0) die("cannot chmod", target);
    if (f->full) {
        copy_range(from, to, 0, st.st_size, target);
    } else {
        for (size_t i = 0; i < f->nranges; i++) {
            off_t end = f->ranges[i].end < st.st_size ? f->ranges[i].end : st.st_size;
            copy_range(from, to, f->ranges[i].start, end, target);
        }
    }
    f->full = 0;
    f->nranges = 0;
    real_close(to);
    real_close(from);
}

/* Make the directory's current listing durable (lock held). */
static void flush_directory(int fd) {
    char path[PATH_MAX], full[PATH_MAX], listing[PATH_MAX], temporary[PATH_MAX];
    const char *relative = relative_path(fd, path, sizeof path);
    if (relative == NULL) return;
    snprintf(full, sizeof full, "%s", path);
    /* Listings are named "@" for the directory itself, else "@" + its relative path with
     * '/' written as '%'. */
    char name[PATH_MAX];
    size_t j = 0;
    name[j++] = '@';
    if (strcmp(relative, ".") != 0)
        for (const char *c = relative; *c && j + 1 < sizeof name; c++)
            name[j++] = *c == '/' ? '%' : *c;
    name[j] = '\0';
    snprintf(listing, sizeof listing, "%s/dirs/%s", shadow, name);
    snprintf(temporary, sizeof temporary, "%s/dirs/.%s.%d.tmp", shadow, name, (int)getpid());
    FILE *out = fopen(temporary, "w");
    if (out == NULL) die("cannot write", temporary);
    DIR *dir = opendir(full);
    if (dir == NULL) die("cannot list", full);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        struct stat st;
        if (fstatat(dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            fprintf(out, "d\t-\t%o\t%s\n", (unsigned)(st.st_mode & 07777), entry->d_name);
        } else if (S_ISREG(st.st_mode)) {
            int file = openat(dirfd(dir), entry->d_name, O_RDONLY | O_CLOEXEC);
            if (file < 0) continue; /* deleted meanwhile */
            char id[ID_MAX];
            if (file_id(file, id) != 0) die("cannot set the xattr of", entry->d_name);
            real_close(file);
            fprintf(out, "f\t%s\t%o\t%s\n", id, (unsigned)(st.st_mode & 07777), entry->d_name);
        }
    }
    closedir(dir);
    if (fclose(out) != 0) die("cannot write", temporary);
    if (rename(temporary, listing) != 0) die("cannot replace", listing);
}

static void synced(int fd, int result) {
    if (!enabled || result != 0) return;
    pthread_mutex_lock(&lock);
    if (fd >= 0 && fd < MAX_FDS && fd_kind[fd] != FD_UNKNOWN) {
        /* Check the cache: a descriptor closed behind our back (stdio) may be reused. */
        struct stat st;
        if (fd_kind[fd] == FD_FILE &&
            (fstat(fd, &st) != 0 || st.st_ino != files[fd_file[fd]].ino ||
             st.st_dev != files[fd_file[fd]].dev || !files[fd_file[fd]].used))
            fd_kind[fd] = FD_UNKNOWN;
    }
    int kind = classify(fd);
    if (kind == FD_FILE) flush_file(fd, &files[fd_file[fd]]);
    if (kind == FD_DIR) flush_directory(fd);
    pthread_mutex_unlock(&lock);
}

ssize_t write(int fd, const void *buffer, size_t count) {
    ssize_t n = real_write(fd, buffer, count);
    if (n > 0) record(fd, 0, n, 1);
    return n;
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    ssize_t n = real_writev(fd, iov, count);
    if (n > 0) record(fd, 0, n, 1);
    return n;
}

ssize_t pwrite(int fd, const void *buffer, size_t count, off_t offset) {
    ssize_t n = real_pwrite(fd, buffer, count, offset);
    if (n > 0) record(fd, offset, n, 0);
    return n;
}

ssize_t pwrite64(int fd, const void *buffer, size_t count, off_t offset) {
    ssize_t n = real_pwrite64(fd, buffer, count, offset);
    if (n > 0) record(fd, offset, n, 0);
    return n;
}

ssize_t pwritev(int fd, const struct iovec *iov, int count, off_t offset) {
    ssize_t n = real_pwritev(fd, iov, count, offset);
    if (n > 0) record(fd, offset, n, 0);
    return n;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int count, off_t offset) {
    ssize_t n = real_pwritev64(fd, iov, count, offset);
    if (n > 0) record(fd, offset, n, 0);
    return n;
}

ssize_t pwritev2(int fd, const struct iovec *iov, int count, off_t offset, int flags) {
    ssize_t n = real_pwritev2(fd, iov, count, offset, flags);
    if (n > 0) record(fd, offset, n, offset == -1);
    return n;
}

static int truncated(int fd, off_t length, int (*real)(int, off_t)) {
    struct stat st;
    int known = enabled && fstat(fd, &st) == 0;
    int result = real(fd, length);
    if (result == 0 && known) {
        off_t low = length < st.st_size ? length : st.st_size;
        off_t high = length < st.st_size ? st.st_size : length;
        record(fd, low, high - low, 0);
    }
    return result;
}

int ftruncate(int fd, off_t length) { return truncated(fd, length, real_ftruncate); }

int ftruncate64(int fd, off_t length) { return truncated(fd, length, real_ftruncate64); }

int fsync(int fd) {
    int result = real_fsync(fd);
    synced(fd, result);
    return result;
}

int fdatasync(int fd) {
    int result = real_fdatasync(fd);
    synced(fd, result);
    return result;
}

int close(int fd) {
    forget_fd(fd);
    return real_close(fd);
}

int dup2(int old, int new) {
    forget_fd(new);
    return real_dup2(old, new);
}

int dup3(int old, int new, int flags) {
    forget_fd(new);
    return real_dup3(old, new, flags);
}
