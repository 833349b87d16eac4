/* Fused distance kernels of RotatE and HAKE (kgestimator/models/_distance.py builds and calls them).
 *
 * One scoring problem, in the trainer's chunked layout: R chunks, each of c query rows and N
 * candidates shared by the chunk, d coordinates:
 *
 *   RotatE  P[r, i, j] = sum_k sqrt(max((q_re - x_re)^2 + (q_im - x_im)^2, TINY))
 *   HAKE    P[r, i, j] = sum_k |sin(alpha_k) cos(beta_k) - cos(alpha_k) sin(beta_k)|  (= |sin(alpha - beta)|)
 *           M[r, i, j] = sum_k (x_mod,k q_x,k - q_y,k)^2
 *
 * (HAKE's half phases alpha, beta come as cosines and sines: |sin(a - b)| by this product keeps the
 * derivative's magnitude exact where a ~ b, which a chord length |e^{ia} - e^{ib}| would not.)
 * x is candidate j or, with EMU masks, per coordinate, the positive of row i where the mask is set:
 * the mutated candidates are never materialised. Backward passes recompute each term and accumulate
 * the closed-form gradient; nothing of size (c, N, d) is stored. TINY is the square clamp of
 * models/_base.modulus (zero distance: zero gradient); NaN inputs propagate (the clamp is written so
 * that NaN fails the comparison), as does sign(NaN) below.
 *
 * Two loop orders:
 *  - *_forward / *_backward vectorise over candidates (candidates transposed, (R, wc, N)); masks, if
 *    any, (2d, N) per chunk in the floating type, are applied with blends. Any c.
 *  - *_sparse_* (EMU, one mask for every chunk, c >= a vector of rows) vectorise over the rows of a
 *    chunk (queries transposed, (R, wq, c)) and visit, per candidate, only the coordinates whose term
 *    depends on it (lists built by the caller); terms copied whole from the positive belong to the
 *    row alone and the caller adds them with a matrix product.
 *
 * This file includes itself once per floating type: the outer pass defines REAL, SFX, TINY, SQRT
 * (sqrtf for float: C's sqrt would promote every square to double) and RSQRT; the inner pass (#else)
 * holds the kernels.
 */
#ifndef REAL
#include <math.h>
#include <stdint.h>
#include <string.h>

/* candidates per tile: a tile of the transposed candidates (wc x JT) stays in L2 across rows */
#define JT 512

/* 1 / sqrt(s) for normal s > 0 in float: a bit-level first guess and three Newton steps (relative error
 * within a few units in the last place), on the vector units' multipliers; vsqrtps and vdivps share one
 * slow unit. NaN propagates through h. */
static inline float rsqrt_f32(float s)
{
    uint32_t i;
    float y;
    memcpy(&i, &s, sizeof i);
    i = 0x5f375a86u - (i >> 1);
    memcpy(&y, &i, sizeof y);
    const float h = 0.5f * s;
    y = y * (1.5f - h * y * y);
    y = y * (1.5f - h * y * y);
    return y * (1.5f - h * y * y);
}

static inline double rsqrt_f64(double s) { return 1.0 / sqrt(s); }

/* a * b - c * d. With fused multiply-adds the compiler would contract it into fma(a, b, -(c * d)),
 * which is not 0 where a * b = c * d (HAKE's phase distance between equal angles, whose gradient
 * must then be 0); Kahan's form is exact there and within 2 ulp elsewhere. */
#if defined(__FP_FAST_FMAF)
static inline float cross_f32(float a, float b, float c, float d)
{
    const float w = c * d;
    return fmaf(a, b, -w) + fmaf(-c, d, w);
}
#else
static inline float cross_f32(float a, float b, float c, float d) { return a * b - c * d; }
#endif
#if defined(__FP_FAST_FMA)
static inline double cross_f64(double a, double b, double c, double d)
{
    const double w = c * d;
    return fma(a, b, -w) + fma(-c, d, w);
}
#else
static inline double cross_f64(double a, double b, double c, double d) { return a * b - c * d; }
#endif

