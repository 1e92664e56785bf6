// memfd mappings: a memfd ("rt-memfd", 64 KiB) mapped MAP_SHARED twice, its fd then closed (only the
// mappings hold it). /check: both mappings are still memfd:rt-memfd shared mappings, hold the contents
// and alias each other.
#include "http.h"

#include <sys/mman.h>

#define LEN 65536
static char* a;
static char* b;

static int named_memfd(const void* addr) {
    FILE* f = fopen("/proc/self/maps", "re");
    char line[512];
    int ok = 0;
    unsigned long s, e;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%lx-%lx", &s, &e) == 2 && (unsigned long)addr >= s && (unsigned long)addr < e)
            ok = strstr(line, "/memfd:rt-memfd") != NULL;
    if (f) fclose(f);
    return ok;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    RT_CHECK(r, strcmp(rt_perms_at(a), "rw-s") == 0 && strcmp(rt_perms_at(b), "rw-s") == 0,
             "perms '%s' and '%s'", rt_perms_at(a), rt_perms_at(b));
    RT_CHECK(r, named_memfd(a) && named_memfd(b), "the mappings are no longer memfd:rt-memfd");
    RT_CHECK(r, strcmp(a, "memfd state") == 0 && strcmp(a + LEN - 64, "tail") == 0, "contents lost: '%.16s'",
             a);
    a[200] = 'Q';
    RT_CHECK(r, b[200] == 'Q', "the two mappings no longer alias");
    a[200] = 0;
    if (!r->failed) rt_add(r, "ok memfd contents kept, both mappings alias");
    return 1;
}

int main(void) {
    int fd = memfd_create("rt-memfd", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, LEN) != 0) rt_die("memfd");
    a = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    b = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED || b == MAP_FAILED) rt_die("mmap");
    close(fd);
    strcpy(a, "memfd state");
    strcpy(a + LEN - 64, "tail");
    rt_serve("memfd-map", handle);
}
