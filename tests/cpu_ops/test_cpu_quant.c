/* test_cpu_quant.c - bitsandbytes quantization twins (lib/backend/nf4.h) and the CPU backend's
 * NF4 weights: the dynamic 8-bit maps, NF4 nearest-code decisions, nibble order, round trips,
 * double quantization of absmax, and weight_create on host and pre-quantized inputs. */
#include "cpu_ops_util.h"
#include "backend/nf4.h"
#include "backend/adam8bit.h"
#include "core/core.h"

static int nearest(const float *code, int n, float x) {
    int best = 0;
    for (int i = 1; i < n; i++) if (fabsf(x - code[i]) < fabsf(x - code[best])) best = i;
    return best;
}
/* distance of x from the nearest midpoint between adjacent codes: ties are left out */
static double tie_dist(const float *code, int n, float x) {
    double d = 1e9;
    for (int i = 0; i + 1 < n; i++) d = fmin(d, fabs(x - 0.5 * ((double)code[i] + code[i + 1])));
    return d;
}

static void test_dynamic_map(void) {
    float s[256], u[256];
    lt_dynamic_map(1, s);
    lt_dynamic_map(0, u);
    int mono = 1;
    for (int i = 1; i < 256; i++) mono &= s[i] > s[i - 1] && u[i] > u[i - 1];
    CHECK_MSG(mono, "dynamic maps must be strictly increasing");
    CHECK(s[255] == 1.0f && u[255] == 1.0f);
    CHECK(s[127] == 0.0f && u[0] == 0.0f);
    /* the signed map is not symmetric: its most negative entry is -(mean of the last two points of
     * linspace(0.1, 1, 65)) = -0.99296875, not -1 */
    CHECK_NEAR(s[0], -0.99296875, 1e-7);
    CHECK_NEAR(s[128], 5.5e-7, 1e-12);  /* 1e-6 * mean(0.1, 1) */
    CHECK_NEAR(u[1], 3.25e-7, 1e-12);   /* 1e-6 * mean(0.1, 0.55) */
    CHECK_NEAR(s[254], 0.99296875, 1e-7);
    /* entries where torch's fused multiply-add in linspace decides the last bit, as printed by
     * bnb's create_dynamic_map(signed=True) (a dump of all 256 values kept in a public port's code.h;
     * lt_dynamic_map reproduces all of them) */
    static const struct { int i; double v; } dump[] = {
        {128, 5.500000384017767e-07}, {129, 3.250000190746505e-06}, {196, 0.17734375596046448},
        {203, 0.2757812738418579}, {208, 0.3460937440395355}, {215, 0.44453126192092896},
        {220, 0.5148437023162842}, {229, 0.6414062976837158}, {236, 0.7398437261581421},
        {18, -0.7398437261581421}, {0, -0.992968738079071}, {254, 0.992968738079071},
    };
    for (size_t i = 0; i < sizeof dump / sizeof dump[0]; i++)
        CHECK_MSG(s[dump[i].i] == (float)dump[i].v, "signed map[%d] = %.17g, bnb has %.17g", dump[i].i,
                  (double)s[dump[i].i], dump[i].v);
    /* every value against the definition evaluated in double */
    double ref[256];
    for (int sg = 0; sg < 2; sg++) {
        int n = 0;
        for (int i = 0; i < 7; i++) {
            int k = sg ? (1 << i) : (1 << (i + 1));
            for (int j = 0; j < k; j++) {
                double b0 = 0.1 + 0.9 * j / k, b1 = 0.1 + 0.9 * (j + 1) / k;
                double m = pow(10.0, i - 6) * (b0 + b1) / 2;
                ref[n++] = m;
                if (sg) ref[n++] = -m;
            }
        }
        ref[n++] = 0; ref[n++] = 1;
        CHECK(n == 256);
        for (int a = 0; a < 256; a++) /* sort */
            for (int b = a + 1; b < 256; b++) if (ref[b] < ref[a]) { double t = ref[a]; ref[a] = ref[b]; ref[b] = t; }
        const float *m = sg ? s : u;
        double worst = 0;
        for (int i = 0; i < 256; i++) worst = fmax(worst, fabs(m[i] - ref[i]) / fmax(fabs(ref[i]), 1e-30));
        CHECK_MSG(worst < 1e-6, "%s dynamic map vs double definition: rel err %g", sg ? "signed" : "unsigned", worst);
    }
    /* the nearest-code searches of bnb pick the nearest code away from ties */
    int bad = 0;
    for (int t = 0; t < 200000; t++) {
        float x = (float)(2 * t_unif() - 1), xu = (float)t_unif();
        if (t & 1) { x *= 1e-3f; xu *= 1e-3f; } /* the dense region near zero */
        if (tie_dist(s, 256, x) > 1e-7 * fabsf(x) + 1e-12) {
            bad += lt_dynamic_index_ref(s, x) != nearest(s, 256, x);
            bad += lt_quantize_2d_ref(s, 1, x) != nearest(s, 256, x);
        }
        if (tie_dist(u, 256, xu) > 1e-7 * fabsf(xu) + 1e-12) bad += lt_quantize_2d_ref(u, 0, xu) != nearest(u, 256, xu);
    }
    CHECK_MSG(bad == 0, "%d nearest-code mismatches in the 8-bit searches", bad);
    CHECK(lt_dynamic_index_ref(s, 1.0f) == 255 && lt_dynamic_index_ref(s, -1.0f) == 0);
    CHECK(lt_quantize_2d_ref(u, 0, 0.0f) == 0 && lt_quantize_2d_ref(s, 1, 0.0f) == 127);
}