#define REAL float
#define SFX(name) name##_f32
#define TINY 1.17549435e-38f
#define SQRT sqrtf
#define RSQRT rsqrt_f32
#define ABS fabsf
#define CROSS cross_f32
#include __FILE__
#undef REAL
#undef SFX
#undef TINY
#undef SQRT
#undef RSQRT
#undef ABS
#undef CROSS

#define REAL double
#define SFX(name) name##_f64
#define TINY 2.2250738585072014e-308
#define SQRT sqrt
#define RSQRT rsqrt_f64
#define ABS fabs
#define CROSS cross_f64
#include __FILE__

#else

#define INLINE static inline __attribute__((always_inline))
#define SIGN(v) ((v) > 0 ? (REAL)1 : (v) < 0 ? (REAL)-1 : (v))

/* ---- vectorised over candidates ------------------------------------------------------------------
 * Q (R, c, wq) rows [re | im] (HAKE [cos | sin | y | x]); T (R, wc, N) candidates transposed, rows
 * [re | im] (HAKE [cos | sin | mod]); P (R, c, wc) positives and MT (R or 1, 2d, N) masks (rows
 * [re | im], HAKE [phase | mod]) with EMU, else NULL; OP, OM (R, c, N). Rows [row0, row1) of the
 * flattened (R * c), candidates [j0, j1). */
INLINE void SFX(fwd)(const REAL *restrict Q, const REAL *restrict T, const REAL *restrict P,
                     const REAL *restrict MT, REAL *restrict OP, REAL *restrict OM, int64_t c, int64_t N, int64_t d,
                     int64_t mask_stride, int64_t row0, int64_t row1, int64_t j0, int64_t j1, const int hake,
                     const int masked)
{
    const int64_t wq = hake ? 4 * d : 2 * d, wc = hake ? 3 * d : 2 * d;
    for (int64_t t0 = j0; t0 < j1; t0 += JT) {
        const int64_t n = (t0 + JT < j1 ? t0 + JT : j1) - t0;
        for (int64_t row = row0; row < row1; ++row) {
            const int64_t r = row / c;
            const REAL *q = Q + row * wq, *tr = T + r * wc * N + t0, *p = masked ? P + row * wc : 0;
            const REAL *mr = masked ? MT + r * mask_stride + t0 : 0;
            REAL *restrict op = OP + row * N + t0;
            for (int64_t j = 0; j < n; ++j) op[j] = 0;
            for (int64_t k = 0; k < d; ++k) {
                const REAL a = q[k], b = q[d + k], pa = masked ? p[k] : 0, pb = masked ? p[d + k] : 0;
                const REAL *restrict u = tr + k * N, *restrict v = tr + (d + k) * N;
                const REAL *restrict ma = masked ? mr + k * N : 0, *restrict mb = masked ? mr + (hake ? k : d + k) * N : 0;
#pragma omp simd
                for (int64_t j = 0; j < n; ++j) {
                    REAL cu = u[j], cv = v[j];  /* loaded unconditionally: blends, not masked loads */
                    if (masked) {
                        cu = ma[j] != 0 ? pa : cu;
                        cv = mb[j] != 0 ? pb : cv;
                    }
                    if (hake) {
                        op[j] += ABS(CROSS(b, cu, a, cv));
                    } else {
                        const REAL x = a - cu, y = b - cv;
                        REAL s = x * x + y * y;
                        s = s < TINY ? TINY : s;
                        op[j] += SQRT(s);
                    }
                }
            }
            if (!hake) continue;
            REAL *restrict om = OM + row * N + t0;
            for (int64_t j = 0; j < n; ++j) om[j] = 0;
            for (int64_t k = 0; k < d; ++k) {
                const REAL qy = q[2 * d + k], qx = q[3 * d + k], pm = masked ? p[2 * d + k] : 0;
                const REAL *restrict nm = tr + (2 * d + k) * N, *restrict mm = masked ? mr + (d + k) * N : 0;
#pragma omp simd
                for (int64_t j = 0; j < n; ++j) {
                    REAL x = nm[j];
                    if (masked) x = mm[j] != 0 ? pm : x;
                    const REAL e = x * qx - qy;
                    om[j] += e * e;
                }
            }
        }
    }
}

