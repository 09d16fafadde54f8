// The few pieces of ATen the step uses, for its build without PyTorch (SMOLLM2_NO_TORCH: smollm2_nb.serve.lean compiles
// cpu_decode.cpp into a plain shared library and calls it through ctypes). A tensor here is a view of memory its caller
// owns: a pointer, a dtype in ATen's numbering, and up to 4 sizes, contiguous. The step reads no more of a tensor than that.
#pragma once
#include <cstdint>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <algorithm>
#include <vector>

namespace at {
enum ScalarType : int64_t { kByte = 0, kChar = 1, kLong = 4, kHalf = 5, kFloat = 6, kBool = 11, kBFloat16 = 15 };  // ATen's codes

// fp16 storage with ATen's conversions: from fp32 rounded to nearest, ties to even (as c10::Half and F16C's vcvtps2ph)
struct Half {
  uint16_t x;
  Half() = default;
  Half(float f) {
    uint32_t u; std::memcpy(&u, &f, 4);
    uint32_t s = (u >> 16) & 0x8000, a = u & 0x7FFFFFFF;
    if (a >= 0x7F800000) { x = uint16_t(s | 0x7C00 | (a > 0x7F800000 ? 0x200 : 0)); return; }   // inf, NaN (quiet)
    if (a >= 0x477FF000) { x = uint16_t(s | 0x7C00); return; }                                    // rounds past 65504: inf
    if (a < 0x38800000) {                                   // below fp16's smallest normal: a subnormal, in units of 2^-24
      float v; std::memcpy(&v, &a, 4); v += 0.5f;           // the float addition rounds to nearest even at 2^-24
      uint32_t b; std::memcpy(&b, &v, 4); x = uint16_t(s | (b - 0x3F000000)); return;
    }
    uint32_t odd = (a >> 13) & 1; a += 0xC8000FFF + odd;    // re-bias the exponent (-112 << 23) and round the 13 dropped bits
    x = uint16_t(s | (a >> 13));
  }
};

struct Tensor {   // plain data: the C entry points take arrays of these
  void* ptr; int64_t dtype; int64_t ndim; int64_t shape[4];
  ScalarType scalar_type() const { return ScalarType(dtype); }
  int64_t dim() const { return ndim; }
  int64_t size(int64_t i) const { return shape[i < 0 ? i + ndim : i]; }
  int64_t numel() const { int64_t n = 1; for (int64_t i = 0; i < ndim; i++) n *= shape[i]; return n; }
  std::vector<int64_t> sizes() const { return std::vector<int64_t>(shape, shape + ndim); }
  int64_t element_size() const { return dtype == kLong ? 8 : dtype == kFloat ? 4 : dtype == kHalf || dtype == kBFloat16 ? 2 : 1; }
  bool is_contiguous() const { return true; }
  void* data_ptr() const { return ptr; }
  template <typename T> T* data_ptr() const { return static_cast<T*>(ptr); }
};

inline int& num_threads() { static int n = std::max(1u, std::thread::hardware_concurrency()); return n; }
inline int get_num_threads() { return num_threads(); }
}  // namespace at

template <typename... A> std::string check_message(const A&... a) { std::ostringstream s; (s << ... << a); return s.str(); }
#define TORCH_CHECK(cond, ...) do { if (!(cond)) throw std::runtime_error(check_message(__VA_ARGS__)); } while (0)
