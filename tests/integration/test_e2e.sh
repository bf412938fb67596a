#!/usr/bin/env bash
# tests/integration/test_e2e.sh CERTMINTD CERTMINT
# A throwaway CA instance (SoftHSM token, root CA, config, secret), certmintd on a free
# loopback port, and `openssl cmp` as the real client for every enrolment flow, good and bad;
# malformed HTTP; concurrent clients; the store's record count; a graceful SIGTERM.
set -uo pipefail
certmintd=$1
certmint=$2
bench=${3:+$(realpath "$3")} # certmint-bench, for the load checks (skipped only in builds without benches)
work=$(mktemp -d /tmp/certmint-e2e-XXXXXX)
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
check() { local what=$1; shift; if "$@" >>"$work/cmds.log" 2>&1; then ok "$what"; else fail "$what"; fi; }
check_not() { local what=$1; shift; if "$@" >>"$work/cmds.log" 2>&1; then fail "$what"; else ok "$what"; fi; }

. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
"$certmint" init --dir "$work/inst" --port "$port" --subject "/O=certmint e2e/CN=e2e Root CA" \
  >"$work/init.log" 2>&1 || { cat "$work/init.log"; fail "certmint init"; exit 1; }
ok "certmint init"
check_not "certmint init refuses an existing instance" "$certmint" init --dir "$work/inst"
# CRLs re-issued as soon as revocations happen; caCerts answered without protection.
sed -i 's/^caPubs = on/caPubs = on\ncrl_min_interval = 0\nunprotected_genm = on/' \
  "$work/inst/certmint.cnf"
# A device vendor's CA (trust_anchors) for devices whose manufacturer certificate holds an
# RSA-PSS or Ed448 key (openssl cmp 3.0 cannot sign a CMP message with those keys: "unsupported
# key type"; certmint-bench signs for them below).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/vendor.key" \
  -out "$work/vendor.pem" -subj "/CN=e2e Vendor CA" -days 2 \
  -addext basicConstraints=critical,CA:TRUE 2>/dev/null
export $(cat "$work/inst/env")
secret=$(cat "$work/inst/secrets/demo-device")
# Issue 14's client settings: a one-time secret, a secret limited to a subject pattern, and a
# vendor PKI (trust anchor with its CRL) for IDevID-signed ir.
"$certmint" secret add -c "$work/inst/certmint.cnf" --ref once-1 >"$work/secret.log" 2>&1 \
  && "$certmint" secret add -c "$work/inst/certmint.cnf" --ref line-9 >>"$work/secret.log" 2>&1 \
  || { cat "$work/secret.log"; fail "certmint secret add"; }
mkdir -p "$work/vendor"
( cd "$work/vendor" &&
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout vendor.key \
    -out vendor.pem -subj "/O=Vendor/CN=Vendor IDevID CA" -days 30 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
  printf '[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\ndefault_md = sha256\ndefault_crl_days = 1\n' >ca.cnf &&
  : >index.txt &&
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout idevid.key \
    -subj "/O=Vendor/CN=device-SN42" -out idevid.csr &&
  printf 'keyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\n' >idevid.ext &&
  openssl x509 -req -in idevid.csr -CA vendor.pem -CAkey vendor.key -set_serial 42 -days 30 \
    -extfile idevid.ext -out idevid.pem &&
  openssl ca -gencrl -config ca.cnf -keyfile vendor.key -cert vendor.pem -out vendor.crl
) >"$work/vendor.log" 2>&1 || { cat "$work/vendor.log"; fail "vendor PKI"; }
cp "$work/vendor/vendor.pem" "$work/vendor/vendor.crl" "$work/inst/"
# (trust_anchors: the IDevID CA with its CRL, and the vendor CA of the RSA-PSS and Ed448
# devices above, which has no CRL.)
printf 'once.once-1 = on\nsubject_pattern.line-9 = CN=line-9-*\ntrust_anchors = vendor.pem, %s\ntrust_crls = vendor.crl\n' \
  "$work/vendor.pem" >>"$work/inst/certmint.cnf"
once=$(cat "$work/inst/secrets/once-1")
line9=$(cat "$work/inst/secrets/line-9")
check "certmintd --check" "$certmintd" -c "$work/inst/certmint.cnf" --check
check "certmintd --help names --log, SIGHUP and SIGTERM" sh -c "\"$certmintd\" --help | \
  grep -q -- '--log FILE' && \"$certmintd\" --help | grep -q SIGHUP && \
  \"$certmintd\" --help | grep -q SIGTERM"

"$certmintd" -c "$work/inst/certmint.cnf" --log "$work/daemon.log" >"$work/stdout.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
check "healthz" curl -sf "http://127.0.0.1:$port/healthz"

srv=(-server "127.0.0.1:$port" -path /.well-known/cmp/p/devices -trusted "$work/inst/ca.pem")
# openssl cmp's default PBM MAC is HMAC-SHA1, which certmint accepts only with allow_sha1 = on.
mac=(-ref demo-device -secret "pass:$secret" -mac hmacWithSHA256)
cd "$work"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key 2>/dev/null
openssl genpkey -algorithm ED25519 -out ed.key 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out ec384.key 2>/dev/null
# nk NAME: a fresh EC P-256 key NAME.key (the CA refuses to certify a key twice).
nk() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
openssl genpkey -algorithm RSA-PSS -pkeyopt rsa_keygen_bits:2048 -out pss.key 2>/dev/null
openssl genpkey -algorithm ED448 -out ed448.key 2>/dev/null
for k in pss ed448; do # their manufacturer certificates
  openssl req -new -key "$k.key" -subj "/CN=idev-$k" -out "$k.csr" 2>/dev/null
  openssl x509 -req -in "$k.csr" -CA vendor.pem -CAkey vendor.key -set_serial "0x$RANDOM$RANDOM" \
    -days 2 -out "$k-idev.pem" 2>/dev/null
