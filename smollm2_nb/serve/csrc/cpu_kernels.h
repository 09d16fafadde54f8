// The products of the batch-1 decoding step, per instruction-set class: y = W x for fp32, bf16 and int8 weights, and
// the q . k of attention. No torch here: cpu_decode.cpp (the step) includes this file, and tests/test_decoders.py also
// compiles it alone with tests/csrc/kernels_check.cpp, to check each class against a plain-C++ reference, the ARM
// classes under emulation. The classes, chosen by smollm2_nb.serve.decoders from the CPU's flags:
//   avx512bf16  -mavx512f/bw/vl/dq -mavx512bf16 -mavx512vnni  (Sapphire Rapids, Zen 4): vdpbf16ps, vpdpbusd
//   avx512vnni  -mavx512f/bw/vl/dq -mavx512vnni               (Cascade Lake, Ice Lake): bf16 widened to fp32, vpdpbusd
//   avx512      -mavx512f/bw/vl/dq                            (Skylake-X): bf16 widened, int8 by vpmaddubsw + vpmaddwd
//   avx2        -mavx2 -mfma -mf16c                           (Haswell .. Zen 3, most laptops): 8 lanes, the same int8 trick
//   neondot     -march=armv8.2-a+dotprod                      (Apple silicon, Graviton 2+): 4 lanes, int8 by sdot
//   neon        -march=armv8-a                                (older ARM cores): int8 by smull + sadalp
// W (out, in) row-major, out % 4 == 0, in % 64 == 0 (the caller pads); x and y fp32. int8 weights have one scale per
// block of 64 along a row: ws (out, in / 64), row-major, bf16 (rounded up when quantizing, so no weight clips).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#define SMOLLM2_AVX512 1
#if defined(__AVX512BF16__) && defined(__AVX512VNNI__)
static const char* ISA = "avx512bf16";
#elif defined(__AVX512VNNI__)
static const char* ISA = "avx512vnni";
#else
static const char* ISA = "avx512";
#endif
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define SMOLLM2_AVX2 1
static const char* ISA = "avx2";
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define SMOLLM2_NEON 1
#if defined(__ARM_FEATURE_DOTPROD)
static const char* ISA = "neondot";
#else
static const char* ISA = "neon";
#endif
#else
#error "the CPU decoding step needs AVX2 with FMA and F16C, AVX-512 (F, BW, VL, DQ), or ARM's NEON (aarch64)"
#endif

// x rounded to int8 per block of 32 (one fp32 scale per block, as llama.cpp's q8_0 does), the weights per block of 64:
// each block's products are exact integer sums; only the scaling (x's block scale times the weights') is fp32. Every
// class computes the same integers. On the real SmolLM2-135M-Instruct weights, against one scale per weight row and x
// per 64, these blocks cut int8's perplexity excess over fp32 from 1.5% to 0.2% and its KL from 8.6e-3 to 4.2e-3.
static const int64_t XBLOCK = 32;
static inline float widen_bf16(uint16_t h) { uint32_t u = uint32_t(h) << 16; float f; std::memcpy(&f, &u, 4); return f; }
struct QuantX { std::vector<int8_t> q; std::vector<float> s; };

static QuantX quantize_x(const float* x, int64_t in) {
  QuantX r; r.q.resize(in); r.s.resize(in / XBLOCK);
  int64_t b = 0;
#if defined(SMOLLM2_AVX512) || defined(SMOLLM2_AVX2)
  // the same numbers 32 at a time: |x|'s largest (a NaN passed over, as std::max does), x * inv rounded to nearest even
  // (the conversion's default mode, as nearbyint's), so every class and the scalar loop below agree bit for bit
  for (; b < in / XBLOCK; b++) {
    const float* xb = x + XBLOCK * b;
#if defined(SMOLLM2_AVX512)
    __m512 v[2] = {_mm512_loadu_ps(xb), _mm512_loadu_ps(xb + 16)}, m = _mm512_setzero_ps();
    for (auto& u : v) m = _mm512_max_ps(_mm512_abs_ps(u), m);
    float amax = _mm512_reduce_max_ps(m), inv = amax > 0 ? 127.0f / amax : 0.0f;
    for (int k = 0; k < 2; k++)
      _mm_storeu_si128((__m128i*)&r.q[XBLOCK * b + 16 * k], _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v[k], _mm512_set1_ps(inv)))));
