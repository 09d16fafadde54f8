// The batch-1 decoding step of SmolLM2 on a CPU: every layer of one token, from its embedding to the logits.
// Built by smollm2_nb.serve.decoders (torch.utils.cpp_extension.load) on first use; see nbs/serve/13_inference.ipynb. Built
// without PyTorch too (-DSMOLLM2_NO_TORCH: torch_free.h stands in for ATen, and the C entry points at the end stand in for
// the Python bindings) by smollm2_nb.serve.lean, for a decoding process that holds no PyTorch runtime.
// One source, compiled once per instruction-set class (smollm2_nb.serve.decoders picks the flags); the products for
// each class are in cpu_kernels.h.
#ifdef SMOLLM2_NO_TORCH
#include "torch_free.h"
#else
#include <torch/extension.h>
#include <ATen/Parallel.h>
#endif
#include "cpu_kernels.h"
#include "gguf_kernels.h"
#include "gguf_kquants.h"
#include "thread_pool.h"
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>
#ifdef __linux__
#include <sys/mman.h>
#endif

// The packed weight matrices, in this order for each layer, then the LM head last. The Python side packs them by
// asking `layout()` for these names, so the order is written here once.
enum Mat : int64_t { QKV = 0, O = 1, GATE_UP = 2, DOWN = 3, PER_LAYER = 4 };
std::vector<std::string> layout() { return {"qkv", "o", "gate_up", "down"}; }

// Y (T, out) = X (T, in) W^T, the rows split among torch's threads (in pieces, by the pool of thread_pool.h). A new token is
// T = 1: each thread streams its rows once. For a prompt's T tokens each thread reads its rows a chunk of CHUNK_BYTES at
// a time and runs all T inputs through the chunk while it sits in the core's cache, so the weights come from memory
// once for the whole prompt instead of once per token; fp32 and bf16 kernels take several tokens per load of a weight.
static const int64_t CHUNK_BYTES = 64 << 10;

// f(b, e) over [begin, end) on torch's threads (torch.set_num_threads), by the step's own pool (thread_pool.h)
template <class F> static void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  pool::parallel_for(begin, end, grain, at::get_num_threads(), f);
}
// f(t) for t in 0 .. n - 1 (a step's rows, each on its own), among the threads when there are several
template <class F> static void each_row(int64_t n, const F& f) {
  parallel_for(0, n, 1, [&](int64_t a, int64_t e) { for (int64_t t = a; t < e; t++) f(t); });
}