done

# enrolled CERT KEY CN: the certificate verifies against the CA and holds KEY and CN.
enrolled() {
  openssl verify -CAfile inst/ca.pem "$1" >/dev/null 2>&1 || return 1
  [ "$(openssl x509 -in "$1" -noout -pubkey)" = "$(openssl pkey -in "$2" -pubout)" ] || return 1
  openssl x509 -in "$1" -noout -subject | grep -q "CN = $3" || return 1
}

# Enrolment flows.
check "ir PBM + certConf (EC P-256)" openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" -newkey ec.key \
  -subject /CN=dev-ec -certout ir-ec.pem
check "  issued cert verifies, key and subject" enrolled ir-ec.pem ec.key dev-ec
check "ir PBM implicitConfirm (RSA-2048)" openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" \
  -newkey rsa.key -subject /CN=dev-rsa -implicit_confirm -certout ir-rsa.pem
check "  issued cert verifies, key and subject" enrolled ir-rsa.pem rsa.key dev-rsa
check "ir PBM (Ed25519) at the default path" openssl cmp -cmd ir -server "127.0.0.1:$port" \
  -path /.well-known/cmp -trusted inst/ca.pem "${mac[@]}" -newkey ed.key -subject /CN=dev-ed \
  -certout ir-ed.pem
check "  issued cert verifies, key and subject" enrolled ir-ed.pem ed.key dev-ed
check "cr signed with the issued certificate" openssl cmp -cmd cr "${srv[@]}" -cert ir-ec.pem \
  -key ec.key -newkey ec384.key -subject /CN=dev-ec -certout cr.pem
check "  issued cert verifies, key and subject" enrolled cr.pem ec384.key dev-ec
nk kur
check "kur signed by the certificate it updates" openssl cmp -cmd kur "${srv[@]}" \
  -cert ir-rsa.pem -key rsa.key -newkey kur.key -certout kur.pem
check "  issued cert verifies, key and subject" enrolled kur.pem kur.key dev-rsa
nk p10
openssl req -new -key p10.key -subj /CN=dev-p10 -out p10.csr 2>/dev/null
check "p10cr PBM" openssl cmp -cmd p10cr "${srv[@]}" "${mac[@]}" -csr p10.csr -certout p10.pem
check "  issued cert verifies, key and subject" enrolled p10.pem p10.key dev-p10
nk label
check "operation label in the path" openssl cmp -cmd ir -server "127.0.0.1:$port" \
  -path /.well-known/cmp/p/devices/initialization -trusted inst/ca.pem "${mac[@]}" \
  -newkey label.key -subject /CN=dev-label -implicit_confirm -certout label.pem

# Rejections the client reports: the failure bit, and the statusString sentence that tells the
# operator what to fix (openssl cmp prints it as StatusString: "...").
rejected() { # rejected WHAT FAILINFO WORDS openssl-args...
  local what=$1 bit=$2 words=$3; shift 3
  if openssl cmp "$@" >"$work/rej.log" 2>&1; then fail "$what (was accepted)"; return; fi
  if ! grep -q "$bit" "$work/rej.log"; then fail "$what (no $bit)"; cat "$work/rej.log"; return; fi
  if grep -F "StatusString: \"" "$work/rej.log" | grep -qF "$words"; then ok "$what -> $bit: $words"
  else fail "$what (statusString without \"$words\")"; cat "$work/rej.log"; fi
}
rejected "wrong secret" badMessageCheck \
  "the MAC does not verify: wrong shared secret for this senderKID?" \
  -cmd ir "${srv[@]}" -ref demo-device -secret pass:nope -mac hmacWithSHA256 \
  -newkey ec.key -subject /CN=x -certout x.pem
rejected "unknown reference" badMessageCheck "no MAC secret for senderKID nobody" \
  -cmd ir "${srv[@]}" -ref nobody \
  -secret "pass:$secret" -mac hmacWithSHA256 -newkey ec.key -subject /CN=x -certout x.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout rogue-ca.key \
  -out rogue-ca.pem -subj /CN=rogue-ca -days 2 -addext basicConstraints=critical,CA:TRUE 2>/dev/null
openssl req -new -key ec.key -subj /CN=rogue-dev -out rogue.csr 2>/dev/null
openssl x509 -req -in rogue.csr -CA rogue-ca.pem -CAkey rogue-ca.key -set_serial 9 -days 2 \
  -out rogue.pem 2>/dev/null
rejected "untrusted signer" signerNotTrusted \
  "the signer's certificate is not trusted: self-signed certificate in certificate chain (CN=rogue-ca)" \
  -cmd cr "${srv[@]}" -cert rogue.pem -key ec.key \
  -extracerts rogue-ca.pem -newkey ec384.key -subject /CN=x -certout x.pem
rejected "kur signed by a foreign certificate" signerNotTrusted \
  "the signer's certificate is not trusted" -cmd kur "${srv[@]}" \
  -cert rogue.pem -key ec.key -extracerts rogue-ca.pem -newkey ed.key -certout x.pem
rejected "wrong recipient" wrongAuthority \
  "the message is addressed to CN=Some Other CA, not to this CA (CN=e2e Root CA,O=certmint e2e)" \
  -cmd ir "${srv[@]}" "${mac[@]}" \
  -recipient "/CN=Some Other CA" -newkey ec.key -subject /CN=x -certout x.pem