#else
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4], m = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) { v[k] = _mm256_loadu_ps(xb + 8 * k); m = _mm256_max_ps(_mm256_andnot_ps(sign, v[k]), m); }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h)); h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float amax = _mm_cvtss_f32(h), inv = amax > 0 ? 127.0f / amax : 0.0f;
    __m256i q[4];
    for (int k = 0; k < 4; k++) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], _mm256_set1_ps(inv)));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));   // lanes interleaved
    _mm256_storeu_si256((__m256i*)&r.q[XBLOCK * b], _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
#endif
    r.s[b] = amax / 127.0f;
  }
#endif
  for (; b < in / XBLOCK; b++) {
    const float* xb = x + XBLOCK * b; float amax = 0;
    for (int64_t i = 0; i < XBLOCK; i++) amax = std::max(amax, std::fabs(xb[i]));
    float inv = amax > 0 ? 127.0f / amax : 0.0f;
    for (int64_t i = 0; i < XBLOCK; i++) r.q[XBLOCK * b + i] = (int8_t)std::nearbyint(xb[i] * inv);
    r.s[b] = amax / 127.0f;
  }
  return r;
}

// bf16 weights without a bf16 dot product: a 32-bit lane holds two bf16 values; the even one shifted up 16 bits and the
// odd one masked are both exact fp32 numbers. So x is split once into its even and odd elements (`split_x`).
#if defined(SMOLLM2_AVX2) || (defined(SMOLLM2_AVX512) && !defined(__AVX512BF16__))
static void split_x(const float* x, float* even, float* odd, int64_t in) {
  for (int64_t i = 0; i < in / 2; i++) { even[i] = x[2 * i]; odd[i] = x[2 * i + 1]; }
}
struct XBf16 { std::vector<float> even, odd; };
static XBf16 prepare_bf16(const float* x, int64_t in) {
  XBf16 r; r.even.resize(in / 2); r.odd.resize(in / 2); split_x(x, r.even.data(), r.odd.data(), in);
  return r;
}
#endif

#if defined(SMOLLM2_AVX512) || defined(SMOLLM2_AVX2)
// int8 reads four rows side by side, so the hardware prefetcher sees four short streams (a 576-byte int8 row is nine
// cache lines) and falls behind: on a Zen 3 EPYC (AVX2) the int8 product ran at 4 GB/s. Each iteration therefore also
// prefetches its share (256 bytes) of the rows PREFETCH_GROUPS groups of four ahead; 4 was the fastest of 1, 2, 4, 8, 16
// there (int8 2x, fp32 1.2x faster, one thread). A prefetch past the end of the matrix is harmless: it cannot fault.
// The AVX-512 int8 product had none and ran at about 23 GB/s on a Zen 5 EPYC, where fp32 and bf16 stream 35-41 GB/s;
// with it the whole step decodes int8 1.24-1.35x faster there (benchmarks/bench_step_ab.py). fp32 and bf16 gained nothing.
static const int64_t PREFETCH_GROUPS = 4;
static inline void prefetch_ahead(const void* group, int64_t group_bytes, int64_t it) {
  const char* p = (const char*)group + PREFETCH_GROUPS * group_bytes + 256 * it;
  for (int j = 0; j < 4; j++) _mm_prefetch(p + 64 * j, _MM_HINT_T0);
}

