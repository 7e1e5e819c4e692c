/* reader.h - streaming readers for training files: a JSON array of objects or JSON Lines,
 * read in fixed-size chunks so a file larger than memory is fine. The reader finds each
 * top-level record's extent (a byte scanner for arrays, newlines for JSONL) and hands back its
 * text with its position; the caller parses it (jansson). Memory: one chunk plus the largest
 * record. */
#ifndef LT_READER_H
#define LT_READER_H
#include "core/core.h"

typedef struct lt_reader lt_reader;

typedef struct lt_record_pos {
    uint64_t record;   /* 1-based record number in the file */
    uint64_t line;     /* 1-based line where the record starts */
    uint64_t column;   /* 1-based column (in characters) where it starts */
    uint64_t offset;   /* byte offset of the record's first byte in the file */
} lt_record_pos;

/* Bytes read per chunk (tests lower it to exercise records that straddle chunks). */
extern size_t lt_reader_chunk_bytes;
/* The largest record accepted; larger ones are an error rather than unbounded memory. */
#define LT_READER_MAX_RECORD ((size_t)256 << 20)

/* Opens path and detects the layout from its first non-blank byte ('[' array, '{' JSONL).
 * An empty (or blank) file is an error (LT_ERR_DATA). */
lt_status lt_reader_open(const char *path, lt_reader **out);
/* 1 for a JSON array, 0 for JSONL. */
int lt_reader_is_array(const lt_reader *r);
/* The next record's text (not NUL-terminated; valid until the next call) and position.
 * Returns LT_OK, LT_DONE at the end, or an error for a file whose structure is broken (the
 * message says file:line:column). A record whose text is valid structure but not valid JSON
 * is returned as is: the caller's parser reports it (lt_reader_locate gives positions). */
lt_status lt_reader_next(lt_reader *r, const char **text, size_t *len, lt_record_pos *pos);
/* Bytes consumed so far and the file size (for progress). */
uint64_t lt_reader_bytes_done(const lt_reader *r);
uint64_t lt_reader_bytes_total(const lt_reader *r);
void lt_reader_close(lt_reader *r);

/* The file line and column of byte `at` inside a record that starts at pos. */
void lt_reader_locate(const lt_record_pos *pos, const char *text, size_t at, uint64_t *line, uint64_t *column);

/* Index of the first byte that is not valid UTF-8 (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF), or len when all of s is valid. */
size_t lt_data_utf8_check(const unsigned char *s, size_t len);
#endif
