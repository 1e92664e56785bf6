// The message bodies the gateway parses (Beast Body types: a value and a reader; never serialized by
// Beast, so no writer).
//   RequestBody   a client's request body, held whole until it is sent to the function. Its bytes come
//                 out of a BodyBudget shared by every connection: a declared length at once (before the
//                 body is read), a chunked body as it arrives. Many large uploads at once then get a 503
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

struct RequestBody {
    struct value_type {
        std::string data;
        BodyBudget* budget = nullptr;  // set before parsing; none: nothing is counted
        uint64_t taken = 0;            // of the budget, given back by the destructor
        bool refused = false;          // the budget had no room: the parser stopped with body_limit
        bool declared_taken = false;   // a declared length was taken (by the reader or before it)

        value_type() = default;
        value_type(value_type&& o) noexcept
            : data(std::move(o.data)),
              budget(o.budget),
              taken(std::exchange(o.taken, 0)),
              refused(o.refused),
              declared_taken(o.declared_taken) {}
        value_type& operator=(value_type&& o) noexcept {
            if (this != &o) {
                release();
                data = std::move(o.data);
                budget = o.budget;
                taken = std::exchange(o.taken, 0);
                refused = o.refused;
                declared_taken = o.declared_taken;
            }
            return *this;
        }
        ~value_type() { release(); }
        void release() {
            if (budget && taken) budget->give(taken);
            taken = 0;
        }
        // A declared length, once: Beast's parser initialises the reader only when the first body byte
        // is parsed, and the gateway takes the length as soon as the head is read (before a 100 Continue).
        bool take_declared(uint64_t n) {
            if (declared_taken) return !refused;
            declared_taken = true;
            return take(n);
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

    class reader {
      public:
        template <bool isRequest, class Fields>
        reader(boost::beast::http::header<isRequest, Fields>&, value_type& body) : body_(body) {}

        void init(const boost::optional<uint64_t>& length, boost::beast::error_code& ec) {
            ec = {};
            declared_ = length.has_value();
            // The parser has checked a declared length against its body limit already.
            if (declared_ && !body_.take_declared(*length)) ec = boost::beast::http::error::body_limit;
            if (declared_ && !ec) body_.data.reserve(static_cast<size_t>(*length));
        }

        template <class Buffers>
        size_t put(const Buffers& buffers, boost::beast::error_code& ec) {
            if (!declared_ && !body_.take(boost::beast::buffer_bytes(buffers))) {
                ec = boost::beast::http::error::body_limit;
                return 0;
            }
            return append_buffers(body_.data, buffers, ec);
        }

        void finish(boost::beast::error_code& ec) { ec = {}; }

      private:
        value_type& body_;
        bool declared_ = false;
    };
};

struct ResponseBody {
    using value_type = std::string;
    static constexpr uint64_t kReserveCap = 256 * 1024;

    class reader {
      public:
        template <bool isRequest, class Fields>
        reader(boost::beast::http::header<isRequest, Fields>&, value_type& body) : body_(body) {}

        void init(const boost::optional<uint64_t>& length, boost::beast::error_code& ec) {
            ec = {};
            if (length) body_.reserve(static_cast<size_t>(std::min(*length, kReserveCap)));
        }

        template <class Buffers>
        size_t put(const Buffers& buffers, boost::beast::error_code& ec) {
            return append_buffers(body_, buffers, ec);
        }

        void finish(boost::beast::error_code& ec) { ec = {}; }

      private:
        value_type& body_;
    };
};

}  // namespace initless::gateway