// A GGUF matrix (gguf_kernels.h): W uint8 (out rounded up to 16, row bytes), its blocks repacked in groups of 16 rows;
// its `scale` is the spec int64 [ggml type, in, 16, out]. The groups split among the threads; for a prompt's (or a
// batch's) tokens each thread takes a chunk of CHUNK_BYTES of its groups at a time and runs up to BLOCK_TOKENS tokens
// through each load of a weight vector, the chunk staying in the core's cache for the next tokens.
static bool is_blocks(const at::Tensor& W) { return W.scalar_type() == at::kByte; }
static int64_t cols(const at::Tensor& W, const at::Tensor& scale) { return is_blocks(W) ? scale.data_ptr<int64_t>()[1] : W.size(1); }
// A matrix in the file's layout (gguf_kquants.h): Q4_K or Q6_K, or any format outside the step's own matrices, spec
// [type, in]; or a fused matrix whose parts differ in format (a
// Q4_K_M file's [q;k;v] with q, k in Q5_0 and v in Q8_0): spec [SEGMENTS, in, type_0, rows_0, type_1, rows_1, ...], W
// (out, the widest part's row bytes), each row's blocks at its start. Each token's activations rounded once per kind
// (q8_0 for the 32-weight formats, q8_K for the K-quants), the rows split among the threads as in matmul_blocks.
static const int64_t SEGMENTS = -1;
// A fused matrix whose parts differ in format but each is a repacked one (Q4_K_M's [q;k;v] with q, k in Q5_0 and v in
// Q8_0): spec [REPACKED_SEGMENTS, in, type_0, rows_0, ...], every part's rows a multiple of 16; W (out, the widest part's
// row bytes), part p's repacked rows (rows_p, its own row bytes) stored contiguously from W's row r_p.
static const int64_t REPACKED_SEGMENTS = -2;
static bool takes_kquants(const at::Tensor& spec) {   // the file's layout: spec [type, in] or [SEGMENTS, ...]
  if (spec.scalar_type() != at::kLong || spec.numel() < 2) return false;
  return spec.numel() == 2 || spec.data_ptr<int64_t>()[0] == SEGMENTS;
}
static void matmul_kquants(const at::Tensor& W, const at::Tensor& spec, const float* X, float* Y, int64_t T) {
  const int64_t* sp = spec.data_ptr<int64_t>(); int64_t in = sp[1], out = W.size(0), rb = W.size(1);
  std::vector<std::pair<int, int64_t>> seg;   // (type, first row)
  if (sp[0] == SEGMENTS) {
    TORCH_CHECK(spec.numel() >= 4 && spec.numel() % 2 == 0, "a segmented GGUF matrix's spec: int64 [-1, in, type, rows, ...]");
    int64_t r = 0; for (int64_t i = 2; i < spec.numel(); i += 2) { seg.push_back({(int)sp[i], r}); r += sp[i + 1]; }
    TORCH_CHECK(r == out, "the segments' rows (", r, ") are not the matrix's ", out);
  } else seg.push_back({(int)sp[0], 0});
  bool want8 = false, wantk = false;
  for (auto& s : seg) {
    int64_t bw = ggml_block_weights(s.first), need = in / bw * ggml_block_bytes(s.first);
    TORCH_CHECK(ggml_block_bytes(s.first) > 0 && in % bw == 0 && (sp[0] == SEGMENTS ? need <= rb : need == rb), "GGUF matrix of type ",
                s.first, ": ", rb, " bytes per row do not hold ", in, " weights");
    (uses_q8k(s.first) ? wantk : want8) = true;
  }
  seg.push_back({0, out});
  const uint8_t* w = W.data_ptr<uint8_t>();
  std::vector<XQ8> q8(want8 ? T : 0); std::vector<XQ8K> qk(wantk ? T : 0); XQ8 none8; XQ8K nonek;
  each_row(T, [&](int64_t t) { if (want8) q8[t] = prepare_q8(X + t * in, in); if (wantk) qk[t] = prepare_q8k(X + t * in, in); });
  int64_t chunk = T == 1 ? out : std::max<int64_t>(8, CHUNK_BYTES / rb);
  parallel_for(0, out, 8, [&](int64_t a, int64_t e) {
    for (int64_t c0 = a; c0 < e; c0 += chunk)
      for (size_t i = 0; i + 1 < seg.size(); i++) {
        int type = seg[i].first; int64_t s0 = seg[i].second, r0 = std::max(c0, s0), r1 = std::min({c0 + chunk, e, seg[i + 1].second});
        if (r0 >= r1) continue;
        for (int64_t t = 0; t < T; t++) {
          const XQ8& x8 = want8 ? q8[t] : none8; const XQ8K& xk = wantk ? qk[t] : nonek;
          if (is_kquant(type)) rows_kquant(type, w, rb, x8, xk, Y + t * out, r0, r1, in);
          else rows_blocks_file(type, w, rb, x8, Y + t * out, r0, r1, in);
        }
      }
  });
}
// a matrix's rows: a repacked one's from its spec (its groups may pad them), any other's its tensor's
static int64_t rows(const at::Tensor& W, const at::Tensor& scale) {
  return is_blocks(W) && scale.numel() == 4 && scale.data_ptr<int64_t>()[0] >= 0 ? scale.data_ptr<int64_t>()[3] : W.size(0);
}
static bool repacked_segments(const at::Tensor& spec) {
  return spec.scalar_type() == at::kLong && spec.numel() >= 4 && spec.data_ptr<int64_t>()[0] == REPACKED_SEGMENTS;
}
// the parts of a REPACKED_SEGMENTS matrix: (type, first row, rows, row bytes), checked against W
static std::vector<std::array<int64_t, 4>> segments_of(const at::Tensor& W, const at::Tensor& spec) {
  const int64_t* sp = spec.data_ptr<int64_t>(); int64_t in = sp[1], r = 0;
  TORCH_CHECK(spec.numel() % 2 == 0 && W.dim() == 2 && W.is_contiguous() && in % QK == 0,
              "a GGUF matrix of repacked parts: spec int64 [-2, in, type, rows, ...], W (out, the widest part's row bytes)");
  std::vector<std::array<int64_t, 4>> seg;
  for (int64_t i = 2; i < spec.numel(); i += 2) {
    int type = (int)sp[i]; int64_t n = sp[i + 1], rb = in / QK * ggml_block_bytes(type);
    TORCH_CHECK(is_repacked_type(type) && n % GROUP == 0 && rb <= W.size(1), "a repacked part of type ", type, " and ", n,
                " rows (a multiple of 16 whose blocks fit in ", W.size(1), " bytes per row)");
    seg.push_back({type, r, n, rb}); r += n;
  }
  TORCH_CHECK(r == W.size(0), "the parts' rows (", r, ") are not the matrix's ", W.size(0));
  return seg;
}
static void check_blocks(const at::Tensor& W, const at::Tensor& spec) {
  if (repacked_segments(spec)) { segments_of(W, spec); return; }
  TORCH_CHECK(spec.scalar_type() == at::kLong && spec.numel() == 4 && spec.data_ptr<int64_t>()[2] == GROUP,
              "a GGUF matrix's spec: int64 [ggml type, in, 16, out] (its blocks repacked by repack_blocks)");
  const int64_t* sp = spec.data_ptr<int64_t>(); int type = (int)sp[0]; int64_t in = sp[1], out = sp[3], rb = W.size(1);
  TORCH_CHECK(W.dim() == 2 && W.is_contiguous() && ggml_block_bytes(type) > 0 && in % QK == 0 && rb == in / QK * ggml_block_bytes(type),
              "GGUF matrix of type ", type, ": ", rb, " bytes per row do not hold ", in, " weights");
  TORCH_CHECK(W.size(0) == (out + GROUP - 1) / GROUP * GROUP, "a repacked GGUF matrix of ", out, " rows has ", W.size(0),
              " (its rows rounded up to a multiple of 16)");
}
// a repacked matrix w (out rows of rb bytes, in groups of 16) of `type` times the T tokens xs, into ys[t][0 .. out - 1]
static void matmul_groups(int type, const uint8_t* w, int64_t rb, int64_t in, int64_t out, const std::vector<const XQ8*>& xs,
                          const std::vector<float*>& ys) {
  const int64_t T = xs.size(), ng = (out + GROUP - 1) / GROUP, chunk = T == 1 ? ng : std::max<int64_t>(1, CHUNK_BYTES / (GROUP * rb));
  parallel_for(0, ng, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t c0 = g0; c0 < g1; c0 += chunk)
      for (int64_t t = 0; t < T; t += BLOCK_TOKENS)
        groups_blocks(type, (int)std::min<int64_t>(BLOCK_TOKENS, T - t), w, rb, &xs[t], &ys[t], c0, std::min(c0 + chunk, g1), in, out);
  });
}
static void matmul_blocks(const at::Tensor& W, const at::Tensor& spec, const float* X, float* Y, int64_t T) {
  if (takes_kquants(spec)) return matmul_kquants(W, spec, X, Y, T);
  const bool parts = repacked_segments(spec);
  if (!parts) check_blocks(W, spec);                 // (a matrix of parts: segments_of below checks them)
  const int64_t* sp = spec.data_ptr<int64_t>(); int64_t in = sp[1], out = rows(W, spec);
  const uint8_t* w = W.data_ptr<uint8_t>();
  std::vector<XQ8> q(T); each_row(T, [&](int64_t t) { q[t] = prepare_q8(X + t * in, in); });
  std::vector<const XQ8*> xs(T); std::vector<float*> ys(T);
  for (int64_t t = 0; t < T; t++) { xs[t] = &q[t]; ys[t] = Y + t * out; }
  if (!parts) return matmul_groups((int)sp[0], w, W.size(1), in, out, xs, ys);
  for (auto& s : segments_of(W, spec)) {   // each part by its own kernel, into its columns of Y
    std::vector<float*> yp(T); for (int64_t t = 0; t < T; t++) yp[t] = ys[t] + s[1];
    matmul_groups((int)s[0], w + s[1] * W.size(1), s[3], in, s[2], xs, yp);
  }
}

// row k of a GGUF matrix of `type` as fp32: a repacked one (Q4_0, Q4_1, Q5_0, Q8_0) or one in the file's layout (the K-quants)
static void block_row(int type, const at::Tensor& W, int64_t k, float* out, int64_t n) {
  if (!is_repacked_type(type)) dequantize_row_kquant(type, W.data_ptr<uint8_t>() + k * W.size(1), out, n);
  else dequantize_row(type, W.data_ptr<uint8_t>(), W.size(1), k, out, n);
}
// a token's row of a GGUF embedding, its format read off its row bytes
static void embed_row(const at::Tensor& E, int64_t token, float* out, int64_t d) {
  int type = ggml_type_of_row(E.size(1), d);
  TORCH_CHECK(type > 0, "a GGUF embedding's rows of ", E.size(1), " bytes hold no known format of ", d, " weights");
  block_row(type, E, token, out, d);
}

