// The batch-1 decoding step of SmolLM2 on a CPU: every layer of one token, from its embedding to the logits.
// Built by smollm2_nb.serve.decoders (torch.utils.cpp_extension.load) on first use; see nbs/serve/11_inference.ipynb.
// One source, compiled once per instruction-set class (smollm2_nb.serve.decoders picks the flags):
//   avx512bf16  -mavx512f/bw/vl/dq -mavx512bf16 -mavx512vnni  (Sapphire Rapids, Zen 4): vdpbf16ps, vpdpbusd
//   avx512vnni  -mavx512f/bw/vl/dq -mavx512vnni               (Cascade Lake, Ice Lake): bf16 widened to fp32, vpdpbusd
//   avx512      -mavx512f/bw/vl/dq                            (Skylake-X): bf16 widened, int8 by vpmaddubsw + vpmaddwd
//   avx2        -mavx2 -mfma -mf16c                           (Haswell .. Zen 3, most laptops): 8 lanes, the same int8 trick
// Weights W (out, in) row-major, out % 4 == 0, in % 64 == 0 (the caller pads); x and y fp32. Four rows share each load of x.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#ifdef __linux__
#include <sys/mman.h>
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
#else
#error "the CPU decoding step needs AVX2 with FMA and F16C, or AVX-512 (F, BW, VL, DQ)"
#endif

// The packed weight matrices, in this order for each layer, then the LM head last. The Python side packs them by
// asking `layout()` for these names, so the order is written here once.
enum Mat : int64_t { QKV = 0, O = 1, GATE_UP = 2, DOWN = 3, PER_LAYER = 4 };
std::vector<std::string> layout() { return {"qkv", "o", "gate_up", "down"}; }

// x rounded to int8 per block of 64 (one fp32 scale per block), as q8 formats do: the products with the int8 weights
// are exact integer sums; only the per-block scaling is fp32. Every class computes the same integers.
struct QuantX { std::vector<int8_t> q; std::vector<float> s; };

static QuantX quantize_x(const float* x, int64_t in) {
  QuantX r; r.q.resize(in); r.s.resize(in / 64);
  for (int64_t b = 0; b < in / 64; b++) {
    const float* xb = x + 64 * b; float amax = 0;
    for (int64_t i = 0; i < 64; i++) amax = std::max(amax, std::fabs(xb[i]));
    float inv = amax > 0 ? 127.0f / amax : 0.0f;
    for (int64_t i = 0; i < 64; i++) r.q[64 * b + i] = (int8_t)std::nearbyint(xb[i] * inv);
    r.s[b] = amax / 127.0f;
  }
  return r;
}

// bf16 weights without a bf16 dot product: a 32-bit lane holds two bf16 values; the even one shifted up 16 bits and the
// odd one masked are both exact fp32 numbers. So x is split once into its even and odd elements (`split_x`).
static void split_x(const float* x, float* even, float* odd, int64_t in) {
  for (int64_t i = 0; i < in / 2; i++) { even[i] = x[2 * i]; odd[i] = x[2 * i + 1]; }
}

#ifdef SMOLLM2_AVX512
static inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

static void rows_f32(const float* W, const float* x, float* y, int64_t r0, int64_t r1, int64_t in) {
  for (int64_t r = r0; r < r1; r += 4) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const float* w = W + r * in;
    for (int64_t i = 0; i < in; i += 16) {
      __m512 xv = _mm512_loadu_ps(x + i);
      for (int k = 0; k < 4; k++) a[k] = _mm512_fmadd_ps(_mm512_loadu_ps(w + k * in + i), xv, a[k]);
    }
    for (int k = 0; k < 4; k++) y[r + k] = hsum(a[k]);
  }
}

