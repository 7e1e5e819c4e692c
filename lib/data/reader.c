/* reader.c - streams records out of a JSON array or JSON Lines file in fixed-size chunks.
 * For arrays a resumable byte scanner tracks strings, escapes and bracket depth to find each
 * top-level element's extent, so memory is one chunk plus the largest record whatever the
 * file's size. Structural damage (unterminated record, missing comma, text after ']') is
 * reported here with file:line:column; the content of each record is left to jansson. */
#include "data/reader.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

size_t lt_reader_chunk_bytes = (size_t)1 << 20;

enum { ST_BEFORE, ST_VALUE, ST_AFTER, ST_END };

struct lt_reader {
    FILE *f;
    char *path;
    char *buf;          /* [cap] file bytes [buf_off, buf_off + end) */
    size_t cap, end, pos;
    uint64_t buf_off, size;
    int eof, is_array;
    uint64_t line, col; /* of the byte at pos */
    /* array scanner state */
    int state, after_comma, depth, in_str, esc, scalar;
    size_t rec_start;
    lt_record_pos rec;
    uint64_t nrec;
    size_t nl_scan;     /* JSONL: bytes from pos already searched for '\n' */
};

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Moves bytes before `keep` out of the buffer and reads one more chunk. */
static lt_status refill(lt_reader *r, size_t keep) {
    if (keep > 0) {
        memmove(r->buf, r->buf + keep, r->end - keep);
        r->end -= keep;
        r->pos -= keep;
        if (r->rec_start >= keep) r->rec_start -= keep;
        r->buf_off += keep;
    }
    size_t chunk = lt_reader_chunk_bytes ? lt_reader_chunk_bytes : 1;
    if (r->end + chunk > r->cap) {
        if (r->end > LT_READER_MAX_RECORD)
            return lt_error(LT_ERR_DATA, "%s:%llu:%llu: record %llu is larger than %zu MiB (is the file damaged, or a "
                            "JSON Lines record missing its newline?)", r->path, (unsigned long long)r->rec.line,
                            (unsigned long long)r->rec.column, (unsigned long long)r->rec.record,
                            LT_READER_MAX_RECORD >> 20);
        size_t cap = r->cap ? r->cap : chunk;
        while (cap < r->end + chunk) cap *= 2;
        char *b = lt_realloc(r->buf, cap, "the dataset read buffer");
        if (!b) return LT_ERR_OUT_OF_MEMORY;
        r->buf = b;
        r->cap = cap;
    }
    size_t got = fread(r->buf + r->end, 1, chunk, r->f);
    if (got < chunk) {
        if (ferror(r->f)) return lt_error(LT_ERR_IO, "%s: read error at byte %llu: %s", r->path,
                                          (unsigned long long)(r->buf_off + r->end), strerror(errno));
        if (got == 0) r->eof = 1;
    }
    r->end += got;
    return LT_OK;
}

static void advance(lt_reader *r) {
    unsigned char c = (unsigned char)r->buf[r->pos++];
    if (c == '\n') { r->line++; r->col = 1; }
    else if ((c & 0xC0) != 0x80) r->col++;
}

static const char *show_char(unsigned char c, char tmp[8]) {
    if (c >= 0x21 && c < 0x7f) snprintf(tmp, 8, "'%c'", c);
    else snprintf(tmp, 8, "0x%02X", c);
    return tmp;
}

