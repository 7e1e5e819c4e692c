/* tok_bpe.c - byte-level BPE of one pre-tokenized piece: start from one symbol per byte (the id
 * of its bytes_to_unicode character), repeatedly merge the adjacent pair with the lowest merge
 * rank (ties: the leftmost), as tokenizers' Word::merge_all does. Short pieces use a linear scan,
 * long ones (a run of CJK characters can be hundreds of bytes) a binary heap. Results of pieces
 * up to 255 bytes are kept in a sharded, direct-mapped cache shared by all threads. */
#include "tok/tok.h"
#include <stdlib.h>
#include <string.h>

#define LT_BPE_CACHE_MAX_KEY 255
#define LT_BPE_SCAN_MAX 64   /* up to this many symbols a linear scan beats the heap */

static inline int lt_bpe_lookup(const lt_tokenizer *tok, int32_t a, int32_t b, int32_t *rank, int32_t *id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t k = key;
    k ^= k >> 33; k *= 0xff51afd7ed558ccdull; k ^= k >> 33;
    uint64_t i = k & tok->merge_mask;
    for (;;) {
        const lt_tok_merge_slot *s = &tok->merges[i];
        if (s->rank < 0) return 0;
        if (s->key == key) { *rank = s->rank; *id = s->id; return 1; }
        i = (i + 1) & tok->merge_mask;
    }
}

typedef struct lt_bpe_sym { int32_t id; int32_t prev, next; uint32_t len; } lt_bpe_sym;
typedef struct lt_bpe_merge { int32_t rank, pos, id; } lt_bpe_merge;

static inline int lt_bpe_less(const lt_bpe_merge *a, const lt_bpe_merge *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}
static void lt_bpe_heap_push(lt_bpe_merge *h, size_t *n, lt_bpe_merge m) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!lt_bpe_less(&m, &h[p])) break;
        h[i] = h[p]; i = p;
    }
    h[i] = m;
}
static lt_bpe_merge lt_bpe_heap_pop(lt_bpe_merge *h, size_t *n) {
    lt_bpe_merge top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && lt_bpe_less(&h[c + 1], &h[c])) c++;
        if (!lt_bpe_less(&h[c], &last)) break;
        h[i] = h[c]; i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* Merges sym[0..n) in place (a linked list through prev/next; merged-away symbols get len 0). */
