/*
 * A disk that fails reads, for tests: preloaded into the daemon
 * (LD_PRELOAD), it makes pread() of any file whose path contains
 * $EDDY_FAULT_PATH fail with EIO while the file $EDDY_FAULT_SWITCH exists.
 * RocksDB reads its table files with pread(), so a test turns the state
 * store's disk bad and good again by creating and removing the switch.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int failing(int fd) {
    const char *sw = getenv("EDDY_FAULT_SWITCH");
    const char *pattern = getenv("EDDY_FAULT_PATH");
    if (sw == NULL || pattern == NULL || access(sw, F_OK) != 0) {
        return 0;
    }
    char link[64];
    char path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) {
        return 0;
    }
    path[n] = '\0';
    return strstr(path, pattern) != NULL;
}

typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);

static ssize_t call_real(const char *name, int fd, void *buf, size_t count, off_t offset) {
    pread_fn real = (pread_fn)dlsym(RTLD_NEXT, name);
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(fd, buf, count, offset);
}

ssize_t pread(int fd, void *buf, size_t count, off_t offset) {
    if (failing(fd)) {
        errno = EIO;
        return -1;
    }
    return call_real("pread", fd, buf, count, offset);
}

ssize_t pread64(int fd, void *buf, size_t count, off_t offset) {
    if (failing(fd)) {
        errno = EIO;
        return -1;
    }
    return call_real("pread64", fd, buf, count, offset);
}