static void matmul(const at::Tensor& W, const at::Tensor& scale, const float* X, float* Y, int64_t T) {
  if (is_blocks(W)) return matmul_blocks(W, scale, X, Y, T);
  int64_t out = W.size(0), in = W.size(1);
  int64_t chunk = T == 1 ? out : std::max<int64_t>(4, CHUNK_BYTES / (in * W.element_size()) / 4 * 4);
  int tokens = W.scalar_type() == at::kFloat ? F32_TOKENS : W.scalar_type() == at::kBFloat16 ? BF16_TOKENS : 1;
  std::vector<float*> ys(T); for (int64_t t = 0; t < T; t++) ys[t] = Y + t * out;
  auto split = [&](auto rows) {   // rows(t, nt, r0, r1): tokens t .. t + nt - 1 through rows r0 .. r1 - 1
    parallel_for(0, out / 4, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t c0 = 4 * b0; c0 < 4 * b1; c0 += chunk)
        for (int64_t t = 0; t < T; t += tokens) rows(t, (int)std::min<int64_t>(tokens, T - t), c0, std::min(c0 + chunk, 4 * b1));
    });
  };
  if (W.scalar_type() == at::kBFloat16) {
    std::vector<XBf16> xb; for (int64_t t = 0; t < T; t++) xb.push_back(prepare_bf16(X + t * in, in));
    std::vector<const XBf16*> xs(T); for (int64_t t = 0; t < T; t++) xs[t] = &xb[t];
    const uint16_t* w = (const uint16_t*)W.data_ptr();
    split([&](int64_t t, int nt, int64_t r0, int64_t r1) {
      by_tokens(nt, [&](auto n) { rows_bf16_t<decltype(n)::value>(w, &xs[t], &ys[t], r0, r1, in); });
    });
  } else if (W.scalar_type() == at::kChar) {
    TORCH_CHECK(scale.scalar_type() == at::kBFloat16 && scale.numel() == out * (in / 64), "int8 scales: bf16, one per row and block of 64");
    std::vector<XInt8> q(T); each_row(T, [&](int64_t t) { q[t] = prepare_int8(X + t * in, in); });
    const int8_t* w = W.data_ptr<int8_t>(); const uint16_t* s = (const uint16_t*)scale.data_ptr();   // bf16 (out, in / 64)
    split([&](int64_t t, int, int64_t r0, int64_t r1) { rows_int8(w, s, q[t], ys[t], r0, r1, in); });
  } else {
    std::vector<const float*> xs(T); for (int64_t t = 0; t < T; t++) xs[t] = X + t * in;
    const float* w = W.data_ptr<float>();
    split([&](int64_t t, int nt, int64_t r0, int64_t r1) {
      by_tokens(nt, [&](auto n) { rows_f32_t<decltype(n)::value>(w, &xs[t], &ys[t], r0, r1, in); });
    });
  }
}

// 8-lane fp32 helpers for the steps around the products (x86: every class has AVX2, FMA and F16C). They use the same
// instructions in every x86 class, so the classes' numbers stay the same
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define SMOLLM2_VEC8 1
static inline __m256 kv_load8(const float* p) { return _mm256_loadu_ps(p); }
static inline __m256 kv_load8(const at::Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
// e^x, 8 at a time, for x at most 88 (the softmax's x <= 0; SiLU's -g, clamped): x = n ln 2 + r with |r| <= ln 2 / 2
// (ln 2 in two parts, so n ln 2 is exact), e^r by a degree-7 polynomial (Cephes' expf coefficients), times 2^n built in
// the exponent bits. Within 2 ulp of e^x; below -87 it gives about 1e-38 instead of a subnormal; a NaN stays a NaN
static inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);                // max(a, x) returns x when x is a NaN
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  for (float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}
// the sums of 8 vectors' lanes, as one vector: lane i is v[i]'s sum
static inline __m256 hsum8(const __m256* v) {
  __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}
// the sum of one vector's lanes, in hsum8's order
static inline float sum8(__m256 v) { const __m256 vs[8] = {v, v, v, v, v, v, v, v}; return _mm256_cvtss_f32(hsum8(vs)); }
#endif

static void rmsnorm(const float* x, const float* w, float* out, int64_t d, float eps) {
  float ss = 0; int64_t i = 0;
#if defined(SMOLLM2_VEC8)
  if (d % 64 == 0) {                                   // 8 sums of 8 lanes each, not one long chain of additions
    __m256 a[8];
    for (auto& v : a) v = _mm256_setzero_ps();
    for (; i < d; i += 64)
      for (int k = 0; k < 8; k++) { __m256 v = _mm256_loadu_ps(x + i + 8 * k); a[k] = _mm256_fmadd_ps(v, v, a[k]); }
    __m256 t = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])),
                             _mm256_add_ps(_mm256_add_ps(a[4], a[5]), _mm256_add_ps(a[6], a[7])));
    ss = sum8(t);
  }
#endif
  for (; i < d; i++) ss += x[i] * x[i];
  float r = 1.0f / std::sqrt(ss / d + eps);
  for (int64_t i = 0; i < d; i++) out[i] = w[i] * (x[i] * r);
}

// a = silu(g) * u = g / (1 + e^-g) * u, n of each
static void silu_mul(const float* g, const float* u, float* a, int64_t n) {
  int64_t i = 0;
#if defined(SMOLLM2_VEC8)
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(g + i);
    __m256 e = exp8(_mm256_min_ps(_mm256_sub_ps(_mm256_setzero_ps(), v), _mm256_set1_ps(88.0f)));   // e^-g, at most e^88
    _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), _mm256_loadu_ps(u + i)));
  }
#endif
  for (; i < n; i++) a[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

static void rope(float* v, const float* cos, const float* sin, int64_t hd) {  // rotate_half: pairs (i, i + hd/2)
  for (int64_t i = 0; i < hd / 2; i++) {
    float a = v[i], b = v[i + hd / 2];
    v[i] = a * cos[i] - b * sin[i]; v[i + hd / 2] = b * cos[i] + a * sin[i];
  }
}

static const int64_t PARALLEL_ATTENTION_FROM = 128;  // positions

// The KV cache holds fp32 (an fp32 model: exact) or fp16 values (every other precision, as llama.cpp's default cache):
// at 2,000 positions a token reads 92 MB of fp32 keys and values, 46 MB of fp16 ones. The attention's arithmetic is fp32
// either way: a stored fp16 value is widened as it is read.
static inline void kv_put(float* d, const float* s, int64_t n) { std::memcpy(d, s, n * 4); }
static inline void kv_put(at::Half* d_, const float* s, int64_t n) {
  uint16_t* d = (uint16_t*)d_; int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i*)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; i++) { at::Half h(s[i]); std::memcpy(d + i, &h, 2); }
}
static inline float kv_dot(const float* q, const float* k, int64_t n) { return dot(q, k, n); }
static inline float kv_dot(const float* q, const at::Half* k_, int64_t n) {
  const uint16_t* k = (const uint16_t*)k_; int64_t i = 0; float r = 0;
#if defined(__F16C__)
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(k + i))), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(k + i + 8))), s1);
  }
  __m256 s = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h)); r = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
#endif
  for (; i < n; i++) r += q[i] * half_to_float(k[i]);
  return r;
}
static inline void kv_axpy(float* o, float w, const float* v, int64_t n) { for (int64_t e = 0; e < n; e++) o[e] += w * v[e]; }
static inline void kv_axpy(float* o, float w, const at::Half* v_, int64_t n) {
  const uint16_t* v = (const uint16_t*)v_; int64_t e = 0;
#if defined(__F16C__)
  __m256 wv = _mm256_set1_ps(w);
  for (; e + 8 <= n; e += 8)
    _mm256_storeu_ps(o + e, _mm256_fmadd_ps(wv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(v + e))), _mm256_loadu_ps(o + e)));
