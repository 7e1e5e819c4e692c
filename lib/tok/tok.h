/* tok.h - internals of the tokenizer (lib/tok): the loaded tokenizer.json (vocabulary, merges,
 * added tokens, normalizer and pre-tokenizer steps), and the internal entry points that other
 * library code uses: encode into fresh arrays, encode with byte offsets (for loss masks), and
 * encode of many texts on several threads.
 *
 * Thread safety: a loaded lt_tokenizer is read-only except for its BPE cache, which is sharded
 * behind mutexes; every encode/decode function may be called from many threads at once. */
#ifndef LT_TOK_H
#define LT_TOK_H
#include "core/core.h"
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* ---- UTF-8 helpers (tok_utf8.c) ---- */
/* Offset of the first byte that is not valid UTF-8 (len when all valid). */
size_t lt_utf8_check(const char *s, size_t len);
/* Decodes one code point of valid UTF-8 at s; returns its length. */
int lt_utf8_decode(const unsigned char *s, uint32_t *cp);
/* Encodes cp; returns the number of bytes written (1..4). */
int lt_utf8_encode(uint32_t cp, char *out);
/* A growable text buffer (data NUL-terminated once anything was put; free(data) when done). */
typedef struct lt_tok_buf { char *data; size_t len, cap; } lt_tok_buf;
lt_status lt_tok_buf_put(lt_tok_buf *b, const void *data, size_t n);
/* Appends s[len] to out with each maximal invalid subpart replaced by U+FFFD (as Rust's
 * from_utf8_lossy). With keep_tail, an incomplete but so far valid sequence at the very end is
 * left out. Returns the number of input bytes consumed; *st reports allocation failure. */
size_t lt_utf8_lossy_append(lt_tok_buf *out, const unsigned char *s, size_t len, int keep_tail, lt_status *st);

/* ---- the loaded tokenizer ---- */
typedef enum lt_tok_norm_kind {
    LT_NORM_NFC, LT_NORM_NFD, LT_NORM_NFKC, LT_NORM_NFKD, LT_NORM_LOWERCASE,
    LT_NORM_PREPEND,   /* Prepend: a (text) before a non-empty string */
    LT_NORM_REPLACE    /* Replace with a String pattern: every a -> b */
} lt_tok_norm_kind;
/* One normalizer step; a / b point into the tokenizer's pool. */
typedef struct lt_tok_norm { lt_tok_norm_kind kind; const char *a, *b; size_t al, bl; } lt_tok_norm;

/* Decoder steps of the SentencePiece-style (non byte-level) tokenizers. */
typedef enum lt_tok_dec_kind { LT_DEC_REPLACE, LT_DEC_BYTEFALLBACK, LT_DEC_FUSE, LT_DEC_STRIP, LT_DEC_METASPACE } lt_tok_dec_kind;
typedef struct lt_tok_dec {
    lt_tok_dec_kind kind;
    const char *a, *b; size_t al, bl; /* Replace: a -> b; Strip: a = the character; Metaspace: a = replacement */
    int start, stop;                  /* Strip; Metaspace: start = 1 unless prepend_scheme is never */
} lt_tok_dec;

typedef enum lt_tok_split_behavior {
    LT_SPLIT_REMOVED, LT_SPLIT_ISOLATED, LT_SPLIT_MERGED_PREV, LT_SPLIT_MERGED_NEXT, LT_SPLIT_CONTIGUOUS
} lt_tok_split_behavior;

typedef enum lt_tok_pre_kind { LT_PRE_SPLIT, LT_PRE_BYTELEVEL, LT_PRE_DIGITS } lt_tok_pre_kind;

typedef struct lt_tok_pre {
    int kind;              /* lt_tok_pre_kind */
    int behavior;          /* Split: lt_tok_split_behavior */
    int invert;            /* Split */
    int add_prefix_space;  /* ByteLevel */
    int individual;        /* Digits: individual_digits */
    pcre2_code *re;        /* Split (or ByteLevel with use_regex), JIT-compiled */
} lt_tok_pre;

typedef struct lt_tok_added {
    char *content;       /* as in the file */
    size_t len;
    char *norm;          /* content after the normalizer (normalized tokens only) */
    size_t norm_len;
    int32_t id;
    uint8_t special, normalized, lstrip, rstrip, single_word;
} lt_tok_added;

