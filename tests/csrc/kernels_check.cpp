// The products of cpu_kernels.h for the class this file is compiled as, against plain C++ in double precision:
// fp32, bf16 and int8 weights, whole matrices and a slice of rows (nothing outside it written), attention's q . k, and
// the activations' rounding to int8.
// tests/test_decoders.py builds and runs it for every class this machine runs, and for the ARM classes under qemu.
// Prints one line per check and "ok <class>"; exits 1 at the first product off by more than float rounding.
#include "cpu_kernels.h"
#include <cstdio>
#include <random>

static std::mt19937 rng(0);
static float uniform() { return std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng); }
static uint16_t to_bf16(float f) { uint32_t u; std::memcpy(&u, &f, 4); return uint16_t(u >> 16); }   // truncated: exact
static float from_bf16(uint16_t b) { uint32_t u = uint32_t(b) << 16; float f; std::memcpy(&f, &u, 4); return f; }

static bool close(const char* what, int64_t out, int64_t in, const std::vector<float>& y, const std::vector<double>& ref,
                  const std::vector<double>& mag, int64_t r0, int64_t r1, double rel) {
  double worst = 0;
  for (int64_t r = 0; r < out; r++) {
    bool inside = r >= r0 && r < r1;
    if (!inside && y[r] != -7.0f) { std::printf("FAIL %s %ldx%ld: row %ld outside [%ld, %ld) written\n", what, out, in, r, r0, r1); return false; }
    if (inside) worst = std::max(worst, std::fabs(y[r] - ref[r]) / (mag[r] + 1e-30));
  }
  std::printf("%s %ldx%ld rows [%ld, %ld): worst error %.2e of sum |w x|\n", what, out, in, r0, r1, worst);
  if (worst > rel) { std::printf("FAIL %s: %.2e > %.0e\n", what, worst, rel); return false; }
  return true;
}

static bool check(int64_t out, int64_t in, int64_t r0, int64_t r1) {
  std::vector<float> x(in), W(out * in);
  std::vector<uint16_t> scale(out * in / 64);
  for (auto& v : x) v = uniform();
  for (auto& v : W) v = uniform();
  for (auto& v : scale) v = to_bf16(0.01f * (1.0f + uniform()));
  std::vector<double> ref(out), mag(out);
  std::vector<float> y(out);
  // fp32
  for (int64_t r = 0; r < out; r++) {
    ref[r] = mag[r] = 0;
    for (int64_t i = 0; i < in; i++) { ref[r] += double(W[r * in + i]) * x[i]; mag[r] += std::fabs(double(W[r * in + i]) * x[i]); }
  }
  std::fill(y.begin(), y.end(), -7.0f);
  rows_f32(W.data(), x.data(), y.data(), r0, r1, in);
  if (!close("fp32", out, in, y, ref, mag, r0, r1, 1e-5)) return false;
  // bf16 weights (the avx512bf16 class also rounds x to bf16: 2^-8 relative per product)
  std::vector<uint16_t> Wb(out * in);
  for (int64_t k = 0; k < out * in; k++) Wb[k] = to_bf16(W[k]);
  for (int64_t r = 0; r < out; r++) {
    ref[r] = mag[r] = 0;
    for (int64_t i = 0; i < in; i++) { double p = double(from_bf16(Wb[r * in + i])) * x[i]; ref[r] += p; mag[r] += std::fabs(p); }
  }
  std::fill(y.begin(), y.end(), -7.0f);
  XBf16 xb = prepare_bf16(x.data(), in);
  rows_bf16(Wb.data(), xb, y.data(), r0, r1, in);
  if (!close("bf16", out, in, y, ref, mag, r0, r1, std::string(ISA) == "avx512bf16" ? 1e-2 : 1e-5)) return false;
  // int8 weights with a scale per (row, block of 64), x quantized per 32: the integer sums are exact, so the reference
  // takes the same quantized x
  std::vector<int8_t> Wq(out * in);
  for (int64_t k = 0; k < out * in; k++) Wq[k] = int8_t(std::lrint(W[k] * 127));
  QuantX q = quantize_x(x.data(), in);
  for (int64_t r = 0; r < out; r++) {
    ref[r] = mag[r] = 0;
    for (int64_t b = 0; b < in / 32; b++) {
      int64_t sum = 0, abs_sum = 0;
      for (int64_t i = 32 * b; i < 32 * (b + 1); i++) { sum += int64_t(Wq[r * in + i]) * q.q[i]; abs_sum += std::abs(int64_t(Wq[r * in + i]) * q.q[i]); }
      double s = double(q.s[b]) * from_bf16(scale[r * (in / 64) + b / 2]);
      ref[r] += double(sum) * s; mag[r] += double(abs_sum) * s;
    }
  }
  std::fill(y.begin(), y.end(), -7.0f);
  XInt8 xq = prepare_int8(x.data(), in);
  rows_int8(Wq.data(), scale.data(), xq, y.data(), r0, r1, in);
  return close("int8", out, in, y, ref, mag, r0, r1, 1e-5);
}

