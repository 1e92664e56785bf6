// A private writable mapping of a read-only file (data.bin, 16 pages) with pages 1 and 5 written
// (copied on write) and the others only read. Plus a read-only private mapping of the same file at
// a 2-page offset. /check: the written pages hold what was written, the others still equal the file,
// and the mapping is still backed by data.bin (maps shows the path and offset).
#include "http.h"
#include "data.h"

#include <fcntl.h>
#include <sys/mman.h>

#define PG 4096
static char* map;
static char* ro;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    for (int i = 0; i < RT_DATA_PAGES; ++i) {
        char* p = map + i * PG;
        if (i == 1 || i == 5) {
            char want[64];
            snprintf(want, sizeof want, "written page %d", i);
            RT_CHECK(r, strcmp(p, want) == 0, "written page %d holds '%.20s'", i, p);
            RT_CHECK(r, rt_data_matches(p + 64, (size_t)i * PG + 64, PG - 64),
                     "tail of written page %d changed", i);
        } else {
            RT_CHECK(r, rt_data_matches(p, (size_t)i * PG, PG), "unwritten page %d differs from data.bin", i);
        }
    }
    RT_CHECK(r, rt_data_matches(ro, 2 * PG, 4 * PG),
             "read-only mapping at offset 2 pages differs from data.bin");
    RT_CHECK(r, strcmp(rt_perms_at(map), "rw-p") == 0, "writable mapping perms '%s'", rt_perms_at(map));
    RT_CHECK(r, strcmp(rt_perms_at(ro), "r--p") == 0, "read-only mapping perms '%s'", rt_perms_at(ro));
    FILE* f = fopen("/proc/self/maps", "re");
    char line[512];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, off;
        if (sscanf(line, "%lx-%*x %*s %lx", &s, &off) == 2 && strstr(line, "/data.bin")) {
            if (s == (unsigned long)map && off == 0) found |= 1;
            if (s == (unsigned long)ro && off == 2 * PG) found |= 2;
        }
    }
    if (f) fclose(f);
    RT_CHECK(r, found == 3, "maps does not show both data.bin mappings at their offsets (found %d)", found);
    map[9 * PG] = 'X';  // still writable, privately
    RT_CHECK(r, map[9 * PG] == 'X', "write to page 9 did not stick");
    map[9 * PG] = 'p';
    if (!r->failed) rt_add(r, "ok pages 1 and 5 keep their private copies, 14 pages still read data.bin");
    return 1;
}

int main(void) {
    int fd = open(RT_DATA_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) rt_die("open data.bin");
    map = mmap(NULL, RT_DATA_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    ro = mmap(NULL, 4 * PG, PROT_READ, MAP_PRIVATE, fd, 2 * PG);
    if (map == MAP_FAILED || ro == MAP_FAILED) rt_die("mmap");
    close(fd);
    volatile char sink = 0;
    for (int i = 0; i < RT_DATA_PAGES; ++i) sink ^= map[i * PG];  // every page in the page cache
    (void)sink;
    snprintf(map + 1 * PG, 64, "written page 1");
    snprintf(map + 5 * PG, 64, "written page 5");
    rt_serve("file-private-cow", handle);
}
