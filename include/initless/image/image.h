// The on-disk snapshot of a function's process tree (format version 4). A directory:
//   manifest.json  everything but memory: processes, threads, VMAs, fds, signal state
//   pages.img      memory contents, laid out per VMA: each VMA with saved pages owns one contiguous,
//                  page-aligned file range of its own length; pages not saved (never touched, zero,
//                  or clean file pages) are holes, so the file is sparse and one mmap of the range
//                  restores a whole VMA copy-on-write
//   pages.idx      binary runs {vaddr, pages, file_offset} of the pages actually saved
//   workingset.idx optional binary runs {vaddr, pages, written, process} the first request touched
//   pages.sums     the SHA-256 of every 64 KiB block of pages.img (kPageSumBlock; the last block
//                  shorter), 32 raw bytes each in file order: what a restore whose pages come from a
//                  remote page server checks each fetched block against (images made before it
//                  have none and cannot be restored remotely)
//   rootfs-upper/  the sandbox's writable layer at checkpoint
//   tmpfs-tmp/, tmpfs-shm/  what /tmp and /dev/shm (tmpfs, outside the layer) held
//   AUTH           the digest of each file above and an HMAC-SHA256 of the list (image/auth.h)
// An image is written under a temp name (mode 0700), fsynced and renamed: once published it is never
// written again (instances map its pages copy-on-write and share its page cache). `load` verifies the
// format version, the image's authentication under the state dir's key, and the kernel and vDSO it
// was made on.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "initless/image/auth.h"
#include "initless/image/page_source.h"
#include "initless/sys/unique_fd.h"

