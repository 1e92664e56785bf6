// The heap's brk: the program grows the heap with sbrk and malloc before the snapshot. /check: sbrk(0)
// is where it was, the sbrk'd memory kept its contents, sbrk can grow it by 8 MiB (writable) and shrink
// it back, and malloc can allocate 64 MiB more in small chunks (heap growth) and free it.
#include "http.h"

#include <malloc.h>

static char* brk_at_ready;
static char* grown;

static unsigned long heap_end(void) {
    FILE* f = fopen("/proc/self/maps", "re");
    char line[512];
    unsigned long s, e, end = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "[heap]") && sscanf(line, "%lx-%lx", &s, &e) == 2) end = e;
    if (f) fclose(f);
    return end;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    char* now = sbrk(0);
    RT_CHECK(r, now == brk_at_ready, "brk is %p, was %p at the snapshot", (void*)now, (void*)brk_at_ready);
    // Informational only: under the cow strategy the heap is a private mapping of the image's page
    // file, which the kernel does not label [heap] (brk itself still works, checked below).
    unsigned long end = heap_end();
    int labelled = end == (((unsigned long)now + 4095) & ~4095UL);
    RT_CHECK(r, strcmp(grown, "grown by sbrk") == 0, "sbrk'd memory lost its contents");
    char* more = sbrk(8 << 20);
    RT_CHECK(r, more == now, "sbrk(8 MiB) returned %p, not the old brk %p", (void*)more, (void*)now);
    if (more != (char*)-1) {
        memset(more, 0xab, 8 << 20);
        sbrk(-(8 << 20));
    }
    static void* chunks[65536];
    int n = 0;
    for (; n < 65536; ++n) {
        chunks[n] = malloc(1000);
        if (!chunks[n]) break;
        memset(chunks[n], n, 1000);
    }
    RT_CHECK(r, n == 65536, "malloc failed after %d chunks", n);
    for (int i = 0; i < n; ++i) free(chunks[i]);
    malloc_trim(0);
    if (!r->failed)
        rt_add(r, "ok brk %p kept, sbrk and 64 MiB of malloc work; [heap] label %s", (void*)now,
               labelled ? "present" : "absent (heap is not anonymous memory)");
    return 1;
}

int main(void) {
    mallopt(M_MMAP_THRESHOLD, 1 << 30);  // everything through brk
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    void* keep[1000];
    for (int i = 0; i < 1000; ++i) keep[i] = malloc(4000);
    for (int i = 0; i < 1000; i += 2) free(keep[i]);
    grown = sbrk(1 << 20);
    if (grown == (char*)-1) rt_die("sbrk");
    strcpy(grown, "grown by sbrk");
    brk_at_ready = sbrk(0);
    rt_serve("brk-growth", handle);
}
