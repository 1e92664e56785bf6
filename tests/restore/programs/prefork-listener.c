// A pre-forking server: the main process opens the listening socket, forks two workers that accept
// on it (one listening socket shared by three processes), and waits for them in wait(). /check is
// answered by whichever worker accepts: it checks its parent, that its listening fd is the parent's
// socket, and that the parent still sits in wait4.
#include "http.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

static pid_t parent;
static int lfd;

static ino_t inode_of(pid_t pid, int fd) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
    struct stat st;
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    RT_CHECK(r, getppid() == parent, "worker %d: parent %d, want %d", getpid(), getppid(), parent);
    ino_t mine = inode_of(getpid(), lfd), theirs = inode_of(parent, lfd);
    RT_CHECK(r, mine && mine == theirs, "worker's listening socket %lu is not the parent's %lu",
             (unsigned long)mine, (unsigned long)theirs);
    // Just restored, the parent may not have run yet: it goes back into wait4 when it does.
    char wchan_path[64], wchan[64] = "";
    snprintf(wchan_path, sizeof wchan_path, "/proc/%d/wchan", parent);
    for (int tries = 0; tries < 2000 && !strstr(wchan, "wait"); ++tries) {
        FILE* f = fopen(wchan_path, "re");
        wchan[0] = 0;
        if (f && fgets(wchan, sizeof wchan, f)) wchan[strcspn(wchan, "\n")] = 0;
        if (f) fclose(f);
        if (!strstr(wchan, "wait")) rt_sleep_ms(1);
    }
    RT_CHECK(r, strstr(wchan, "wait") != NULL, "the parent is not waiting for its workers (wchan '%s')",
             wchan);
    if (!r->failed) rt_add(r, "ok worker %d of parent %d on the shared listening socket", getpid(), parent);
    return 1;
}

int main(void) {
    parent = getpid();
    lfd = rt_listen();
    int ready[2];
    if (pipe(ready) != 0) rt_die("pipe");
    for (int k = 0; k < 2; ++k) {
        if (fork() == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(ready[0]);
            close(ready[1]);  // EOF for the parent once both workers are here
            rt_accept_loop(lfd, handle);
        }
    }
    close(ready[1]);
    char byte;
    while (read(ready[0], &byte, 1) > 0) {
    }
    close(ready[0]);
    printf("prefork-listener: ready\n");
    fflush(stdout);
    for (;;)
        if (wait(NULL) < 0 && errno == ECHILD) return 1;
}
