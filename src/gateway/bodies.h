// The message bodies the gateway parses (Beast Body types: a value and a reader; never serialized by
// Beast, so no writer).
//   RequestBody   a client's request body, held whole until it is sent to the function. Its bytes come
//                 out of a BodyBudget shared by every connection as they arrive (a head declaring a length
//                 holds none of it: a client must send what it takes), and a declared length the budget has
//                 no room for now is refused at the head. Many large uploads at once then get a 503
//                 instead of the daemon's memory; the budget is given back when the value is destroyed.
//   ResponseBody  a function's response body as it arrives. The gateway holds a small one whole and passes
//                 a large or unbounded one on piece by piece, taking each piece out of the value.
// Unlike Beast's string_body, neither reserves more than it has to for a declared length: string_body
// reserves the whole declared length, and a function declaring 2^61 bytes would make that throw.
// Thread: a value is used by its connection's thread; BodyBudget is shared (atomic).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/optional.hpp>

namespace initless::gateway {

// Bytes of request bodies the gateway may hold at once.
class BodyBudget {
  public:
    explicit BodyBudget(uint64_t limit) : limit_(limit) {}
    bool take(uint64_t n) {
        uint64_t held = held_.load(std::memory_order_relaxed);
        do {
            if (n > limit_ || held > limit_ - n) return false;
        } while (!held_.compare_exchange_weak(held, held + n, std::memory_order_relaxed));
        return true;
    }
    void give(uint64_t n) { held_.fetch_sub(n, std::memory_order_relaxed); }
    uint64_t limit() const { return limit_; }
    uint64_t held() const { return held_.load(std::memory_order_relaxed); }

  private:
    const uint64_t limit_;
    std::atomic<uint64_t> held_{0};
};

// Appends `buffers` to `out`; false if that would pass `max_size`.
template <class Buffers>
size_t append_buffers(std::string& out, const Buffers& buffers, boost::beast::error_code& ec) {
    size_t extra = boost::beast::buffer_bytes(buffers);
    if (extra > out.max_size() - out.size()) {
        ec = boost::beast::http::error::buffer_overflow;
        return 0;
    }
    for (auto b : boost::beast::buffers_range_ref(buffers))
        out.append(static_cast<const char*>(b.data()), b.size());
    ec = {};
    return extra;
}

// A Beast body reader that appends what it is given to the body's text, each piece taken first from
// what `Body::take` allows (else the parser stops with body_limit), and reserves a declared length up to
// `Body::kReserveCap`.
template <class Body>
class AppendingReader {
  public:
    template <bool isRequest, class Fields>
    AppendingReader(boost::beast::http::header<isRequest, Fields>&, typename Body::value_type& body)
        : body_(body) {}

    void init(const boost::optional<uint64_t>& length, boost::beast::error_code& ec) {
        ec = {};
        if (length) Body::text(body_).reserve(static_cast<size_t>(std::min(*length, Body::kReserveCap)));
    }

    template <class Buffers>
    size_t put(const Buffers& buffers, boost::beast::error_code& ec) {
        if (!Body::take(body_, boost::beast::buffer_bytes(buffers))) {
            ec = boost::beast::http::error::body_limit;
            return 0;
        }
        return append_buffers(Body::text(body_), buffers, ec);
    }

    void finish(boost::beast::error_code& ec) { ec = {}; }

  private:
    typename Body::value_type& body_;
};

struct RequestBody {
    struct value_type {
        std::string data;
        BodyBudget* budget = nullptr;  // set before parsing; none: nothing is counted
        uint64_t taken = 0;            // of the budget, given back by the destructor
        bool refused = false;          // the budget had no room: the parser stopped with body_limit

        value_type() = default;
        value_type(value_type&& o) noexcept
            : data(std::move(o.data)),
              budget(o.budget),
              taken(std::exchange(o.taken, 0)),
              refused(o.refused) {}
        value_type& operator=(value_type&& o) noexcept {
            if (this != &o) {
                release();
                data = std::move(o.data);
                budget = o.budget;
                taken = std::exchange(o.taken, 0);
                refused = o.refused;
            }
            return *this;
        }
        ~value_type() { release(); }
        void release() {
            if (budget && taken) budget->give(taken);
            taken = 0;
        }
        // Whether `n` more bytes would fit now (taking none).
        bool has_room_for(uint64_t n) {
            if (!budget || (n <= budget->limit() && budget->held() <= budget->limit() - n)) return true;
            refused = true;
            return false;
        }
        bool take(uint64_t n) {
            if (!budget) return true;
            if (!budget->take(n)) {
                refused = true;
                return false;
            }
            taken += n;
            return true;
        }
    };

    static std::string& text(value_type& v) { return v.data; }
    static bool take(value_type& v, uint64_t n) { return v.take(n); }
    // Address space only, until written; the parser has checked a declared length against its body limit.
    static constexpr uint64_t kReserveCap = std::numeric_limits<uint64_t>::max();
    using reader = AppendingReader<RequestBody>;
};

struct ResponseBody {
    using value_type = std::string;
    static std::string& text(value_type& v) { return v; }
    static bool take(value_type&, uint64_t) { return true; }
    static constexpr uint64_t kReserveCap = 256 * 1024;
    using reader = AppendingReader<ResponseBody>;
};

}  // namespace initless::gateway