// The fp32 and widened-bf16 row products of both x86 families are one template over a vector type V (its width N and
// the few operations it needs): ROWS rows side by side, ACC accumulators per row (each taking every ACC-th vector of
// the row) and NT tokens per weight load. The AVX-512 classes read four rows with one accumulator each, AVX2 one row
// with four (its measured best, below); each accumulator's sum runs over the row in order, then the ACC of them are
// added pairwise ((a0 + a1) + (a2 + a3)) and across the vector, so a token's sums are the same whatever NT.
template <class V, int ACC> static inline float sum_row(const typename V::F* a) {
  if constexpr (ACC == 1) return V::sum(a[0]);
  else if constexpr (ACC == 2) return V::sum(V::add(a[0], a[1]));
  else return V::sum(V::add(V::add(a[0], a[1]), V::add(a[2], a[3])));
}
template <class V, int ROWS, int ACC, int NT>
static void rows_f32_v(const float* W, const float* const* x, float* const* y, int64_t r0, int64_t r1, int64_t in) {
  for (int64_t r = r0; r < r1; r += ROWS) {
    typename V::F a[NT][ROWS][ACC];
    for (int t = 0; t < NT; t++) for (int k = 0; k < ROWS; k++) for (int j = 0; j < ACC; j++) a[t][k][j] = V::zero();
    const float* w = W + r * in;
    for (int64_t i = 0; i < in; i += V::N * ACC)
      for (int j = 0; j < ACC; j++) {
        typename V::F xv[NT]; for (int t = 0; t < NT; t++) xv[t] = V::load(x[t] + i + V::N * j);
        for (int k = 0; k < ROWS; k++) {
          typename V::F wv = V::load(w + k * in + i + V::N * j);
          for (int t = 0; t < NT; t++) a[t][k][j] = V::fma(wv, xv[t], a[t][k][j]);
        }
      }
    for (int t = 0; t < NT; t++) for (int k = 0; k < ROWS; k++) y[t][r + k] = sum_row<V, ACC>(a[t][k]);
  }
}
// bf16 weights widened in registers (split_x above): each load of 2N weights gives N even and N odd fp32 values; H
// loads per step, so 2H accumulators per row (even and odd of each load)
template <class V, int ROWS, int H, int NT, class XB>   // XB: XBf16 (its even and odd halves of x)
static void rows_bf16_v(const uint16_t* W, const XB* const* xb, float* const* y, int64_t r0, int64_t r1, int64_t in) {
  for (int64_t r = r0; r < r1; r += ROWS) {
    typename V::F a[NT][ROWS][2 * H];
    for (int t = 0; t < NT; t++) for (int k = 0; k < ROWS; k++) for (int j = 0; j < 2 * H; j++) a[t][k][j] = V::zero();
    const uint16_t* w = W + r * in;
    for (int64_t i = 0; i < in; i += 2 * V::N * H)
      for (int k = 0; k < ROWS; k++)
        for (int h = 0; h < H; h++) {
          typename V::I v = V::loadi(w + k * in + i + 2 * V::N * h);
          typename V::F we = V::bf16_even(v), wo = V::bf16_odd(v);
          for (int t = 0; t < NT; t++) {
            a[t][k][2 * h] = V::fma(we, V::load(xb[t]->even.data() + i / 2 + V::N * h), a[t][k][2 * h]);
            a[t][k][2 * h + 1] = V::fma(wo, V::load(xb[t]->odd.data() + i / 2 + V::N * h), a[t][k][2 * h + 1]);
          }
        }
    for (int t = 0; t < NT; t++) for (int k = 0; k < ROWS; k++) y[t][r + k] = sum_row<V, 2 * H>(a[t][k]);
  }
}
#endif

#ifdef SMOLLM2_AVX512
static inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }
struct Avx512 {   // the vector type of rows_f32_v / rows_bf16_v
  using F = __m512; using I = __m512i; static constexpr int N = 16;
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static I loadi(const void* p) { return _mm512_loadu_si512(p); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F bf16_even(I v) { return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)); }
  static F bf16_odd(I v) { return _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000))); }
  static float sum(F v) { return hsum(v); }
};