nk recip
check "explicit recipient naming this CA" openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" \
  -recipient "/O=certmint e2e/CN=e2e Root CA" -newkey recip.key -subject /CN=dev-recip \
  -implicit_confirm -certout recip.pem
# A tampered request: made by the client, one byte of the subject changed, then sent as is.
openssl cmp -cmd ir -use_mock_srv -srv_ref demo-device -srv_secret "pass:$secret" \
  -srv_cert inst/ca.pem -srv_key ec.key -rsp_cert inst/ca.pem "${mac[@]}" -newkey ec.key \
  -subject /CN=tamper-me -reqout tamper.der -certout x.pem -disable_confirm >/dev/null 2>&1
python3 - "$work/tamper.der" <<'PY'
import sys
p=sys.argv[1]; b=bytearray(open(p,'rb').read()); i=b.find(b'tamper-me'); b[i]=ord('T'); open(p,'wb').write(b)
PY
curl -s -o tamper-rsp.der -H 'Content-Type: application/pkixcmp' --data-binary @tamper.der \
  "http://127.0.0.1:$port/.well-known/cmp/p/devices"
if openssl asn1parse -inform DER -in tamper-rsp.der 2>/dev/null | grep -q "cont \[ 23 \]"; then
  ok "tampered request -> CMP error"; else fail "tampered request -> CMP error"; fi

# Expect: 100-continue (curl asks for it on large bodies): the 100 comes at once, so the answer
# arrives long before curl's expect timeout (30 s here; 1 s by default).
nk expect
openssl cmp -cmd ir -use_mock_srv -srv_ref demo-device -srv_secret "pass:$secret" \
  -srv_cert inst/ca.pem -srv_key ec.key -rsp_cert inst/ca.pem "${mac[@]}" -newkey expect.key \
  -subject /CN=expect-100 -implicit_confirm -reqout expect.der -certout x.pem \
  -disable_confirm >/dev/null 2>&1
t0=$(date +%s%N)
code=$(curl -sv -o expect-rsp.der -w '%{http_code}' --expect100-timeout 30 \
  -H 'Expect: 100-continue' -H 'Content-Type: application/pkixcmp' --data-binary @expect.der \
  "http://127.0.0.1:$port/.well-known/cmp/p/devices" 2>expect-curl.log)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
# (asn1parse into a file first: with pipefail, grep -q closing the pipe early would fail it)
openssl asn1parse -inform DER -in expect-rsp.der >expect-rsp.txt 2>/dev/null
if [ "$code" = 200 ] && [ "$ms" -lt 5000 ] && grep -q '^< HTTP/1.1 100 Continue' expect-curl.log \
  && grep -q "d=1 .*cont \[ 1 \]" expect-rsp.txt; then
  ok "Expect: 100-continue -> 100, then the ip (${ms} ms)"
else
  fail "Expect: 100-continue (HTTP $code after ${ms} ms)"; cat expect-curl.log
fi

# Revocation (rr), general messages (genm), CRLs.
nk rv; nk hold
check "ir for revocation tests" openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" -newkey rv.key \
  -subject /CN=to-revoke -implicit_confirm -certout rv.pem
check "ir for hold tests" openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" -newkey hold.key \
  -subject /CN=to-hold -implicit_confirm -certout hold.pem
nk rv-cr
check "cr signed by to-revoke while it is valid" openssl cmp -cmd cr "${srv[@]}" -cert rv.pem \
  -key rv.key -newkey rv-cr.key -subject /CN=to-revoke -certout rv-cr.pem
check "rr signed by the certificate itself" openssl cmp -cmd rr "${srv[@]}" -cert rv.pem \
  -key rv.key -oldcert rv.pem -revreason 1
rejected "rr of an already revoked certificate" certRevoked \
  "the signer's certificate (serial" -cmd rr "${srv[@]}" -cert rv.pem \
  -key rv.key -oldcert rv.pem -revreason 1
# Issue 14: a certificate this CA revoked authenticates nothing any more.
nk rv2
rejected "cr signed by a revoked certificate" certRevoked \
  ") was revoked" -cmd cr "${srv[@]}" -cert rv.pem -key rv.key -newkey rv2.key \
  -subject /CN=to-revoke -certout x.pem
rejected "ir signed by a revoked certificate of this CA" certRevoked \
  ") was revoked" -cmd ir "${srv[@]}" -cert rv.pem -key rv.key -newkey rv2.key \
  -subject /CN=anything -certout x.pem
rejected "genm signed by a revoked certificate" certRevoked \
  ") was revoked" -cmd genm "${srv[@]}" -cert rv.pem -key rv.key -infotype caCerts
rejected "rr of another device's certificate" notAuthorized \
  "the signer may revoke only its own certificate" -cmd rr "${srv[@]}" \
  -cert hold.pem -key hold.key -oldcert ir-ec.pem -revreason 1
rejected "rr protected by MAC" wrongIntegrity "a MAC is not accepted" \
  -cmd rr "${srv[@]}" "${mac[@]}" -oldcert ir-ed.pem
check "rr certificateHold" openssl cmp -cmd rr "${srv[@]}" -cert hold.pem -key hold.key \
  -oldcert hold.pem -revreason 6
check "genm caCerts (MAC)" sh -c "openssl cmp -cmd genm ${srv[*]} -ref demo-device \
  -secret pass:$secret -mac hmacWithSHA256 -infotype caCerts 2>&1 | grep -q 'id-it-caCerts'"
