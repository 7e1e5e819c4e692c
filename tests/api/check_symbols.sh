#!/bin/sh
# Compares the dynamic symbols libloratune.so defines with the committed list: only lt_*
# names, exactly those of include/loratune.h. Regenerate the list on purpose with
#   nm -D --defined-only libloratune.so | awk '{print $3}' | sort > exported_symbols.txt
set -eu
list=$1
got=$(mktemp)
nm -D --defined-only "$LORATUNE_LIBRARY" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sed 's/@.*//' | sort -u > "$got"
bad=$(grep -v '^lt_' "$got" || true)
if [ -n "$bad" ]; then echo "symbols outside lt_*: $bad"; exit 1; fi
if ! diff -u "$list" "$got"; then echo "exported symbols differ from $list"; exit 1; fi
# every declared function of the header is exported
decl=$(grep -o 'LT_API [^;]*' "$(dirname "$0")/../../include/loratune.h" | grep -o 'lt_[a-z0-9_]*(' | tr -d '(' | sort -u)
missing=$(echo "$decl" | comm -23 - "$got")
if [ -n "$missing" ]; then echo "declared in loratune.h but not exported: $missing"; exit 1; fi
echo "exported symbols: $(wc -l < "$got") lt_* names, as listed"
