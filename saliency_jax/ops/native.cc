// Fused CPU kernels (XLA FFI) for the ops whose XLA:CPU form is bound by its gathers and
// scatters: the anti-aliased grid sampling of `antialias.py`, the lattice inverse of `inverse.py`
// and the scatter-add of `taps.scatter_to_image` (grid_sample's gradient to an image).
//
// Each computes what its Python counterpart computes (the same conventions, the same float32
// formulas, the same tie rules; the inverse by an exact per-cell solve instead of Newton steps),
// and each is checked against it by tests/test_native.py. None is differentiated: the gradients
// stay JAX's (see native.py). Layouts: images [..., H, W, C], grids [..., h, w, 2] (x, y),
// row-major; every leading axis is a batch axis (vmap adds them).
//
// Built by native.py with the machine's C++ compiler against the installed jaxlib's FFI headers;
// the work is spread over XLA's CPU thread pool.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__SSE2__)  // Every x86-64 CPU: the channels of a pixel in one vector.
#include <emmintrin.h>
#define SALIENCY_JAX_SSE2 1
#else
#define SALIENCY_JAX_SSE2 0
#endif

namespace ffi = xla::ffi;

namespace {

using Pool = ffi::ThreadPool;

// Chunks [0, total) claimed from a shared counter by the calling thread and up to
// `num_threads` pool tasks. The caller waits only for chunks that a running thread has already
// claimed, so it cannot wait on a task queued behind itself; a task that starts after the last
// chunk is claimed returns at once (the shared state outlives the call).
struct Chunks {
  std::function<void(int64_t)> body;
  int64_t total = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable finished;

  void Run() {
    for (int64_t i = next.fetch_add(1); i < total; i = next.fetch_add(1)) {
      body(i);
      if (done.fetch_add(1) + 1 == total) {
        std::lock_guard<std::mutex> lock(mu);
        finished.notify_all();
      }
    }
  }
};

template <typename F>
void ParallelFor(Pool& pool, int64_t total, F body) {
  if (total <= 0) return;
  auto chunks = std::make_shared<Chunks>();
  chunks->body = std::move(body);
  chunks->total = total;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), total - 1);
  for (int64_t k = 0; k < helpers; ++k) pool.Schedule([chunks] { chunks->Run(); });
  chunks->Run();
  std::unique_lock<std::mutex> lock(chunks->mu);
  chunks->finished.wait(lock, [&] { return chunks->done.load() == total; });
}

template <typename Span>
int64_t Product(const Span& dims, size_t begin, size_t end) {
  int64_t n = 1;
  for (size_t i = begin; i < end; ++i) n *= dims[i];
  return n;
}

// ---------------------------------------------------------------------------------------------
// Anti-aliased sampling (antialias.py): trilinear reads of an area-averaged pyramid.

enum Padding : int32_t { kZeros = 0, kBorder = 1, kReflection = 2 };

// taps._clip_with_grad's values.
inline float ClipToImage(float c, float limit) { return c <= 0.f ? 0.f : (c >= limit ? limit : c); }

// taps._reflect.
inline float Reflect(float c, int64_t twice_low, int64_t twice_high) {
  if (twice_low == twice_high) return 0.f;
  const float low = twice_low / 2.f;
  const float span = (twice_high - twice_low) / 2.f;
  c = c - low;
  c = c < 0 ? -c : c;
  const float extra = std::fmod(c, span);
  const float flips = std::floor(c / span);
  return std::fmod(flips, 2.f) == 0 ? extra + low : span - extra + low;
}

// taps.source_coordinate: normalised -> pixel coordinate, padding applied (NaN stays NaN).
inline float SourceCoordinate(float c, int64_t size, bool align_corners, int32_t padding) {
  c = align_corners ? (c + 1.f) / 2.f * static_cast<float>(size - 1)
                    : ((c + 1.f) * static_cast<float>(size) - 1.f) / 2.f;
  if (std::isnan(c)) return c;
  if (padding == kBorder) return ClipToImage(c, size - 1);
  if (padding == kReflection) {
    c = align_corners ? Reflect(c, 0, 2 * (size - 1)) : Reflect(c, -1, 2 * size - 1);
    return ClipToImage(c, size - 1);
  }
  return std::min(std::max(c, -2.f), static_cast<float>(size) + 1.f);
}

// The unpadded pixel coordinate (the footprint's).
inline float PixelCoordinate(float c, int64_t size, bool align_corners) {
  return align_corners ? (c + 1.f) / 2.f * static_cast<float>(size - 1)
                       : ((c + 1.f) * static_cast<float>(size) - 1.f) / 2.f;
}

// floor() of a float within int32 range: std::floor is a library call on baseline x86-64
// (no SSE4.1 rounding instruction), several per output pixel.
inline int32_t FloorInt(float v) {
  const int32_t i = static_cast<int32_t>(v);
  return i - (v < static_cast<float>(i));
}

// floor() of a double as int64, for values well within range.
inline int64_t FloorInt64(double v) {
  const int64_t i = static_cast<int64_t>(v);
  return i - (v < static_cast<double>(i));
}

struct Level {
  int64_t height, width;
  int64_t offset;  // Of image 0's level in the pyramid buffer, in pixels.
};

#if SALIENCY_JAX_SSE2
// Four consecutive values as floats (a pixel of 3 channels and the next value, ignored).
inline __m128 Load4(const uint8_t* p) {
  int32_t bytes;
  std::memcpy(&bytes, p, 4);
  const __m128i zero = _mm_setzero_si128();
  const __m128i wide = _mm_unpacklo_epi8(_mm_cvtsi32_si128(bytes), zero);
  return _mm_cvtepi32_ps(_mm_unpacklo_epi16(wide, zero));
}
inline __m128 Load4(const float* p) { return _mm_loadu_ps(p); }
#endif

// One pyramid level from the previous one: 2x2 means, the last row and column replicated when
// odd (antialias._halve), always float32: a uint8 level's from its integer sums, exactly (a
// rounded level would drop the detail below one grey level that uniform downsampling keeps).
inline float Mean4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return 0.25f * static_cast<float>(static_cast<uint32_t>(a) + b + c + d);
}
inline float Mean4(float a, float b, float c, float d) { return 0.25f * (((a + b) + c) + d); }

template <typename T>
void HalveScalar(const T* src, int64_t height, int64_t width, int64_t channels, float* dst) {
  const int64_t h = (height + 1) / 2, w = (width + 1) / 2;
  for (int64_t i = 0; i < h; ++i) {
    const T* top = src + (2 * i) * width * channels;
    const T* bottom = src + std::min(2 * i + 1, height - 1) * width * channels;
    float* out = dst + i * w * channels;
    for (int64_t j = 0; j < w; ++j) {
      const int64_t left = 2 * j * channels, right = std::min(2 * j + 1, width - 1) * channels;
      for (int64_t c = 0; c < channels; ++c) {
        out[j * channels + c] = Mean4(top[left + c], bottom[left + c], top[right + c],
                                      bottom[right + c]);
      }
    }
  }
}

template <typename T>
void Halve(const T* src, int64_t height, int64_t width, int64_t channels, float* dst) {
  HalveScalar(src, height, width, channels, dst);
}

#if SALIENCY_JAX_SSE2
// `Halve` of uint8 pixels of 3 channels (the trainer's images): the two rows summed in 16 bits
// by the compiler's vector loop, then each pair of pixels in one vector. The same numbers.
template <>
void Halve<uint8_t>(const uint8_t* src, int64_t height, int64_t width, int64_t channels,
                    float* dst) {
  if (channels != 3 || width < 4) return HalveScalar(src, height, width, channels, dst);
  const int64_t h = (height + 1) / 2, w = (width + 1) / 2, n = width * 3;
  std::vector<uint16_t> sums(n + 8);
  const __m128i zero = _mm_setzero_si128();
  const __m128 quarter = _mm_set1_ps(0.25f);
  for (int64_t i = 0; i < h; ++i) {
    const uint8_t* top = src + (2 * i) * n;
    const uint8_t* bottom = src + std::min(2 * i + 1, height - 1) * n;
    float* out = dst + i * w * 3;
    for (int64_t k = 0; k < n; ++k) sums[k] = static_cast<uint16_t>(top[k] + bottom[k]);
    // Pixels j whose 8-lane load (pixels 2j, 2j + 1 and two lanes more) and 4-float store stay
    // inside the row: all but the last two.
    const int64_t vector_end = std::max<int64_t>(0, std::min(w - 2, (n - 8) / 6 + 1));
    for (int64_t j = 0; j < vector_end; ++j) {
      const __m128i pair = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&sums[6 * j]));
      const __m128i total = _mm_add_epi16(pair, _mm_srli_si128(pair, 6));
      const __m128 mean = _mm_mul_ps(quarter, _mm_cvtepi32_ps(_mm_unpacklo_epi16(total, zero)));
      _mm_storeu_ps(out + 3 * j, mean);  // The 4th lane is the next pixel's, written next.
    }
    for (int64_t j = vector_end; j < w; ++j) {
      const int64_t left = 6 * j, right = std::min(2 * j + 1, width - 1) * 3;
      for (int64_t c = 0; c < 3; ++c) {
        out[3 * j + c] = 0.25f * static_cast<float>(sums[left + c] + sums[right + c]);
      }
    }
  }
}
#endif