/* Gradients of fwd's outputs (GP, GM (R, c, N)) for chunks [r0, r1) and candidates [j0, j1),
 * accumulated into GQ, GT and GPOS (laid out like Q, T, P; the caller zeroes them). */
INLINE void SFX(bwd)(const REAL *restrict GP, const REAL *restrict GM, const REAL *restrict Q,
                     const REAL *restrict T, const REAL *restrict P, const REAL *restrict MT, REAL *restrict GQ,
                     REAL *restrict GT, REAL *restrict GPOS, int64_t c, int64_t N, int64_t d, int64_t mask_stride,
                     int64_t r0, int64_t r1, int64_t j0, int64_t j1, const int hake, const int masked)
{
    const int64_t wq = hake ? 4 * d : 2 * d, wc = hake ? 3 * d : 2 * d;
    for (int64_t r = r0; r < r1; ++r)
    for (int64_t t0 = j0; t0 < j1; t0 += JT) {
        const int64_t n = (t0 + JT < j1 ? t0 + JT : j1) - t0;
        const REAL *tr = T + r * wc * N + t0, *mr = masked ? MT + r * mask_stride + t0 : 0;
        REAL *gtr = GT + r * wc * N + t0;
        for (int64_t i = 0; i < c; ++i) {
            const int64_t row = r * c + i;
            const REAL *q = Q + row * wq, *restrict gp = GP + row * N + t0, *p = masked ? P + row * wc : 0;
            REAL *gq = GQ + row * wq, *gpos = masked ? GPOS + row * wc : 0;
            for (int64_t k = 0; k < d; ++k) {
                const REAL a = q[k], b = q[d + k], pa = masked ? p[k] : 0, pb = masked ? p[d + k] : 0;
                const REAL *restrict u = tr + k * N, *restrict v = tr + (d + k) * N;
                const REAL *restrict ma = masked ? mr + k * N : 0, *restrict mb = masked ? mr + (hake ? k : d + k) * N : 0;
                REAL *restrict gu = gtr + k * N, *restrict gv = gtr + (d + k) * N;
                REAL sa = 0, sb = 0, spa = 0, spb = 0;
#pragma omp simd
                for (int64_t j = 0; j < n; ++j) {
                    const REAL ka = masked ? ma[j] : 0, kb = masked ? mb[j] : 0;
                    REAL cu = u[j], cv = v[j];
                    if (masked) {
                        cu = ka != 0 ? pa : cu;
                        cv = kb != 0 ? pb : cv;
                    }
                    REAL du, dv;  /* gradient of the term with respect to the candidate's two parts */
                    if (hake) {
                        const REAL val = CROSS(b, cu, a, cv), sg = gp[j] * SIGN(val);
                        sa -= sg * cv;
                        sb += sg * cu;
                        du = sg * b;
                        dv = -sg * a;
                    } else {
                        const REAL x = a - cu, y = b - cv;
                        REAL s = x * x + y * y;
                        s = s < TINY ? TINY : s;
                        const REAL w = gp[j] * RSQRT(s);
                        du = -w * x;
                        dv = -w * y;
                        sa -= du;
                        sb -= dv;
                    }
                    if (masked) {  /* masks are 0 or 1: the products are exact */
                        spa += ka * du;
                        spb += kb * dv;
                        du -= ka * du;
                        dv -= kb * dv;
                    }
                    gu[j] += du;
                    gv[j] += dv;
                }
                gq[k] += sa;
                gq[d + k] += sb;
                if (masked) {
                    gpos[k] += spa;
                    gpos[d + k] += spb;
                }
            }
            if (!hake) continue;
            const REAL *restrict gm = GM + row * N + t0;
            for (int64_t k = 0; k < d; ++k) {
                const REAL qy = q[2 * d + k], qx = q[3 * d + k], pm = masked ? p[2 * d + k] : 0;
                const REAL *restrict nm = tr + (2 * d + k) * N, *restrict mm = masked ? mr + (d + k) * N : 0;
                REAL *restrict gnm = gtr + (2 * d + k) * N;
                REAL sy = 0, sx = 0, spm = 0;
#pragma omp simd
                for (int64_t j = 0; j < n; ++j) {
                    const REAL km = masked ? mm[j] : 0;
                    REAL x = nm[j];
                    if (masked) x = km != 0 ? pm : x;
                    const REAL h = 2 * gm[j] * (x * qx - qy);
                    REAL hq = h * qx;
                    sx += h * x;
                    sy += h;
                    if (masked) {
                        spm += km * hq;
                        hq -= km * hq;
                    }
                    gnm[j] += hq;
                }
                gq[2 * d + k] -= sy;
                gq[3 * d + k] += sx;
                if (masked) gpos[2 * d + k] += spm;
            }
        }
    }
}

