/* main.c - the `loratune` command: dispatches to the subcommands (one file each). */
#include "cli.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*cmd_fn)(int, char **);
static const struct { const char *name; cmd_fn fn; const char *help; } cmds[] = {
    {"train", lt_cmd_train, "fine-tune a model with LoRA (defaults: the notebook's recipe)"},
    {"generate", lt_cmd_generate, "generate text (streamed), with or without an adapter"},
    {"export", lt_cmd_export, "write a PEFT adapter, merged safetensors, GGUF or a GGUF LoRA"},
    {"dataset", lt_cmd_dataset, "show statistics and rendered examples of a training file"},
    {"tokenize", lt_cmd_tokenize, "encode (or --decode) stdin with a tokenizer"},
    {"info", lt_cmd_info, "show a model's config, parameter counts and a memory estimate"},
    {"init-random", lt_cmd_init_random, "write a randomly initialised HF checkpoint from a config"},
    {"bench", lt_cmd_bench, "benchmark training / generation speed and memory"},
};

static void usage(FILE *f) {
    fprintf(f, "loratune %s - LoRA fine-tuning on a 4-bit base\n\nusage: loratune <command> [flags]\n\ncommands:\n",
            lt_version());
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) fprintf(f, "  %-12s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\n'loratune <command> --help' shows a command's flags.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("loratune %s\n", lt_version()); return 0; }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "loratune: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}

/* ---- shared helpers ---- */
const char *cli_flag(int argc, char **argv, int *i, const char *name) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != 0) return NULL;
    if (*i + 1 >= argc) { fprintf(stderr, "loratune: %s needs a value\n", name); exit(2); }
    return argv[++*i];
}
bool cli_switch(char **argv, int i, const char *name) { return strcmp(argv[i], name) == 0; }

int cli_fail(const char *cmd, lt_status st, const char *what) {
    fprintf(stderr, "loratune %s: %s failed (%s)\n  %s\n", cmd, what, lt_status_string(st), lt_last_error());
    return 1;
}
int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "loratune %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'loratune %s --help')\n", cmd);
    return 2;
}
bool cli_int_range(const char *cmd, const char *flag, const char *v, int32_t lo, int32_t hi, int32_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || end == v) { cli_usage_error(cmd, "%s expects an integer, got '%s'", flag, v); return false; }
    if (errno == ERANGE || x < lo || x > hi) {
        cli_usage_error(cmd, "%s %s is out of range (an integer from %d to %d)", flag, v, lo, hi);
        return false;
    }
    *out = (int32_t)x;
    return true;
}
bool cli_int(const char *cmd, const char *flag, const char *v, int32_t *out) {
    return cli_int_range(cmd, flag, v, INT32_MIN, INT32_MAX, out);
}
bool cli_double(const char *cmd, const char *flag, const char *v, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end) { cli_usage_error(cmd, "%s expects a number, got '%s'", flag, v); return false; }
    if (errno == ERANGE && (x == HUGE_VAL || x == -HUGE_VAL)) {
        cli_usage_error(cmd, "%s %s is out of range", flag, v);
        return false;
    }
    *out = x; /* nan / inf are left to the library's checks, which name the field */
    return true;
}
bool cli_u64(const char *cmd, const char *flag, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    const char *p = v;
    while (*p == ' ' || *p == '\t') p++;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || *p == '-' || *p == '+') {
        cli_usage_error(cmd, "%s expects a non-negative integer, got '%s'", flag, v);
        return false;
    }
    if (errno == ERANGE) {
        cli_usage_error(cmd, "%s %s is out of range (at most %llu)", flag, v, (unsigned long long)UINT64_MAX);
        return false;
    }
    *out = x;
    return true;
}

bool cli_is_tty(FILE *f) { return isatty(fileno(f)); }

int cli_progress(const char *what, uint64_t done, uint64_t total, void *user_data) {
    (void)user_data;
    if (cli_stop_signal()) return 1; /* Ctrl-C / SIGTERM: the library cancels, leaving nothing half-written */
    if (!cli_is_tty(stderr) || total == 0) return 0;
    int width = 30, fill = (int)(width * (double)done / (double)total);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r%-24.24s [%s] %3d%%", what, bar, (int)(100.0 * done / total));
    if (done >= total) fputc('\n', stderr);
    fflush(stderr);
    return 0;
}

static void cli_log(int32_t level, const char *msg, void *ud) {
    (void)ud;
    static const char *names[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "[%s] %s\n", names[level < 0 ? 0 : level > 3 ? 3 : level], msg);
}
void cli_enable_logging(int max_level) { lt_set_log_callback(cli_log, max_level, NULL); }
