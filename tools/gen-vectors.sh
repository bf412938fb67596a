#!/usr/bin/env bash
# tools/gen-vectors.sh: regenerate the committed DER seed corpus (tests/fuzz/corpus/der) with
# the openssl CLI: a certificate, a CSR, a CRL, a CMP ir and its ip from OpenSSL's mock server,
# plus a few hand-made edge cases. Re-run after changing it and commit the result.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=$top/tests/fuzz/corpus/der
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
cd "$tmp"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -subj "/C=DE/O=certmint/CN=Seed CA" -days 3650 -addext "subjectAltName=DNS:ca.example" 2>/dev/null
openssl x509 -in ca.pem -outform DER -out "$out/cert-ec.der"
openssl req -new -newkey rsa:2048 -nodes -keyout rsa.key -subj "/CN=device-1/serialNumber=1" \
  -outform DER -out "$out/csr-rsa.der" 2>/dev/null
openssl genpkey -algorithm ed25519 -out ed.key
openssl req -x509 -key ed.key -subj "/CN=ed" -days 1 -outform DER -out "$out/cert-ed25519.der"
cat > ca.cnf <<CNF
[ca]
default_ca=d
[d]
database=$tmp/index.txt
crlnumber=$tmp/crlnumber
default_md=sha256
default_crl_days=7
certificate=$tmp/ca.pem
private_key=$tmp/ca.key
CNF
: > index.txt; echo 1000 > crlnumber
openssl ca -config ca.cnf -revoke ca.pem -crl_reason keyCompromise 2>/dev/null
openssl ca -config ca.cnf -gencrl -out crl.pem 2>/dev/null
openssl crl -in crl.pem -outform DER -out "$out/crl.der"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev.key
openssl cmp -cmd ir -use_mock_srv -ref seed -secret pass:seed-secret -srv_ref seed \
  -srv_secret pass:seed-secret -srv_cert ca.pem -srv_key ca.key -rsp_cert ca.pem -newkey dev.key \
  -subject /CN=seed-device -reqout "$out/cmp-ir-pbm.der,$out/cmp-certconf.der" \
  -rspout "$out/cmp-ip.der,$out/cmp-pkiconf.der" -certout "$tmp/out.pem" \
  -unprotected_errors >/dev/null 2>&1 || true

# Hand-made edge cases: high tags, long lengths, empty and odd primitives.
printf '\x9f\x1f\x00\xbf\x81\x00\x00' > "$out/high-tags.der"
printf '\x30\x0b\x01\x01\xff\x05\x00\x03\x02\x07\x80\x0a\x01\x01' > "$out/primitives.der"
printf '\x30\x80\x00\x00' > "$out/indefinite.der"
printf '\x04\x81\x05abcde' > "$out/nonminimal-length.der"
printf '\x17\x0d491231235959Z\x18\x0f20501231235959Z' > "$out/times.der"
ls -la "$out"
