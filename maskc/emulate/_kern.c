/* maskc.emulate._kern: the emulator's matrix product as compiled C (docs/numerics.md,
 * "Matrix-vector product"), with its own small thread pool.
 *
 * Optional: pip builds it from the sdist when a C compiler is present; without it the emulator
 * runs the numba kernels of kernels.py, which compute the same integers (tests compare the two).
 *
 * What one call computes, for act8 rows x[t] (codes |x| <= 127, group shifts s[t, a] <= 7,
 * mantissa m[t], exponent e[t]) and one matrix whose level table spans at most 256 values
 * (every code's level is lmin + u with 0 <= u <= 255, u stored per weight):
 *
 *   S[t, r, a] = sum_{j in a} u[r, j] * x[t, j]                  |S| <= 32 * 255 * 127 < 2^21
 *   V[t, r, a] = S[t, r, a] + lmin * g0[t, a]  (g0 = sum_{j in a} x[t, j], |g0| <= 4064)
 *              = sum_{j in a} level[r, j] * x[t, j]               the contract's group sum
 *   A[t, r]    = sum_a msh[r, a / rep] * V[t, r, a] * 2^s[t, a]    int64, |A| < 2^53 (loader)
 *   B[t, r]    = sum_w zsh[r, w] * gw[t, w]    (gw = sum_{a in w} g0 * 2^s; 0 if symmetric)
 *   y[t, r]    = sat32(term(A * m, ka[r] - e - F) + term(B * m, kb[r] - e - F) + bias[r])
 *
 * |V| <= 32 * 127 * max|level| < 2^27 fits int32; msh and zsh fit int32 (prepared.py), so
 * every product is a 32 x 32 -> 64-bit multiply. A's bound is the loader's check (below 2^53),
 * so every int64 here is exact and y equals the numba kernels' y bit for bit.
 *
 * Layout (prepared.py builds it): rows in tiles of 16; per tile and activation group, the
 * weights' u as 8 "quads" of 64 bytes (byte 4 r + i of quad q is u[r, 4 q + i]); with
 * packed = 1 (every u < 16) quads 2l and 2l + 1 share line l (low and high nibble). One
 * AVX-512 VNNI vpdpbusd multiplies a quad by 4 broadcast activation bytes into 16 int32 sums.
 *
 * FP4 matrices (docs/numerics.md "FP4 matrices"; prepared.py): lut != NULL. The packed layout
 * holds the 4-bit E2M1 codes themselves and lut[code] their levels (|level| <= 12); the factors
 * msh are per weight group as above, with the format's SREF, and with half = 1 (nvfp4, groups
 * of 16) two per activation group: msh[2a] for quads 0..3, msh[2a + 1] for quads 4..7. Each
 * half's sum is |S16| <= 16 * 127 * 12 < 2^15, times a factor < 2^20, summed in int64. With
 * has_tm (nvfp4) the row's tensor mantissa kt[r] (< 2^24) multiplies A * m before the one
 * rounding: |A * m * kt| < 2^62 * 2^24, a 128-bit product (term128). These run tile_fp4, a
 * plain C loop, on every ISA (the AVX-512 VNNI loop of FP4 is not written yet).
 *
 * Threads: tiles are handed out in units from one atomic counter; the calling thread works
 * too (from the back, the workers from the front), so a worker that is asleep or descheduled
 * never holds a product up unless it already took a unit. Waiting threads spin at most
 * SPIN_NS, then sleep on a condition variable.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KERN_X86 1
#else
#define KERN_X86 0
#endif

#define TR 16        /* rows per tile */
#define AG 32        /* activation group */
#define QUAD 64      /* bytes of one quad (16 rows x 4 weights) */
#define MAXT 256     /* threads */
#define SPIN_NS 50000
#define PREFETCH 2048 /* bytes of weights fetched ahead of the product (decode streams them) */ /* how long a waiting thread spins before it sleeps */

typedef struct {
    int64_t T, C, cp, ng, ngw, rep, nt, rows, f, lmin;
    int packed, msh16, zsh16, has_zero, has_bias;
    int half, has_tm;    /* FP4: weight groups of 16; nvfp4's tensor mantissa */
    const int8_t *lut;   /* FP4: the level of each 4-bit code [16], or NULL */
    const int32_t *kt;   /* FP4 (has_tm): the tensor mantissa per row [nt * 16] */
    const int8_t *x8;    /* [T, cp] */
    const int32_t *oa;   /* [T, ng] lmin * g0 */
    const int32_t *sa;   /* [T, ng] act8 group shifts */
    const int64_t *gw;   /* [T, ngw] */
    const int64_t *m, *e;
    const uint8_t *codes; /* [nt, ng, lines, 64] */
    const void *msh, *zsh; /* [nt, ngw, 16] int16 or int32 */
    const int32_t *ka, *kb; /* [nt * 16] */
    const int64_t *bias; /* [nt * 16] */
    int64_t *out;        /* [T, rows] */
    int64_t tiles_per_unit;
    int64_t units;       /* set by run_job */
} job_t;

/* -- the contract's scalar functions (docs/numerics.md) --------------------------------------- */

#define TERM_LIMIT ((int64_t)1 << 40)

static inline int64_t shl64(int64_t v, int64_t k) { return (int64_t)((uint64_t)v << k); }

/* clamp(rsr(v, k), -2^40, 2^40) for |v| < 2^62 (kernels.term). */
static inline int64_t term(int64_t v, int64_t k) {
    int64_t r;
    if (k > 0) {
        if (k > 62) return 0; /* |v| < 2^62: the rounded quotient is 0 */
        r = (v + ((int64_t)1 << (k - 1))) >> k;
    } else {
        int64_t s = -k < 41 ? -k : 41;
        int64_t lim = (TERM_LIMIT >> s) + 1;
        r = shl64(v < -lim ? -lim : v > lim ? lim : v, s);
    }
    return r < -TERM_LIMIT ? -TERM_LIMIT : r > TERM_LIMIT ? TERM_LIMIT : r;
}