#ifdef __AVX512BF16__
// x rounded to bf16 once, then 32 products per vdpbf16ps; two chains per row hide its latency
struct XBf16 { std::vector<__m512bh> v; };
static XBf16 prepare_bf16(const float* x, int64_t in) {
  XBf16 r; r.v.resize(in / 32);
  for (int64_t i = 0; i < in; i += 32) r.v[i / 32] = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
  return r;
}
static void rows_bf16(const uint16_t* W, const XBf16& xb, float* y, int64_t r0, int64_t r1, int64_t in) {
  for (int64_t r = r0; r < r1; r += 4) {
    __m512 a[8]; for (int k = 0; k < 8; k++) a[k] = _mm512_setzero_ps();
    const uint16_t* w = W + r * in;
    for (int64_t i = 0; i < in; i += 64) {
      __m512bh x0 = xb.v[i / 32], x1 = xb.v[i / 32 + 1];
      for (int k = 0; k < 4; k++) {
        a[2 * k] = _mm512_dpbf16_ps(a[2 * k], (__m512bh)_mm512_loadu_si512(w + k * in + i), x0);
        a[2 * k + 1] = _mm512_dpbf16_ps(a[2 * k + 1], (__m512bh)_mm512_loadu_si512(w + k * in + i + 32), x1);
      }
    }
    for (int k = 0; k < 4; k++) y[r + k] = hsum(_mm512_add_ps(a[2 * k], a[2 * k + 1]));
  }
}
#else
struct XBf16 { std::vector<float> even, odd; };
static XBf16 prepare_bf16(const float* x, int64_t in) {
  XBf16 r; r.even.resize(in / 2); r.odd.resize(in / 2); split_x(x, r.even.data(), r.odd.data(), in);
  return r;
}
static void rows_bf16(const uint16_t* W, const XBf16& xb, float* y, int64_t r0, int64_t r1, int64_t in) {
  const __m512i hi = _mm512_set1_epi32((int)0xFFFF0000);
  for (int64_t r = r0; r < r1; r += 4) {
    __m512 a[8]; for (int k = 0; k < 8; k++) a[k] = _mm512_setzero_ps();
    const uint16_t* w = W + r * in;
    for (int64_t i = 0; i < in; i += 32) {                    // 32 weights: 16 even + 16 odd
      __m512 xe = _mm512_loadu_ps(xb.even.data() + i / 2), xo = _mm512_loadu_ps(xb.odd.data() + i / 2);
      for (int k = 0; k < 4; k++) {
        __m512i v = _mm512_loadu_si512(w + k * in + i);
        a[2 * k] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), xe, a[2 * k]);
        a[2 * k + 1] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi)), xo, a[2 * k + 1]);
      }
    }
    for (int k = 0; k < 4; k++) y[r + k] = hsum(_mm512_add_ps(a[2 * k], a[2 * k + 1]));
  }
}
#endif

// int8: |x| as u8 and x's sign moved onto the weights (vpdpbusd and vpmaddubsw multiply unsigned by signed bytes)
struct XInt8 { std::vector<__m512i> ax; std::vector<__mmask64> neg; std::vector<float> s; };
static XInt8 prepare_int8(const float* x, int64_t in) {
  QuantX q = quantize_x(x, in); XInt8 r; int64_t nb = in / 64;
  r.ax.resize(nb); r.neg.resize(nb); r.s = q.s;
  for (int64_t b = 0; b < nb; b++) {
    __m512i v = _mm512_loadu_si512(q.q.data() + 64 * b);
    r.ax[b] = _mm512_abs_epi8(v); r.neg[b] = _mm512_movepi8_mask(v);
  }
  return r;
}
static void rows_int8(const int8_t* W, const float* scale, const XInt8& q, float* y, int64_t r0, int64_t r1, int64_t in) {
  const __m512i zero = _mm512_setzero_si512();
#ifndef __AVX512VNNI__
  const __m512i ones = _mm512_set1_epi16(1);
#endif
  for (int64_t r = r0; r < r1; r += 4) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const int8_t* w = W + r * in;
    for (int64_t b = 0; b < in / 64; b++) {
      __m512 sx = _mm512_set1_ps(q.s[b]);
      for (int k = 0; k < 4; k++) {
        __m512i wv = _mm512_loadu_si512(w + k * in + 64 * b);
        __m512i sw = _mm512_mask_sub_epi8(wv, q.neg[b], zero, wv);   // w * sign(x)
#ifdef __AVX512VNNI__
        __m512i dot = _mm512_dpbusd_epi32(zero, q.ax[b], sw);         // (16,) int32, 64 products
#else
        __m512i dot = _mm512_madd_epi16(_mm512_maddubs_epi16(q.ax[b], sw), ones);  // pairs of |x|*w <= 2*127*127 fit int16
#endif
        a[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sx, a[k]);
      }
    }
    for (int k = 0; k < 4; k++) y[r + k] = hsum(a[k]) * scale[r + k];
  }
}
#endif  // SMOLLM2_AVX512