#endif
  for (; e < n; e++) o[e] += w * half_to_float(v[e]);
}
// fn(K, V) with the caches' element type (float or at::Half)
template <typename F> static void with_kv(const at::Tensor& kc, const at::Tensor& vc, F fn) {
  TORCH_CHECK(kc.scalar_type() == vc.scalar_type() && (kc.scalar_type() == at::kFloat || kc.scalar_type() == at::kHalf),
              "the KV cache: keys and values both fp32 or both fp16");
  if (kc.scalar_type() == at::kHalf) fn(kc.data_ptr<at::Half>(), vc.data_ptr<at::Half>());
  else fn(kc.data_ptr<float>(), vc.data_ptr<float>());
}
// query head qj against positions 0..p of its KV head (Kj, Vj: (S, hd)): the attention's output into o. The plain
// loop: ARM, and head sizes that are not a multiple of 8
template <typename KV> static void attend(const float* qj, const KV* Kj, const KV* Vj, int64_t p, int64_t hd, float inv_sqrt,
                                          float* sc, float* o) {
  float m = -INFINITY, z = 0;
  for (int64_t u = 0; u <= p; u++) { sc[u] = kv_dot(qj, Kj + u * hd, hd) * inv_sqrt; m = std::max(m, sc[u]); }
  for (int64_t u = 0; u <= p; u++) { sc[u] = std::exp(sc[u] - m); z += sc[u]; }
  std::fill(o, o + hd, 0.0f);
  for (int64_t u = 0; u <= p; u++) kv_axpy(o, sc[u] / z, Vj + u * hd, hd);
}

#if defined(SMOLLM2_VEC8)
// G query heads that share one KV head (q: G rows of hd, one after another, as qkv holds them) against positions 0..p:
// their outputs into o (G rows of hd). Each key and value row is read and widened once for the G heads; a position's
// G products stay in vectors and 8 positions' sums are made together (hsum8); e^x 8 at a time. G is a template
// parameter so that the G * 8 partial sums stay in registers. sc: G * (p + 8) floats. The same instructions in every
// x86 class (8-lane vectors), so every class gives the same numbers
template <int G, typename KV> static void attend_group(const float* q, const KV* Kj, const KV* Vj, int64_t p, int64_t hd,
                                                       float inv_sqrt, float* sc, float* o) {
  const int64_t n = p + 1, n8 = (n + 7) / 8 * 8, nv = hd / 8;
  __m256 part[G][8];
  for (int64_t u0 = 0; u0 < n; u0 += 8) {
    for (int uu = 0; uu < 8; uu++) {
      __m256 a[G];
      for (int h = 0; h < G; h++) a[h] = _mm256_setzero_ps();
      if (u0 + uu < n) {
        const KV* k = Kj + (u0 + uu) * hd;
        for (int64_t c = 0; c < nv; c++) {
          __m256 kv = kv_load8(k + 8 * c);
          for (int h = 0; h < G; h++) a[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * hd + 8 * c), kv, a[h]);
        }
      }
      for (int h = 0; h < G; h++) part[h][uu] = a[h];
    }
    for (int64_t h = 0; h < G; h++) _mm256_storeu_ps(sc + h * n8 + u0, _mm256_mul_ps(hsum8(part[h]), _mm256_set1_ps(inv_sqrt)));
  }
  float inv_z[G];
  for (int64_t h = 0; h < G; h++) {
    float* s = sc + h * n8; float m = -INFINITY;
    for (int64_t u = 0; u < n; u++) m = std::max(m, s[u]);
    __m256 mv = _mm256_set1_ps(m), zv = _mm256_setzero_ps();
    for (int64_t u = 0; u < n8; u += 8) {
      __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + u), mv));
      if (u + 8 > n) e = _mm256_blendv_ps(_mm256_setzero_ps(), e, _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                             _mm256_set1_epi32(int(n - u)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))));   // past p: 0
      _mm256_storeu_ps(s + u, e); zv = _mm256_add_ps(zv, e);
    }
    inv_z[h] = 1.0f / sum8(zv);
  }
  for (int64_t c0 = 0; c0 < nv; c0 += 4) {                          // 32 of the head's values at a time: G * 4 sums in registers
    const int64_t nc = std::min<int64_t>(4, nv - c0);
    __m256 acc[G][4];
    for (int64_t h = 0; h < G; h++) for (int64_t c = 0; c < 4; c++) acc[h][c] = _mm256_setzero_ps();
    for (int64_t u = 0; u < n; u++) {
      const KV* v = Vj + u * hd + 8 * c0; __m256 vv[4];
      for (int64_t c = 0; c < nc; c++) vv[c] = kv_load8(v + 8 * c);
      for (int64_t h = 0; h < G; h++) {
        __m256 w = _mm256_set1_ps(sc[h * n8 + u]);
        for (int64_t c = 0; c < nc; c++) acc[h][c] = _mm256_fmadd_ps(w, vv[c], acc[h][c]);
      }
    }
    for (int64_t h = 0; h < G; h++)
      for (int64_t c = 0; c < nc; c++) _mm256_storeu_ps(o + h * hd + 8 * (c0 + c), _mm256_mul_ps(acc[h][c], _mm256_set1_ps(inv_z[h])));
  }
}
// query heads j0 .. j0 + G - 1 (sharing one KV head) of one token against positions 0..p: up to 4 heads at a time where
// the class has 8-lane vectors, else each head alone. sc: min(G, 4) * (p + 8) floats
template <typename KV> static void attend_heads(const float* q, int64_t G, const KV* Kj, const KV* Vj, int64_t p, int64_t hd,
                                                float inv_sqrt, float* sc, float* o) {
  if (hd % 8 == 0)
    for (int64_t h = 0; h < G; h += 4) {
      const float* qh = q + h * hd; float* oh = o + h * hd;
      switch (std::min<int64_t>(4, G - h)) {
        case 1: attend_group<1>(qh, Kj, Vj, p, hd, inv_sqrt, sc, oh); break;
        case 2: attend_group<2>(qh, Kj, Vj, p, hd, inv_sqrt, sc, oh); break;
        case 3: attend_group<3>(qh, Kj, Vj, p, hd, inv_sqrt, sc, oh); break;
        default: attend_group<4>(qh, Kj, Vj, p, hd, inv_sqrt, sc, oh);
      }
    }
  else for (int64_t h = 0; h < G; h++) attend(q + h * hd, Kj, Vj, p, hd, inv_sqrt, sc, o + h * hd);
}
#else
template <typename KV> static void attend_heads(const float* q, int64_t G, const KV* Kj, const KV* Vj, int64_t p, int64_t hd,
                                                float inv_sqrt, float* sc, float* o) {
  for (int64_t h = 0; h < G; h++) attend(q + h * hd, Kj, Vj, p, hd, inv_sqrt, sc, o + h * hd);
}
#endif

