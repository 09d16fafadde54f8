// Products of llama.cpp's K-quants Q4_K and Q6_K, and of Q5_0, with a token's activations, for the batch-1 decoding
// step. Included by cpu_decode.cpp after gguf_kernels.h (it uses its fp16 helpers and prepare_q8); no torch here.
//
// A matrix is its rows of blocks exactly as in the GGUF file; the formats (ggml's type numbers, the layouts of
// ggml-common.h; the `gguf` package's quants.py dequantizes the same):
//   Q5_0 (6)   22 bytes per 32 weights: d (fp16), qh (32 bits, the fifth bit of weight j at bit j), 16 bytes of nibbles;
//              w[j] = d * ((lo(qs[j]) | bit j << 4) - 16), w[j + 16] = d * ((hi(qs[j]) | bit j + 16 << 4) - 16)
//   Q4_K (12)  144 bytes per super-block of 256: d, dmin (fp16), 12 bytes packing 8 six-bit scales sc and mins m, 128
//              bytes of nibbles; sub-block s of 32 weights: w = d * sc[s] * q - dmin * m[s], q = 0..15. Bytes 32 j .. 32 j + 31
//              of the nibbles hold sub-block 2 j in their low nibbles and 2 j + 1 in their high ones.
//   Q6_K (14)  210 bytes per 256: ql (128 bytes, the low 4 bits), qh (64 bytes, the high 2 bits), 16 int8 scales, d (fp16);
//              sub-block s of 16 weights: w = d * sc[s] * (q - 32), q = 0..63 (the bit layout in `q6k_weights`).
// A Q4_K_M file of a model whose rows are not multiples of 256 weights (SmolLM2-135M's 576) has most matrices in Q5_0
// and Q8_0, the formats llama.cpp falls back to there, and Q4_K / Q6_K where rows are (ffn_down's 1536).
//
// The activations are rounded as llama.cpp does for each format: for Q5_0 to q8_0 (prepare_q8, blocks of 32, fp16
// scales); for the K-quants to q8_K: per 256, q = min(127, round(-127 / max * x)) where max is the entry of largest
// magnitude (with its sign), d = 1 / (-127 / max) in fp32, and the 16 sums of 16 q (`bsums`). Each super-block's product
// is then an exact integer sum times the scales:
//   Q4_K: dx (d * sum_s sc[s] sum(q qx)_s - dmin * sum_s m[s] (bsum[2 s] + bsum[2 s + 1]))
//   Q6_K: dx d sum_s sc[s] (sum(q qx)_s - 32 bsum[s])          Q5_0: dw dx (sum(q qx) - 16 n)
// One x86 kernel serves every x86 class (all have AVX2; with AVX-512 VNNI the 256-bit vpdpbusd adds the bytes), a plain
// C++ one the ARM classes and the tests' reference.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

static const int64_t QK_K = 256;   // weights per super-block of the K-quants
// the formats this header multiplies in the file's layout (matmul_blocks hands them to matmul_kquants): the K-quants, and
// Q5_0 as a part of a fused matrix that mixes it with a K-quant (a Q5_0 matrix, or part beside Q4_0/Q4_1/Q8_0 ones, is
// repacked: gguf_kernels.h)
static inline bool is_kquant(int type) { return type == GGML_Q5_0 || type == GGML_Q4_K || type == GGML_Q6_K; }
static inline bool uses_q8k(int type) { return type == GGML_Q4_K || type == GGML_Q6_K; }