#ifdef SMOLLM2_AVX2
// Four rows are read side by side, so the hardware prefetcher sees four short streams (a 576-byte int8 row is nine
// cache lines) and falls behind: on a Zen 3 EPYC the int8 product ran at 4 GB/s. Each iteration therefore also
// prefetches its share (256 bytes) of the rows PREFETCH_GROUPS groups of four ahead; 4 was the fastest of 1, 2, 4, 8, 16
// there (int8 2x, fp32 1.2x faster, one thread). A prefetch past the end of the matrix is harmless: it cannot fault.
static const int64_t PREFETCH_GROUPS = 4;
static inline void prefetch_ahead(const void* group, int64_t group_bytes, int64_t it) {
  const char* p = (const char*)group + PREFETCH_GROUPS * group_bytes + 256 * it;
  for (int j = 0; j < 4; j++) _mm_prefetch(p + 64 * j, _MM_HINT_T0);
}

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// 8 lanes: two accumulators per row (8 chains in all) keep both FMA ports busy
static void rows_f32(const float* W, const float* x, float* y, int64_t r0, int64_t r1, int64_t in) {
  for (int64_t r = r0; r < r1; r += 4) {
    __m256 a[8]; for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();
    const float* w = W + r * in;
    for (int64_t i = 0; i < in; i += 16) {
      __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
      prefetch_ahead(w, 4 * in * 4, i / 16);
      for (int k = 0; k < 4; k++) {
        a[2 * k] = _mm256_fmadd_ps(_mm256_loadu_ps(w + k * in + i), x0, a[2 * k]);
        a[2 * k + 1] = _mm256_fmadd_ps(_mm256_loadu_ps(w + k * in + i + 8), x1, a[2 * k + 1]);
      }
    }
    for (int k = 0; k < 4; k++) y[r + k] = hsum(_mm256_add_ps(a[2 * k], a[2 * k + 1]));
  }
}

struct XBf16 { std::vector<float> even, odd; };
static XBf16 prepare_bf16(const float* x, int64_t in) {
  XBf16 r; r.even.resize(in / 2); r.odd.resize(in / 2); split_x(x, r.even.data(), r.odd.data(), in);
  return r;
}
static void rows_bf16(const uint16_t* W, const XBf16& xb, float* y, int64_t r0, int64_t r1, int64_t in) {
  const __m256i hi = _mm256_set1_epi32((int)0xFFFF0000);
  for (int64_t r = r0; r < r1; r += 4) {
    __m256 a[8]; for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();
    const uint16_t* w = W + r * in;
    for (int64_t i = 0; i < in; i += 16) {                    // 16 weights: 8 even + 8 odd
      __m256 xe = _mm256_loadu_ps(xb.even.data() + i / 2), xo = _mm256_loadu_ps(xb.odd.data() + i / 2);
      if (i % 32 == 0) prefetch_ahead(w, 4 * in * 2, i / 32);
      for (int k = 0; k < 4; k++) {
        __m256i v = _mm256_loadu_si256((const __m256i*)(w + k * in + i));
        a[2 * k] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), xe, a[2 * k]);
        a[2 * k + 1] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, hi)), xo, a[2 * k + 1]);
      }
    }
    for (int k = 0; k < 4; k++) y[r + k] = hsum(_mm256_add_ps(a[2 * k], a[2 * k + 1]));
  }
}

// int8 without VNNI: vpsignb moves x's sign onto the weights, vpmaddubsw multiplies |x| (u8) by them and adds pairs
// (at most 2*127*127, fits int16), vpmaddwd by ones adds pairs again into int32
struct XInt8 { std::vector<int8_t> q, ax; std::vector<float> s; };
static XInt8 prepare_int8(const float* x, int64_t in) {
  QuantX q = quantize_x(x, in); XInt8 r; r.q = q.q; r.s = q.s; r.ax.resize(in);
  for (int64_t i = 0; i < in; i++) r.ax[i] = (int8_t)std::abs((int)q.q[i]);
  return r;
}
static void rows_int8(const int8_t* W, const float* scale, const XInt8& q, float* y, int64_t r0, int64_t r1, int64_t in) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t r = r0; r < r1; r += 4) {
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const int8_t* w = W + r * in;
    for (int64_t b = 0; b < in / 64; b++) {
      const __m256i* qx = (const __m256i*)(q.q.data() + 64 * b);
      const __m256i* ax = (const __m256i*)(q.ax.data() + 64 * b);
      __m256i x0 = _mm256_loadu_si256(qx), x1 = _mm256_loadu_si256(qx + 1);
      __m256i a0 = _mm256_loadu_si256(ax), a1 = _mm256_loadu_si256(ax + 1);
      __m256 sx = _mm256_set1_ps(q.s[b]);
      prefetch_ahead(w, 4 * in, b);
      for (int k = 0; k < 4; k++) {
        const __m256i* wk = (const __m256i*)(w + k * in + 64 * b);
        __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(_mm256_loadu_si256(wk), x0)), ones);
        __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(_mm256_loadu_si256(wk + 1), x1)), ones);
        a[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(p0, p1)), sx, a[k]);
      }
    }
    for (int k = 0; k < 4; k++) y[r + k] = hsum(a[k]) * scale[r + k];
  }
}
#endif  // SMOLLM2_AVX2

