// A MAP_SHARED read-only mapping of a read-only file (as loaders and databases map data). /check: the
// mapping is still there, shared (r--s), and reads the file's contents.
#include "http.h"
#include "data.h"

#include <fcntl.h>
#include <sys/mman.h>

#define PG 4096
static char* map;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    RT_CHECK(r, strcmp(rt_perms_at(map), "r--s") == 0, "perms '%s', want r--s", rt_perms_at(map));
    RT_CHECK(r, rt_data_matches(map, 0, RT_DATA_PAGES * PG), "contents differ from data.bin");
    if (!r->failed) rt_add(r, "ok shared read-only mapping of data.bin intact");
    return 1;
}

int main(void) {
    int fd = open(RT_DATA_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) rt_die("open data.bin");
    map = mmap(NULL, RT_DATA_PAGES * PG, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) rt_die("mmap");
    close(fd);
    volatile char sink = map[0];
    (void)sink;
    rt_serve("file-shared-ro", handle);
}