lt_status lt_reader_open(const char *path, lt_reader **out) {
    LT_CHECK_ARG(path && out, "lt_reader_open: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return lt_error(errno == ENOENT ? LT_ERR_NOT_FOUND : LT_ERR_IO, "%s: cannot open the dataset: %s", path,
                        strerror(errno));
    if (S_ISDIR(sb.st_mode)) return lt_error(LT_ERR_IO, "%s: is a folder, expected a .json or .jsonl file", path);
    lt_reader *r = lt_calloc(1, sizeof *r, "a dataset reader");
    if (!r) return LT_ERR_OUT_OF_MEMORY;
    r->path = lt_strdup(path);
    r->f = fopen(path, "rb");
    if (!r->f || !r->path) {
        lt_status st = r->path ? lt_error(LT_ERR_IO, "%s: cannot open the dataset: %s", path, strerror(errno))
                               : LT_ERR_OUT_OF_MEMORY;
        lt_reader_close(r);
        return st;
    }
    r->size = (uint64_t)sb.st_size;
    r->line = r->col = 1;
    lt_status st = LT_OK;
    /* find the first meaningful byte, skipping a UTF-8 byte order mark and blanks */
    int bom_checked = 0;
    for (;;) {
        if (r->pos == r->end) {
            if (r->eof) {
                st = lt_error(LT_ERR_DATA, "%s: the file is empty (no records): expected a JSON array of objects or "
                              "JSON Lines", path);
                goto fail;
            }
            if ((st = refill(r, r->pos)) < 0) goto fail;
            continue;
        }
        if (!bom_checked) {
            if (r->end - r->pos < 3 && !r->eof) { if ((st = refill(r, 0)) < 0) goto fail; continue; }
            bom_checked = 1;
            if (r->end - r->pos >= 3 && !memcmp(r->buf + r->pos, "\xEF\xBB\xBF", 3)) r->pos += 3;
            continue;
        }
        unsigned char c = (unsigned char)r->buf[r->pos];
        if (is_ws(c)) { advance(r); continue; }
        if (c == '[') { r->is_array = 1; advance(r); r->state = ST_BEFORE; break; }
        if (c == '{') { r->is_array = 0; break; }
        char tmp[8];
        st = lt_error(LT_ERR_DATA, "%s:%llu:%llu: the file starts with %s: expected a JSON array of objects ('[') or "
                      "JSON Lines (one '{...}' object per line)", path, (unsigned long long)r->line,
                      (unsigned long long)r->col, show_char(c, tmp));
        goto fail;
    }
    *out = r;
    return LT_OK;
fail:
    lt_reader_close(r);
    return st;
}

int lt_reader_is_array(const lt_reader *r) { return r->is_array; }
uint64_t lt_reader_bytes_done(const lt_reader *r) { return r->buf_off + r->pos; }
uint64_t lt_reader_bytes_total(const lt_reader *r) { return r->size; }

void lt_reader_close(lt_reader *r) {
    if (!r) return;
    if (r->f) fclose(r->f);
    free(r->buf);
    free(r->path);
    free(r);
}

static lt_status next_jsonl(lt_reader *r, const char **text, size_t *len, lt_record_pos *pos) {
    for (;;) {
        char *nl = NULL;
        if (r->pos + r->nl_scan < r->end) nl = memchr(r->buf + r->pos + r->nl_scan, '\n', r->end - r->pos - r->nl_scan);
        size_t line_end;
        if (nl) line_end = (size_t)(nl - r->buf);
        else if (r->eof) {
            if (r->pos == r->end) return LT_DONE;
            line_end = r->end; /* a last line without '\n' */
        } else {
            r->nl_scan = r->end - r->pos;
            r->rec_start = r->pos;
            r->rec.record = r->nrec + 1;
            r->rec.line = r->line;
            r->rec.column = 1;
            LT_TRY(refill(r, r->pos));
            continue;
        }
        r->nl_scan = 0;
        size_t a = r->pos, b = line_end;
        uint64_t line = r->line, col = 1;
        r->line++;
        r->col = 1;
        r->pos = nl ? line_end + 1 : line_end;
        while (a < b && is_ws((unsigned char)r->buf[a])) { a++; col++; }
        while (b > a && is_ws((unsigned char)r->buf[b - 1])) b--;
        if (a == b) continue; /* blank line */
        r->nrec++;
        *text = r->buf + a;
        *len = b - a;
        pos->record = r->nrec;
        pos->line = line;
        pos->column = col;
        pos->offset = r->buf_off + a;
        return LT_OK;
    }
}

static lt_status eof_error(lt_reader *r) {
    unsigned long long l = r->line, c = r->col;
    switch (r->state) {
    case ST_VALUE:
        return lt_error(LT_ERR_DATA, "%s:%llu:%llu: the file ends inside record %llu (which starts at %llu:%llu): %s",
                        r->path, l, c, (unsigned long long)r->rec.record, (unsigned long long)r->rec.line,
                        (unsigned long long)r->rec.column,
                        r->in_str ? "a string is never closed (missing '\"')"
                                  : r->scalar ? "the array's closing ']' is missing"
                                              : "an object or array is never closed (missing '}' or ']')");
    case ST_BEFORE:
    case ST_AFTER:
        return lt_error(LT_ERR_DATA, "%s:%llu:%llu: the file ends before the array's closing ']' (after %llu records; "
                        "is the file truncated?)", r->path, l, c, (unsigned long long)r->nrec);
    default:
        return LT_DONE;
    }
}

