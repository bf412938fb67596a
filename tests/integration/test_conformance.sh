#!/usr/bin/env bash
# tests/integration/test_conformance.sh CERTMINTD CERTMINT CERTMINT_CONFORM
# RFC 9483 conformance end to end: a throwaway instance (certmint init, plus a manufacturer PKI
# in trust_anchors), a real certmintd on loopback, each case built with the project's marshal
# code (certmint-conform build), posted with curl and its answer read back (certmint-conform
# check: body type, PKIStatus, failInfo, statusString; the answer must also pass OpenSSL's
# d2i_OSSL_CMP_MSG), and openssl cmp where the stock client can make the case.
set -uo pipefail
certmintd=$1
certmint=$2
conform=$3
work=$(mktemp -d /tmp/certmint-conform-XXXXXX)
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

. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
"$certmint" init --dir "$work/inst" --port "$port" --subject "/O=certmint conform/CN=conform CA" \
  >"$work/init.log" 2>&1 || { cat "$work/init.log"; fail "certmint init"; exit 1; }
cd "$work"
# A manufacturer PKI: its CA is a trust anchor for signature-protected ir (IDevID enrolment).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout vendor.key \
  -out inst/vendor.pem -subj "/O=Vendor/CN=Vendor IDevID CA" -days 2 \
  -addext basicConstraints=critical,CA:TRUE 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out idevid.key 2>/dev/null
openssl req -new -key idevid.key -subj "/O=Vendor/CN=device-SN9" -out idevid.csr 2>/dev/null
openssl x509 -req -in idevid.csr -CA inst/vendor.pem -CAkey vendor.key -set_serial 9 -days 2 \
  -out idevid.pem 2>/dev/null
sed -i 's|^secret.demo-device = .*|&\ntrust_anchors = vendor.pem|' inst/certmint.cnf
export $(cat inst/env)
secret=$(cat inst/secrets/demo-device)
"$certmintd" -c inst/certmint.cnf --log "$work/daemon.log" >"$work/stdout.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && ok "certmintd up" || { fail "certmintd up"; exit 1; }
url="http://127.0.0.1:$port/.well-known/cmp/p/devices"
srv=(-server "127.0.0.1:$port" -path /.well-known/cmp/p/devices -trusted inst/ca.pem)
mac=(-ref demo-device -mac hmacWithSHA256 -secret "pass:$secret")
for k in ec ec2 op dev; do
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$k.key" 2>/dev/null
done

# post REQ RSP: the request to the CA, the answer saved.
post() {
  curl -s -o "$2" -w '%{http_code}' -H 'Content-Type: application/pkixcmp' --data-binary @"$1" \
    "$url"
}
# expect NAME PATTERN [build options...]: builds case NAME, posts it, and matches the checker's
# one line ("body=ip status=2 failinfo=badCertTemplate id=0 itavs=0 text=...") with PATTERN.
expect() {
  local name=$1 want=$2 got code; shift 2
  if ! "$conform" build "$name" "$name.der" --ca inst/ca.pem --ref demo-device \
    --secret "$secret" "$@" 2>"$name.err"; then fail "$name: build ($(cat "$name.err"))"; return; fi
  code=$(post "$name.der" "$name-rsp.der")
  got=$("$conform" check "$name-rsp.der" 2>&1)
  # shellcheck disable=SC2053
  if [ "$code" = 200 ] && [[ "$got" == $want ]]; then ok "$name -> ${got%% text=*}"
  else fail "$name: HTTP $code, got '$got', want '$want'"; fi
}

# §1: a refusal of the request's content goes into the ip/cp/kup/rp; problems with the message
# as a whole into an error message (RFC 9483 §3.6.4).
expect ir-san-email "body=ip status=2 failinfo=badCertTemplate id=0 itavs=0 text=profile devices does not allow subjectAltName type email*" --newkey ec.key
expect cr-san-email "body=cp status=2 failinfo=badCertTemplate id=0 *" --newkey ec.key
expect ir-prot-no-alg "body=error status=2 failinfo=badMessageCheck *protection but no protectionAlg*" --newkey ec.key
# §3: header rules.
expect ir-implicit-and-wait "body=error status=2 failinfo=badDataFormat *both implicitConfirm and confirmWaitTime*" --newkey ec.key
# §4: request content rules.
expect ir-two-msgs "body=ip status=2 failinfo=badRequest *exactly one CertReqMsg, not 2" --newkey ec.key
expect ir-cert-req-id "body=ip status=2 failinfo=badRequest id=3 *certReqId must be 0, not 3" --newkey ec.key
expect ir-empty-subject "body=ip status=2 failinfo=badCertTemplate *subject is empty and there is no subjectAltName*" --newkey ec.key
expect ir-popo-alg "body=ip status=2 failinfo=badPOP *sha256WithRSAEncryption does not fit the EC P-256 key" --newkey ec.key
expect ir-ra-verified "body=ip status=2 failinfo=notAuthorized *raVerified*only from an RA*" --newkey ec.key
expect ir-rsa-8192 "body=ip status=2 failinfo=badCertTemplate *RSA key of 8192 bits not allowed*" --newkey ec.key
expect ir-ca-request "body=ip status=2 failinfo=badCertTemplate *issues end-entity certificates*cA:TRUE" --newkey ec.key
expect ir-key-agreement "body=ip status=2 failinfo=badCertTemplate *keyUsage keyAgreement not allowed by profile devices (allowed: digitalSignature)" --newkey ec.key
expect ir-long-validity "body=ip status=1 failinfo=- id=0 itavs=0 text=granted with changes: notAfter shortened to * (profile devices grants at most 825 days)" --newkey ec.key
expect kur-mac "body=error status=2 failinfo=wrongIntegrity *not MAC-protected" --newkey ec2.key

