// header_cxx.cpp - loratune.h compiles as C++ (extern "C", no C-only constructs).
#include "loratune.h"
#include <cstdio>
#include <cstring>

int main() {
    lt_model_params mp;
    lt_model_params_init(&mp);
    if (mp.struct_size != sizeof mp) return 1;
    lt_status s = LT_OK;
    std::printf("header C++ ok: %s, %s\n", lt_version(), lt_status_string(s));
    return std::strlen(lt_last_error()) > 4096 ? 1 : 0;
}
