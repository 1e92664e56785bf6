// The ABI between the controller and the restorer stub (src/restore/stub.c), shared by both.
// The stub is position-independent code copied into the process being restored; the controller
// points a thread at it with rdi = a table of syscalls, and the stub runs them all in one resume,
// then stops on int3. Plain C types only: the stub is freestanding.
#ifndef INITLESS_RESTORE_STUB_ABI_H
#define INITLESS_RESTORE_STUB_ABI_H

#include <stdint.h>

#define STUB_SLOTS 64
#define STUB_OP_ALLOW_FAIL 1u /* a failure is recorded in the slot, not fatal */
#define STUB_OP_MOVE_FD                                                                \
    2u /* not a syscall: move fd slot[args0] to fd args1 (dup3 + close), close-on-exec \
          if args2 (O_CLOEXEC), also when the fd already is at args1 */
#define STUB_OP_EXPECT_ARG0 4u /* the result must equal args[0] (mmap MAP_FIXED) */
#define STUB_OP_EXPECT_ARG2 8u /* the result must equal args[2] (a full pread or write) */
#define STUB_OP_EXPECT_ARG3 \
    256u                     /* the result must equal args[3] (inotify_add_watch's wd; it ignores args[3]) */
#define STUB_OP_LOAD32 16u   /* not a syscall: result = *(uint32_t*)args0 (an fd pipe2 wrote) */
#define STUB_OP_NO_CLOCK 64u /* not timed: after it rdtsc may fault (PR_SET_TSC); a table's last op */
#define STUB_OP_STORE32 32u  /* not a syscall: *(uint32_t*)args0 = args1 (an fd into a struct) */
#define STUB_OP_PAUSE                                                              \
    128u /* not a syscall: stop on int3 mid-table (done == this op's index) so the \
            controller can act (take an fd the table made), then go on */

struct stub_op {
    uint64_t nr;
    uint64_t args[6];
    /* For each argument i, byte i of arg_slot is 0 (use args[i]) or slot+1 (use slots[slot]). */
    uint64_t arg_slot;
    int32_t result_slot; /* -1: not kept */
    uint32_t flags;
    uint64_t cycles; /* filled by the stub: TSC cycles the op took (for profiling restores) */
};

struct stub_table {
    uint64_t count;
    uint64_t done; /* ops completed */
    int64_t failed_result;
    uint64_t failed_op; /* index of the failing op, valid when done < count */
    uint64_t slots[STUB_SLOTS];
    struct stub_op ops[];
};

#endif
