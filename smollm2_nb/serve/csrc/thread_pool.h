// smollm2_nb: the decoding step's own thread pool (plain C++17, no PyTorch), included by cpu_decode.cpp.
//
// Why not OpenMP's (torch's at::parallel_for): it gives each thread a fixed share of every product and ends each product
// with a barrier that waits for all of them. A server shares its cores with the event loop that streams the text and
// with the clients; when one of those takes a core for a fraction of a millisecond, the thread it displaced still owns
// its share, and the whole step waits for it. On 2 cores a lone request through `smollm2 serve` decoded at 58 tok/s on
// 2 threads against 118 on one (artefacts/bench-serve-xeon-avx512vnni.txt).
//
// Here a product is cut into a few pieces per thread, and every thread, the caller included, takes the next piece
// left until none is: a thread that is late, or displaced, leaves its pieces to the others, and the caller waits only
// for the pieces already taken. Workers spin a short while between products (a step has a few hundred of them, a few
// microseconds apart) and sleep between steps, so a server's idle decoding threads leave the cores to the rest.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
static inline void pool_pause() { _mm_pause(); }
#elif defined(__aarch64__)
static inline void pool_pause() { asm volatile("yield"); }
#else
static inline void pool_pause() {}
#endif

namespace pool {

// pieces per thread of one product: enough that a displaced thread's share is picked up by the others in small parts
static const int64_t PIECES_PER_THREAD = 8;

struct Task { virtual void piece(int64_t i) const = 0; };

class Pool {
  // the current product: (generation << 40) | (pieces << 20) | next piece to take. One word, so that a thread can only
  // take a piece of the product it read, never one of the next: a product ends only when all its pieces are taken and
  // done, and a word whose next == pieces offers none.
  std::atomic<uint64_t> ticket_{0};
  std::atomic<int64_t> done_{0};          // pieces of the current product finished
  std::atomic<const Task*> task_{nullptr};
  std::atomic<int> active_{0};            // workers 0 .. active - 1 take part in the current product
  std::atomic<int> sleepers_{0};
  std::mutex sleep_m_, busy_;             // busy_: one product at a time; another caller runs its own alone
  std::condition_variable sleep_cv_;
  std::vector<std::thread> workers_;
  int64_t spin_us_;

  static uint64_t pieces_of(uint64_t t) { return (t >> 20) & 0xFFFFF; }
  static uint64_t next_of(uint64_t t) { return t & 0xFFFFF; }

  // take and run one piece of the product `t` names; false when it has none left (or is no longer current)
  bool take(uint64_t& t) {
    if (next_of(t) >= pieces_of(t)) return false;
    if (!ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel, std::memory_order_acquire)) return true;  // t reloaded
    task_.load(std::memory_order_acquire)->piece((int64_t)next_of(t));
    done_.fetch_add(1, std::memory_order_release);
    t = ticket_.load(std::memory_order_acquire);
    return true;
  }

  void work(int index) {
    in_pool() = true;
    uint64_t t = ticket_.load(std::memory_order_acquire);
    for (;;) {
      while (index < active_.load(std::memory_order_acquire) && take(t)) {}
      // nothing to take: wait for the next product, spinning at first, then asleep
      const uint64_t seen = t;
      auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
      for (int n = 1; (t = ticket_.load(std::memory_order_acquire)) == seen; n++) {
        pool_pause();
        if (n % 256 == 0 && std::chrono::steady_clock::now() > until) {
          std::unique_lock<std::mutex> lk(sleep_m_);
          sleepers_.fetch_add(1);
          sleep_cv_.wait(lk, [&] { return ticket_.load() != seen; });
          sleepers_.fetch_sub(1);
        }
      }
    }
  }

 public:
  explicit Pool(int64_t spin_us) : spin_us_(spin_us) {}
  static bool& in_pool() { thread_local bool inside = false; return inside; }

  // task.piece(0 .. pieces - 1), each exactly once, on `threads` threads at most (the caller one of them)
  void run(const Task& task, int64_t pieces, int threads) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (threads <= 1 || pieces <= 1 || in_pool() || !busy.owns_lock() || pieces >= (1 << 20)) {
      for (int64_t i = 0; i < pieces; i++) task.piece(i);
      return;
    }
    while ((int)workers_.size() < threads - 1) { int i = (int)workers_.size(); workers_.emplace_back([this, i] { work(i); }); }
    task_.store(&task, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    active_.store(threads - 1, std::memory_order_relaxed);
    uint64_t gen = (ticket_.load(std::memory_order_relaxed) >> 40) + 1;
    uint64_t t = (gen << 40) | (uint64_t(pieces) << 20);
    ticket_.store(t);                                   // (sequentially consistent: read before sleepers_ below)
    if (sleepers_.load() > 0) { { std::lock_guard<std::mutex> lk(sleep_m_); } sleep_cv_.notify_all(); }
    while (take(t)) {}
    for (int n = 1; done_.load(std::memory_order_acquire) < pieces; n++) {   // pieces the workers took, still running
      pool_pause();
      if (n % 4096 == 0) std::this_thread::yield();    // a displaced worker may be waiting for this core
    }
  }
};

// the process's pool, made on first use and never destroyed (its workers sleep until the process ends; a forked child,
// which has none of them, runs every piece on the caller's thread). SMOLLM2_SPIN_US: how long an idle worker spins
// before it sleeps.
inline Pool& shared() {
  static Pool* p = new Pool([] { const char* s = std::getenv("SMOLLM2_SPIN_US"); return s ? std::atoll(s) : 200LL; }());
  return *p;
}

template <class F> struct Ranges : Task {
  const F& f; int64_t begin, end, size;
  Ranges(const F& f, int64_t b, int64_t e, int64_t s) : f(f), begin(b), end(e), size(s) {}
  void piece(int64_t i) const override { int64_t b = begin + i * size; f(b, std::min(end, b + size)); }
};

// f(b, e) over [begin, end) in pieces of at least `grain` (the last may be shorter), on `threads` threads: at::parallel_for's contract
template <class F> void parallel_for(int64_t begin, int64_t end, int64_t grain, int threads, const F& f) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  if (threads <= 1 || n <= grain) { f(begin, end); return; }
  int64_t pieces = std::min<int64_t>(n / std::max<int64_t>(grain, 1), threads * PIECES_PER_THREAD);   // >= 2: n > grain
  const int64_t size = (n + pieces - 1) / pieces;
  pieces = (n + size - 1) / size;
  shared().run(Ranges<F>(f, begin, end, size), pieces, threads);
}

}  // namespace pool