/* term(v, k) of a 128-bit v, |v| < 2^87 (nvfp4: A * m * kt): exact, then clamped as term. */
static inline int64_t term128(__int128 v, int64_t k) {
    if (k > 0) {
        if (k > 88) return 0; /* |v| < 2^87 <= 2^(k-1): the rounded quotient is 0 */
        __int128 r = (v + ((__int128)1 << (k - 1))) >> k;
        return r < -TERM_LIMIT ? -TERM_LIMIT : r > TERM_LIMIT ? TERM_LIMIT : (int64_t)r;
    }
    if (v > TERM_LIMIT) return TERM_LIMIT; /* k <= 0 only makes |v| larger */
    if (v < -TERM_LIMIT) return -TERM_LIMIT;
    return term((int64_t)v, k);
}

static inline int64_t sat32(int64_t v) {
    return v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v;
}

static inline int64_t mul64(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

static inline int64_t factor(const void *p, int is16, int64_t i) {
    return is16 ? ((const int16_t *)p)[i] : ((const int32_t *)p)[i];
}

/* y for the rows of one tile and one token, from A and B. */
static void epilogue(const job_t *J, int64_t tile, int64_t t, const int64_t *A, const int64_t *B) {
    int64_t r0 = tile * TR, n = J->rows - r0 < TR ? J->rows - r0 : TR;
    int64_t m = J->m[t], k0 = -J->e[t] - J->f;
    int64_t *y = J->out + t * J->rows + r0;
    for (int64_t r = 0; r < n; r++) {
        int64_t v = J->has_tm ? term128((__int128)mul64(A[r], m) * J->kt[r0 + r], J->ka[r0 + r] + k0)
                              : term(mul64(A[r], m), J->ka[r0 + r] + k0);
        if (J->has_zero) v += term(mul64(B[r], m), J->kb[r0 + r] + k0);
        if (J->has_bias) v += J->bias[r0 + r];
        y[r] = sat32(v);
    }
}

static inline void zero_sums(const job_t *J, int64_t tile, int64_t t, int64_t *B) {
    for (int r = 0; r < TR; r++) B[r] = 0;
    if (!J->has_zero) return;
    const int64_t *gw = J->gw + t * J->ngw;
    for (int64_t w = 0; w < J->ngw; w++) {
        int64_t base = (tile * J->ngw + w) * TR;
        for (int r = 0; r < TR; r++) B[r] += mul64(factor(J->zsh, J->zsh16, base + r), gw[w]);
    }
}

/* -- portable tile: plain C loops over the same layout -------------------------------------- */

static void tile_generic(const job_t *J, int64_t tile) {
    const int64_t lines = J->packed ? 4 : 8;
    const uint8_t *cb = J->codes + tile * J->ng * lines * QUAD;
    for (int64_t t = 0; t < J->T; t++) {
        int64_t A[TR] = {0}, B[TR];
        const int8_t *xt = J->x8 + t * J->cp;
        for (int64_t a = 0; a < J->ng; a++) {
            int32_t s[TR] = {0};
            const uint8_t *g = cb + a * lines * QUAD;
            const int8_t *xa = xt + a * AG;
            for (int q = 0; q < 8; q++) {
                const uint8_t *line = J->packed ? g + (q >> 1) * QUAD : g + q * QUAD;
                int sh = J->packed ? (q & 1) * 4 : 0, mask = J->packed ? 15 : 255;
                for (int r = 0; r < TR; r++)
                    for (int i = 0; i < 4; i++)
                        s[r] += ((line[r * 4 + i] >> sh) & mask) * (int32_t)xa[q * 4 + i];
            }
            int64_t base = (tile * J->ngw + a / J->rep) * TR;
            int32_t o = J->oa[t * J->ng + a];
            int64_t sft = J->sa[t * J->ng + a];
            for (int r = 0; r < TR; r++)
                A[r] += shl64(mul64(factor(J->msh, J->msh16, base + r), s[r] + o), sft);
        }
        zero_sums(J, tile, t, B);
        epilogue(J, tile, t, A, B);
    }
}

/* -- FP4 tile: packed codes, their levels from lut, groups of 16 or 32 (plain C) ------------- */

static void tile_fp4(const job_t *J, int64_t tile) {
    const uint8_t *cb = J->codes + tile * J->ng * 4 * QUAD;
    const int8_t *lut = J->lut;
    for (int64_t t = 0; t < J->T; t++) {
        int64_t A[TR] = {0}, B[TR] = {0};
        const int8_t *xt = J->x8 + t * J->cp;
        for (int64_t a = 0; a < J->ng; a++) {
            int32_t s[2][TR] = {{0}};
            const uint8_t *g = cb + a * 4 * QUAD;
            const int8_t *xa = xt + a * AG;
            for (int q = 0; q < 8; q++) { /* quads 0..3: elements 0..15; 4..7: 16..31 */
                const uint8_t *line = g + (q >> 1) * QUAD;
                int sh = (q & 1) * 4;
                int32_t *sq = s[q >> 2];
                for (int r = 0; r < TR; r++)
                    for (int i = 0; i < 4; i++)
                        sq[r] += lut[(line[r * 4 + i] >> sh) & 15] * (int32_t)xa[q * 4 + i];
            }
            int64_t sft = J->sa[t * J->ng + a];
            if (J->half) {
                int64_t b0 = (tile * J->ngw + 2 * a) * TR, b1 = b0 + TR;
                for (int r = 0; r < TR; r++)
                    A[r] += shl64(mul64(factor(J->msh, J->msh16, b0 + r), s[0][r]) +
                                      mul64(factor(J->msh, J->msh16, b1 + r), s[1][r]),
                                  sft);
            } else {
                int64_t base = (tile * J->ngw + a / J->rep) * TR;
                for (int r = 0; r < TR; r++)
                    A[r] += shl64(mul64(factor(J->msh, J->msh16, base + r), s[0][r] + s[1][r]), sft);
            }
        }
        epilogue(J, tile, t, A, B); /* FP4 is symmetric: B = 0 */
    }
}

/* -- AVX-512 VNNI tile ------------------------------------------------------------------------ */

#if KERN_X86
#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

VNNI_TARGET static inline __m512i bcast32(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

VNNI_TARGET static inline __m512i load_factor(const void *p, int is16, int64_t i) {
    if (is16) return _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)((const int16_t *)p + i)));
    return _mm512_loadu_si512((const void *)((const int32_t *)p + i));
}

