/* Fused message passing of NBFNet's layers (kgestimator/models/_nbf.py builds and calls them).
 *
 * One layer's aggregation, for B queries propagated together, d coordinates, over edges sorted by
 * destination (CSR: node v receives edges [rowptr[v], rowptr[v + 1]), from src[e] by relation rel[e]):
 *
 *   msg_e     = h[src_e] * w[rel_e]   (DistMult message)   or   h[src_e] + w[rel_e]   (TransE message)
 *   total[v]  = boundary[v] + sum_e msg_e           sq[v]  = boundary[v]^2 + sum_e msg_e^2
 *   high[v]   = max(boundary[v], max_e msg_e)       low[v] = min(boundary[v], min_e msg_e)
 *
 * elementwise over (query, coordinate); each node's boundary vector counts as one more message.
 * h, boundary and the outputs are (n, B, d); w is (R, B, d) (relation vectors per query) or
 * (R, 1, d) (shared). No message is ever stored: the forward pass keeps a node's four accumulators
 * (B x d each, in L1) while it walks the node's in-edges, gathering h[src] rows from a table that
 * stays in cache on the graphs NBFNet runs on (kinship: 425 KB); the backward pass recomputes each
 * message. The PyTorch path it replaces materialised (block, in-degree, B, d) message tensors and made
 * about 20 memory-bound passes over them per layer.
 *
 * Ties of the max and min: the forward pass also counts, per (node, query, coordinate), the messages
 * equal to the extreme (an online count: reset to 1 on a new extreme, + 1 on an equal one, the
 * boundary included), and the backward pass shares the extreme's gradient evenly among them, as
 * index_reduce's backward and models/nbfnet._BlockedMessages do (ReLU makes exact ties frequent).
 * The recomputed messages are bitwise the forward pass's (one rounded product or sum), so the
 * backward pass finds exactly the messages the forward pass counted.
 *
 * Threads split the query axis [b0, b1): every write of a call (outputs, g_h[src, b], per-query
 * g_w[rel, b], g_boundary) then falls in the caller's own slice, so calls over disjoint query ranges
 * never race; shared relation vectors (R, 1, d) take one g_w buffer per call, summed by the caller.
 *
 * This file includes itself once per floating type: the outer pass defines REAL and SFX; the inner
 * pass (#else) holds the kernels.
 */
#ifndef REAL
#include <stdint.h>

#define REAL float
#define SFX(name) name##_f32
#include __FILE__
#undef REAL
#undef SFX

#define REAL double
#define SFX(name) name##_f64
#include __FILE__

#else

#ifndef NBF_INLINE
#define NBF_INLINE static inline __attribute__((always_inline))
#endif

/* The forward pass over destinations [v0, v1) and queries [b0, b1); pna, distmult and per_query are
 * compile-time constants at each call site below, so every combination gets its own vector loops. */
NBF_INLINE void SFX(fwd)(const int64_t *restrict rowptr, const int64_t *restrict src, const int64_t *restrict rel,
                         const REAL *restrict h, const REAL *restrict w, const REAL *restrict bnd,
                         REAL *restrict total, REAL *restrict sq, REAL *restrict high, REAL *restrict low,
                         REAL *restrict cnt_hi, REAL *restrict cnt_lo, int64_t B, int64_t d, int64_t v0, int64_t v1,
                         int64_t b0, int64_t b1, const int pna, const int distmult, const int per_query)
{
    const int64_t row = B * d, w_row = per_query ? B * d : d;
    for (int64_t v = v0; v < v1; v++) {
        for (int64_t b = b0; b < b1; b++) {
            const int64_t o = v * row + b * d;
            const REAL *restrict bv = bnd + o;
            REAL *restrict tv = total + o;
#pragma omp simd
            for (int64_t k = 0; k < d; k++)
                tv[k] = bv[k];
            if (pna) {
                REAL *restrict sv = sq + o, *restrict hv = high + o, *restrict lv = low + o;
                REAL *restrict ch = cnt_hi + o, *restrict cl = cnt_lo + o;
#pragma omp simd
                for (int64_t k = 0; k < d; k++) {
                    sv[k] = bv[k] * bv[k];
                    hv[k] = bv[k];
                    lv[k] = bv[k];
                    ch[k] = 1;
                    cl[k] = 1;
                }
            }
        }
        for (int64_t e = rowptr[v]; e < rowptr[v + 1]; e++) {
            const REAL *restrict xs = h + src[e] * row;
            const REAL *restrict ws = w + rel[e] * w_row;
            for (int64_t b = b0; b < b1; b++) {
                const int64_t o = v * row + b * d;
                const REAL *restrict x = xs + b * d;
                const REAL *restrict wr = per_query ? ws + b * d : ws;
                REAL *restrict tv = total + o;
                if (!pna) {
#pragma omp simd
                    for (int64_t k = 0; k < d; k++)
                        tv[k] += distmult ? x[k] * wr[k] : x[k] + wr[k];
                    continue;
                }
                REAL *restrict sv = sq + o, *restrict hv = high + o, *restrict lv = low + o;
                REAL *restrict ch = cnt_hi + o, *restrict cl = cnt_lo + o;
#pragma omp simd
                for (int64_t k = 0; k < d; k++) {
                    const REAL m = distmult ? x[k] * wr[k] : x[k] + wr[k];
                    tv[k] += m;
                    sv[k] += m * m;
                    const REAL hi = hv[k], lo = lv[k];
                    ch[k] = m > hi ? (REAL)1 : ch[k] + (m == hi ? (REAL)1 : (REAL)0);
                    hv[k] = m > hi ? m : hi;
                    cl[k] = m < lo ? (REAL)1 : cl[k] + (m == lo ? (REAL)1 : (REAL)0);
                    lv[k] = m < lo ? m : lo;
                }
            }
        }
    }
}