check "genm caCerts unprotected (bootstrap)" sh -c "openssl cmp -cmd genm ${srv[*]} -ref x \
  -unprotected_requests -infotype caCerts 2>&1 | grep -q 'id-it-caCerts'"
rejected "genm of another type unprotected" badMessageCheck \
  "the genm message is not protected; protect it with a MAC (shared secret) or a signature" \
  -cmd genm "${srv[@]}" -ref x \
  -unprotected_requests -infotype signKeyPairTypes -unprotected_errors
crl_has() { # crl_has SERIAL-HEX: the served CRL lists it (polls while the CRL is re-issued)
  for _ in $(seq 1 40); do
    curl -sf -o crl.der "http://127.0.0.1:$port/crl/devices.crl" &&
      openssl crl -inform DER -in crl.der -noout -text 2>/dev/null | grep -q "$1" && return 0
    sleep 0.25
  done
  return 1
}
rv_serial=$(openssl x509 -in rv.pem -noout -serial | cut -d= -f2)
hold_serial=$(openssl x509 -in hold.pem -noout -serial | cut -d= -f2)
check "CRL lists the revoked and the held certificate" sh -c "$(declare -f crl_has); \
  port=$port; crl_has $rv_serial && crl_has $hold_serial"
openssl crl -inform DER -in crl.der -out crl.pem 2>/dev/null
check "CRL verifies against the CA" openssl crl -in crl.pem -CAfile inst/ca.pem -noout
check "openssl verify -crl_check: revoked" sh -c "openssl verify -crl_check -CAfile inst/ca.pem \
  -CRLfile crl.pem rv.pem 2>&1 | grep -q 'certificate revoked'"
check "openssl verify -crl_check: good certificate passes" openssl verify -crl_check \
  -CAfile inst/ca.pem -CRLfile crl.pem ir-ec.pem
# A held certificate authenticates nothing, not even the release of its own hold: that is for
# an RA or the operator (certmint revoke --reason removeFromCRL).
rejected "rr removeFromCRL signed by the held certificate itself" certRevoked ") is on hold" \
  -cmd rr "${srv[@]}" -cert hold.pem -key hold.key -oldcert hold.pem -revreason 8
check "certmint revoke --reason removeFromCRL releases the hold" "$certmint" revoke \
  -c "$work/inst/certmint.cnf" "$hold_serial" --reason removeFromCRL
sleep 3 # the daemon notices the tool's write at its next store batch (maintenance: 2 s)
nk hold2
check "  the released certificate signs again" openssl cmp -cmd cr "${srv[@]}" -cert hold.pem \
  -key hold.key -newkey hold2.key -subject /CN=to-hold -certout hold2.pem
rejected "removeFromCRL of a certificate not on hold" badRequest \
  "the certificate is not on hold, so it cannot be removed from the CRL" -cmd rr "${srv[@]}" \
  -cert ir-ec.pem -key ec.key -oldcert ir-ec.pem -revreason 8

# Issue 14: trust and authorization, with the real client.
nk kur2
rejected "a second kur of a certificate a kur replaced" notAuthorized \
  "was replaced by a key update" -cmd kur "${srv[@]}" -cert ir-rsa.pem -key rsa.key \
  -newkey kur2.key -certout x.pem
rejected "cr signed by the superseded certificate" notAuthorized \
  "was replaced by a key update" -cmd cr "${srv[@]}" -cert ir-rsa.pem -key rsa.key \
  -newkey kur2.key -subject /CN=dev-rsa -certout x.pem
rejected "ir for a key this CA already certified" badCertTemplate \
  "this CA already certified the requested public key" -cmd ir "${srv[@]}" "${mac[@]}" \
  -newkey ec.key -subject /CN=dev-again -certout x.pem
rejected "kur for the key the certificate already has" badCertTemplate \
  "kur must certify a new key" -cmd kur "${srv[@]}" -cert kur.pem -key kur.key \
  -newkey kur.key -certout x.pem
rejected "cr for another subject than the signer's" notAuthorized \
  "may only request its subject (CN=dev-ec)" -cmd cr "${srv[@]}" -cert ir-ec.pem -key ec.key \
  -newkey kur2.key -subject /CN=somebody-else -certout x.pem
nk once1; nk once2
check "ir with a one-time secret" openssl cmp -cmd ir "${srv[@]}" -ref once-1 -secret "pass:$once" \
  -mac hmacWithSHA256 -newkey once1.key -subject /CN=once-1 -implicit_confirm -certout once1.pem
rejected "the one-time secret a second time" notAuthorized \
  "has enrolled all the certificates it may (1" -cmd ir "${srv[@]}" -ref once-1 \
  -secret "pass:$once" -mac hmacWithSHA256 -newkey once2.key -subject /CN=once-2 -implicit_confirm \
  -certout x.pem
nk l9a; nk l9b
check "ir matching the secret's subject_pattern" openssl cmp -cmd ir "${srv[@]}" -ref line-9 \
  -secret "pass:$line9" -mac hmacWithSHA256 -newkey l9a.key -subject /CN=line-9-0001 \
  -implicit_confirm -certout l9.pem
rejected "ir outside the secret's subject_pattern" notAuthorized \
  "does not match this secret's subject_pattern CN=line-9-*" -cmd ir "${srv[@]}" -ref line-9 \
  -secret "pass:$line9" -mac hmacWithSHA256 -newkey l9b.key -subject /CN=line-8-0001 \
  -implicit_confirm -certout x.pem