// x rounded to q8_K: q per weight, d per 256, the sums of each 16 q
struct XQ8K { std::vector<int8_t> q; std::vector<float> d; std::vector<int32_t> bsum; };
static XQ8K prepare_q8k(const float* x, int64_t in) {
  XQ8K o; o.q.assign(in, 0); o.d.assign(in / QK_K, 0.0f); o.bsum.assign(in / 16, 0);
  for (int64_t b = 0; b < in / QK_K; b++) {
    const float* xb = x + b * QK_K; float amax = 0, mx = 0;
    for (int64_t j = 0; j < QK_K; j++) if (std::fabs(xb[j]) > amax) { amax = std::fabs(xb[j]); mx = xb[j]; }
    if (amax == 0) continue;
    const float iscale = -127.0f / mx;
    for (int64_t j = 0; j < QK_K; j++) o.q[b * QK_K + j] = (int8_t)std::min(127, (int)std::nearbyint(iscale * xb[j]));
    for (int64_t s = 0; s < 16; s++) { int sum = 0; for (int i = 0; i < 16; i++) sum += o.q[b * QK_K + 16 * s + i]; o.bsum[b * 16 + s] = sum; }
    o.d[b] = 1.0f / iscale;
  }
  return o;
}

// Q4_K's 12 bytes as 8 scales and 8 mins (6 bits each): bytes 0-3 and 4-7 hold sc[0..3] and m[0..3] in their low 6 bits
// and the top 2 bits of sc[4..7] and m[4..7] in their high 2; bytes 8-11 the low 4 bits of sc[4..7] (low nibble), m[4..7] (high)
static inline void q4k_scales(const uint8_t* s, int* sc, int* m) {
  for (int j = 0; j < 4; j++) { sc[j] = s[j] & 63; m[j] = s[j + 4] & 63; }
  for (int j = 4; j < 8; j++) { sc[j] = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4); m[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
}
// Q6_K's 256 six-bit q (0..63): each half of 128 reads 64 bytes of ql and 32 of qh; weight l of the half (l < 32) is
// ql[l]'s low nibble and qh[l]'s bits 0-1, l + 32 ql[l + 32]'s low nibble and bits 2-3, l + 64 ql[l]'s high nibble and
// bits 4-5, l + 96 ql[l + 32]'s high nibble and bits 6-7
static inline void q6k_weights(const uint8_t* blk, uint8_t* w) {
  for (int h = 0; h < 2; h++) {
    const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h; uint8_t* o = w + 128 * h;
    for (int l = 0; l < 32; l++) {
      o[l] = (ql[l] & 15) | ((qh[l] & 3) << 4);             o[l + 32] = (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4);
      o[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4); o[l + 96] = (ql[l + 32] >> 4) | ((qh[l] >> 6) << 4);
    }
  }
}
static inline uint32_t q5_high_bits(const uint8_t* blk) { uint32_t h; std::memcpy(&h, blk + 2, 4); return h; }

// one row of Q5_0, Q4_K or Q6_K as fp32 (the embedding's lookup)
static void dequantize_row_kquant(int type, const uint8_t* row, float* out, int64_t n) {
  if (type == GGML_Q5_0) {
    for (int64_t b = 0; b < n / QK; b++) {
      const uint8_t* blk = row + b * 22; float d = half_at(blk); uint32_t qh = q5_high_bits(blk); float* o = out + b * QK;
      for (int j = 0; j < 16; j++) {
        o[j] = d * (int)(((blk[6 + j] & 15) | (((qh >> j) & 1) << 4)) - 16);
        o[j + 16] = d * (int)(((blk[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
      }
    }
  } else if (type == GGML_Q4_K) {
    for (int64_t b = 0; b < n / QK_K; b++) {
      const uint8_t* blk = row + b * 144; float d = half_at(blk), dmin = half_at(blk + 2); int sc[8], m[8]; q4k_scales(blk + 4, sc, m);
      float* o = out + b * QK_K;
      for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++) {
          o[64 * j + l] = d * sc[2 * j] * (blk[16 + 32 * j + l] & 15) - dmin * m[2 * j];
          o[64 * j + 32 + l] = d * sc[2 * j + 1] * (blk[16 + 32 * j + l] >> 4) - dmin * m[2 * j + 1];
        }
    }
  } else {
    for (int64_t b = 0; b < n / QK_K; b++) {
      const uint8_t* blk = row + b * 210; float d = half_at(blk + 208); uint8_t w[256]; q6k_weights(blk, w);
      for (int i = 0; i < 256; i++) out[b * QK_K + i] = d * (float)(int8_t)blk[192 + i / 16] * (w[i] - 32);
    }
  }
}
// Q4_0, Q4_1 or Q8_0 rows kept in the file's layout: the parts of a fused matrix that mixes them with a K-quant. A
// matrix of these formats, or of parts all in them, is repacked (gguf_kernels.h); these plain loops serve only such
// parts, a small share of a step. One row as fp32:
static void dequantize_row_file(int type, const uint8_t* row, float* out, int64_t n) {
  const int64_t bb = ggml_block_bytes(type);
  for (int64_t b = 0; b < n / QK; b++) {
    const uint8_t* blk = row + b * bb; float d = half_at(blk); float* o = out + b * QK;
    if (type == GGML_Q8_0) for (int j = 0; j < 32; j++) o[j] = d * (float)(int8_t)blk[2 + j];
    else if (type == GGML_Q4_0) for (int j = 0; j < 16; j++) { o[j] = d * ((blk[2 + j] & 15) - 8); o[j + 16] = d * ((blk[2 + j] >> 4) - 8); }
    else { float m = half_at(blk + 2); for (int j = 0; j < 16; j++) { o[j] = d * (blk[4 + j] & 15) + m; o[j + 16] = d * (blk[4 + j] >> 4) + m; } }
  }
}
// and rows r0 .. r1 - 1 times x (not vectorized by GCC, as rows_blocks_ref)
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void rows_blocks_file(int type, const uint8_t* W, int64_t rb, const XQ8& x, float* y, int64_t r0, int64_t r1, int64_t in) {
  const int64_t bb = ggml_block_bytes(type);
  for (int64_t r = r0; r < r1; r++) {
    float acc = 0;
    for (int64_t b = 0; b < in / QK; b++) {
      const uint8_t* blk = W + r * rb + b * bb; const int8_t* q = x.q.data() + b * QK;
      int32_t s = 0; float dw = half_at(blk);
      if (type == GGML_Q8_0) { for (int j = 0; j < 32; j++) s += (int8_t)blk[2 + j] * q[j]; acc += dw * x.d[b] * s; }
      else {
        const uint8_t* qs = blk + (type == GGML_Q4_1 ? 4 : 2);
        for (int j = 0; j < 16; j++) s += (qs[j] & 15) * q[j] + (qs[j] >> 4) * q[j + 16];
        acc += type == GGML_Q4_1 ? dw * x.d[b] * s + half_at(blk + 2) * x.s[b] : dw * x.d[b] * (float)(s - 8 * x.n[b]);
      }
    }
    y[r] = acc;
  }
}
// a row in the file's layout of any format the step reads
static void dequantize_row_any(int type, const uint8_t* row, float* out, int64_t n) {
  if (is_kquant(type)) dequantize_row_kquant(type, row, out, n); else dequantize_row_file(type, row, out, n);
}

// plain C++: rows r0 .. r1 - 1 of W (rows of rb bytes, the blocks at each row's start) times x (x8 for Q5_0, xk for the
// K-quants). Not vectorized by GCC, as rows_blocks_ref (its byte sums turned into vpdpbusd are wrong for signed pairs)
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void rows_kquant_ref(int type, const uint8_t* W, int64_t rb, const XQ8& x8, const XQ8K& xk, float* y, int64_t r0, int64_t r1, int64_t in) {
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* row = W + r * rb; float acc = 0;
    if (type == GGML_Q5_0) {
      for (int64_t b = 0; b < in / QK; b++) {
        const uint8_t* blk = row + b * 22; uint32_t qh = q5_high_bits(blk); const int8_t* q = x8.q.data() + b * QK; int32_t s = 0;
        for (int j = 0; j < 16; j++)
          s += ((blk[6 + j] & 15) | (((qh >> j) & 1) << 4)) * q[j] + ((blk[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) * q[j + 16];
        acc += half_at(blk) * x8.d[b] * (float)(s - 16 * x8.n[b]);
      }
    } else if (type == GGML_Q4_K) {
      for (int64_t b = 0; b < in / QK_K; b++) {
        const uint8_t* blk = row + b * 144; const int8_t* q = xk.q.data() + b * QK_K; const int32_t* bs = xk.bsum.data() + b * 16;
        int sc[8], m[8]; q4k_scales(blk + 4, sc, m); int32_t isum = 0, msum = 0;
        for (int j = 0; j < 4; j++) {
          int32_t s0 = 0, s1 = 0;
          for (int l = 0; l < 32; l++) { s0 += (blk[16 + 32 * j + l] & 15) * q[64 * j + l]; s1 += (blk[16 + 32 * j + l] >> 4) * q[64 * j + 32 + l]; }
          isum += sc[2 * j] * s0 + sc[2 * j + 1] * s1;
        }
        for (int s = 0; s < 8; s++) msum += m[s] * (bs[2 * s] + bs[2 * s + 1]);
        acc += xk.d[b] * (half_at(blk) * (float)isum - half_at(blk + 2) * (float)msum);
      }
    } else {
      for (int64_t b = 0; b < in / QK_K; b++) {
        const uint8_t* blk = row + b * 210; const int8_t* q = xk.q.data() + b * QK_K; const int32_t* bs = xk.bsum.data() + b * 16;
        uint8_t w[256]; q6k_weights(blk, w); int32_t isum = 0;
        for (int s = 0; s < 16; s++) {
          int32_t t = 0; for (int i = 0; i < 16; i++) t += w[16 * s + i] * q[16 * s + i];
          isum += (int8_t)blk[192 + s] * (t - 32 * bs[s]);
        }
        acc += half_at(blk + 208) * xk.d[b] * (float)isum;
      }
    }
    y[r] = acc;
  }
}

#if defined(SMOLLM2_AVX512) || defined(SMOLLM2_AVX2)
static inline float kq_hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
// unsigned bytes u times signed bytes s, summed into 8 int32, bytes 0..15 times the scale lo and 16..31 times hi
// (VNNI: vpdpbusd, then the scales; AVX2: pairs of products in int16, at most 2 * 63 * 127, then the scales in vpmaddwd)
static inline __m256i kq_dot_scaled(__m256i u, __m256i s, int lo, int hi) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_mullo_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s), _mm256_set_m128i(_mm_set1_epi32(hi), _mm_set1_epi32(lo)));
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set_m128i(_mm_set1_epi16((short)hi), _mm_set1_epi16((short)lo)));
#endif
}
// the 32 bits at p as 32 bytes: 0xFF where bit k is set, 0 where not
static inline __m256i kq_bits_as_bytes(const uint8_t* p) {
  uint32_t b; std::memcpy(&b, p, 4);
  const __m256i which = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0);   // byte k/8 to byte k
  const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);                                      // bit k%8 of it
  return _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)b), which), bit), bit);
}

