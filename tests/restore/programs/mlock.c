// Locked memory: one region mlock'ed (VmFlags lo), one mlock2(MLOCK_ONFAULT) (lo and lf), with data.
// /check: smaps shows the flags on each region (and Locked: for the first), the data is intact.
#include "http.h"

#include <sys/mman.h>
#include <sys/syscall.h>

#define LEN (8 * 4096)
static char *locked, *onfault;

static int smaps_of(char* addr, char* flags, size_t flen, long* locked_kb) {
    FILE* f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0, found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = s == (unsigned long)addr;
        } else if (in && strncmp(line, "Locked:", 7) == 0) {
            *locked_kb = strtol(line + 7, NULL, 10);
        } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(flags, flen, "%s", line + 8);
            found = 1;
        }
    }
    if (f) fclose(f);
    return found;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    char flags[512] = "";
    long kb = 0;
    RT_CHECK(r, smaps_of(locked, flags, sizeof flags, &kb), "no smaps entry for the locked region");
    RT_CHECK(r, strstr(flags, " lo") != NULL || strncmp(flags, "lo", 2) == 0, "locked region VmFlags:%s",
             flags);
    RT_CHECK(r, kb == LEN / 1024, "locked region has %ld kB locked, not %d", kb, LEN / 1024);
    RT_CHECK(r, smaps_of(onfault, flags, sizeof flags, &kb), "no smaps entry for the on-fault region");
    RT_CHECK(r, strstr(flags, " lf") != NULL, "on-fault region VmFlags:%s", flags);
    RT_CHECK(r, locked[5000] == 'L' && onfault[5000] == 'F', "locked data lost");
    if (!r->failed) rt_add(r, "ok mlock and MLOCK_ONFAULT kept");
    return 1;
}

static char* region(void) {
    char* g = mmap(NULL, LEN + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char* a = mmap(g + 4096, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (g == MAP_FAILED || a == MAP_FAILED) rt_die("mmap");
    return a;
}

int main(void) {
    locked = region();
    onfault = region();
    if (mlock(locked, LEN) != 0) rt_die("mlock");
    if (syscall(SYS_mlock2, onfault, LEN, 1 /* MLOCK_ONFAULT */) != 0) rt_die("mlock2");
    locked[5000] = 'L';
    onfault[5000] = 'F';
    rt_serve("mlock", handle);
}
