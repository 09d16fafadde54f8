// Products of GGUF block-quantized weights (llama.cpp's formats) with the activations of one or several tokens, for the
// decoding step. Included by cpu_decode.cpp after cpu_kernels.h (it uses quantize_x, XBLOCK and ISA's macros from
// there); no torch here.
//
// The formats, as the file stores a row: (in / 32) blocks of `bb` bytes (ggml's type numbers, the layouts of
// ggml-common.h; the `gguf` package's quants.py dequantizes the same):
//   Q4_0 (2)  18 bytes per 32 weights: d (fp16), 16 bytes of nibbles; w[j] = d * (lo(qs[j]) - 8), w[j + 16] = d * (hi(qs[j]) - 8)
//   Q4_1 (3)  20 bytes: d (fp16), m (fp16), 16 bytes of nibbles;          w[j] = d * lo(qs[j]) + m,  w[j + 16] = d * hi(qs[j]) + m
//   Q5_0 (6)  22 bytes: d (fp16), qh (32 bits), 16 bytes of nibbles;      w[j] = d * (lo(qs[j]) + 16 bit_j(qh) - 16),
//                                                                         w[j + 16] = d * (hi(qs[j]) + 16 bit_{j+16}(qh) - 16)
//   Q8_0 (8)  34 bytes: d (fp16), 32 int8;                                w[j] = d * qs[j]
// The activations are rounded to int8 per block of 32 as llama.cpp's q8_0 / q8_1 do (quantize_x's integers; the scale
// dx and q8_1's sum sx = dx * sum(qx) kept in fp16, as there), so each block's product is an exact integer sum times
// dw * dx; Q4_0's -8 needs x's integer block sum n = sum(qx), Q4_1's m the sum sx, once per block of x for all rows:
//   Q8_0: dw dx sum(q qx)     Q4_0: dw dx (sum(q qx) - 8 n)     Q4_1: dw dx sum(q qx) + m sx     Q5_0: dw dx (sum(q qx) - 16 n)
// Q8_0's weights are -127..127 as every quantizer writes them (without VNNI, x's sign moved onto a -128 leaves it -128,
// as in llama.cpp's own AVX2 kernel).
//
// The step multiplies the rows repacked once at load time (`repack_blocks`): rows in groups of 16 (the last group padded
// with zero blocks, which add nothing), and for each group and block of 32 weights the 16 rows' blocks interleaved, so
// that one 64-byte load holds the same 4 bytes of the block for all 16 rows, each 32-bit lane one row:
//   d[16] (fp16) | m[16] (fp16, Q4_1 only) | chunk 0: row 0's bytes 0..3, row 1's bytes 0..3, ... row 15's | chunk 1 ...
// Q4 blocks have 4 chunks of their 16 nibble bytes (chunk c's low nibbles are weights 4c..4c+3, its high ones
// 16 + 4c..16 + 4c + 3), Q8_0 blocks 8 chunks of 4 int8; a Q5_0 block's first chunk is the 16 rows' qh (32 bits each, a
// lane a row), then its 4 chunks of nibbles, whose fifth bits the kernels pick out of qh's lanes. A group's block is 16 * bb bytes, so the repacked matrix is
// (rows rounded up to 16, row bytes) like the file's, and a group of rows is 16 whole rows of it. An instruction that
// adds 4 byte products into each 32-bit lane (vpdpbusd; maddubs + madd without VNNI), given a chunk and the token's
// 4 activation bytes broadcast, leaves each row's integer sum in its lane: no horizontal sums; the 16 rows' scales are
// one fp16 -> fp32 conversion. Each weight vector is loaded and unpacked once for up to 8 tokens (4 on AVX2), and each
// token's operations are the same whatever the number of tokens beside it, so its products are bit for bit the same.
// AVX-512 classes take a group in zmm lanes, AVX2 in two 8-row halves; a plain C++ kernel reads the same layout on ARM
// and is the tests' reference.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

