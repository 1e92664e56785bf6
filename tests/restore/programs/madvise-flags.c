// madvise advice kept per VMA (smaps VmFlags): MADV_WIPEONFORK (wf), MADV_DONTFORK (dc),
// MADV_DONTDUMP (dd), MADV_NOHUGEPAGE (nh), MADV_SEQUENTIAL (sr), MADV_RANDOM (rr), and a
// MAP_NORESERVE region (nr), each on its own region holding data. /check: smaps shows each flag on
// its region, the data is intact, and a forked child sees the WIPEONFORK region zeroed and the
// DONTFORK region unmapped (it reads it through /proc/self/mem: EIO).
#include "http.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>

struct region {
    const char* flag;
    int advice;  // -1: MAP_NORESERVE instead
    char* addr;
};
static struct region regions[] = {{"wf", MADV_WIPEONFORK, 0},
                                  {"dc", MADV_DONTFORK, 0},
                                  {"dd", MADV_DONTDUMP, 0},
                                  {"nh", MADV_NOHUGEPAGE, 0},
                                  {"sr", MADV_SEQUENTIAL, 0},
                                  {"rr", MADV_RANDOM, 0},
                                  {"nr", -1, 0}};
#define NREG (sizeof regions / sizeof regions[0])
#define LEN (4 * 4096)

// The VmFlags line of the VMA starting at `addr` in /proc/self/smaps.
static int vma_has_flag(char* addr, const char* flag) {
    FILE* f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0, found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = s == (unsigned long)addr;
        } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            char want[8];
            snprintf(want, sizeof want, " %s", flag);
            found = strstr(line + 7, want) != NULL;
        }
    }
    if (f) fclose(f);
    return found;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    for (size_t i = 0; i < NREG; ++i) {
        RT_CHECK(r, vma_has_flag(regions[i].addr, regions[i].flag), "region %zu lost VmFlags %s", i,
                 regions[i].flag);
        RT_CHECK(r, regions[i].addr[100] == (char)('A' + i), "region %zu lost its data", i);
    }
    int p[2];
    if (pipe(p) != 0) rt_die("pipe");
    pid_t c = fork();
    if (c == 0) {
        char verdict[2] = {regions[0].addr[100] == 0 ? 'z' : 'k', '?'};
        char byte;
        int mem = open("/proc/self/mem", O_RDONLY);
        verdict[1] = pread(mem, &byte, 1, (off_t)(uintptr_t)(regions[1].addr + 100)) == 1 ? 'm' : 'u';
        if (write(p[1], verdict, 2) != 2) _exit(1);
        _exit(0);
    }
    char got[2] = {0, 0};
    if (read(p[0], got, 2) != 2) rt_fail(r, "the child did not answer");
    waitpid(c, NULL, 0);
    close(p[0]);
    close(p[1]);
    RT_CHECK(r, got[0] == 'z', "a forked child sees the WIPEONFORK region's data");
    RT_CHECK(r, got[1] == 'u', "a forked child has the DONTFORK region mapped");
    if (!r->failed) rt_add(r, "ok wf dc dd nh sr rr nr kept, fork honours them");
    return 1;
}

int main(void) {
    for (size_t i = 0; i < NREG; ++i) {
        int flags = MAP_PRIVATE | MAP_ANONYMOUS | (regions[i].advice < 0 ? MAP_NORESERVE : 0);
        // Guard pages around each region keep the kernel from merging neighbours.
        char* g = mmap(NULL, LEN + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (g == MAP_FAILED) rt_die("mmap guard");
        char* a = mmap(g + 4096, LEN, PROT_READ | PROT_WRITE, flags | MAP_FIXED, -1, 0);
        if (a == MAP_FAILED) rt_die("mmap");
        if (regions[i].advice >= 0 && madvise(a, LEN, regions[i].advice) != 0) rt_die("madvise");
        a[100] = (char)('A' + i);
        regions[i].addr = a;
    }
    rt_serve("madvise-flags", handle);
}
