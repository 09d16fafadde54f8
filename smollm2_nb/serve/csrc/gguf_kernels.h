// Products of GGUF block-quantized weights (llama.cpp's formats, as the file stores them) with a token's activations,
// for the batch-1 decoding step. Included by cpu_decode.cpp after cpu_kernels.h (it uses quantize_x, XBLOCK and ISA's
// macros from there); no torch here.
//
// A matrix is its rows of blocks exactly as in the GGUF file: (out, in / 32 * block_bytes) bytes. The formats (ggml's
// type numbers, the layouts of ggml-common.h; the `gguf` package's quants.py dequantizes the same):
//   Q4_0 (2)  18 bytes per 32 weights: d (fp16), 16 bytes of nibbles; w[j] = d * (lo(qs[j]) - 8), w[j + 16] = d * (hi(qs[j]) - 8)
//   Q4_1 (3)  20 bytes: d (fp16), m (fp16), 16 bytes of nibbles;          w[j] = d * lo(qs[j]) + m,  w[j + 16] = d * hi(qs[j]) + m
//   Q8_0 (8)  34 bytes: d (fp16), 32 int8;                                w[j] = d * qs[j]
// The activations are rounded to int8 per block of 32 as llama.cpp's q8_0 / q8_1 do (quantize_x's integers; the scale
// dx and q8_1's sum sx = dx * sum(qx) kept in fp16, as there), so each block's product is an exact integer sum times
// dw * dx; Q4_0's -8 needs x's integer block sum n = sum(qx), Q4_1's m the sum sx, once per block of x for all rows:
//   Q8_0: dw dx sum(q qx)     Q4_0: dw dx (sum(q qx) - 8 n)     Q4_1: dw dx sum(q qx) + m sx
// One x86 kernel serves every x86 class (all have AVX2; with AVX-512 VNNI the 256-bit vpdpbusd adds the bytes), a plain
// C++ one the ARM classes and the tests' reference.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

enum GgmlType : int { GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q8_0 = 8, GGML_Q4_K = 12, GGML_Q6_K = 14 };
static const int64_t QK = 32;   // weights per block in these formats (the K-quants of gguf_kquants.h: 256 per super-block)
static inline int64_t ggml_block_bytes(int type) {
  switch (type) { case GGML_Q4_0: return 18; case GGML_Q4_1: return 20; case GGML_Q5_0: return 22; case GGML_Q8_0: return 34;
                  case GGML_Q4_K: return 144; case GGML_Q6_K: return 210; default: return 0; }
}
static inline int64_t ggml_block_weights(int type) { return type == GGML_Q4_K || type == GGML_Q6_K ? 256 : 32; }
// the format of a row of `rb` bytes holding `n` weights (the formats have different block sizes); -1 if none. Q4_0 and
// Q4_K both take 4.5 bits a weight: such a row reads as Q4_0 (the Python side refuses a Q4_K embedding)
static inline int ggml_type_of_row(int64_t rb, int64_t n) {
  for (int t : {GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q8_0, GGML_Q4_K, GGML_Q6_K})
    if (n % ggml_block_weights(t) == 0 && rb == n / ggml_block_weights(t) * ggml_block_bytes(t)) return t;
  return -1;
}