/* y = sat32(term(A * m, k) + ...) for 8 rows in int64 lanes; returns 0 when a lane needs the
 * rare shift-left or huge-shift branches of term (the caller then runs the scalar epilogue). */
VNNI_TARGET static inline __m512i term8(__m512i v, __m512i k, int *ok) {
    const __m512i one = _mm512_set1_epi64(1), lim = _mm512_set1_epi64(TERM_LIMIT);
    __mmask8 bad = _mm512_cmple_epi64_mask(k, _mm512_setzero_si512()) |
                   _mm512_cmpgt_epi64_mask(k, _mm512_set1_epi64(62));
    if (bad) *ok = 0;
    __m512i half = _mm512_sllv_epi64(one, _mm512_sub_epi64(k, one));
    __m512i r = _mm512_srav_epi64(_mm512_add_epi64(v, half), k);
    return _mm512_max_epi64(_mm512_min_epi64(r, lim), _mm512_sub_epi64(_mm512_setzero_si512(), lim));
}

VNNI_TARGET static void epilogue_vnni(const job_t *J, int64_t tile, int64_t t, __m512i A0,
                                      __m512i A1, __m512i B0, __m512i B1) {
    int64_t r0 = tile * TR, n = J->rows - r0 < TR ? J->rows - r0 : TR;
    __m512i m = _mm512_set1_epi64(J->m[t]);
    __m512i k0 = _mm512_set1_epi64(-J->e[t] - J->f);
    __m512i A[2] = {A0, A1}, B[2] = {B0, B1};
    __m512i y[2];
    int ok = 1;
    for (int h = 0; h < 2; h++) {
        __m512i ka = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(J->ka + r0 + 8 * h))), k0);
        __m512i v = term8(_mm512_mullo_epi64(A[h], m), ka, &ok);
        if (J->has_zero) {
            __m512i kb = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(J->kb + r0 + 8 * h))), k0);
            v = _mm512_add_epi64(v, term8(_mm512_mullo_epi64(B[h], m), kb, &ok));
        }
        if (J->has_bias) v = _mm512_add_epi64(v, _mm512_loadu_si512((const void *)(J->bias + r0 + 8 * h)));
        v = _mm512_max_epi64(_mm512_min_epi64(v, _mm512_set1_epi64(INT32_MAX)), _mm512_set1_epi64(INT32_MIN));
        y[h] = v;
    }
    if (!ok) {
        int64_t a[TR], b[TR];
        _mm512_storeu_si512(a, A0);
        _mm512_storeu_si512(a + 8, A1);
        _mm512_storeu_si512(b, B0);
        _mm512_storeu_si512(b + 8, B1);
        epilogue(J, tile, t, a, b);
        return;
    }
    int64_t *out = J->out + t * J->rows + r0;
    if (n == TR) {
        _mm512_storeu_si512(out, y[0]);
        _mm512_storeu_si512(out + 8, y[1]);
    } else {
        __mmask16 keep = (__mmask16)((1u << n) - 1);
        _mm512_mask_storeu_epi64(out, (__mmask8)(keep & 0xff), y[0]);
        _mm512_mask_storeu_epi64(out + 8, (__mmask8)(keep >> 8), y[1]);
    }
}

