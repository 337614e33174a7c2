/*
 * clockshift: an LD_PRELOAD library that makes one process's wall clock
 * jump, for crash.py's clock scenario.
 *
 * The shift, in whole seconds (negative: back), is read from the file named
 * by CLOCKSHIFT_FILE, again at most every 50 ms, so the harness moves the
 * clock mid-run by rewriting that file. CLOCK_REALTIME (and its coarse
 * variant), gettimeofday, time and timespec_get are shifted; the monotonic
 * clocks are not, as a real clock step leaves them alone.
 *
 * A wait with an absolute wall-clock deadline (cnd_timedwait, and
 * pthread_cond_timedwait on a condition variable of CLOCK_REALTIME) has its
 * deadline shifted back before it reaches the kernel, whose clock did not
 * move: the wait lasts as long as its caller meant. (A real step also
 * stretches or cuts the waits under way at that instant; this does not.)
 *
 * libfaketime does more, but its 0.9.10 hangs librdkafka
 * (wolfcw/libfaketime#503), and nothing here needs more.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

static atomic_llong shift_s;
static atomic_llong next_read_ns;

/* The monotonic clock straight from the kernel: no interposed symbol. */
static long long monotonic_ns(void) {
    struct timespec ts;
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long current_shift(void) {
    long long now = monotonic_ns();
    if (now >= atomic_load(&next_read_ns)) {
        atomic_store(&next_read_ns, now + 50000000LL);
        const char *path = getenv("CLOCKSHIFT_FILE");
        FILE *file = path ? fopen(path, "r") : NULL;
        if (file) {
            long long value;
            if (fscanf(file, "%lld", &value) == 1) {
                atomic_store(&shift_s, value);
            }
            fclose(file);
        }
    }
    return atomic_load(&shift_s);
}

static int is_wall_clock(clockid_t clock) {
    return clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) {
        real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    }
    int result = real(clock, ts);
    if (result == 0 && is_wall_clock(clock)) {
        ts->tv_sec += current_shift();
    }
    return result;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    static int (*real)(struct timeval *, void *);
    if (!real) {
        real = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
    }
    int result = real(tv, tz);
    if (result == 0) {
        tv->tv_sec += current_shift();
    }
    return result;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}

int timespec_get(struct timespec *ts, int base) {
    if (base != TIME_UTC || clock_gettime(CLOCK_REALTIME, ts) != 0) {
        return 0;
    }
    return base;
}

/* `deadline` on the shifted wall clock, as the kernel's wall clock. */
static struct timespec unshifted(const struct timespec *deadline) {
    struct timespec real = *deadline;
    real.tv_sec -= current_shift();
    return real;
}

int cnd_timedwait(cnd_t *restrict cond, mtx_t *restrict mutex,
                  const struct timespec *restrict deadline) {
    static int (*real)(cnd_t *, mtx_t *, const struct timespec *);
    if (!real) {
        real = (int (*)(cnd_t *, mtx_t *, const struct timespec *))dlsym(RTLD_NEXT,
                                                                            "cnd_timedwait");
    }
    struct timespec kernel = unshifted(deadline);
    return real(cond, mutex, &kernel);
}

/* glibc keeps a condition variable's clock in bit 1 of __wrefs
 * (pthread_cond_common.c): 0 for CLOCK_REALTIME. */
static int waits_on_wall_clock(const pthread_cond_t *cond) {
    return ((cond->__data.__wrefs >> 1) & 1) == 0;
}

int pthread_cond_timedwait(pthread_cond_t *restrict cond, pthread_mutex_t *restrict mutex,
                           const struct timespec *restrict deadline) {
    static int (*real)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
    if (!real) {
        real = (int (*)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *))dlsym(
            RTLD_NEXT, "pthread_cond_timedwait");
    }
    if (!waits_on_wall_clock(cond)) {
        return real(cond, mutex, deadline);
    }
    struct timespec kernel = unshifted(deadline);
    return real(cond, mutex, &kernel);
}