enum GgmlType : int { GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q8_0 = 8, GGML_Q4_K = 12, GGML_Q6_K = 14 };
static const int64_t QK = 32;      // weights per block in these formats (the K-quants of gguf_kquants.h: 256 per super-block)
static const int64_t GROUP = 16;   // rows interleaved in the repacked layout (Q4_0, Q4_1, Q5_0, Q8_0)
// the formats kept in that layout (the K-quants, and the parts of a fused matrix that mixes formats, as the file stores them)
static inline bool is_repacked_type(int type) { return type == GGML_Q4_0 || type == GGML_Q4_1 || type == GGML_Q5_0 || type == GGML_Q8_0; }
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
// where a group's block keeps its chunks of quants (after the 16 d, and Q4_1's 16 m), and how many chunks it has (Q5_0:
// qh, then 4 of nibbles)
static inline int64_t quants_at(int type) { return type == GGML_Q4_1 ? 4 * GROUP : 2 * GROUP; }
static inline int chunks_of(int type) { return type == GGML_Q8_0 ? 8 : type == GGML_Q5_0 ? 5 : 4; }
// Q5_0's unsigned 5-bit weight of row i's byte j of nibble chunk c (0..3) in a repacked block gb: its low (weight 4c + j)
// or high (16 + 4c + j) nibble, the fifth bit from qh
static inline int q5_weight(const uint8_t* gb, int64_t i, int c, int j, bool high) {
  uint32_t qh; std::memcpy(&qh, gb + quants_at(GGML_Q5_0) + 4 * i, 4);
  uint8_t v = gb[quants_at(GGML_Q5_0) + (c + 1) * 4 * GROUP + 4 * i + j];
  return high ? (v >> 4) | (((qh >> (16 + 4 * c + j)) & 1) << 4) : (v & 15) | (((qh >> (4 * c + j)) & 1) << 4);
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
static inline float half_at(const uint8_t* p) { uint16_t h; std::memcpy(&h, p, 2); return half_to_float(h); }

// rows (out, rb) in the file's layout -> (out rounded up to 16, rb) repacked, as described above
static void repack_rows(int type, const uint8_t* src, int64_t out, int64_t rb, uint8_t* dst) {
  const int64_t bb = ggml_block_bytes(type), nb = rb / bb, ng = (out + GROUP - 1) / GROUP, qo = quants_at(type);
  const int nc = chunks_of(type);
  std::memset(dst, 0, ng * GROUP * rb);
  for (int64_t g = 0; g < ng; g++)
    for (int64_t b = 0; b < nb; b++) {
      uint8_t* gb = dst + g * GROUP * rb + b * GROUP * bb;
      for (int64_t i = 0; i < GROUP && g * GROUP + i < out; i++) {
        const uint8_t* blk = src + (g * GROUP + i) * rb + b * bb;
        std::memcpy(gb + 2 * i, blk, 2);                                              // d
        if (type == GGML_Q4_1) std::memcpy(gb + 2 * GROUP + 2 * i, blk + 2, 2);      // m
        const uint8_t* qs = blk + (type == GGML_Q4_1 ? 4 : 2);
        for (int c = 0; c < nc; c++) std::memcpy(gb + qo + c * 4 * GROUP + 4 * i, qs + 4 * c, 4);
      }
    }
}

// row r of a repacked matrix (rows of rb bytes) as fp32 (the embedding's lookup)
static void dequantize_row(int type, const uint8_t* W, int64_t rb, int64_t r, float* out, int64_t n) {
  const int64_t bb = ggml_block_bytes(type), i = r % GROUP, qo = quants_at(type);
  const uint8_t* wg = W + r / GROUP * GROUP * rb;
  for (int64_t b = 0; b < n / QK; b++) {
    const uint8_t* gb = wg + b * GROUP * bb; float d = half_at(gb + 2 * i), *o = out + b * QK;
    float m = type == GGML_Q4_1 ? half_at(gb + 2 * GROUP + 2 * i) : type == GGML_Q4_0 ? -8 * d : 0;
    if (type == GGML_Q5_0) {
      for (int c = 0; c < 4; c++)
        for (int j = 0; j < 4; j++) { o[4 * c + j] = d * (q5_weight(gb, i, c, j, false) - 16); o[16 + 4 * c + j] = d * (q5_weight(gb, i, c, j, true) - 16); }
      continue;
    }
    for (int c = 0; c < chunks_of(type); c++)
      for (int j = 0; j < 4; j++) {
        uint8_t v = gb[qo + c * 4 * GROUP + 4 * i + j];
        if (type == GGML_Q8_0) o[4 * c + j] = d * (float)(int8_t)v;
        else if (type == GGML_Q4_0) { o[4 * c + j] = d * ((v & 15) - 8); o[16 + 4 * c + j] = d * ((v >> 4) - 8); }
        else { o[4 * c + j] = d * (v & 15) + m; o[16 + 4 * c + j] = d * (v >> 4) + m; }
      }
  }
}

// x rounded per block of 32: q, |q| (x86's unsigned operand without VNNI), the scales dx, the sums sx = dx * sum(q)
// (fp16 values) and n = sum(q)
struct XQ8 { std::vector<int8_t> q, ax; std::vector<float> d, s; std::vector<int32_t> n; };
static XQ8 prepare_q8(const float* x, int64_t in) {
  QuantX r = quantize_x(x, in); XQ8 o; o.q = std::move(r.q); o.ax.resize(in); o.d.resize(in / QK); o.s.resize(in / QK); o.n.resize(in / QK);
  for (int64_t b = 0; b < in / QK; b++) {
    int sum = 0;
#if defined(SMOLLM2_AVX512) || defined(SMOLLM2_AVX2)   // the same integers 32 at a time: |q|, and sum(q) by pairs
    __m256i v = _mm256_loadu_si256((const __m256i*)(o.q.data() + b * QK));
    _mm256_storeu_si256((__m256i*)(o.ax.data() + b * QK), _mm256_abs_epi8(v));   // |-127..127| fits int8
    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), v), _mm256_set1_epi16(1));
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E)); sum = _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1)));
#else
    for (int64_t i = 0; i < QK; i++) { int v = o.q[b * QK + i]; sum += v; o.ax[b * QK + i] = (int8_t)(v < 0 ? -v : v); }