// fp32 and bf16 take NT tokens at once (a prompt's; one when decoding): each weight loaded serves all NT of them, and
// each (row, token) sum is formed exactly as with one token, so a prompt's logits are the step's bit for bit
static const int F32_TOKENS = 4, BF16_TOKENS = 2;   // the most at once: 16 accumulators of the 32 registers
template <int NT>   // four rows side by side, one accumulator each
static void rows_f32_t(const float* W, const float* const* x, float* const* y, int64_t r0, int64_t r1, int64_t in) {
  rows_f32_v<Avx512, 4, 1, NT>(W, x, y, r0, r1, in);
}

#ifdef __AVX512BF16__
// x rounded to bf16 once, then 32 products per vdpbf16ps; two chains per row hide its latency
struct XBf16 { std::vector<__m512bh> v; };
static XBf16 prepare_bf16(const float* x, int64_t in) {
  XBf16 r; r.v.resize(in / 32);
  for (int64_t i = 0; i < in; i += 32) r.v[i / 32] = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
  return r;
}
template <int NT>
static void rows_bf16_t(const uint16_t* W, const XBf16* const* xb, float* const* y, int64_t r0, int64_t r1, int64_t in) {
  for (int64_t r = r0; r < r1; r += 4) {
    __m512 a[8][NT]; for (int k = 0; k < 8; k++) for (int t = 0; t < NT; t++) a[k][t] = _mm512_setzero_ps();
    const uint16_t* w = W + r * in;
    for (int64_t i = 0; i < in; i += 64) {
      for (int k = 0; k < 4; k++) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + k * in + i), w1 = (__m512bh)_mm512_loadu_si512(w + k * in + i + 32);
        for (int t = 0; t < NT; t++) {
          a[2 * k][t] = _mm512_dpbf16_ps(a[2 * k][t], w0, xb[t]->v[i / 32]);
          a[2 * k + 1][t] = _mm512_dpbf16_ps(a[2 * k + 1][t], w1, xb[t]->v[i / 32 + 1]);
        }
      }
    }
    for (int k = 0; k < 4; k++) for (int t = 0; t < NT; t++) y[t][r + k] = hsum(_mm512_add_ps(a[2 * k][t], a[2 * k + 1][t]));
  }
}
#else
template <int NT>   // four rows side by side, 32 weights (16 even + 16 odd) per load
static void rows_bf16_t(const uint16_t* W, const XBf16* const* xb, float* const* y, int64_t r0, int64_t r1, int64_t in) {
  rows_bf16_v<Avx512, 4, 1, NT>(W, xb, y, r0, r1, in);
}
#endif

// int8: |x| as u8 and x's sign moved onto the weights (vpdpbusd and vpmaddubsw multiply unsigned by signed bytes)
// A 64-byte block's 16 int32 sums: lanes 0-7 are x's first block of 32, lanes 8-15 its second, so `s` holds each
// 64-block's two x scales as one vector.
struct XInt8 { std::vector<__m512i> ax; std::vector<__mmask64> neg; std::vector<__m512> s; };
static XInt8 prepare_int8(const float* x, int64_t in) {
  QuantX q = quantize_x(x, in); XInt8 r; int64_t nb = in / 64;
  r.ax.resize(nb); r.neg.resize(nb); r.s.resize(nb);
  for (int64_t b = 0; b < nb; b++) {
    __m512i v = _mm512_loadu_si512(q.q.data() + 64 * b);
    r.ax[b] = _mm512_abs_epi8(v); r.neg[b] = _mm512_movepi8_mask(v);
    r.s[b] = _mm512_insertf32x8(_mm512_set1_ps(q.s[2 * b]), _mm256_set1_ps(q.s[2 * b + 1]), 1);
  }
  return r;
}
static void rows_int8(const int8_t* W, const uint16_t* ws, const XInt8& q, float* y, int64_t r0, int64_t r1, int64_t in) {
  const int64_t nb = in / 64;
  const __m512i zero = _mm512_setzero_si512();
#ifndef __AVX512VNNI__
  const __m512i ones = _mm512_set1_epi16(1);
#endif
  std::vector<float> wsf(4 * nb);   // the four rows' weight scales, widened once: a broadcast from memory is free in vfmadd/vmulps
  for (int64_t r = r0; r < r1; r += 4) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const int8_t* w = W + r * in;
    for (int64_t i = 0; i < 4 * nb; i++) wsf[i] = widen_bf16(ws[r * nb + i]);
    for (int64_t b = 0; b < nb; b++) {
      prefetch_ahead(w, 4 * in, b);
      for (int k = 0; k < 4; k++) {
        __m512i wv = _mm512_loadu_si512(w + k * in + 64 * b);
        __m512i sw = _mm512_mask_sub_epi8(wv, q.neg[b], zero, wv);   // w * sign(x)
#ifdef __AVX512VNNI__
        __m512i dot = _mm512_dpbusd_epi32(zero, q.ax[b], sw);         // (16,) int32, 64 products
#else
        __m512i dot = _mm512_madd_epi16(_mm512_maddubs_epi16(q.ax[b], sw), ones);  // pairs of |x|*w <= 2*127*127 fit int16
#endif
        a[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(q.s[b], _mm512_set1_ps(wsf[k * nb + b])), a[k]);
      }
    }
    for (int k = 0; k < 4; k++) y[r + k] = hsum(a[k]);
  }
}
#endif  // SMOLLM2_AVX512