# An IDevID-signed ir, then the vendor revokes the IDevID: its new CRL, loaded on SIGHUP, is
# in force at once.
nk idev1; nk idev2
check "ir signed by a vendor IDevID (trust_anchors, trust_crls)" openssl cmp -cmd ir "${srv[@]}" \
  -cert vendor/idevid.pem -key vendor/idevid.key -newkey idev1.key -subject /CN=op-SN42 \
  -implicit_confirm -certout idev1.pem
( cd vendor && openssl ca -revoke idevid.pem -config ca.cnf -keyfile vendor.key -cert vendor.pem &&
  openssl ca -gencrl -config ca.cnf -keyfile vendor.key -cert vendor.pem -out vendor.crl ) \
  >>"$work/vendor.log" 2>&1 && cp vendor/vendor.crl inst/vendor.crl
kill -HUP "$pid"; sleep 0.5
rejected "the same IDevID after its CRL revoked it (SIGHUP reload)" certRevoked \
  "certificate revoked (CN=device-SN42,O=Vendor)" -cmd ir "${srv[@]}" -cert vendor/idevid.pem \
  -key vendor/idevid.key -newkey idev2.key -subject /CN=op-SN42 -implicit_confirm -certout x.pem
grep -q "reloaded 1 CRL" "$work/daemon.log" && ok "  SIGHUP logged the CRL reload" \
  || fail "  SIGHUP logged the CRL reload"
# After a rejection the server closes the connection (RFC 9811 §5).
closed=$(python3 -c '
import socket,sys
s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),timeout=10)
s.sendall(b"POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nContent-Length: 4\r\n\r\n\x30\x02\x05\x00")
d=b""
try:
    while True:
        c=s.recv(4096)
        if not c: break
        d+=c
except Exception: print("open"); sys.exit(0)
print("closed" if d.startswith(b"HTTP/1.1 200") and b"Connection: close" in d else "other")' "$port")
[ "$closed" = closed ] && ok "a CMP rejection closes the connection (Connection: close)" \
  || fail "a CMP rejection closes the connection ($closed)"
check "metrics: rejections by failInfo, MAC failures by kind" sh -c "curl -sf \
  http://127.0.0.1:$port/metrics | grep -q 'certmint_rejections_total{failinfo=\"certRevoked\"}' && \
  curl -sf http://127.0.0.1:$port/metrics | grep -q 'certmint_mac_failures_total{kind=\"pbm\"} [1-9]'"

# Algorithm agility (RFC 9481): PBM with SHA-512, RSA-PSS and Ed448 device keys (their POPO
# made by openssl cmp), openssl cmp's default PBM MAC (HMAC-SHA1) refused by the default
# policy, and signature protection with RSASSA-PSS and Ed448 (certmint-bench: openssl cmp 3.0
# cannot sign with those keys).
check "ir PBM -digest sha512, RSA-PSS device key (RSASSA-PSS POPO)" openssl cmp -cmd ir \
  "${srv[@]}" -ref demo-device -secret "pass:$secret" -digest sha512 -mac hmacWithSHA512 \
  -newkey pss.key -subject /CN=dev-pss -implicit_confirm -certout ir-pss.pem
check "  issued cert verifies, key and subject" enrolled ir-pss.pem pss.key dev-pss
check "ir PBM, Ed448 device key (Ed448 POPO)" openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" \
  -newkey ed448.key -subject /CN=dev-ed448 -implicit_confirm -certout ir-ed448.pem
check "  issued cert verifies, key and subject" enrolled ir-ed448.pem ed448.key dev-ed448
rejected "PBM with openssl cmp's default MAC (HMAC-SHA1)" badAlg \
  "the PBM MAC hmac-sha1 is not allowed (protection_algs)" -cmd ir "${srv[@]}" \
  -ref demo-device -secret "pass:$secret" -newkey ec.key -subject /CN=x -certout x.pem
if [ -n "$bench" ]; then
  for k in pss ed448; do
    check "ir signed with the $k manufacturer certificate (certmint-bench)" "$bench" \
      --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" --cert "$k-idev.pem" \
      --key "$k.key" -n 3 --ca inst/ca.pem --verify
  done
fi

# Malformed HTTP: the right status, and the server keeps serving.
http_status() { # raw request on stdin -> first status code
  python3 -c '
import socket,sys
s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),timeout=10)
s.sendall(sys.stdin.buffer.read())
d=b""
try:
    while b"\r\n" not in d:
        c=s.recv(4096)
        if not c: break
        d+=c
except Exception: pass
print(d.split(b" ")[1].decode() if d.startswith(b"HTTP/") else "none")' "$port"
}
expect_status() { local want=$1 what=$2 got; got=$(printf "$3" | http_status)
  if [ "$got" = "$want" ]; then ok "HTTP $what -> $want"; else fail "HTTP $what -> $got (want $want)"; fi; }
expect_status 400 "garbage" 'GARBAGE\r\n\r\n'
expect_status 404 "unknown path" 'POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n'
expect_status 404 "unknown CA" 'POST /.well-known/cmp/p/nope HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nContent-Length: 2\r\n\r\n0\x00'
expect_status 405 "GET on the CMP path" 'GET /.well-known/cmp HTTP/1.1\r\nHost: x\r\n\r\n'
expect_status 415 "wrong content type" 'POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc'
expect_status 411 "no Content-Length" 'POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\n\r\n'
expect_status 200 "chunked CMP garbage body -> CMP error in a 200" 'POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n\x30\x02\r\n2;x\r\n\x05\x00\r\n0\r\n\r\n'
expect_status 501 "unknown transfer coding" 'POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nTransfer-Encoding: gzip\r\n\r\n'
expect_status 413 "oversized body" 'POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nContent-Length: 99999999\r\n\r\n'
big=$(head -c 9000 /dev/zero | tr '\0' 'a')
expect_status 431 "oversized header" "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: $big\r\n\r\n"
expect_status 200 "CMP garbage body -> CMP error in a 200" 'POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nContent-Length: 4\r\n\r\n\x30\x02\x05\x00'
# A truncated body (the client stops and closes) and a slow client (sends part of a head and
# waits): the first just goes away, the second gets 408 after the header timeout.
printf 'POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nContent-Length: 100\r\n\r\n0\x03' \
  | python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1]))); s.sendall(sys.stdin.buffer.read()); s.close()' "$port"