#endif
    o.d[b] = round_half(r.s[b]); o.s[b] = round_half(r.s[b] * (float)sum); o.n[b] = sum;
  }
  return o;
}

// plain C++: rows r0 .. r1 - 1 of a repacked matrix times one token's x, the integer sums and float steps of the x86
// kernels. Not vectorized by GCC: GCC 12 with -mavx512vnni turns Q8_0's signed-by-signed byte sum into vpdpbusd, which
// reads one side as unsigned (wrong sums, seen at -O3 here)
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void rows_blocks_ref(int type, const uint8_t* W, int64_t rb, const XQ8& x, float* y, int64_t r0, int64_t r1, int64_t in) {
  const int64_t bb = ggml_block_bytes(type), qo = quants_at(type);
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* wg = W + r / GROUP * GROUP * rb; const int64_t i = r % GROUP;
    float acc = 0;
    for (int64_t b = 0; b < in / QK; b++) {
      const uint8_t* gb = wg + b * GROUP * bb; const int8_t* q = x.q.data() + b * QK;
      int32_t s = type == GGML_Q4_0 ? -8 * x.n[b] : type == GGML_Q5_0 ? -16 * x.n[b] : 0;
      if (type == GGML_Q5_0)
        for (int c = 0; c < 4; c++)
          for (int j = 0; j < 4; j++) s += q5_weight(gb, i, c, j, false) * q[4 * c + j] + q5_weight(gb, i, c, j, true) * q[16 + 4 * c + j];
      else for (int c = 0; c < chunks_of(type); c++)
        for (int j = 0; j < 4; j++) {
          uint8_t v = gb[qo + c * 4 * GROUP + 4 * i + j];
          if (type == GGML_Q8_0) s += (int8_t)v * q[4 * c + j];
          else s += (v & 15) * q[4 * c + j] + (v >> 4) * q[16 + 4 * c + j];
        }
      acc = std::fma((float)s, half_at(gb + 2 * i) * x.d[b], acc);
      if (type == GGML_Q4_1) acc = std::fma(half_at(gb + 2 * GROUP + 2 * i), x.s[b], acc);
    }
    y[r] = acc;
  }
}

static inline int32_t load4(const int8_t* p) { int32_t v; std::memcpy(&v, p, 4); return v; }