static void rows_q5_0(const uint8_t* W, int64_t rb, const XQ8& x, float* y, int64_t r0, int64_t r1, int64_t in) {
  const __m256i m4 = _mm256_set1_epi8(15), b4 = _mm256_set1_epi8(16);
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* row = W + r * rb; __m256 acc = _mm256_setzero_ps(); float off = 0;
    for (int64_t b = 0; b < in / QK; b++) {
      const uint8_t* blk = row + b * 22;
      __m128i v = _mm_loadu_si128((const __m128i*)(blk + 6));
      __m256i w = _mm256_or_si256(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), m4), _mm256_and_si256(kq_bits_as_bytes(blk + 2), b4));
      float dd = half_at(blk) * x.d[b];
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(kq_dot_scaled(w, _mm256_loadu_si256((const __m256i*)(x.q.data() + b * QK)), 1, 1)), _mm256_set1_ps(dd), acc);
      off -= 16 * x.n[b] * dd;
    }
    y[r] = kq_hsum8(acc) + off;
  }
}

static void rows_q4_k(const uint8_t* W, int64_t rb, const XQ8K& x, float* y, int64_t r0, int64_t r1, int64_t in) {
  const __m256i m4 = _mm256_set1_epi8(15);
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* row = W + r * rb; __m256 acc = _mm256_setzero_ps(); float off = 0;
    for (int64_t b = 0; b < in / QK_K; b++) {
      const uint8_t* blk = row + b * 144; const int8_t* q = x.q.data() + b * QK_K; const int32_t* bs = x.bsum.data() + b * 16;
      int sc[8], m[8]; q4k_scales(blk + 4, sc, m);
      __m256i isum = _mm256_setzero_si256();
      for (int j = 0; j < 4; j++) {
        __m256i v = _mm256_loadu_si256((const __m256i*)(blk + 16 + 32 * j));
        isum = _mm256_add_epi32(isum, kq_dot_scaled(_mm256_and_si256(v, m4), _mm256_loadu_si256((const __m256i*)(q + 64 * j)), sc[2 * j], sc[2 * j]));
        isum = _mm256_add_epi32(isum, kq_dot_scaled(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), _mm256_loadu_si256((const __m256i*)(q + 64 * j + 32)),
                                                    sc[2 * j + 1], sc[2 * j + 1]));
      }
      int32_t msum = 0; for (int s = 0; s < 8; s++) msum += m[s] * (bs[2 * s] + bs[2 * s + 1]);
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(half_at(blk) * x.d[b]), acc);
      off -= half_at(blk + 2) * x.d[b] * (float)msum;
    }
    y[r] = kq_hsum8(acc) + off;
  }
}