# A device certificate for kur and rr (openssl cmp, implicitConfirm), for a key of its own (the
# CA certifies a key once: ir-long-validity got ec.key certified).
openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" -newkey dev.key -subject /CN=conform-dev \
  -implicit_confirm -certout dev.pem >cmp.log 2>&1 && ok "openssl cmp ir (device certificate)" \
  || { fail "openssl cmp ir"; cat cmp.log; }
expect kur-unknown-old "body=kup status=2 failinfo=badCertId *no certificate with serial 7F0102 (the oldCertID)" --newkey ec2.key --key dev.key --cert dev.pem
expect rr-no-reason "body=rp status=2 failinfo=badRequest *exactly one CRLReason*" --key dev.key --cert dev.pem
expect rr-no-serial "body=rp status=2 failinfo=badCertTemplate *serialNumber missing*" --key dev.key --cert dev.pem
expect rr-other-subject "body=rp status=2 failinfo=badCertId *subject is not the subject of certificate CN=conform-dev" --key dev.key --cert dev.pem
expect rr-remove-valid "body=rp status=2 failinfo=badRequest *not on hold, so it cannot be removed from the CRL*" --key dev.key --cert dev.pem

# certConf: certReqId and protection kind must match the request; then the right one.
"$conform" build ir-ok ir-ok.der --ca inst/ca.pem --ref demo-device --secret "$secret" \
  --newkey ec2.key && [ "$(post ir-ok.der ir-ok-ip.der)" = 200 ] \
  && "$conform" check ir-ok-ip.der | grep -q "^body=ip status=0 " && ok "ir awaiting certConf" \
  || fail "ir awaiting certConf"
expect certconf-minus-1 "body=error status=2 failinfo=badRequest *certReqId must be 0*" --ip ir-ok-ip.der
expect certconf-pbmac1 "body=error status=2 failinfo=wrongIntegrity *with PasswordBasedMac, not PBMAC1" --ip ir-ok-ip.der
expect certconf-ok "body=pkiconf status=-1 failinfo=- *" --ip ir-ok-ip.der
"$certmint" list -c inst/certmint.cnf --status valid --subject conform-ok >list.txt 2>&1
[ "$(wc -l <list.txt)" -eq 1 ] && ok "  the confirmed certificate is valid" \
  || fail "  the confirmed certificate is valid ($(cat list.txt))"

# §5: support messages.
expect genm-empty "body=genp status=-1 failinfo=- id=0 itavs=0 *"
expect genm-all "body=genp status=-1 failinfo=- id=0 itavs=9 *"
expect genm-lang-none "body=error status=2 failinfo=badRequest *supportedLangTags needs*"
if openssl cmp -cmd genm "${srv[@]}" "${mac[@]}" >genm.log 2>&1 && grep -q "genp contains no ITAV" genm.log
then ok "openssl cmp -cmd genm without -infotype: an empty genp (issue 14 item 9)"
else fail "openssl cmp -cmd genm without -infotype"; cat genm.log; fi

# Issue 14 item 4: an IDevID-signed ir with explicit confirmation; openssl cmp sends the
# certConf signed by the IDevID, and the certificate is valid afterwards.
if openssl cmp -cmd ir "${srv[@]}" -cert idevid.pem -key idevid.key -newkey op.key \
  -subject /CN=conform-op -certout op.pem >idevid.log 2>&1
then ok "openssl cmp ir signed by an IDevID, certConf signed by it too"
else fail "IDevID enrolment with certConf"; cat idevid.log; fi
"$certmint" list -c inst/certmint.cnf --status valid --subject conform-op >list.txt 2>&1
[ "$(wc -l <list.txt)" -eq 1 ] && ok "  the IDevID's certificate is valid" \
  || fail "  the IDevID's certificate is valid ($(cat list.txt))"

# The stock client reads a rejection in the ip: the failure bit and the statusString.
if openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" -newkey ec.key -subject /CN=x \
  -sans https://dev.example/ -certout x.pem >rej.log 2>&1; then fail "openssl: ip rejection (accepted)"
elif grep -q badCertTemplate rej.log && grep -q "does not allow subjectAltName type uri" rej.log
then ok "openssl cmp reports the ip's rejection: badCertTemplate and the reason"
else fail "openssl: ip rejection"; cat rej.log; fi

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=""
[ "$rc" -eq 0 ] && ok "SIGTERM: clean exit" || { fail "SIGTERM: exit $rc"; tail -20 daemon.log; }
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