VNNI_TARGET static void tile_vnni(const job_t *J, int64_t tile) {
    const int64_t lines = J->packed ? 4 : 8;
    const uint8_t *cb = J->codes + tile * J->ng * lines * QUAD;
    const __m512i nib = _mm512_set1_epi8(15);
    for (int64_t t = 0; t < J->T; t++) {
        __m512i A0 = _mm512_setzero_si512(), A1 = _mm512_setzero_si512();
        const int8_t *xt = J->x8 + t * J->cp;
        const int32_t *oa = J->oa + t * J->ng, *sa = J->sa + t * J->ng;
        for (int64_t a = 0; a < J->ng; a++) {
            const uint8_t *g = cb + a * lines * QUAD;
            const int8_t *xa = xt + a * AG;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int64_t l = 0; l < lines; l++) /* a few KiB ahead: the next tile's too */
                _mm_prefetch((const char *)(g + PREFETCH + l * QUAD), _MM_HINT_T0);
            if (J->packed) {
                __m512i l0 = _mm512_loadu_si512(g), l1 = _mm512_loadu_si512(g + QUAD);
                __m512i l2 = _mm512_loadu_si512(g + 2 * QUAD), l3 = _mm512_loadu_si512(g + 3 * QUAD);
                s0 = _mm512_dpbusd_epi32(s0, _mm512_and_si512(l0, nib), bcast32(xa));
                s1 = _mm512_dpbusd_epi32(s1, _mm512_and_si512(_mm512_srli_epi16(l0, 4), nib), bcast32(xa + 4));
                s0 = _mm512_dpbusd_epi32(s0, _mm512_and_si512(l1, nib), bcast32(xa + 8));
                s1 = _mm512_dpbusd_epi32(s1, _mm512_and_si512(_mm512_srli_epi16(l1, 4), nib), bcast32(xa + 12));
                s0 = _mm512_dpbusd_epi32(s0, _mm512_and_si512(l2, nib), bcast32(xa + 16));
                s1 = _mm512_dpbusd_epi32(s1, _mm512_and_si512(_mm512_srli_epi16(l2, 4), nib), bcast32(xa + 20));
                s0 = _mm512_dpbusd_epi32(s0, _mm512_and_si512(l3, nib), bcast32(xa + 24));
                s1 = _mm512_dpbusd_epi32(s1, _mm512_and_si512(_mm512_srli_epi16(l3, 4), nib), bcast32(xa + 28));
            } else {
                for (int q = 0; q < 8; q += 2) {
                    s0 = _mm512_dpbusd_epi32(s0, _mm512_loadu_si512(g + q * QUAD), bcast32(xa + 4 * q));
                    s1 = _mm512_dpbusd_epi32(s1, _mm512_loadu_si512(g + (q + 1) * QUAD), bcast32(xa + 4 * q + 4));
                }
            }
            __m512i v = _mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(oa[a]));
            __m512i f = load_factor(J->msh, J->msh16, (tile * J->ngw + a / J->rep) * TR);
            __m128i cnt = _mm_cvtsi32_si128(sa[a]);
            __m512i vlo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
            __m512i vhi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
            __m512i flo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(f));
            __m512i fhi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(f, 1));
            A0 = _mm512_add_epi64(A0, _mm512_sll_epi64(_mm512_mul_epi32(vlo, flo), cnt));
            A1 = _mm512_add_epi64(A1, _mm512_sll_epi64(_mm512_mul_epi32(vhi, fhi), cnt));
        }
        __m512i B0 = _mm512_setzero_si512(), B1 = _mm512_setzero_si512();
        if (J->has_zero) {
            const int64_t *gw = J->gw + t * J->ngw;
            for (int64_t w = 0; w < J->ngw; w++) {
                __m512i z = load_factor(J->zsh, J->zsh16, (tile * J->ngw + w) * TR);
                __m512i gv = _mm512_set1_epi64(gw[w]);
                B0 = _mm512_add_epi64(B0, _mm512_mullo_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(z)), gv));
                B1 = _mm512_add_epi64(B1, _mm512_mullo_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(z, 1)), gv));
            }
        }
        epilogue_vnni(J, tile, t, A0, A1, B0, B1);
    }
}

static int have_vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni");
}
#else
static int have_vnni(void) { return 0; }
static void tile_vnni(const job_t *J, int64_t tile) { tile_generic(J, tile); }
#endif

static int use_vnni = 0;
static pthread_mutex_t call_mu = PTHREAD_MUTEX_INITIALIZER;

static void run_unit(const job_t *J, int64_t u) {
    int64_t lo = u * J->tiles_per_unit, hi = lo + J->tiles_per_unit;
    if (hi > J->nt) hi = J->nt;
    for (int64_t tile = lo; tile < hi; tile++) {
        if (J->lut) tile_fp4(J, tile);
        else if (use_vnni) tile_vnni(J, tile);
        else tile_generic(J, tile);
    }
}

/* -- the thread pool --------------------------------------------------------------------------- */
/* ticket = generation (23 bits) | kind (1 bit) | units (20 bits) | next unit (20 bits). A unit
 * is claimed by a compare-and-swap on the whole ticket, so a thread holding a stale generation
 * can never claim a unit of the next job. A product sits in slot gen & 1: the caller fills slot
 * g + 1 only after every unit of g is done, and nobody can still claim units of g - 1.
 *
 * kind 1 is a prefetch: after a product the workers read the next product's weights (a hint
 * from the caller) into the caches while the calling thread runs the non-matrix units (norms,
 * attention), so decode overlaps its DRAM traffic with that work. The caller never waits for
 * a whole prefetch: the next call cancels what is left (a new generation), waits for the
 * units in flight (pf_busy, a 16 KiB read each), and only then lets go of the hint's arrays,
 * which the module holds a reference to until then. */

#define IDX_BITS 20
#define IDX_MASK ((1LL << IDX_BITS) - 1)
#define MAX_UNITS IDX_MASK

#define LINE 64
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv_job, cv_done;
    /* each hot atomic on its own cache line: a claim must not evict the job's fields */
    _Alignas(LINE) _Atomic int64_t ticket;
    _Alignas(LINE) _Atomic int64_t done;
    _Alignas(LINE) _Atomic int sleepers;
    _Atomic int main_waiting;
    _Atomic int quit;
    _Alignas(LINE) job_t slot[2];
    int nworkers;
    pthread_t th[MAXT];
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if KERN_X86
    _mm_pause();
#endif
}

static inline int64_t gen_of(int64_t t) { return t >> (2 * IDX_BITS + 1); }
static inline int kind_of(int64_t t) { return (int)((t >> (2 * IDX_BITS)) & 1); }

#define PF_MAX 64
#define PF_CHUNK 16384
static struct {
    const char *ptr[PF_MAX];
    int64_t len[PF_MAX], first_unit[PF_MAX + 1];
    int n;
} PF;

static _Atomic uint64_t pf_sink;
static _Atomic int pf_busy; /* prefetch units being read now */
static PyObject *pf_hold;   /* the arrays of the prefetch in progress */

