// A large heap: 256 MiB malloc'd and filled with a deterministic pattern (xorshift), except every
// fourth MiB which is left zero (the image skips zero pages). /check recomputes the checksum over all of
// it and compares it with the value computed before the snapshot, and checks the zero MiBs are zero.
#include "http.h"

#define SIZE (256UL << 20)
#define MIB (1UL << 20)
static uint64_t* heap;
static uint64_t expected;

static uint64_t fill_value(uint64_t i) {
    uint64_t x = i * 0x9E3779B97F4A7C15ULL + 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

static uint64_t checksum(void) {
    uint64_t sum = 0;
    for (uint64_t i = 0; i < SIZE / 8; ++i) sum = sum * 31 + heap[i];
    return sum;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    uint64_t words_per_mib = MIB / 8, bad = 0, first_bad = 0;
    for (uint64_t i = 0; i < SIZE / 8; ++i) {
        uint64_t want = ((i / words_per_mib) % 4 == 3) ? 0 : fill_value(i);
        if (heap[i] != want && bad++ == 0) first_bad = i;
    }
    RT_CHECK(r, bad == 0, "%llu words differ, first at byte offset %#llx", (unsigned long long)bad,
             (unsigned long long)first_bad * 8);
    uint64_t sum = checksum();
    RT_CHECK(r, sum == expected, "checksum %llx, expected %llx", (unsigned long long)sum,
             (unsigned long long)expected);
    if (!r->failed) rt_add(r, "ok 256 MiB checksum %llx", (unsigned long long)sum);
    return 1;
}

int main(void) {
    heap = malloc(SIZE);
    if (!heap) rt_die("malloc");
    uint64_t words_per_mib = MIB / 8;
    for (uint64_t i = 0; i < SIZE / 8; ++i) heap[i] = ((i / words_per_mib) % 4 == 3) ? 0 : fill_value(i);
    expected = checksum();
    rt_serve("big-heap", handle);
}
