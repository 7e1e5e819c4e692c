/* report.c - what the trainer leaves in output_dir as it goes: log.jsonl (one JSON object per
 * logged or evaluated step), log.csv (the same rows as a table) and loss.svg (the logged loss,
 * its smoothed line and the eval loss, rewritten at every row). */
#include "train/trainer_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A growing text buffer for the SVG. */
typedef struct sbuf { char *p; size_t n, cap; int oom; } sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) LT_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = 1; return; }
        if (b->p && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)k;
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = cap;
    }
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about `n` ticks over `span`. */
static double nice_step(double span, int n) {
    if (!(span > 0)) return 1;
    double raw = span / n, p10 = pow(10, floor(log10(raw))), f = raw / p10;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p10;
}

/* Training loss smoothed as TensorBoard does (an exponential moving average, debiased so the
 * first points are not pulled toward 0): the trend through noisy per-step losses. */
#define LT_SVG_SMOOTHING 0.6

lt_status lt_report_svg(const char *path, const int64_t *steps, const double *losses, size_t n,
                        const int64_t *eval_steps, const double *eval_losses, size_t n_eval) {
    const double W = 800, H = 450, ml = 70, mr = 20, mt = 40, mb = 55;
    double pw = W - ml - mr, ph = H - mt - mb;
    double x0 = INFINITY, x1 = -INFINITY, y0 = 0, y1 = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        x0 = fmin(x0, (double)steps[i]);
        x1 = fmax(x1, (double)steps[i]);
        if (isfinite(losses[i])) { y0 = fmin(y0, losses[i]); y1 = fmax(y1, losses[i]); }
    }
    for (size_t i = 0; i < n_eval; i++) {
        x0 = fmin(x0, (double)eval_steps[i]);
        x1 = fmax(x1, (double)eval_steps[i]);
        if (isfinite(eval_losses[i])) { y0 = fmin(y0, eval_losses[i]); y1 = fmax(y1, eval_losses[i]); }
    }
    if (!isfinite(x0)) { x0 = 0; x1 = 1; }
    if (x1 <= x0) x1 = x0 + 1;
    /* the axis runs from 0 (a loss is >= 0) to just above the highest point: a flat, noisy curve
     * stays flat instead of being stretched over the whole height */
    if (!isfinite(y1) || y1 <= y0) y1 = y0 + 1;
    double ys = nice_step(y1 - y0, 5), xs = nice_step(x1 - x0, 8);
    y0 = floor(y0 / ys) * ys;
    y1 = ceil(y1 / ys) * ys;
    if (xs < 1) xs = 1;
    double *smooth = n ? malloc(n * sizeof *smooth) : NULL;
    if (n && !smooth) return lt_error(LT_ERR_OUT_OF_MEMORY, "%s: building the loss chart", path);
    double ema = 0, wsum = 0;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(losses[i])) {
            ema = LT_SVG_SMOOTHING * ema + (1 - LT_SVG_SMOOTHING) * losses[i];
            wsum = LT_SVG_SMOOTHING * wsum + (1 - LT_SVG_SMOOTHING);
        }
        smooth[i] = wsum > 0 ? ema / wsum : NAN;
    }
    sbuf b = {0};
    sb_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
                  "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    sb_printf(&b, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n", W, H);
    sb_printf(&b, "<text x=\"%.1f\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">%s</text>\n", W / 2,
              n_eval ? "training and eval loss" : "training loss");