static void prefetch_unit(int64_t u) {
    for (int i = 0; i < PF.n && i < PF_MAX; i++) {
        if (u < PF.first_unit[i] || u >= PF.first_unit[i + 1]) continue;
        const char *p = PF.ptr[i] + (u - PF.first_unit[i]) * PF_CHUNK;
        int64_t n = PF.len[i] - (u - PF.first_unit[i]) * PF_CHUNK;
        if (n > PF_CHUNK) n = PF_CHUNK;
        /* loads, not prefetch hints: a burst of hints overflows the miss buffers and is
         * dropped; a load waits for its line */
        uint64_t sink = 0;
        for (int64_t k = 0; k < n; k += 64) sink += *(const volatile uint8_t *)(p + k);
        pf_sink += sink;
        return;
    }
}

/* Runs unit ``idx`` of the product in generation ``gen``; the last one done wakes the caller
 * if it sleeps. */
static void finish(int64_t gen, int64_t idx) {
    const job_t *J = &P.slot[gen & 1];
    run_unit(J, idx);
    if (atomic_fetch_add(&P.done, 1) + 1 == J->units && atomic_load(&P.main_waiting)) {
        pthread_mutex_lock(&P.mu);
        pthread_cond_broadcast(&P.cv_done);
        pthread_mutex_unlock(&P.mu);
    }
}

/* Claims and runs units of the job in ticket generation ``gen`` from the front (the ticket's
 * next index; its units field is the end, lowered by the caller's claims from the back)
 * until none is left. */
static void work(int64_t gen) {
    for (;;) {
        int64_t t = atomic_load(&P.ticket);
        if (gen_of(t) != gen) return;
        int64_t units = (t >> IDX_BITS) & IDX_MASK, idx = t & IDX_MASK;
        if (idx >= units) return;
        if (kind_of(t)) { /* announced before the claim: see cancel_prefetch */
            atomic_fetch_add(&pf_busy, 1);
            if (atomic_compare_exchange_strong(&P.ticket, &t, t + 1)) prefetch_unit(idx);
            atomic_fetch_sub(&pf_busy, 1);
            continue;
        }
        if (!atomic_compare_exchange_weak(&P.ticket, &t, t + 1)) continue;
        finish(gen, idx);
    }
}

/* The calling thread's claims: from the back. The workers take units from the front, and
 * the front is what they have just read into their caches (the prefetch of the previous
 * call), so each side mostly works on lines its own core holds. */
static void work_back(int64_t gen) {
    for (;;) {
        int64_t t = atomic_load(&P.ticket);
        if (gen_of(t) != gen) return;
        int64_t hi = (t >> IDX_BITS) & IDX_MASK, lo = t & IDX_MASK;
        if (lo >= hi) return;
        if (!atomic_compare_exchange_weak(&P.ticket, &t, t - ((int64_t)1 << IDX_BITS))) continue;
        finish(gen, hi - 1);
    }
}

static void *worker(void *arg) {
    (void)arg;
    int64_t seen = gen_of(atomic_load(&P.ticket));
    for (;;) {
        int64_t until = now_ns() + SPIN_NS, g;
        for (int i = 0;; i++) {
            if (atomic_load(&P.quit)) return NULL;
            g = gen_of(atomic_load(&P.ticket));
            if (g != seen) break;
            cpu_relax();
            if ((i & 63) == 63 && now_ns() > until) {
                pthread_mutex_lock(&P.mu);
                atomic_fetch_add(&P.sleepers, 1);
                while (gen_of(atomic_load(&P.ticket)) == seen && !atomic_load(&P.quit))
                    pthread_cond_wait(&P.cv_job, &P.mu);
                atomic_fetch_sub(&P.sleepers, 1);
                pthread_mutex_unlock(&P.mu);
                until = now_ns() + SPIN_NS;
            }
        }
        seen = g;
        work(g);
    }
}

static void pool_stop(void) {
    if (!P.nworkers) return;
    pthread_mutex_lock(&P.mu);
    atomic_store(&P.quit, 1);
    pthread_cond_broadcast(&P.cv_job);
    pthread_mutex_unlock(&P.mu);
    for (int i = 0; i < P.nworkers; i++) pthread_join(P.th[i], NULL);
    P.nworkers = 0;
    atomic_store(&P.quit, 0);
}

static int pool_start(int workers) {
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&P.th[i], NULL, worker, NULL)) {
            P.nworkers = i;
            return -1;
        }
        P.nworkers = i + 1;
    }
    return 0;
}

static void after_fork_child(void) {
    /* the workers do not exist in a forked child: start over with none (set_threads again) */
    pthread_mutex_init(&call_mu, NULL);
    pthread_mutex_init(&P.mu, NULL);
    pthread_cond_init(&P.cv_job, NULL);
    pthread_cond_init(&P.cv_done, NULL);
    P.nworkers = 0;
    atomic_store(&P.sleepers, 0);
    atomic_store(&P.main_waiting, 0);
}

#define GEN_MASK ((1LL << 23) - 1)

static int64_t next_gen(void) { return (gen_of(atomic_load(&P.ticket)) + 1) & GEN_MASK; }

static void publish(int64_t gen, int kind, int64_t units) {
    atomic_store(&P.ticket, (gen << (2 * IDX_BITS + 1)) | ((int64_t)kind << (2 * IDX_BITS)) |
                                (units << IDX_BITS));
    if (atomic_load(&P.sleepers) > 0) {
        pthread_mutex_lock(&P.mu);
        pthread_cond_broadcast(&P.cv_job);
        pthread_mutex_unlock(&P.mu);
    }
}

/* Ends a prefetch: no unit can be claimed after the new generation, and the ones claimed
 * before it are finished when pf_busy is 0 (a claim succeeds only before the generation
 * changes, and its pf_busy increment precedes it). */
static void cancel_prefetch(void) {
    if (kind_of(atomic_load(&P.ticket))) publish(next_gen(), 0, 0);
    while (atomic_load(&pf_busy)) cpu_relax();
}

