// Clocks across a restore: CLOCK_MONOTONIC and CLOCK_BOOTTIME continue from the checkpoint (the
// restorer's time namespace), CLOCK_REALTIME keeps the wall time. /check asserts that no clock went
// backwards and that monotonic time did not run ahead of wall time; /clocks reports how far each
// clock moved since ready (in ms) for the harness, which waits between snapshot and restore.
#include "http.h"

static struct timespec at_ready[3];
static const clockid_t kClocks[3] = {CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_REALTIME};

static double elapsed_ms(int k) {
    struct timespec now;
    clock_gettime(kClocks[k], &now);
    return (double)(now.tv_sec - at_ready[k].tv_sec) * 1e3 +
           (double)(now.tv_nsec - at_ready[k].tv_nsec) / 1e6;
}

static int handle(const char* path, struct rt_reply* r) {
    double mono = elapsed_ms(0), boot = elapsed_ms(1), real = elapsed_ms(2);
    if (strcmp(path, "/clocks") == 0) {
        rt_add(r, "ok monotonic %.0f boottime %.0f realtime %.0f", mono, boot, real);
        return 1;
    }
    if (strcmp(path, "/check") != 0) return 0;
    RT_CHECK(r, mono >= 0 && boot >= 0, "a clock went backwards (monotonic %.1f ms, boottime %.1f ms)", mono,
             boot);
    RT_CHECK(r, mono <= real + 50 && boot <= real + 50,
             "monotonic time ran ahead of wall time (%.1f > %.1f ms)", mono, real);
    struct timespec res;
    RT_CHECK(r, clock_getres(CLOCK_MONOTONIC, &res) == 0 && res.tv_nsec == 1, "clock_getres");
    if (!r->failed)
        rt_add(r, "ok monotonic +%.1f ms, boottime +%.1f ms, realtime +%.1f ms", mono, boot, real);
    return 1;
}

int main(void) {
    int lfd = rt_listen();
    for (int k = 0; k < 3; ++k) clock_gettime(kClocks[k], &at_ready[k]);
    rt_serve_on(lfd, "clocks", handle);
}
