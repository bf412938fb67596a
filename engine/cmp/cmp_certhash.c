// certHash for certConf (RFC 9810 §5.3.18): the hash of the certificate's signature algorithm,
// or hashAlg (pvno 3) when the sender gave one.
#include <openssl/evp.h>

#include "engine/cmp/cmp.h"
#include "engine/der/der_oid.h"

// Ed448's certHash is SHAKE256 with 512 bits of output (RFC 9481 §2, RFC 8419 §3).
#define CMP_SHAKE256_LEN 64u

CM_RESULT cmp_digests_init(cmp_digests *d)
{
    d->sha224 = EVP_MD_fetch(NULL, "SHA2-224", NULL);
    d->sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    d->sha384 = EVP_MD_fetch(NULL, "SHA2-384", NULL);
    d->sha512 = EVP_MD_fetch(NULL, "SHA2-512", NULL);
    d->shake256 = EVP_MD_fetch(NULL, "SHAKE-256", NULL);
    if (d->sha224 == NULL || d->sha256 == NULL || d->sha384 == NULL || d->sha512 == NULL ||
        d->shake256 == NULL) {
        cm_ossl_clear_errors();
        CM_BAIL(CM_E_CRYPTO);
    }
    return cm_result_make(CM_OK);
}

void cmp_digests_cleanup(cmp_digests *d)
{
    EVP_MD_free(d->sha224);
    EVP_MD_free(d->sha256);
    EVP_MD_free(d->sha384);
    EVP_MD_free(d->sha512);
    EVP_MD_free(d->shake256);
    d->sha224 = d->sha256 = d->sha384 = d->sha512 = d->shake256 = NULL;
}

// md_of_hash_alg picks the digest for a hashAlg AlgorithmIdentifier (parameters absent or
// NULL, RFC 5754 §2).
static cm_result md_of_hash_alg(const cmp_digests *d, const cmp_alg_id *alg, EVP_MD **out)
{
    bool params_ok = alg->params.len == 0 ||
                     (alg->params.len == 2 && alg->params.p[0] == 0x05 && alg->params.p[1] == 0);
    CM_ENSURE(params_ok, CMP_E_UNKNOWN_HASH_ALG);
    if (der_oid_is(alg->oid, DER_OID_SHA224)) {
        *out = d->sha224;
    } else if (der_oid_is(alg->oid, DER_OID_SHA256)) {
        *out = d->sha256;
    } else if (der_oid_is(alg->oid, DER_OID_SHA384)) {
        *out = d->sha384;
    } else if (der_oid_is(alg->oid, DER_OID_SHA512)) {
        *out = d->sha512;
    } else if (der_oid_is(alg->oid, DER_OID_SHAKE256) && alg->params.len == 0) {
        *out = d->shake256;
    } else {
        CM_BAIL(CMP_E_UNKNOWN_HASH_ALG);
    }
    return cm_result_make(CM_OK);
}

// md_of_cert picks the digest of the certificate's own signatureAlgorithm:
//   Certificate ::= SEQUENCE { tbsCertificate TBSCertificate,
//       signatureAlgorithm AlgorithmIdentifier, signatureValue BIT STRING } (RFC 5280 §4.1)
static cm_result md_of_cert(const cmp_digests *d, cm_span cert, EVP_MD **out)
{
    der_reader r;
    der_reader seq;
    der_reader_init(&r, cert);
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &seq));
    CM_TRY(der_expect_end(&r));
    CM_TRY(der_get_any(&seq, NULL, NULL, NULL));
    crmf_sig_alg alg;
    cm_result res = crmf_sig_alg_parse(&seq, &alg);
    // An algorithm crmf refuses (SHA-1, SHAKE variants, unknown) has no certHash here.
    CM_ENSURE(cm_result_class(res) != CM_CLASS_POLICY, CMP_E_UNKNOWN_HASH_ALG);
    CM_TRY(res);
    switch (alg.kind) {
    case CRMF_SIG_ED25519:
        *out = d->sha512;
        return cm_result_make(CM_OK);
    case CRMF_SIG_ED448:
        *out = d->shake256;
        return cm_result_make(CM_OK);
    default:
        break;
    }
    switch (alg.hash) {
    case CRMF_HASH_SHA224:
        *out = d->sha224;
        break;
    case CRMF_HASH_SHA256:
        *out = d->sha256;
        break;
    case CRMF_HASH_SHA384:
        *out = d->sha384;
        break;
    case CRMF_HASH_SHA512:
        *out = d->sha512;
        break;
    default:
        CM_BAIL(CMP_E_UNKNOWN_HASH_ALG);
    }
    return cm_result_make(CM_OK);
}

CM_RESULT cmp_cert_hash(const cmp_digests *d, uint8_t *out, size_t *out_len, cm_span cert,
                        const cmp_alg_id *hash_alg)
{
    EVP_MD *md = NULL;
    if (hash_alg != NULL) {
        CM_TRY(md_of_hash_alg(d, hash_alg, &md));
        // The certificate must still be one.
        der_reader r;
        cm_span body;
        der_reader_init(&r, cert);
        CM_TRY(der_get_tlv(&r, DER_TAG_SEQUENCE, &body));
        CM_TRY(der_expect_end(&r));
    } else {
        CM_TRY(md_of_cert(d, cert, &md));
    }
    CM_ENSURE(md != NULL, CM_E_STATE);
    cm_result res = cm_result_make(CM_OK);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, md, NULL) != 1 ||
        EVP_DigestUpdate(ctx, cert.p, cert.len) != 1) {
        goto crypto_fail;
    }
    if (md == d->shake256) {
        if (EVP_DigestFinalXOF(ctx, out, CMP_SHAKE256_LEN) != 1) {
            goto crypto_fail;
        }
        *out_len = CMP_SHAKE256_LEN;
    } else {
        unsigned int len = 0;
        if (EVP_DigestFinal_ex(ctx, out, &len) != 1) {
            goto crypto_fail;
        }
        *out_len = len;
    }
    goto out;
crypto_fail:
    cm_ossl_clear_errors();
    res = cm_bail_note(CM_E_CRYPTO, __FILE__, __LINE__);
out:
    EVP_MD_CTX_free(ctx);
    return res;
}