#define SX(v) (ml + ((v) - x0) / (x1 - x0) * pw)
#define SY(v) (mt + ph - ((v) - y0) / (y1 - y0) * ph)
    /* grid and tick labels */
    for (double y = y0; y <= y1 + ys * 1e-6; y += ys) {
        sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", ml, SY(y), ml + pw,
                  SY(y));
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", ml - 6, SY(y) + 4, y);
    }
    for (double x = ceil(x0 / xs) * xs; x <= x1 + 1e-9; x += xs) {
        sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", SX(x), mt, SX(x),
                  mt + ph);
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", SX(x), mt + ph + 18, x);
    }
    /* axes and their labels */
    sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", ml, mt + ph, ml + pw,
              mt + ph);
    sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", ml, mt, ml, mt + ph);
    sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", ml + pw / 2, H - 12);
    sb_printf(&b, "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">loss</text>\n",
              mt + ph / 2, mt + ph / 2);
    /* the raw logged losses (light), the smoothed line over them, the eval loss */
    sb_printf(&b, "<polyline id=\"train-raw\" fill=\"none\" stroke=\"#1f77b4\" stroke-opacity=\"0.35\" "
                  "stroke-width=\"1\" points=\"");
    for (size_t i = 0, k = 0; i < n; i++)
        if (isfinite(losses[i])) sb_printf(&b, "%s%.1f,%.1f", k++ ? " " : "", SX((double)steps[i]), SY(losses[i]));
    sb_printf(&b, "\"/>\n");
    if (n <= 60)
        for (size_t i = 0; i < n; i++)
            if (isfinite(losses[i]))
                sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"#1f77b4\" fill-opacity=\"0.5\"><title>"
                          "step %lld: %.4f</title></circle>\n", SX((double)steps[i]), SY(losses[i]), (long long)steps[i],
                          losses[i]);
    sb_printf(&b, "<polyline id=\"train-smoothed\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2.5\" points=\"");
    for (size_t i = 0, k = 0; i < n; i++)
        if (isfinite(smooth[i])) sb_printf(&b, "%s%.1f,%.1f", k++ ? " " : "", SX((double)steps[i]), SY(smooth[i]));
    sb_printf(&b, "\"/>\n");
    if (n_eval) {
        sb_printf(&b, "<polyline id=\"eval\" fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"2\" points=\"");
        for (size_t i = 0, k = 0; i < n_eval; i++)
            if (isfinite(eval_losses[i]))
                sb_printf(&b, "%s%.1f,%.1f", k++ ? " " : "", SX((double)eval_steps[i]), SY(eval_losses[i]));
        sb_printf(&b, "\"/>\n");
        for (size_t i = 0; i < n_eval && n_eval <= 100; i++)
            if (isfinite(eval_losses[i]))
                sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#ff7f0e\"><title>step %lld: eval %.4f"
                          "</title></circle>\n", SX((double)eval_steps[i]), SY(eval_losses[i]),
                          (long long)eval_steps[i], eval_losses[i]);
    }
    /* legend */
    double lx = ml + 12, ly = mt + 14;
    sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" stroke-opacity=\"0.35\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\">training loss (logged)</text>\n", lx, ly, lx + 20, ly, lx + 26, ly + 4);
    sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" stroke-width=\"2.5\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\">smoothed (EMA %.1f)</text>\n", lx, ly + 16, lx + 20, ly + 16, lx + 26,
              ly + 20, LT_SVG_SMOOTHING);
    if (n_eval)
        sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ff7f0e\" stroke-width=\"2\"/>"
                      "<text x=\"%.1f\" y=\"%.1f\">eval loss</text>\n", lx, ly + 32, lx + 20, ly + 32, lx + 26, ly + 36);
    if (n)
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#555\">last: step %lld, loss %.4f "
                  "(smoothed %.4f)%s</text>\n", ml + pw, mt - 8, (long long)steps[n - 1], losses[n - 1],
                  smooth[n - 1], "");
    if (n_eval)
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#b35900\">eval: step %lld, %.4f</text>\n",
                  ml + pw, mt + 14, (long long)eval_steps[n_eval - 1], eval_losses[n_eval - 1]);
#undef SX
#undef SY
    sb_printf(&b, "</svg>\n");
    free(smooth);
    if (b.oom) { free(b.p); return lt_error(LT_ERR_OUT_OF_MEMORY, "%s: building the loss chart", path); }
    lt_status st = lt_write_file_atomic(path, b.p, b.n, 1);
    free(b.p);
    return st;
}

/* JSON number: finite values as %.17g would be noisy; %.8g keeps logs readable and exact enough.
 * Non-finite values become null (JSON has no NaN). */
