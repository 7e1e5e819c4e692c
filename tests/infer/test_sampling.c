/* test_sampling.c - logits processors equal transformers' on fixed logits (fixture made by
 * make_sampling_fixtures.py), and sampling repeats for the same seed. */
#include "lt_test.h"
#include "infer/sample.h"
#include <jansson.h>

static float jf(json_t *o, const char *k, float dflt) {
    json_t *v = json_object_get(o, k);
    return v ? (float)json_number_value(v) : dflt;
}

int main(void) {
    json_error_t err;
    json_t *root = json_load_file(LT_REPO_ROOT "/tests/infer/data/sampling_expected.json", 0, &err);
    CHECK_MSG(root != NULL, "fixture: %s", err.text);
    if (!root) return lt_test_done("test_sampling");
    json_t *cases = json_object_get(root, "cases");
    size_t ci;
    json_t *c;
    json_array_foreach(cases, ci, c) {
        json_t *pp = json_object_get(c, "params");
        lt_generate_params p;
        lt_generate_params_init(&p);
        p.do_sample = json_is_true(json_object_get(pp, "do_sample"));
        p.temperature = jf(pp, "temperature", 1.0f);
        p.top_k = (int32_t)jf(pp, "top_k", 0);
        p.top_p = jf(pp, "top_p", 1.0f);
        p.min_p = jf(pp, "min_p", 0.0f);
        p.repetition_penalty = jf(pp, "repetition_penalty", 1.0f);
        json_t *jl = json_object_get(c, "logits"), *jh = json_object_get(c, "history"), *je = json_object_get(c, "expected");
        int32_t V = (int32_t)json_array_size(jl);
        float x[1024];
        int32_t hist[256];
        size_t nh = json_array_size(jh);
        for (int32_t i = 0; i < V; i++) x[i] = (float)json_number_value(json_array_get(jl, i));
        for (size_t i = 0; i < nh; i++) hist[i] = (int32_t)json_integer_value(json_array_get(jh, i));
        lt_sample_process(x, V, &p, hist, nh);
        int mismatched = 0;
        for (int32_t i = 0; i < V; i++) {
            json_t *e = json_array_get(je, i);
            if (json_is_null(e)) mismatched += !isinf(x[i]);
            else mismatched += !(fabs(x[i] - json_number_value(e)) <= 1e-5 * (1 + fabs(json_number_value(e))));
        }
        CHECK_MSG(mismatched == 0, "case %zu: %d of %d scores differ from transformers", ci, mismatched, V);
        if (p.do_sample) {
            int32_t a = lt_sample_pick(x, V, &p, 7), b = lt_sample_pick(x, V, &p, 7);
            CHECK(a == b);
            CHECK(!isinf(x[a]));
        }
    }
    json_decref(root);
    return lt_test_done("test_sampling");
}