static inline float half_to_float(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  uint32_t s = uint32_t(h & 0x8000) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FF, u;
  if (e == 0) {                                    // zero or subnormal: m * 2^-24
    float f = std::ldexp((float)m, -24); return s ? -f : f;
  }
  u = e == 31 ? (s | 0x7F800000 | (m << 13)) : (s | ((e + 112) << 23) | (m << 13));
  float f; std::memcpy(&f, &u, 4); return f;
#endif
}
// f rounded to the nearest fp16 value (llama.cpp stores the activations' block scales in fp16)
static inline float round_half(float f) {
#if defined(__F16C__)
  return _cvtsh_ss(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
#else
  return (float)(__fp16)f;   // aarch64
#endif
}
static inline float block_d(const uint8_t* blk, int off = 0) { uint16_t h; std::memcpy(&h, blk + off, 2); return half_to_float(h); }

// one row of blocks as fp32 (the embedding's lookup)
static void dequantize_row(int type, const uint8_t* row, float* out, int64_t n) {
  const int64_t bb = ggml_block_bytes(type);
  for (int64_t b = 0; b < n / QK; b++) {
    const uint8_t* blk = row + b * bb; float d = block_d(blk); float* o = out + b * QK;
    if (type == GGML_Q8_0) for (int j = 0; j < 32; j++) o[j] = d * (float)(int8_t)blk[2 + j];
    else if (type == GGML_Q4_0) for (int j = 0; j < 16; j++) { o[j] = d * ((blk[2 + j] & 15) - 8); o[j + 16] = d * ((blk[2 + j] >> 4) - 8); }
    else { float m = block_d(blk, 2); for (int j = 0; j < 16; j++) { o[j] = d * (blk[4 + j] & 15) + m; o[j + 16] = d * (blk[4 + j] >> 4) + m; } }
  }
}

// x rounded per block of 32: q, |q| (x86's unsigned operand), the scales dx, the sums sx = dx * sum(q) (fp16 values)
// and n = sum(q)
struct XQ8 { std::vector<int8_t> q, ax; std::vector<float> d, s; std::vector<int32_t> n; };
static XQ8 prepare_q8(const float* x, int64_t in) {
  QuantX r = quantize_x(x, in); XQ8 o; o.q = std::move(r.q); o.ax.resize(in); o.d.resize(in / QK); o.s.resize(in / QK); o.n.resize(in / QK);
  for (int64_t b = 0; b < in / QK; b++) {
    int sum = 0;
    for (int64_t i = 0; i < QK; i++) { int v = o.q[b * QK + i]; sum += v; o.ax[b * QK + i] = (int8_t)(v < 0 ? -v : v); }
    o.d[b] = round_half(r.s[b]); o.s[b] = round_half(r.s[b] * (float)sum); o.n[b] = sum;
  }
  return o;
}

// plain C++: rows r0 .. r1 - 1 of W (rows of rb bytes) times x. Not vectorized by GCC: GCC 12 with -mavx512vnni turns
// Q8_0's signed-by-signed byte sum into vpdpbusd, which reads one side as unsigned (wrong sums, seen at -O3 here)
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void rows_blocks_ref(int type, const uint8_t* W, int64_t rb, const XQ8& x, float* y, int64_t r0, int64_t r1, int64_t in) {
  const int64_t bb = ggml_block_bytes(type);
  for (int64_t r = r0; r < r1; r++) {
    float acc = 0;
    for (int64_t b = 0; b < in / QK; b++) {
      const uint8_t* blk = W + r * rb + b * bb; const int8_t* q = x.q.data() + b * QK;
      int32_t s = 0; float dw = block_d(blk);
      if (type == GGML_Q8_0) { for (int j = 0; j < 32; j++) s += (int8_t)blk[2 + j] * q[j]; acc += dw * x.d[b] * s; }
      else {
        const uint8_t* qs = blk + (type == GGML_Q4_1 ? 4 : 2);
        for (int j = 0; j < 16; j++) s += (qs[j] & 15) * q[j] + (qs[j] >> 4) * q[j + 16];
        acc += type == GGML_Q4_1 ? dw * x.d[b] * s + block_d(blk, 2) * x.s[b] : dw * x.d[b] * (float)(s - 8 * x.n[b]);
      }
    }
    y[r] = acc;
  }
}

#if defined(SMOLLM2_AVX512) || defined(SMOLLM2_AVX2)
static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
// unsigned bytes times signed bytes, summed four at a time into 8 int32
static inline __m256i dot_u8s8(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));   // pairs at most 2 * 15 * 127 or 2 * 127 * 127
#endif
}
// 16 bytes of nibbles as 32 bytes: the low nibbles (weights 0..15), then the high ones (16..31)
static inline __m256i nibbles(const uint8_t* qs) {
  __m128i v = _mm_loadu_si128((const __m128i*)qs);
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
}
// a block's integer sum (8 lanes): Q8_0 by x's sign moved onto the weights, Q4 as unsigned nibbles times signed x
template <int TYPE> static inline __m256i block_isum(const uint8_t* blk, const int8_t* q, const int8_t* ax) {
  if (TYPE == GGML_Q8_0)
    return dot_u8s8(_mm256_loadu_si256((const __m256i*)ax), _mm256_sign_epi8(_mm256_loadu_si256((const __m256i*)(blk + 2)), _mm256_loadu_si256((const __m256i*)q)));
  return dot_u8s8(nibbles(blk + (TYPE == GGML_Q4_1 ? 4 : 2)), _mm256_loadu_si256((const __m256i*)q));
}
// two rows at a time: each block of x loaded once for both, two independent chains
template <int TYPE>
static void rows_blocks_t(const uint8_t* W, int64_t rb, const XQ8& x, float* y, int64_t r0, int64_t r1, int64_t in) {
  const int64_t nb = in / QK, bb = ggml_block_bytes(TYPE);
  const int8_t *q = x.q.data(), *ax = x.ax.data(); const float *dx = x.d.data(), *sx = x.s.data(); const int32_t* n = x.n.data();
  int64_t r = r0;
  for (; r + 2 <= r1; r += 2) {
    const uint8_t *w0 = W + r * rb, *w1 = w0 + rb;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(); float o0 = 0, o1 = 0;
    for (int64_t b = 0; b < nb; b++) {
      const uint8_t *b0 = w0 + b * bb, *b1 = w1 + b * bb;
      __m256i s0 = block_isum<TYPE>(b0, q + b * QK, ax + b * QK), s1 = block_isum<TYPE>(b1, q + b * QK, ax + b * QK);
      float d0 = block_d(b0) * dx[b], d1 = block_d(b1) * dx[b];
      a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_set1_ps(d0), a0);
      a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_set1_ps(d1), a1);
      if (TYPE == GGML_Q4_1) { o0 += block_d(b0, 2) * sx[b]; o1 += block_d(b1, 2) * sx[b]; }
      if (TYPE == GGML_Q4_0) { o0 -= 8 * n[b] * d0; o1 -= 8 * n[b] * d1; }
    }
    y[r] = hsum8(a0) + o0; y[r + 1] = hsum8(a1) + o1;
  }
  if (r < r1) rows_blocks_ref(TYPE, W, rb, x, y, r, r1, in);
}
#endif

// rows r0 .. r1 - 1 of a block matrix of `type` times x: this class's kernel
static void rows_blocks(int type, const uint8_t* W, int64_t rb, const XQ8& x, float* y, int64_t r0, int64_t r1, int64_t in) {
#if defined(SMOLLM2_AVX512) || defined(SMOLLM2_AVX2)
  switch (type) {
    case GGML_Q4_0: return rows_blocks_t<GGML_Q4_0>(W, rb, x, y, r0, r1, in);
    case GGML_Q4_1: return rows_blocks_t<GGML_Q4_1>(W, rb, x, y, r0, r1, in);
    case GGML_Q8_0: return rows_blocks_t<GGML_Q8_0>(W, rb, x, y, r0, r1, in);
  }
#endif
  rows_blocks_ref(type, W, rb, x, y, r0, r1, in);
}
