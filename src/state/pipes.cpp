// Pipes. Checkpoint: both ends share the pipe's inode as their id; what was unread is taken out of
// the frozen pipe and written back at once (the function keeps every byte), recorded on the read
// end with the pipe's size. Restore: pipe2, the size, then the unread data written again.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/file.h"
#include "initless/sys/inspect.h"
#include "initless/sys/process.h"
#include "state/kinds.h"

namespace initless::state::pipes {

std::optional<image::FdObject> read(const FdSource& s) {
    if (!S_ISFIFO(s.st.st_mode)) return std::nullopt;
    image::PipeFd p;
    p.pipe_id = s.st.st_ino;
    p.end = (s.flags & O_ACCMODE) == O_RDONLY ? 0 : 1;
    return p;
}

void drain(std::vector<Frozen>& tree) {
    struct End {
        const Frozen* holder;
        int fd;
        image::PipeFd* pipe;
    };
    std::map<uint64_t, std::array<std::vector<End>, 2>> pipes;  // every end (both ends exist: fds::link)
    for (auto& m : tree)
        for (auto& f : m.p.fds)
            if (auto* p = f.as<image::PipeFd>(); p && f.dup_of < 0)
                pipes[p->pipe_id][p->end].push_back({&m, f.fd, p});
    for (auto& [id, ends] : pipes) {
        const End& rd = ends[0].front();
        const End& wr = ends[1].front();
        sys::UniqueFd r = sys::pidfd_getfd(rd.holder->pidfd.get(), rd.fd);
        uint64_t size = sys::pipe_size(r.get());
        std::vector<uint8_t> data = sys::read_available(r.get());
        if (!data.empty()) {
            sys::UniqueFd w = sys::pidfd_getfd(wr.holder->pidfd.get(), wr.fd);
            sys::write_all(w.get(), data.data(), data.size());
        }
        for (auto& end : ends)
            for (End& x : end) {
                x.pipe->pipe_size = size;
                if (x.pipe->end == 0) x.pipe->unread = data;
            }
    }
}

void store(json& j, const image::PipeFd& f) {
    j["pipe_id"] = f.pipe_id;
    j["end"] = f.end;
    j["pipe_size"] = f.pipe_size;
    j["unread"] = hex(f.unread);
}

void load(const json& j, image::PipeFd& f) {
    f.pipe_id = j.at("pipe_id");
    f.end = j.at("end");
    f.pipe_size = j.at("pipe_size");
    f.unread = unhex(j.at("unread"));
}

void plan_pair(Table& t, Region& region, const image::PipeFd& end0, const image::PipeFd&, int lift,
               const std::string& what) {
    uint64_t pair = region.put(nullptr, 8);
    t.op(SYS_pipe2, {pair, 0}, -1, 0, {}, what + " pipe2");
    fds::plan_lift_ends(t, pair, lift, what);
    if (end0.pipe_size)
        t.op(SYS_fcntl, {0, F_SETPIPE_SZ, end0.pipe_size}, -1, 0, {{0, kTmp}}, what + " pipe size");
    if (!end0.unread.empty())
        t.op(SYS_write, {0, region.put(end0.unread.data(), end0.unread.size(), 1), end0.unread.size()}, -1,
             STUB_OP_EXPECT_ARG2, {{0, kTmp}}, what + " refill pipe");
}

}  // namespace initless::state::pipes
