// Memory for the lazy strategy's page server: a 128 MiB heap with a pattern in three MiBs of four
// and zeros in the fourth (zero pages are never saved: the server maps the zero page there), and
// three 16-32 MiB regions that GET /events changes while the server may still be filling them:
// one moved with mremap, one partly dropped with MADV_DONTNEED (it must then read zeros), one
// checked by a forked child. /check verifies the heap and answers "ok <heap address>". GET /churn
// starts four threads that drop a page of the dropped region and read it again, without end: a
// userfaultfd event and a fault each, as fast as the page server answers them.
#include "http.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define MIB (1UL << 20)
#define HEAP (128 * MIB)
#define MOVED (32 * MIB)
#define DROPPED (16 * MIB)
#define FORKED (16 * MIB)

static uint64_t *heap, *moved, *dropped, *forked;

static uint64_t value(uint64_t salt, uint64_t i) {
    uint64_t x = (i + salt) * 0x9E3779B97F4A7C15ULL + 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

static uint64_t* region(size_t size, uint64_t salt, int zero_quarter) {
    uint64_t* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) rt_die("mmap");
    for (uint64_t i = 0; i < size / 8; ++i)
        p[i] = zero_quarter && (i / (MIB / 8)) % 4 == 3 ? 0 : value(salt, i);
    return p;
}

// Words of `p` (size bytes) that differ from the pattern; `zero_from`: words from there on must be 0.
static uint64_t differ(const uint64_t* p, size_t size, uint64_t salt, int zero_quarter, uint64_t zero_from) {
    uint64_t bad = 0;
    for (uint64_t i = 0; i < size / 8; ++i) {
        uint64_t want = i >= zero_from || (zero_quarter && (i / (MIB / 8)) % 4 == 3) ? 0 : value(salt, i);
        bad += p[i] != want;
    }
    return bad;
}

static void* churn(void* page) {
    for (;;) {
        madvise(page, 4096, MADV_DONTNEED);
        (void)*(volatile uint64_t*)page;
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/churn") == 0) {
        for (int i = 0; i < 4; ++i) {
            pthread_t t;
            RT_CHECK(r, pthread_create(&t, NULL, churn, (char*)dropped + (size_t)i * 4096) == 0,
                     "pthread_create");
        }
        if (!r->failed) rt_add(r, "ok churning");
        return 1;
    }
    if (strcmp(path, "/check") == 0) {
        // The kernel reads served memory first (a write() from it into a pipe): a userfaultfd that
        // handles only user-mode faults would make that write fail with EFAULT.
        int ends[2];
        RT_CHECK(r, pipe(ends) == 0, "pipe: %s", strerror(errno));
        const uint64_t* from_kernel = heap + (HEAP - 2 * MIB) / 8;  // no user-mode access before this
        uint64_t copy[512];
        ssize_t w = write(ends[1], from_kernel, sizeof copy);
        RT_CHECK(r, w == (ssize_t)sizeof copy, "write() from served memory: %s",
                 w < 0 ? strerror(errno) : "short");
        if (w == (ssize_t)sizeof copy) {
            RT_CHECK(r, read(ends[0], copy, sizeof copy) == (ssize_t)sizeof copy, "read back");
            uint64_t first = (HEAP - 2 * MIB) / 8, wrong = 0;
            for (uint64_t i = 0; i < 512; ++i)
                wrong += copy[i] != ((first + i) / (MIB / 8) % 4 == 3 ? 0 : value(1, first + i));
            RT_CHECK(r, wrong == 0, "%llu words written from served memory differ",
                     (unsigned long long)wrong);
        }
        close(ends[0]);
        close(ends[1]);
        uint64_t bad = differ(heap, HEAP, 1, 1, ~0ULL);
        RT_CHECK(r, bad == 0, "%llu heap words differ", (unsigned long long)bad);
        if (!r->failed) rt_add(r, "ok %llx", (unsigned long long)(uintptr_t)heap);
        return 1;
    }
    if (strcmp(path, "/events") != 0) return 0;
    // Moved: to a fresh place (a reservation, replaced by MREMAP_FIXED).
    void* to = mmap(NULL, MOVED, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t* m = mremap(moved, MOVED, MOVED, MREMAP_MAYMOVE | MREMAP_FIXED, to);
    RT_CHECK(r, m != MAP_FAILED, "mremap failed");
    if (m != MAP_FAILED) {
        moved = m;
        uint64_t bad = differ(moved, MOVED, 2, 0, ~0ULL);
        RT_CHECK(r, bad == 0, "%llu words of the moved region differ", (unsigned long long)bad);
    }
    // Dropped: the second half must read zeros from now on.
    RT_CHECK(r, madvise((char*)dropped + DROPPED / 2, DROPPED / 2, MADV_DONTNEED) == 0, "madvise");
    uint64_t bad = differ(dropped, DROPPED, 3, 0, DROPPED / 2 / 8);
    RT_CHECK(r, bad == 0, "%llu words of the dropped region differ", (unsigned long long)bad);
    // Forked: the child sees the pattern.
    pid_t child = fork();
    if (child == 0) _exit(differ(forked, FORKED, 4, 0, ~0ULL) == 0 ? 0 : 1);
    int status = 0;
    RT_CHECK(r, child > 0 && waitpid(child, &status, 0) == child, "fork or wait failed");
    RT_CHECK(r, WIFEXITED(status) && WEXITSTATUS(status) == 0,
             "the forked child saw other memory (status %d)", status);
    bad = differ(forked, FORKED, 4, 0, ~0ULL);
    RT_CHECK(r, bad == 0, "%llu words of the forked region differ in the parent", (unsigned long long)bad);
    if (!r->failed) rt_add(r, "ok events");
    return 1;
}

int main(void) {
    heap = region(HEAP, 1, 1);
    moved = region(MOVED, 2, 0);
    dropped = region(DROPPED, 3, 0);
    forked = region(FORKED, 4, 0);
    rt_serve("lazy-pages", handle);
}