/* Hands the workers the prefetch of ``n`` ranges; returns at once. */
static void start_prefetch(const char **ptr, const int64_t *len, int n) {
    if (P.nworkers == 0 || n == 0) return;
    int64_t units = 0;
    PF.n = 0;
    for (int i = 0; i < n && i < PF_MAX; i++) {
        PF.ptr[i] = ptr[i];
        PF.len[i] = len[i];
        PF.first_unit[i] = units;
        units += (len[i] + PF_CHUNK - 1) / PF_CHUNK;
        PF.first_unit[i + 1] = units;
        PF.n = i + 1;
    }
    if (units > MAX_UNITS) units = MAX_UNITS;
    if (units > 0) publish(next_gen(), 1, units);
}

/* Beside busy processes the workers take CPU time from the calling thread, which carries
 * the token from product to product: with one busy process on 2 cores, 2 threads kept 45%
 * of their idle decode speed and 1 thread all of it (benchmarks/emulate_load.py). So every
 * CHECK_EVERY products the pool reads the number of runnable tasks (Linux: procs_running in
 * /proc/stat); while the others would leave fewer online CPUs than this pool has threads,
 * products run on the calling thread alone, without prefetch ("solo"). */
#define CHECK_EVERY 256
static int solo, check_left;

static int oversubscribed(void) {
#if defined(__linux__)
    FILE *fp = fopen("/proc/stat", "r");
    if (!fp) return 0;
    char line[256];
    long running = -1;
    while (fgets(line, sizeof line, fp))
        if (!strncmp(line, "procs_running ", 14)) {
            running = atol(line + 14);
            break;
        }
    fclose(fp);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (running < 0 || cpus <= 0) return 0;
    /* ours: this thread, and in the pooled mode the workers (spinning or prefetching) */
    long ours = 1 + (solo ? 0 : P.nworkers), others = running - ours;
    return others + P.nworkers + 1 > cpus;
#else
    return 0;
#endif
}

static void run_job(const job_t *J) {
    int64_t units = (J->nt + J->tiles_per_unit - 1) / J->tiles_per_unit;
    if (P.nworkers && --check_left <= 0) {
        check_left = CHECK_EVERY;
        solo = oversubscribed();
    }
    if (P.nworkers == 0 || units <= 1 || solo) {
        for (int64_t u = 0; u < units; u++) run_unit(J, u);
        return;
    }
    int64_t gen = next_gen();
    P.slot[gen & 1] = *J;
    P.slot[gen & 1].units = units;
    atomic_store(&P.done, 0);
    publish(gen, 0, units);
    work_back(gen);
    int64_t until = now_ns() + SPIN_NS;
    for (int i = 0; atomic_load(&P.done) < units; i++) {
        cpu_relax();
        if ((i & 63) == 63 && now_ns() > until) {
            pthread_mutex_lock(&P.mu);
            atomic_store(&P.main_waiting, 1);
            while (atomic_load(&P.done) < units) pthread_cond_wait(&P.cv_done, &P.mu);
            atomic_store(&P.main_waiting, 0);
            pthread_mutex_unlock(&P.mu);
            break;
        }
    }
}

/* -- Python binding ---------------------------------------------------------------------------- */

static int need(Py_buffer *b, Py_ssize_t n, const char *what) {
    if (b->len != n) {
        PyErr_Format(PyExc_ValueError, "_kern: %s has %zd bytes, expected %zd", what, b->len, n);
        return 0;
    }
    return 1;
}

/* A prepared matrix: its arrays' buffers held (pinned) for as long as the handle lives, their
 * sizes checked once, so a product call only reads the activations. */
#define MAT_BUFS 7
typedef struct {
    Py_buffer b[MAT_BUFS]; /* codes, msh, zsh, ka, kb, bias, kt (FP4 with has_tm) */
    int nb;
    int64_t cp, ng, ngw, rep, nt, rows, lmin;
    int packed, msh16, zsh16, has_zero, has_bias, half, has_tm, fp4;
    int8_t lut[16];
} mat_t;

static void mat_free(PyObject *cap) {
    mat_t *M = PyCapsule_GetPointer(cap, "maskc._kern.matrix");
    if (!M) return;
    for (int i = 0; i < M->nb; i++) PyBuffer_Release(&M->b[i]);
    free(M);
}