// y = W x, rows split among torch's threads (one parallel region per product)
static void matvec(const at::Tensor& W, const at::Tensor& scale, const float* x, float* y) {
  int64_t out = W.size(0), in = W.size(1);
  auto split = [&](auto rows) { at::parallel_for(0, out / 4, 1, [&](int64_t b0, int64_t b1) { rows(4 * b0, 4 * b1); }); };
  if (W.scalar_type() == at::kBFloat16) {
    XBf16 xb = prepare_bf16(x, in);
    const uint16_t* w = (const uint16_t*)W.data_ptr();
    split([&](int64_t r0, int64_t r1) { rows_bf16(w, xb, y, r0, r1, in); });
  } else if (W.scalar_type() == at::kChar) {
    XInt8 q = prepare_int8(x, in);
    const int8_t* w = W.data_ptr<int8_t>(); const float* s = scale.data_ptr<float>();
    split([&](int64_t r0, int64_t r1) { rows_int8(w, s, q, y, r0, r1, in); });
  } else {
    const float* w = W.data_ptr<float>();
    split([&](int64_t r0, int64_t r1) { rows_f32(w, x, y, r0, r1, in); });
  }
}

// q . k for attention: two 8-lane accumulators (every class has AVX2 and FMA). A plain loop's float sum is one serial
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

static void rmsnorm(const float* x, const float* w, float* out, int64_t d, float eps) {
  float ss = 0; for (int64_t i = 0; i < d; i++) ss += x[i] * x[i];
  float r = 1.0f / std::sqrt(ss / d + eps);
  for (int64_t i = 0; i < d; i++) out[i] = w[i] * (x[i] * r);
}

static void rope(float* v, const float* cos, const float* sin, int64_t hd) {  // rotate_half: pairs (i, i + hd/2)
  for (int64_t i = 0; i < hd / 2; i++) {
    float a = v[i], b = v[i + hd / 2];
    v[i] = a * cos[i] - b * sin[i]; v[i + hd / 2] = b * cos[i] + a * sin[i];
  }
}

static const int64_t PARALLEL_ATTENTION_FROM = 128;  // positions