static void test_nf4(void) {
    /* the table and its decision tree */
    CHECK(lt_nf4_code[0] == -1.0f && lt_nf4_code[7] == 0.0f && lt_nf4_code[15] == 1.0f);
    int bad = 0;
    for (int t = 0; t < 200000; t++) {
        float x = (float)(2 * t_unif() - 1);
        if (tie_dist(lt_nf4_code, 16, x) > 1e-6) bad += lt_nf4_index_ref(x) != nearest(lt_nf4_code, 16, x);
    }
    CHECK_MSG(bad == 0, "%d NF4 decision-tree mismatches with the nearest code", bad);
    CHECK(lt_nf4_index_ref(NAN) == 0);
    /* nibble order: the even element in the high nibble */
    float x8[4] = {2.0f, -2.0f, 0.0f, 1.0f};
    uint8_t pk[2];
    float am;
    lt_nf4_quantize_ref(x8, 4, 64, pk, &am);
    CHECK(am == 2.0f);
    CHECK_MSG(pk[0] == 0xF0, "byte 0 = 0x%02x, want 0xF0 (x[0]=+absmax high nibble)", pk[0]);
    CHECK_MSG(pk[1] == 0x7C, "byte 1 = 0x%02x, want 0x7C", pk[1]);
    /* round trip over blocks (the widest gap is between -1 and -0.696) (with a short last block and an odd length) */
    const int64_t n = 64 * 37 + 13;
    float *x = t_rand(n, -3, 3), *y = t_zeros(n);
    for (int64_t i = 64; i < 128; i++) x[i] = 0.0f; /* an all-zero block */
    uint8_t *packed = malloc((size_t)(n + 1) / 2);
    float absmax[64];
    lt_nf4_quantize_ref(x, n, 64, packed, absmax);
    lt_nf4_dequantize_ref(packed, absmax, n, 64, NULL, y);
    CHECK((packed[(n - 1) / 2] & 0x0F) == 7); /* the odd tail pads with the code of 0 */
    double worst = 0;
    int exact = 1;
    for (int64_t i = 0; i < n; i++) {
        const float a = absmax[i / 64];
        if (a == 0.0f) { exact &= y[i] == 0.0f; continue; }
        float xn = x[i] * (1.0f / a);
        if (tie_dist(lt_nf4_code, 16, xn) > 1e-6) exact &= y[i] == lt_nf4_code[nearest(lt_nf4_code, 16, xn)] * a;
        worst = fmax(worst, fabs(y[i] - x[i]) / a);
    }
    CHECK_MSG(exact, "NF4 dequantized values must be code[nearest] * absmax");
    CHECK_MSG(worst <= (1.0 - 0.6961928009986877) / 2 + 1e-6, "NF4 round-trip error %g of absmax", worst);
    /* double quantization of the absmax */
    const int64_t nb = 700;
    float *ab = t_rand(nb, 0.01f, 0.2f), *ab2 = t_zeros(nb);
    uint8_t *q8 = malloc(nb);
    float nested[3], offset;
    lt_nf4_double_quant_ref(ab, nb, q8, nested, &offset);
    double mean = 0;
    for (int64_t i = 0; i < nb; i++) mean += ab[i];
    CHECK_NEAR(offset, mean / nb, 1e-7);
    lt_nf4_double_dequant_ref(q8, nested, NULL, offset, nb, ab2);
    double dq = 0;
    for (int64_t i = 0; i < nb; i++) dq = fmax(dq, fabs(ab2[i] - ab[i]) / nested[i / 256]);
    CHECK_MSG(dq <= 0.00704 + 1e-6, "double-quant absmax error %g of the nested absmax", dq);
    /* nested absmax = max |absmax - offset| per 256 */
    float m0 = 0;
    for (int64_t i = 0; i < 256; i++) m0 = fmaxf(m0, fabsf(ab[i] - offset));
    CHECK(nested[0] == m0);
    free(x); free(y); free(packed); free(ab); free(ab2); free(q8);
}