static PyObject *py_matrix(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[7], *lut = Py_None, *kt = Py_None;
    long long cp, ngw, rep, nt, rows, lmin;
    int packed, msh16, zsh16, has_zero, has_bias, half = 0;
    if (!PyArg_ParseTuple(args, "OpLLLLiOpOpOOOpLL|OpO", &o[0], &packed, &nt, &ngw, &rep, &lmin,
                          &msh16, &o[1], &zsh16, &o[2], &has_zero, &o[3], &o[4], &o[5], &has_bias,
                          &rows, &cp, &lut, &half, &kt))
        return NULL;
    int8_t table[16] = {0};
    int fp4 = lut != Py_None, has_tm = kt != Py_None;
    if (fp4) { /* the level of each 4-bit code: 16 bytes, |level| <= 127 */
        Py_buffer lb;
        if (PyObject_GetBuffer(lut, &lb, PyBUF_C_CONTIGUOUS)) return NULL;
        int bad = lb.len != 16;
        if (!bad) memcpy(table, lb.buf, 16);
        PyBuffer_Release(&lb);
        for (int i = 0; i < 16; i++) bad |= table[i] < -127;
        if (bad) {
            PyErr_SetString(PyExc_ValueError, "_kern.matrix: lut must be 16 int8 levels in -127..127");
            return NULL;
        }
    }
    if ((half || has_tm) && !fp4) {
        PyErr_SetString(PyExc_ValueError, "_kern.matrix: half and kt need an FP4 lut");
        return NULL;
    }
    o[6] = kt;
    int nbuf = has_tm ? 7 : 6;
    mat_t *M = calloc(1, sizeof(mat_t));
    if (!M) return PyErr_NoMemory();
    memcpy(M->lut, table, 16);
    for (int i = 0; i < nbuf; i++) {
        if (PyObject_GetBuffer(o[i], &M->b[i], PyBUF_C_CONTIGUOUS)) {
            for (int k = 0; k < i; k++) PyBuffer_Release(&M->b[k]);
            free(M);
            return NULL;
        }
        M->nb = i + 1;
    }
    M->cp = cp, M->ng = cp / AG, M->ngw = ngw, M->rep = rep, M->nt = nt, M->rows = rows;
    M->lmin = lmin, M->packed = packed, M->msh16 = msh16, M->zsh16 = zsh16;
    M->has_zero = has_zero, M->has_bias = has_bias;
    M->half = half, M->has_tm = has_tm, M->fp4 = fp4;
    int64_t lines = packed ? 4 : 8, fb = msh16 ? 2 : 4, zb = zsh16 ? 2 : 4;
    PyObject *cap = PyCapsule_New(M, "maskc._kern.matrix", mat_free);
    if (!cap) {
        for (int k = 0; k < M->nb; k++) PyBuffer_Release(&M->b[k]);
        free(M);
        return NULL;
    }
    if (cp <= 0 || cp % AG || rep <= 0 || (M->ng % rep) ||
        ngw != (half ? 2 * M->ng : M->ng / rep) || (half && rep != 1) || (fp4 && (!packed || has_zero)) ||
        nt <= 0 || rows <= 0 || rows > nt * TR || lmin < -(1 << 15) || lmin >= (1 << 15)) {
        PyErr_SetString(PyExc_ValueError, "_kern.matrix: inconsistent shapes");
        Py_DECREF(cap);
        return NULL;
    }
    if (!need(&M->b[0], nt * M->ng * lines * QUAD, "codes") ||
        !need(&M->b[1], nt * ngw * TR * fb, "msh") ||
        !need(&M->b[2], has_zero ? nt * ngw * TR * zb : M->b[2].len, "zsh") ||
        !need(&M->b[3], nt * TR * 4, "ka") || !need(&M->b[4], nt * TR * 4, "kb") ||
        !need(&M->b[5], has_bias ? nt * TR * 8 : M->b[5].len, "bias") ||
        (has_tm && !need(&M->b[6], nt * TR * 4, "kt"))) {
        Py_DECREF(cap);
        return NULL;
    }
    if (has_tm) { /* the tensor mantissa: 1 <= kt < 2^24 (term128's bound) */
        const int32_t *k = M->b[6].buf;
        for (int64_t i = 0; i < nt * TR; i++)
            if (k[i] < 1 || k[i] >= (1 << 24)) {
                PyErr_SetString(PyExc_ValueError, "_kern.matrix: kt must be in 1..2^24 - 1");
                Py_DECREF(cap);
                return NULL;
            }
    }
    return cap;
}

/* Arrays to prefetch after a product: their buffers held and their ranges listed once. */
typedef struct {
    Py_buffer b[PF_MAX];
    const char *ptr[PF_MAX];
    int64_t len[PF_MAX];
    int n;
} ranges_t;

static void ranges_free(PyObject *cap) {
    ranges_t *R = PyCapsule_GetPointer(cap, "maskc._kern.ranges");
    if (!R) return;
    for (int i = 0; i < R->n; i++) PyBuffer_Release(&R->b[i]);
    free(R);
}

static PyObject *py_ranges(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "O!", &PyTuple_Type, &seq)) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    if (n > PF_MAX) n = PF_MAX; /* the first PF_MAX arrays are prefetched */
    ranges_t *R = calloc(1, sizeof(ranges_t));
    if (!R) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(seq, i), &R->b[i], PyBUF_SIMPLE)) {
            for (int k = 0; k < R->n; k++) PyBuffer_Release(&R->b[k]);
            free(R);
            return NULL;
        }
        R->ptr[i] = R->b[i].buf;
        R->len[i] = R->b[i].len;
        R->n = (int)i + 1;
    }
    PyObject *cap = PyCapsule_New(R, "maskc._kern.ranges", ranges_free);
    if (!cap) {
        for (int k = 0; k < R->n; k++) PyBuffer_Release(&R->b[k]);
        free(R);
    }
    return cap;
}

