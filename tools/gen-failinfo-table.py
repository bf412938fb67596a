#!/usr/bin/env python3
"""The README's table "condition -> PKIFailureInfo bit", made from engine/base/codes.def.

Every code a client's request can cause (PROTO and POLICY classes of the modules that judge
requests) with the failInfo bit the CA answers it with, sorted by bit, then by code.

Run:   python3 tools/gen-failinfo-table.py            # prints the table
       python3 tools/gen-failinfo-table.py --check    # exit 1 when README.md differs
       python3 tools/gen-failinfo-table.py --fix      # rewrites the table in README.md
The table sits between the README lines <!-- failinfo-table --> and <!-- /failinfo-table -->.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CODES = os.path.join(ROOT, "engine", "base", "codes.def")
README = os.path.join(ROOT, "README.md")
BEGIN, END = "<!-- failinfo-table -->", "<!-- /failinfo-table -->"

# RFC 9810 §5.2.3 PKIFailureInfo, bit number and name.
BITS = ["badAlg", "badMessageCheck", "badRequest", "badTime", "badCertId", "badDataFormat",
        "wrongAuthority", "incorrectData", "missingTimeStamp", "badPOP", "certRevoked",
        "certConfirmed", "wrongIntegrity", "badRecipientNonce", "timeNotAvailable",
        "unacceptedPolicy", "unacceptedExtension", "addInfoNotAvailable", "badSenderNonce",
        "badCertTemplate", "signerNotTrusted", "transactionIdInUse", "unsupportedVersion",
        "notAuthorized", "systemUnavail", "systemFailure", "duplicateCertReq"]
# codes.def spells them in C style: BAD_CERT_TEMPLATE.
C_NAMES = {re.sub(r"(?<!^)([A-Z])", r"_\1", b).upper(): i for i, b in enumerate(BITS)}
C_NAMES["BAD_POP"] = BITS.index("badPOP")
# The modules that judge a request (HTTP, HSM, CFG and NET codes are the transport's or the
# server's own).
MODULES = {"BASE", "CRMF", "CMP", "CMP_PROTECT", "CA", "SRV", "STORE"}

ROW = re.compile(r'CM_CODE_DEF\((\w+),\s*(\w+),\s*(\w+),\s*(0x[0-9a-fA-F]+),\s*(\w+),\s*'
                 r'((?:"(?:[^"\\]|\\.)*"\s*)+)\)')


def table():
    text = open(CODES).read()
    rows = []
    for mod, sym, cls, _detail, fail, strings in ROW.findall(text):
        if mod not in MODULES or cls not in ("PROTO", "POLICY"):
            continue
        if fail not in C_NAMES:
            sys.exit(f"codes.def: {sym}: unknown failInfo {fail}")
        bit = C_NAMES[fail]
        if BITS[bit] in ("systemFailure", "systemUnavail"):
            continue  # the server's own trouble, not a condition of the request
        explanation = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', strings))
        rows.append((bit, sym, explanation))
    # The DER reader's codes are one condition: the encoding is malformed.
    der = [r for r in rows if r[1].startswith("CM_E_DER_")]
    rows = [r for r in rows if not r[1].startswith("CM_E_DER_")]
    for bit in sorted({r[0] for r in der}):
        rows.append((bit, "CM_E_DER_*", "the message is not strict DER (truncated, a wrong tag, "
                     "a non-minimal length, trailing bytes, a list over its cap, ...)"))
    rows.sort()
    out = ["| failInfo (bit) | condition | code |", "| --- | --- | --- |"]
    for bit, sym, explanation in rows:
        out.append(f"| {BITS[bit]} ({bit}) | {explanation} | `{sym}` |")
    return "\n".join(out) + "\n"


def main():
    t = table()
    if len(sys.argv) == 1:
        sys.stdout.write(t)
        return 0
    readme = open(README).read()
    if BEGIN not in readme or END not in readme:
        print(f"README.md has no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    want = head + BEGIN + "\n" + t + END + tail
    if sys.argv[1] == "--fix":
        open(README, "w").write(want)
        return 0
    if want != readme:
        print("README.md's failInfo table differs from engine/base/codes.def: run "
              "python3 tools/gen-failinfo-table.py --fix", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