static void rows_q6_k(const uint8_t* W, int64_t rb, const XQ8K& x, float* y, int64_t r0, int64_t r1, int64_t in) {
  const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* row = W + r * rb; __m256 acc = _mm256_setzero_ps(); float off = 0;
    for (int64_t b = 0; b < in / QK_K; b++) {
      const uint8_t* blk = row + b * 210; const int8_t* q = x.q.data() + b * QK_K; const int32_t* bs = x.bsum.data() + b * 16;
      const int8_t* sc = (const int8_t*)(blk + 192);
      __m256i isum = _mm256_setzero_si256();
      for (int h = 0; h < 2; h++) {
        __m256i l0 = _mm256_loadu_si256((const __m256i*)(blk + 64 * h)), l1 = _mm256_loadu_si256((const __m256i*)(blk + 64 * h + 32)),
                hb = _mm256_loadu_si256((const __m256i*)(blk + 128 + 32 * h));
        __m256i w[4] = {_mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30)),
                        _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30))};
        for (int k = 0; k < 4; k++) {
          int s = 8 * h + 2 * k;   // the sub-blocks of 16 these 32 weights span
          isum = _mm256_add_epi32(isum, kq_dot_scaled(w[k], _mm256_loadu_si256((const __m256i*)(q + 16 * s)), sc[s], sc[s + 1]));
        }
      }
      int32_t corr = 0; for (int s = 0; s < 16; s++) corr += sc[s] * bs[s];
      float dd = half_at(blk + 208) * x.d[b];
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dd), acc);
      off -= 32 * dd * (float)corr;
    }
    y[r] = kq_hsum8(acc) + off;
  }
}
#endif

// rows r0 .. r1 - 1 of a matrix of Q5_0, Q4_K or Q6_K times x: this class's kernel
static void rows_kquant(int type, const uint8_t* W, int64_t rb, const XQ8& x8, const XQ8K& xk, float* y, int64_t r0, int64_t r1, int64_t in) {
#if defined(SMOLLM2_AVX512) || defined(SMOLLM2_AVX2)
  switch (type) {
    case GGML_Q5_0: return rows_q5_0(W, rb, x8, y, r0, r1, in);
    case GGML_Q4_K: return rows_q4_k(W, rb, xk, y, r0, r1, in);
    case GGML_Q6_K: return rows_q6_k(W, rb, xk, y, r0, r1, in);
  }
#endif
  rows_kquant_ref(type, W, rb, x8, xk, y, r0, r1, in);
}
