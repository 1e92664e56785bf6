// The restore suite's tiny HTTP server, shared by every state program (header-only, C11).
//
// A program sets up the one kind of state it holds, then calls rt_serve(): it listens on $PORT
// (default 9000) on 0.0.0.0, prints "<name>: ready" on stdout (the snapshot is taken then), and answers
// every GET by calling the program's handler with the request path (GET / and /debug/tasks are
// answered here for every program). The handler writes a verdict that
// it computes *inside the process*, after the restore: "ok <details>" or "fail <reason>" (see rt_ok and
// rt_fail). One connection at a time, Connection: close, status 200 for any verdict (the harness reads
// the body), 404 for a path the handler does not know (it returns 0).
#ifndef RT_HTTP_H
#define RT_HTTP_H

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RT_BODY_CAP 8192

// A verdict under construction: rt_ok/rt_fail set its first word, rt_add appends details.
struct rt_reply {
    char body[RT_BODY_CAP];
    size_t len;
    int failed;
};

static inline void rt_vadd(struct rt_reply* r, const char* fmt, va_list ap) {
    if (r->len + 1 >= sizeof r->body) return;
    int n = vsnprintf(r->body + r->len, sizeof r->body - r->len, fmt, ap);
    if (n > 0) r->len += (size_t)n < sizeof r->body - r->len ? (size_t)n : sizeof r->body - r->len - 1;
}

__attribute__((format(printf, 2, 3))) static inline void rt_add(struct rt_reply* r, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rt_vadd(r, fmt, ap);
    va_end(ap);
}

// Records a failed check: the verdict becomes "fail <first reason>; <more reasons>".
__attribute__((format(printf, 2, 3))) static inline void rt_fail(struct rt_reply* r, const char* fmt, ...) {
    char reason[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (!r->failed) {
        r->failed = 1;
        r->len = 0;
        rt_add(r, "fail %s", reason);
    } else {
        rt_add(r, "; %s", reason);
    }
}

// `cond` must hold; otherwise the verdict fails with the formatted reason.
#define RT_CHECK(r, cond, ...)                  \
    do {                                        \
        if (!(cond)) rt_fail((r), __VA_ARGS__); \
    } while (0)

typedef int (*rt_handler)(const char* path, struct rt_reply* reply);

static inline void rt_die(const char* what) {
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(1);
}

static inline int rt_port(void) {
    const char* p = getenv("PORT");
    return p && *p ? atoi(p) : 9000;
}

// A listening TCP socket on 0.0.0.0:port with SO_REUSEADDR.
static inline int rt_listen_on(int port, int backlog) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) rt_die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr*)&a, sizeof a) != 0) rt_die("bind");
    if (listen(fd, backlog) != 0) rt_die("listen");
    return fd;
}

static inline int rt_listen(void) {
    return rt_listen_on(rt_port(), 64);
}

static inline void rt_send_all(int fd, const char* p, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        p += n;
        len -= (size_t)n;
    }
}

#include <dirent.h>
// GET /debug/tasks (every program): pid, and each thread's tid, comm and SigBlk, as seen from inside.
static inline void rt_debug_tasks(struct rt_reply* r) {
    rt_add(r, "pid %d tid %d\n", getpid(), gettid());
    DIR* d = opendir("/proc/self/task");
    struct dirent* e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[300], comm[64] = "";
        snprintf(p, sizeof p, "/proc/self/task/%s/comm", e->d_name);
        FILE* f = fopen(p, "re");
        if (f && fgets(comm, sizeof comm, f)) comm[strcspn(comm, "\n")] = 0;
        if (f) fclose(f);
        rt_add(r, "task %s comm '%s'\n", e->d_name, comm);
    }
    if (d) closedir(d);
}

