/* The restorer stub: runs a table of syscalls inside the process being restored, then traps.
 * Freestanding and position-independent: no libc, no globals, no data sections. See stub_abi.h. */
#include "initless/restore/stub_abi.h"

static inline uint64_t tsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline long raw_syscall(long nr, long a, long b, long c, long d, long e, long f) {
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

__attribute__((section(".text.entry"), used, noreturn)) void stub_entry(struct stub_table* t) {
    for (uint64_t i = 0; i < t->count; ++i) {
        struct stub_op* op = &t->ops[i];
        long a[6];
        for (int k = 0; k < 6; ++k) {
            unsigned s = (unsigned)((op->arg_slot >> (8 * k)) & 0xff);
            a[k] = (long)(s ? t->slots[s - 1] : op->args[k]);
        }
        long r;
        uint64_t started = (op->flags & STUB_OP_NO_CLOCK) ? 0 : tsc();
        if (op->flags & STUB_OP_MOVE_FD) {
            if (a[0] != a[1]) {
                r = raw_syscall(292 /* dup3 */, a[0], a[1], (long)op->args[2], 0, 0, 0);
                if (r >= 0) raw_syscall(3 /* close */, a[0], 0, 0, 0, 0, 0);
            } else {
                /* Created at its own number: dup3 cannot run, so set close-on-exec directly. */
                r = raw_syscall(72 /* fcntl */, a[1], 2 /* F_SETFD */, op->args[2] ? 1 : 0, 0, 0, 0);
            }
        } else if (op->flags & STUB_OP_LOAD32) {
            r = (long)*(volatile uint32_t*)a[0];
        } else if (op->flags & STUB_OP_PAUSE) {
            __asm__ volatile("int3" ::: "memory");
            r = 0;
        } else if (op->flags & STUB_OP_STORE32) {
            *(volatile uint32_t*)a[0] = (uint32_t)a[1];
            r = 0;
        } else {
            r = raw_syscall((long)op->nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        }
        op->cycles = (op->flags & STUB_OP_NO_CLOCK) ? 0 : tsc() - started;
        int failed = (r < 0 && r > -4096) || ((op->flags & STUB_OP_EXPECT_ARG0) && r != a[0]) ||
                     ((op->flags & STUB_OP_EXPECT_ARG2) && r != a[2]) ||
                     ((op->flags & STUB_OP_EXPECT_ARG3) && r != a[3]);
        if (failed && !(op->flags & STUB_OP_ALLOW_FAIL)) {
            t->failed_op = i;
            t->failed_result = r;
            break;
        }
        if (op->result_slot >= 0) t->slots[op->result_slot] = (uint64_t)r;
        t->done = i + 1;
    }
    /* The int3 below is a forced SIGTRAP; forcing a blocked signal resets its action to SIG_DFL
     * (the restored SIGTRAP handler would be lost), so SIGTRAP is unblocked first. The checkpoint
     * refuses a pending SIGTRAP: none is queued that this could deliver early. */
    uint64_t trap = 1ULL << (5 /* SIGTRAP */ - 1);
    raw_syscall(14 /* rt_sigprocmask */, 1 /* SIG_UNBLOCK */, (long)&trap, 0, 8, 0, 0);
    for (;;) __asm__ volatile("int3");
}
