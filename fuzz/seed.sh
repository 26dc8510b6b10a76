#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the captured frames in tests/data/*.bin and the committed
# minimal corpus in tests/data/fuzz/. The corpus directory is gitignored; run this before
# `cargo +nightly fuzz run <target>`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="$here/../tests/data"
for t in tnetstring request roundtrip; do
    mkdir -p "$here/corpus/$t"
    cp "$data"/*.bin "$here/corpus/$t/"
    # Committed seeds and crashers of this target (tests/data/fuzz/<target>-<name>).
    for f in "$data"/fuzz/"$t"-*; do
        [ -e "$f" ] && cp "$f" "$here/corpus/$t/"
    done
done
# The tnetstring target also gets each frame's tail (HEADERS BODY: two tnetstrings), cut after
# the third space.
for f in "$data"/[!c]*.bin "$data"/chunked*.bin; do
    perl -0777 -ne 'print $1 if /^(?:[^ ]* ){3}(.*)\z/s' "$f" > "$here/corpus/tnetstring/tail-$(basename "$f")"
done
find "$here/corpus/tnetstring" -size 0 -delete
echo "seeded: $(for t in tnetstring request roundtrip; do printf '%s=%s ' "$t" "$(ls "$here/corpus/$t" | wc -l)"; done)"
