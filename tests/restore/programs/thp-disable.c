// PR_SET_THP_DISABLE (a flag of the whole address space, shown as THP_enabled in /proc/PID/status).
// /check: PR_GET_THP_DISABLE reads 1 and /proc/self/status says THP_enabled: 0.
#include "http.h"

#include <sys/prctl.h>

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int v = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
    RT_CHECK(r, v == 1, "PR_GET_THP_DISABLE is %d", v);
    FILE* f = fopen("/proc/self/status", "r");
    char line[256];
    int seen = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "THP_enabled:", 12) == 0) {
            seen = 1;
            RT_CHECK(r, strtol(line + 12, NULL, 10) == 0, "status says %s", line);
        }
    if (f) fclose(f);
    RT_CHECK(r, seen, "no THP_enabled line in /proc/self/status");
    if (!r->failed) rt_add(r, "ok THP disabled");
    return 1;
}

int main(void) {
    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0) rt_die("prctl");
    rt_serve("thp-disable", handle);
}