struct Geometry {
  int64_t height, width, channels;  // The image's.
  int64_t h, w;                     // The grid's.
  bool align_corners;
  int32_t padding;
  bool flat;                        // No footprint: plain bilinear sampling.
  const std::vector<Level>* levels;
};

// The end of an image's buffer and of its pyramid's (4-value loads must stay before them).
template <typename T>
struct Ends {
  const T* image;
  const float* pyramid;
};

// log2(v) for v >= 1 (and +inf), to float32 rounding of the sum (1.2e-6 off at v = 1e6, where the
// exponent alone is 19): the exponent plus log2 of the mantissa m in
// [1, 2) by the series of 2 atanh((m - 1) / (m + 1)), which, unlike std::log2 (a library call),
// the compiler vectorises.
inline float Log2AtLeastOne(float v) {
  int32_t bits;
  std::memcpy(&bits, &v, 4);
  const float exponent = static_cast<float>((bits >> 23) - 127);
  bits = (bits & 0x007fffff) | 0x3f800000;
  float m;
  std::memcpy(&m, &bits, 4);
  const float z = (m - 1.f) / (m + 1.f), z2 = z * z;  // z in [0, 1/3).
  const float series =
      z * (1.f + z2 * (1.f / 3 + z2 * (1.f / 5 + z2 * (1.f / 7 + z2 * (1.f / 9 + z2 / 11)))));
  return exponent + series * 2.8853900817779268f;  // 2 / ln 2.
}

// `FootprintRow`'s pixel coordinates of grid row `here` (x, y) and the differences of rows
// `down` and `up` (times `half`), by `pixel(value, size)`. A function of its own: its pointers'
// `__restrict` lets the compiler vectorise the loop without run-time alias checks.
template <typename Pixel>
inline void PixelRows(Pixel pixel, int64_t w, const float* __restrict here,
                      const float* __restrict up, const float* __restrict down, float sx, float sy,
                      float half, float* __restrict x_here, float* __restrict y_here,
                      float* __restrict x_down, float* __restrict y_down) {
  for (int64_t j = 0; j < w; ++j) {
    x_here[j] = pixel(here[2 * j], sx);
    y_here[j] = pixel(here[2 * j + 1], sy);
    x_down[j] = (pixel(down[2 * j], sx) - pixel(up[2 * j], sx)) * half;
    y_down[j] = (pixel(down[2 * j + 1], sy) - pixel(up[2 * j + 1], sy)) * half;
  }
}

// The footprint's pyramid level (antialias._footprint_level) of every pixel of output row `i`,
// into lam[0 .. w): numpy.gradient of the unpadded pixel coordinates along the row and down the
// column, in loops without branches (the borders apart), so that the compiler vectorises them.
inline void FootprintRow(const Geometry& geo, const float* grid, int64_t i, float top_level,
                         std::vector<float>* scratch, float* lam) {
  const int64_t h = geo.h, w = geo.w;
  scratch->resize(6 * w);
  float* __restrict x_here = scratch->data();
  float* __restrict y_here = x_here + w;
  float* __restrict x_down = y_here + w;  // Row i + 1 minus row i - 1, (one-sided at the ends).
  float* __restrict y_down = x_down + w;
  float* __restrict xu = y_down + w;
  float* __restrict yu = xu + w;
  const int64_t above = i == 0 ? 0 : i - 1, below = i == h - 1 ? h - 1 : i + 1;
  const float half = (i == 0 || i == h - 1) ? 1.f : 0.5f;
  const float* here = grid + i * w * 2;
  const float* up = grid + above * w * 2;
  const float* down = grid + below * w * 2;
  const float sx = static_cast<float>(geo.width), sy = static_cast<float>(geo.height);
  // PixelCoordinate, one loop per convention (a branch in the loop keeps it scalar).
  if (geo.align_corners) {
    PixelRows([](float v, float size) { return (v + 1.f) / 2.f * (size - 1.f); }, w, here, up,
              down, sx, sy, half, x_here, y_here, x_down, y_down);
  } else {
    PixelRows([](float v, float size) { return ((v + 1.f) * size - 1.f) / 2.f; }, w, here, up,
              down, sx, sy, half, x_here, y_here, x_down, y_down);
  }
  xu[0] = x_here[1] - x_here[0], yu[0] = y_here[1] - y_here[0];
  xu[w - 1] = x_here[w - 1] - x_here[w - 2], yu[w - 1] = y_here[w - 1] - y_here[w - 2];
  for (int64_t j = 1; j < w - 1; ++j) {
    xu[j] = (x_here[j + 1] - x_here[j - 1]) * 0.5f;
    yu[j] = (y_here[j + 1] - y_here[j - 1]) * 0.5f;
  }
  for (int64_t j = 0; j < w; ++j) {
    const float side2 = 0.5f * (xu[j] * xu[j] + yu[j] * yu[j] + x_down[j] * x_down[j] +
                                y_down[j] * y_down[j]);
    lam[j] = std::max(side2, 1.f);
  }
  for (int64_t j = 0; j < w; ++j) {
    const float value = 0.5f * Log2AtLeastOne(lam[j]);
    lam[j] = std::min(value, top_level);  // At least 0 already.
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t j = 0; j < w; ++j) {
    const float sum = xu[j] + yu[j] + x_down[j] + y_down[j];
    lam[j] = sum == sum ? lam[j] : nan;
  }
}

// Where the two reads of each pixel of an output row fall (the coordinates, the footprint's
// levels and, per level read, the level pixel at or left of / above the position and the
// fractions), computed for the whole row in loops without branches that the compiler
// vectorises; the per-pixel loop then only loads and blends.
struct RowReads {
  std::vector<float> x, y, lam, frac, ax[2], ay[2];
  std::vector<int32_t> level[2], col[2], row[2];

  void Resize(int64_t w) {
    for (auto* v : {&x, &y, &lam, &frac, &ax[0], &ax[1], &ay[0], &ay[1]}) v->resize(w);
    for (auto* v : {&level[0], &level[1], &col[0], &col[1], &row[0], &row[1]}) v->resize(w);
  }
};

// 2^-k for k in [0, 126], exactly (antialias's level scales, 0.5 ** k).
inline float InverseScale(int32_t k) { return __builtin_bit_cast(float, (127 - k) << 23); }

// `SourceCoordinate` of values[2 j], j < w, into out[j]: for zeros and border padding in loops
// without branches, which the compiler vectorises (NaN passes the clamps as NaN).
inline void SourceCoordinates(const float* __restrict values, int64_t w, int64_t size,
                              bool align_corners, int32_t padding, float* __restrict out) {
  if (padding == kReflection) {
    for (int64_t j = 0; j < w; ++j) {
      out[j] = SourceCoordinate(values[2 * j], size, align_corners, padding);
    }
    return;
  }
  const float extent = static_cast<float>(size);
  const float low = padding == kBorder ? 0.f : -2.f;
  const float high = padding == kBorder ? extent - 1.f : extent + 1.f;
  for (int64_t j = 0; j < w; ++j) {
    const float v = values[2 * j];
    // PixelCoordinate's two conventions, the same operations.
    float c = align_corners ? (v + 1.f) / 2.f * static_cast<float>(size - 1)
                            : ((v + 1.f) * extent - 1.f) / 2.f;
    c = c <= low ? low : c;
    out[j] = c >= high ? high : c;
  }
}

