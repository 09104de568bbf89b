/* uqcodec's exact table functions in one compiled pass each.
 *
 * An optional accelerator of uqcodec.exactmath and uqcodec.entropy (the package works
 * without it, with the same bits):
 *   rows  - the Gaussian coding-table rows: for each element, the CDF at the bin edges
 *           (offset + j) / scale, j = 1 - W .. W, and the 2 W + 1 bin probabilities from
 *           them as entropy._fill makes them;
 *   elementwise - exactmath's ndtr, exp and log, and quantization's soft-rounding
 *                 inverse, elementwise.
 * Each is exactly the IEEE-754 operations of its NumPy version, in the same order. Built
 * without FMA contraction or fast-math (setup.py), every operation is correctly rounded
 * as NumPy's are, so the values are NumPy's bit for bit (tests/test_tables_kernel.py
 * checks it). The constants come from Python (exactmath): defined once. With GCC or
 * clang on x86-64, rows and ndtr are also compiled for AVX2, chosen at run time. */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

/* consts (exactmath.KERNEL_CONSTANTS): [0..9] erfc's coefficients, [10..19] 1/k! for
 * k = 0..9, [20] INV_LN2, [21] LN2_HI, [22] LN2_LO, [23] SQRT_HALF */
#define NCONST 24

static inline double pow2(int32_t n) {  /* 2^n, -1022 <= n <= 1023 */
    uint64_t b = (uint64_t)(uint32_t)(n + 1023) << 52;
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static inline double ndtr(double t, const double *c) {
    double x = -t * c[23];
    double z = fabs(x);
    double tt = 1.0 / (1.0 + 0.5 * z);
    double poly = c[9];
    poly *= tt; poly += c[8];
    poly *= tt; poly += c[7];
    poly *= tt; poly += c[6];
    poly *= tt; poly += c[5];
    poly *= tt; poly += c[4];
    poly *= tt; poly += c[3];
    poly *= tt; poly += c[2];
    poly *= tt; poly += c[1];
    poly *= tt; poly += c[0];
    poly -= z * z;
    /* exactmath.exp(poly, terms=9); poly is finite (the caller checks the offsets) */
    double e = poly < -745.0 ? -745.0 : poly;
    e = e > 709.0 ? 709.0 : e;
    double v = e * c[20] + 0.5;
    int32_t ni = (int32_t)v;  /* floor(v): |v| < 1100 */
    ni -= (double)ni > v;
    double n = (double)ni;
    double r = e - n * c[21];
    r -= n * c[22];
    double p = c[19];
    p *= r; p += c[18];
    p *= r; p += c[17];
    p *= r; p += c[16];
    p *= r; p += c[15];
    p *= r; p += c[14];
    p *= r; p += c[13];
    p *= r; p += c[12];
    p *= r; p += c[11];
    p *= r; p += c[10];
    /* ldexp(p, n), rounded once: p 2^n1 is exact, n1 >= -1000 */
    int32_t n1 = ni < -1000 ? -1000 : ni;
    double ans = p * pow2(n1) * pow2(ni - n1);
    ans *= tt;
    ans = x >= 0.0 ? ans : 2.0 - ans;
    return 0.5 * ans;
}

/* exactmath.exp(x, terms) elementwise; f[k] = 1/k! (exactmath._INV_FACTORIAL) */
static inline double exp_terms(double x, const double *f, int terms, const double *c) {
    if (x != x)
        return x;  /* NaN (NumPy's ldexp of NaN) */
    x = x < -745.0 ? -745.0 : x;  /* np.maximum / np.minimum: NaN stays NaN */
    x = x > 709.0 ? 709.0 : x;
    double n = floor(x * c[20] + 0.5);
    double r = x - n * c[21];
    r -= n * c[22];
    double p = f[terms];
    for (int k = terms - 1; k >= 0; k--) {
        p *= r;
        p += f[k];
    }
    return ldexp(p, (int)n);
}

/* exactmath.log elementwise: lg[0..11] = 1 / (2 k + 1), lg[12] = 1/25 */
/* log(x) from frexp's m, e (x = m 2^e, m in [1/2, 1)): exactmath.log after its frexp */
static inline double log_frexp(double m, int e, const double *lg, const double *c) {
    int small = m < c[23];
    m = small ? m * 2.0 : m;
    double ef = (double)(small ? e - 1 : e);
    double f = (m - 1.0) / (m + 1.0);
    double f2 = f * f;
    double s = lg[12];  /* s = lg[k] + f2 s for k = 11 .. 0, unrolled (so it vectorizes) */
    s = lg[11] + f2 * s; s = lg[10] + f2 * s; s = lg[9] + f2 * s; s = lg[8] + f2 * s;
    s = lg[7] + f2 * s; s = lg[6] + f2 * s; s = lg[5] + f2 * s; s = lg[4] + f2 * s;
    s = lg[3] + f2 * s; s = lg[2] + f2 * s; s = lg[1] + f2 * s; s = lg[0] + f2 * s;
    return 2.0 * f * s + (ef * c[21] + ef * c[22]);
}

static inline double log_exact(double x, const double *lg, const double *c) {
    int e;
    double m = frexp(x, &e);
    return log_frexp(m, e, lg, c);
}

/* log of a positive normal x: frexp from x's bits (the same m and e as frexp's there),
 * which vectorizes */
static inline double log_normal(double x, const double *lg, const double *c) {
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    int e = (int)((b >> 52) & 0x7ff) - 1022;
    b = (b & 0x800fffffffffffffULL) | 0x3fe0000000000000ULL;
    double m;
    memcpy(&m, &b, sizeof m);
    return log_frexp(m, e, lg, c);
}

/* The rows of n elements, ROWS_BLOCK elements at a time: the CDF at each edge for the
 * block's elements (a loop across elements, which the compiler vectorizes whatever W is:
 * most rows are narrow, W = 3 or 4), then their rows. cdf: (2 W + 1) ROWS_BLOCK doubles,
 * edge: 2 W + 1 (edge[m] = m - W). */
#define ROWS_BLOCK 8
#define FILL_ROWS_BODY                                                                  \
    Py_ssize_t width = 2 * W + 1;                                                       \
    for (Py_ssize_t i0 = 0; i0 < n; i0 += ROWS_BLOCK) {                                 \
        Py_ssize_t nb = n - i0 < ROWS_BLOCK ? n - i0 : ROWS_BLOCK;                      \
        const double *ob = o + i0;                                                      \
        for (Py_ssize_t m = 1; m <= 2 * W; m++) {  /* the edges j = m - W */            \
            double em = edge[m];                                                        \
            double *cm = cdf + m * ROWS_BLOCK;                                          \
            if (nb == ROWS_BLOCK) {                                                     \
                for (int b = 0; b < ROWS_BLOCK; b++)                                    \
                    cm[b] = ndtr((ob[b] + em) / scale, c);                              \
            } else {                                                                    \
                for (Py_ssize_t b = 0; b < nb; b++)                                     \
                    cm[b] = ndtr((ob[b] + em) / scale, c);                              \
            }                                                                           \
        }                                                                               \
        for (Py_ssize_t b = 0; b < nb; b++) {                                           \
            double *row = p + (i0 + b) * width;                                         \
            row[0] = cdf[ROWS_BLOCK + b];                                               \
            for (Py_ssize_t m = 1; m < 2 * W; m++)                                      \
                row[m] = cdf[(m + 1) * ROWS_BLOCK + b] - cdf[m * ROWS_BLOCK + b];       \
            row[2 * W] = 1.0 - cdf[2 * W * ROWS_BLOCK + b];                             \
            for (Py_ssize_t m = 0; m < width; m++)                                      \
                row[m] = row[m] >= 0.0 ? row[m] : 0.0;                                  \
        }                                                                               \
    }

#define FILL_ROWS_ARGS double *p, const double *o, Py_ssize_t n, double scale,           \
                       Py_ssize_t W, const double *c, double *cdf, const double *edge

static void fill_rows(FILL_ROWS_ARGS) { FILL_ROWS_BODY }

/* GCC or clang on x86-64: the same loop for AVX2 (four lanes; still no FMA: the flags
 * forbid contraction), taken when the CPU has it */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define HAVE_AVX2_CLONE 1
__attribute__((target("avx2"))) static void fill_rows_avx2(FILL_ROWS_ARGS) { FILL_ROWS_BODY }
#else
#define HAVE_AVX2_CLONE 0
#endif

/* rows(out, off, scale, W, consts[, simd]): out (n, 2W+1) float64, off (n,) float64,
 * both C-contiguous; the offsets finite (the caller checks). simd=0 takes the generic
 * loop even where AVX2 is there (tests compare the two). */
static PyObject *rows(PyObject *self, PyObject *args) {
    Py_buffer out, off, cb;
    double scale;
    Py_ssize_t W;
    int simd = 1;
    if (!PyArg_ParseTuple(args, "w*y*dny*|p", &out, &off, &scale, &W, &cb, &simd))
        return NULL;
    Py_ssize_t n = off.len / (Py_ssize_t)sizeof(double);
    Py_ssize_t width = 2 * W + 1;
    PyObject *result = NULL;
    if (W < 1 || W > (1 << 24) || !(scale > 0.0) || cb.len != NCONST * (Py_ssize_t)sizeof(double)
            || out.len != n * width * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "rows: bad sizes");
        goto done;
    }
    double *cdf = malloc(sizeof(double) * (size_t)((2 * W + 1) * (ROWS_BLOCK + 1)));
    if (!cdf) { PyErr_NoMemory(); goto done; }
    /* edge[m] = m - W, the bin edges' integer parts */
    double *edge = cdf + (2 * W + 1) * ROWS_BLOCK;
    for (Py_ssize_t m = 1; m <= 2 * W; m++)
        edge[m] = (double)(m - W);
    Py_BEGIN_ALLOW_THREADS
#if HAVE_AVX2_CLONE
    if (simd && __builtin_cpu_supports("avx2"))
        fill_rows_avx2((double *)out.buf, (const double *)off.buf, n, scale, W,
                       (const double *)cb.buf, cdf, edge);
    else
#endif
        fill_rows((double *)out.buf, (const double *)off.buf, n, scale, W,
                  (const double *)cb.buf, cdf, edge);
    Py_END_ALLOW_THREADS
    free(cdf);
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&off);
    PyBuffer_Release(&cb);
    return result;
}

