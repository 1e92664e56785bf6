// C "hello world" for initless with the kinds of state a restore must bring back: an epoll loop (main
// thread) that accepts connections on PORT (default 9000) and counts timerfd ticks (every 100 ms), and
// two worker threads that take accepted connections from a queue (mutex + condvar) and answer them.
//   GET /  ->  "hello from c ticks=N requests=M"
// The ready phrase is printed once everything is set up and listening (see examples/README.md).
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define READY "c-hello: ready"
#define WORKERS 2
#define QUEUE_CAP 64

static atomic_ulong ticks;
static atomic_ulong requests;

// Accepted connections waiting for a worker: a ring buffer guarded by `lock`.
static struct {
    pthread_mutex_t lock;
    pthread_cond_t nonempty;
    int fds[QUEUE_CAP];
    unsigned head, len;
} queue = {.lock = PTHREAD_MUTEX_INITIALIZER, .nonempty = PTHREAD_COND_INITIALIZER};

static void die(const char* what) {
    perror(what);
    exit(1);
}

// Returns 0 when the queue is full: the caller drops the connection rather than block the loop.
static int queue_push(int fd) {
    int ok = 0;
    pthread_mutex_lock(&queue.lock);
    if (queue.len < QUEUE_CAP) {
        queue.fds[(queue.head + queue.len++) % QUEUE_CAP] = fd;
        pthread_cond_signal(&queue.nonempty);
        ok = 1;
    }
    pthread_mutex_unlock(&queue.lock);
    return ok;
}

static int queue_pop(void) {
    pthread_mutex_lock(&queue.lock);
    while (queue.len == 0) pthread_cond_wait(&queue.nonempty, &queue.lock);
    int fd = queue.fds[queue.head];
    queue.head = (queue.head + 1) % QUEUE_CAP;
    queue.len--;
    pthread_mutex_unlock(&queue.lock);
    return fd;
}

static void send_all(int fd, const char* p, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // the client went away; nothing to tell it
        p += n;
        len -= (size_t)n;
    }
}

// Reads until the end of the request head; only the request line is used, bodies are ignored.
static int read_head(int fd, char* buf, size_t cap) {
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n")) return 0;
    }
    return strchr(buf, '\n') ? 0 : -1;  // head too long: still answer from the request line
}

static void respond(int fd, int status, const char* reason, const char* body) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, reason, strlen(body));
    send_all(fd, head, (size_t)n);
    send_all(fd, body, strlen(body));
}

static void serve(int fd) {
    char buf[4096];
    if (read_head(fd, buf, sizeof buf) < 0) return;
    unsigned long m = atomic_fetch_add(&requests, 1) + 1;
    char method[16], target[1024];
    if (sscanf(buf, "%15s %1023s", method, target) != 2) {
        respond(fd, 400, "Bad Request", "bad request\n");
    } else if (strcmp(method, "GET") != 0) {
        respond(fd, 405, "Method Not Allowed", "only GET\n");
    } else if (strcmp(target, "/") != 0) {
        respond(fd, 404, "Not Found", "not found\n");
    } else {
        char body[128];
        snprintf(body, sizeof body, "hello from c ticks=%lu requests=%lu\n", atomic_load(&ticks), m);
        respond(fd, 200, "OK", body);
    }
}

static void* worker(void* arg) {
    (void)arg;
    for (;;) {
        int fd = queue_pop();
        serve(fd);
        // Close, not keep-alive: no established connection may outlive its request (init-less contract).
        close(fd);
    }
    return NULL;
}

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) die("SO_REUSEADDR");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr*)&addr, sizeof addr) < 0) die("bind");
    if (listen(fd, 128) < 0) die("listen");
    return fd;
}

static int start_ticker(void) {
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0) die("timerfd_create");
    struct itimerspec every = {.it_interval = {0, 100 * 1000 * 1000}, .it_value = {0, 100 * 1000 * 1000}};
    if (timerfd_settime(fd, 0, &every, NULL) < 0) die("timerfd_settime");
    return fd;
}

int main(void) {
    const char* port_env = getenv("PORT");
    int port = port_env && *port_env ? atoi(port_env) : 9000;
    if (port < 1 || port > 65535) {
        fprintf(stderr, "c-hello: bad PORT '%s'\n", port_env);
        return 1;
    }

    int lfd = listen_on(port);
    int tfd = start_ticker();
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl listen");
    ev.data.fd = tfd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) < 0) die("epoll_ctl timerfd");

    for (int i = 0; i < WORKERS; i++) {
        pthread_t t;
        int err = pthread_create(&t, NULL, worker, NULL);
        if (err) {
            errno = err;
            die("pthread_create");
        }
        pthread_detach(t);
    }

    printf("%s\n", READY);
    fflush(stdout);

    for (;;) {
        struct epoll_event events[16];
        int n = epoll_wait(ep, events, 16, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.fd == tfd) {
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) == sizeof expirations)
                    atomic_fetch_add(&ticks, expirations);
                continue;
            }
            for (;;) {
                int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (cfd < 0) break;  // EAGAIN: backlog drained (or a transient error: retry next time)
                // A stalled client must not hold a worker forever.
                struct timeval limit = {.tv_sec = 5};
                setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
                setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
                if (!queue_push(cfd)) close(cfd);
            }
        }
    }
}