// One new token through every layer: the same steps as SmolLM2.forward, for batch 1, with fp32 activations.
// mats per layer: [q;k;v], o, [gate;up], down, then the LM head; scales (fp32, per row) for int8 matrices.
at::Tensor decode_step(int64_t token, int64_t pos, at::Tensor embed, at::Tensor norms, std::vector<at::Tensor> mats,
                       std::vector<at::Tensor> scales, at::Tensor cos, at::Tensor sin, at::Tensor kc, at::Tensor vc,
                       int64_t nh, int64_t inter, double eps) {
  int64_t L = kc.size(0), nkv = kc.size(1), S = kc.size(2), hd = kc.size(3), d = embed.size(1);
  TORCH_CHECK(pos < S, "position ", pos, " is past the KV cache of ", S, " positions");
  std::vector<float> x(d), h(mats[QKV].size(1)), qkv(mats[QKV].size(0)), att(mats[O].size(1)), tmp(mats[O].size(0)),
                     gu(mats[GATE_UP].size(0)), act(mats[DOWN].size(1)), sc(nh * (pos + 1));        // padding columns stay 0
  if (embed.scalar_type() == at::kBFloat16) {
    const uint16_t* e = (const uint16_t*)embed.data_ptr() + token * d;
    for (int64_t i = 0; i < d; i++) { uint32_t u = uint32_t(e[i]) << 16; std::memcpy(&x[i], &u, 4); }
  } else std::memcpy(x.data(), embed.data_ptr<float>() + token * d, d * 4);
  const float *nw = norms.data_ptr<float>(), *c = cos.data_ptr<float>() + pos * (hd / 2), *s = sin.data_ptr<float>() + pos * (hd / 2);
  float *K = kc.data_ptr<float>(), *V = vc.data_ptr<float>();
  float inv_sqrt = 1.0f / std::sqrt((float)hd);
  for (int64_t l = 0; l < L; l++) {
    rmsnorm(x.data(), nw + 2 * l * d, h.data(), d, eps);
    matvec(mats[PER_LAYER * l + QKV], scales[PER_LAYER * l + QKV], h.data(), qkv.data());
    float *q = qkv.data(), *k = q + nh * hd, *v = k + nkv * hd;
    for (int64_t j = 0; j < nh; j++) rope(q + j * hd, c, s, hd);
    for (int64_t j = 0; j < nkv; j++) {                       // this position's keys/values into the cache
      rope(k + j * hd, c, s, hd);
      std::memcpy(K + ((l * nkv + j) * S + pos) * hd, k + j * hd, hd * 4);
      std::memcpy(V + ((l * nkv + j) * S + pos) * hd, v + j * hd, hd * 4);
    }
    // query head j attends to positions 0..pos of its KV head. The heads are split among torch's threads once the
    // cache is long enough for reading it to matter (a parallel region costs a few microseconds)
    at::parallel_for(0, nh, pos >= PARALLEL_ATTENTION_FROM ? 1 : nh, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; j++) {
        const float *Kj = K + (l * nkv + j / (nh / nkv)) * S * hd, *Vj = V + (l * nkv + j / (nh / nkv)) * S * hd;
        const float* qj = q + j * hd; float m = -INFINITY, z = 0, *scj = sc.data() + j * (pos + 1);
        for (int64_t t = 0; t <= pos; t++) {
          scj[t] = dot(qj, Kj + t * hd, hd) * inv_sqrt; m = std::max(m, scj[t]);
        }
        for (int64_t t = 0; t <= pos; t++) { scj[t] = std::exp(scj[t] - m); z += scj[t]; }
        float* o = att.data() + j * hd; std::fill(o, o + hd, 0.0f);
        for (int64_t t = 0; t <= pos; t++) { float p = scj[t] / z; for (int64_t i = 0; i < hd; i++) o[i] += p * Vj[t * hd + i]; }
      }
    });
    matvec(mats[PER_LAYER * l + O], scales[PER_LAYER * l + O], att.data(), tmp.data());
    for (int64_t i = 0; i < d; i++) x[i] += tmp[i];
    rmsnorm(x.data(), nw + (2 * l + 1) * d, h.data(), d, eps);
    matvec(mats[PER_LAYER * l + GATE_UP], scales[PER_LAYER * l + GATE_UP], h.data(), gu.data());
    for (int64_t i = 0; i < inter; i++) act[i] = gu[i] / (1.0f + std::exp(-gu[i])) * gu[inter + i];   // silu(gate) * up
    matvec(mats[PER_LAYER * l + DOWN], scales[PER_LAYER * l + DOWN], act.data(), tmp.data());
    for (int64_t i = 0; i < d; i++) x[i] += tmp[i];
  }
  rmsnorm(x.data(), nw + 2 * L * d, h.data(), d, eps);
  at::Tensor logits = at::empty({mats.back().size(0)}, at::kFloat);
  matvec(mats.back(), scales.back(), h.data(), logits.data_ptr<float>());
  return logits;
}

// One block of `bytes` for all the packed weights, aligned to 2 MB and marked for transparent huge pages (Linux, with THP
// in `madvise` or `always` mode). A step reads every weight once, 540 MB in fp32: on 4 KB pages that is a TLB miss and a
// page walk every 4 KB, on 2 MB pages one every 2 MB. On the Zen 3 EPYC, huge pages took fp32 decoding from 26-28 to
// 32-33 tokens/s, and this block bf16 from 54 to 61 and int8 from 81 to 87.
// Elsewhere, or with no huge page free, the block gets ordinary pages and only the speed differs.
at::Tensor huge_page_empty(int64_t bytes) {
  const size_t align = size_t(2) << 20, size = (size_t(bytes) + align - 1) / align * align;
  void* p = nullptr;
#if defined(_WIN32)
  p = _aligned_malloc(size, align);
  auto release = [](void* q) { _aligned_free(q); };
#else
  if (posix_memalign(&p, align, size) != 0) p = nullptr;
  auto release = [](void* q) { std::free(q); };
#endif
  TORCH_CHECK(p != nullptr, "could not allocate ", bytes, " bytes for the packed weights");
#ifdef __linux__
  madvise(p, size, MADV_HUGEPAGE);  // a hint; refused or ignored, the pages are ordinary ones
#endif
  return torch::from_blob(p, {bytes}, release, at::TensorOptions().dtype(at::kByte));
}

std::string isa() { return ISA; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_step", &decode_step, "one token through every layer: the logits (vocab,)");
  m.def("layout", &layout, "the names of the packed matrices of one layer, in order");
  m.def("huge_page_empty", &huge_page_empty, "an uninitialized uint8 block on 2 MB pages where Linux gives them");
  m.def("isa", &isa, "the instruction-set class this build was compiled for");
}