// The reads of one level per pixel (`level [w]`) at coordinates x, y (NaN read as 0): the level
// pixel at or left of / above the position and the fractions. Level pixel c covers level-0
// pixels [c s, (c + 1) s), s = 2^level: centred at (c + 0.5) s - 0.5; level 0 (the image) is
// read at the coordinates themselves.
inline void PlanLevelReads(int64_t w, const float* __restrict x, const float* __restrict y,
                           const int32_t* __restrict level, int32_t* __restrict col,
                           int32_t* __restrict row, float* __restrict ax,
                           float* __restrict ay) {
  for (int64_t j = 0; j < w; ++j) {
    const float scale = InverseScale(level[j]);
    const float x0 = x[j] == x[j] ? x[j] : 0.f, y0 = y[j] == y[j] ? y[j] : 0.f;
    const float lx = level[j] == 0 ? x0 : (x0 + 0.5f) * scale - 0.5f;
    const float ly = level[j] == 0 ? y0 : (y0 + 0.5f) * scale - 0.5f;
    col[j] = FloorInt(lx);
    row[j] = FloorInt(ly);
    ax[j] = lx - static_cast<float>(col[j]);
    ay[j] = ly - static_cast<float>(row[j]);
  }
}

// Output row `i` of one image into `reads` (NaN coordinates or footprints stay NaN in x, y and
// lam; the rest of such a pixel is computed from zeros and not read).
inline void PlanRow(const Geometry& geo, const float* grid, int64_t i, int32_t top_level,
                    std::vector<float>* scratch, RowReads* reads) {
  const int64_t w = geo.w;
  const float* node = grid + i * w * 2;
  float* x = reads->x.data();
  float* y = reads->y.data();
  float* lam = reads->lam.data();
  SourceCoordinates(node, w, geo.width, geo.align_corners, geo.padding, x);
  SourceCoordinates(node + 1, w, geo.height, geo.align_corners, geo.padding, y);
  if (geo.flat) {
    std::fill(lam, lam + w, 0.f);
  } else {
    FootprintRow(geo, grid, i, static_cast<float>(top_level), scratch, lam);
  }
  float* frac = reads->frac.data();
  int32_t* low = reads->level[0].data();
  int32_t* high = reads->level[1].data();
  for (int64_t j = 0; j < w; ++j) {
    const float l = lam[j] == lam[j] ? lam[j] : 0.f;
    low[j] = FloorInt(l);
    frac[j] = l - static_cast<float>(low[j]);
    high[j] = std::min(low[j] + 1, top_level);
  }
  for (int k = 0; k < 2; ++k) {
    PlanLevelReads(w, x, y, reads->level[k].data(), reads->col[k].data(),
                   reads->row[k].data(), reads->ax[k].data(), reads->ay[k].data());
  }
}

// Bilinear read of `data [height, width, channels]` from its pixel (col, row) and the fractions
// (ax, ay) (`Bilinear`'s taps and weights, the same operations in the same order).
template <int kChannels, typename T>
inline void BilinearAt(const T* data, int64_t height, int64_t width, int64_t channels, int32_t x0,
                       int32_t y0, float ax, float ay, float* out) {
  const int64_t nc = kChannels > 0 ? kChannels : channels;
  const float wx0 = (x0 >= 0 && x0 < width) ? 1.f - ax : 0.f;
  const float wx1 = (x0 + 1 >= 0 && x0 + 1 < width) ? ax : 0.f;
  const float wy0 = (y0 >= 0 && y0 < height) ? 1.f - ay : 0.f;
  const float wy1 = (y0 + 1 >= 0 && y0 + 1 < height) ? ay : 0.f;
  auto clamp = [](int64_t v, int64_t size) { return std::min(std::max(v, int64_t{0}), size - 1); };
  const int64_t left = clamp(x0, width) * nc, right = clamp(x0 + 1, width) * nc;
  const T* top = data + clamp(y0, height) * width * nc;
  const T* bottom = data + clamp(y0 + 1, height) * width * nc;
  for (int64_t c = 0; c < nc; ++c) {
    const float upper = wx0 * static_cast<float>(top[left + c]) +
                        wx1 * static_cast<float>(top[right + c]);
    const float lower = wx0 * static_cast<float>(bottom[left + c]) +
                        wx1 * static_cast<float>(bottom[right + c]);
    out[c] = wy0 * upper + wy1 * lower;
  }
}

// One level's data, size and end (4-value loads must stay before it): level 0 is the image
// (uint8 or float32), levels 1.. are float32.
template <typename T>
struct View {
  const T* data;
  const T* end;
  int64_t height, width;
};

#if SALIENCY_JAX_SSE2
// The bilinear read of `BilinearAt` with the channels of a pixel in one vector, where the four
// taps lie inside the level (most reads); false elsewhere.
template <typename T>
inline bool Read4(const View<T>& v, int64_t nc, int32_t x0, int32_t y0, float ax, float ay,
                  __m128* into) {
  if (!(x0 >= 0 && x0 + 1 < v.width && y0 >= 0 && y0 + 1 < v.height)) return false;
  const T* top = v.data + (y0 * v.width + x0) * nc;
  const T* bottom = top + v.width * nc;
  if (bottom + nc + 4 > v.end) return false;
  const __m128 wx0 = _mm_set1_ps(1.f - ax), wx1 = _mm_set1_ps(ax);
  const __m128 upper = _mm_add_ps(_mm_mul_ps(wx0, Load4(top)), _mm_mul_ps(wx1, Load4(top + nc)));
  const __m128 lower = _mm_add_ps(_mm_mul_ps(wx0, Load4(bottom)),
                                  _mm_mul_ps(wx1, Load4(bottom + nc)));
  *into = _mm_add_ps(_mm_mul_ps(_mm_set1_ps(1.f - ay), upper),
                     _mm_mul_ps(_mm_set1_ps(ay), lower));
  return true;
}
#endif

// Output rows [begin, end) of one image: `grid [h, w, 2]`, `out [h, w, C]`.
template <int kChannels, typename T>
void SampleRows(const Geometry& geo, const T* image, const float* pyramid, Ends<T> ends,
                const float* grid, int64_t begin, int64_t end, float* out) {
  const int64_t nc = kChannels > 0 ? kChannels : geo.channels;
  const int64_t w = geo.w;
  const std::vector<Level>& levels = *geo.levels;
  const int32_t top_level = static_cast<int32_t>(levels.size()) - 1;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const View<T> image_view{image, ends.image, geo.height, geo.width};
  std::vector<View<float>> views(levels.size());  // Levels 1..; [0] unused.
  for (size_t k = 1; k < levels.size(); ++k) {
    views[k] = {pyramid + levels[k].offset * nc, ends.pyramid, levels[k].height,
                levels[k].width};
  }
  std::vector<float> low_read(nc), high_read(nc), scratch;
  RowReads reads;
  reads.Resize(w);
  for (int64_t i = begin; i < end; ++i) {
    PlanRow(geo, grid, i, top_level, &scratch, &reads);
    for (int64_t j = 0; j < w; ++j) {
      float* o = out + (i * w + j) * nc;
      if (std::isnan(reads.x[j]) || std::isnan(reads.y[j]) || std::isnan(reads.lam[j])) {
        for (int64_t c = 0; c < nc; ++c) o[c] = nan;
        continue;
      }
      const float frac = reads.frac[j];
      // Trilinear: levels low and low + 1 blended by the fraction (antialiased_sample's
      // `read_0 + frac * (read_a - read_0)` where low is 0); only the levels that weigh.
#if SALIENCY_JAX_SSE2
      if constexpr (kChannels == 3 || kChannels == 4) {
        auto read4 = [&](int k, __m128* into) {
          const int32_t level = reads.level[k][j];
          const int32_t x0 = reads.col[k][j], y0 = reads.row[k][j];
          const float ax = reads.ax[k][j], ay = reads.ay[k][j];
          return level == 0 ? Read4(image_view, nc, x0, y0, ax, ay, into)
                            : Read4(views[level], nc, x0, y0, ax, ay, into);
        };
        __m128 low_value, high_value;
        if (read4(0, &low_value) && (frac == 0.f || read4(1, &high_value))) {
          const __m128 value = frac == 0.f ? low_value : _mm_add_ps(
              low_value, _mm_mul_ps(_mm_set1_ps(frac), _mm_sub_ps(high_value, low_value)));
          if (kChannels == 4 || j + 1 < w) {
            _mm_storeu_ps(o, value);  // With 3 channels the 4th lane is the next pixel's.
          } else {
            alignas(16) float lanes[4];
            _mm_store_ps(lanes, value);
            for (int64_t c = 0; c < kChannels; ++c) o[c] = lanes[c];
          }
          continue;
        }
      }
#endif
      auto read = [&](int k, float* into) {
        const int32_t level = reads.level[k][j];
        const int32_t x0 = reads.col[k][j], y0 = reads.row[k][j];
        const float ax = reads.ax[k][j], ay = reads.ay[k][j];
        auto at = [&](const auto& v) {
          BilinearAt<kChannels>(v.data, v.height, v.width, nc, x0, y0, ax, ay, into);
        };
        level == 0 ? at(image_view) : at(views[level]);
      };
      if (frac == 0.f) {
        read(0, o);
        continue;
      }
      read(0, low_read.data());
      read(1, high_read.data());
      for (int64_t c = 0; c < nc; ++c) o[c] = low_read[c] + frac * (high_read[c] - low_read[c]);
    }
  }
}

