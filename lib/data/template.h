/* template.h - prompt templates shared by the dataset pipeline, generation prompts and the
 * exported Ollama Modelfile: built-in templates by name, placeholder parsing, rendering with
 * the position of the response, and the split of a template into prompt / response parts.
 *
 * A template is text with the placeholders {instruction}, {input} and {output}, read with
 * Python str.format rules so that a notebook's prompt renders byte for byte the same:
 * "{{" and "}}" are literal braces, "{}" is the next positional field (instruction, input,
 * output in that order, as alpaca_prompt.format(instruction, input, output)), any other
 * {name} is an error. {output} must appear exactly once (the response) and after every
 * other placeholder. */
#ifndef LT_TEMPLATE_H
#define LT_TEMPLATE_H
#include "core/core.h"

/* The template text for a built-in name or a template text (anything containing '{');
 * NULL (with the error set) for an unknown name. The result is static or `name_or_text`. */
const char *lt_template_resolve(const char *name_or_text);

/* Checks a template's syntax and that {output} appears once, last; the message names the
 * offset of the problem. */
lt_status lt_template_check(const char *tpl);

/* Renders into a fresh NUL-terminated string (*out, caller frees) of *len bytes; *output_at
 * (may be NULL) receives the byte offset where the output starts. */
lt_status lt_template_render_alloc(const char *tpl, const char *instruction, const char *input, const char *output,
                                   char **out, size_t *len, size_t *output_at);

/* The generation prompt: the template rendered with output "" and cut where {output} starts
 * (what the model sees before it answers). Caller frees *out. */
lt_status lt_template_render_prompt(const char *tpl, const char *instruction, const char *input, char **out);

/* Splits a template at {output}: *prefix is the template before it, normalised (named
 * placeholders {instruction} / {input}, literal braces escaped as "{{" "}}", so it is itself a
 * valid template); *suffix is the literal text after {output} (braces unescaped). Fresh strings
 * the caller frees. Exporters that turn the prompt into another template language walk it with
 * lt_template_walk instead. */
lt_status lt_template_split(const char *tpl, char **prefix, char **suffix);

/* Walks a template piece by piece: fn(kind, text, len, user) with kind LT_TPL_LITERAL (text is
 * the literal, braces unescaped) or LT_TPL_INSTRUCTION / LT_TPL_INPUT / LT_TPL_OUTPUT (text
 * NULL). Returns the first error, or LT_OK. */
enum { LT_TPL_LITERAL = 0, LT_TPL_INSTRUCTION = 1, LT_TPL_INPUT = 2, LT_TPL_OUTPUT = 3 };
typedef void (*lt_template_piece_fn)(int kind, const char *text, size_t len, void *user);
lt_status lt_template_walk(const char *tpl, lt_template_piece_fn fn, void *user);

/* Reads a custom template from a file (exact bytes; must be valid UTF-8 and pass
 * lt_template_check). Caller frees *out. */
lt_status lt_template_read_file(const char *path, char **out);
#endif