// T new tokens at positions pos0 .. pos0 + T - 1 through every layer: the same steps as SmolLM2.forward, for batch 1,
// with fp32 activations; the logits of the last one into `logits` (the LM head's rows). mats per layer: [q;k;v], o, [gate;up], down, then the LM head;
// scales (bf16, per row and block of 64) for int8 matrices.
static void run(const int64_t* tokens, int64_t T, int64_t pos0, const at::Tensor& embed, const at::Tensor& norms,
                const std::vector<at::Tensor>& mats, const std::vector<at::Tensor>& scales, const at::Tensor& cos,
                const at::Tensor& sin, at::Tensor& kc, at::Tensor& vc, int64_t nh, int64_t inter, double eps, float* logits) {
  int64_t L = kc.size(0), nkv = kc.size(1), S = kc.size(2), hd = kc.size(3), d = norms.size(1), last = pos0 + T - 1;
  TORCH_CHECK(T >= 1 && pos0 >= 0 && last < S, "positions ", pos0, "..", last, " are outside the KV cache of ", S, " positions");
  // one row per token; a row is as long as the matrix that reads it (padding columns stay 0) or writes it
  int64_t nin = cols(mats[QKV], scales[QKV]), nqkv = rows(mats[QKV], scales[QKV]), natt = cols(mats[O], scales[O]),
          nout = rows(mats[O], scales[O]), ngu = rows(mats[GATE_UP], scales[GATE_UP]), nact = cols(mats[DOWN], scales[DOWN]),
          ndown = rows(mats[DOWN], scales[DOWN]);
  std::vector<float> x(T * d), h(T * nin), qkv(T * nqkv), att(T * natt), tmp(T * std::max(nout, ndown)), gu(T * ngu),
                     act(T * nact);
  for (int64_t t = 0; t < T; t++) {
    int64_t token = tokens[t];
    TORCH_CHECK(token >= 0 && token < embed.size(0), "token ", token, " is outside the vocabulary of ", embed.size(0));
    if (is_blocks(embed)) embed_row(embed, token, &x[t * d], d);   // a GGUF embedding: its row's blocks
    else if (embed.scalar_type() == at::kBFloat16) {
      const uint16_t* e = (const uint16_t*)embed.data_ptr() + token * d;
      for (int64_t i = 0; i < d; i++) x[t * d + i] = widen_bf16(e[i]);
    } else std::memcpy(&x[t * d], embed.data_ptr<float>() + token * d, d * 4);
  }
  const float *nw = norms.data_ptr<float>(), *C = cos.data_ptr<float>(), *Sn = sin.data_ptr<float>();
  float inv_sqrt = 1.0f / std::sqrt((float)hd);
  with_kv(kc, vc, [&](auto* K, auto* V) {
  for (int64_t l = 0; l < L; l++) {
    each_row(T, [&](int64_t t) { rmsnorm(&x[t * d], nw + 2 * l * d, &h[t * nin], d, eps); });
    matmul(mats[PER_LAYER * l + QKV], scales[PER_LAYER * l + QKV], h.data(), qkv.data(), T);
    each_row(T, [&](int64_t t) {
      int64_t p = pos0 + t; const float *c = C + p * (hd / 2), *s = Sn + p * (hd / 2);
      float *q = &qkv[t * nqkv], *k = q + nh * hd, *v = k + nkv * hd;
      for (int64_t j = 0; j < nh; j++) rope(q + j * hd, c, s, hd);
      for (int64_t j = 0; j < nkv; j++) {                     // this position's keys/values into the cache
        rope(k + j * hd, c, s, hd);
        kv_put(K + ((l * nkv + j) * S + p) * hd, k + j * hd, hd);
        kv_put(V + ((l * nkv + j) * S + p) * hd, v + j * hd, hd);
      }
    });
    // the query heads of token t that share a KV head attend together to positions 0..pos0 + t of it. The (token, KV head)
    // pairs are split among the step's threads for a prompt, and for one token once the cache is long enough for reading
    // it to matter (waking the other threads costs a few microseconds)
    parallel_for(0, T * nkv, T > 1 || last >= PARALLEL_ATTENTION_FROM ? 1 : nkv, [&](int64_t i0, int64_t i1) {
      std::vector<float> sc(std::min<int64_t>(4, nh / nkv) * (last + 8));         // this thread's scores
      for (int64_t i = i0; i < i1; i++) {
        int64_t t = i / nkv, j = i % nkv * (nh / nkv), p = pos0 + t, g = l * nkv + i % nkv;
        attend_heads(&qkv[t * nqkv + j * hd], nh / nkv, K + g * S * hd, V + g * S * hd, p, hd, inv_sqrt, sc.data(), &att[t * natt + j * hd]);
      }
    });
    matmul(mats[PER_LAYER * l + O], scales[PER_LAYER * l + O], att.data(), tmp.data(), T);
    each_row(T, [&](int64_t t) {
      for (int64_t i = 0; i < d; i++) x[t * d + i] += tmp[t * nout + i];
      rmsnorm(&x[t * d], nw + (2 * l + 1) * d, &h[t * nin], d, eps);
    });
    matmul(mats[PER_LAYER * l + GATE_UP], scales[PER_LAYER * l + GATE_UP], h.data(), gu.data(), T);
    each_row(T, [&](int64_t t) {
      const float* g = &gu[t * ngu]; float* a = &act[t * nact];
      silu_mul(g, g + inter, a, inter);                     // silu(gate) * up
    });
    matmul(mats[PER_LAYER * l + DOWN], scales[PER_LAYER * l + DOWN], act.data(), tmp.data(), T);
    each_row(T, [&](int64_t t) { for (int64_t i = 0; i < d; i++) x[t * d + i] += tmp[t * ndown + i]; });
  }
  });
  std::vector<float> hl(cols(mats.back(), scales.back()));                 // the LM head reads the last token alone
  rmsnorm(&x[(T - 1) * d], nw + 2 * L * d, hl.data(), d, eps);
  matmul(mats.back(), scales.back(), hl.data(), logits, 1);
}

// The products of `decode_batch`: `matmul`, except that on AVX-512 an int8 matrix takes up to 4 rows (sequences) per
// load of each weight block and its scale, where `rows_int8` takes one. Each row's integer sums and float steps are those
// of `rows_int8` (the same instructions in the same order), so each row's result is bit for bit `matmul`'s.
#ifdef SMOLLM2_AVX512
template <int NT>
static void rows_int8_nt(const int8_t* W, const uint16_t* ws, const XInt8* const* q, float* const* y, int64_t r0, int64_t r1,
                         int64_t in) {
  const int64_t nb = in / 64;
  const __m512i zero = _mm512_setzero_si512();
#ifndef __AVX512VNNI__
  const __m512i ones = _mm512_set1_epi16(1);
#endif
  std::vector<float> wsf(4 * nb);
  for (int64_t r = r0; r < r1; r += 4) {
    __m512 a[4][NT]; for (int k = 0; k < 4; k++) for (int t = 0; t < NT; t++) a[k][t] = _mm512_setzero_ps();
    const int8_t* w = W + r * in;
    for (int64_t i = 0; i < 4 * nb; i++) wsf[i] = widen_bf16(ws[r * nb + i]);
    for (int64_t b = 0; b < nb; b++) {
      prefetch_ahead(w, 4 * in, b);
      for (int k = 0; k < 4; k++) {
        __m512i wv = _mm512_loadu_si512(w + k * in + 64 * b);
        __m512 sk = _mm512_set1_ps(wsf[k * nb + b]);
        for (int t = 0; t < NT; t++) {
          __m512i sw = _mm512_mask_sub_epi8(wv, q[t]->neg[b], zero, wv);
#ifdef __AVX512VNNI__
          __m512i dot = _mm512_dpbusd_epi32(zero, q[t]->ax[b], sw);
#else
          __m512i dot = _mm512_madd_epi16(_mm512_maddubs_epi16(q[t]->ax[b], sw), ones);
#endif
          a[k][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(q[t]->s[b], sk), a[k][t]);
        }
      }
    }
    for (int k = 0; k < 4; k++) for (int t = 0; t < NT; t++) y[t][r + k] = hsum(a[k][t]);
  }
}
#endif