/* ---- EMU vectorised over rows, visiting only candidate-dependent coordinates --------------------
 * QT (R, wq, c) queries transposed; CAND (R, N, wc) candidates; per candidate j, KIDX[j] (d entries)
 * lists coordinates grouped by kind and KOFF[j] (3 entries) ends the groups: RotatE: neither part
 * copied from the positive, only the real part (its difference is DPT = (q - p) transposed, like QT),
 * only the imaginary part; HAKE: phase coordinates not copied (one group), and KIDX2[j], KOFF2[j]
 * its modulus coordinates not copied. Outputs OPT, OMT (R, N, c). Chunks [r0, r1), candidates [j0, j1). */
INLINE void SFX(sparse_fwd)(const REAL *restrict QT, const REAL *restrict DPT, const REAL *restrict CAND,
                            const int32_t *restrict KIDX, const int32_t *restrict KOFF,
                            const int32_t *restrict KIDX2, const int32_t *restrict KOFF2, REAL *restrict OPT,
                            REAL *restrict OMT, int64_t c, int64_t N, int64_t d, int64_t r0, int64_t r1, int64_t j0,
                            int64_t j1, const int hake)
{
    const int64_t wq = hake ? 4 * d : 2 * d, wc = hake ? 3 * d : 2 * d;
    for (int64_t r = r0; r < r1; ++r) {
        const REAL *qt = QT + r * wq * c, *dpt = hake ? 0 : DPT + r * 2 * d * c, *cand = CAND + r * N * wc;
        for (int64_t j = j0; j < j1; ++j) {
            const REAL *cj = cand + j * wc;
            const int32_t *kj = KIDX + j * d, *oj = KOFF + 3 * j;
            REAL *restrict acc = OPT + (r * N + j) * c;
            for (int64_t i = 0; i < c; ++i) acc[i] = 0;
            for (int32_t t = 0; t < oj[2]; ++t) {
                const int64_t k = kj[t];
                const REAL cu = cj[k], cv = cj[d + k];
                if (hake) {
                    const REAL *restrict a = qt + k * c, *restrict b = qt + (d + k) * c;
                    for (int64_t i = 0; i < c; ++i) acc[i] += ABS(CROSS(b[i], cu, a[i], cv));
                    continue;
                }
                /* each part's difference: to the candidate, or the row's own to its positive */
                const int own_re = t < oj[0] || t >= oj[1], own_im = t < oj[1];
                const REAL *restrict a = own_re ? qt + k * c : dpt + k * c;
                const REAL *restrict b = own_im ? qt + (d + k) * c : dpt + (d + k) * c;
                const REAL sr = own_re ? cu : 0, si = own_im ? cv : 0;
                for (int64_t i = 0; i < c; ++i) {
                    const REAL x = a[i] - sr, y = b[i] - si;
                    REAL s = x * x + y * y;
                    s = s < TINY ? TINY : s;
                    acc[i] += SQRT(s);
                }
            }
            if (!hake) continue;
            REAL *restrict acm = OMT + (r * N + j) * c;
            const int32_t *kj2 = KIDX2 + j * d;
            for (int64_t i = 0; i < c; ++i) acm[i] = 0;
            for (int32_t t = 0; t < KOFF2[j]; ++t) {
                const int64_t k = kj2[t];
                const REAL nm = cj[2 * d + k];
                const REAL *restrict qy = qt + (2 * d + k) * c, *restrict qx = qt + (3 * d + k) * c;
                for (int64_t i = 0; i < c; ++i) {
                    const REAL e = nm * qx[i] - qy[i];
                    acm[i] += e * e;
                }
            }
        }
    }
}

