// Scaled dot-product attention of every head at inference, as an XLA FFI custom call (CPU).
//
// context[b, t, h*D:(h+1)*D] = sum_s p[b, h, t, s] * v[b, s, h], where
// p[b, h, t, :] = softmax((q[b, t, h] / sqrt(D)) . k[b, s, h] + bias[b, s]) over keys s,
// q, k, v read in place from the fused projection [B*T, 3*N*D] (q | k | v, heads side by
// side; its bias [3*N*D] added as they are read) and the context written as [B*T, N*D]: no [B, N, T, D] transposes in or out, and
// no [B, N, T, T] tensor in memory (one query row of scores at a time, in registers and
// L1). Why: XLA:CPU runs q.k, softmax and p.v as one YNNPACK fusion at ~8 ms per layer for
// 6 heads at batch 32 (benchmarks/results/runtime.md, session 14), several times its FLOPs.
//
// Per (batch row, head): K transposed to [D][T] and V copied to [T][D] (contiguous, in L1),
// then for each query: the T scores as 16-wide vectors (D FMAs each), their max, exp (a
// degree-6 polynomial after Cody-Waite reduction, ~1e-7 relative), sum, and the context as
// sum_s e_s v_s / sum_s e_s. Needs D % 16 == 0; the Python side uses XLA otherwise.

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using bertjax::ParallelFor;
using bertjax::Scratch;

namespace {

// e^x, x <= 0 here (scores minus their max): 2^n * e^r with n = round(x / ln 2) and
// |r| <= ln(2) / 2, e^r by its Taylor polynomial to degree 6. Below -104 the result
// underflows to 0 (as float32's exp), so masked keys get exactly nothing.
inline __m512 Exp(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln 2, high part
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);  // and low part
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __mmask16 Tail(int64_t left) {  // the first min(max(left, 0), 16) lanes
  if (left <= 0) return 0;
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

// One (batch row b, head h): T queries against T keys; DV = D / 16 vectors per row of V.
// Scores: 128 keys at a time in 8 independent accumulators (a single chain of D FMAs
// would wait on the FMA latency); context: 4 keys at a time, 4 x DV accumulators.
template <int DV>
void Head(const float* qkv, const float* bias, const float* qkv_bias, float* out, int64_t b,
          int64_t h, int64_t t, int64_t heads, float* kt, float* v, float* s) {
  constexpr int64_t d = 16 * DV;
  const int64_t width = heads * d, ld = 3 * width;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const float* rows = qkv + b * t * ld;
  const float* bq = qkv_bias + h * d;
  const float* bk = qkv_bias + width + h * d;
  const float* bv = qkv_bias + 2 * width + h * d;
  for (int64_t j = 0; j < t; ++j) {  // K^T [d][t] and V [t][d], their biases added
    const float* kj = rows + j * ld + width + h * d;
    for (int64_t e = 0; e < d; ++e) kt[e * t + j] = kj[e] + bk[e];
    const float* vj = rows + j * ld + 2 * width + h * d;
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c) {
      _mm512_storeu_ps(v + j * d + 16 * c, _mm512_add_ps(_mm512_loadu_ps(vj + 16 * c),
                                                         _mm512_loadu_ps(bv + 16 * c)));
    }
  }
  const float* key_bias = bias + b * t;
  float qs[d];
  for (int64_t i = 0; i < t; ++i) {
    const float* qi = rows + i * ld + h * d;
    for (int64_t e = 0; e < d; ++e) qs[e] = (qi[e] + bq[e]) * scale;
    __m512 top = _mm512_set1_ps(-INFINITY);
    for (int64_t j0 = 0; j0 < t; j0 += 128) {  // scores of keys j0 .. j0 + 127
      __mmask16 m[8];
      __m512 acc[8];
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) {
        m[c] = Tail(t - j0 - 16 * c);
        acc[c] = _mm512_maskz_loadu_ps(m[c], key_bias + j0 + 16 * c);
      }
      for (int64_t e = 0; e < d; ++e) {
        const __m512 q = _mm512_set1_ps(qs[e]);
        const float* row = kt + e * t + j0;
#pragma GCC unroll 8
        for (int c = 0; c < 8; ++c) {
          acc[c] = _mm512_fmadd_ps(q, _mm512_maskz_loadu_ps(m[c], row + 16 * c), acc[c]);
        }
      }
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) {
        _mm512_mask_storeu_ps(s + j0 + 16 * c, m[c], acc[c]);
        top = _mm512_mask_max_ps(top, m[c], top, acc[c]);
      }
    }
    const __m512 peak = _mm512_set1_ps(_mm512_reduce_max_ps(top));
    __m512 total = _mm512_setzero_ps();
    for (int64_t j = 0; j < t; j += 16) {
      const __mmask16 m = Tail(t - j);
      const __m512 e =
          _mm512_maskz_mov_ps(m, Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), peak)));
      _mm512_mask_storeu_ps(s + j, m, e);
      total = _mm512_add_ps(total, e);
    }
    for (int64_t j = t; j < (t + 3) / 4 * 4; ++j) s[j] = 0.0f;  // the last group of 4
    const float inverse = 1.0f / _mm512_reduce_add_ps(total);
    __m512 acc[4][DV];
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u)
#pragma GCC unroll 8
      for (int c = 0; c < DV; ++c) acc[u][c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < t; j += 4) {
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) {
        const __m512 p = _mm512_set1_ps(s[j + u]);
        const float* vj = v + std::min(j + u, t - 1) * d;  // s is 0 past t
#pragma GCC unroll 8
        for (int c = 0; c < DV; ++c) acc[u][c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(vj + 16 * c), acc[u][c]);
      }
    }
    float* o = out + (b * t + i) * width + h * d;
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c) {
      const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[0][c], acc[1][c]),
                                       _mm512_add_ps(acc[2][c], acc[3][c]));
      _mm512_storeu_ps(o + c * 16, _mm512_mul_ps(sum, _mm512_set1_ps(inverse)));
    }
  }
}

