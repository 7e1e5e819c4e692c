/* options.h - the options of `loratune dataset` and `loratune train`, in one table (options.c):
 * each option's name (the --config key; the flag is --name with '-'), kind, the lt_*_params
 * field it sets and its help. The values start from lt_*_params_init, so every default shown in
 * --help and used in a run is the library's. The data options are the same entries for both
 * commands; tests/train/option_names.txt lists every option and test_option_names.sh checks the
 * table (--list-options), the flags and the --config keys against it. */
#ifndef LT_CLI_OPTIONS_H
#define LT_CLI_OPTIONS_H
#include "loratune.h"
#include <stdio.h>

/* which command an option belongs to (a mask) */
enum { CLI_CMD_DATASET = 1, CLI_CMD_TRAIN = 2 };

/* The values of one command's options: the library's params structs plus the command's own. */
typedef struct cli_opts {
    int cmd;                   /* CLI_CMD_* */
    lt_model_params mp;
    lt_lora_params lp;
    lt_dataset_params dp;
    lt_train_params tp;
    /* the commands' own (NULL = not given) */
    const char *data, *tokenizer, *tmpl, *model, *output, *config, *resume, *init_adapter,
        *eval_data, *targets, *gen_instruction, *gen_input;
    int32_t show, color, gen_max_new_tokens;
    int32_t overwrite;         /* train: replace the run in --output */
    int32_t print_only;        /* --print-options: print the resolved values as JSON and stop */
    /* after cli_opts_finish: the template as lt_template_render takes it (a name or a text) */
    const char *template_resolved;
    /* owned */
    char *template_file_text;
    void *config_json;         /* json_t of --config: its strings are pointed at */
} cli_opts;

/* Defaults: the lt_*_params_init values and the command's own. */
void cli_opts_init(cli_opts *o, int cmd);
void cli_opts_free(cli_opts *o);
/* Parses --config FILE (first, wherever it stands) and the flags. Returns -1 to go on, or the exit
 * status to return (0 after --help / --list-options, 2 after a usage error, printed). */
int cli_opts_parse(cli_opts *o, const char *cmd, int argc, char **argv);
/* After parsing: the template (a built-in name, a text with '{', or a file), the targets, and the
 * values several structs share (seed, max_seq_len, threads). -1 to go on, or the exit status
 * (2 after a usage error; 0 after --print-options printed the values). */
int cli_opts_finish(cli_opts *o, const char *cmd);
/* The --help lines of the command's options, defaults included. */
void cli_opts_help(FILE *f, int cmd);
/* The resolved values as one JSON object (what --print-options shows). */
void cli_opts_print_json(FILE *f, const cli_opts *o);
/* An enum option's value's name ("cosine"), or "?" */
const char *cli_opts_enum_name(const char *option, int32_t value);
#endif