/* Gradients of sparse_fwd's outputs (GPT, GMT (R, N, c)), accumulated into GQT, GDPT (like QT, DPT)
 * and GCAND (like CAND); the caller zeroes them. */
INLINE void SFX(sparse_bwd)(const REAL *restrict GPT, const REAL *restrict GMT, const REAL *restrict QT,
                            const REAL *restrict DPT, const REAL *restrict CAND, const int32_t *restrict KIDX,
                            const int32_t *restrict KOFF, const int32_t *restrict KIDX2,
                            const int32_t *restrict KOFF2, REAL *restrict GQT, REAL *restrict GDPT,
                            REAL *restrict GCAND, int64_t c, int64_t N, int64_t d, int64_t r0, int64_t r1,
                            int64_t j0, int64_t j1, const int hake)
{
    const int64_t wq = hake ? 4 * d : 2 * d, wc = hake ? 3 * d : 2 * d;
    for (int64_t r = r0; r < r1; ++r) {
        const REAL *qt = QT + r * wq * c, *dpt = hake ? 0 : DPT + r * 2 * d * c, *cand = CAND + r * N * wc;
        REAL *gqt = GQT + r * wq * c, *gdpt = hake ? 0 : GDPT + r * 2 * d * c, *gcand = GCAND + r * N * wc;
        for (int64_t j = j0; j < j1; ++j) {
            const REAL *cj = cand + j * wc, *restrict g = GPT + (r * N + j) * c;
            REAL *gcj = gcand + j * wc;
            const int32_t *kj = KIDX + j * d, *oj = KOFF + 3 * j;
            for (int32_t t = 0; t < oj[2]; ++t) {
                const int64_t k = kj[t];
                const REAL cu = cj[k], cv = cj[d + k];
                REAL su = 0, sv = 0;
                if (hake) {
                    const REAL *restrict a = qt + k * c, *restrict b = qt + (d + k) * c;
                    REAL *restrict ga = gqt + k * c, *restrict gb = gqt + (d + k) * c;
                    for (int64_t i = 0; i < c; ++i) {
                        const REAL sg = g[i] * SIGN(CROSS(b[i], cu, a[i], cv));
                        ga[i] -= sg * cv;
                        gb[i] += sg * cu;
                        su += sg * b[i];
                        sv -= sg * a[i];
                    }
                    gcj[k] += su;
                    gcj[d + k] += sv;
                    continue;
                }
                const int own_re = t < oj[0] || t >= oj[1], own_im = t < oj[1];
                const REAL *restrict a = own_re ? qt + k * c : dpt + k * c;
                const REAL *restrict b = own_im ? qt + (d + k) * c : dpt + (d + k) * c;
                REAL *restrict ga = own_re ? gqt + k * c : gdpt + k * c;
                REAL *restrict gb = own_im ? gqt + (d + k) * c : gdpt + (d + k) * c;
                const REAL sr = own_re ? cu : 0, si = own_im ? cv : 0;
                for (int64_t i = 0; i < c; ++i) {
                    const REAL x = a[i] - sr, y = b[i] - si;
                    REAL s = x * x + y * y;
                    s = s < TINY ? TINY : s;
                    const REAL w = g[i] * RSQRT(s), wx = w * x, wy = w * y;
                    ga[i] += wx;
                    gb[i] += wy;
                    su += wx;
                    sv += wy;
                }
                if (own_re) gcj[k] -= su;
                if (own_im) gcj[d + k] -= sv;
            }
            if (!hake) continue;
            const REAL *restrict gm = GMT + (r * N + j) * c;
            const int32_t *kj2 = KIDX2 + j * d;
            for (int32_t t = 0; t < KOFF2[j]; ++t) {
                const int64_t k = kj2[t];
                const REAL nm = cj[2 * d + k];
                const REAL *restrict qy = qt + (2 * d + k) * c, *restrict qx = qt + (3 * d + k) * c;
                REAL *restrict gy = gqt + (2 * d + k) * c, *restrict gx = gqt + (3 * d + k) * c;
                REAL sh = 0;
                for (int64_t i = 0; i < c; ++i) {
                    const REAL h = 2 * gm[i] * (nm * qx[i] - qy[i]);
                    gy[i] -= h;
                    gx[i] += h * nm;
                    sh += h * qx[i];
                }
                gcj[2 * d + k] += sh;
            }
        }
    }
}