static void matmul_rows(const at::Tensor& W, const at::Tensor& scale, const float* X, float* Y, int64_t T) {
#ifdef SMOLLM2_AVX512
  if (W.scalar_type() == at::kChar && T > 1) {
    int64_t out = W.size(0), in = W.size(1);
    TORCH_CHECK(scale.scalar_type() == at::kBFloat16 && scale.numel() == out * (in / 64), "int8 scales: bf16, one per row and block of 64");
    int64_t chunk = std::max<int64_t>(4, CHUNK_BYTES / in / 4 * 4);
    std::vector<XInt8> q(T); each_row(T, [&](int64_t t) { q[t] = prepare_int8(X + t * in, in); });
    std::vector<const XInt8*> qs(T); std::vector<float*> ys(T);
    for (int64_t t = 0; t < T; t++) { qs[t] = &q[t]; ys[t] = Y + t * out; }
    const int8_t* w = W.data_ptr<int8_t>(); const uint16_t* s = (const uint16_t*)scale.data_ptr();
    parallel_for(0, out / 4, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t c0 = 4 * b0; c0 < 4 * b1; c0 += chunk)
        for (int64_t t = 0; t < T; t += 4)
          by_tokens((int)std::min<int64_t>(4, T - t), [&](auto n) {
            rows_int8_nt<decltype(n)::value>(w, s, &qs[t], &ys[t], c0, std::min(c0 + chunk, 4 * b1), in);
          });
    });
    return;
  }
#endif
  matmul(W, scale, X, Y, T);
}

// Several sequences stepped together (continuous batching): R rows, row r the token tokens[r] of sequence seqs[r] at
// position positions[r], whose KV cache is kcs[seqs[r]], vcs[seqs[r]] (each sequence its own, of its own length). A
// sequence may have several rows, at consecutive positions in order (a chunk of its prompt): each attends to its own
// positions 0..p, as in `run`. Each weight matrix is read once for all R rows (`matmul` with T = R), and each row's sums
// are formed as for one token, so every sequence gets the logits it gets decoded alone, bit for bit. The logits of the
// rows where want[r] != 0, in row order: (rows wanted, vocab).
static void decode_rows(const int64_t* tokens, const int64_t* pos, const int64_t* seq, const bool* want, int64_t R,
                        const at::Tensor& embed, const at::Tensor& norms, const std::vector<at::Tensor>& mats,
                        const std::vector<at::Tensor>& scales, const at::Tensor& cos, const at::Tensor& sin,
                        const std::vector<at::Tensor>& kcs, const std::vector<at::Tensor>& vcs, int64_t nh, int64_t inter,
                        double eps, float* logits) {
  TORCH_CHECK(R >= 1, "no rows to decode");
  TORCH_CHECK(kcs.size() == vcs.size() && !kcs.empty(), "one K and one V cache per sequence");
  int64_t L = kcs[0].size(0), nkv = kcs[0].size(1), hd = kcs[0].size(3), d = norms.size(1), maxp = 0;
  std::vector<void*> Ks(kcs.size()), Vs(vcs.size()); std::vector<int64_t> Ss(kcs.size());
  for (size_t i = 0; i < kcs.size(); i++) {
    TORCH_CHECK(kcs[i].scalar_type() == kcs[0].scalar_type() && vcs[i].scalar_type() == kcs[0].scalar_type() && kcs[i].is_contiguous()
                && vcs[i].is_contiguous() && kcs[i].sizes() == vcs[i].sizes() && kcs[i].size(0) == L && kcs[i].size(1) == nkv
                && kcs[i].size(3) == hd, "KV caches: all of one dtype (fp32 or fp16), contiguous (L, n_kv, S, hd)");
    Ks[i] = kcs[i].data_ptr(); Vs[i] = vcs[i].data_ptr(); Ss[i] = kcs[i].size(2);
  }
  for (int64_t r = 0; r < R; r++) {
    TORCH_CHECK(seq[r] >= 0 && seq[r] < (int64_t)kcs.size(), "row ", r, ": sequence ", seq[r], " has no cache");
    TORCH_CHECK(pos[r] >= 0 && pos[r] < Ss[seq[r]], "row ", r, ": position ", pos[r], " is outside its KV cache of ", Ss[seq[r]], " positions");
    TORCH_CHECK(tokens[r] >= 0 && tokens[r] < embed.size(0), "token ", tokens[r], " is outside the vocabulary of ", embed.size(0));
    maxp = std::max(maxp, pos[r]);
  }
  int64_t nin = cols(mats[QKV], scales[QKV]), nqkv = rows(mats[QKV], scales[QKV]), natt = cols(mats[O], scales[O]),
          nout = rows(mats[O], scales[O]), ngu = rows(mats[GATE_UP], scales[GATE_UP]), nact = cols(mats[DOWN], scales[DOWN]),
          ndown = rows(mats[DOWN], scales[DOWN]);
  std::vector<float> x(R * d), h(R * nin), qkv(R * nqkv), att(R * natt), tmp(R * std::max(nout, ndown)), gu(R * ngu),
                     act(R * nact);
  int etype = is_blocks(embed) ? ggml_type_of_row(embed.size(1), d) : 0;
  TORCH_CHECK(!is_blocks(embed) || etype > 0, "a GGUF embedding's rows of ", embed.size(1), " bytes hold no known format of ", d, " weights");
  for (int64_t r = 0; r < R; r++) {
    if (etype) embed_row(embed, tokens[r], &x[r * d], d);   // a GGUF embedding
    else if (embed.scalar_type() == at::kBFloat16) {
      const uint16_t* e = (const uint16_t*)embed.data_ptr() + tokens[r] * d;
      for (int64_t i = 0; i < d; i++) x[r * d + i] = widen_bf16(e[i]);
    } else std::memcpy(&x[r * d], embed.data_ptr<float>() + tokens[r] * d, d * 4);
  }
  const float *nw = norms.data_ptr<float>(), *C = cos.data_ptr<float>(), *Sn = sin.data_ptr<float>();
  TORCH_CHECK(maxp < cos.size(0), "position ", maxp, " is beyond the rotary table of ", cos.size(0));
  float inv_sqrt = 1.0f / std::sqrt((float)hd);
  with_kv(kcs[0], vcs[0], [&](auto* K0, auto*) {
  using KV = std::remove_pointer_t<decltype(K0)>;
  for (int64_t l = 0; l < L; l++) {
    each_row(R, [&](int64_t r) { rmsnorm(&x[r * d], nw + 2 * l * d, &h[r * nin], d, eps); });
    matmul_rows(mats[PER_LAYER * l + QKV], scales[PER_LAYER * l + QKV], h.data(), qkv.data(), R);
    each_row(R, [&](int64_t r) {
      int64_t p = pos[r], S = Ss[seq[r]]; const float *c = C + p * (hd / 2), *s = Sn + p * (hd / 2);
      float *q = &qkv[r * nqkv], *k = q + nh * hd, *v = k + nkv * hd;
      KV *K = (KV*)Ks[seq[r]], *V = (KV*)Vs[seq[r]];
      for (int64_t j = 0; j < nh; j++) rope(q + j * hd, c, s, hd);
      for (int64_t j = 0; j < nkv; j++) {
        rope(k + j * hd, c, s, hd);
        kv_put(K + ((l * nkv + j) * S + p) * hd, k + j * hd, hd);
        kv_put(V + ((l * nkv + j) * S + p) * hd, v + j * hd, hd);
      }
    });
    parallel_for(0, R * nkv, R > 1 || maxp >= PARALLEL_ATTENTION_FROM ? 1 : nkv, [&](int64_t i0, int64_t i1) {
      std::vector<float> sc(std::min<int64_t>(4, nh / nkv) * (maxp + 8));
      for (int64_t i = i0; i < i1; i++) {
        int64_t r = i / nkv, j = i % nkv * (nh / nkv), p = pos[r], S = Ss[seq[r]], g = l * nkv + i % nkv;
        attend_heads(&qkv[r * nqkv + j * hd], nh / nkv, (const KV*)Ks[seq[r]] + g * S * hd, (const KV*)Vs[seq[r]] + g * S * hd, p, hd,
                     inv_sqrt, sc.data(), &att[r * natt + j * hd]);
      }
    });
    matmul_rows(mats[PER_LAYER * l + O], scales[PER_LAYER * l + O], att.data(), tmp.data(), R);
    each_row(R, [&](int64_t r) {
      for (int64_t i = 0; i < d; i++) x[r * d + i] += tmp[r * nout + i];
      rmsnorm(&x[r * d], nw + (2 * l + 1) * d, &h[r * nin], d, eps);
    });
    matmul_rows(mats[PER_LAYER * l + GATE_UP], scales[PER_LAYER * l + GATE_UP], h.data(), gu.data(), R);
    each_row(R, [&](int64_t r) {
      const float* g = &gu[r * ngu]; float* a = &act[r * nact];
      silu_mul(g, g + inter, a, inter);
    });
    matmul_rows(mats[PER_LAYER * l + DOWN], scales[PER_LAYER * l + DOWN], act.data(), tmp.data(), R);
    each_row(R, [&](int64_t r) { for (int64_t i = 0; i < d; i++) x[r * d + i] += tmp[r * ndown + i]; });
  }
  });
  int64_t nh_in = cols(mats.back(), scales.back()), W = 0;    // the LM head reads the wanted rows, together
  std::vector<float> hl;
  for (int64_t r = 0; r < R; r++) if (want[r]) { hl.resize((W + 1) * nh_in, 0.0f); rmsnorm(&x[r * d], nw + 2 * L * d, &hl[W * nh_in], d, eps); W++; }
  if (W) matmul_rows(mats.back(), scales.back(), hl.data(), logits, W);
}

