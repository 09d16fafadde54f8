// The batch-1 decoding step of SmolLM2 on a CPU: every layer of one token, from its embedding to the logits.
// Built by smollm2_nb.serve.decoders (torch.utils.cpp_extension.load) on first use; see nbs/serve/11_inference.ipynb.
// One source, compiled once per instruction-set class (smollm2_nb.serve.decoders picks the flags); the products for
// each class are in cpu_kernels.h.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include "cpu_kernels.h"
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#ifdef __linux__
#include <sys/mman.h>
#endif

// The packed weight matrices, in this order for each layer, then the LM head last. The Python side packs them by
// asking `layout()` for these names, so the order is written here once.
enum Mat : int64_t { QKV = 0, O = 1, GATE_UP = 2, DOWN = 3, PER_LAYER = 4 };
std::vector<std::string> layout() { return {"qkv", "o", "gate_up", "down"}; }

// y = W x, rows split among torch's threads (one parallel region per product)
static void matvec(const at::Tensor& W, const at::Tensor& scale, const float* x, float* y) {
  int64_t out = W.size(0), in = W.size(1);
  auto split = [&](auto rows) { at::parallel_for(0, out / 4, 1, [&](int64_t b0, int64_t b1) { rows(4 * b0, 4 * b1); }); };
  if (W.scalar_type() == at::kBFloat16) {
    XBf16 xb = prepare_bf16(x, in);
    const uint16_t* w = (const uint16_t*)W.data_ptr();
    split([&](int64_t r0, int64_t r1) { rows_bf16(w, xb, y, r0, r1, in); });
  } else if (W.scalar_type() == at::kChar) {
    TORCH_CHECK(scale.scalar_type() == at::kBFloat16 && scale.numel() == out * (in / 64), "int8 scales: bf16, one per row and block of 64");
    XInt8 q = prepare_int8(x, in);
    const int8_t* w = W.data_ptr<int8_t>(); const uint16_t* s = (const uint16_t*)scale.data_ptr();   // bf16 (out, in / 64)
    split([&](int64_t r0, int64_t r1) { rows_int8(w, s, q, y, r0, r1, in); });
  } else {
    const float* w = W.data_ptr<float>();
    split([&](int64_t r0, int64_t r1) { rows_f32(w, x, y, r0, r1, in); });
  }
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
// mats per layer: [q;k;v], o, [gate;up], down, then the LM head; scales (bf16, per row and block of 64) for int8 matrices.
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
