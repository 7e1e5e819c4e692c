/* header_c99.c - loratune.h compiles as strict C99 (-Wpedantic -Werror) and the basics answer. */
#include "loratune.h"
#include <stdio.h>
#include <string.h>

int main(void) {
    lt_train_params tp;
    char want[32];
    lt_train_params_init(&tp);
    snprintf(want, sizeof want, "%d.%d.%d", LT_VERSION_MAJOR, LT_VERSION_MINOR, LT_VERSION_PATCH);
    if (strcmp(lt_version(), want) != 0) { printf("version %s != %s\n", lt_version(), want); return 1; }
    if (lt_version_number() != LT_VERSION_NUMBER) return 1;
    if (lt_struct_size("lt_train_params") != sizeof(lt_train_params)) return 1;
    if (lt_struct_size("nope") != 0) return 1;
    if (tp.struct_size != sizeof tp || tp.batch_size != 2 || tp.grad_accum != 8) return 1;
    if (strncmp(lt_status_string(LT_ERR_FORMAT), "LT_ERR_FORMAT", 13) != 0) return 1;
    lt_model_free(NULL); lt_tokenizer_free(NULL); lt_dataset_free(NULL); lt_trainer_free(NULL);
    lt_exporter_free(NULL); lt_token_stream_free(NULL);
    printf("header C99 ok, loratune %s\n", lt_version());
    return 0;
}