#if defined(SMOLLM2_AVX512) || defined(SMOLLM2_AVX2)
// a shuffle that copies byte k of each 32-bit lane into the lane's 4 bytes (within each 128 bits, as pshufb works)
static inline __m128i q5_pick(int k) { const int r = 0x01010101; return _mm_setr_epi32(r * k, r * (4 + k), r * (8 + k), r * (12 + k)); }
#endif
#if defined(SMOLLM2_AVX512)
static const int BLOCK_TOKENS = 8;   // tokens per load of a weight vector: 2 x 8 accumulators of the 32 registers
// groups g0 .. g1 - 1 (16 rows each, one per zmm lane) times NT tokens
template <int TYPE, int NT>
static void groups_blocks_t(const uint8_t* W, int64_t rb, const XQ8* const* x, float* const* y, int64_t g0, int64_t g1,
                            int64_t in, int64_t out) {
  const int64_t nb = in / QK, bb = ggml_block_bytes(TYPE), qo = quants_at(TYPE);
  const __m512i low = _mm512_set1_epi8(15), sixteen = _mm512_set1_epi8(16);
  const int64_t nib = qo + (TYPE == GGML_Q5_0 ? 64 : 0);   // the chunks of nibbles (after Q5_0's qh)
#ifndef __AVX512VNNI__
  const __m512i ones = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
#endif
  for (int64_t g = g0; g < g1; g++) {
    __m512 acc[NT]; for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    const uint8_t* wg = W + g * GROUP * rb;
    for (int64_t b = 0; b < nb; b++) {
      const uint8_t* gb = wg + b * GROUP * bb;
      _mm_prefetch((const char*)(gb + 4 * GROUP * bb), _MM_HINT_T0);
      __m512i s[NT];
      if (TYPE == GGML_Q8_0) {
#ifdef __AVX512VNNI__   // the weights as unsigned w + 128: 128 n too many
        for (int t = 0; t < NT; t++) s[t] = _mm512_set1_epi32(-128 * x[t]->n[b]);
        for (int c = 0; c < 8; c++) {
          __m512i u = _mm512_xor_si512(_mm512_loadu_si512(gb + qo + 64 * c), _mm512_set1_epi8((char)0x80));
          for (int t = 0; t < NT; t++) s[t] = _mm512_dpbusd_epi32(s[t], u, _mm512_set1_epi32(load4(x[t]->q.data() + b * QK + 4 * c)));
        }
#else                   // |x| times the weights with x's sign moved onto them: pairs at most 2 * 127 * 128
        for (int t = 0; t < NT; t++) s[t] = _mm512_setzero_si512();
        for (int c = 0; c < 8; c++) {
          __m512i w = _mm512_loadu_si512(gb + qo + 64 * c);
          for (int t = 0; t < NT; t++) {
            __m512i xv = _mm512_set1_epi32(load4(x[t]->q.data() + b * QK + 4 * c));
            __m512i sw = _mm512_mask_sub_epi8(w, _mm512_movepi8_mask(xv), zero, w);
            __m512i ax = _mm512_set1_epi32(load4(x[t]->ax.data() + b * QK + 4 * c));
            s[t] = _mm512_add_epi32(s[t], _mm512_madd_epi16(_mm512_maddubs_epi16(ax, sw), ones));
          }
        }
#endif
      } else {
        for (int t = 0; t < NT; t++)
          s[t] = TYPE == GGML_Q4_0 ? _mm512_set1_epi32(-8 * x[t]->n[b]) : TYPE == GGML_Q5_0 ? _mm512_set1_epi32(-16 * x[t]->n[b]) : _mm512_setzero_si512();
        const __m512i qh = TYPE == GGML_Q5_0 ? _mm512_loadu_si512(gb + qo) : _mm512_setzero_si512();
        for (int c = 0; c < 4; c++) {
          __m512i v = _mm512_loadu_si512(gb + nib + 64 * c);
          __m512i lo = _mm512_and_si512(v, low), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
          if (TYPE == GGML_Q5_0) {   // each byte's fifth bit: its qh byte copied into the lane's 4 bytes, each byte testing its own bit
            const __m512i bits = _mm512_set1_epi32(0x08040201 << (4 * (c % 2)));
            lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, _mm512_broadcast_i32x4(q5_pick(c / 2))), bits), lo, sixteen);
            hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, _mm512_broadcast_i32x4(q5_pick(2 + c / 2))), bits), hi, sixteen);
          }
          for (int t = 0; t < NT; t++) {
            __m512i xl = _mm512_set1_epi32(load4(x[t]->q.data() + b * QK + 4 * c)), xh = _mm512_set1_epi32(load4(x[t]->q.data() + b * QK + 16 + 4 * c));
#ifdef __AVX512VNNI__
            s[t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s[t], lo, xl), hi, xh);