template <ffi::DataType kType>
ffi::Error AntialiasImpl(Pool pool, ffi::Buffer<kType> image, ffi::Buffer<ffi::F32> grid,
                         ffi::ResultBuffer<ffi::F32> out, bool align_corners, int32_t padding) {
  using T = ffi::NativeType<kType>;
  const auto idims = image.dimensions();
  const auto gdims = grid.dimensions();
  const size_t rank = idims.size();
  if (rank < 4 || gdims.size() != rank || gdims[rank - 1] != 2) {
    return ffi::Error::InvalidArgument("antialias: expected image [..., H, W, C] and grid "
                                       "[..., h, w, 2] of the same rank");
  }
  const int64_t batch = Product(idims, 0, rank - 3);
  if (Product(gdims, 0, rank - 3) != batch) {
    return ffi::Error::InvalidArgument("antialias: image and grid batch sizes differ");
  }
  const int64_t height = idims[rank - 3], width = idims[rank - 2], channels = idims[rank - 1];
  const int64_t h = gdims[rank - 3], w = gdims[rank - 2];

  std::vector<Level> levels = {{height, width, 0}};
  int64_t per_image = 0;  // Pixels of levels 1.. per image.
  while (levels.back().height != 1 || levels.back().width != 1) {
    const Level& last = levels.back();
    levels.push_back({(last.height + 1) / 2, (last.width + 1) / 2, per_image});
    per_image += levels.back().height * levels.back().width;
  }
  const int64_t num_levels = static_cast<int64_t>(levels.size());
  const bool flat = num_levels == 1 || h < 2 || w < 2;  // Plain bilinear (antialiased_sample).

  const T* image_data = image.typed_data();
  const float* grid_data = grid.typed_data();
  float* out_data = out->typed_data();
  const Geometry geometry{height, width, channels, h, w, align_corners, padding, flat, &levels};
  auto pyramid_of = [&](const T* source, float* pyramid) {
    Halve(source, height, width, channels, pyramid);  // Level 1, at offset 0.
    for (int64_t k = 2; k < num_levels; ++k) {
      const float* above = pyramid + levels[k - 1].offset * channels;
      Halve(above, levels[k - 1].height, levels[k - 1].width, channels,
            pyramid + levels[k].offset * channels);
    }
  };
  const T* image_end = image_data + batch * height * width * channels;
  auto sample = [&](int64_t b, const float* pyramid, const float* pyramid_end, int64_t begin,
                    int64_t end) {
    const Ends<T> ends{image_end, pyramid_end};
    const T* source = image_data + b * height * width * channels;
    const float* g = grid_data + b * h * w * 2;
    float* o = out_data + b * h * w * channels;
    switch (channels) {
      case 1: return SampleRows<1>(geometry, source, pyramid, ends, g, begin, end, o);
      case 3: return SampleRows<3>(geometry, source, pyramid, ends, g, begin, end, o);
      case 4: return SampleRows<4>(geometry, source, pyramid, ends, g, begin, end, o);
      default: return SampleRows<0>(geometry, source, pyramid, ends, g, begin, end, o);
    }
  };
  if (batch >= 2 * pool.num_threads()) {
    // One image per task: its pyramid is read back while it is still in the core's cache
    // (written for the whole batch first, the levels were read back from memory: 2x slower).
    ParallelFor(pool, batch, [&](int64_t b) {
      // Each thread keeps its pyramid buffer from call to call: a fresh one costs its page
      // faults every time.
      thread_local std::vector<float> pyramid;
      if (pyramid.size() < per_image * channels) pyramid.resize(per_image * channels);
      if (!flat) pyramid_of(image_data + b * height * width * channels, pyramid.data());
      sample(b, pyramid.data(), pyramid.data() + pyramid.size(), 0, h);
    });
    return ffi::Error::Success();
  }
  // Few images: every pyramid first (one task per image), then rows of output per task.
  std::vector<float> pyramids(flat ? 0 : batch * per_image * channels);
  if (!flat) {
    ParallelFor(pool, batch, [&](int64_t b) {
      pyramid_of(image_data + b * height * width * channels,
                 pyramids.data() + b * per_image * channels);
    });
  }
  const int64_t rows_per_chunk = std::max<int64_t>(1, 2048 / std::max<int64_t>(w, 1));
  const int64_t chunks_per_image = (h + rows_per_chunk - 1) / rows_per_chunk;
  ParallelFor(pool, batch * chunks_per_image, [&](int64_t chunk) {
    const int64_t b = chunk / chunks_per_image;
    const int64_t begin = (chunk % chunks_per_image) * rows_per_chunk;
    sample(b, pyramids.data() + b * per_image * channels, pyramids.data() + pyramids.size(),
           begin, std::min(h, begin + rows_per_chunk));
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// The lattice inverse (inverse.py): for each target of the lattice xs x ys, the node coordinates
// (x, y) of the warped position whose bilinear interpolation of the grid is the target, by the
// analytic solve of inverse.solve_cell in the target's cell (see InvertRow for how it is found).

constexpr double kCoverTol = 1e-4;  // inverse._COVER_TOL

// One cell's patch P(s, t) = A + s e + t f + s t g, with what every solve in it reuses.
struct Cell {
  double ax, ay, ex, ey, fx, fy, gx, gy;
  double a2, exf;  // e x g and e x f: the quadratic's coefficients that do not depend on p.
  double scale;    // |e|^2 + |f|^2.
  double tol;      // inverse._residual_tol.
};

inline double Cross(double a0, double a1, double b0, double b1) { return a0 * b1 - a1 * b0; }

// An image's grid [h, w, 2] and its cells, each made when asked for: a table of them cost more
// than the solves where the grid has more cells than there are targets (unwarping a feature map
// through a full-resolution grid).
struct Cells {
  const float* g;
  int64_t h, w;

  int64_t rows() const { return h - 1; }
  int64_t cols() const { return w - 1; }

  Cell operator()(int64_t row, int64_t col) const {
    const float* a = g + (row * w + col) * 2;
    const float* b = a + 2;
    const float* c = a + 2 * w;
    const float* d = c + 2;
    Cell k;
    k.ax = a[0], k.ay = a[1];
    k.ex = static_cast<double>(b[0]) - a[0], k.ey = static_cast<double>(b[1]) - a[1];
    k.fx = static_cast<double>(c[0]) - a[0], k.fy = static_cast<double>(c[1]) - a[1];
    k.gx = static_cast<double>(a[0]) - b[0] - c[0] + d[0];
    k.gy = static_cast<double>(a[1]) - b[1] - c[1] + d[1];
    k.a2 = Cross(k.ex, k.ey, k.gx, k.gy);
    k.exf = Cross(k.ex, k.ey, k.fx, k.fy);
    k.scale = k.ex * k.ex + k.ey * k.ey + k.fx * k.fx + k.fy * k.fy;
    k.tol = kCoverTol * (std::abs(k.ex) + std::abs(k.ey) + std::abs(k.fx) + std::abs(k.fy)) +
            1e-6;
    return k;
  }
};

inline double Outside(double s, double t) {
  return std::max(std::max(-s, s - 1.0), 0.0) + std::max(std::max(-t, t - 1.0), 0.0);
}

inline double TFor(const Cell& k, double s, double qx, double qy) {
  const double hx = k.fx + s * k.gx, hy = k.fy + s * k.gy;
  const double den = hx * hx + hy * hy;
  if (!(den > 1e-12 * k.scale + 1e-30)) return 0.0;
  return ((qx - s * k.ex) * hx + (qy - s * k.ey) * hy) / den;
}

struct Solution {
  double s, t, outside;  // outside: L1 distance to the unit square; inf when no root fits.
};

inline bool Fits(const Cell& k, double s, double t, double qx, double qy) {
  const double rx = qx - s * k.ex - t * k.fx - s * t * k.gx;
  const double ry = qy - s * k.ey - t * k.fy - s * t * k.gy;
  return std::abs(rx) + std::abs(ry) <= k.tol;
}

// inverse.solve_cell: of the roots of the cell's extended patch that reproduce the target, the
// one closest to the unit square (outside = inf if none does: a degenerate cell, whose roots'
// fallbacks may lie in the square off its segment, or a folded cell whose least-squares t misses
// for one root). The bounded root s1 is tried first: a fitting s1 inside its cell (most solves)
// cannot be beaten.
inline Solution Solve(const Cell& k, double px, double py) {
  const double inf = std::numeric_limits<double>::infinity();
  const double qx = px - k.ax, qy = py - k.ay;
  const double a1 = k.exf - Cross(qx, qy, k.gx, k.gy);
  const double a0 = -Cross(qx, qy, k.fx, k.fy);
  const double disc = a1 * a1 - 4.0 * k.a2 * a0;
  const double root = disc > 0 ? std::sqrt(disc) : 0.0;
  const double qq = -0.5 * (a1 + (a1 >= 0 ? root : -root));
  const double s1 = std::abs(qq) > 1e-12 * (k.scale + 1e-30) ? a0 / qq : 0.0;
  const double t1 = TFor(k, s1, qx, qy);
  Solution best{s1, t1, Fits(k, s1, t1, qx, qy) ? Outside(s1, t1) : inf};
  if (best.outside > 0) {
    const double s2 = std::abs(k.a2) > 1e-6 * std::abs(qq) ? qq / k.a2 : 1e6;
    const double t2 = TFor(k, s2, qx, qy);
    const double d2 = Fits(k, s2, t2, qx, qy) ? Outside(s2, t2) : inf;
    if (d2 < best.outside) best = {s2, t2, d2};
  }
  return best;
}

// floor(v) clamped to [-2, 2] for v outside [0, 1], else 0: the cells to step along one axis.
inline int64_t Step(double v) {
  if (v < 0) return v < -1 ? -2 : -1;
  if (v > 1) return v >= 2 ? 2 : 1;
  return 0;
}

struct Target {
  double x, y;  // Node coordinates (col + s, row + t).
  bool covered;
  int64_t row, col;
};

// The step from cell k towards (px, py) by the cell's corners (where its solve tells nothing):
// -1, 0 or 1 per axis, 0 where the target lies within the corners' range.
inline void CornerStep(const Cell& k, double px, double py, int64_t* dc, int64_t* dr) {
  const double left = std::min(k.ax, k.ax + k.fx);
  const double right = std::max(k.ax + k.ex, k.ax + k.ex + k.fx + k.gx);
  const double top = std::min(k.ay, k.ay + k.ey);
  const double bottom = std::max(k.ay + k.fy, k.ay + k.ey + k.fy + k.gy);
  *dc = px < left ? -1 : (px > right ? 1 : 0);
  *dr = py < top ? -1 : (py > bottom ? 1 : 0);
}

// The cell-to-cell walk from cell (row, col): solve, and step towards the root's side (at most
// two cells per axis), or, where the cell has no root that fits (a degenerate cell), towards the
// target by the cell's corners. Ends in the covering cell, or at the border of the grid, or after
// a bounded number of cells, in the cell whose root came closest.
Target Walk(const Cells& cells, double px, double py, int64_t row, int64_t col) {
  const int64_t cells_h = cells.rows(), cells_w = cells.cols();
  const int64_t max_visits = 4 * (cells_h + cells_w) + 8;
  Target best{0, 0, false, row, col};
  double best_outside = std::numeric_limits<double>::infinity();
  bool have_best = false;
  for (int64_t visit = 0; visit < max_visits; ++visit) {
    const Cell cell = cells(row, col);
    const Solution sol = Solve(cell, px, py);
    if (sol.outside <= kCoverTol) return {col + sol.s, row + sol.t, true, row, col};
    if (!have_best || sol.outside < best_outside) {
      best = {col + sol.s, row + sol.t, false, row, col};
      best_outside = sol.outside;
      have_best = true;
    }
    int64_t dc = 0, dr = 0;
    if (std::isfinite(sol.outside)) {
      dc = Step(sol.s);
      dr = Step(sol.t);
    } else {
      CornerStep(cell, px, py, &dc, &dr);
    }
    const int64_t next_row = std::min(std::max(row + dr, int64_t{0}), cells_h - 1);
    const int64_t next_col = std::min(std::max(col + dc, int64_t{0}), cells_w - 1);
    if (next_row == row && next_col == col) break;
    row = next_row;
    col = next_col;
  }
  if (!std::isfinite(best_outside)) {
    // No cell on the way had a fitting root (degenerate cells only): the last cell's clamped
    // point, flagged uncovered.
    best.x = std::min(std::max(best.x, -0.5), cells_w + 0.5);
    best.y = std::min(std::max(best.y, -0.5), cells_h + 0.5);
  }
  return best;
}

// The cell whose column range of the mean profile holds `coord` (inverse._first_guess).
inline int64_t ProfileCell(const std::vector<double>& profile, double coord) {
  const int64_t n = static_cast<int64_t>(profile.size());
  int64_t count = 0;
  for (int64_t k = 0; k < n; ++k) count += profile[k] <= coord;
  return std::min(std::max(count - 1, int64_t{0}), n - 2);
}

// Cell k's four edges (a bilinear patch's edges are straight segments) on the line at height
// py: edge i's side of target (px, py) is slope[i] px + offset[i], positive (times the cell's
// orientation) on the cell's side. Edges top (A -> B), right (B -> D), bottom (D -> C), left
// (C -> A). `valid` is false for a degenerate cell (e x f = 0), whose edges tell nothing.
struct EdgeLines {
  double slope[4], offset[4];
  double lo, hi;  // The px where all four are >= 0 (to rounding): [lo, hi], empty if lo > hi.
  bool valid;
};

inline EdgeLines EdgesAt(const Cell& k, double py) {
  EdgeLines lines{};
  lines.valid = k.exf != 0 && std::isfinite(k.exf);
  if (!lines.valid) return lines;
  const double o = k.exf > 0 ? 1.0 : -1.0;
  const double ax = k.ax, ay = k.ay, bx = ax + k.ex, by = ay + k.ey, cx = ax + k.fx,
               cy = ay + k.fy, dx = bx + k.fx + k.gx, dy = by + k.fy + k.gy;
  const double from[4][2] = {{ax, ay}, {bx, by}, {dx, dy}, {cx, cy}};
  const double to[4][2] = {{bx, by}, {dx, dy}, {cx, cy}, {ax, ay}};
  for (int i = 0; i < 4; ++i) {
    // cross(to - from, p - from) * o, linear in px.
    const double ux = to[i][0] - from[i][0], uy = to[i][1] - from[i][1];
    lines.slope[i] = -o * uy;
    lines.offset[i] = o * (ux * (py - from[i][1]) + uy * from[i][0]);
  }
  lines.lo = -std::numeric_limits<double>::infinity();
  lines.hi = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 4; ++i) {
    const double root = -lines.offset[i] / lines.slope[i];
    if (lines.slope[i] > 0) lines.lo = std::max(lines.lo, root);
    if (lines.slope[i] < 0) lines.hi = std::min(lines.hi, root);
    if (lines.slope[i] == 0 && lines.offset[i] < 0) lines.lo = lines.hi = std::nan("");
  }
  return lines;
}

// The analytic solve of targets xs[0 .. n) at height py in one cell, in float32 (as the XLA
// formulation) and without branches, so that the compiler vectorises it: local (s, t), and
// whether (s, t) is in the cell with a zero residual (inverse.solve_cell's bounded root, which
// is the one inside a non-degenerate cell).
// (Plain float arguments and noipa: GCC 12 vectorised the loop only so, not inlined or cloned.)
__attribute__((noipa)) void SolveRunLoop(float ax, float ex, float ey, float fx, float fy,
                                         float gx, float gy, float a2, float exf, float scale,
                                         float tol, float cover, float qy, float col, float row,
                                         const float* __restrict xs, int64_t n,
                                         float* __restrict x_out, float* __restrict y_out,
                                         int32_t* __restrict ok) {
  for (int64_t j = 0; j < n; ++j) {
    const float qx = xs[j] - ax;
    const float a1 = exf - (qx * gy - qy * gx);
    const float a0 = -(qx * fy - qy * fx);
    const float root = std::sqrt(std::max(a1 * a1 - 4.f * a2 * a0, 0.f));
    const float qq = -0.5f * (a1 + (a1 >= 0 ? root : -root));
    const bool q_ok = std::abs(qq) > 1e-12f * scale;
    const float s = q_ok ? a0 / (q_ok ? qq : 1.f) : 0.f;
    const float hx = fx + s * gx, hy = fy + s * gy;
    const float den = hx * hx + hy * hy;
    const bool d_ok = den > 1e-12f * scale;
    const float t = d_ok ? ((qx - s * ex) * hx + (qy - s * ey) * hy) / (d_ok ? den : 1.f) : 0.f;
    const float rx = qx - s * ex - t * fx - s * t * gx;
    const float ry = qy - s * ey - t * fy - s * t * gy;
    x_out[j] = col + s;
    y_out[j] = row + t;
    // int32 flags, as wide as the floats: four targets per vector (uint8 ones made the loop
    // take 16 at a time, more than most runs hold).
    ok[j] = (s >= -cover) & (s <= 1.f + cover) & (t >= -cover) & (t <= 1.f + cover) &
            (std::abs(rx) + std::abs(ry) <= tol);
  }
}

// Cell (row, col)'s solve of the targets xs[0 .. n) at height py: node coordinates and ok.
void SolveRun(const Cell& k, int64_t row, int64_t col, double py, const float* xs, int64_t n,
              float* x_out, float* y_out, int32_t* ok) {
  auto f = [](double v) { return static_cast<float>(v); };
  SolveRunLoop(f(k.ax), f(k.ex), f(k.ey), f(k.fx), f(k.fy), f(k.gx), f(k.gy), f(k.a2), f(k.exf),
               f(k.scale), f(k.tol), f(kCoverTol), f(py - k.ay), f(col), f(row), xs, n, x_out,
               y_out, ok);
}

// The grid's image as the region its border encloses, for the targets surely outside it. Where
// a cell's Jacobian is >= 0 (no fold; degenerate cells allowed), the points it covers count
// towards the border curve's winding number around them, which is the number of preimages
// counted with the Jacobian's sign. So a point off the curve and outside every folded cell's
// bounding box whose winding number is 0 is uncovered. Crossings and boxes are only trusted
// `margin` away (more than the cover tolerance reaches); every other target takes the edge tests.
struct Border {
  double margin = 0;
  std::vector<double> x, y;  // The closed curve's nodes, in order (edge i: node i - 1 -> i).
  std::vector<double> fold_x0, fold_x1, fold_y0, fold_y1;  // The folded cells' boxes, widened.
  // The edges by height: bucket k holds those whose y range, widened by the margin, meets
  // [bucket_y0 + k bucket_dy, bucket_y0 + (k + 1) bucket_dy), so that a row reads a few.
  double bucket_y0 = 0, bucket_dy = 1;
  std::vector<std::vector<int32_t>> buckets;
  // Every cell's box (x0, x1, y0, y1), made by the first search (rows run on several threads).
  mutable std::once_flag boxes_made;
  mutable std::vector<float> boxes;

  explicit Border(const Cells& cells) {
    const int64_t h = cells.h, w = cells.w;
    double extent = 0;
    for (int64_t r = 0; r + 1 < h; ++r) {
      for (int64_t c = 0; c + 1 < w; ++c) {
        const Cell k = cells(r, c);
        extent = std::max(extent, std::abs(k.ex) + std::abs(k.ey) + std::abs(k.fx) +
                                      std::abs(k.fy) + std::abs(k.gx) + std::abs(k.gy));
        // J(s, t) = (e + t g) x (f + s g) is affine in (s, t): >= 0 on the cell iff at its
        // corners.
        const double eg = k.a2, gf = Cross(k.gx, k.gy, k.fx, k.fy);
        const double floor = -1e-12 * k.scale;
        if (k.exf >= floor && k.exf + eg >= floor && k.exf + gf >= floor &&
            k.exf + eg + gf >= floor) {
          continue;
        }
        const double xs[4] = {k.ax, k.ax + k.ex, k.ax + k.fx, k.ax + k.ex + k.fx + k.gx};
        const double ys[4] = {k.ay, k.ay + k.ey, k.ay + k.fy, k.ay + k.ey + k.fy + k.gy};
        fold_x0.push_back(*std::min_element(xs, xs + 4));
        fold_x1.push_back(*std::max_element(xs, xs + 4));
        fold_y0.push_back(*std::min_element(ys, ys + 4));
        fold_y1.push_back(*std::max_element(ys, ys + 4));
      }
    }
    margin = 1e-3 * extent + 1e-6;
    for (size_t i = 0; i < fold_x0.size(); ++i) {
      fold_x0[i] -= margin, fold_x1[i] += margin, fold_y0[i] -= margin, fold_y1[i] += margin;
    }
    auto add = [&](int64_t r, int64_t c) {
      x.push_back(cells.g[(r * w + c) * 2]);
      y.push_back(cells.g[(r * w + c) * 2 + 1]);
    };
    for (int64_t c = 0; c < w - 1; ++c) add(0, c);
    for (int64_t r = 0; r < h - 1; ++r) add(r, w - 1);
    for (int64_t c = w - 1; c > 0; --c) add(h - 1, c);
    for (int64_t r = h - 1; r > 0; --r) add(r, 0);
    const int64_t n = static_cast<int64_t>(x.size());
    const auto [low, high] = std::minmax_element(y.begin(), y.end());
    bucket_y0 = *low - margin;
    bucket_dy = std::max((*high - *low + 2 * margin) / static_cast<double>(n), 1e-300);
    buckets.resize(n);
    auto bucket = [&](double v) {
      return std::min<int64_t>(std::max<int64_t>(FloorInt64((v - bucket_y0) / bucket_dy), 0),
                               n - 1);
    };
    for (int64_t i = 0; i < n; ++i) {
      const double a = y[(i + n - 1) % n], b = y[i];
      for (int64_t k = bucket(std::min(a, b) - margin); k <= bucket(std::max(a, b) + margin); ++k) {
        buckets[k].push_back(static_cast<int32_t>(i));
      }
    }
  }

  // The first cell (row-major) whose solve covers (px, py), among those whose box holds it: for
  // the few targets that the curve says are covered and the walk did not find (it can stop at
  // the border of a grid that clipping made degenerate there).
  bool Search(const Cells& cells, double px, double py, Target* found) const {
    const int64_t cells_w = cells.cols(), count = cells.rows() * cells_w;
    std::call_once(boxes_made, [&] {
      boxes.resize(4 * count);
      for (int64_t i = 0; i < count; ++i) {
        const float* a = cells.g + ((i / cells_w) * cells.w + i % cells_w) * 2;
        const float* c = a + 2 * cells.w;
        const float xs[4] = {a[0], a[2], c[0], c[2]}, ys[4] = {a[1], a[3], c[1], c[3]};
        boxes[4 * i] = *std::min_element(xs, xs + 4), boxes[4 * i + 1] = *std::max_element(xs, xs + 4);
        boxes[4 * i + 2] = *std::min_element(ys, ys + 4), boxes[4 * i + 3] = *std::max_element(ys, ys + 4);
      }
    });
    const float slack = static_cast<float>(margin);
    for (int64_t i = 0; i < count; ++i) {
      const float* box = boxes.data() + 4 * i;
      if (px < box[0] - slack || px > box[1] + slack || py < box[2] - slack ||
          py > box[3] + slack) {
        continue;
      }
      const int64_t row = i / cells_w, col = i % cells_w;
      const Solution sol = Solve(cells(row, col), px, py);
      if (sol.outside <= kCoverTol) {
        *found = {col + sol.s, row + sol.t, true, row, col};
        return true;
      }
    }
    return false;
  }
};

// What of the border a row of targets at height py needs: the curve's crossings of the row
// (x, and +1 or -1 by direction) and the folded cells' x ranges on it.
struct BorderRow {
  bool trusted = false;  // False without a border (too many cells for it).
  double margin = 0;
  std::vector<std::pair<double, int>> crossings;
  std::vector<std::pair<double, double>> near;   // x ranges of edges with an end near the row.
  std::vector<std::pair<double, double>> folds;  // x ranges of the folded cells' boxes.

  void Reset(const Border* border_or_null, double py) {
    crossings.clear(), near.clear(), folds.clear();
    trusted = border_or_null != nullptr;
    if (!trusted) return;
    const Border& border = *border_or_null;
    margin = border.margin;
    const int64_t n = static_cast<int64_t>(border.x.size());
    const double k = std::floor((py - border.bucket_y0) / border.bucket_dy);
    if (k >= 0 && k < n) {  // Else the row passes beyond the curve: no crossings.
      for (const int32_t i : border.buckets[static_cast<int64_t>(k)]) {
        const int64_t previous = i == 0 ? n - 1 : i - 1;
        const double ya = border.y[previous] - py, yb = border.y[i] - py;
        const double xa = border.x[previous], xb = border.x[i];
        // A node on (or by) the row: the nodes' sides below stay exact for the winding number
        // (a node on the row counts as above it), but the curve runs along the row there.
        if (std::abs(ya) <= margin || std::abs(yb) <= margin) {
          near.push_back({std::min(xa, xb) - margin, std::max(xa, xb) + margin});
        }
        if ((ya < 0) == (yb < 0)) continue;
        crossings.push_back({xa + (xb - xa) * (ya / (ya - yb)), ya < 0 ? 1 : -1});
      }
    }
    for (size_t i = 0; i < border.fold_x0.size(); ++i) {
      if (border.fold_y0[i] <= py && py <= border.fold_y1[i]) {
        folds.push_back({border.fold_x0[i], border.fold_x1[i]});
      }
    }
  }

  // The curve's winding number around target px of the row; false where px lies within the
  // margin of the curve's crossings or of its edges along the row (or without a border).
  bool Winding(double px, int* winding) const {
    if (!trusted) return false;
    for (const auto& [x0, x1] : near) {
      if (x0 <= px && px <= x1) return false;
    }
    *winding = 0;
    for (const auto& [cx, direction] : crossings) {
      if (std::abs(cx - px) <= margin) return false;
      if (cx > px) *winding += direction;
    }
    return true;
  }

  bool InFold(double px) const {
    for (const auto& [x0, x1] : folds) {
      if (x0 <= px && px <= x1) return true;
    }
    return false;
  }

  // Whether target px of the row is outside the grid's image beyond the margin of the curve.
  bool SurelyOutside(double px) const {
    int winding;
    return Winding(px, &winding) && winding == 0 && !InFold(px);
  }

  // Whether target px may be covered though the walk did not find its cell: surely where the
  // winding number (the sum of the Jacobian's signs at its preimages, folds or not) is nonzero,
  // perhaps in a folded cell's box.
  bool MayBeCovered(double px) const {
    int winding;
    return Winding(px, &winding) && (winding != 0 || InFold(px));
  }
};

// Consecutive targets of a row solved in one cell: found in it by the edge tests, or surely
// outside the grid's image and extrapolated from it (`outside`), or (cell -1) left to the walk.
struct Run {
  int64_t begin, end;
  int64_t cell;
  bool outside;
  Cell k;
};

// One row of targets (xs[0 .. n) at height py) into x, y, covered. First each target's cell, by
// edge tests from the previous target's cell (most targets share their left neighbour's), or
// the border's verdict that it is outside the grid's image; then the solve, one vectorised run
// per cell; targets whose cell the edges did not find (by the border, in folded cells) or whose
// solve failed take the walk with the full solve, and a search where the walk missed a target
// that the border says is covered.
void InvertRow(const Cells& cells, const Border* border, const int32_t* col_guess,
               int64_t row_guess, const float* xs, int64_t n, double py,
               float* x_out, float* y_out, uint8_t* covered_out, std::vector<int32_t>* solved,
               BorderRow* border_row, std::vector<Run>* runs) {
  const int64_t cells_h = cells.rows(), cells_w = cells.cols();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const int64_t max_steps = 2 * (cells_h + cells_w);
  solved->resize(n);
  if (static_cast<int64_t>(runs->size()) < n) runs->resize(n);  // At most one run per target.
  int64_t count = 0;
  border_row->Reset(border, py);
  // Target c joins the last run if that is of the same cell and kind, else starts one (`make`
  // gives the new run's cell).
  auto add = [&](int64_t c, int64_t cell, bool outside, auto make) {
    Run* last = runs->data() + count - 1;
    if (count > 0 && last->end == c && last->cell == cell && last->outside == outside) {
      last->end = c + 1;
    } else {
      (*runs)[count++] = {c, c + 1, cell, outside, make()};
    }
  };
  const bool sparse = cells_w >= n;
  int64_t row = row_guess, col = -1;
  Cell current{};
  EdgeLines lines{};
  bool have_lines = false;  // `current` and `lines` are cell (row, col)'s.
  for (int64_t c = 0; c < n; ++c) {
    const double px = xs[c];
    if (std::isnan(px)) {
      add(c, -1, false, [] { return Cell{}; });
      continue;
    }
    // Most targets lie in their left neighbour's cell: one range test. (Within rounding of a
    // side the solve decides, and the walk where it fails.)
    if (have_lines && lines.valid && px >= lines.lo && px <= lines.hi) {
      add(c, row * cells_w + col, false, [&] { return current; });
      continue;
    }
    if (border_row->SurelyOutside(px)) {
      add(c, row_guess * cells_w + col_guess[c], true,
          [&] { return cells(row_guess, col_guess[c]); });
      continue;
    }
    // From the left neighbour's cell; where the targets are sparser than the cells (unwarping
    // through a full-resolution grid), from the profiles' guess if that is more than a cell away.
    if (col < 0 || (sparse && std::abs(col_guess[c] - col) > 1)) {
      col = col_guess[c], have_lines = false;
    }
    int64_t found = -1;
    for (int64_t step = 0; step < max_steps; ++step) {
      if (!have_lines) current = cells(row, col), lines = EdgesAt(current, py), have_lines = true;
      int64_t dc, dr;
      if (lines.valid) {
        const double top = lines.slope[0] * px + lines.offset[0];
        const double right = lines.slope[1] * px + lines.offset[1];
        const double bottom = lines.slope[2] * px + lines.offset[2];
        const double left = lines.slope[3] * px + lines.offset[3];
        dc = right < 0 ? 1 : (left < 0 ? -1 : 0);
        dr = bottom < 0 ? 1 : (top < 0 ? -1 : 0);
        if (dc == 0 && dr == 0) {
          found = row * cells_w + col;
          break;
        }
      } else {
        // A degenerate cell (as clipping leaves them at a border): towards the target by the
        // cell's corners, as the walk steps; the walk decides a target inside their box.
        CornerStep(current, px, py, &dc, &dr);
        if (dc == 0 && dr == 0) {
          row = row_guess, col = -1;
          break;
        }
      }
      const int64_t next_row = std::min(std::max(row + dr, int64_t{0}), cells_h - 1);
      const int64_t next_col = std::min(std::max(col + dc, int64_t{0}), cells_w - 1);
      if (next_row == row && next_col == col) break;  // Beyond the grid's border.
      row = next_row, col = next_col, have_lines = false;
    }
    // Beyond the border the next target (most often beyond it too) starts where this one's
    // edges stopped; the walk that decides this one starts from the profiles' guess.
    add(c, found, false, [&] { return current; });
  }
  for (int64_t i = 0; i < count; ++i) {
    const Run& run = (*runs)[i];
    const int64_t c = run.begin, length = run.end - run.begin;
    if (run.cell >= 0) {
      SolveRun(run.k, run.cell / cells_w, run.cell % cells_w, py, xs + c, length, x_out + c,
               y_out + c, solved->data() + c);
    }
    for (int64_t j = c; j < run.end; ++j) {
      if (run.outside) {
        covered_out[j] = 0;  // Extrapolated from the run's cell.
        continue;
      }
      if (run.cell >= 0 && (*solved)[j]) {
        covered_out[j] = 1;
        continue;
      }
      const double px = xs[j];
      if (std::isnan(px)) {
        x_out[j] = nan, y_out[j] = nan, covered_out[j] = 0;
        continue;
      }
      const int64_t start = run.cell >= 0 ? run.cell : row_guess * cells_w + col_guess[j];
      Target target = Walk(cells, px, py, start / cells_w, start % cells_w);
      if (!target.covered && border_row->MayBeCovered(px)) border->Search(cells, px, py, &target);
      x_out[j] = static_cast<float>(target.x), y_out[j] = static_cast<float>(target.y);
      covered_out[j] = target.covered;
    }
  }
}

// The inverse's normalised positions (inverse.py's convention, align_corners=True over the grid's
// nodes) `[..., H, W, 2]`, interleaved, and `covered`. Uncovered targets get `fill` (both
// components) unless it is NaN, which keeps the extrapolation; NaN targets and grids stay NaN.
ffi::Error InvertImpl(Pool pool, ffi::Buffer<ffi::F32> grid, ffi::Buffer<ffi::F32> xs,
                      ffi::Buffer<ffi::F32> ys, ffi::ResultBuffer<ffi::F32> out,
                      ffi::ResultBuffer<ffi::U8> covered, float fill) {
  const auto gdims = grid.dimensions();
  const size_t rank = gdims.size();
  if (rank < 4 || gdims[rank - 1] != 2 || xs.dimensions().size() != rank - 2 ||
      ys.dimensions().size() != rank - 2) {
    return ffi::Error::InvalidArgument("invert: expected grid [..., h, w, 2], xs [..., W] and "
                                       "ys [..., H]");
  }
  const int64_t batch = Product(gdims, 0, rank - 3);
  const int64_t h = gdims[rank - 3], w = gdims[rank - 2];
  const int64_t big_w = xs.dimensions()[rank - 3], big_h = ys.dimensions()[rank - 3];
  if (h < 2 || w < 2) return ffi::Error::InvalidArgument("invert: the grid needs 2x2 nodes");
  const float* grid_data = grid.typed_data();
  const float* xs_data = xs.typed_data();
  const float* ys_data = ys.typed_data();
  float* out_data = out->typed_data();
  uint8_t* covered_data = covered->typed_data();
  const bool filled = !std::isnan(fill);
  // -1 + 2 x / (w - 1), as inverse.py normalises (the same float32 operations).
  const float x_span = static_cast<float>(w - 1), y_span = static_cast<float>(h - 1);
  const float nan = std::numeric_limits<float>::quiet_NaN();

  // Per image: whether its grid is finite, its border, and the mean profiles' first guesses
  // (each target column's cell column, and the row profile for each row's).
  struct Image {
    bool finite = true;
    std::unique_ptr<Border> border;  // Null where the grid has too many cells for it.
    std::vector<double> profile_y;
    std::vector<int32_t> col_guess;
  };
  std::vector<Image> images(batch);
  ParallelFor(pool, batch, [&](int64_t b) {
    const float* g = grid_data + b * h * w * 2;
    Image& image = images[b];
    for (int64_t k = 0; k < h * w * 2; ++k) image.finite &= std::isfinite(g[k]);
    if (!image.finite) return;
    // The border costs a pass over the cells: worth it where targets outnumber them.
    if ((h - 1) * (w - 1) * 8 <= big_h * big_w) {
      image.border = std::make_unique<Border>(Cells{g, h, w});
    }
    std::vector<double> profile_x(w, 0.0);
    image.profile_y.assign(h, 0.0);
    for (int64_t i = 0; i < h; ++i) {
      for (int64_t j = 0; j < w; ++j) {
        profile_x[j] += g[(i * w + j) * 2] / static_cast<double>(h);
        image.profile_y[i] += g[(i * w + j) * 2 + 1] / static_cast<double>(w);
      }
    }
    image.col_guess.resize(big_w);
    for (int64_t c = 0; c < big_w; ++c) {
      image.col_guess[c] = static_cast<int32_t>(ProfileCell(profile_x, xs_data[b * big_w + c]));
    }
  });

  const int64_t rows_per_chunk = std::max<int64_t>(1, 4096 / std::max<int64_t>(big_w, 1));
  const int64_t chunks_per_image = (big_h + rows_per_chunk - 1) / rows_per_chunk;
  ParallelFor(pool, batch * chunks_per_image, [&](int64_t chunk) {
    const int64_t b = chunk / chunks_per_image;
    const int64_t r_begin = (chunk % chunks_per_image) * rows_per_chunk;
    const int64_t r_end = std::min(big_h, r_begin + rows_per_chunk);
    const Image& image = images[b];
    std::vector<int32_t> solved;
    std::vector<float> x(big_w), y(big_w);  // A row's node coordinates.
    BorderRow border_row;
    std::vector<Run> runs;
    for (int64_t r = r_begin; r < r_end; ++r) {
      const double py = ys_data[b * big_h + r];
      const int64_t base = (b * big_h + r) * big_w;
      float* row_out = out_data + base * 2;
      uint8_t* row_covered = covered_data + base;
      if (!image.finite || std::isnan(py)) {
        std::fill(row_out, row_out + 2 * big_w, nan);
        std::fill(row_covered, row_covered + big_w, 0);
        continue;
      }
      InvertRow(Cells{grid_data + b * h * w * 2, h, w}, image.border.get(), image.col_guess.data(),
                ProfileCell(image.profile_y, py), xs_data + b * big_w, big_w, py, x.data(),
                y.data(), row_covered, &solved, &border_row, &runs);
      for (int64_t c = 0; c < big_w; ++c) {
        const float u = -1.f + 2.f * x[c] / x_span, v = -1.f + 2.f * y[c] / y_span;
        const bool keep = !filled || row_covered[c] || u != u;
        row_out[2 * c] = keep ? u : fill;
        row_out[2 * c + 1] = keep ? v : fill;
      }
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// The transpose of grid_sample's tap gathers (taps.scatter_to_image): the gradient to an image
// [..., H, W, C] from the cotangent g [..., h, w, C] of reads of the patches at (row, col) with
// weights wy[r] wx[c] (patches of `rows` x `cols` taps, 1 or 2 each). One task per image, which
// alone writes that image's gradient, so the sums need no atomics.
ffi::Error ScatterImpl(Pool pool, ffi::Buffer<ffi::S32> row, ffi::Buffer<ffi::S32> col,
                       ffi::Buffer<ffi::F32> wy0, ffi::Buffer<ffi::F32> wy1,
                       ffi::Buffer<ffi::F32> wx0, ffi::Buffer<ffi::F32> wx1,
                       ffi::Buffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> out, int64_t rows,
                       int64_t cols) {
  const auto gdims = g.dimensions();
  const auto odims = out->dimensions();
  const size_t rank = gdims.size();
  if (rank < 4 || odims.size() != rank || row.dimensions().size() != rank - 1) {
    return ffi::Error::InvalidArgument("scatter: expected g [..., h, w, C], out [..., H, W, C] "
                                       "and taps [..., h, w]");
  }
  const int64_t batch = Product(gdims, 0, rank - 3);
  const int64_t h = gdims[rank - 3], w = gdims[rank - 2], channels = gdims[rank - 1];
  const int64_t height = odims[rank - 3], width = odims[rank - 2];
  const int64_t targets = h * w, pixels = height * width;
  float* out_data = out->typed_data();
  ParallelFor(pool, batch, [&](int64_t b) {
    float* image = out_data + b * pixels * channels;
    std::fill(image, image + pixels * channels, 0.f);
    const int64_t base = b * targets;
    for (int64_t k = 0; k < targets; ++k) {
      const int64_t r0 = row.typed_data()[base + k], c0 = col.typed_data()[base + k];
      const float wy[2] = {wy0.typed_data()[base + k], wy1.typed_data()[base + k]};
      const float wx[2] = {wx0.typed_data()[base + k], wx1.typed_data()[base + k]};
      const float* cotangent = g.typed_data() + (base + k) * channels;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const float weight = wy[r] * wx[c];
          float* pixel = image + ((r0 + r) * width + c0 + c) * channels;
          for (int64_t ch = 0; ch < channels; ++ch) pixel[ch] += weight * cotangent[ch];
        }
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

#define SALIENCY_ANTIALIAS(name, type)                                                    \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, AntialiasImpl<type>,                                \
                                ffi::Ffi::Bind()                                          \
                                    .Ctx<Pool>()                                          \
                                    .Arg<ffi::Buffer<type>>()                             \
                                    .Arg<ffi::Buffer<ffi::F32>>()                         \
                                    .Ret<ffi::Buffer<ffi::F32>>()                         \
                                    .Attr<bool>("align_corners")                          \
                                    .Attr<int32_t>("padding_mode"));

SALIENCY_ANTIALIAS(SaliencyAntialiasU8, ffi::U8)
SALIENCY_ANTIALIAS(SaliencyAntialiasF32, ffi::F32)

XLA_FFI_DEFINE_HANDLER_SYMBOL(SaliencyInvert, InvertImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<Pool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U8>>()
                                  .Attr<float>("fill"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SaliencyScatter, ScatterImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<Pool>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("rows")
                                  .Attr<int64_t>("cols"));