/* The gradient of one message coordinate m = x (*|+) wr: the sum's, the square sum's 2 g_sq m, and an
 * even share of the max's (min's) where m attains it. */
NBF_INLINE REAL SFX(msg_grad)(REAL x, REAL wr, REAL gt, const REAL *restrict g2, const REAL *restrict hv,
                              const REAL *restrict lv, const REAL *restrict sh, const REAL *restrict sl, int64_t k,
                              const int pna, const int distmult)
{
    if (!pna)
        return gt;
    const REAL m = distmult ? x * wr : x + wr;
    return gt + g2[k] * m + (m == hv[k] ? sh[k] : (REAL)0) + (m == lv[k] ? sl[k] : (REAL)0);
}

/* The backward pass over destinations [v0, v1) and queries [b0, b1). g_tot, g_sq2 (= 2 g_sq), s_hi,
 * s_lo (= g_high / ties, g_low / ties) are (n, B, d); high and low are the forward pass's extremes
 * (unused without pna). Accumulates into g_h (n, B, d) and g_w (R, B | 1, d) (either may be NULL: not
 * needed) and writes g_bnd (n, B, d). */
NBF_INLINE void SFX(bwd)(const int64_t *restrict rowptr, const int64_t *restrict src, const int64_t *restrict rel,
                         const REAL *restrict h, const REAL *restrict w, const REAL *restrict bnd,
                         const REAL *restrict high, const REAL *restrict low, const REAL *restrict g_tot,
                         const REAL *restrict g_sq2, const REAL *restrict s_hi, const REAL *restrict s_lo,
                         REAL *restrict g_h, REAL *restrict g_w, REAL *restrict g_bnd, int64_t B, int64_t d,
                         int64_t v0, int64_t v1, int64_t b0, int64_t b1, const int pna, const int distmult,
                         const int per_query)
{
    const int64_t row = B * d, w_row = per_query ? B * d : d;
    for (int64_t v = v0; v < v1; v++) {
        for (int64_t b = b0; b < b1; b++) {
            const int64_t o = v * row + b * d;
            const REAL *restrict bv = bnd + o, *restrict gt = g_tot + o;
            REAL *restrict gb = g_bnd + o;
            if (!pna) {
#pragma omp simd
                for (int64_t k = 0; k < d; k++)
                    gb[k] = gt[k];
                continue;
            }
            const REAL *restrict g2 = g_sq2 + o, *restrict hv = high + o, *restrict lv = low + o;
            const REAL *restrict sh = s_hi + o, *restrict sl = s_lo + o;
#pragma omp simd
            for (int64_t k = 0; k < d; k++)
                gb[k] = gt[k] + g2[k] * bv[k] + (bv[k] == hv[k] ? sh[k] : (REAL)0)
                        + (bv[k] == lv[k] ? sl[k] : (REAL)0);
        }
        if (g_h == 0 && g_w == 0)
            continue;
        for (int64_t e = rowptr[v]; e < rowptr[v + 1]; e++) {
            const REAL *restrict xs = h + src[e] * row;
            const REAL *restrict ws = w + rel[e] * w_row;
            REAL *restrict ghs = g_h ? g_h + src[e] * row : 0;
            REAL *restrict gws = g_w ? g_w + rel[e] * w_row : 0;
            for (int64_t b = b0; b < b1; b++) {
                const int64_t o = v * row + b * d;
                const REAL *restrict x = xs + b * d;
                const REAL *restrict wr = per_query ? ws + b * d : ws;
                const REAL *restrict gt = g_tot + o, *restrict g2 = g_sq2 + o;
                const REAL *restrict hv = high + o, *restrict lv = low + o;
                const REAL *restrict sh = s_hi + o, *restrict sl = s_lo + o;
                if (ghs && gws) {  /* the common case: one recomputation of the message for both */
                    REAL *restrict gx = ghs + b * d, *restrict gr = per_query ? gws + b * d : gws;
#pragma omp simd
                    for (int64_t k = 0; k < d; k++) {
                        const REAL g = SFX(msg_grad)(x[k], wr[k], gt[k], g2, hv, lv, sh, sl, k, pna, distmult);
                        gx[k] += distmult ? g * wr[k] : g;
                        gr[k] += distmult ? g * x[k] : g;
                    }
                } else if (ghs) {
                    REAL *restrict gx = ghs + b * d;
#pragma omp simd
                    for (int64_t k = 0; k < d; k++) {
                        const REAL g = SFX(msg_grad)(x[k], wr[k], gt[k], g2, hv, lv, sh, sl, k, pna, distmult);
                        gx[k] += distmult ? g * wr[k] : g;
                    }
                } else {
                    REAL *restrict gr = per_query ? gws + b * d : gws;
#pragma omp simd
                    for (int64_t k = 0; k < d; k++) {
                        const REAL g = SFX(msg_grad)(x[k], wr[k], gt[k], g2, hv, lv, sh, sl, k, pna, distmult);
                        gr[k] += distmult ? g * x[k] : g;
                    }
                }
            }
        }
    }
}

