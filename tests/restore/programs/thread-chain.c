// Threads that each start the next one and end, without pause: the freeze meets the chain in the
// middle (a thread in clone, one just started, one ending) and must catch a link of it rather than
// walk after it for ever. /check: the chain goes on after the restore (links keep being made: more
// than 10 within 2 s).
#include "http.h"

#include <pthread.h>
#include <stdatomic.h>

static atomic_ulong links;

static void* link_of_chain(void* arg) {
    (void)arg;
    atomic_fetch_add(&links, 1);
    pthread_t next;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (pthread_create(&next, &attr, link_of_chain, NULL) != 0) {
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    // Up to 2 s: on a loaded machine the chain may get no CPU for tens of ms; a lost chain makes none.
    unsigned long before = atomic_load(&links), after = before;
    int ms = 0;
    while (after <= before + 10 && ms < 2000) {
        usleep(10 * 1000);
        ms += 10;
        after = atomic_load(&links);
    }
    RT_CHECK(r, after > before + 10, "the chain made %lu links in %d ms", after - before, ms);
    if (!r->failed) rt_add(r, "ok the chain goes on (%lu links in %d ms)", after - before, ms);
    return 1;
}

int main(void) {
    pthread_t first;
    if (pthread_create(&first, NULL, link_of_chain, NULL) != 0) rt_die("pthread_create");
    pthread_detach(first);
    rt_serve("thread-chain", handle);
}
