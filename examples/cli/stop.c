/* stop.c - how the `loratune` commands stop and what they print about it: SIGINT / SIGTERM
 * handlers (the first asks the library to stop - lt_trainer_request_stop or the progress
 * callback's cancel - the second ends the process at once: every file written so far is whole,
 * the library writes through temporaries and renames), shell quoting for the commands the CLI
 * prints, and removal of an output folder a failed command created. */
#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* internal (lib/core/core.h) */
lt_status lt_fs_remove_tree(const char *path);

static volatile sig_atomic_t stop_signal = 0;
static lt_trainer *volatile stop_trainer = NULL;

static void on_stop_signal(int sig) {
    if (stop_signal) _exit(128 + sig); /* a second Ctrl-C: at once, no checkpoint */
    stop_signal = sig;
    lt_trainer *tr = stop_trainer;
    if (tr) lt_trainer_request_stop(tr); /* async-signal-safe: sets a flag */
    static const char msg[] = "\nloratune: stopping after the current step and saving a checkpoint "
                              "(press Ctrl-C again to quit at once)\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) { /* nothing to do */ }
}

void cli_stop_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void cli_stop_set_trainer(lt_trainer *tr) { stop_trainer = tr; }

int cli_stop_signal(void) { return stop_signal; }

int cli_stop_exit_code(void) { return stop_signal ? 128 + stop_signal : 0; }

const char *cli_stop_signal_name(void) {
    return stop_signal == SIGINT ? "SIGINT" : stop_signal == SIGTERM ? "SIGTERM" : "a signal";
}

static bool shell_safe(const char *s) {
    if (!*s) return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("_-./:=@%+,", *p)))
            return false;
    return true;
}

void cli_print_quoted(FILE *f, const char *s) {
    if (shell_safe(s)) { fputs(s, f); return; }
    fputc('\'', f);
    for (const char *p = s; *p; p++) {
        if (*p == '\'') fputs("'\\''", f);
        else fputc(*p, f);
    }
    fputc('\'', f);
}

void cli_print_resume_command(FILE *f, int argc, char **argv, const char *checkpoint) {
    fputs("loratune", f);
    for (int i = 0; i < argc; i++) {
        /* the old --resume (either form) is replaced by the new one */
        if (!strcmp(argv[i], "--resume")) { i++; continue; }
        if (!strncmp(argv[i], "--resume=", 9)) continue;
        fputc(' ', f);
        cli_print_quoted(f, argv[i]);
    }
    const char *gpus = getenv("LORATUNE_LAUNCH_GPUS"); /* a rank of `--gpus`: its launcher took the flag out */
    if (gpus && *gpus) {
        fputs(" --gpus ", f);
        cli_print_quoted(f, gpus);
    }
    fputs(" --resume ", f);
    cli_print_quoted(f, checkpoint);
    fputc('\n', f);
}

void cli_remove_created(const char *path) {
    if (path && lt_fs_remove_tree(path) != LT_OK)
        fprintf(stderr, "loratune: could not remove %s, which this failed command created: %s\n", path,
                lt_last_error());
}
