// The gateway of `initless serve`: HTTP/1.1 with keep-alive (Boost.Beast over Asio), the routes
// OpenFaaS users know, in front of a controller::Controller.
//   ANY /function/<name>[/<path>]      forwarded to an instance of <name> (method, path, query, headers
//                                      and body); its status, headers and body come back, with
//                                      Server-Timing (queue, sandbox, restore, exec; ms) and
//                                      X-Initless-Start: warm | cold | boot, X-Initless-Instance
//                                      (the function cannot set these three; its own are dropped, as
//                                      are hop-by-hop fields both ways and a client's X-Forwarded-For,
//                                      which the gateway sets)
//   GET /system/functions              every function and its instances (JSON)
//   POST /system/functions             deploy {"path": "/abs/function/dir"}; with
//                                      `Accept: application/x-ndjson` each step streams as it happens
//   DELETE /system/functions           remove {"functionName": "<name>"}
//   GET /system/function/<name>        one function (JSON)
//   POST /system/scale-function/<name> {"replicas": N}: idle instances beyond N go, missing ones start
//   GET /system/logs?name=N[&follow=1] the function's instance logs (follow: streamed as they grow)
//   GET /system/stats                  start counts per function (JSON)
//   GET /healthz, GET /metrics         liveness; Prometheus text format
// The API (/system/...) changes what runs on this host: with an `api_token`, a request to it must carry
// `Authorization: Bearer <token>` (else 401); without one it answers only clients on this host, from a
// loopback address (else 403), so that --listen on a public address does not open it to everyone.
// Functions, /healthz and /metrics are open either way.
// Bad input never reaches the controller: not HTTP -> 400, a header section over the limit -> 431,
// a body over the limit -> 413, request bodies held at once over their budget -> 503, then the
// connection is closed. A function's response over 256 KiB or of no declared length is passed on as it
// arrives (at the client's pace), not held.
// Threads: `run` blocks, serving on `io_threads` threads, each running an event loop of its own; a
// connection lives on one loop (given round robin at accept) with its upstream sockets and timers, and
// never blocks (controller calls return at once; their callbacks are posted back to its loop; the
// connection to an instance is made without waiting, its first write waits for it).
// `stop` may be called from any thread: it stops accepting and, once the controller has drained and
// shut down (on a thread of its own), ends `run`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "initless/controller/controller.h"

namespace initless::gateway {

struct ServerOptions {
    std::string listen = "127.0.0.1:8080";  // host:port; port 0 picks a free one
    uint32_t header_limit_bytes = 16 * 1024;
    uint64_t body_limit_bytes = 64ull << 20;  // one request's body (a function's response is not bounded)
    // Request bodies are held whole until they go to the function: this bounds them all together (a
    // request beyond it gets 503). A function's response body is held whole only up to 256 KiB and is
    // otherwise passed on as it arrives.
    uint64_t request_bodies_limit_bytes = 1ull << 30;
    int io_threads = 2;
    // How long an I/O thread with nothing to do polls before it sleeps while at most one request is in
    // flight (0: never). See Loop::run in server.cpp for why and when.
    uint32_t spin_us = 100;
    std::string api_token;  // see above; empty: the API answers loopback clients only
};

class Server {
  public:
    Server(controller::Controller& controller, ServerOptions options);
    ~Server();
    // Binds (throws initless::Error if it cannot), then `ready(port)` is called, then serves until
    // SIGTERM/SIGINT or `stop`: drains and shuts the controller down, and returns.
    void run(const std::function<void(uint16_t port)>& ready = {});
    void stop();

    struct Impl;  // the server's internals, in server.cpp

  private:
    std::unique_ptr<Impl> impl_;
};

// "host:port" -> its parts; throws initless::Error on a malformed address.
std::pair<std::string, uint16_t> parse_address(const std::string& address);

}  // namespace initless::gateway