/* An open-addressing map from a byte string to an id. A slot keeps the key's first 8 bytes, its
 * length and a hash tag beside the id, so that lookups of short tokens (most of them) touch one
 * cache line and never the string; longer keys are compared with tok->tokens[id]. */
typedef struct lt_tok_slot { uint64_t head; uint32_t id1; uint32_t tag; } lt_tok_slot; /* id1 = id + 1; 0 = empty */
typedef struct lt_tok_smap { lt_tok_slot *slots; uint32_t mask; } lt_tok_smap;

/* Merge table: key (left id << 32 | right id) -> rank and merged id. */
typedef struct lt_tok_merge_slot { uint64_t key; int32_t rank, id; } lt_tok_merge_slot;

#define LT_TOK_CACHE_SHARDS 64
#define LT_TOK_CACHE_SLOTS 1024   /* per shard */
typedef struct lt_tok_cache_entry { uint64_t hash; char *key; uint32_t key_len; uint32_t n; int32_t *ids; } lt_tok_cache_entry;
typedef struct lt_tok_cache_shard {
    pthread_mutex_t mu;
    lt_tok_cache_entry *slots; /* [LT_TOK_CACHE_SLOTS], allocated on first use */
    uint32_t used;
} lt_tok_cache_shard;

struct lt_tokenizer {
    char *dir;
    /* vocabulary: id -> token string (NULL for gaps); the strings live in `pool` */
    int32_t n_ids;           /* max id + 1 over the model vocab and the added tokens */
    int32_t model_vocab;     /* entries of model.vocab */
    char **tokens;           /* [n_ids] */
    uint32_t *token_len;     /* [n_ids] */
    char *pool;              /* token strings, NUL-separated */
    uint8_t *is_special;     /* [n_ids]: added token with special=true */
    lt_tok_smap vocab;       /* token string -> id (model vocab + added tokens) */
    /* merges */
    lt_tok_merge_slot *merges;
    uint64_t merge_mask;
    int32_t n_merges;
    int ignore_merges;
    int32_t unk_id;          /* -1 when none */
    /* character-level BPE (no ByteLevel pre-tokenizer: SentencePiece-derived vocabularies) */
    int char_level;
    int byte_fallback, fuse_unk;
    int32_t fb_id[256];      /* id of <0xNN>, -1 if absent */
    uint8_t *is_fb;          /* [n_ids]: a <0xNN> byte token of the model vocab */
    /* Metaspace pre-tokenizer (first step): ' ' -> replacement, prepend by scheme, optional split */
    int metaspace;           /* 1 when present */
    int ms_scheme;           /* 0 always, 1 first, 2 never */
    char ms_rep[8];
    int ms_rep_len;
    lt_tok_dec *dec;         /* decoder steps (char-level tokenizers) */
    int n_dec;
    int dec_join_space;      /* no decoder at all: tokenizers joins the tokens with ' ' */
    /* byte-level alphabet */
    int32_t byte_id[256];    /* id of the token made of byte b's mapped character, -1 if absent */
    uint16_t byte_char[256]; /* bytes_to_unicode */
    int16_t char_byte[0x180];/* inverse for code points < 0x180, -1 elsewhere */
    int byte_level_decoder;
    /* added tokens */
    lt_tok_added *added;
    int32_t n_added;
    int has_normalized_added;
    uint8_t added_first[256];/* first bytes of raw-matched (non-normalized) added tokens */
    uint8_t added_norm_first[256];
    /* pipeline */
    lt_tok_norm *norms;
    int n_norms;
    lt_tok_pre *pre;
    int n_pre;
    /* post-processor (TemplateProcessing "single", for add_special=1) */
    int32_t *post_prefix, *post_suffix;
    int n_post_prefix, n_post_suffix;
    /* tokenizer_config.json / generation_config.json */
    int32_t bos_id, eos_id, pad_id;
    int32_t stop_ids[8];
    int n_stop_ids;
    char *eos_text, *bos_text, *pad_text;
    char *chat_template;
    /* BPE cache */
    lt_tok_cache_shard *cache;
};

int32_t lt_tok_smap_find(const lt_tokenizer *tok, const char *s, size_t len);
uint64_t lt_tok_hash(const void *data, size_t len);

/* Byte-level BPE of one pre-tokenized piece (its raw UTF-8 bytes, before the byte-to-char mapping):
 * appends ids[k] and, when `lens` is not NULL, the number of piece bytes each token covers, to the
 * growable arrays (*ids, *lens with *n used of *cap). Uses and fills the cache. */