static lt_status lt_bpe_merge_all(const lt_tokenizer *tok, lt_bpe_sym *sym, int32_t n) {
    if (n <= LT_BPE_SCAN_MAX) {
        /* rank[i] / mid[i]: the merge of symbol i with its next one (INT32_MAX = none), kept up to
         * date so that each step is a scan of small integers and only the pairs next to a merge
         * are looked up again */
        int32_t rank[LT_BPE_SCAN_MAX], mid[LT_BPE_SCAN_MAX];
        for (int32_t i = 0; i < n; i++) {
            rank[i] = INT32_MAX;
            if (i + 1 < n && !lt_bpe_lookup(tok, sym[i].id, sym[i + 1].id, &rank[i], &mid[i])) rank[i] = INT32_MAX;
        }
        for (;;) {
            int32_t best = -1, best_rank = INT32_MAX;
            for (int32_t i = 0; i >= 0; i = sym[i].next)
                if (rank[i] < best_rank) { best = i; best_rank = rank[i]; }
            if (best < 0) return LT_OK;
            int32_t nx = sym[best].next;
            sym[best].id = mid[best];
            sym[best].len += sym[nx].len;
            sym[best].next = sym[nx].next;
            if (sym[nx].next >= 0) sym[sym[nx].next].prev = best;
            sym[nx].len = 0;
            rank[best] = INT32_MAX;
            if (sym[best].next >= 0 && !lt_bpe_lookup(tok, sym[best].id, sym[sym[best].next].id, &rank[best], &mid[best]))
                rank[best] = INT32_MAX;
            int32_t pv = sym[best].prev;
            if (pv >= 0) {
                rank[pv] = INT32_MAX;
                if (!lt_bpe_lookup(tok, sym[pv].id, sym[best].id, &rank[pv], &mid[pv])) rank[pv] = INT32_MAX;
            }
        }
    }
    lt_bpe_merge *heap = malloc((size_t)n * 3 * sizeof *heap + 16);
    if (!heap) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory in BPE for a %d-byte piece", n);
    size_t hn = 0, hcap = (size_t)n * 3;
    for (int32_t i = 0; i + 1 < n; i++) {
        int32_t r, id;
        if (lt_bpe_lookup(tok, sym[i].id, sym[i + 1].id, &r, &id)) lt_bpe_heap_push(heap, &hn, (lt_bpe_merge){r, i, id});
    }
    while (hn) {
        lt_bpe_merge top = lt_bpe_heap_pop(heap, &hn);
        lt_bpe_sym *cur = &sym[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        int32_t nx = cur->next;
        int32_t r, id;
        if (!lt_bpe_lookup(tok, cur->id, sym[nx].id, &r, &id) || id != top.id) continue; /* stale */
        cur->id = id;
        cur->len += sym[nx].len;
        cur->next = sym[nx].next;
        sym[nx].len = 0;
        if (cur->next >= 0) sym[cur->next].prev = top.pos;
        if (hn + 2 > hcap) { /* cannot happen (each merge adds at most 2, removes 1), but stay safe */
            lt_bpe_merge *nh = realloc(heap, (hcap * 2 + 4) * sizeof *heap);
            if (!nh) { free(heap); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory in BPE"); }
            heap = nh; hcap = hcap * 2 + 4;
        }
        if (cur->prev >= 0 && lt_bpe_lookup(tok, sym[cur->prev].id, cur->id, &r, &id))
            lt_bpe_heap_push(heap, &hn, (lt_bpe_merge){r, cur->prev, id});
        if (cur->next >= 0 && lt_bpe_lookup(tok, cur->id, sym[cur->next].id, &r, &id))
            lt_bpe_heap_push(heap, &hn, (lt_bpe_merge){r, top.pos, id});
    }
    free(heap);
    return LT_OK;
}

static lt_status lt_bpe_reserve(int32_t **ids, uint16_t **lens, size_t *cap, size_t need) {
    if (need <= *cap) return LT_OK;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    int32_t *ni = realloc(*ids, nc * sizeof(int32_t));
    if (!ni) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory growing a token list to %zu", nc);
    *ids = ni;
    if (lens) {
        uint16_t *nl = realloc(*lens, nc * sizeof(uint16_t));
        if (!nl) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory growing a token list to %zu", nc);
        *lens = nl;
    }
    *cap = nc;
    return LT_OK;
}

/* ---- cache ---- */
static int lt_bpe_cache_get(const lt_tokenizer *tok, uint64_t h, const unsigned char *key, size_t len,
                            int32_t **ids, uint16_t **lens, size_t *n, size_t *cap, lt_status *st) {
    lt_tok_cache_shard *sh = &tok->cache[h & (LT_TOK_CACHE_SHARDS - 1)];
    int hit = 0;
    pthread_mutex_lock(&sh->mu);
    if (sh->slots) {
        lt_tok_cache_entry *e = &sh->slots[(h >> 6) & (LT_TOK_CACHE_SLOTS - 1)];
        if (e->key && e->hash == h && e->key_len == len && !memcmp(e->key, key, len)) {
            *st = lt_bpe_reserve(ids, lens, cap, *n + e->n);
            if (*st == LT_OK) {
                memcpy(*ids + *n, e->ids, e->n * sizeof(int32_t));
                if (lens) {
                    const uint8_t *el = (const uint8_t *)(e->ids + e->n);
                    for (uint32_t i = 0; i < e->n; i++) (*lens)[*n + i] = el[i];
                }
                *n += e->n;
            }
            hit = 1;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return hit;
}

static void lt_bpe_cache_put(const lt_tokenizer *tok, uint64_t h, const unsigned char *key, size_t len,
                             const int32_t *ids, const uint16_t *lens, size_t n) {
    /* one block: ids[n] (int32), lens[n] (uint8), key[len] */
    char *blk = malloc(n * 5 + len + 1);
    if (!blk) return; /* the cache is best effort */
    memcpy(blk, ids, n * 4);
    for (size_t i = 0; i < n; i++) blk[n * 4 + i] = (char)(uint8_t)lens[i];
    memcpy(blk + n * 5, key, len);
    lt_tok_cache_shard *sh = &tok->cache[h & (LT_TOK_CACHE_SHARDS - 1)];
    pthread_mutex_lock(&sh->mu);
    if (!sh->slots) sh->slots = calloc(LT_TOK_CACHE_SLOTS, sizeof(lt_tok_cache_entry));
    if (sh->slots) {
        lt_tok_cache_entry *e = &sh->slots[(h >> 6) & (LT_TOK_CACHE_SLOTS - 1)];
        free(e->ids);
        e->ids = (int32_t *)blk; e->key = blk + n * 5; e->key_len = (uint32_t)len; e->n = (uint32_t)n; e->hash = h;
        blk = NULL;
    }
    pthread_mutex_unlock(&sh->mu);
    free(blk);
}

void lt_tok_cache_free(lt_tokenizer *tok) {
    if (!tok->cache) return;
    for (int s = 0; s < LT_TOK_CACHE_SHARDS; s++) {
        lt_tok_cache_shard *sh = &tok->cache[s];
        if (sh->slots) for (int i = 0; i < LT_TOK_CACHE_SLOTS; i++) free(sh->slots[i].ids);
        free(sh->slots);
        pthread_mutex_destroy(&sh->mu);
    }
    free(tok->cache);
    tok->cache = NULL;
}

/* Character-level BPE (tokenizers' BPE::merge_word without the byte-level alphabet): one symbol
 * per character found in the vocabulary; a character that is not becomes its <0xNN> byte tokens
 * with byte_fallback (when all of them exist), else the unk token (consecutive ones fused with
 * fuse_unk; a pending unk is written only when a known character or the end comes, as tokenizers
 * does); then the merges by rank. */
static lt_status lt_tok_bpe_chars(const lt_tokenizer *tok, const unsigned char *piece, size_t len,
                                  int32_t **ids, uint16_t **lens, size_t *n, size_t *cap) {
    if (tok->ignore_merges) {
        int32_t id = lt_tok_smap_find(tok, (const char *)piece, len);
        if (id >= 0) {
            LT_TRY(lt_bpe_reserve(ids, lens, cap, *n + 1));
            (*ids)[*n] = id;
            if (lens) (*lens)[*n] = (uint16_t)(len > 0xFFFF ? 0xFFFF : len);
            (*n)++;
            return LT_OK;
        }
    }
    lt_bpe_sym stack_sym[64];
    lt_bpe_sym *sym = len <= 64 ? stack_sym : malloc(len * sizeof *sym);
    if (!sym) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory in BPE for a %zu-byte piece", len);
    int32_t ns = 0;
    int32_t unk_len = 0; /* > 0: an unk of this many bytes is pending */
    uint32_t pending = 0; /* bytes of dropped characters join the next token's span */
#define LT_SYM_ADD(ID, L) do { \
        sym[ns] = (lt_bpe_sym){(ID), ns - 1, -1, (uint32_t)(L) + pending}; \
        pending = 0; \
        if (ns > 0) { sym[ns - 1].next = ns; } \
        ns++; \
    } while (0)
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int cl = lt_utf8_decode(piece + i, &cp);
        int32_t id = lt_tok_smap_find(tok, (const char *)piece + i, (size_t)cl);
        if (id >= 0) {
            if (unk_len) { LT_SYM_ADD(tok->unk_id, unk_len); unk_len = 0; }
            LT_SYM_ADD(id, cl);
        } else {
            int all = tok->byte_fallback;
            for (int k = 0; k < cl && all; k++) all = tok->fb_id[piece[i + (size_t)k]] >= 0;
            if (all) {
                for (int k = 0; k < cl; k++) LT_SYM_ADD(tok->fb_id[piece[i + (size_t)k]], 1);
            } else if (tok->unk_id >= 0) {
                if (unk_len && !tok->fuse_unk) { LT_SYM_ADD(tok->unk_id, unk_len); unk_len = 0; }
                unk_len += cl;
            } else pending += (uint32_t)cl;
        }
        i += (size_t)cl;
    }
    if (unk_len) LT_SYM_ADD(tok->unk_id, unk_len);
#undef LT_SYM_ADD
    lt_status st = LT_OK;
    if (ns > 0) st = lt_bpe_merge_all(tok, sym, ns);
    if (st == LT_OK) st = lt_bpe_reserve(ids, lens, cap, *n + (size_t)ns);
    if (st == LT_OK) {
        for (int32_t i = 0; ns > 0 && i >= 0 && i < ns; i = sym[i].next) {
            (*ids)[*n] = sym[i].id;
            if (lens) (*lens)[*n] = (uint16_t)(sym[i].len > 0xFFFF ? 0xFFFF : sym[i].len);
            (*n)++;
        }
    }
    if (sym != stack_sym) free(sym);
    return st;
}

lt_status lt_tok_bpe(const lt_tokenizer *tok, const unsigned char *piece, size_t len,
                     int32_t **ids, uint16_t **lens, size_t *n, size_t *cap) {
    if (!len) return LT_OK;
    if (tok->char_level) {
        if (len > 0x7FFFFFF0u) return lt_error(LT_ERR_INVALID_ARGUMENT, "a piece of %zu bytes is too long to encode", len);
        return lt_tok_bpe_chars(tok, piece, len, ids, lens, n, cap);
    }
    if (len > 0x7FFFFFF0u) return lt_error(LT_ERR_INVALID_ARGUMENT, "a piece of %zu bytes is too long to encode", len);
    lt_status st = LT_OK;
    int cacheable = len <= LT_BPE_CACHE_MAX_KEY && tok->cache;
    uint64_t h = 0;
    if (len == 1) { /* a single byte needs no merge */
        int32_t id = tok->byte_id[piece[0]] >= 0 ? tok->byte_id[piece[0]] : tok->unk_id;
        if (id < 0) return LT_OK;
        LT_TRY(lt_bpe_reserve(ids, lens, cap, *n + 1));
        (*ids)[*n] = id;
        if (lens) (*lens)[*n] = 1;
        (*n)++;
        return LT_OK;
    }
    if (cacheable) {
        h = lt_tok_hash(piece, len);
        if (lt_bpe_cache_get(tok, h, piece, len, ids, lens, n, cap, &st)) return st;
    }
    size_t n0 = *n;
    if (tok->ignore_merges) { /* the whole piece is a token: take it without merging */
        char stackbuf[512], *mapped = len * 2 <= sizeof stackbuf ? stackbuf : malloc(len * 2);
        if (!mapped) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory in BPE");
        size_t ml = 0;
        for (size_t i = 0; i < len; i++) ml += (size_t)lt_utf8_encode(tok->byte_char[piece[i]], mapped + ml);
        int32_t id = lt_tok_smap_find(tok, mapped, ml);
        if (mapped != stackbuf) free(mapped);
        if (id >= 0) {
            LT_TRY(lt_bpe_reserve(ids, lens, cap, *n + 1));
            (*ids)[*n] = id;
            if (lens) (*lens)[*n] = (uint16_t)(len > 0xFFFF ? 0xFFFF : len);
            (*n)++;
            goto done;
        }
    }
    {
        lt_bpe_sym stack_sym[64];
        lt_bpe_sym *sym = len <= 64 ? stack_sym : malloc(len * sizeof *sym);
        if (!sym) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory in BPE for a %zu-byte piece", len);
        int32_t ns = 0;
        uint32_t pending = 0; /* bytes of dropped symbols (no id, no unk) join the next token's span */
        for (size_t i = 0; i < len; i++) {
            int32_t id = tok->byte_id[piece[i]] >= 0 ? tok->byte_id[piece[i]] : tok->unk_id;
            if (id < 0) { pending++; continue; }
            sym[ns] = (lt_bpe_sym){id, ns - 1, -1, 1 + pending};
            pending = 0;
            if (ns > 0) sym[ns - 1].next = ns;
            ns++;
        }
        if (ns > 0) st = lt_bpe_merge_all(tok, sym, ns);
        if (st == LT_OK) st = lt_bpe_reserve(ids, lens, cap, *n + (size_t)ns);
        if (st == LT_OK) {
            for (int32_t i = 0; i >= 0 && i < ns; i = sym[i].next) {
                (*ids)[*n] = sym[i].id;
                if (lens) (*lens)[*n] = (uint16_t)(sym[i].len > 0xFFFF ? 0xFFFF : sym[i].len);
                (*n)++;
            }
        }
        if (sym != stack_sym) free(sym);
        if (st != LT_OK) return st;
    }
done:
    if (cacheable && lens) {
        int fits = 1;
        for (size_t i = n0; i < *n; i++) if ((*lens)[i] > 255) fits = 0;
        if (fits) lt_bpe_cache_put(tok, h, piece, len, *ids + n0, *lens + n0, *n - n0);
    } else if (cacheable) {
        /* no lens asked: compute them from the tokens' byte-level lengths for the cache */
        size_t k = *n - n0;
        uint16_t lbuf[256];
        if (k <= 256) {
            int ok = 1;
            for (size_t i = 0; i < k; i++) {
                int32_t id = (*ids)[n0 + i];
                /* each byte is one character of 1 or 2 UTF-8 bytes: count characters */
                const unsigned char *s = (const unsigned char *)tok->tokens[id];
                uint32_t tl = tok->token_len[id], chars = 0;
                for (uint32_t j = 0; j < tl; j++) chars += (s[j] & 0xC0) != 0x80;
                if (chars > 255 || id == tok->unk_id) ok = 0;
                lbuf[i] = (uint16_t)chars;
            }
            if (ok) lt_bpe_cache_put(tok, h, piece, len, *ids + n0, lbuf, k);
        }
    }
    return LT_OK;
}
