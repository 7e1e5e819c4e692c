/* tok_json.h - a small, fast JSON reader for tokenizer files. tokenizer.json is ~6 MB with
 * 150k vocabulary entries and 150k merges; a general DOM (jansson) takes ~0.4 s to build it, this
 * one parses in place (strings are unescaped inside the caller's buffer) into an arena in ~30 ms.
 * Objects keep their members in file order (the vocabulary is read in order). */
#ifndef LT_TOK_JSON_H
#define LT_TOK_JSON_H
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include "core/core.h"

typedef enum ltj_type { LTJ_NULL, LTJ_FALSE, LTJ_TRUE, LTJ_NUM, LTJ_STR, LTJ_ARR, LTJ_OBJ } ltj_type;

typedef struct ltj {
    uint8_t type;     /* ltj_type */
    uint32_t n;       /* string bytes, array items, object members */
    uint32_t pos;     /* byte offset in the source (for messages) */
    union {
        double num;
        char *str;         /* NUL-terminated, inside the source buffer (may contain \u0000) */
        struct ltj *items; /* array: items[n]; object: items[2n] = key, value, key, value ... */
    } u;
} ltj;

typedef struct ltj_doc ltj_doc;

/* Parses buf[len] (modified in place; must stay alive as long as the document; buf[len] must be
 * writable, e.g. the NUL that lt_read_file adds). `name` is used in messages ("tokenizer.json").
 * Errors: LT_ERR_FORMAT naming line:column and what was expected. */
lt_status ltj_parse(char *buf, size_t len, const char *name, ltj_doc **out, const ltj **root);
void ltj_free(ltj_doc *doc);

/* Member `key` of an object, or NULL (also when v is not an object). */
const ltj *ltj_get(const ltj *v, const char *key);
/* "line L, column C" for a byte offset of the document's source. */
void ltj_where(const ltj_doc *doc, uint32_t pos, char *out, size_t cap);
static inline int ltj_is(const ltj *v, ltj_type t) { return v && v->type == t; }
static inline int ltj_truthy(const ltj *v) { return v && v->type == LTJ_TRUE; }
#endif