static void jnum(char *buf, size_t cap, double v) {
    if (isfinite(v)) snprintf(buf, cap, "%.8g", v);
    else snprintf(buf, cap, "null");
}

/* CSV cell: the number, or empty */
static void cnum(char *buf, size_t cap, double v) {
    if (isfinite(v)) snprintf(buf, cap, "%.8g", v);
    else buf[0] = 0;
}

#define LT_CSV_HEADER "step,loss,lr,grad_norm,tokens,tokens_per_s,epoch,eval_loss,eval_accuracy\n"

/* Appends one row to output_dir/name with one write(2) on an O_APPEND file; a short or failed
 * write is cut back off, so the file holds whole rows only. `header` goes first into an empty
 * file. A fresh run (tr->log_fresh) truncates the file first. */
static lt_status append_row(lt_trainer *tr, const char *name, const char *header, const char *row, size_t n) {
    char *path = lt_path_join(tr->output_dir, name);
    if (!path) return lt_error(LT_ERR_OUT_OF_MEMORY, "log path");
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (tr->log_fresh ? O_TRUNC : 0), 0666);
    if (fd < 0) {
        lt_status st = lt_error(LT_ERR_IO, "%s: cannot open for appending: %s", path, strerror(errno));
        free(path);
        return st;
    }
    struct stat sb;
    off_t size0 = fstat(fd, &sb) == 0 ? sb.st_size : -1;
    lt_status st = LT_OK;
    if (header && size0 == 0) st = lt_fs_write_all(fd, header, strlen(header), path);
    if (st == LT_OK) st = lt_fs_write_all(fd, row, n, path);
    if (st != LT_OK && size0 >= 0 && ftruncate(fd, size0) != 0) { /* the error already names the write */ }
    if (close(fd) != 0 && st == LT_OK) st = lt_error(LT_ERR_IO, "%s: closing failed: %s", path, strerror(errno));
    free(path);
    return st;
}

lt_status lt_history_push(int64_t **steps, double **values, size_t *n, size_t *cap, int64_t step, double value,
                          const char *what) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 32;
        int64_t *s = lt_realloc(*steps, c * sizeof *s, what);
        if (!s) return LT_ERR_OUT_OF_MEMORY;
        *steps = s;
        double *v = lt_realloc(*values, c * sizeof *v, what);
        if (!v) return LT_ERR_OUT_OF_MEMORY;
        *values = v;
        *cap = c;
    }
    (*steps)[*n] = step;
    (*values)[*n] = value;
    (*n)++;
    return LT_OK;
}