namespace initless::image {

constexpr int kFormatVersion = 4;
// Sandbox tmpfs dirs saved with an image (path inside the sandbox, dir in the image).
inline constexpr std::pair<const char*, const char*> kTmpfsDirs[] = {{"/tmp", "tmpfs-tmp"},
                                                                     {"/dev/shm", "tmpfs-shm"}};
constexpr uint64_t kPageSize = 4096;
// The block of pages.sums: the unit a remote restore fetches and verifies.
constexpr uint64_t kPageSumBlock = 64 << 10;
constexpr size_t kPageSumSize = 32;  // SHA-256

struct Rseq {
    uint64_t address = 0;
    uint32_t length = 0;
    uint32_t signature = 0;
};

// Per-thread attributes a function may set (prctl, scheduling), restored as read (attributes.cpp).
struct ThreadAttributes {
    int pdeath_signal = 0;             // PR_GET_PDEATHSIG
    uint64_t securebits = 0;           // PR_GET_SECUREBITS (keep-caps included)
    uint64_t timerslack_ns = 0;        // PR_GET_TIMERSLACK
    int tsc = 1;                       // PR_GET_TSC (PR_TSC_ENABLE)
    int64_t mce_kill = 0;              // PR_MCE_KILL_GET
    bool io_flusher = false;           // unused: PR_SET_IO_FLUSHER is not open to a function
    std::vector<int64_t> speculation;  // PR_GET_SPECULATION_CTRL, per PR_SPEC_STORE_BYPASS.. (-1: none)
    // sched_getattr: policy, flags, nice, priority, deadline runtime/deadline/period, util clamps.
    std::vector<uint64_t> sched;     // empty: as the sandbox's init has it
    std::vector<uint64_t> affinity;  // CPU mask words; empty: as the sandbox's init has it
};

struct Thread {
    pid_t tid = 0;
    std::string comm;  // thread name (prctl PR_SET_NAME), as in /proc/PID/task/TID/comm
    user_regs_struct regs{};
    std::vector<uint8_t> xstate;
    uint64_t sigmask = 0;
    Rseq rseq;
    uint64_t robust_list = 0, robust_list_len = 0;
    uint64_t clear_child_tid = 0;
    uint64_t altstack_sp = 0, altstack_size = 0;
    int32_t altstack_flags = 0;
    // Signals queued for this thread, as raw 128-byte siginfo (PTRACE_PEEKSIGINFO); queued again.
    std::vector<std::vector<uint8_t>> pending;
    ThreadAttributes attrs;
    // Seccomp mode as /proc/PID/status shows it: 0 none, 2 a filter, which is then the sandbox's
    // (Manifest::seccomp_filter; any other filter is refused at checkpoint).
    int seccomp_mode = 0;
};

// SharedMemory: MAP_SHARED anonymous memory or a memfd; VMAs with one `file_inode` are one object,
// recreated as one memfd of `file_size` bytes, each VMA mapped at its `file_offset`.
enum class VmaKind { Anonymous, File, Vdso, Vvar, VvarVclock, Vsyscall, SharedMemory };

struct Vma {
    uint64_t start = 0, end = 0;
    int prot = 0;         // PROT_*
    bool shared = false;  // MAP_SHARED
    bool growsdown = false;
    VmaKind kind = VmaKind::Anonymous;
    std::string name;  // path for File, "[heap]", "[stack]", "" for plain anonymous
    uint64_t file_offset = 0;
    // File identity checked at restore: a changed library must fail loudly.
    uint64_t file_size = 0, file_inode = 0;
    int64_t file_mtime_ns = 0;
    // Where this VMA's pages live in pages.img (meaningful when saved_pages > 0).
    uint64_t image_offset = 0;
    uint64_t saved_pages = 0;
    uint32_t pages_crc = 0;  // crc32c over the saved pages in address order
    // VmFlags of /proc/PID/smaps restore sets again: madvise advice, locks, seal, may-write.
    std::vector<std::string> flags;
    uint64_t length() const { return end - start; }
};

// A registration is keyed by (fd number, open file): `fd` is the number it was added under, and
// `held_at` the fd of the process holding that file now when `fd` no longer does (closed after a
// dup, or reused for another file); -1 when `fd` still holds it.
struct EpollTarget {
    int fd = 0;
    uint32_t events = 0;
    uint64_t data = 0;
    int held_at = -1;
};

struct SocketOption {
    int level = 0, name = 0, value = 0;  // getsockopt's value as read
};

// One type per kind of fd; each is stored as `"kind": kName` and its own fields beside the fd's
// common ones, and each has one file under src/state/ that reads, stores and restores it (the list
// of kinds: FdObject below and src/state/kinds.h).
struct LogFd {  // the instance's stdio log (the sandbox's, not the image's)
    static constexpr const char* kName = "log";
    // Which of the restorer's stdio fds it is made again from: 1 (the log) for a function; an OCI
    // container's stdin, stdout and stderr (the shim's) are streams 0, 1 and 2.
    int stream = 1;
};
// A lock an open file holds (fdinfo's "lock:" lines): flock, OFD and classic POSIX record locks,
// and leases; restored on files of the instance's private storage only.
struct FileLock {
    enum Kind { Flock = 0, Ofd = 1, Posix = 2, Lease = 3 };
    int kind = Flock;
    int type = 0;                    // F_RDLCK or F_WRLCK
    uint64_t start = 0, length = 0;  // record locks: length 0 up to the end of the file
};
struct FileFd {  // a regular file or directory, open for reading (or for writing: private storage)
    static constexpr const char* kName = "file";
    std::string path;
    uint64_t position = 0;
    std::vector<FileLock> locks;
};
struct CharDeviceFd {  // /dev/null, /dev/urandom ...
    static constexpr const char* kName = "chardev";
    std::string path;
    uint64_t position = 0;
};
struct TcpListenFd {  // a listening TCP or TCP6 socket
    static constexpr const char* kName = "tcp-listen";
    int domain = 0, type = 0;
    std::vector<uint8_t> address;  // sockaddr bytes
    std::vector<SocketOption> options;
    int backlog = 0;  // the listen() backlog
};
// A TCP or TCP6 socket that held a connection at the checkpoint (established, half-closed or still
// connecting). A connection cannot survive the snapshot (its peer's state is not ours to restore):
// it is restored as a socket of the same family and type whose connection was reset, so the
// function's next read, write or poll on it fails and it reconnects. The addresses are kept to name it.
struct TcpConnectionFd {
    static constexpr const char* kName = "tcp-connection";
    int domain = 0, type = 0;
    int state = 0;                     // TCP_ESTABLISHED, TCP_CLOSE_WAIT ... at the checkpoint
    std::vector<uint8_t> local, peer;  // sockaddr bytes
};
// A TCP or TCP6 socket neither listening nor connected (made, perhaps bound, not used yet):
// restored as such, bound again to its address if it had one.
struct TcpUnconnectedFd {
    static constexpr const char* kName = "tcp-unconnected";
    int domain = 0, type = 0;
    std::vector<uint8_t> address;  // sockaddr bytes; empty: not bound
    std::vector<SocketOption> options;
};
// A UDP or UDP6 socket: bound and connected again as it was; datagrams queued for it are dropped
// (the checkpoint says so), as a network may drop them.
struct UdpFd {
    static constexpr const char* kName = "udp";
    int domain = 0;
    std::vector<uint8_t> address;  // the bound address; empty: never bound
    std::vector<uint8_t> peer;     // the connected peer; empty: unconnected
    std::vector<SocketOption> options;
};
struct UnixListenFd {  // a listening unix socket (named, abstract or unnamed)
    static constexpr const char* kName = "unix-listen";
    int type = 0;
    std::vector<uint8_t> address;  // sockaddr bytes
    std::string path;              // the socket file, empty for an abstract or unnamed one
    int shutdown = 0;              // sk_shutdown: 1 receive side shut (accept fails), 2 send side
};
// One end of an unnamed connected pair of unix sockets (socketpair) whose other end is in the
// snapshot too; recreated with socketpair, with what was queued for it to receive.
struct UnixPairFd {
    static constexpr const char* kName = "unix-pair";
    int type = 0;                         // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
    uint64_t pair_id = 0;                 // both ends share it
    int end = 0;                          // 0 or 1
    std::vector<SocketOption> options;    // buffer sizes
    std::vector<uint8_t> queued;          // what was queued for this end to receive
    std::vector<uint32_t> message_sizes;  // `queued` split into datagrams (not for SOCK_STREAM)
    int shutdown = 0;                     // sk_shutdown of this end: 1 receive side, 2 send side shut
};
// A socketpair end whose peer is closed (the JDK keeps one such stream end to dup2 over fds it
// closes), with what is still queued for it to read; recreated as a socketpair end whose peer
// queues the data again and is closed.
struct UnixOrphanFd {
    static constexpr const char* kName = "unix-orphan";
    int type = 1;                         // SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET
    std::vector<uint8_t> queued;          // unread bytes, messages back to back
    std::vector<uint32_t> message_sizes;  // datagram and seqpacket message boundaries (may be 0)
    int shutdown = 0;                     // its own sk_shutdown (a datagram socket's peer sets none)
};
struct PipeFd {
    static constexpr const char* kName = "pipe";
    uint64_t pipe_id = 0;         // both ends share it
    int end = 0;                  // 0: the read end, 1: the write end
    uint64_t pipe_size = 0;       // F_GETPIPE_SZ (the unread data may need more than the default)
    std::vector<uint8_t> unread;  // the read end: what was unread in the pipe
};
// A named pipe (mkfifo) opened by path, read-only, write-only or read-write: opened again by its
// path (which the saved writable layer or /tmp holds), with what was unread in it on one of its fds.
struct FifoFd {
    static constexpr const char* kName = "fifo";
    std::string path;
    uint64_t pipe_size = 0;
    std::vector<uint8_t> unread;  // on the first fd of the FIFO only
};
struct EpollFd {
    static constexpr const char* kName = "epoll";
    std::vector<EpollTarget> targets;
};
struct EventFd {
    static constexpr const char* kName = "eventfd";
    uint64_t counter = 0;
    bool semaphore = false;
};
struct TimerFd {
    static constexpr const char* kName = "timerfd";
    int clock = 0;
    uint64_t value_ns = 0, interval_ns = 0;
    uint64_t ticks = 0;  // expirations not read yet
};
// An inotify watch, re-added by the path its inode had at the checkpoint.
struct InotifyWatch {
    int wd = 0;
    uint32_t mask = 0;     // events and IN_ONESHOT/IN_EXCL_UNLINK, as fdinfo shows them
    std::string path;      // absolute, as the process sees it
    bool symlink = false;  // the watch is on the link itself (IN_DONT_FOLLOW)
};
// An inotify instance: made again with its watches at their wds (1..n); queued events are dropped
// (the checkpoint says so).
struct InotifyFd {
    static constexpr const char* kName = "inotify";
    std::vector<InotifyWatch> watches;  // in wd order
};
struct SignalFd {
    static constexpr const char* kName = "signalfd";
    uint64_t sigmask = 0;
};

using FdObject = std::variant<LogFd, FileFd, CharDeviceFd, TcpListenFd, TcpConnectionFd, TcpUnconnectedFd,
                              UdpFd, UnixListenFd, UnixPairFd, UnixOrphanFd, PipeFd, FifoFd, EpollFd, EventFd,
                              TimerFd, SignalFd, InotifyFd>;

struct Fd {
    int fd = 0;
    int flags = 0;  // open flags (O_ACCMODE, O_NONBLOCK, O_APPEND ...)
    bool cloexec = false;
    // Another fd of the process sharing this one's open file description (dup), or -1.
    int dup_of = -1;
    // An open file description held by more than one process of the tree (inherited through fork):
    // every fd with this id, in any process, is the one description. 0: held by this process only.
    // A pipe or socket pair with ends in two processes has ids on both ends.
    uint64_t shared_id = 0;
    FdObject object;

