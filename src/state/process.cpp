// A process's record in the manifest, kind by kind (the list of the process-level kinds: a new
// kind that stores something adds its store and load here).
#include <nlohmann/json.hpp>

#include "state/kinds.h"

namespace initless::state {

json store_process(const image::Process& p) {
    json j = json::object();
    tree::store(j, p);
    mm::store(j, p);
    files::store_process(j, p);
    threads::store(j, p);
    signals::store(j, p);  // after threads: a thread's queued signals go beside its record
    memory::store(j, p);
    fds::store(j, p);
    timers::store(j, p);
    credentials::store(j, p);
    attributes::store(j, p);
    return j;
}

image::Process load_process(const json& j) {
    image::Process p;
    tree::load(j, p);
    mm::load(j, p);
    files::load_process(j, p);
    threads::load(j, p);
    signals::load(j, p);
    memory::load(j, p);
    fds::load(j, p);
    timers::load(j, p);
    credentials::load(j, p);
    attributes::load(j, p);
    return p;
}

}  // namespace initless::state
