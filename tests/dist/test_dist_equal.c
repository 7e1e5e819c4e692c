/* test_dist_equal.c - data parallel on the CPU backend with the in-process collective:
 *   - world size 2 and 4 (grad_accum 4/W) give, step by step, the losses and finally the LoRA
 *     weights of world size 1 with grad_accum 4 after 10 steps, within 1e-6 with AdamW (within
 *     1e-5 / 1e-4 with 8-bit AdamW), LoRA dropout on, epochs crossed (reshuffles, short last
 *     micro-batches), with the micro-batches fused into passes and without;
 *   - world size 1 through the in-process collective equals the plain trainer bit for bit;
 *   - every rank ends with the same weights, bit for bit;
 *   - a checkpoint written at world size 2 (by rank 0 only) resumes at world sizes 1 and 4 to the
 *     losses and weights of the uninterrupted run. */
#include "dist_common.h"
#include <sys/stat.h>
#include <unistd.h>

#define WINDOW 4
#define STEPS 10
/* fp32 AdamW: the ranks' partial gradient sums differ from one rank's running sum in the last
 * bits only. 8-bit AdamW turns such a last-bit difference into a whole quantization step of its
 * state now and then, hence its looser bounds. */
static double tol_loss = 1e-6, tol_w = 1e-6;

static void compare(const char *what, const dist_rank *ref, const dist_rank *r, int world, int from_step) {
    for (int k = 0; k < world; k++) {
        CHECK_MSG(r[k].st == LT_DONE, "%s: rank %d ended with %s: %s", what, k, lt_status_string(r[k].st), r[k].err);
        CHECK_MSG(r[k].steps == STEPS - from_step, "%s: rank %d took %d steps", what, k, r[k].steps);
    }
    double worst = 0;
    for (int s = 0; s < r[0].steps && s + from_step < ref->steps; s++) {
        double d = fabs(r[0].losses[s] - ref->losses[s + from_step]);
        if (d > worst) worst = d;
        CHECK_MSG(d <= tol_loss, "%s: step %d loss %.9f vs world size 1 %.9f", what, s + from_step + 1, r[0].losses[s],
                  ref->losses[s + from_step]);
    }
    CHECK(r[0].nw == ref->nw);
    double dw = r[0].nw == ref->nw ? max_abs_diff(r[0].w, ref->w, ref->nw) : INFINITY;
    CHECK_MSG(dw <= tol_w, "%s: LoRA weights differ from world size 1 by %g", what, dw);
    for (int k = 1; k < world; k++)
        CHECK_MSG(r[k].nw == r[0].nw && !memcmp(r[k].w, r[0].w, r[0].nw * 4), "%s: rank %d's weights differ from rank 0's",
                  what, k);
    printf("%-56s max |loss diff| %.3g, max |weight diff| %.3g, final loss %.6f\n", what, worst, dw,
           r[0].steps ? r[0].losses[r[0].steps - 1] : 0.0);
}

static int exists(const char *dir, const char *name) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat sb;
    return stat(p, &sb) == 0;
}

int main(void) {
    lt_tokenizer *tok = fx_tokenizer();
    lt_dataset *ds = dist_dataset(tok);
    for (int o = 0; o < 2; o++)
    for (int fuse = 1; fuse >= 0; fuse--) {
        dist_optimizer = o ? LT_OPTIM_ADAMW_8BIT : LT_OPTIM_ADAMW;
        tol_loss = o ? 1e-5 : 1e-6;
        tol_w = o ? 1e-4 : 1e-6;
        const char *on = o ? "adamw_8bit" : "adamw";
        dist_rank *ref = dist_run_single(ds, WINDOW, fuse, STEPS, NULL);
        CHECK_MSG(ref->st == LT_DONE && ref->steps == STEPS, "reference run: %s", ref->err);
        /* the weights moved: the comparison below is not between two untouched adapters */
        dist_rank *w1c = dist_run(ds, WINDOW, 1, fuse, STEPS, NULL, NULL, 0, 30, -1, 0);
        char what[128];
        snprintf(what, sizeof what, "%s: world 1 + in-process comm, fuse %d", on, fuse);
        compare(what, ref, w1c, 1, 0);
        CHECK_MSG(max_abs_diff(w1c[0].w, ref->w, ref->nw) == 0 && !memcmp(w1c[0].losses, ref->losses, sizeof ref->losses),
                  "world size 1 through the collective must equal the plain trainer bit for bit");
        dist_free(w1c, 1);
        for (int world = 2; world <= 4; world += 2) {
            dist_rank *r = dist_run(ds, WINDOW, world, fuse, STEPS, NULL, NULL, 0, 30, -1, 0);
            snprintf(what, sizeof what, "%s: world %d x grad_accum %d, fuse %d", on, world, WINDOW / world, fuse);
            compare(what, ref, r, world, 0);
            dist_free(r, world);
        }
        if (!fuse && !o) {
            /* the adapter trained: the weights are far from their start */
            lt_model *fresh = dist_model();
            size_t n0;
            float *w0 = dist_weights(fresh, &n0);
            CHECK_MSG(max_abs_diff(w0, ref->w, n0) > 1e-4, "training moved the weights by only %g",
                      max_abs_diff(w0, ref->w, n0));
            free(w0);
            lt_model_free(fresh);

            /* checkpoint at world size 2 (step 5), resume at world sizes 1 and 4 */
            char out[] = "/tmp/lt_dist_ckpt_XXXXXX";
            CHECK(mkdtemp(out) != NULL);
            dist_rank *r2 = dist_run(ds, WINDOW, 2, fuse, STEPS, NULL, out, 5, 30, -1, 0);
            compare("world 2 writing checkpoints", ref, r2, 2, 0);
            dist_free(r2, 2);
            CHECK(exists(out, "checkpoint-5/trainer_state.json"));
            CHECK(exists(out, "checkpoint-10/optimizer.safetensors"));
            char ck[1100];
            snprintf(ck, sizeof ck, "%s/checkpoint-5", out);
            dist_rank *a = dist_run_single(ds, WINDOW, fuse, STEPS, ck);
            compare("resume at world 1 from a world-2 checkpoint", ref, a, 1, 5);
            dist_free(a, 1);
            dist_rank *b = dist_run(ds, WINDOW, 4, fuse, STEPS, ck, NULL, 0, 30, -1, 0);
            compare("resume at world 4 from a world-2 checkpoint", ref, b, 4, 5);
            dist_free(b, 4);
            char cmd[1200];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
            CHECK(system(cmd) == 0);
        }
        dist_free(ref, 1);
    }
    lt_dataset_free(ds);
    lt_tokenizer_free(tok);
    return lt_test_done("test_dist_equal");
}
