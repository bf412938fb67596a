#!/usr/bin/env bash
# tests/integration/test_readme.sh CERTMINTD CERTMINT [README]
# Runs the shell commands of README.md's "Enrolling a device with openssl cmp" section (and of
# "Managing the CA with certmint" when the README has it) against a throwaway instance, so the
# manual cannot rot.
#
# The instance is made as tools/demo.sh makes it (certmint init --dir var/demo, SOFTHSM2_CONF
# from var/demo/env, certmintd --check, then certmintd), in a temporary folder that stands for
# the repository root, so the README's relative paths (var/demo/...) work as written; certmintd
# listens on a free port, which replaces 8080 in the commands. Every command of the section's
# ```sh blocks runs as written (continuation lines joined, comments dropped) and must succeed;
# every certificate a command writes with -certout must verify against var/demo/ca.pem. A
# command with a trailing comment "# expect failure: TEXT" must fail and print TEXT.
# build/release/tools/certmint and build/release/engine/certmintd are links to the binaries
# under test.
# Placeholders ("...") are filled in, and say so in the output:
#   openssl cmp ... REST          the previous complete `openssl cmp` command, then REST
#   openssl cmp -cmd X ... REST   openssl cmp -cmd X -server/-path/-trusted as in the first
#                                 command, -certout var/demo/readme-N.pem, then REST
set -uo pipefail
certmintd=$(realpath "$1")
certmint=$(realpath "$2")
readme=$(realpath "${3:-$(dirname "$0")/../../README.md}")
# The sections whose commands run, in order; '?' marks one that may be absent.
sections=("Enrolling a device with openssl cmp" "?Managing the CA with certmint")
work=$(mktemp -d /tmp/certmint-readme-XXXXXX)
pid=""
fails=0
passes=0
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  if [ "$fails" -eq 0 ]; then rm -rf "$work"; else echo "kept $work for inspection"; fi
}
trap cleanup EXIT
ok()   { passes=$((passes + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }

# The commands, one a line.
python3 - "$readme" "${sections[@]}" >"$work/commands" <<'PY' || { echo "FAIL extracting"; exit 1; }
import sys
lines = open(sys.argv[1]).read().split("\n")
out = []
for title in sys.argv[2:]:
    optional = title.startswith("?")
    title = title.lstrip("?")
    if "## " + title not in lines:
        if optional:
            continue
        sys.exit(f"README has no '## {title}' section")
    start = lines.index("## " + title)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    block, cmd = None, ""
    for l in lines[start + 1:end]:
        if block is None:
            if l.strip() in ("```sh", "```bash", "```shell"):
                block = []
            continue
        if l.strip() == "```":
            block = None
            continue
        s = l.strip()
        if not cmd and (not s or s.startswith("#")):
            continue
        if s.endswith("\\"):
            cmd += s[:-1].rstrip() + " "
            continue
        cmd += s
        out.append(cmd)
        cmd = ""
if not out:
    sys.exit("no commands found")
print("\n".join(out))
PY
ok "extracted $(wc -l <"$work/commands") commands from README.md"

. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
cd "$work"
mkdir -p build/release/tools build/release/engine
ln -s "$certmint" build/release/tools/certmint
ln -s "$certmintd" build/release/engine/certmintd
# As tools/demo.sh does it.
"$certmint" init --dir var/demo --port "$port" >init.log 2>&1 && ok "certmint init --dir var/demo" \
  || { fail "certmint init"; cat init.log; exit 1; }
export $(cat var/demo/env)
"$certmintd" -c var/demo/certmint.cnf --check >check.log 2>&1 && ok "certmintd --check" \
  || { fail "certmintd --check"; cat check.log; exit 1; }
"$certmintd" -c var/demo/certmint.cnf --listen "127.0.0.1:$port" >daemon.log 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && ok "certmintd serves on 127.0.0.1:$port" \
  || { fail "certmintd did not start"; cat daemon.log; exit 1; }

server_args=""
prev_cmp=""
n=0
while IFS= read -r cmd; do
  n=$((n + 1))
  cmd=${cmd//127.0.0.1:8080/127.0.0.1:$port}
  note=""
  if [[ $cmd == *"..."* ]]; then
    if [[ $cmd =~ ^openssl\ cmp\ \.\.\.(.*)$ ]] && [ -n "$prev_cmp" ]; then
      cmd="$prev_cmp${BASH_REMATCH[1]}"
      note=" [... = the previous command]"
    elif [[ $cmd =~ ^openssl\ cmp\ (-cmd\ [a-z0-9]+)\ \.\.\.(.*)$ ]] && [ -n "$server_args" ]; then
      cmd="openssl cmp ${BASH_REMATCH[1]} $server_args -certout var/demo/readme-$n.pem${BASH_REMATCH[2]}"
      note=" [... = server, trust anchor and -certout]"
    else
      fail "command $n has a placeholder this test cannot fill: $cmd"
      continue
    fi
  fi
  if [[ $cmd =~ ^openssl\ cmp\  ]]; then
    prev_cmp=$cmd
    if [ -z "$server_args" ] && [[ $cmd =~ (-server [^ ]+ -path [^ ]+) ]]; then
      server_args="${BASH_REMATCH[1]} -trusted var/demo/ca.pem"
    fi
  fi
  expect=""
  if [[ $cmd =~ \#\ expect\ failure:\ (.*)$ ]]; then
    expect=${BASH_REMATCH[1]}
  fi
  echo "---- $n: $cmd" >>cmds.log
  bash -c "$cmd" >cmd.out 2>&1 </dev/null
  rc=$?
  cat cmd.out >>cmds.log
  if [ -n "$expect" ]; then
    if [ "$rc" -ne 0 ] && grep -qF -- "$expect" cmd.out; then
      ok "README command $n$note fails as documented: $cmd"
    else
      fail "README command $n$note: exit $rc, want a failure saying '$expect': $cmd"
      tail -5 cmd.out | sed 's/^/     | /'
    fi
    continue
  fi
  if [ "$rc" -eq 0 ]; then
    ok "README command $n$note: $cmd"
  else
    fail "README command $n$note: $cmd"
    tail -5 cmd.out | sed 's/^/     | /'
    continue
  fi
  if [[ $cmd =~ -certout\ ([^ ]+) ]]; then
    out=${BASH_REMATCH[1]}
    if openssl verify -CAfile var/demo/ca.pem "$out" >>cmds.log 2>&1; then
      ok "  $out verifies against var/demo/ca.pem"
    else
      fail "  $out does not verify against var/demo/ca.pem"
    fi
  fi
done <"$work/commands"

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=""
[ "$rc" -eq 0 ] && ok "certmintd stopped cleanly" || fail "certmintd exit $rc"
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
