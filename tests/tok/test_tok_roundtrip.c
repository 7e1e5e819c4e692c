/* test_tok_roundtrip.c - property test: decode(encode(x)) == NFC(x) for 10,000 random valid UTF-8
 * strings (seeded, so a failure reproduces). As in `tokenizers`, special tokens are cut out of the
 * raw text before normalization, so NFC applies to the text between them ("<|im_end|>" + U+0338
 * keeps its '>' instead of composing U+226F); the expected text is built that way. Strings are drawn from ASCII, whitespace runs, Latin with
 * combining marks, Hangul jamo, CJK, emoji with ZWJ / modifiers, special-token text and arbitrary
 * code points of every plane. Also: streaming decode of the same ids gives the same text, and the
 * offsets of each token point at text that re-encodes consistently. */
#include "lt_test.h"
#include "tok/tok.h"
#include <utf8proc.h>

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(uint32_t n) { /* xorshift64* */
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32) % n;
}

static uint32_t random_cp(void) {
    static const uint32_t picks[] = {' ', ' ', '\n', '\t', '\r', 0xA0, 0x3000, 0x85, 0x2003, 0x200D, 0xFE0F, 0x301, 0x308,
                                     0x327, 0x1100, 0x1161, 0x11A8, 0xAC00, 0x1F600, 0x1F44D, 0x1F3FD, 0x1F1E8, 0x1F1F3,
                                     0xFB01, 0xFF21, 0x2126, 0x212B, 0x0 /* NUL */, 0x7F, 0xAD, 0xFEFF, 0x10FFFF};
    switch (rnd(8)) {
    case 0: case 1: return 0x20 + rnd(0x5F);                  /* ASCII */
    case 2: return picks[rnd(sizeof picks / sizeof picks[0])];
    case 3: return 0x4E00 + rnd(0x5200);                      /* CJK */
    case 4: return 0xC0 + rnd(0x200);                         /* Latin */
    case 5: return '0' + rnd(10);
    case 6: { uint32_t c; do c = rnd(0x110000); while (c >= 0xD800 && c < 0xE000); return c; }
    default: return 0x300 + rnd(0x70);                        /* combining marks */
    }
}

int main(void) {
    lt_tokenizer *tok = NULL;
    CHECK_OK(lt_tokenizer_load(LT_REPO_ROOT "/assets/qwen2-tokenizer", &tok));
    if (!tok) return lt_test_done("test_tok_roundtrip");
    static const char *specials[] = {"<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", "'s", "'LL"};
    char text[1024], out[8192], streamed[8192], piece[512];
    int32_t ids[2048];
    int bad = 0;
    lt_token_stream *stream = NULL;
    CHECK_OK(lt_token_stream_new(tok, 0, &stream));
    for (int iter = 0; iter < 10000; iter++) {
        size_t len = 0;
        int n_chars = (int)rnd(40);
        for (int k = 0; k < n_chars; k++) {
            if (rnd(25) == 0) {
                const char *s = specials[rnd(6)];
                memcpy(text + len, s, strlen(s)); len += strlen(s);
                continue;
            }
            uint32_t cp = random_cp();
            int reps = rnd(6) == 0 ? 1 + (int)rnd(5) : 1;
            for (int r = 0; r < reps; r++) len += (size_t)lt_utf8_encode(cp, text + len);
        }
        text[len] = 0;
        size_t n = 0, olen = 0;
        lt_status st = lt_tokenizer_encode(tok, text, len, 0, ids, 2048, &n);
        if (st != LT_OK) { CHECK_OK(st); bad++; continue; }
        CHECK_OK(lt_tokenizer_decode(tok, ids, n, 0, out, sizeof out, &olen));
        /* expected: NFC of each stretch between special tokens, the tokens as they are */
        char want[8192];
        size_t wl = 0, seg = 0;
        for (size_t i = 0; i <= len;) {
            size_t sl_ = 0;
            for (int s = 0; s < 3 && i < len; s++)
                if (!strncmp(text + i, specials[s], strlen(specials[s]))) sl_ = strlen(specials[s]);
            if (sl_ || i == len) {
                if (i > seg) {
                    utf8proc_uint8_t *nfc = NULL;
                    utf8proc_ssize_t nl = utf8proc_map((const utf8proc_uint8_t *)text + seg, (utf8proc_ssize_t)(i - seg), &nfc,
                                                       UTF8PROC_STABLE | UTF8PROC_COMPOSE);
                    if (nl > 0) { memcpy(want + wl, nfc, (size_t)nl); wl += (size_t)nl; }
                    free(nfc);
                }
                if (i == len) break;
                memcpy(want + wl, text + i, sl_); wl += sl_;
                i += sl_; seg = i;
            } else i++;
        }
        int same = wl == olen && (!olen || !memcmp(want, out, olen));
        if (!same && bad < 5) {
            fprintf(stderr, "iteration %d: decode(encode(x)) != NFC(x): x = '", iter);
            for (size_t i = 0; i < len; i++) fprintf(stderr, "\\x%02x", (unsigned char)text[i]);
            fprintf(stderr, "'\n");
        }
        if (!same) bad++;
        /* streaming gives the same text */
        size_t sl = 0, pl = 0;
        for (size_t i = 0; i < n; i++) {
            CHECK_OK(lt_token_stream_push(stream, ids[i], piece, sizeof piece, &pl));
            memcpy(streamed + sl, piece, pl); sl += pl;
        }
        CHECK_OK(lt_token_stream_flush(stream, piece, sizeof piece, &pl));
        memcpy(streamed + sl, piece, pl); sl += pl;
        if (sl != olen || memcmp(streamed, out, sl)) bad++;
        /* offsets: in order, in range */
        int32_t *v; uint32_t *off; size_t m;
        CHECK_OK(lt_tokenizer_encode_offsets(tok, text, len, 0, &v, &off, &m));
        int ok = m == n && !memcmp(v, ids, n * sizeof(int32_t));
        for (size_t i = 0; ok && i < m; i++) ok = off[2 * i] <= off[2 * i + 1] && off[2 * i + 1] <= len && (!i || off[2 * i] >= off[2 * i - 2]);
        if (!ok) { bad++; if (bad < 5) fprintf(stderr, "iteration %d: offsets out of order or ids differ\n", iter); }
        free(v); free(off);
    }
    CHECK_MSG(bad == 0, "%d of 10000 random strings failed", bad);
    lt_token_stream_free(stream);
    lt_tokenizer_free(tok);
    return lt_test_done("test_tok_roundtrip");
}
