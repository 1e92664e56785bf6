// Private anonymous mappings with holes and protections: a 64-page region with PROT_NONE guard pages at
// both ends, a read-only page in the middle (written before it was protected), a munmap'd hole, pages
// never touched, pages written with zeros and pages with data; plus a PROT_NONE 1 GiB reservation
// (like a JVM heap) with one committed read-write page. /check verifies every page's permissions via
// /proc/self/maps and its contents, and that mprotect on the reservation still works.
#include "http.h"

#include <sys/mman.h>

#define PG 4096UL
#define NPAGES 64
static unsigned char* region;
static unsigned char* reserve;

static int kind(int i) {  // 0 guard, 1 data, 2 untouched, 3 zero-written, 4 read-only data, 5 hole
    if (i == 0 || i == NPAGES - 1) return 0;
    if (i >= 20 && i < 24) return 5;
    if (i == 30) return 4;
    if (i % 5 == 0) return 2;
    if (i % 7 == 0) return 3;
    return 1;
}

static unsigned char byte_of(int page, size_t off) {
    return (unsigned char)(page * 31 + off * 7 + 1);
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    static const char* want_perms[] = {"---p", "rw-p", "rw-p", "rw-p", "r--p", ""};
    for (int i = 0; i < NPAGES; ++i) {
        unsigned char* p = region + i * PG;
        const char* perms = rt_perms_at(p);
        int k = kind(i);
        RT_CHECK(r, strcmp(perms, want_perms[k]) == 0, "page %d: perms '%s', want '%s'", i, perms,
                 want_perms[k]);
        if (k == 1 || k == 4) {
            for (size_t o = 0; o < PG; ++o)
                if (p[o] != byte_of(i, o)) {
                    rt_fail(r, "page %d byte %zu is %u", i, o, p[o]);
                    break;
                }
        } else if (k == 2 || k == 3) {
            for (size_t o = 0; o < PG; ++o)
                if (p[o]) {
                    rt_fail(r, "page %d (%s) byte %zu is %u, not 0", i, k == 2 ? "untouched" : "zeroed", o,
                            p[o]);
                    break;
                }
        }
    }
    RT_CHECK(r, strcmp(rt_perms_at(reserve), "rw-p") == 0, "reservation's committed page: '%s'",
             rt_perms_at(reserve));
    RT_CHECK(r, strcmp(rt_perms_at(reserve + PG), "---p") == 0, "reservation: '%s'",
             rt_perms_at(reserve + PG));
    RT_CHECK(r, strcmp((char*)reserve, "committed") == 0, "reservation's page holds '%.16s'", (char*)reserve);
    RT_CHECK(r, mprotect(reserve + 512 * PG, PG, PROT_READ | PROT_WRITE) == 0,
             "mprotect in the reservation: %s", strerror(errno));
    reserve[512 * PG] = 1;
    mprotect(reserve + 512 * PG, PG, PROT_NONE);
    if (!r->failed)
        rt_add(r, "ok 64 pages: guards, hole, read-only, untouched, zeroed and data pages as they were");
    return 1;
}

int main(void) {
    region = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    reserve = mmap(NULL, 1UL << 30, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED || reserve == MAP_FAILED) rt_die("mmap");
    for (int i = 0; i < NPAGES; ++i) {
        unsigned char* p = region + i * PG;
        int k = kind(i);
        if (k == 1 || k == 4)
            for (size_t o = 0; o < PG; ++o) p[o] = byte_of(i, o);
        if (k == 3) memset(p, 0, PG);
    }
    mprotect(region, PG, PROT_NONE);
    mprotect(region + (NPAGES - 1) * PG, PG, PROT_NONE);
    mprotect(region + 30 * PG, PG, PROT_READ);
    munmap(region + 20 * PG, 4 * PG);
    mprotect(reserve, PG, PROT_READ | PROT_WRITE);
    strcpy((char*)reserve, "committed");
    rt_serve("mmap-regions", handle);
}
