// SysV IPC objects of the sandbox's ipc namespace: message queues, semaphore sets and shared memory
// segments. A restored instance gets a fresh ipc namespace, so any object alive at the checkpoint
// would be gone (an attached segment is already refused by memory.cpp as a /SYSV mapping). They are
// refused: the checkpoint asks the namespace itself, through msgctl/semctl/shmctl *_STAT_ANY
// injected into the first process (the namespace is the sandbox's, not ours), and names each object.
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/syscall.h>

#include <cstring>

#include <fmt/format.h>

#include "initless/sys/error.h"
#include "state/kinds.h"

#ifndef MSG_STAT_ANY
#define MSG_STAT_ANY 13
#define SEM_STAT_ANY 20
#define SHM_STAT_ANY 15
#endif

namespace initless::state::ipc {

namespace {

struct Kind {
    const char* what;
    long nr;         // msgctl, semctl, shmctl
    int info, stat;  // *_INFO (returns the highest index in use), *_STAT_ANY
};

}  // namespace

void check(Frozen& first, MemoryReader& mem) {
    sys::Tracee& leader = first.threads.front();
    uint64_t scratch = scratch_below_stack(leader.regs()) - 512;  // room for the largest *_ds
    const Kind kinds[] = {{"message queue", SYS_msgctl, MSG_INFO, MSG_STAT_ANY},
                          {"semaphore set", SYS_semctl, SEM_INFO, SEM_STAT_ANY},
                          {"shared memory segment", SYS_shmctl, SHM_INFO, SHM_STAT_ANY}};
    for (const auto& k : kinds) {
        // semctl takes (id, semnum, cmd, arg); the others (id, cmd, buf).
        bool sem = k.nr == SYS_semctl;
        auto call = [&](int index, int cmd) {
            if (sem)
                return leader.inject_syscall(
                    first.gadget, k.nr,
                    {static_cast<uint64_t>(index), 0, static_cast<uint64_t>(cmd), scratch});
            return leader.inject_syscall(first.gadget, k.nr,
                                         {static_cast<uint64_t>(index), static_cast<uint64_t>(cmd), scratch});
        };
        long highest = call(0, k.info);
        if (highest < 0 && highest > -4096)
            throw Error(fmt::format("SysV {} info in process {}: {}", k.what, first.host,
                                    std::strerror(static_cast<int>(-highest))));
        for (int index = 0; index <= highest; ++index) {
            long id = call(index, k.stat);
            if (id < 0) continue;                   // a free index
            auto key = mem.read<int32_t>(scratch);  // ipc_perm leads every *_ds, its key leads ipc_perm
            throw ContractError(fmt::format(
                "the function's ipc namespace holds a SysV {} (id {}, key {:#x}; seen from process {}); "
                "rule: "
                "no SysV IPC objects when ready (a restored instance gets a fresh ipc namespace): remove it "
                "(IPC_RMID) or use POSIX IPC",
                k.what, id, static_cast<uint32_t>(key), first.host));
        }
    }
}

}  // namespace initless::state::ipc
