// Convolution and pooling on the CPU. Convolution is im2col + GEMM per sample (Caffe's way):
// the column buffer [C*kh*kw, OH*OW] turns the convolution into one OpenBLAS GEMM, and its
// backward into two GEMMs and a col2im.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/cpu_ops.h"

namespace tern::cpu {
namespace {

// col[(c*kh + i)*kw + j][oy*ow + ox] = x[c][oy*stride - pad + i][ox*stride - pad + j] (0 outside).
void im2col(const float* x, float* col, const ConvDims& d) {
  for (int64_t c = 0; c < d.c; ++c)
    for (int64_t i = 0; i < d.kh; ++i)
      for (int64_t j = 0; j < d.kw; ++j) {
        float* row = col + ((c * d.kh + i) * d.kw + j) * d.oh * d.ow;
        for (int64_t oy = 0; oy < d.oh; ++oy) {
          const int64_t y = oy * d.stride - d.pad + i;
          for (int64_t ox = 0; ox < d.ow; ++ox) {
            const int64_t xx = ox * d.stride - d.pad + j;
            row[oy * d.ow + ox] =
                (y >= 0 && y < d.h && xx >= 0 && xx < d.w) ? x[(c * d.h + y) * d.w + xx] : 0.0f;
          }
        }
      }
}

// The adjoint of im2col: dx[c][y][x] += every column entry that read it.
void col2im(const float* col, float* dx, const ConvDims& d) {
  std::memset(dx, 0, sizeof(float) * d.c * d.h * d.w);
  for (int64_t c = 0; c < d.c; ++c)
    for (int64_t i = 0; i < d.kh; ++i)
      for (int64_t j = 0; j < d.kw; ++j) {
        const float* row = col + ((c * d.kh + i) * d.kw + j) * d.oh * d.ow;
        for (int64_t oy = 0; oy < d.oh; ++oy) {
          const int64_t y = oy * d.stride - d.pad + i;
          if (y < 0 || y >= d.h) continue;
          for (int64_t ox = 0; ox < d.ow; ++ox) {
            const int64_t xx = ox * d.stride - d.pad + j;
            if (xx >= 0 && xx < d.w) dx[(c * d.h + y) * d.w + xx] += row[oy * d.ow + ox];
          }
        }
      }
}

}  // namespace

void conv2d_forward(const float* x, const float* w, const float* bias, float* y,
                    const ConvDims& d) {
  const int64_t ck = d.c * d.kh * d.kw, spatial = d.oh * d.ow;
  std::vector<float> col(static_cast<size_t>(ck * spatial));
  for (int64_t n = 0; n < d.n; ++n) {
    im2col(x + n * d.c * d.h * d.w, col.data(), d);
    float* out = y + n * d.k * spatial;
    // y_n [K, OH*OW] = W [K, C*kh*kw] @ col [C*kh*kw, OH*OW]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(d.k),
                static_cast<int>(spatial), static_cast<int>(ck), 1.0f, w, static_cast<int>(ck),
                col.data(), static_cast<int>(spatial), 0.0f, out, static_cast<int>(spatial));
    if (bias)
      for (int64_t k = 0; k < d.k; ++k)
        for (int64_t s = 0; s < spatial; ++s) out[k * spatial + s] += bias[k];
  }
}

void conv2d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* dbias, const ConvDims& d, bool accumulate) {
  const int64_t ck = d.c * d.kh * d.kw, spatial = d.oh * d.ow;
  if (!accumulate) {
    std::memset(dw, 0, sizeof(float) * d.k * ck);
    if (dbias) std::memset(dbias, 0, sizeof(float) * d.k);
  }
  std::vector<float> col(static_cast<size_t>(ck * spatial));
  for (int64_t n = 0; n < d.n; ++n) {
    const float* g = dy + n * d.k * spatial;
    im2col(x + n * d.c * d.h * d.w, col.data(), d);
    // dW [K, C*kh*kw] += dy_n [K, OH*OW] @ col^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(d.k),
                static_cast<int>(ck), static_cast<int>(spatial), 1.0f, g, static_cast<int>(spatial),
                col.data(), static_cast<int>(spatial), 1.0f, dw, static_cast<int>(ck));
    if (dbias)
      for (int64_t k = 0; k < d.k; ++k)
        for (int64_t s = 0; s < spatial; ++s) dbias[k] += g[k * spatial + s];
    if (dx) {
      // dcol [C*kh*kw, OH*OW] = W^T @ dy_n, then back onto the image.
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(ck),
                  static_cast<int>(spatial), static_cast<int>(d.k), 1.0f, w, static_cast<int>(ck),
                  g, static_cast<int>(spatial), 0.0f, col.data(), static_cast<int>(spatial));
      col2im(col.data(), dx + n * d.c * d.h * d.w, d);
    }
  }
}

void pool2d_forward(ops::Pool pool, const float* x, float* y, const PoolDims& d) {
  const float inv = 1.0f / static_cast<float>(d.k * d.k);
  for (int64_t p = 0; p < d.n * d.c; ++p) {
    const float* in = x + p * d.h * d.w;
    float* out = y + p * d.oh * d.ow;
    for (int64_t oy = 0; oy < d.oh; ++oy)
      for (int64_t ox = 0; ox < d.ow; ++ox) {
        float acc = pool == ops::Pool::max ? -std::numeric_limits<float>::infinity() : 0.0f;
        for (int64_t i = 0; i < d.k; ++i)
          for (int64_t j = 0; j < d.k; ++j) {
            const float v = in[(oy * d.stride + i) * d.w + ox * d.stride + j];
            acc = pool == ops::Pool::max ? std::max(acc, v) : acc + v;
          }
        out[oy * d.ow + ox] = pool == ops::Pool::max ? acc : acc * inv;
      }
  }
}

void pool2d_backward(ops::Pool pool, const float* x, const float* dy, float* dx,
                     const PoolDims& d) {
  std::memset(dx, 0, sizeof(float) * d.n * d.c * d.h * d.w);
  const float inv = 1.0f / static_cast<float>(d.k * d.k);
  for (int64_t p = 0; p < d.n * d.c; ++p) {
    const float* in = x + p * d.h * d.w;
    const float* g = dy + p * d.oh * d.ow;
    float* out = dx + p * d.h * d.w;
    for (int64_t oy = 0; oy < d.oh; ++oy)
      for (int64_t ox = 0; ox < d.ow; ++ox) {
        const int64_t base = oy * d.stride * d.w + ox * d.stride;
        if (pool == ops::Pool::avg) {
          for (int64_t i = 0; i < d.k; ++i)
            for (int64_t j = 0; j < d.k; ++j) out[base + i * d.w + j] += g[oy * d.ow + ox] * inv;
          continue;
        }
        int64_t arg = base;  // the first maximum, in row-major order within the window
        for (int64_t i = 0; i < d.k; ++i)
          for (int64_t j = 0; j < d.k; ++j)
            if (in[base + i * d.w + j] > in[arg]) arg = base + i * d.w + j;
        out[arg] += g[oy * d.ow + ox];
      }
  }
}

}  // namespace tern::cpu