static inline void rt_answer(int conn, rt_handler handler) {
    char req[4096];
    size_t len = 0;
    while (len + 1 < sizeof req) {
        ssize_t n = recv(conn, req + len, sizeof req - 1 - len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        len += (size_t)n;
        req[len] = 0;
        if (strstr(req, "\r\n\r\n")) break;
    }
    req[len] = 0;
    char method[16] = {0}, path[1024] = {0};
    if (sscanf(req, "%15s %1023s", method, path) != 2) return;
    static struct rt_reply reply;
    memset(&reply, 0, sizeof reply);
    int status = 200;
    if (strcmp(method, "GET") != 0) {
        status = 405;
        rt_add(&reply, "only GET\n");
    } else if (strcmp(path, "/") == 0) {
        rt_add(&reply, "ok alive");  // a liveness probe (the snapshot's trial restore sends GET /)
    } else if (strcmp(path, "/debug/tasks") == 0) {
        rt_debug_tasks(&reply);
    } else if (!handler(path, &reply)) {
        status = 404;
        reply.len = 0;
        rt_add(&reply, "unknown path %s\n", path);
    } else {
        if (reply.len == 0) rt_add(&reply, "ok");
        rt_add(&reply, "\n");
    }
    char head[256];
    int hn = snprintf(
        head, sizeof head,
        "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
        status, status == 200 ? "OK" : "Error", reply.len);
    rt_send_all(conn, head, (size_t)hn);
    rt_send_all(conn, reply.body, reply.len);
}

// Answers requests on `lfd` forever.
static inline __attribute__((noreturn)) void rt_accept_loop(int lfd, rt_handler handler) {
    for (;;) {
        int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            rt_die("accept");
        }
        rt_answer(conn, handler);
        shutdown(conn, SHUT_WR);
        close(conn);
    }
}

// Announces readiness ("<name>: ready") and answers requests on `lfd` forever (main thread).
static inline void rt_serve_on(int lfd, const char* name, rt_handler handler) {
    printf("%s: ready\n", name);
    fflush(stdout);
    rt_accept_loop(lfd, handler);
}

static inline void rt_serve(const char* name, rt_handler handler) {
    rt_serve_on(rt_listen(), name, handler);
}

// Small helpers the programs share.

// Sleeps `ms` milliseconds (restarting after signals).
static inline void rt_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

// The first bytes of a small /proc file, NUL-terminated ("" when it cannot be read).
static inline void rt_read_small(const char* path, char* buf, size_t size) {
    FILE* f = fopen(path, "re");
    size_t n = f ? fread(buf, 1, size - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
}

// The state letter (R, S, D, Z, ...) of a /proc/<pid>/stat file ("/proc/self/stat" too); '?' when
// it cannot be read. (After the last ')': the command name may hold any character.)
static inline char rt_task_state(const char* stat_path) {
    char buf[512];
    rt_read_small(stat_path, buf, sizeof buf);
    char* close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' ? close_paren[2] : '?';
}

// Returns once task `tid` (a process, or a thread by its tid) is asleep in a vfork: it has a child
// and its /proc state is D (the state alone could be a page fault before the vfork), or dies after
// 5 s. A contract program that is ready before that lets a snapshot under load see no vfork yet, and
// succeed (a flaky test).
static inline void rt_wait_vfork_parent(pid_t tid) {
    char stat_path[64], children_path[96], children[64];
    snprintf(stat_path, sizeof stat_path, "/proc/%d/stat", (int)tid);
    snprintf(children_path, sizeof children_path, "/proc/%d/task/%d/children", (int)tid, (int)tid);
    for (int i = 0; i < 5000; ++i) {
        rt_read_small(children_path, children, sizeof children);
        if (children[0] != 0 && rt_task_state(stat_path) == 'D') return;
        rt_sleep_ms(1);
    }
    rt_die("the vfork parent never went to sleep");
}

// The permissions ("rw-p") of the mapping holding `addr`, from /proc/self/maps; "" when unmapped.
static inline const char* rt_perms_at(const void* addr) {
    static char perms[8];
    perms[0] = 0;
    FILE* f = fopen("/proc/self/maps", "re");
    if (!f) return perms;
    unsigned long a = (unsigned long)addr, s, e;
    char p[8];
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%lx-%lx %7s", &s, &e, p) == 3 && a >= s && a < e) {
            snprintf(perms, sizeof perms, "%s", p);
            break;
        }
    }
    fclose(f);
    return perms;
}

// The value of `key` ("SigBlk:") in a /proc status file, as a string; "" if absent.
static inline const char* rt_status_field(const char* status_path, const char* key) {
    static char value[512];
    value[0] = 0;
    FILE* f = fopen(status_path, "re");
    if (!f) return value;
    char line[512];
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0) {
            const char* v = line + klen;
            while (*v == ' ' || *v == '\t') ++v;
            snprintf(value, sizeof value, "%s", v);
            value[strcspn(value, "\n")] = 0;
            break;
        }
    }
    fclose(f);
    return value;
}

#endif
