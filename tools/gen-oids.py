#!/usr/bin/env python3
"""Generate engine/der/der_oid.h from the dotted OIDs below (content octets as C literals).

Run: python3 tools/gen-oids.py > engine/der/der_oid.h
"""
OIDS = [
    ("hashes and MACs (RFC 9481 §2, §6)", [
        ("SHA1", "1.3.14.3.2.26"), ("SHA224", "2.16.840.1.101.3.4.2.4"),
        ("SHA256", "2.16.840.1.101.3.4.2.1"), ("SHA384", "2.16.840.1.101.3.4.2.2"),
        ("SHA512", "2.16.840.1.101.3.4.2.3"), ("SHAKE128", "2.16.840.1.101.3.4.2.11"),
        ("SHAKE256", "2.16.840.1.101.3.4.2.12"),
        ("SHA3_224", "2.16.840.1.101.3.4.2.7"), ("SHA3_256", "2.16.840.1.101.3.4.2.8"),
        ("SHA3_384", "2.16.840.1.101.3.4.2.9"), ("SHA3_512", "2.16.840.1.101.3.4.2.10"),
        ("HMAC_SHA1", "1.2.840.113549.2.7"), ("HMAC_SHA224", "1.2.840.113549.2.8"),
        ("HMAC_SHA256", "1.2.840.113549.2.9"), ("HMAC_SHA384", "1.2.840.113549.2.10"),
        ("HMAC_SHA512", "1.2.840.113549.2.11"), ("HMAC_SHA1_IPSEC", "1.3.6.1.5.5.8.1.2"),
        ("PASSWORD_BASED_MAC", "1.2.840.113533.7.66.13"), ("DH_BASED_MAC", "1.2.840.113533.7.66.30"),
        ("PBMAC1", "1.2.840.113549.1.5.14"), ("PBKDF2", "1.2.840.113549.1.5.12"),
        ("KMAC_SHAKE128", "2.16.840.1.101.3.4.2.19"), ("KMAC_SHAKE256", "2.16.840.1.101.3.4.2.20"),
        ("AES128_GMAC", "2.16.840.1.101.3.4.1.9"), ("AES192_GMAC", "2.16.840.1.101.3.4.1.29"),
        ("AES256_GMAC", "2.16.840.1.101.3.4.1.49"),
    ]),
    ("public keys and signatures (RFC 9481 §3, RFC 5480, RFC 8410)", [
        ("RSA_ENCRYPTION", "1.2.840.113549.1.1.1"), ("SHA1_WITH_RSA", "1.2.840.113549.1.1.5"),
        ("MGF1", "1.2.840.113549.1.1.8"), ("RSASSA_PSS", "1.2.840.113549.1.1.10"),
        ("SHA256_WITH_RSA", "1.2.840.113549.1.1.11"), ("SHA384_WITH_RSA", "1.2.840.113549.1.1.12"),
        ("SHA512_WITH_RSA", "1.2.840.113549.1.1.13"), ("SHA224_WITH_RSA", "1.2.840.113549.1.1.14"),
        ("EC_PUBLIC_KEY", "1.2.840.10045.2.1"), ("ECDSA_WITH_SHA1", "1.2.840.10045.4.1"),
        ("ECDSA_WITH_SHA224", "1.2.840.10045.4.3.1"), ("ECDSA_WITH_SHA256", "1.2.840.10045.4.3.2"),
        ("ECDSA_WITH_SHA384", "1.2.840.10045.4.3.3"), ("ECDSA_WITH_SHA512", "1.2.840.10045.4.3.4"),
        ("RSASSA_PSS_SHAKE128", "1.3.6.1.5.5.7.6.30"), ("RSASSA_PSS_SHAKE256", "1.3.6.1.5.5.7.6.31"),
        ("ECDSA_WITH_SHAKE128", "1.3.6.1.5.5.7.6.32"), ("ECDSA_WITH_SHAKE256", "1.3.6.1.5.5.7.6.33"),
        ("ECDSA_WITH_SHA3_256", "2.16.840.1.101.3.4.3.10"),
        ("ECDSA_WITH_SHA3_384", "2.16.840.1.101.3.4.3.11"),
        ("ECDSA_WITH_SHA3_512", "2.16.840.1.101.3.4.3.12"),
        ("RSA_WITH_SHA3_256", "2.16.840.1.101.3.4.3.14"),
        ("RSA_WITH_SHA3_384", "2.16.840.1.101.3.4.3.15"),
        ("RSA_WITH_SHA3_512", "2.16.840.1.101.3.4.3.16"),
        ("P256", "1.2.840.10045.3.1.7"), ("P384", "1.3.132.0.34"), ("P521", "1.3.132.0.35"),
        ("X25519", "1.3.101.110"), ("X448", "1.3.101.111"),
        ("ED25519", "1.3.101.112"), ("ED448", "1.3.101.113"),
    ]),
    ("names and attributes (RFC 5280 Appendix A, PKCS#9)", [
        ("AT_COMMON_NAME", "2.5.4.3"), ("AT_SERIAL_NUMBER", "2.5.4.5"), ("AT_COUNTRY", "2.5.4.6"),
        ("AT_LOCALITY", "2.5.4.7"), ("AT_STATE", "2.5.4.8"), ("AT_ORGANIZATION", "2.5.4.10"),
        ("AT_ORG_UNIT", "2.5.4.11"), ("AT_DOMAIN_COMPONENT", "0.9.2342.19200300.100.1.25"),
        ("AT_UID", "0.9.2342.19200300.100.1.1"),
        ("PKCS9_EMAIL", "1.2.840.113549.1.9.1"), ("PKCS9_CHALLENGE_PASSWORD", "1.2.840.113549.1.9.7"),
        ("PKCS9_EXTENSION_REQUEST", "1.2.840.113549.1.9.14"),
    ]),
    ("certificate and CRL extensions (RFC 5280 §4.2, §5.2, §5.3)", [
        ("CE_SUBJECT_KEY_ID", "2.5.29.14"), ("CE_KEY_USAGE", "2.5.29.15"),
        ("CE_SUBJECT_ALT_NAME", "2.5.29.17"), ("CE_ISSUER_ALT_NAME", "2.5.29.18"),
        ("CE_BASIC_CONSTRAINTS", "2.5.29.19"), ("CE_CRL_NUMBER", "2.5.29.20"),
        ("CE_CRL_REASON", "2.5.29.21"), ("CE_INVALIDITY_DATE", "2.5.29.24"),
        ("CE_DELTA_CRL_INDICATOR", "2.5.29.27"), ("CE_ISSUING_DIST_POINT", "2.5.29.28"),
        ("CE_CERTIFICATE_ISSUER", "2.5.29.29"), ("CE_NAME_CONSTRAINTS", "2.5.29.30"),
        ("CE_CRL_DIST_POINTS", "2.5.29.31"), ("CE_CERT_POLICIES", "2.5.29.32"),
        ("CE_AUTHORITY_KEY_ID", "2.5.29.35"), ("CE_EXT_KEY_USAGE", "2.5.29.37"),
        ("PE_AUTHORITY_INFO_ACCESS", "1.3.6.1.5.5.7.1.1"),
        ("KP_SERVER_AUTH", "1.3.6.1.5.5.7.3.1"), ("KP_CLIENT_AUTH", "1.3.6.1.5.5.7.3.2"),
        ("KP_CODE_SIGNING", "1.3.6.1.5.5.7.3.3"), ("KP_EMAIL_PROTECTION", "1.3.6.1.5.5.7.3.4"),
        ("KP_OCSP_SIGNING", "1.3.6.1.5.5.7.3.9"),
        ("KP_CMC_CA", "1.3.6.1.5.5.7.3.27"), ("KP_CMC_RA", "1.3.6.1.5.5.7.3.28"),
        ("KP_CM_KGA", "1.3.6.1.5.5.7.3.32"),
    ]),
    ("CMP InfoTypeAndValue types, id-it (RFC 9810 Appendix F)", [
        ("IT_CA_PROT_ENC_CERT", "1.3.6.1.5.5.7.4.1"), ("IT_SIGN_KEY_PAIR_TYPES", "1.3.6.1.5.5.7.4.2"),
        ("IT_ENC_KEY_PAIR_TYPES", "1.3.6.1.5.5.7.4.3"), ("IT_PREFERRED_SYMM_ALG", "1.3.6.1.5.5.7.4.4"),
        ("IT_CA_KEY_UPDATE_INFO", "1.3.6.1.5.5.7.4.5"), ("IT_CURRENT_CRL", "1.3.6.1.5.5.7.4.6"),
        ("IT_UNSUPPORTED_OIDS", "1.3.6.1.5.5.7.4.7"), ("IT_KEY_PAIR_PARAM_REQ", "1.3.6.1.5.5.7.4.10"),
        ("IT_KEY_PAIR_PARAM_REP", "1.3.6.1.5.5.7.4.11"), ("IT_REV_PASSPHRASE", "1.3.6.1.5.5.7.4.12"),
        ("IT_IMPLICIT_CONFIRM", "1.3.6.1.5.5.7.4.13"), ("IT_CONFIRM_WAIT_TIME", "1.3.6.1.5.5.7.4.14"),
        ("IT_ORIG_PKI_MESSAGE", "1.3.6.1.5.5.7.4.15"), ("IT_SUPP_LANG_TAGS", "1.3.6.1.5.5.7.4.16"),
        ("IT_CA_CERTS", "1.3.6.1.5.5.7.4.17"), ("IT_ROOT_CA_KEY_UPDATE", "1.3.6.1.5.5.7.4.18"),
        ("IT_CERT_REQ_TEMPLATE", "1.3.6.1.5.5.7.4.19"), ("IT_ROOT_CA_CERT", "1.3.6.1.5.5.7.4.20"),
        ("IT_CERT_PROFILE", "1.3.6.1.5.5.7.4.21"), ("IT_CRL_STATUS_LIST", "1.3.6.1.5.5.7.4.22"),
        ("IT_CRLS", "1.3.6.1.5.5.7.4.23"), ("IT_KEM_CIPHERTEXT_INFO", "1.3.6.1.5.5.7.4.24"),
    ]),
    ("CRMF controls and regInfo (RFC 4211 §6, §7)", [
        ("REGCTRL_REG_TOKEN", "1.3.6.1.5.5.7.5.1.1"), ("REGCTRL_AUTHENTICATOR", "1.3.6.1.5.5.7.5.1.2"),
        ("REGCTRL_PKI_PUBLICATION_INFO", "1.3.6.1.5.5.7.5.1.3"),
        ("REGCTRL_PKI_ARCHIVE_OPTIONS", "1.3.6.1.5.5.7.5.1.4"),
        ("REGCTRL_OLD_CERT_ID", "1.3.6.1.5.5.7.5.1.5"), ("REGCTRL_PROTOCOL_ENCR_KEY", "1.3.6.1.5.5.7.5.1.6"),
        ("REGINFO_UTF8_PAIRS", "1.3.6.1.5.5.7.5.2.1"), ("REGINFO_CERT_REQ", "1.3.6.1.5.5.7.5.2.2"),
    ]),
    ("CMS (RFC 5652, RFC 5958, RFC 3211, RFC 5753, RFC 8418, RFC 4055, RFC 3565)", [
        ("CT_DATA", "1.2.840.113549.1.7.1"), ("CT_SIGNED_DATA", "1.2.840.113549.1.7.2"),
        ("CT_ENVELOPED_DATA", "1.2.840.113549.1.7.3"),
        ("CT_KP_AKEY_PACKAGE", "2.16.840.1.101.2.1.2.78.5"),
        ("AA_CONTENT_TYPE", "1.2.840.113549.1.9.3"), ("AA_MESSAGE_DIGEST", "1.2.840.113549.1.9.4"),
        ("AA_SIGNING_TIME", "1.2.840.113549.1.9.5"),
        ("AES128_CBC", "2.16.840.1.101.3.4.1.2"), ("AES192_CBC", "2.16.840.1.101.3.4.1.22"),
        ("AES256_CBC", "2.16.840.1.101.3.4.1.42"), ("AES256_WRAP", "2.16.840.1.101.3.4.1.45"),
        ("RSAES_OAEP", "1.2.840.113549.1.1.7"), ("PWRI_KEK", "1.2.840.113549.1.9.16.3.9"),
        ("ECDH_SHA256_KDF", "1.3.132.1.11.1"), ("ECDH_SHA384_KDF", "1.3.132.1.11.2"),
        ("ECDH_SHA512_KDF", "1.3.132.1.11.3"),
    ]),
]


def encode(dotted):
    arcs = [int(a) for a in dotted.split(".")]
    subs = [arcs[0] * 40 + arcs[1]] + arcs[2:]
    out = bytearray()
    for v in subs:
        chunk = [v & 0x7F]
        v >>= 7
        while v:
            chunk.append(0x80 | (v & 0x7F))
            v >>= 7
        out += bytes(reversed(chunk))
    return out


print("// engine/der OID table: content octets of the OBJECT IDENTIFIERs certmint uses, as")
print("// string literals for der_oid_is() and der_put_oid_lit(). Generated by tools/gen-oids.py;")
print("// edit that script, not this file.")
print("#ifndef CERTMINT_ENGINE_DER_DER_OID_H")
print("#define CERTMINT_ENGINE_DER_DER_OID_H")
for title, rows in OIDS:
    print()
    print(f"// {title}")
    width = max(len(n) for n, _ in rows) + len("DER_OID_")
    for name, dotted in rows:
        lit = "".join(f"\\x{b:02x}" for b in encode(dotted))
        print(f'#define {("DER_OID_" + name).ljust(width)} "{lit}" // {dotted}')
print()
print("#endif // CERTMINT_ENGINE_DER_DER_OID_H")