ok "HTTP truncated body: client gone, no crash"
slow=$(python3 -c '
import socket,sys,time
s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),timeout=20)
s.sendall(b"POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\n")
t=time.time(); d=s.recv(4096)
print(d.split(b" ")[1].decode() if d.startswith(b"HTTP/") else "none", int(time.time()-t))' "$port")
case "$slow" in 408\ *) ok "HTTP slow client -> 408 after ${slow#* } s";; *) fail "HTTP slow client ($slow)";; esac
nk after
check "still serving after bad input" openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" \
  -newkey after.key -subject /CN=after-bad -implicit_confirm -certout after.pem

# Load: sequential and concurrent clients, each certificate counted in the store.
count_valid() { sqlite3 "file:$work/inst/certmint.db?mode=ro" \
  "SELECT count(*) FROM cert WHERE status = 'valid'" 2>/dev/null; }
before=$(count_valid)
for i in $(seq 1 20); do nk "seq-$i"; done
for i in $(seq 1 40); do nk "par-$i"; done
for i in $(seq 1 20); do
  openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" -newkey "seq-$i.key" -subject "/CN=seq-$i" \
    -implicit_confirm -certout "seq-$i.pem" >/dev/null 2>&1 || fail "sequential enrolment $i"
done
for i in $(seq 1 40); do
  openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" -newkey "par-$i.key" -subject "/CN=par-$i" \
    -implicit_confirm -certout "par-$i.pem" >/dev/null 2>&1 &
done
wait $(jobs -p | grep -v "^$pid$") 2>/dev/null
got=$(ls par-*.pem 2>/dev/null | wc -l)
[ "$got" -eq 40 ] && ok "40 concurrent enrolments" || fail "40 concurrent enrolments ($got)"
after=$(count_valid)
[ $((after - before)) -eq 60 ] && ok "store holds exactly the 60 new certificates" \
  || fail "store count: $before -> $after (want +60)"
# Load with the load generator: 1000 sequential enrolments over one keep-alive connection, then
# 1000 over 200 concurrent connections; every certificate is in the store.
if [ -n "$bench" ]; then
  bench_url="http://127.0.0.1:$port/.well-known/cmp/p/devices"
  before=$(count_valid)
  check "1000 sequential enrolments on one keep-alive connection" "$bench" --url "$bench_url" \
    --secret "demo-device:$secret" -n 1000 --connections 1 --ca inst/ca.pem --json seq.json
  after=$(count_valid)
  [ $((after - before)) -eq 1000 ] && ok "  the store holds exactly the 1000" \
    || fail "  store: $before -> $after (want +1000)"
  check "1000 enrolments over 200 concurrent connections" "$bench" --url "$bench_url" \
    --secret "demo-device:$secret" -n 1000 --connections 200 --ca inst/ca.pem --json c200.json
  after2=$(count_valid)
  [ $((after2 - after)) -eq 1000 ] && ok "  the store holds exactly the 1000" \
    || fail "  store: $after -> $after2 (want +1000)"
fi
check "metrics" sh -c "curl -sf http://127.0.0.1:$port/metrics | grep -q 'certmint_requests_total{outcome=\"ok\"}'"

# Log rotation: move the file away, SIGHUP, new lines go to a new file.
mv "$work/daemon.log" "$work/daemon.log.1"
kill -HUP "$pid"; sleep 0.5
nk hup
check "SIGHUP reopens the log" openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" -newkey hup.key \
  -subject /CN=after-hup -implicit_confirm -certout hup.pem
sleep 0.3
grep -q "CN=after-hup\|body=ir outcome=ok" "$work/daemon.log" 2>/dev/null && ok "  new log file written" \
  || fail "  new log file written"
cat "$work/daemon.log.1" "$work/daemon.log" > "$work/daemon-all.log" 2>/dev/null
check "metrics histograms" sh -c "curl -sf http://127.0.0.1:$port/metrics | \
  grep -q 'certmint_hsm_sign_seconds_bucket' && curl -sf http://127.0.0.1:$port/metrics | \
  grep -q 'certmint_cmp_requests_total{body=\"ir\",outcome=\"ok\"}'"

# Graceful stop under load: SIGTERM while 16 clients enrol. Every certificate a client received
# must be in the store (a response is sent only after its record committed); exit status 0
# (under ASan this also means no leak at exit).
if [ -n "$bench" ]; then
  before=$(count_valid)
  logged_before=$(grep -c 'body=ir outcome=ok' "$work/daemon.log" 2>/dev/null || true)
  "$bench" --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" --secret "demo-device:$secret" \
    --duration 8 --prepare 4000 --connections 16 --timeout 5 --json term.json >term.log 2>&1 &
  bpid=$!
  # SIGTERM once the clients are enrolling (the generator prepares its requests first).
  base=$(count_valid)
  for _ in $(seq 1 200); do
    [ $(( $(count_valid) - base )) -ge 50 ] && break
    sleep 0.1
  done
