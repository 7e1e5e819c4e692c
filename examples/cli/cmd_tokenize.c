/* cmd_tokenize.c - placeholder until this subcommand lands. */
#include "cli.h"
int lt_cmd_tokenize(int argc, char **argv) { (void)argc; return cli_usage_error(argv[0], "this command is not built yet"); }