#ifdef SMOLLM2_AVX2
static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
struct Avx2 {   // the vector type of rows_f32_v / rows_bf16_v
  using F = __m256; using I = __m256i; static constexpr int N = 8;
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static I loadi(const void* p) { return _mm256_loadu_si256((const __m256i*)p); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F bf16_even(I v) { return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)); }
  static F bf16_odd(I v) { return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000))); }
  static float sum(F v) { return hsum(v); }
};

// fp32 and bf16 read one row at a time, a single stream the hardware prefetcher follows. Against four rows side by side
// (with the prefetch above), on the Zen 3 EPYC with 2 threads: one token's products alone 1.05-1.11x (fp32) and
// 1.14-1.15x (bf16) faster (benchmarks/csrc/matvec_*.cpp), the whole step 1.02-1.04x and 1.03-1.07x (bench_step_ab.py);
// int8 was the same either way and keeps both. Four accumulators keep both FMA ports busy.
// NT tokens at once for a prompt, as in the AVX-512 classes: 8 accumulators of the 16 registers
static const int F32_TOKENS = 2, BF16_TOKENS = 2;
template <int NT>   // one row at a time, four accumulators
static void rows_f32_t(const float* W, const float* const* x, float* const* y, int64_t r0, int64_t r1, int64_t in) {
  rows_f32_v<Avx2, 1, 4, NT>(W, x, y, r0, r1, in);
}
template <int NT>   // one row at a time, 32 weights (two loads of 8 even + 8 odd) per step
static void rows_bf16_t(const uint16_t* W, const XBf16* const* xb, float* const* y, int64_t r0, int64_t r1, int64_t in) {
  rows_bf16_v<Avx2, 1, 2, NT>(W, xb, y, r0, r1, in);
}