lt_status lt_tok_bpe(const lt_tokenizer *tok, const unsigned char *piece, size_t len,
                     int32_t **ids, uint16_t **lens, size_t *n, size_t *cap);
void lt_tok_cache_free(lt_tokenizer *tok);

/* Normalizes text[len] through tok->norms into a fresh buffer; when `align` is not NULL it also
 * returns align[2 * norm_len]: for normalized byte i, align[2i] and align[2i+1] are the [start, end)
 * byte range of text that it came from. */
lt_status lt_tok_normalize(const lt_tokenizer *tok, const char *text, size_t len, char **out, size_t *out_len,
                           uint32_t **align);

/* Pre-tokenization (tok_pretok.c): a piece is text[start, end) of a normalized segment, with
 * `prefix` = 1 when ByteLevel's add_prefix_space put a space before it. */
typedef struct lt_tok_piece { uint32_t start, end; uint32_t prefix; } lt_tok_piece;
typedef struct lt_tok_pieces { lt_tok_piece *p; size_t n, cap; } lt_tok_pieces;
/* Runs tok->pre over text[len]; the pieces replace *out's content. md: match data of the caller's
 * thread (pcre2_match_data_create(64, NULL)); tmp: scratch reused between calls. */
lt_status lt_tok_pretokenize(const lt_tokenizer *tok, const char *text, size_t len, pcre2_match_data *md,
                             lt_tok_pieces *out, lt_tok_pieces *tmp);
/* Loading pieces (tok_load.c, tok_pretok.c) */
lt_status lt_tok_compile_regex(const char *pattern, size_t len, int literal, const char *field, pcre2_code **out);

/* ---- internal entry points for other library code ---- */
/* Loads a tokenizer from tokenizer.json's text alone (no tokenizer_config.json: no eos / chat
 * template). For the fuzz target and for callers that hold the file in memory. */
lt_status lt_tokenizer_load_json(const char *json, size_t len, lt_tokenizer **out);

/* Encodes text into fresh arrays (free() them): ids[n]; when offsets != NULL also
 * offsets[2n] = the [start, end) byte range in `text` that each token covers (a token that covers
 * part of a UTF-8 character gets the whole character's range; added text such as a prefix space
 * or a post-processor token gets an empty range). Used by lib/data for response-only masks. */
lt_status lt_tokenizer_encode_offsets(const lt_tokenizer *tok, const char *text, size_t len, int32_t add_special,
                                      int32_t **ids, uint32_t **offsets, size_t *n);

/* Encodes a generation prompt as transformers' tokenizer(prompt) does (add_special_tokens=True:
 * the post-processor's tokens around the text: Llama's / Gemma's BOS, nothing for Qwen2), into a
 * fresh array (free() it). A text whose own tokens already begin with the post-processor's
 * leading tokens (a chat template that writes the BOS text) keeps one copy of them, which is what
 * apply_chat_template(tokenize=True) gives (it encodes with add_special_tokens=False). */
lt_status lt_tokenizer_encode_prompt(const lt_tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n);

/* Seeds a token stream with the prompt that generation continues (call it before the first
 * push): the pushed ids then give the text that decoding prompt + ids gives beyond the prompt's
 * own decoded text, so a SentencePiece-style decoder does not strip the leading space of the
 * first new token as it does at the start of a text. Keeps only a short window of the prompt. */
lt_status lt_token_stream_prefill(lt_token_stream *stream, const int32_t *ids, size_t n);

/* The text of `ids` generated after prompt[n_prompt], as a stream seeded with the prompt emits
 * it (decode(prompt + ids) beyond decode(prompt)), into a fresh NUL-terminated buffer (free()). */
lt_status lt_tokenizer_decode_continuation(const lt_tokenizer *tok, const int32_t *prompt, size_t n_prompt,
                                           const int32_t *ids, size_t n, int32_t skip_special, char **text,
                                           size_t *len);

/* Encodes texts[i] (lens[i] bytes; lens may be NULL for NUL-terminated texts) on n_threads
 * threads (0 = all cores). ids[i] gets a fresh array (free() each) with n_ids[i] tokens.
 * On failure every ids[i] is NULL, and the message names the failing text's index. */
lt_status lt_tokenizer_encode_many(const lt_tokenizer *tok, const char *const *texts, const size_t *lens,
                                   size_t n_texts, int32_t add_special, int n_threads, int32_t **ids, size_t *n_ids);
#endif