static lt_status next_array(lt_reader *r, const char **text, size_t *len, lt_record_pos *pos) {
    for (;;) {
        if (r->pos == r->end) {
            if (r->eof) return eof_error(r);
            LT_TRY(refill(r, r->state == ST_VALUE ? r->rec_start : r->pos));
            continue;
        }
        unsigned char c = (unsigned char)r->buf[r->pos];
        char tmp[8];
        switch (r->state) {
        case ST_BEFORE:
            if (is_ws(c)) { advance(r); continue; }
            if (c == ']') {
                if (r->after_comma)
                    return lt_error(LT_ERR_DATA, "%s:%llu:%llu: a trailing ',' before ']' (after record %llu): JSON "
                                    "allows no comma after the last element", r->path, (unsigned long long)r->line,
                                    (unsigned long long)r->col, (unsigned long long)r->nrec);
                r->state = ST_END;
                advance(r);
                continue;
            }
            if (c == ',')
                return lt_error(LT_ERR_DATA, "%s:%llu:%llu: an empty element (',' where record %llu should start)",
                                r->path, (unsigned long long)r->line, (unsigned long long)r->col,
                                (unsigned long long)r->nrec + 1);
            r->rec_start = r->pos;
            r->rec.record = ++r->nrec;
            r->rec.line = r->line;
            r->rec.column = r->col;
            r->rec.offset = r->buf_off + r->pos;
            r->depth = r->in_str = r->esc = 0;
            r->scalar = c != '{' && c != '[' && c != '"';
            r->state = ST_VALUE;
            continue;
        case ST_VALUE: {
            int done = 0;
            if (r->scalar) {
                if (is_ws(c) || c == ',' || c == ']') done = 1;
                else advance(r);
            } else if (r->in_str) {
                if (r->esc) r->esc = 0;
                else if (c == '\\') r->esc = 1;
                else if (c == '"') { r->in_str = 0; if (r->depth == 0) done = 1; }
                advance(r);
            } else {
                if (c == '"') r->in_str = 1;
                else if (c == '{' || c == '[') r->depth++;
                else if ((c == '}' || c == ']') && --r->depth <= 0) done = 1;
                advance(r);
            }
            if (!done) continue;
            r->state = ST_AFTER;
            r->after_comma = 0;
            *text = r->buf + r->rec_start;
            *len = r->pos - r->rec_start;
            *pos = r->rec;
            return LT_OK;
        }
        case ST_AFTER:
            if (is_ws(c)) { advance(r); continue; }
            if (c == ',') { r->after_comma = 1; r->state = ST_BEFORE; advance(r); continue; }
            if (c == ']') { r->state = ST_END; advance(r); continue; }
            return lt_error(LT_ERR_DATA, "%s:%llu:%llu: expected ',' or ']' after record %llu, found %s (a missing "
                            "comma between records?)", r->path, (unsigned long long)r->line,
                            (unsigned long long)r->col, (unsigned long long)r->nrec, show_char(c, tmp));
        default: /* ST_END */
            if (is_ws(c)) { advance(r); continue; }
            return lt_error(LT_ERR_DATA, "%s:%llu:%llu: unexpected %s after the array's closing ']' (one JSON array "
                            "per file)", r->path, (unsigned long long)r->line, (unsigned long long)r->col,
                            show_char(c, tmp));
        }
    }
}

lt_status lt_reader_next(lt_reader *r, const char **text, size_t *len, lt_record_pos *pos) {
    LT_CHECK_ARG(r && text && len && pos, "lt_reader_next: NULL argument");
    return r->is_array ? next_array(r, text, len, pos) : next_jsonl(r, text, len, pos);
}

void lt_reader_locate(const lt_record_pos *pos, const char *text, size_t at, uint64_t *line, uint64_t *column) {
    uint64_t l = pos->line, c = pos->column;
    for (size_t i = 0; i < at; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch == '\n') { l++; c = 1; }
        else if ((ch & 0xC0) != 0x80) c++;
    }
    *line = l;
    *column = c;
}

size_t lt_data_utf8_check(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t n;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; }
        else return i;
        if (i + n >= len) return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += n + 1;
    }
    return len;
}