// int8 without VNNI: vpsignb moves x's sign onto the weights, vpmaddubsw multiplies |x| (u8) by them and adds pairs
// (at most 2*127*127, fits int16), vpmaddwd by ones adds pairs again into int32
struct XInt8 { std::vector<int8_t> q, ax; std::vector<float> s; };
static XInt8 prepare_int8(const float* x, int64_t in) {
  QuantX q = quantize_x(x, in); XInt8 r; r.q = q.q; r.s = q.s; r.ax.resize(in);
  for (int64_t i = 0; i < in; i++) r.ax[i] = (int8_t)std::abs((int)q.q[i]);
  return r;
}
static void rows_int8(const int8_t* W, const uint16_t* ws, const XInt8& q, float* y, int64_t r0, int64_t r1, int64_t in) {
  const int64_t nb = in / 64;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t r = r0; r < r1; r += 4) {
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const int8_t* w = W + r * in;
    for (int64_t b = 0; b < in / 64; b++) {
      const __m256i* qx = (const __m256i*)(q.q.data() + 64 * b);
      const __m256i* ax = (const __m256i*)(q.ax.data() + 64 * b);
      __m256i x0 = _mm256_loadu_si256(qx), x1 = _mm256_loadu_si256(qx + 1);
      __m256i a0 = _mm256_loadu_si256(ax), a1 = _mm256_loadu_si256(ax + 1);
      __m256 s0 = _mm256_set1_ps(q.s[2 * b]), s1 = _mm256_set1_ps(q.s[2 * b + 1]);   // x's two blocks of 32
      prefetch_ahead(w, 4 * in, b);
      for (int k = 0; k < 4; k++) {
        const __m256i* wk = (const __m256i*)(w + k * in + 64 * b);
        __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(_mm256_loadu_si256(wk), x0)), ones);
        __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(_mm256_loadu_si256(wk + 1), x1)), ones);
        __m256 p = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), s0, _mm256_mul_ps(_mm256_cvtepi32_ps(p1), s1));
        a[k] = _mm256_fmadd_ps(p, _mm256_set1_ps(widen_bf16(ws[(r + k) * nb + b])), a[k]);
      }
    }
    for (int k = 0; k < 4; k++) y[r + k] = hsum(a[k]);
  }
}
#endif  // SMOLLM2_AVX2

#ifdef SMOLLM2_NEON
// ARM (Apple silicon, Graviton, Ampere): 4 fp32 lanes, one row at a time. Checked under emulation (qemu) against a
// plain-C++ reference by tests/test_decoders.py; not yet timed on ARM hardware.
static void rows_f32(const float* W, const float* x, float* y, int64_t r0, int64_t r1, int64_t in) {
  for (int64_t r = r0; r < r1; r++) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
    const float* w = W + r * in;
    for (int64_t i = 0; i < in; i += 16) {
      a0 = vfmaq_f32(a0, vld1q_f32(w + i), vld1q_f32(x + i));
      a1 = vfmaq_f32(a1, vld1q_f32(w + i + 4), vld1q_f32(x + i + 4));
      a2 = vfmaq_f32(a2, vld1q_f32(w + i + 8), vld1q_f32(x + i + 8));
      a3 = vfmaq_f32(a3, vld1q_f32(w + i + 12), vld1q_f32(x + i + 12));
    }
    y[r] = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
  }
}

// bf16: vshll shifts each 16-bit weight into the top of a 32-bit lane, in order, so x needs no even/odd split
struct XBf16 { const float* x; };
static XBf16 prepare_bf16(const float* x, int64_t) { return {x}; }
static void rows_bf16(const uint16_t* W, const XBf16& xb, float* y, int64_t r0, int64_t r1, int64_t in) {
  const float* x = xb.x;
  for (int64_t r = r0; r < r1; r++) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
    const uint16_t* w = W + r * in;
    for (int64_t i = 0; i < in; i += 16) {
      uint16x8_t v0 = vld1q_u16(w + i), v1 = vld1q_u16(w + i + 8);
      a0 = vfmaq_f32(a0, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v0), 16)), vld1q_f32(x + i));
      a1 = vfmaq_f32(a1, vreinterpretq_f32_u32(vshll_high_n_u16(v0, 16)), vld1q_f32(x + i + 4));
      a2 = vfmaq_f32(a2, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v1), 16)), vld1q_f32(x + i + 8));
      a3 = vfmaq_f32(a3, vreinterpretq_f32_u32(vshll_high_n_u16(v1, 16)), vld1q_f32(x + i + 12));
    }
    y[r] = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
  }
}