fi
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=""
[ "$rc" -eq 0 ] && ok "SIGTERM: clean exit" || { fail "SIGTERM: exit $rc"; tail -30 "$work/daemon.log" "$work/stdout.log"; }
if [ -n "$bench" ]; then
  wait "$bpid" 2>/dev/null
  received=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' term.json 2>/dev/null || echo -1)
  stored=$(( $(count_valid) - before ))
  if [ "$received" -gt 0 ] && [ "$stored" -ge "$received" ]; then
    ok "SIGTERM under load: all $received certificates clients received are in the store ($stored stored)"
  else
    fail "SIGTERM under load: received $received, stored $stored"; tail -5 term.log
  fi
  # The loops buffer their request lines and write them once per turn: none may be lost when
  # the daemon stops, so every certificate received has its line.
  logged=$(( $(grep -c 'body=ir outcome=ok' "$work/daemon.log" 2>/dev/null || true) - ${logged_before:-0} ))
  if [ "$received" -gt 0 ] && [ "$logged" -ge "$received" ]; then
    ok "SIGTERM under load: every received certificate has its log line ($logged logged)"
  else
    fail "SIGTERM under load: received $received, logged $logged"
  fi
fi
check "store integrity after stop" sh -c "[ \"\$(sqlite3 $work/inst/certmint.db 'PRAGMA integrity_check')\" = ok ]"

# Limits (issue 23), on a second run of the same instance with small caps: one I/O thread,
# 3 connections, 2 per peer address, an admin listener with 1 slot. A connection over any cap
# reads 503 with Retry-After and is counted by reason; /healthz answers on the admin listener
# while the main one is full; a client that sends part of a request and stops is closed at once.
lport=$(( port + 1 )); aport=$(( port + 2 ))
limits_cnf() { # limits_cnf FILE EXTRA-LINES: the instance's configuration with the test's caps
  { cat "$work/inst/certmint.cnf"
    printf '\n[certmintd]\nlisten = 127.0.0.1:%s\nio_threads = 1\nmax_connections_per_peer = 2\n' "$lport"
    printf 'admin_listen = 127.0.0.1:%s\nadmin_max_connections = 1\n%b' "$aport" "$2"; } >"$1"
}
limits_cnf "$work/inst/limits.cnf" 'max_connections = 3\n'
"$certmintd" -c "$work/inst/limits.cnf" --log "$work/limits.log" >>"$work/stdout.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$aport/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
python3 - "$lport" "$aport" >"$work/limits.out" 2>&1 <<'PY'
import socket, sys, time
main, admin = int(sys.argv[1]), int(sys.argv[2])
def conn(port, src="127.0.0.1"):
    s = socket.socket(); s.settimeout(5); s.bind((src, 0)); s.connect(("127.0.0.1", port)); return s
def head(s):  # what the server sent before closing (or the first response head)
    d = b""
    try:
        while b"\r\n\r\n" not in d:
            c = s.recv(4096)
            if not c: break
            d += c
    except Exception: pass
    return d
def get(s, path):
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    d = head(s)
    i = d.find(b"\r\n\r\n"); n = 0
    for l in d[:i].split(b"\r\n"):
        if l.lower().startswith(b"content-length:"): n = int(l.split(b":")[1])
    body = d[i + 4:]
    while len(body) < n:
        c = s.recv(65536)
        if not c: break
        body += c
    return d.split(b" ")[1].decode() if d.startswith(b"HTTP/") else "none", body.decode(errors="replace")
def status_and_retry(d):
    return (d.split(b" ")[1].decode() if d.startswith(b"HTTP/1.1 ") else "none",
            b"\r\nretry-after: 1\r\n" in d.lower())
held = [conn(main), conn(main)]            # 127.0.0.1 is at max_connections_per_peer
time.sleep(0.3)
print("peer", *status_and_retry(head(conn(main))))
held.append(conn(main, "127.0.0.2"))      # the loop is full (3)
time.sleep(0.3)
print("full", *status_and_retry(head(conn(main, "127.0.0.3"))))
a = conn(admin); time.sleep(0.3)           # the admin slot
print("healthz", get(a, "/healthz")[0])
print("admin_cap", *status_and_retry(head(conn(admin))))
st, text = get(a, "/metrics")
for r in ("full", "peer", "admin"):
    v = [l.split()[-1] for l in text.splitlines()
         if l.startswith('certmint_connections_rejected_total{reason="%s"}' % r)]
    print("metric_" + r, v[0] if v else "none")
a.sendall(b"POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\n"
          b"Content-Length: 2\r\n\r\n0\x03")
print("admin_cmp", status_and_retry(head(a))[0])
for s in held + [a]: s.close()
time.sleep(0.5)
# Churn: part of a request, then the write side shut: closed at once, not at header_timeout.
s = conn(main)
s.sendall(b"POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\n"
          b"Content-Length: 100\r\n\r\n0")
s.shutdown(socket.SHUT_WR)
t = time.time(); d = head(s)
print("eof_partial", len(d), "%.1f" % (time.time() - t))
PY
res() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$work/limits.out"; }
[ "$(res peer)" = "503 True" ] && ok "over max_connections_per_peer -> 503 Retry-After: 1" \
  || { fail "over max_connections_per_peer ($(res peer))"; cat "$work/limits.out"; }
[ "$(res full)" = "503 True" ] && ok "over max_connections -> 503 Retry-After: 1" \
  || fail "over max_connections ($(res full))"
