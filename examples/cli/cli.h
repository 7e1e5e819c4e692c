/* cli.h - shared pieces of the `loratune` command: the subcommands, flag parsing helpers,
 * the terminal progress bar and the log printer. */
#ifndef LT_CLI_H
#define LT_CLI_H
#include "loratune.h"
#include <stdbool.h>
#include <stdio.h>

/* Each subcommand: argv[0] is the subcommand name. Returns the process exit status. */
int lt_cmd_info(int argc, char **argv);
int lt_cmd_init_random(int argc, char **argv);
int lt_cmd_train(int argc, char **argv);
int lt_cmd_tokenize(int argc, char **argv);
int lt_cmd_dataset(int argc, char **argv);
int lt_cmd_generate(int argc, char **argv);
int lt_cmd_export(int argc, char **argv);
int lt_cmd_bench(int argc, char **argv);

/* "--name value" / "--name=value" matching: returns the value (advancing *i) or NULL. */
const char *cli_flag(int argc, char **argv, int *i, const char *name);
/* "--name" alone. */
bool cli_switch(char **argv, int i, const char *name);
/* Prints "loratune <cmd>: <what>: <lt_last_error>" and returns 1 (or 2 for usage). */
int cli_fail(const char *cmd, lt_status st, const char *what);
int cli_usage_error(const char *cmd, const char *fmt, ...);
/* Parse helpers: print a usage error and return false on a bad number (not a number, trailing
 * text, or out of the type's range: no silent wrap-around). */
bool cli_int(const char *cmd, const char *flag, const char *v, int32_t *out);
bool cli_double(const char *cmd, const char *flag, const char *v, double *out);
bool cli_u64(const char *cmd, const char *flag, const char *v, uint64_t *out);
/* cli_int within [lo, hi], naming the range in the message. */
bool cli_int_range(const char *cmd, const char *flag, const char *v, int32_t lo, int32_t hi, int32_t *out);

/* Stopping (stop.c): SIGINT / SIGTERM handlers. The first signal is recorded and, when a trainer
 * is set, lt_trainer_request_stop is called; cli_progress then cancels long work; the second
 * signal ends the process at once with 128 + the signal. */
void cli_stop_install(void);
void cli_stop_set_trainer(lt_trainer *tr);
int cli_stop_signal(void);            /* 0, or the first signal received */
int cli_stop_exit_code(void);         /* 128 + that signal (130 SIGINT, 143 SIGTERM), 0 if none */
const char *cli_stop_signal_name(void);
/* A word as a POSIX shell reads it back (quoted only when needed). */
void cli_print_quoted(FILE *f, const char *s);
/* "loratune <args, quoted> --resume <checkpoint>\n" (an earlier --resume replaced). */
void cli_print_resume_command(FILE *f, int argc, char **argv, const char *checkpoint);
/* Removes a folder a failed command created (reports, never fails). */
void cli_remove_created(const char *path);

/* A progress bar on stderr when it is a terminal (lt_progress_fn-compatible; user_data unused).
 * Returns non-zero (cancel) once a stop signal came. */
int cli_progress(const char *what, uint64_t done, uint64_t total, void *user_data);
/* Routes library logs to stderr (level <= max). */
void cli_enable_logging(int max_level);
bool cli_is_tty(FILE *f);
#endif