static PyObject *py_matmul(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, s, m, e, out;
    long long C, f;
    PyObject *mcap, *hint = Py_None;
    if (!PyArg_ParseTuple(args, "y*y*y*y*LLOw*|O", &x, &s, &m, &e, &C, &f, &mcap, &out, &hint))
        return NULL;
    PyObject *ret = NULL;
    int32_t *oa = NULL, *sa = NULL;
    int64_t *gw = NULL;
    int8_t *x8 = NULL;
    ranges_t *R = NULL;
    mat_t *M = PyCapsule_GetPointer(mcap, "maskc._kern.matrix");
    if (!M) goto done;
    if (hint != Py_None && !(R = PyCapsule_GetPointer(hint, "maskc._kern.ranges"))) goto done;
    int64_t T = m.len / 8, cp = M->cp, ng = M->ng, ngw = M->ngw, rep = M->rep;
    int64_t ngc = (C + AG - 1) / AG;
    if (C <= 0 || C > cp || T <= 0 || T > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "_kern.matmul: inconsistent shapes");
        goto done;
    }
    if (!need(&x, T * C * 8, "x") || !need(&s, T * ngc * 8, "s") || !need(&e, T * 8, "e") ||
        !need(&out, T * M->rows * 8, "out"))
        goto done;
    x8 = calloc((size_t)(T * cp), 1);
    oa = calloc((size_t)(T * ng), 4);
    sa = calloc((size_t)(T * ng), 4);
    gw = calloc((size_t)(T * ngw), 8);
    if (!x8 || !oa || !sa || !gw) {
        PyErr_NoMemory();
        goto done;
    }
    const int64_t *xv = x.buf, *sv = s.buf;
    for (int64_t t = 0; t < T; t++) {
        for (int64_t a = 0; a < ng; a++) {
            int64_t g0 = 0, sh = a < ngc ? sv[t * ngc + a] : 0;
            if (sh < 0 || sh > 7) {
                PyErr_SetString(PyExc_ValueError, "_kern.matmul: an act8 group shift is outside 0..7");
                goto done;
            }
            for (int64_t j = a * AG; j < a * AG + AG && j < C; j++) {
                int64_t v = xv[t * C + j];
                if (v < -127 || v > 127) {
                    PyErr_SetString(PyExc_ValueError, "_kern.matmul: an act8 code is outside -127..127");
                    goto done;
                }
                x8[t * cp + j] = (int8_t)v;
                g0 += v;
            }
            oa[t * ng + a] = (int32_t)(M->lmin * g0);
            sa[t * ng + a] = (int32_t)sh;
            gw[t * ngw + a / rep] += shl64(g0, sh);
        }
    }
    job_t J = {T, C, cp, ng, ngw, rep, M->nt, M->rows, f, M->lmin, M->packed, M->msh16,
               M->zsh16, M->has_zero, M->has_bias, M->half, M->has_tm,
               M->fp4 ? M->lut : NULL, M->has_tm ? M->b[6].buf : NULL, x8, oa, sa, gw, m.buf,
               e.buf, M->b[0].buf, M->b[1].buf, M->b[2].buf, M->b[3].buf, M->b[4].buf,
               M->b[5].buf, out.buf, 1};
    /* units: about 4 per thread (claims are cheap, but each moves a cache line between
     * cores), and at least ~64k multiply-adds each */
    int64_t threads = P.nworkers + 1, macs_per_tile = T * TR * cp, nt = M->nt;
    J.tiles_per_unit = (nt + 4 * threads - 1) / (4 * threads);
    if (J.tiles_per_unit * macs_per_tile < (1 << 16)) J.tiles_per_unit = ((1 << 16) + macs_per_tile - 1) / macs_per_tile;
    if (J.tiles_per_unit > nt) J.tiles_per_unit = nt;
    if ((nt + J.tiles_per_unit - 1) / J.tiles_per_unit > MAX_UNITS)
        J.tiles_per_unit = (nt + MAX_UNITS - 1) / MAX_UNITS;
    PyObject *old_hold;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&call_mu); /* one product at a time uses the pool */
    cancel_prefetch();
    run_job(&J);
    old_hold = pf_hold;
    pf_hold = NULL;
    if (R && R->n && P.nworkers && !solo) {
        pf_hold = hint;
        start_prefetch(R->ptr, R->len, R->n);
    }
    pthread_mutex_unlock(&call_mu);
    Py_END_ALLOW_THREADS
    if (pf_hold == hint) Py_INCREF(hint); /* the ranges' buffers live until the prefetch ends */
    Py_XDECREF(old_hold);
    ret = Py_None;
    Py_INCREF(ret);
done:
    free(x8);
    free(oa);
    free(sa);
    free(gw);
    PyBuffer_Release(&x); PyBuffer_Release(&s); PyBuffer_Release(&m); PyBuffer_Release(&e);
    PyBuffer_Release(&out);
    return ret;
}

static PyObject *py_set_threads(PyObject *self, PyObject *args) {
    (void)self;
    int n;
    if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
    if (n < 1 || n > MAXT) {
        PyErr_Format(PyExc_ValueError, "threads must be 1..%d", MAXT);
        return NULL;
    }
    if (n - 1 != P.nworkers) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&call_mu);
        cancel_prefetch();
        pool_stop();
        pthread_mutex_unlock(&call_mu);
        Py_END_ALLOW_THREADS
        if (pool_start(n - 1)) {
            PyErr_SetString(PyExc_OSError, "could not start the emulator's threads");
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *py_threads(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyLong_FromLong(P.nworkers + 1);
}

static PyObject *py_isa(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyUnicode_FromString(use_vnni ? "avx512-vnni" : "portable");
}

static PyObject *py_set_isa(PyObject *self, PyObject *args) {
    (void)self;
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    if (!strcmp(name, "portable")) use_vnni = 0;
    else if (!strcmp(name, "avx512-vnni") && have_vnni()) use_vnni = 1;
    else if (!strcmp(name, "best")) use_vnni = have_vnni();
    else {
        PyErr_Format(PyExc_ValueError, "instruction set %s is not available here", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"matrix", py_matrix, METH_VARARGS, "A prepared matrix's handle (its arrays held)."},
    {"ranges", py_ranges, METH_VARARGS, "A prefetch hint: a tuple of arrays, held."},
    {"matmul", py_matmul, METH_VARARGS,
     "matmul(x, s, m, e, C, F, matrix, out[, ranges]): the exact product (see the source)."},
    {"set_threads", py_set_threads, METH_VARARGS, "Threads of the product (the caller included)."},
    {"threads", py_threads, METH_NOARGS, "Threads of the product."},
    {"isa", py_isa, METH_NOARGS, "The instruction set of the product's inner loop."},
    {"set_isa", py_set_isa, METH_VARARGS, "'portable', 'avx512-vnni' or 'best'."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kern",
                                    "The emulator's exact matrix product, compiled.", -1, methods};

PyMODINIT_FUNC PyInit__kern(void) {
    use_vnni = have_vnni();
    pthread_atfork(NULL, NULL, after_fork_child);
    return PyModule_Create(&module);
}
