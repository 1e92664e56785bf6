// A second thread that makes one piece of state and holds it for the snapshot: for the programs whose
// state lives in a thread other than the main one (its own cwd or fd table, a pending signal, a /proc
// fd of its own, a tracer).
#pragma once

#include "http.h"  // first: it defines _GNU_SOURCE

#include <pthread.h>

static int state_thread_pipe[2];

// Called by the thread once its state is made: lets start_state_thread return, then sleeps for good.
static void state_thread_ready(void) {
    if (write(state_thread_pipe[1], "x", 1) != 1) rt_die("write");
    for (;;) pause();
}

// Runs `make_state` in a new thread and returns once it has called state_thread_ready().
static void start_state_thread(void* (*make_state)(void*)) {
    if (pipe(state_thread_pipe) != 0) rt_die("pipe");
    pthread_t t;
    if (pthread_create(&t, NULL, make_state, NULL) != 0) rt_die("pthread_create");
    char c;
    if (read(state_thread_pipe[0], &c, 1) != 1) rt_die("read");
}