#define NDTR_LOOP                                                                      \
    for (Py_ssize_t i = 0; i < n; i++)                                                 \
        o[i] = ndtr(x[i], c);

static void ndtr_all(double *o, const double *x, Py_ssize_t n, const double *c) { NDTR_LOOP }

#if HAVE_AVX2_CLONE
__attribute__((target("avx2"))) static void ndtr_all_avx2(double *o, const double *x,
                                                           Py_ssize_t n, const double *c) {
    NDTR_LOOP
}
#endif

enum { KIND_NDTR = 0, KIND_EXP = 1, KIND_LOG = 2, KIND_SRINV = 3 };

static inline double clip(double x, double lo, double hi) {  /* np.clip, finite x */
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

/* quantization.soft_round_inverse(y, alpha) with exactmath's atanh: t = [alpha,
 * 2 tanh(alpha / 2), log's 13 series coefficients] */
static inline double soft_round_inverse(double y, const double *t, const double *c) {
    double m = floor(y) + 0.5;
    double s = clip((y - m) * t[1], -1.0, 1.0);
    double x = clip(s, -1.0 + 0x1p-53, 1.0 - 0x1p-53);
    /* (1 + x) / (1 - x) lies in [2^-54, 2^54]: positive and normal */
    double r = (0.5 * log_normal((1.0 + x) / (1.0 - x), t + 2, c)) / t[0];
    return m + clip(r, -0.5, 0.5);
}

#define SRINV_LOOP                                                                     \
    for (Py_ssize_t i = 0; i < n; i++)                                                 \
        o[i] = soft_round_inverse(x[i], t, c);

static void srinv_all(double *o, const double *x, Py_ssize_t n, const double *t,
                      const double *c) { SRINV_LOOP }

#if HAVE_AVX2_CLONE
__attribute__((target("avx2"))) static void srinv_all_avx2(double *o, const double *x,
                                                            Py_ssize_t n, const double *t,
                                                            const double *c) {
    SRINV_LOOP
}
#endif

/* elementwise(out, x, kind, consts, table, terms): one of exactmath's functions over
 * float64 buffers of equal length: ndtr (KIND_NDTR; finite x, the caller checks; table
 * unused), exp (KIND_EXP; table = 1/k!, ``terms`` Taylor terms), log (KIND_LOG; table =
 * its 13 series coefficients) or the soft-rounding inverse (KIND_SRINV; finite x, the
 * caller checks; table: soft_round_inverse's t) */
static PyObject *elementwise(PyObject *self, PyObject *args) {
    Py_buffer out, x, cb, tb;
    int kind, terms;
    if (!PyArg_ParseTuple(args, "w*y*iy*y*i", &out, &x, &kind, &cb, &tb, &terms))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = x.len / (Py_ssize_t)sizeof(double);
    Py_ssize_t tn = tb.len / (Py_ssize_t)sizeof(double);
    int ok = out.len == x.len && cb.len == NCONST * (Py_ssize_t)sizeof(double)
             && (kind == KIND_NDTR || (kind == KIND_EXP && terms >= 0 && terms < tn)
                 || (kind == KIND_LOG && tn == 13) || (kind == KIND_SRINV && tn == 15));
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "elementwise: bad kind or sizes");
    } else {
        double *o = (double *)out.buf;
        const double *xi = (const double *)x.buf, *c = (const double *)cb.buf,
                     *t = (const double *)tb.buf;
        Py_BEGIN_ALLOW_THREADS
        if (kind == KIND_NDTR) {
#if HAVE_AVX2_CLONE
            if (__builtin_cpu_supports("avx2"))
                ndtr_all_avx2(o, xi, n, c);
            else
#endif
                ndtr_all(o, xi, n, c);
        } else if (kind == KIND_EXP) {
            for (Py_ssize_t i = 0; i < n; i++)
                o[i] = exp_terms(xi[i], t, terms, c);
        } else if (kind == KIND_LOG) {
            for (Py_ssize_t i = 0; i < n; i++)
                o[i] = log_exact(xi[i], t, c);
        } else {
#if HAVE_AVX2_CLONE
            if (__builtin_cpu_supports("avx2"))
                srinv_all_avx2(o, xi, n, t, c);
            else
#endif
                srinv_all(o, xi, n, t, c);
        }
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&x);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&tb);
    return result;
}

static PyObject *has_avx2(PyObject *self, PyObject *args) {
#if HAVE_AVX2_CLONE
    if (__builtin_cpu_supports("avx2"))
        Py_RETURN_TRUE;
#endif
    Py_RETURN_FALSE;
}

static PyMethodDef methods[] = {
    {"elementwise", elementwise, METH_VARARGS,
     "elementwise(out, x, kind, constants, table, terms): exactmath's ndtr (0), exp (1), "
     "log (2), quantization's soft-rounding inverse (3)."},
    {"has_avx2", has_avx2, METH_NOARGS, "Whether rows() and ndtr take their AVX2 loops here."},
    {"rows", rows, METH_VARARGS, "rows(out, offsets, scale, W, constants): Gaussian coding-table rows."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tables", NULL, -1, methods};

PyMODINIT_FUNC PyInit__tables(void) { return PyModule_Create(&module); }
