/* rpoguard bench: an LD_PRELOAD shim that adds RPOGUARD_BENCH_CLOCK_SHIFT_S seconds to CLOCK_REALTIME (clockshift.py). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long shift_s;
static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int (*real_gettimeofday)(struct timeval *, void *);

__attribute__((constructor)) static void init(void) {
    const char *value = getenv("RPOGUARD_BENCH_CLOCK_SHIFT_S");
    shift_s = value ? strtol(value, NULL, 10) : 0;
    real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    real_gettimeofday = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    int rc = real_clock_gettime(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += shift_s;
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    int rc = real_gettimeofday(tv, tz);
    if (rc == 0 && tv) tv->tv_sec += shift_s;
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    real_clock_gettime(CLOCK_REALTIME, &ts);
    time_t now = ts.tv_sec + shift_s;
    if (out) *out = now;
    return now;
}