// x rounded per block of 32 (quantize_x, vectorized on x86) against its definition: |x|'s largest, x * 127 / it rounded
// to nearest even; zero blocks, halves (ties), tiny and large values; exact, as every class must agree
static bool check_quantize() {
  std::mt19937 g(3); std::normal_distribution<float> nrm(0, 1);
  for (int it = 0; it < 2000; it++) {
    int64_t in = 32 * (1 + it % 48); std::vector<float> x(in);
    for (auto& v : x) v = nrm(g) * (it % 7 == 0 ? 1e-30f : it % 5 == 0 ? 1e4f : 1.0f);
    if (it % 11 == 0) std::fill(x.begin(), x.begin() + 32, 0.0f);
    if (it % 13 == 0) for (int64_t i = 0; i < in; i++) x[i] = float(int(i % 255) - 127) / 2;
    if (it % 17 == 0) x[3] = -std::fabs(x[3]) * 1000;
    QuantX q = quantize_x(x.data(), in);
    for (int64_t b = 0; b < in / 32; b++) {
      float amax = 0; for (int64_t i = 32 * b; i < 32 * (b + 1); i++) amax = std::max(amax, std::fabs(x[i]));
      float inv = amax > 0 ? 127.0f / amax : 0.0f;
      bool ok = q.s[b] == amax / 127.0f;
      for (int64_t i = 32 * b; i < 32 * (b + 1); i++) ok = ok && q.q[i] == int8_t(std::nearbyint(x[i] * inv));
      if (!ok) { std::printf("FAIL quantize_x: block %ld of %ld values (case %d)\n", b, in, it); return false; }
    }
  }
  std::printf("quantize_x: 2000 vectors exact\n");
  return true;
}

int main() {
  std::printf("class %s\n", ISA);
  if (!check_quantize()) return 1;
  int64_t shapes[][4] = {{8, 64, 0, 8}, {12, 192, 0, 12}, {960, 576, 0, 960}, {576, 1536, 0, 576}, {16, 128, 4, 12}};
  for (auto& s : shapes) if (!check(s[0], s[1], s[2], s[3])) return 1;
  for (int64_t n : {64, 24, 7}) {                 // attention's q . k: head_dim 64 (SmolLM2), and lengths with a tail
    std::vector<float> a(n), b(n); double ref = 0, mag = 0;
    for (int64_t i = 0; i < n; i++) { a[i] = uniform(); b[i] = uniform(); ref += double(a[i]) * b[i]; mag += std::fabs(double(a[i]) * b[i]); }
    double err = std::fabs(dot(a.data(), b.data(), n) - ref) / mag;
    std::printf("dot %ld: error %.2e\n", n, err);
    if (err > 1e-5) { std::printf("FAIL dot %ld\n", n); return 1; }
  }
  std::printf("ok %s\n", ISA);
  return 0;
}