/* Entry points: flags as ints, dispatched to the specialised bodies. */
#define NBF_DISPATCH(call, pna, distmult, per_query)                                                       \
    do {                                                                                                   \
        if (pna) {                                                                                         \
            if (distmult) {                                                                                \
                if (per_query) call(1, 1, 1); else call(1, 1, 0);                                          \
            } else {                                                                                       \
                if (per_query) call(1, 0, 1); else call(1, 0, 0);                                          \
            }                                                                                              \
        } else {                                                                                           \
            if (distmult) {                                                                                \
                if (per_query) call(0, 1, 1); else call(0, 1, 0);                                          \
            } else {                                                                                       \
                if (per_query) call(0, 0, 1); else call(0, 0, 0);                                          \
            }                                                                                              \
        }                                                                                                  \
    } while (0)

void SFX(nbf_forward)(const int64_t *rowptr, const int64_t *src, const int64_t *rel, const REAL *h, const REAL *w,
                      const REAL *bnd, REAL *total, REAL *sq, REAL *high, REAL *low, REAL *cnt_hi, REAL *cnt_lo,
                      int64_t B, int64_t d, int64_t pna, int64_t distmult, int64_t per_query, int64_t v0, int64_t v1,
                      int64_t b0, int64_t b1)
{
#define NBF_FWD(p, m, q) SFX(fwd)(rowptr, src, rel, h, w, bnd, total, sq, high, low, cnt_hi, cnt_lo, B, d, v0, v1, \
                                  b0, b1, p, m, q)
    NBF_DISPATCH(NBF_FWD, pna, distmult, per_query);
#undef NBF_FWD
}

void SFX(nbf_backward)(const int64_t *rowptr, const int64_t *src, const int64_t *rel, const REAL *h, const REAL *w,
                       const REAL *bnd, const REAL *high, const REAL *low, const REAL *g_tot, const REAL *g_sq2,
                       const REAL *s_hi, const REAL *s_lo, REAL *g_h, REAL *g_w, REAL *g_bnd, int64_t B, int64_t d,
                       int64_t pna, int64_t distmult, int64_t per_query, int64_t v0, int64_t v1, int64_t b0,
                       int64_t b1)
{
#define NBF_BWD(p, m, q) SFX(bwd)(rowptr, src, rel, h, w, bnd, high, low, g_tot, g_sq2, s_hi, s_lo, g_h, g_w, g_bnd, \
                                  B, d, v0, v1, b0, b1, p, m, q)
    NBF_DISPATCH(NBF_BWD, pna, distmult, per_query);
#undef NBF_BWD
}

#undef NBF_DISPATCH
#endif
