/* bench_dataset.c - preparation throughput and peak memory of the dataset pipeline on a large
 * JSONL generated on the fly (not part of ctest):
 *   bench_dataset [MB=1024] [threads=0] [path=/tmp/lt_bench_dataset.jsonl]
 * Writes MB megabytes of Alpaca records (mixed English / Chinese words, ~1 KB each), loads
 * them with lt_dataset_load, and prints records/s, MB/s, tokens, and peak RSS (getrusage)
 * next to the bytes the tokens themselves take: memory is tokens + fixed buffers, not text. */
#include "loratune.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *words[] = {
    "the", "model", "learns", "to", "answer", "questions", "about", "data", "and", "code", "quickly", "with",
    "a", "small", "adapter", "on", "frozen", "weights", "训练", "模型", "数据", "问题", "回答", "为什么", "天空",
    "是", "蓝色", "的", "因为", "光", "散射", "gradient", "descent", "token", "sequence", "batch", "loss",
    "memory", "GPU", "Qwen2", "LoRA", "rank", "alpha", "dropout", "0.1", "2048", "\\\"quoted\\\"", "line\\nbreak",
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;
static uint32_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)rng; }

static void put_words(FILE *f, int n) {
    for (int i = 0; i < n; i++) {
        fputs(words[next() % (sizeof words / sizeof words[0])], f);
        if (i + 1 < n) fputc(' ', f);
    }
}

int main(int argc, char **argv) {
    double mb = argc > 1 ? atof(argv[1]) : 1024;
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    const char *path = argc > 3 ? argv[3] : "/tmp/lt_bench_dataset.jsonl";
    uint64_t target = (uint64_t)(mb * 1e6);
    double t0 = now();
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); return 1; }
    uint64_t n_written = 0;
    while ((uint64_t)ftell(f) < target) {
        fputs("{\"instruction\": \"", f);
        put_words(f, 12 + next() % 12);
        fputs("\", \"input\": \"", f);
        if (next() % 3 == 0) put_words(f, 10 + next() % 20);
        fputs("\", \"output\": \"", f);
        put_words(f, 80 + next() % 120);
        fputs("\"}\n", f);
        n_written++;
    }
    fclose(f);
    struct stat sb;
    stat(path, &sb);
    printf("generated %s: %.1f MB, %llu records in %.1f s\n", path, sb.st_size / 1e6, (unsigned long long)n_written,
           now() - t0);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long rss0 = ru.ru_maxrss;

    lt_tokenizer *tok;
    if (lt_tokenizer_load(LT_REPO_ROOT "/assets/qwen2-tokenizer", &tok) != LT_OK) {
        fprintf(stderr, "tokenizer: %s\n", lt_last_error());
        return 1;
    }
    getrusage(RUSAGE_SELF, &ru);
    long rss_tok = ru.ru_maxrss;
    lt_dataset_params p;
    lt_dataset_params_init(&p);
    p.n_threads = threads;
    lt_dataset *ds;
    double t1 = now();
    lt_status st = lt_dataset_load(path, tok, &p, &ds);
    double secs = now() - t1;
    if (st != LT_OK) { fprintf(stderr, "load: %s\n", lt_last_error()); return 1; }
    getrusage(RUSAGE_SELF, &ru);
    lt_dataset_stats s = {.struct_size = sizeof s};
    lt_dataset_get_stats(ds, &s);
    double tok_mb = s.n_tokens * 4.0 / 1e6;
    printf("loaded %llu records, %llu tokens (%llu truncated) in %.1f s with %d threads\n",
           (unsigned long long)s.n_records, (unsigned long long)s.n_tokens, (unsigned long long)s.n_truncated, secs,
           threads ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    printf("throughput: %.0f records/s, %.2f MB/s, %.0f tokens/s\n", s.n_records / secs, sb.st_size / 1e6 / secs,
           s.n_tokens / secs);
    printf("peak RSS: %.1f MB (before the tokenizer %.1f MB, with it %.1f MB); token ids take %.1f MB; "
           "file %.1f MB\n", ru.ru_maxrss / 1e3, rss0 / 1e3, rss_tok / 1e3, tok_mb, sb.st_size / 1e6);
    printf("peak RSS - tokenizer - token ids = %.1f MB of buffers (independent of the file size)\n",
           (ru.ru_maxrss - rss_tok) / 1e3 - tok_mb);
    lt_dataset_free(ds);
    lt_tokenizer_free(tok);
    if (argc <= 3) unlink(path);
    return 0;
}
