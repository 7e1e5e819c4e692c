/* cmd_dataset.c - placeholder until this subcommand lands. */
#include "cli.h"
int lt_cmd_dataset(int argc, char **argv) { (void)argc; return cli_usage_error(argv[0], "this command is not built yet"); }