// One block of `bytes` for all the packed weights, aligned to 2 MB and marked for transparent huge pages (Linux, with THP
// in `madvise` or `always` mode). A step reads every weight once, 540 MB in fp32: on 4 KB pages that is a TLB miss and a
// page walk every 4 KB, on 2 MB pages one every 2 MB. On the Zen 3 EPYC, huge pages took fp32 decoding from 26-28 to
// 32-33 tokens/s, and this block bf16 from 54 to 61 and int8 from 81 to 87.
// Elsewhere, or with no huge page free, the block gets ordinary pages and only the speed differs.
static void* huge_page_alloc(int64_t bytes) {
  const size_t align = size_t(2) << 20, size = (size_t(bytes) + align - 1) / align * align;
  void* p = nullptr;
#if defined(_WIN32)
  p = _aligned_malloc(size, align);
#else
  if (posix_memalign(&p, align, size) != 0) p = nullptr;
#endif
  TORCH_CHECK(p != nullptr, "could not allocate ", bytes, " bytes for the packed weights");
#ifdef __linux__
  madvise(p, size, MADV_HUGEPAGE);  // a hint; refused or ignored, the pages are ordinary ones
#endif
  return p;
}
static void huge_page_free(void* p) {
#if defined(_WIN32)
  _aligned_free(p);
#else
  std::free(p);
#endif
}

#ifndef SMOLLM2_NO_TORCH
// x (T, in) fp32 times a repacked GGUF matrix of spec [type, in, 16, out]: (T, out), the step's own product (a prompt
// through PyTorch's side of a GGUF model, and the kernel checks of tests/test_gguf_native.py)
at::Tensor block_linear(at::Tensor x, at::Tensor W, at::Tensor spec) {
  at::Tensor X = x.to(at::kFloat).contiguous().view({-1, x.size(-1)}), Wc = W.contiguous();
  TORCH_CHECK(is_blocks(Wc) && Wc.dim() == 2, "block_linear: W uint8 (out rounded up to 16, row bytes) repacked, or (out, row bytes)");
  if (!takes_kquants(spec)) check_blocks(Wc, spec);   // (repacked_segments: its parts checked)
  TORCH_CHECK(X.size(1) == spec.data_ptr<int64_t>()[1], "block_linear: x (T, in) of in = ", spec.data_ptr<int64_t>()[1]);
  at::Tensor Y = at::empty({X.size(0), rows(Wc, spec)}, at::kFloat);
  matmul_blocks(Wc, spec, X.data_ptr<float>(), Y.data_ptr<float>(), X.size(0));
  return Y;
}

// rows of a GGUF matrix as fp32 (rows, n): the embedding's lookup, for PyTorch's side. `type` the matrix's ggml type, or
// -1: read off its row bytes (Q4_0 and Q4_K rows of n weights are the same length: those read as Q4_0). Q4_0, Q4_1, Q5_0
// and Q8_0 matrices are repacked (out rounded up to 16, row bytes); the K-quants in the file's layout (out, row bytes)
at::Tensor block_rows(at::Tensor W, at::Tensor rows, int64_t n, int64_t type) {
  if (type < 0) type = ggml_type_of_row(W.size(1), n);
  TORCH_CHECK(is_blocks(W) && W.dim() == 2 && W.is_contiguous() && type > 0 && n % ggml_block_weights((int)type) == 0
              && W.size(1) == n / ggml_block_weights((int)type) * ggml_block_bytes((int)type) && (!is_repacked_type((int)type) || W.size(0) % GROUP == 0),
              "block_rows: W uint8 (out, row bytes) of a known format of ", n, " weights (Q4_0, Q4_1, Q5_0, Q8_0: repacked, out a multiple of 16)");
  at::Tensor r = rows.to(at::kLong).contiguous().view(-1), Y = at::empty({r.numel(), n}, at::kFloat);
  for (int64_t i = 0; i < r.numel(); i++) {
    int64_t k = r.data_ptr<int64_t>()[i]; TORCH_CHECK(k >= 0 && k < W.size(0), "row ", k, " is outside ", W.size(0));
    block_row((int)type, W, k, Y.data_ptr<float>() + i * n, n);
  }
  return Y;
}

// a GGUF matrix's rows (out, row bytes) as the file stores them, repacked for the step's kernels: (out rounded up to 16,
// row bytes), each group of 16 rows interleaved block by block (gguf_kernels.h)
at::Tensor repack_blocks(at::Tensor W, int64_t type, int64_t in) {
  at::Tensor Wc = W.contiguous();
  TORCH_CHECK(is_blocks(Wc) && Wc.dim() == 2 && is_repacked_type((int)type) && in % QK == 0
              && Wc.size(1) == in / QK * ggml_block_bytes((int)type),
              "repack_blocks: W uint8 (out, row bytes) of Q4_0, Q4_1, Q5_0 or Q8_0 blocks of ", in, " weights per row");
  int64_t out = Wc.size(0);
  at::Tensor R = at::empty({(out + GROUP - 1) / GROUP * GROUP, Wc.size(1)}, at::kByte);
  repack_rows((int)type, Wc.data_ptr<uint8_t>(), out, Wc.size(1), R.data_ptr<uint8_t>());
  return R;
}

std::string isa() { return ISA; }

