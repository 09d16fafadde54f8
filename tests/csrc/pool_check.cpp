// smollm2_nb: checks of the decoding step's thread pool (smollm2_nb/serve/csrc/thread_pool.h), compiled alone by
// tests/test_decoders.py. Every piece of every product runs exactly once, whatever the threads, the pieces, callers on
// several threads at once, or a call from inside a piece; prints "ok" last, or what went wrong.
#include "thread_pool.h"
#include <cstdio>
#include <vector>

static int failures = 0;
#define CHECK(c, ...) do { if (!(c)) { failures++; std::printf(__VA_ARGS__); std::printf("\n"); } } while (0)

// `products` products over [0, n) in pieces of at least `grain` on `threads` threads: each index seen exactly once
static void products(int threads, int64_t n, int64_t grain, int rounds, const char* who) {
  std::vector<std::atomic<int>> seen(n);
  for (int r = 0; r < rounds; r++) {
    for (auto& s : seen) s.store(0);
    std::atomic<int64_t> calls{0};
    pool::parallel_for(0, n, grain, threads, [&](int64_t b, int64_t e) {
      calls++;
      CHECK(0 <= b && b < e && e <= n && (e - b >= grain || e == n), "%s: a piece [%lld, %lld) of [0, %lld) grain %lld", who,
            (long long)b, (long long)e, (long long)n, (long long)grain);
      for (int64_t i = b; i < e; i++) seen[i]++;
    });
    for (int64_t i = 0; i < n; i++)
      if (seen[i].load() != 1) { CHECK(false, "%s: index %lld ran %d times (threads %d, n %lld, round %d)", who, (long long)i, seen[i].load(), threads, (long long)n, r); return; }
    CHECK(calls.load() <= std::max<int64_t>(1, threads * pool::PIECES_PER_THREAD), "%s: %lld pieces for %d threads", who, (long long)calls.load(), threads);
  }
}

int main() {
  for (int threads : {1, 2, 3, 4})
    for (int64_t n : {1, 2, 7, 16, 60, 3072})
      for (int64_t grain : {1, 8, 1000}) products(threads, n, grain, 200, "one caller");
  // two callers at once: one has the pool, the other runs its pieces alone; both complete
  {
    std::thread other([] { products(3, 512, 1, 2000, "second caller"); });
    products(3, 777, 1, 2000, "first caller");
    other.join();
  }
  // a product started from inside a piece runs on that thread, whole
  {
    std::atomic<int64_t> total{0};
    pool::parallel_for(0, 8, 1, 4, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) pool::parallel_for(0, 100, 1, 4, [&](int64_t c, int64_t f) { total += f - c; });
    });
    CHECK(total.load() == 800, "nested products: %lld of 800 indices", (long long)total.load());
  }
  // workers asleep between products (longer than their spin) wake for the next one
  for (int r = 0; r < 5; r++) { std::this_thread::sleep_for(std::chrono::milliseconds(2)); products(4, 1000, 1, 1, "after a sleep"); }
  std::printf(failures ? "failed\n" : "ok\n");
  return failures ? 1 : 0;
}