// int8: signed bytes times signed bytes, so no sign trick. With the dot-product extension (ARMv8.2 `asimddp`: Apple
// M1 on, Graviton 2 on) `sdot` adds four products per lane; without it `smull` + `smlal` make int16 pairs (at most
// 2*127*127, fits) and `sadalp` adds them into int32
struct XInt8 { std::vector<int8_t> q; std::vector<float> s; };
static XInt8 prepare_int8(const float* x, int64_t in) { QuantX q = quantize_x(x, in); return {q.q, q.s}; }
static void rows_int8(const int8_t* W, const uint16_t* ws, const XInt8& q, float* y, int64_t r0, int64_t r1, int64_t in) {
  const int64_t nb = in / 64;
  for (int64_t r = r0; r < r1; r++) {
    float32x4_t acc = vdupq_n_f32(0);
    const int8_t* w = W + r * in;
    for (int64_t b = 0; b < in / 64; b++) {
      int32x4_t d[2] = {vdupq_n_s32(0), vdupq_n_s32(0)};                 // x's two blocks of 32
      for (int j = 0; j < 4; j++) {
        int8x16_t wv = vld1q_s8(w + 64 * b + 16 * j), xv = vld1q_s8(q.q.data() + 64 * b + 16 * j);
#ifdef __ARM_FEATURE_DOTPROD
        d[j / 2] = vdotq_s32(d[j / 2], wv, xv);
#else
        d[j / 2] = vpadalq_s16(d[j / 2], vmlal_high_s8(vmull_s8(vget_low_s8(wv), vget_low_s8(xv)), wv, xv));
#endif
      }
      float32x4_t p = vfmaq_n_f32(vmulq_n_f32(vcvtq_f32_s32(d[0]), q.s[2 * b]), vcvtq_f32_s32(d[1]), q.s[2 * b + 1]);
      acc = vfmaq_n_f32(acc, p, widen_bf16(ws[r * nb + b]));
    }
    y[r] = vaddvq_f32(acc);
  }
}

// a prompt's tokens one at a time (the x86 classes take several per weight load)
static const int F32_TOKENS = 1, BF16_TOKENS = 1;
template <int NT>
static void rows_f32_t(const float* W, const float* const* x, float* const* y, int64_t r0, int64_t r1, int64_t in) {
  for (int t = 0; t < NT; t++) rows_f32(W, x[t], y[t], r0, r1, in);
}
template <int NT>
static void rows_bf16_t(const uint16_t* W, const XBf16* const* xb, float* const* y, int64_t r0, int64_t r1, int64_t in) {
  for (int t = 0; t < NT; t++) rows_bf16(W, *xb[t], y[t], r0, r1, in);
}

// q . k for attention
static inline float dot(const float* a, const float* b, int64_t n) {
  float32x4_t s0 = vdupq_n_f32(0), s1 = s0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
  }
  float r = vaddvq_f32(vaddq_f32(s0, s1));
  for (; i < n; i++) r += a[i] * b[i];
  return r;
}
#endif  // SMOLLM2_NEON

#if defined(SMOLLM2_AVX512) || defined(SMOLLM2_AVX2)
static void rows_f32(const float* W, const float* x, float* y, int64_t r0, int64_t r1, int64_t in) { rows_f32_t<1>(W, &x, &y, r0, r1, in); }
static void rows_bf16(const uint16_t* W, const XBf16& xb, float* y, int64_t r0, int64_t r1, int64_t in) {
  const XBf16* p = &xb; rows_bf16_t<1>(W, &p, &y, r0, r1, in);
}
#endif

// nt (1 .. 4) tokens through rows r0 .. r1 of a fp32 or bf16 matrix: the template instance for nt
template <class Rows> static void by_tokens(int nt, Rows rows) {
  switch (nt) {
    case 4: rows(std::integral_constant<int, 4>()); break;
    case 3: rows(std::integral_constant<int, 3>()); break;
    case 2: rows(std::integral_constant<int, 2>()); break;
    default: rows(std::integral_constant<int, 1>());
  }
}

#if defined(SMOLLM2_AVX512) || defined(SMOLLM2_AVX2)
// q . k for attention: two 8-lane accumulators (every x86 class has AVX2 and FMA). A plain loop's float sum is one serial
// chain the compiler may not reorder, which made attention a visible share of a step at a few hundred positions.
static inline float dot(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  __m256 s = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  float r = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  for (; i < n; i++) r += a[i] * b[i];
  return r;
}
#endif