    template <typename T>
    const T* as() const {
        return std::get_if<T>(&object);
    }
    template <typename T>
    T* as() {
        return std::get_if<T>(&object);
    }
    const char* kind() const {
        return std::visit([](const auto& o) { return std::decay_t<decltype(o)>::kName; }, object);
    }
};

// A POSIX timer (timer_create), restored with its id (prctl PR_TIMER_CREATE_RESTORE_IDS), clock,
// notification and the time it had left; overruns not yet read are lost.
struct PosixTimer {
    int id = 0;
    int clock = 0;
    int notify = 0;  // SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD_ID|SIGEV_SIGNAL
    int signal = 0;
    uint64_t value = 0;  // sigev_value, handed to the handler
    pid_t tid = 0;       // SIGEV_THREAD_ID: the thread told
    uint64_t interval_ns = 0, remaining_ns = 0;
};

struct SignalAction {
    int signal = 0;
    uint64_t handler = 0, flags = 0, restorer = 0, mask = 0;
};

struct Mm {
    uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
    uint64_t arg_start, arg_end, env_start, env_end;
    std::vector<uint8_t> auxv;
};

struct Credentials {
    uint64_t cap_effective = 0, cap_permitted = 0, cap_inheritable = 0, cap_bounding = 0;
    bool no_new_privs = false;
    // As the sandbox's user namespace sees them (real, effective, saved, filesystem).
    std::array<uint32_t, 4> uids{}, gids{};
    std::vector<uint32_t> groups;
};

// Process-wide attributes a function may set (prctl, /proc, membarrier), restored as read.
struct ProcessAttributes {
    uint64_t personality = 0;  // /proc/PID/personality
    bool child_subreaper = false;
    int dumpable = 1;
    bool thp_disable = false;
    bool memory_merge = false;  // PR_SET_MEMORY_MERGE (KSM for the whole process)
    uint64_t mdwe = 0;          // PR_GET_MDWE (memory-deny-write-execute)
    int oom_score_adj = 0;
    uint64_t membarrier = 0;  // MEMBARRIER_CMD_GET_REGISTRATIONS: the REGISTER_* commands made
};

// Processes are listed parents first; pids are those inside the sandbox (ppid 1: a child of init).
struct Process {
    pid_t pid = 0, ppid = 0, pgid = 0, sid = 0;
    std::string exe, cwd;
    std::vector<Thread> threads;  // threads[0] is the thread group leader
    std::vector<Vma> vmas;
    std::vector<Fd> fds;
    std::vector<SignalAction> actions;
    Mm mm{};
    Credentials creds;
    uint32_t umask = 022;
    std::vector<std::pair<uint64_t, uint64_t>> rlimits;  // {soft, hard} per RLIMIT_* resource
    std::vector<std::vector<uint8_t>> pending_shared;    // process-wide queued signals (siginfo)
    // setitimer timers (REAL, VIRTUAL, PROF): {interval_us, value_us}, value as time remaining.
    std::vector<std::pair<uint64_t, uint64_t>> itimers;
    ProcessAttributes attrs;
    std::vector<PosixTimer> posix_timers;
};

struct Manifest {
    int format = kFormatVersion;
    std::string function;
    std::string function_dir;  // host path of the function's directory (holds function.toml)
    std::string kernel;        // uname -r at checkpoint
    uint64_t vdso_size = 0;    // [vvar]+[vvar_vclock]+[vdso] bytes
    uint16_t port = 0;
    std::string created;
    // CLOCK_MONOTONIC and CLOCK_BOOTTIME at the freeze: a restored process's clocks continue from here.
    int64_t monotonic_ns = 0, boottime_ns = 0;
    // Sysctls of the function's netns that differ from a fresh netns's: {/proc/sys/net/... path, value}.
    std::vector<std::pair<std::string, std::string>> net_sysctls;
    std::vector<Process> processes;
    // The sandbox's seccomp filter every thread ran under (raw BPF, 8 bytes per instruction; empty:
    // none) and its install flags; a restore installs it as its last step, and only into a sandbox
    // whose spec asks for the same filter.
    std::vector<uint8_t> seccomp_filter;
    unsigned seccomp_flags = 0;
    uint64_t pages_file_size = 0;
    uint64_t pages_written = 0, zero_pages_skipped = 0;
};

struct PageRun {
    uint64_t vaddr = 0, pages = 0, file_offset = 0;
};

// A run of pages the first request after a restore touched (workingset.idx, optional): a restore
// with the prefetch strategy installs these in bulk instead of taking a fault per page.
struct WorkingSetRun {
    uint64_t vaddr = 0, pages = 0;
    uint64_t written = 0;  // 1: the request wrote them (populate writable), 0: only read
    uint64_t process = 0;  // index into Manifest::processes
};

std::string to_json(const Manifest& m);
Manifest from_json(const std::string& text);

// crc32c (Castagnoli), hardware-accelerated.
uint32_t crc32c(uint32_t crc, const void* data, size_t len);

// The running kernel's release and vDSO block size, to compare with an image's.
std::string kernel_release();
uint64_t current_vdso_size();

// The image's trees (directories copied into a sandbox at restore).
inline constexpr const char* kUpperTree = "rootfs-upper";
// An OCI container's RW_DIRS, each at its path inside the root (rw-dirs/data for /data).
inline constexpr const char* kRwDirsTree = "rw-dirs";

// A loaded, authenticated image. Copies share the open files.
struct Image {
    std::filesystem::path dir;
    Manifest manifest;
    std::vector<PageRun> runs;                   // in pages.img order: per process, per VMA
    std::vector<WorkingSetRun> working_set;      // empty when the image has none
    std::map<std::string, std::string> digests;  // AUTH: file or tree -> authenticated digest
    // pages.img as opened (and, with verify_pages, verified) by load: restores map this inode, not
    // whatever the path names later.
    std::shared_ptr<const sys::UniqueFd> pages_file;
    // The runs of `v`'s saved pages (found by their place in pages.img, which is unique per VMA).
    std::span<const PageRun> runs_of(const Vma& v) const;
    // Calls fn(vma, start, end) for each part [start, end) of a working-set run inside one VMA of its
    // process, in the working set's order (runs of a process the manifest lacks are skipped).
    void for_each_working_set_part(const std::function<void(const Vma&, uint64_t, uint64_t)>& fn) const;
    // The pages.img ranges [offset, end) holding the working set's saved pages, in the working set's
    // order (the parts of it outside any saved page left out): what a restore wants read first.
    std::vector<std::pair<uint64_t, uint64_t>> working_set_file_ranges() const;
    std::filesystem::path pages_path() const { return dir / "pages.img"; }
    // A new read-only open file description of the loaded pages.img.
    sys::UniqueFd open_pages() const;
    // pages.sums as authenticated at load (empty when the image has none).
    std::string page_sums;
    // Where the page server reads pages from: set for a remote restore (pages/remote.h; then
    // pages_file is a local cache holding what the restore tables read themselves), else null:
    // pages_source() is then the local pages.img.
    std::shared_ptr<PageSource> page_source;
    std::shared_ptr<PageSource> pages_source() const;
    bool has_tree(const std::string& name) const { return digests.count(name) > 0; }
};

// Loads and verifies an image under `key`: the AUTH list's MAC, the manifest, index and working
// set against it, the format and the kernel. `verify_pages` also checks pages.img and the trees
// (read in full: done once per image by whoever loads it, never per restore). Throws
// NotAuthenticated ("image <dir> is not authenticated: <file> ...") or Error.
Image load(const std::filesystem::path& dir, const Key& key, bool verify_pages = true);

// `load` for callers that are a new process at each restore (the OCI runtime's verbs, which cannot
// keep a loaded image the way the daemon does): pages.img is checked in full only when the image's
// VERIFIED stamp does not name the very file opened (device, inode, size, mtime and ctime; any write,
// rename over, chmod or copy changes one of them), and a full check that passes writes the stamp
// (HMAC under `key`, bound to this image's AUTH). The rest of load's checks run every time. What this
// leaves out is what DESIGN.md's threat model already leaves out of `load`: a page file changed in
// place after it was verified without its inode's times changing (a raw write to the disk).
// `verified_now` (may be null) says whether this call read the pages in full.
Image load_verified_once(const std::filesystem::path& dir, const Key& key, bool* verified_now = nullptr);
inline constexpr const char* kVerifiedStamp = "VERIFIED";
// Writes the VERIFIED stamp of the image's pages.img as it is now: for a full check that passed, and
// for the image's maker right after it published what it wrote itself. Never throws (without a stamp
// the next load_verified_once checks in full).
void stamp_verified(const std::filesystem::path& dir, const Key& key) noexcept;

// The same checks, for an image whose pages.img is not here (a restore whose pages come from a
// remote page server): everything but pages.img is loaded and verified (its trees included), and the
// image must have pages.sums, by which the pages are verified as they arrive. pages_file is empty.
Image load_without_pages(const std::filesystem::path& dir, const Key& key);

// pages.sums of a pages.img of `size` bytes at `base` whose saved runs are `runs` (blocks holding
// no saved page are not read: they are zeros).
std::string page_sums(const uint8_t* base, uint64_t size, const std::vector<PageRun>& runs);

// The authenticated manifest of an image (AUTH's MAC and the manifest's digest checked), without
// the rest of load's checks.
Manifest load_manifest(const std::filesystem::path& dir, const Key& key);

// Copies the image's tree `name` (kUpperTree, a kTmpfsDirs dir) into the existing directory fd `to`
// (or path), checking the bytes it copies against the tree's authenticated digest: throws
// NotAuthenticated if the tree changed since load (what was copied is then the caller's to remove).
void copy_tree(const Image& img, const std::string& name, int to);
void copy_tree(const Image& img, const std::string& name, const std::filesystem::path& to);

// Writes workingset.idx into a staged image directory and adds it to AUTH (MAC made again).
void write_working_set(const std::filesystem::path& dir, const std::vector<WorkingSetRun>& runs,
                       const Key& key);

// Writing: a staging directory beside the final one, renamed into place by `publish`.
class ImageWriter {
  public:
    ImageWriter(std::filesystem::path final_dir, const Key& key);
    ~ImageWriter();  // removes the staging dir unless published
    const std::filesystem::path& staging() const { return staging_; }
    std::filesystem::path pages_path() const { return staging_ / "pages.img"; }
    // Writes manifest, index and AUTH (digests of every file and tree of the staging dir, MAC),
    // fsyncs and renames. `before_publish` may add files to the complete staged image (which
    // `load` can read) before the rename, e.g. a working set.
    void publish(const Manifest& manifest, const std::vector<PageRun>& runs,
                 const std::function<void(const std::filesystem::path& staging)>& before_publish = {});

  private:
    std::filesystem::path final_, staging_;
    Key key_;
    bool published_ = false;
};

}  // namespace initless::image