[ "$(res healthz)" = 200 ] && ok "/healthz on the admin listener while the main one is full" \
  || fail "/healthz on the admin listener ($(res healthz))"
[ "$(res admin_cap)" = "503 True" ] && ok "over admin_max_connections -> 503 Retry-After: 1" \
  || fail "over admin_max_connections ($(res admin_cap))"
for r in full peer admin; do
  [ "$(res "metric_$r")" = 1 ] && ok "  certmint_connections_rejected_total{reason=\"$r\"} 1" \
    || fail "  certmint_connections_rejected_total{reason=\"$r\"} ($(res "metric_$r"))"
done
[ "$(res admin_cmp)" = 404 ] && ok "the admin listener does not serve CMP (404)" \
  || fail "the admin listener serves CMP ($(res admin_cmp))"
case "$(res eof_partial)" in
  0\ 0.*) ok "partial request then EOF: closed at once ($(res eof_partial | cut -d' ' -f2) s)";;
  *) fail "partial request then EOF: $(res eof_partial)";;
esac
nk limits
check "enrolment on the limited instance" openssl cmp -cmd ir -server "127.0.0.1:$lport" \
  -path /.well-known/cmp/p/devices -trusted inst/ca.pem "${mac[@]}" -newkey limits.key \
  -subject /CN=limits -implicit_confirm -certout limits.pem
kill -TERM "$pid"; wait "$pid"; pid=""

# The descriptor check: the soft RLIMIT_NOFILE is raised to the hard one; under a hard limit of
# 300, max_connections (default 4096) is lowered with a WARN and served; under 120 certmintd
# refuses to start, naming the numbers.
limits_cnf "$work/inst/fds.cnf" ''
( ulimit -Sn 100 && ulimit -Hn 300 && exec "$certmintd" -c "$work/inst/fds.cnf" --log "$work/fds.log" ) \
  >>"$work/stdout.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$aport/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
lowered=$(curl -sf "http://127.0.0.1:$aport/metrics" | awk '/^certmint_connections_max\{listener="main"\}/ {print $2}')
if grep -q "max_connections lowered from 4096 to $lowered per I/O thread: RLIMIT_NOFILE is 300" \
     "$work/fds.log" && [ "${lowered:-0}" -ge 16 ] && [ "$lowered" -lt 300 ]; then
  ok "RLIMIT_NOFILE 300: max_connections lowered to $lowered with a WARN"
else
  fail "RLIMIT_NOFILE 300: max_connections ${lowered:-?}"; grep -i descriptor "$work/fds.log"
fi
kill -TERM "$pid"; wait "$pid"; pid=""
if ( ulimit -Sn 64 && ulimit -Hn 120 && exec "$certmintd" -c "$work/inst/fds.cnf" ) \
     >"$work/fds-refused.log" 2>&1; then
  fail "RLIMIT_NOFILE 120: certmintd started"
elif grep -q "RLIMIT_NOFILE is 120 descriptors; .* are needed" "$work/fds-refused.log"; then
  ok "RLIMIT_NOFILE 120: refused to start: $(grep -o 'fewer than 16 connections per I/O thread would be left' "$work/fds-refused.log")"
else
  fail "RLIMIT_NOFILE 120: $(cat "$work/fds-refused.log")"
fi

grep -q "outcome=rejected failinfo=1" "$work/daemon.log.1" "$work/daemon.log" 2>/dev/null \
  && ok "request log lines" || fail "request log lines"
# The code's name stays in the line for grep, next to the quoted reason.
grep -qF 'failinfo=1 error=CMP_E_PROT_MAC_MISMATCH reason="the MAC does not verify: wrong shared secret for this senderKID?"' \
  "$work/daemon.log.1" "$work/daemon.log" 2>/dev/null \
  && ok "request log line: code name and reason" || fail "request log line: code name and reason"

# A CA for each new --key-type, made by certmint init, issuing one certificate that openssl
# verify accepts, signed with the key type's algorithm.
kport=$(( port + 1 ))
for kt in ec-p521:ecdsa-with-SHA512 rsa4096:sha256WithRSAEncryption rsa2048-pss:rsassaPss \
  ed448:ED448; do
  t=${kt%%:*} want=${kt#*:} kport=$(( kport + 1 )) kdir="$work/ca-${kt%%:*}"
  if ! env -u SOFTHSM2_CONF "$certmint" init --dir "$kdir" --port "$kport" --key-type "$t" \
    --subject "/CN=e2e $t CA" >"$work/init-$t.log" 2>&1; then
    fail "certmint init --key-type $t"; cat "$work/init-$t.log"; continue
  fi
  env $(cat "$kdir/env") "$certmintd" -c "$kdir/certmint.cnf" >"$work/daemon-$t.log" 2>&1 &
  kpid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$kport/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  check "CA --key-type $t: ir" openssl cmp -cmd ir -server "127.0.0.1:$kport" \
    -path /.well-known/cmp -trusted "$kdir/ca.pem" -ref demo-device \
    -secret "pass:$(cat "$kdir/secrets/demo-device")" -mac hmacWithSHA256 -newkey ec.key \
    -subject "/CN=dev-$t" -implicit_confirm -certout "cert-$t.pem"
  check "  openssl verify accepts it" openssl verify -CAfile "$kdir/ca.pem" "cert-$t.pem"
  check "  signed with $want" sh -c "openssl x509 -in cert-$t.pem -noout -text | \
    grep -q 'Signature Algorithm: $want'"
  kill -TERM "$kpid"; wait "$kpid" || fail "  CA --key-type $t: certmintd exit"
done

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
