#!/usr/bin/env bash
# End-to-end check of issue 5 §13 with the real binaries: `wrenn up`; a
# sandbox serves `python3 -m http.server 8000` over a directory tree; headless
# Chromium (browse.mjs) browses the listing through both URL forms, clicks into
# a subdirectory and back, follows a missing trailing slash (one redirect,
# inside the prefix) and downloads a file whose checksum must match.
# Screenshots land in target/wrenn-proxy-e2e/up/.
#
# Needs root, `scripts/setup --tests`, and the binaries built:
#   cargo build -p wrenn-cli && cargo build -p wrenn-guest --target x86_64-unknown-linux-musl
# Uses the proxy end-to-end prefix and slots (wrenn-tp, 4000-4999) and its own
# ports and state directory, so it runs beside everything else. Everything it
# starts is stopped and its directory removed on exit, also on failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
profile=${WRENN_PROFILE:-debug}
wrenn=${WRENN_BIN:-$root/target/$profile/wrenn}
base_port=${WRENN_E2E_BASE_PORT:-17800}
control=127.0.0.1:$base_port
agent=127.0.0.1:$((base_port + 1))
proxy=127.0.0.1:$((base_port + 80))
admin=127.0.0.1:$((base_port + 81))

[ "$(id -u)" -eq 0 ] || { echo "needs root (sandboxes)" >&2; exit 1; }
[ -x "$wrenn" ] || { echo "missing $wrenn: cargo build -p wrenn-cli" >&2; exit 1; }
[ -e "$here/node_modules/playwright-core" ] || (cd "$here" && npm ci --no-audit --no-fund)

dir=$(mktemp -d /tmp/wrenn-tp-e2e.XXXXXX)
export WRENN_DIR=$dir WRENN_PREFIX=wrenn-tp WRENN_SLOTS=4000-4099
export WRENN_CONTROL=http://$control WRENN_PROXY_LISTEN=$proxy
up_pid=
cleanup() {
    if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
        kill -TERM "$up_pid"
        wait "$up_pid" || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

"$wrenn" up --dir "$dir" --control-listen "$control" --agent-listen "$agent" \
    --proxy-listen "$proxy" --proxy-admin "$admin" >"$dir/up.out" 2>&1 &
up_pid=$!
for _ in $(seq 600); do
    curl -sf "http://$admin/readyz" >/dev/null && break
    kill -0 "$up_pid" 2>/dev/null || { cat "$dir/up.out" >&2; echo "wrenn up exited" >&2; exit 1; }
    sleep 0.5
done
curl -sf "http://$admin/readyz" >/dev/null || { echo "proxy never became ready" >&2; exit 1; }

id=$("$wrenn" sandbox create --timeout 600)
echo "sandbox $id"
head -c 262144 /dev/urandom >"$dir/data.bin"
sha=$(sha256sum "$dir/data.bin" | cut -d' ' -f1)
"$wrenn" files mkdir "$id" /srv/site/sub
echo "hello from the sandbox" | "$wrenn" files put "$id" - /srv/site/hello.txt
"$wrenn" files put "$id" "$dir/data.bin" /srv/site/sub/data.bin
"$wrenn" exec -d --tag http "$id" --cwd /srv/site -- python3 -m http.server 8000 --bind 0.0.0.0

mapfile -t urls < <("$wrenn" url "$id" 8000)
subdomain=${urls[0]}
path=${urls[1]}
for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$path")" = 200 ] && break
    sleep 0.1
done

spec=$(printf '{"forms":[{"name":"path","base":"%s"},{"name":"subdomain","base":"%s"}],"dir":"sub","file":"data.bin","sha256":"%s","entries":["hello.txt","sub/"],"artifacts":"%s"}' \
    "$path" "$subdomain" "$sha" "$root/target/wrenn-proxy-e2e/up")
node "$here/browse.mjs" "$spec"
"$wrenn" sandbox rm "$id"
echo "end-to-end browse through both URL forms: ok"
