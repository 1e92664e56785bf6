// The read-only data file every state program's function directory holds (made by CMakeLists.txt):
// data.bin, 16 pages; page i is the 8 bytes "page %02d " repeated 512 times. The function directory is
// the working directory, mounted read-only at /function in the sandbox.
#ifndef RT_DATA_H
#define RT_DATA_H

#define RT_DATA_FILE "data.bin"
#define RT_DATA_PAGES 16

// The byte of data.bin at `offset`.
static inline char rt_data_byte(size_t offset) {
    char unit[9];
    snprintf(unit, sizeof unit, "page %02d ", (int)(offset / 4096));
    return unit[offset % 8];
}

// 1 when `len` bytes at `p` equal data.bin from `offset`.
static inline int rt_data_matches(const char* p, size_t offset, size_t len) {
    for (size_t i = 0; i < len; ++i)
        if (p[i] != rt_data_byte(offset + i)) return 0;
    return 1;
}

#endif
