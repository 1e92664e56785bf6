// Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, 64 KiB) with contents, plus a second view of the
// same pages made by mremap(old_size 0). /check: both views are r/w shared (rw-s), hold the contents,
// and still alias: a write through one is seen through the other.
#include "http.h"

#include <sys/mman.h>

#define LEN 65536
static char* a;
static char* b;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    RT_CHECK(r, strcmp(rt_perms_at(a), "rw-s") == 0, "first view perms '%s'", rt_perms_at(a));
    RT_CHECK(r, strcmp(rt_perms_at(b), "rw-s") == 0, "second view perms '%s'", rt_perms_at(b));
    RT_CHECK(r, strcmp(a, "shared state") == 0 && strcmp(a + LEN - 64, "tail") == 0, "contents lost: '%.16s'",
             a);
    a[100] = 'Z';
    RT_CHECK(r, b[100] == 'Z', "the two views no longer alias (write through one not seen in the other)");
    a[100] = 0;
    if (!r->failed) rt_add(r, "ok shared anonymous memory kept its contents and its two views alias");
    return 1;
}

int main(void) {
    a = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) rt_die("mmap");
    b = mremap(a, 0, LEN, MREMAP_MAYMOVE);
    if (b == MAP_FAILED) rt_die("mremap");
    strcpy(a, "shared state");
    strcpy(a + LEN - 64, "tail");
    if (strcmp(b, "shared state") != 0) rt_die("alias");
    rt_serve("shared-anon", handle);
}