// One new token through every layer: its logits (vocab,)
at::Tensor decode_step(int64_t token, int64_t pos, at::Tensor embed, at::Tensor norms, std::vector<at::Tensor> mats,
                       std::vector<at::Tensor> scales, at::Tensor cos, at::Tensor sin, at::Tensor kc, at::Tensor vc,
                       int64_t nh, int64_t inter, double eps) {
  at::Tensor logits = at::empty({rows(mats.back(), scales.back())}, at::kFloat);
  run(&token, 1, pos, embed, norms, mats, scales, cos, sin, kc, vc, nh, inter, eps, logits.data_ptr<float>());
  return logits;
}

// A prompt's tokens (T,) at positions pos .. pos + T - 1 through every layer together, filling the KV cache: the
// logits of the last one
at::Tensor prefill(at::Tensor tokens, int64_t pos, at::Tensor embed, at::Tensor norms, std::vector<at::Tensor> mats,
                   std::vector<at::Tensor> scales, at::Tensor cos, at::Tensor sin, at::Tensor kc, at::Tensor vc,
                   int64_t nh, int64_t inter, double eps) {
  at::Tensor t = tokens.to(at::kLong).contiguous().view(-1), logits = at::empty({rows(mats.back(), scales.back())}, at::kFloat);
  run(t.data_ptr<int64_t>(), t.numel(), pos, embed, norms, mats, scales, cos, sin, kc, vc, nh, inter, eps, logits.data_ptr<float>());
  return logits;
}

// `decode_rows` on tensors: the logits of the rows where want != 0, (rows wanted, vocab)
at::Tensor decode_batch(at::Tensor tokens, at::Tensor positions, at::Tensor seqs, at::Tensor want, at::Tensor embed,
                        at::Tensor norms, std::vector<at::Tensor> mats, std::vector<at::Tensor> scales, at::Tensor cos,
                        at::Tensor sin, std::vector<at::Tensor> kcs, std::vector<at::Tensor> vcs, int64_t nh, int64_t inter,
                        double eps) {
  at::Tensor tk = tokens.to(at::kLong).contiguous().view(-1), ps = positions.to(at::kLong).contiguous().view(-1),
             sq = seqs.to(at::kLong).contiguous().view(-1), wn = want.to(at::kBool).contiguous().view(-1);
  int64_t R = tk.numel();
  TORCH_CHECK(ps.numel() == R && sq.numel() == R && wn.numel() == R, "tokens, positions, seqs and want: one entry per row");
  at::Tensor logits = at::empty({wn.sum().item<int64_t>(), rows(mats.back(), scales.back())}, at::kFloat);
  decode_rows(tk.data_ptr<int64_t>(), ps.data_ptr<int64_t>(), sq.data_ptr<int64_t>(), wn.data_ptr<bool>(), R, embed, norms, mats,
              scales, cos, sin, kcs, vcs, nh, inter, eps, logits.data_ptr<float>());
  return logits;
}

at::Tensor huge_page_empty(int64_t bytes) {
  return torch::from_blob(huge_page_alloc(bytes), {bytes}, huge_page_free, at::TensorOptions().dtype(at::kByte));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_step", &decode_step, "one token through every layer: the logits (vocab,)");
  m.def("prefill", &prefill, "a prompt's tokens through every layer together, filling the KV cache: the last one's logits (vocab,)");
  // without Python's lock while it runs: a server's event loop streams the last step's tokens meanwhile
  m.def("decode_batch", &decode_batch, py::call_guard<py::gil_scoped_release>(),
        "rows of several sequences (each its own position and KV cache) through every layer together: the wanted rows' logits");
  m.def("layout", &layout, "the names of the packed matrices of one layer, in order");
  m.def("huge_page_empty", &huge_page_empty, "an uninitialized uint8 block on 2 MB pages where Linux gives them");
  m.def("block_linear", &block_linear, "x (T, in) times a GGUF matrix (repacked: spec [type, in, 16, out]; K-quants, mixed parts: [type, in], [-1, in, type, rows, ...]): (T, out)");
  m.def("block_rows", &block_rows, "rows of a GGUF matrix as fp32", py::arg("W"), py::arg("rows"), py::arg("n"), py::arg("type") = -1);
  m.def("repack_blocks", &repack_blocks, "a GGUF matrix's rows (out, row bytes) in the file's layout, repacked in groups of 16 rows");
  m.def("isa", &isa, "the instruction-set class this build was compiled for");
}
#else
// The C entry points of the build without PyTorch (smollm2_nb.serve.lean calls them through ctypes). Each returns 0, or 1
// with its one-line reason in smollm2_error(); a tensor is at::Tensor of torch_free.h, a view of the caller's memory.
static thread_local std::string last_error;
template <class F> static int guarded(const F& f) {
  try { f(); return 0; } catch (const std::exception& e) { last_error = e.what(); return 1; }
}
extern "C" {
const char* smollm2_isa() { return ISA; }
const char* smollm2_error() { return last_error.c_str(); }
void smollm2_set_threads(int n) { at::num_threads() = std::max(1, n); }
int smollm2_threads() { return at::get_num_threads(); }
const char* smollm2_layout() {   // layout()'s names, comma-separated
  static const std::string names = [] { std::string s; for (auto& n : layout()) s += (s.empty() ? "" : ",") + n; return s; }();
  return names.c_str();
}
void* smollm2_alloc(int64_t bytes) { void* p = nullptr; guarded([&] { p = huge_page_alloc(bytes); }); return p; }
void smollm2_free(void* p) { huge_page_free(p); }
// rows (out, row bytes) of Q4_0, Q4_1, Q5_0 or Q8_0 blocks as the file stores them into `dst` (out rounded up to 16, row bytes)
int smollm2_repack(const uint8_t* src, int64_t out, int64_t row_bytes, int64_t type, uint8_t* dst) {
  return guarded([&] {
    TORCH_CHECK(is_repacked_type((int)type) && row_bytes % ggml_block_bytes((int)type) == 0, "repack: rows of Q4_0, Q4_1, Q5_0 or Q8_0 blocks");
    repack_rows((int)type, src, out, row_bytes, dst);
  });
}
// `decode_rows`: logits (rows wanted, vocab) into `logits`
int smollm2_decode(const int64_t* tokens, const int64_t* positions, const int64_t* seqs, const uint8_t* want, int64_t R,
                   const at::Tensor* embed, const at::Tensor* norms, const at::Tensor* mats, const at::Tensor* scales, int64_t n_mats,
                   const at::Tensor* cos, const at::Tensor* sin, const at::Tensor* kcs, const at::Tensor* vcs, int64_t n_seqs,
                   int64_t nh, int64_t inter, double eps, float* logits) {
  return guarded([&] {
    TORCH_CHECK(n_mats % PER_LAYER == 1 && n_seqs >= 1, "matrices: ", int64_t(PER_LAYER), " per layer and the LM head; a cache per sequence");
    std::unique_ptr<bool[]> wb(new bool[R]);
    for (int64_t r = 0; r < R; r++) wb[r] = want[r] != 0;
    decode_rows(tokens, positions, seqs, wb.get(), R, *embed, *norms, std::vector<at::Tensor>(mats, mats + n_mats),
                std::vector<at::Tensor>(scales, scales + n_mats), *cos, *sin, std::vector<at::Tensor>(kcs, kcs + n_seqs),
                std::vector<at::Tensor>(vcs, vcs + n_seqs), nh, inter, eps, logits);
  });
}
}
#endif