using HeadFn = void (*)(const float*, const float*, const float*, float*, int64_t, int64_t,
                        int64_t, int64_t, float*, float*, float*);
constexpr HeadFn kHeads[9] = {nullptr,  Head<1>, Head<2>, Head<3>, Head<4>,
                              Head<5>, Head<6>, Head<7>, Head<8>};

ffi::Error AttentionImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv, ffi::Buffer<ffi::F32> bias,
                         ffi::Buffer<ffi::F32> qkv_bias, ffi::ResultBuffer<ffi::F32> out,
                         int64_t heads) {
  const auto qd = qkv.dimensions(), bd = bias.dimensions();
  if (qd.size() != 2 || bd.size() != 2 || heads <= 0 || qd[1] % (3 * heads) != 0) {
    return ffi::Error::InvalidArgument("attention: qkv [B*T, 3*N*D], bias [B, T], heads N");
  }
  const int64_t batch = bd[0], t = bd[1], d = qd[1] / (3 * heads);
  if (qd[0] != batch * t || d % 16 != 0 || d > 128) {
    return ffi::Error::InvalidArgument("attention: needs qkv rows = B*T and D % 16 == 0, D <= 128");
  }
  if (qkv_bias.element_count() != qd[1]) {
    return ffi::Error::InvalidArgument("attention: qkv_bias [3*N*D] expected");
  }
  const float* q = qkv.typed_data();
  const float* projection_bias = qkv_bias.typed_data();
  const float* key_bias = bias.typed_data();
  float* o = out->typed_data();
  ParallelFor(pool, batch * heads, 1, [&](int64_t item) {
    thread_local std::vector<float> kt_buffer, v_buffer, s_buffer;
    float* kt = Scratch(kt_buffer, d * t);
    float* v = Scratch(v_buffer, t * d);
    float* s = Scratch(s_buffer, t + 128);
    kHeads[d / 16](q, key_bias, projection_bias, o, item / heads, item % heads, t, heads, kt, v, s);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BertjaxAttention, AttentionImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("heads"));