static void test_weights(lt_backend *be) {
    const int64_t rows = 24, cols = 64 * 3, n = rows * cols;
    float *w = t_rand(n, -0.1f, 0.1f), *got = t_zeros(n), *ref = t_zeros(n);
    uint16_t *wb = malloc(n * 2);
    for (int64_t i = 0; i < n; i++) { wb[i] = lt_f32_to_bf16(w[i]); w[i] = lt_bf16_to_f32(wb[i]); }
    uint8_t *packed = malloc(n / 2);
    const int64_t nb = n / 64;
    float *absmax = malloc(nb * sizeof(float));
    lt_nf4_quantize_ref(w, n, 64, packed, absmax);
    lt_weight_desc d;
    memset(&d, 0, sizeof d);
    d.rows = rows; d.cols = cols;
    lt_bweight *W;
    uint64_t used0, peak;
    be->ops.memory(be, &used0, &peak);
    /* quant NONE keeps the exact values (bf16 -> f32) */
    d.host = wb; d.dtype = LT_DTYPE_BF16; d.quant = LT_QUANT_NONE;
    CHECK_OK(be->ops.weight_create(be, &d, &W));
    CHECK(be->ops.weight_bytes(W) == (size_t)n * 4);
    uint64_t used1;
    be->ops.memory(be, &used1, &peak);
    CHECK(used1 == used0 + (uint64_t)n * 4);
    CHECK_OK(be->ops.weight_read(be, W, got));
    CHECK(memcmp(got, w, n * 4) == 0);
    be->ops.weight_free(be, W);
    /* NF4 from bf16: bnb's quantization, dequantized and rounded back to bf16 as bnb does */
    lt_nf4_dequantize_ref(packed, absmax, n, 64, NULL, ref);
    for (int64_t i = 0; i < n; i++) ref[i] = lt_bf16_to_f32(lt_f32_to_bf16(ref[i]));
    d.quant = LT_QUANT_NF4;
    CHECK_OK(be->ops.weight_create(be, &d, &W));
    CHECK_OK(be->ops.weight_read(be, W, got));
    CHECK_MSG(memcmp(got, ref, n * 4) == 0, "NF4 weight != bnb quantize + dequantize");
    be->ops.weight_free(be, W);
    /* the same from a pre-quantized file (absmax in f32) */
    lt_weight_desc p;
    memset(&p, 0, sizeof p);
    p.rows = rows; p.cols = cols; p.dtype = LT_DTYPE_BF16; p.quant = LT_QUANT_NF4;
    p.nf4_packed = packed; p.absmax_f32 = absmax; p.quant_map = lt_nf4_code;
    CHECK_OK(be->ops.weight_create(be, &p, &W));
    CHECK_OK(be->ops.weight_read(be, W, got));
    CHECK_MSG(memcmp(got, ref, n * 4) == 0, "pre-quantized NF4 weight differs");
    be->ops.weight_free(be, W);
    /* double quant: host path and pre-quantized path agree */
    uint8_t q8[3 * 24];
    float nested[1], off, ab2[3 * 24];
    lt_nf4_double_quant_ref(absmax, nb, q8, nested, &off);
    lt_nf4_double_dequant_ref(q8, nested, NULL, off, nb, ab2);
    lt_nf4_dequantize_ref(packed, ab2, n, 64, NULL, ref);
    for (int64_t i = 0; i < n; i++) ref[i] = lt_bf16_to_f32(lt_f32_to_bf16(ref[i]));
    d.double_quant = 1;
    CHECK_OK(be->ops.weight_create(be, &d, &W));
    CHECK_OK(be->ops.weight_read(be, W, got));
    CHECK_MSG(memcmp(got, ref, n * 4) == 0, "double-quant NF4 weight differs");
    be->ops.weight_free(be, W);
    float code[256];
    lt_dynamic_map(1, code);
    p.absmax_f32 = NULL; p.absmax_u8 = q8; p.nested_absmax = nested; p.nested_code = code; p.nested_offset = off;
    p.double_quant = 1;
    CHECK_OK(be->ops.weight_create(be, &p, &W));
    CHECK_OK(be->ops.weight_read(be, W, got));
    CHECK_MSG(memcmp(got, ref, n * 4) == 0, "pre-quantized double-quant NF4 weight differs");
    be->ops.weight_free(be, W);
    /* bad descriptions fail with a message */
    p.nf4_packed = NULL;
    CHECK_FAIL(be->ops.weight_create(be, &p, &W), LT_ERR_INVALID_ARGUMENT, "neither host data");
    d.dtype = 99;
    CHECK_FAIL(be->ops.weight_create(be, &d, &W), LT_ERR_INVALID_ARGUMENT, "dtype 99");
    be->ops.memory(be, &used1, &peak);
    CHECK(used1 == used0 && peak >= used0 + (uint64_t)n * 4);
    free(w); free(got); free(ref); free(wb); free(packed); free(absmax);
}

int main(void) {
    t_seed(7);
    lt_backend *be;
    CHECK_OK(lt_backend_cpu_create(2, &be));
    test_dynamic_map();
    test_nf4();
    test_weights(be);
    lt_backend_free(be);
    return lt_test_done("test_cpu_quant");
}
