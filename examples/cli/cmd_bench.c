/* cmd_bench.c - placeholder until this subcommand lands. */
#include "cli.h"
int lt_cmd_bench(int argc, char **argv) { (void)argc; return cli_usage_error(argv[0], "this command is not built yet"); }
