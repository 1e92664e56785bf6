// The vDSO: clock_gettime/gettimeofday/time go through it, with glibc's cached pointers into the
// [vdso] of the process that booted. /check: the vDSO is still at AT_SYSINFO_EHDR, the clocks work
// (1000 calls each, no syscall fallback crash), CLOCK_MONOTONIC did not go backwards from the value read
// at the snapshot, CLOCK_REALTIME agrees with gettimeofday and time(), and CLOCK_BOOTTIME moves.
#include "http.h"

#include <sys/auxv.h>
#include <sys/time.h>

static struct timespec mono_at_ready;

static unsigned long vdso_start(void) {
    FILE* f = fopen("/proc/self/maps", "re");
    char line[512];
    unsigned long s = 0, found = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "[vdso]") && sscanf(line, "%lx-", &s) == 1) found = s;
    if (f) fclose(f);
    return found;
}

static double secs(struct timespec t) {
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    unsigned long aux = getauxval(AT_SYSINFO_EHDR);
    RT_CHECK(r, aux && aux == vdso_start(), "AT_SYSINFO_EHDR %#lx, [vdso] at %#lx", aux, vdso_start());
    struct timespec prev = {0}, t;
    for (int i = 0; i < 1000; ++i) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        RT_CHECK(r, secs(t) >= secs(prev), "CLOCK_MONOTONIC went backwards between calls");
        prev = t;
    }
    RT_CHECK(r, secs(t) >= secs(mono_at_ready), "CLOCK_MONOTONIC %.3f is before the snapshot's %.3f", secs(t),
             secs(mono_at_ready));
    struct timespec rt;
    struct timeval tv;
    clock_gettime(CLOCK_REALTIME, &rt);
    gettimeofday(&tv, NULL);
    time_t now = time(NULL);
    RT_CHECK(r, rt.tv_sec > 1600000000, "CLOCK_REALTIME %ld is implausible", (long)rt.tv_sec);
    RT_CHECK(r, tv.tv_sec - rt.tv_sec <= 1 && now - rt.tv_sec <= 1,
             "gettimeofday/time disagree with clock_gettime");
    struct timespec b0, b1;
    clock_gettime(CLOCK_BOOTTIME, &b0);
    rt_sleep_ms(20);
    clock_gettime(CLOCK_BOOTTIME, &b1);
    RT_CHECK(r, secs(b1) - secs(b0) >= 0.015, "CLOCK_BOOTTIME moved %.3f s in 20 ms", secs(b1) - secs(b0));
    if (!r->failed)
        rt_add(r, "ok vDSO at %#lx, monotonic +%.3f s since the snapshot", aux,
               secs(t) - secs(mono_at_ready));
    return 1;
}

int main(void) {
    struct timespec t;
    for (int i = 0; i < 10; ++i) clock_gettime(CLOCK_MONOTONIC, &t);  // glibc's vDSO pointers in use
    clock_gettime(CLOCK_MONOTONIC, &mono_at_ready);
    rt_serve("vdso-clock", handle);
}