#else                   // pairs at most 2 * 31 * 127 (Q5_0)
            s[t] = _mm512_add_epi32(s[t], _mm512_madd_epi16(_mm512_maddubs_epi16(lo, xl), ones));
            s[t] = _mm512_add_epi32(s[t], _mm512_madd_epi16(_mm512_maddubs_epi16(hi, xh), ones));
#endif
          }
        }
      }
      __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)gb));
      __m512 mw = TYPE == GGML_Q4_1 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(gb + 2 * GROUP))) : _mm512_setzero_ps();
      for (int t = 0; t < NT; t++) {
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t]), _mm512_mul_ps(dw, _mm512_set1_ps(x[t]->d[b])), acc[t]);
        if (TYPE == GGML_Q4_1) acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(x[t]->s[b]), acc[t]);
      }
    }
    const int64_t left = std::min<int64_t>(GROUP, out - g * GROUP);
    const __mmask16 keep = left == GROUP ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    for (int t = 0; t < NT; t++) _mm512_mask_storeu_ps(y[t] + g * GROUP, keep, acc[t]);
  }
}
#elif defined(SMOLLM2_AVX2)
static const int BLOCK_TOKENS = 4;   // 2 x 4 accumulators of the 16 registers
// groups g0 .. g1 - 1 times NT tokens, each group as two halves of 8 rows (one per ymm lane)
template <int TYPE, int NT>
static void groups_blocks_t(const uint8_t* W, int64_t rb, const XQ8* const* x, float* const* y, int64_t g0, int64_t g1,
                            int64_t in, int64_t out) {
  const int64_t nb = in / QK, bb = ggml_block_bytes(TYPE), qo = quants_at(TYPE);
  const __m256i low = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1), sixteen = _mm256_set1_epi8(16);
  const int64_t nib = qo + (TYPE == GGML_Q5_0 ? 64 : 0);   // the chunks of nibbles (after Q5_0's qh)
  for (int64_t g = g0; g < g1; g++)
    for (int64_t h = 0; h < 2; h++) {
      const int64_t left = std::min<int64_t>(8, out - g * GROUP - 8 * h);
      if (left <= 0) break;
      __m256 acc[NT]; for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
      const uint8_t* wg = W + g * GROUP * rb + 32 * h;   // this half's 8 rows: the second 32 bytes of each chunk
      for (int64_t b = 0; b < nb; b++) {
        const uint8_t* gb = wg + b * GROUP * bb;
        __m256i s[NT];
        if (TYPE == GGML_Q8_0) {   // |x| times the weights with x's sign moved onto them: pairs at most 2 * 127 * 128
          for (int t = 0; t < NT; t++) s[t] = _mm256_setzero_si256();
          for (int c = 0; c < 8; c++) {
            __m256i w = _mm256_loadu_si256((const __m256i*)(gb + qo + 64 * c));
            for (int t = 0; t < NT; t++) {
              __m256i sw = _mm256_sign_epi8(w, _mm256_set1_epi32(load4(x[t]->q.data() + b * QK + 4 * c)));
              __m256i ax = _mm256_set1_epi32(load4(x[t]->ax.data() + b * QK + 4 * c));
              s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), ones));
            }
          }
        } else {                   // nibbles (Q5_0: 5 bits) times x: pairs at most 2 * 31 * 127
          for (int t = 0; t < NT; t++)
            s[t] = TYPE == GGML_Q4_0 ? _mm256_set1_epi32(-8 * x[t]->n[b]) : TYPE == GGML_Q5_0 ? _mm256_set1_epi32(-16 * x[t]->n[b]) : _mm256_setzero_si256();
          const __m256i qh = TYPE == GGML_Q5_0 ? _mm256_loadu_si256((const __m256i*)(gb + qo)) : _mm256_setzero_si256();
          for (int c = 0; c < 4; c++) {
            __m256i v = _mm256_loadu_si256((const __m256i*)(gb + nib + 64 * c));
            __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
            if (TYPE == GGML_Q5_0) {   // each byte's fifth bit, as in the AVX-512 kernel (compare, then 16 where set)
              const __m256i bits = _mm256_set1_epi32(0x08040201 << (4 * (c % 2)));
              __m256i bl = _mm256_and_si256(_mm256_shuffle_epi8(qh, _mm256_broadcastsi128_si256(q5_pick(c / 2))), bits);
              __m256i bh = _mm256_and_si256(_mm256_shuffle_epi8(qh, _mm256_broadcastsi128_si256(q5_pick(2 + c / 2))), bits);
              lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(bl, bits), sixteen));
              hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(bh, bits), sixteen));
            }
            for (int t = 0; t < NT; t++) {
              __m256i xl = _mm256_set1_epi32(load4(x[t]->q.data() + b * QK + 4 * c)), xh = _mm256_set1_epi32(load4(x[t]->q.data() + b * QK + 16 + 4 * c));
              s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), ones));
              s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), ones));
            }
          }
        }
        // the half's 8 d (and m) sit 16 bytes further for h = 1: gb already moved 32 bytes, so step back 16
        const uint8_t* sc = gb - 16 * h;
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)sc));
        __m256 mw = TYPE == GGML_Q4_1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(sc + 2 * GROUP))) : _mm256_setzero_ps();
        for (int t = 0; t < NT; t++) {
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(dw, _mm256_set1_ps(x[t]->d[b])), acc[t]);
          if (TYPE == GGML_Q4_1) acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x[t]->s[b]), acc[t]);
        }
      }
      for (int t = 0; t < NT; t++) {
        float* o = y[t] + g * GROUP + 8 * h;
        if (left == 8) _mm256_storeu_ps(o, acc[t]);
        else { alignas(32) float tmp[8]; _mm256_store_ps(tmp, acc[t]); std::memcpy(o, tmp, left * 4); }
      }
    }
}
#else
static const int BLOCK_TOKENS = 1;
#endif

