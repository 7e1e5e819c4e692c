/* test_template.c - prompt templates: the built-ins' exact text, Python str.format semantics
 * ({} positional, {{ }} escapes), the {output} rules, prompt rendering and the prefix/suffix
 * split used by generation and the Ollama Modelfile. */
#include "lt_test.h"
#include "data/template.h"
#include <stdlib.h>

static void check_render(const char *tpl, const char *ins, const char *inp, const char *out, const char *want) {
    char buf[2048];
    size_t len = 0;
    lt_status st = lt_template_render(tpl, ins, inp, out, buf, sizeof buf, &len);
    CHECK_MSG(st == LT_OK, "render failed: %s", lt_last_error());
    if (st == LT_OK) {
        CHECK_MSG(!strcmp(buf, want), "got '%s' want '%s'", buf, want);
        CHECK(len == strlen(want));
    }
}

int main(void) {
    /* the notebook's prompt, as alpaca_prompt.format("I", "N", "O") gives it */
    check_render("alpaca-zh", "I", "N", "O",
                 "\n下面是描述一个任务，以一个输入然后提供一个回复\n### Instruction:\nI\n### Input:\nN\n### Response:\nO\n");
    CHECK(lt_template_builtin(NULL) == NULL);
    CHECK(lt_template_builtin("nope") == NULL);
    CHECK(!strcmp(lt_template_builtin("alpaca"),
                  "Below is an instruction that describes a task, paired with an input that provides further context. "
                  "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                  "### Input:\n{input}\n\n### Response:\n{output}"));
    check_render("chatml", "hi", "", "yo", "<|im_start|>user\nhi\n<|im_end|>\n<|im_start|>assistant\nyo");
    /* custom templates: named, positional, escaped braces, NULL fields as "" */
    check_render("Q: {instruction} [{input}] A: {output}", "q", "i", "a", "Q: q [i] A: a");
    check_render("{}|{}|{}", "a", "b", "c", "a|b|c");
    check_render("{{json}} {instruction} {{{output}}}", "x", NULL, "y", "{json} x {y}");
    check_render("{output}", NULL, NULL, NULL, "");
    /* errors, each with its own message */
    char buf[64];
    size_t len;
    CHECK_FAIL(lt_template_render("unknown-name", "a", "b", "c", buf, sizeof buf, &len), LT_ERR_NOT_FOUND,
               "unknown template 'unknown-name'");
    CHECK_FAIL(lt_template_render("{instruction}", "a", "b", "c", buf, sizeof buf, &len), LT_ERR_FORMAT, "no {output}");
    CHECK_FAIL(lt_template_render("{output} {output}", "a", "b", "c", buf, sizeof buf, &len), LT_ERR_FORMAT,
               "appears twice");
    CHECK_FAIL(lt_template_render("{output} {input}", "a", "b", "c", buf, sizeof buf, &len), LT_ERR_FORMAT,
               "after {output}");
    CHECK_FAIL(lt_template_render("{name} {output}", "a", "b", "c", buf, sizeof buf, &len), LT_ERR_FORMAT,
               "unknown placeholder '{name}' at offset 0");
    CHECK_FAIL(lt_template_render("a } {output}", "a", "b", "c", buf, sizeof buf, &len), LT_ERR_FORMAT,
               "single '}' at offset 2");
    CHECK_FAIL(lt_template_render("{output} {", "a", "b", "c", buf, sizeof buf, &len), LT_ERR_FORMAT, "never closed");
    CHECK_FAIL(lt_template_render("{}{}{}{}", "a", "b", "c", buf, sizeof buf, &len), LT_ERR_FORMAT, "4th positional");
    /* two-call pattern */
    CHECK_FAIL(lt_template_render("alpaca", "a", "b", "c", buf, 4, &len), LT_ERR_BUFFER_TOO_SMALL, "needs");
    CHECK(len == strlen(lt_template_builtin("alpaca")) - strlen("{instruction}{input}{output}") + 3);

    /* the response offset and the generation prompt */
    char *s;
    size_t n, at;
    CHECK_OK(lt_template_render_alloc(lt_template_builtin("alpaca-zh"), "I", "", "OUT", &s, &n, &at));
    CHECK(at + 3 + 1 == n && !strncmp(s + at, "OUT\n", 4));
    free(s);
    CHECK_OK(lt_template_render_prompt(lt_template_builtin("alpaca-zh"), "I", "N", &s));
    CHECK(!strcmp(s, "\n下面是描述一个任务，以一个输入然后提供一个回复\n### Instruction:\nI\n### Input:\nN\n### Response:\n"));
    free(s);
    /* split: normalised prefix (a valid template), literal suffix */
    char *pre, *suf;
    CHECK_OK(lt_template_split("{} {{x}} {}>{}<{{", &pre, &suf));
    CHECK_MSG(!strcmp(pre, "{instruction} {{x}} {input}>"), "prefix '%s'", pre);
    CHECK_MSG(!strcmp(suf, "<{"), "suffix '%s'", suf);
    free(pre);
    free(suf);
    CHECK_OK(lt_template_split(lt_template_builtin("alpaca-zh"), &pre, &suf));
    CHECK(!strcmp(suf, "\n"));
    CHECK(strstr(pre, "### Response:\n") && pre[strlen(pre) - 1] == '\n');
    free(pre);
    free(suf);
    CHECK(lt_template_resolve("chatml") == lt_template_builtin("chatml"));
    CHECK(lt_template_resolve("x") == NULL);
    return lt_test_done("test_template");
}
