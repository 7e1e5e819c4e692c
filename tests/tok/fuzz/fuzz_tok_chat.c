/* fuzz_tok_chat.c - libFuzzer target: arbitrary text as a chat template through the Jinja subset
 * interpreter (parse errors and unsupported constructs must be statuses, never crashes). */
#include "tok/tok.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *tmpl = malloc(size + 1);
    memcpy(tmpl, data, size);
    tmpl[size] = 0;
    lt_chat_message m[3] = {{"system", "sys"}, {"user", "hi {{ x }}"}, {"assistant", "ok"}};
    char out[8192];
    size_t len = 0;
    lt_tokenizer_apply_chat_template(NULL, m, 3, (int)(size & 1), tmpl, out, sizeof out, &len);
    free(tmpl);
    return 0;
}
