#!/usr/bin/env bash
# The demo: start `eddy serve` on its embedded broker, deploy `uppercase`,
# produce a few lines, print the upper-cased output; then a word count
# (`split-words` -> `count`, two steps with durable state) queried with
# `eddy state`; stop the daemon.
# Run with `just demo` (it builds everything first).
set -euo pipefail

target=${CARGO_TARGET_DIR:-target}
eddy="$target/debug/eddy"
plugins="$(dirname "$0")/../target/plugins/wasm32-wasip2/release"
plugin="$plugins/uppercase.wasm"
work=$(mktemp -d)
export EDDY_SERVER=http://127.0.0.1:50151

"$eddy" serve --data-dir "$work/data" --listen 127.0.0.1:50151 \
    --topic lines:3 --topic lines-upper:3 --topic word-counts:3 >"$work/serve.out" 2>"$work/serve.log" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$work"' EXIT

for _ in $(seq 100); do
    grep -q "control plane listening" "$work/serve.out" 2>/dev/null && break
    kill -0 $daemon 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.1
done
cat "$work/serve.out"

echo "+ eddy pipeline create shout --module uppercase.wasm --input lines --output lines-upper"
"$eddy" pipeline create shout --module "$plugin" --input lines --output lines-upper >/dev/null

echo "+ printf 'hello eddy\nstreams of records\nwasm on kafka\n' | eddy produce lines"
printf 'hello eddy\nstreams of records\nwasm on kafka\n' | "$eddy" produce lines

echo "+ eddy consume lines-upper --from-beginning --count 3"
"$eddy" consume lines-upper --from-beginning --count 3 --idle-timeout 30s

# The output can arrive before the offsets are committed (every 100 ms
# at-least-once): wait for a lag of 0 so the table shows the commit.
for _ in $(seq 50); do
    "$eddy" pipeline get shout | awk '$1 ~ /^[0-9]+$/ { lag += $5 } END { exit lag != 0 }' && break
    sleep 0.1
done
echo "+ eddy pipeline get shout"
"$eddy" pipeline get shout

echo "+ eddy pipeline create wc --module split-words.wasm --module count.wasm --input lines --output word-counts"
"$eddy" pipeline create wc --module "$plugins/split_words.wasm" --module "$plugins/count.wasm" \
    --input lines --output word-counts >/dev/null
echo "+ printf 'eddy counts words\nwords of eddy\n' | eddy produce lines"
printf 'eddy counts words\nwords of eddy\n' | "$eddy" produce lines
# The pipeline reads `lines` from the start: the three lines above count too.
for _ in $(seq 300); do
    [ "$("$eddy" state get wc words 2>/dev/null)" = 2 ] && break
    sleep 0.1
done
echo "+ eddy state get wc eddy"
"$eddy" state get wc eddy
echo "+ eddy state scan wc --prefix w"
"$eddy" state scan wc --prefix w