/* ---- exported entry points: one specialisation per model and mask (the flags are constants) ---- */
#define SPECIALISE(call, hake, masked) \
    if (hake && masked) call(1, 1); else if (hake) call(1, 0); else if (masked) call(0, 1); else call(0, 0)

void SFX(distance_forward)(int64_t hake, const REAL *Q, const REAL *T, const REAL *P, const REAL *MT, REAL *OP,
                           REAL *OM, int64_t c, int64_t N, int64_t d, int64_t mask_stride, int64_t row0,
                           int64_t row1, int64_t j0, int64_t j1)
{
#define CALL(h, m) SFX(fwd)(Q, T, P, MT, OP, OM, c, N, d, mask_stride, row0, row1, j0, j1, h, m)
    SPECIALISE(CALL, hake, MT != 0);
#undef CALL
}

void SFX(distance_backward)(int64_t hake, const REAL *GP, const REAL *GM, const REAL *Q, const REAL *T,
                            const REAL *P, const REAL *MT, REAL *GQ, REAL *GT, REAL *GPOS, int64_t c, int64_t N,
                            int64_t d, int64_t mask_stride, int64_t r0, int64_t r1, int64_t j0, int64_t j1)
{
#define CALL(h, m) SFX(bwd)(GP, GM, Q, T, P, MT, GQ, GT, GPOS, c, N, d, mask_stride, r0, r1, j0, j1, h, m)
    SPECIALISE(CALL, hake, MT != 0);
#undef CALL
}

void SFX(sparse_forward)(int64_t hake, const REAL *QT, const REAL *DPT, const REAL *CAND, const int32_t *KIDX,
                         const int32_t *KOFF, const int32_t *KIDX2, const int32_t *KOFF2, REAL *OPT, REAL *OMT,
                         int64_t c, int64_t N, int64_t d, int64_t r0, int64_t r1, int64_t j0, int64_t j1)
{
    if (hake)
        SFX(sparse_fwd)(QT, DPT, CAND, KIDX, KOFF, KIDX2, KOFF2, OPT, OMT, c, N, d, r0, r1, j0, j1, 1);
    else
        SFX(sparse_fwd)(QT, DPT, CAND, KIDX, KOFF, KIDX2, KOFF2, OPT, OMT, c, N, d, r0, r1, j0, j1, 0);
}

void SFX(sparse_backward)(int64_t hake, const REAL *GPT, const REAL *GMT, const REAL *QT, const REAL *DPT,
                          const REAL *CAND, const int32_t *KIDX, const int32_t *KOFF, const int32_t *KIDX2,
                          const int32_t *KOFF2, REAL *GQT, REAL *GDPT, REAL *GCAND, int64_t c, int64_t N, int64_t d,
                          int64_t r0, int64_t r1, int64_t j0, int64_t j1)
{
    if (hake)
        SFX(sparse_bwd)(GPT, GMT, QT, DPT, CAND, KIDX, KOFF, KIDX2, KOFF2, GQT, GDPT, GCAND, c, N, d, r0, r1, j0, j1,
                        1);
    else
        SFX(sparse_bwd)(GPT, GMT, QT, DPT, CAND, KIDX, KOFF, KIDX2, KOFF2, GQT, GDPT, GCAND, c, N, d, r0, r1, j0, j1,
                        0);
}

#undef SPECIALISE
#undef INLINE
#undef SIGN

#endif