// nt (1 .. BLOCK_TOKENS) tokens x[0 .. nt - 1] through groups g0 .. g1 - 1 of a repacked matrix of `type` (out rows),
// into y[0 .. nt - 1]: this class's kernel
static void groups_blocks(int type, int nt, const uint8_t* W, int64_t rb, const XQ8* const* x, float* const* y, int64_t g0,
                          int64_t g1, int64_t in, int64_t out) {
#if defined(SMOLLM2_AVX512) || defined(SMOLLM2_AVX2)
  auto by_type = [&](auto n) {
    constexpr int NT = decltype(n)::value;
    switch (type) {
      case GGML_Q4_0: return groups_blocks_t<GGML_Q4_0, NT>(W, rb, x, y, g0, g1, in, out);
      case GGML_Q4_1: return groups_blocks_t<GGML_Q4_1, NT>(W, rb, x, y, g0, g1, in, out);
      case GGML_Q5_0: return groups_blocks_t<GGML_Q5_0, NT>(W, rb, x, y, g0, g1, in, out);
      default:        return groups_blocks_t<GGML_Q8_0, NT>(W, rb, x, y, g0, g1, in, out);
    }
  };
  switch (nt) {
#if defined(SMOLLM2_AVX512)
    case 8: return by_type(std::integral_constant<int, 8>());
    case 7: return by_type(std::integral_constant<int, 7>());
    case 6: return by_type(std::integral_constant<int, 6>());
    case 5: return by_type(std::integral_constant<int, 5>());
#endif
    case 4: return by_type(std::integral_constant<int, 4>());
    case 3: return by_type(std::integral_constant<int, 3>());
    case 2: return by_type(std::integral_constant<int, 2>());
    default: return by_type(std::integral_constant<int, 1>());
  }
#else
  for (int t = 0; t < nt; t++) rows_blocks_ref(type, W, rb, *x[t], y[t], g0 * GROUP, std::min(g1 * GROUP, out), in);
#endif
}
