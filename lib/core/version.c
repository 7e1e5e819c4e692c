/* version.c - lt_version(), and the struct sizes bindings check at load. */
#include "core/core.h"
#include <string.h>

#define LT_STR2(x) #x
#define LT_STR(x) LT_STR2(x)

const char *lt_version(void) {
    return LT_STR(LT_VERSION_MAJOR) "." LT_STR(LT_VERSION_MINOR) "." LT_STR(LT_VERSION_PATCH);
}
uint32_t lt_version_number(void) { return LT_VERSION_NUMBER; }

size_t lt_struct_size(const char *name) {
    static const struct { const char *name; size_t size; } t[] = {
        {"lt_model_params", sizeof(lt_model_params)},
        {"lt_model_info", sizeof(lt_model_info)},
        {"lt_lora_params", sizeof(lt_lora_params)},
        {"lt_memory_estimate", sizeof(lt_memory_estimate)},
        {"lt_special_tokens", sizeof(lt_special_tokens)},
        {"lt_chat_message", sizeof(lt_chat_message)},
        {"lt_dataset_params", sizeof(lt_dataset_params)},
        {"lt_dataset_stats", sizeof(lt_dataset_stats)},
        {"lt_metrics", sizeof(lt_metrics)},
        {"lt_train_params", sizeof(lt_train_params)},
        {"lt_generate_params", sizeof(lt_generate_params)},
        {"lt_export_params", sizeof(lt_export_params)},
        {"lt_eval_result", sizeof(lt_eval_result)},
        {"lt_train_summary", sizeof(lt_train_summary)},
        {"lt_comm_params", sizeof(lt_comm_params)},
    };
    if (!name) return 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcmp(t[i].name, name) == 0) return t[i].size;
    return 0;
}