lt_status lt_report_log(lt_trainer *tr, const lt_metrics *mt, int train_row, double logged_loss) {
    int eval_row = !isnan(mt->eval_loss);
    if (train_row)
        LT_TRY(lt_history_push(&tr->hist_step, &tr->hist_loss, &tr->hist_n, &tr->hist_cap, mt->step, logged_loss,
                               "loss history"));
    if (!tr->output_dir) return LT_OK;
    char loss[32], lr[32], gn[32], tps[32], ep[32], el[32], ea[32];
    jnum(loss, sizeof loss, logged_loss);
    jnum(lr, sizeof lr, mt->lr);
    jnum(gn, sizeof gn, mt->grad_norm);
    jnum(tps, sizeof tps, mt->tokens_per_s);
    jnum(ep, sizeof ep, mt->epoch);
    jnum(el, sizeof el, mt->eval_loss);
    jnum(ea, sizeof ea, mt->eval_accuracy);
    char row[640];
    int n = snprintf(row, sizeof row, "{\"step\": %lld", (long long)mt->step);
    if (train_row)
        n += snprintf(row + n, sizeof row - (size_t)n, ", \"loss\": %s, \"lr\": %s, \"grad_norm\": %s, \"tokens\": %lld, "
                      "\"tokens_per_s\": %s, \"epoch\": %s", loss, lr, gn, (long long)mt->tokens, tps, ep);
    if (eval_row) n += snprintf(row + n, sizeof row - (size_t)n, ", \"eval_loss\": %s, \"eval_accuracy\": %s", el, ea);
    n += snprintf(row + n, sizeof row - (size_t)n, "}\n");
    lt_status st = append_row(tr, "log.jsonl", NULL, row, (size_t)n);
    if (st == LT_OK) { /* the same row in log.csv */
        if (train_row) {
            cnum(loss, sizeof loss, logged_loss);
            cnum(lr, sizeof lr, mt->lr);
            cnum(gn, sizeof gn, mt->grad_norm);
            cnum(tps, sizeof tps, mt->tokens_per_s);
            cnum(ep, sizeof ep, mt->epoch);
        } else {
            loss[0] = lr[0] = gn[0] = tps[0] = ep[0] = 0;
        }
        cnum(el, sizeof el, mt->eval_loss);
        cnum(ea, sizeof ea, mt->eval_accuracy);
        char tok[32] = "";
        if (train_row) snprintf(tok, sizeof tok, "%lld", (long long)mt->tokens);
        n = snprintf(row, sizeof row, "%lld,%s,%s,%s,%s,%s,%s,%s,%s\n", (long long)mt->step, loss, lr, gn, tok, tps, ep,
                     el, ea);
        st = append_row(tr, "log.csv", LT_CSV_HEADER, row, (size_t)n);
    }
    tr->log_fresh = 0;
    if (st != LT_OK) return st;
    char *svg = lt_path_join(tr->output_dir, "loss.svg");
    if (!svg) return lt_error(LT_ERR_OUT_OF_MEMORY, "svg path");
    st = lt_report_svg(svg, tr->hist_step, tr->hist_loss, tr->hist_n, tr->hist_eval_step, tr->hist_eval_loss,
                       tr->hist_eval_n);
    free(svg);
    return st;
}

/* step of a log row: the "step" of a log.jsonl object, the first cell of a log.csv row; -1 for
 * a row without one (the CSV header) */
static long long row_step(const char *row, const char *end, int csv) {
    if (csv) return row < end && *row >= '0' && *row <= '9' ? strtoll(row, NULL, 10) : -1;
    const char *k = strstr(row, "\"step\":");
    return k && k < end ? strtoll(k + 7, NULL, 10) : -1;
}

/* keeps the whole rows of output_dir/name whose step is at most `step` (and a CSV's header) */
static lt_status truncate_rows(lt_trainer *tr, const char *name, int csv, int64_t step) {
    char *path = lt_path_join(tr->output_dir, name);
    if (!path) return lt_error(LT_ERR_OUT_OF_MEMORY, "log path");
    char *text = NULL;
    size_t len = 0;
    if (!lt_file_exists(path) || lt_read_file(path, &text, &len) != LT_OK) {
        lt_clear_error();
        free(path);
        return LT_OK;
    }
    /* keep whole rows whose step is at most `step`; drop later ones and a torn last line */
    size_t keep = 0, dropped = 0;
    for (size_t i = 0; i < len;) {
        char *nl = memchr(text + i, '\n', len - i);
        if (!nl) { dropped++; break; }
        size_t end = (size_t)(nl - text) + 1;
        long long rs = row_step(text + i, nl, csv);
        if ((rs >= 0 && rs <= step) || (csv && i == 0 && rs < 0)) {
            memmove(text + keep, text + i, end - i);
            keep += end - i;
        } else {
            dropped++;
        }
        i = end;
    }
    lt_status st = LT_OK;
    if (dropped) {
        st = lt_write_file_atomic(path, text, keep, 1);
        if (st == LT_OK)
            LT_LOGI("%s: %zu row%s after step %lld removed (they are trained again)", path, dropped,
                    dropped == 1 ? "" : "s", (long long)step);
    }
    free(text);
    free(path);
    return st;
}

lt_status lt_report_truncate_log(lt_trainer *tr, int64_t step) {
    if (!tr->output_dir) return LT_OK;
    LT_TRY(truncate_rows(tr, "log.jsonl", 0, step));
    return truncate_rows(tr, "log.csv", 1, step);
}
