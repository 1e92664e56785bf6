// Pipes and FIFOs. Checkpoint: both ends of a pipe share the pipe's inode as their id; what was
// unread is taken out of the frozen pipe and written back at once (the function keeps every byte),
// recorded on the read end with the pipe's size. Restore: pipe2, the size, then the unread data
// written again. A named pipe (FIFO) is a file: each fd is opened again by its path with its mode
// (read-only, write-only, read-write), the unread data carried by its first fd.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/inspect.h"
#include "initless/sys/process.h"
#include "state/kinds.h"

namespace initless::state::pipes {

std::optional<image::FdObject> read(const FdSource& s) {
    if (!S_ISFIFO(s.st.st_mode)) return std::nullopt;
    if (s.dest.rfind("pipe:", 0) != 0) {
        if (s.dest.find("(deleted)") != std::string::npos || s.dest.empty() || s.dest[0] != '/')
            throw ContractError(s.where +
                                ": a deleted or unreachable FIFO; rule: open files must stay in place");
        image::FifoFd fifo;
        fifo.path = s.dest;
        // What is unread is read out of the FIFO through a description of our own (open never blocks
        // with O_RDWR) and written back at once; the first fd of the FIFO carries it.
        sys::UniqueFd own = sys::open_file(fmt::format("/proc/{}/fd/{}", s.pid, s.fd), O_RDWR | O_NONBLOCK);
        fifo.pipe_size = sys::pipe_size(own.get());
        if (s.context && s.context->fifos_read.insert(s.st.st_ino).second) {
            fifo.unread = sys::read_available(own.get());
            if (!fifo.unread.empty()) sys::write_all(own.get(), fifo.unread.data(), fifo.unread.size());
        }
        return fifo;
    }
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

void store(json& j, const image::FifoFd& f) {
    j["path"] = f.path;
    j["pipe_size"] = f.pipe_size;
    j["unread"] = hex(f.unread);
}

void load(const json& j, image::FifoFd& f) {
    f.path = j.at("path");
    f.pipe_size = j.at("pipe_size");
    f.unread = unhex(j.at("unread"));
}

// A FIFO is opened by path with O_NONBLOCK while a read-write description of our own holds it open:
// then no open blocks (a write-only one alone would wait for a reader, or fail without O_NONBLOCK's
// reader), the unread data can be written back, and the buffer keeps it once ours is closed, as
// long as any fd of the FIFO is open (the fd just made is). Its own flags are set when it is moved.
void plan_create(Table& t, Region& region, const image::Fd& f, const image::FifoFd& o) {
    std::string what = fmt::format("fd {} (FIFO {})", f.fd, o.path);
    uint64_t path = region.put_string(o.path);
    t.op(SYS_open, {path, O_RDWR | O_NONBLOCK | O_CLOEXEC}, kPipeW, 0, {}, what + " open a holder");
    t.op(SYS_open, {path, static_cast<uint64_t>((f.flags & ~(O_CREAT | O_TRUNC | O_EXCL)) | O_NONBLOCK)},
         kTmp, 0, {}, what + " open");
    if (o.pipe_size)
        t.op(SYS_fcntl, {0, F_SETPIPE_SZ, o.pipe_size}, -1, STUB_OP_ALLOW_FAIL, {{0, kTmp}}, what + " size");
    if (!o.unread.empty())
        t.op(SYS_write, {0, region.put(o.unread.data(), o.unread.size(), 1), o.unread.size()}, -1,
             STUB_OP_EXPECT_ARG2, {{0, kPipeW}}, what + " refill");
    t.op(SYS_close, {0}, -1, 0, {{0, kPipeW}}, what + " close the holder");
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
