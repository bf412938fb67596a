// ca_name_to_text: a Name as RFC 4514 text, for listings and log lines (never for decisions).
#include <stdio.h>
#include <string.h>

#include "engine/ca/ca.h"
#include "engine/ca/ca_internal.h"
#include "engine/der/der_oid.h"

typedef struct ca_attr_label {
    const char *oid;
    size_t len;
    const char *label;
} ca_attr_label;

#define CA_AT(o, l)         \
    {                       \
        o, sizeof(o) - 1, l \
    }
static const ca_attr_label k_ca_attr_labels[] = {
    CA_AT(DER_OID_AT_COMMON_NAME, "CN"), CA_AT(DER_OID_AT_SERIAL_NUMBER, "serialNumber"),
    CA_AT(DER_OID_AT_COUNTRY, "C"),      CA_AT(DER_OID_AT_LOCALITY, "L"),
    CA_AT(DER_OID_AT_STATE, "ST"),       CA_AT(DER_OID_AT_ORGANIZATION, "O"),
    CA_AT(DER_OID_AT_ORG_UNIT, "OU"),    CA_AT(DER_OID_AT_DOMAIN_COMPONENT, "DC"),
    CA_AT(DER_OID_AT_UID, "UID"),        CA_AT(DER_OID_PKCS9_EMAIL, "emailAddress"),
};
#undef CA_AT

// ca_text_out appends to a bounded buffer; once full, later appends are dropped and
// |truncated| is set, so the caller can report it.
typedef struct ca_text_out {
    char *p;
    size_t cap;
    size_t used;
    bool truncated;
} ca_text_out;

static void ca_text_putc(ca_text_out *o, char c)
{
    if (o->used + 1 < o->cap) {
        o->p[o->used++] = c;
    } else {
        o->truncated = true;
    }
}

static void ca_text_puts(ca_text_out *o, const char *s)
{
    for (; *s != '\0'; s++) {
        ca_text_putc(o, *s);
    }
}

// ca_text_value writes one AttributeValue: strings with RFC 4514 §2.4 escaping, anything else
// as '#' and the hex of the whole encoded value (RFC 4514 §2.4, the BER form).
static void ca_text_value(ca_text_out *o, uint32_t tag, cm_span whole, cm_span content)
{
    static const char k_hex[] = "0123456789abcdef";
    const bool text = tag == DER_TAG_UTF8_STRING || tag == DER_TAG_PRINTABLE_STRING ||
                      tag == DER_TAG_IA5_STRING || tag == DER_TAG_VISIBLE_STRING ||
                      tag == DER_TAG_T61_STRING;
    if (!text) {
        ca_text_putc(o, '#');
        for (size_t i = 0; i < whole.len; i++) {
            ca_text_putc(o, k_hex[whole.p[i] >> 4]);
            ca_text_putc(o, k_hex[whole.p[i] & 0x0f]);
        }
        return;
    }
    for (size_t i = 0; i < content.len; i++) {
        const uint8_t c = content.p[i];
        const bool lead = i == 0 && (c == ' ' || c == '#');
        const bool trail = i + 1 == content.len && c == ' ';
        if (c != 0 && (strchr(",+\"\\<>;", c) != NULL || lead || trail)) {
            ca_text_putc(o, '\\');
        }
        // Control characters are not printable in a listing; bytes >= 0x80 pass (UTF-8).
        ca_text_putc(o, c < 0x20 || c == 0x7f ? '?' : (char)c);
    }
}

const char *ca_attr_label_of(cm_span oid, char *buf, size_t cap)
{
    for (size_t i = 0; i < sizeof(k_ca_attr_labels) / sizeof(k_ca_attr_labels[0]); i++) {
        if (der_oid_eq(oid, (const uint8_t *)k_ca_attr_labels[i].oid, k_ca_attr_labels[i].len)) {
            return k_ca_attr_labels[i].label;
        }
    }
    der_oid_to_text(oid, buf, cap);
    return buf;
}

// Name ::= CHOICE { rdnSequence RDNSequence }
// RDNSequence ::= SEQUENCE OF RelativeDistinguishedName
// RelativeDistinguishedName ::= SET SIZE (1..MAX) OF AttributeTypeAndValue
// AttributeTypeAndValue ::= SEQUENCE { type AttributeType, value AttributeValue } (RFC 5280
// §4.1.2.4)
bool ca_name_to_text(char *out, size_t cap, cm_span name)
{
    if (cap == 0) {
        return false;
    }
    out[0] = '\0';
    // RFC 4514 prints the last RDN first: collect the RDNs, then walk them backwards.
    cm_span rdns[CA_MAX_RDNS];
    size_t n = 0;
    der_reader r, seq;
    der_reader_init(&r, name);
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) || !cm_ok(der_expect_end(&r))) {
        return false;
    }
    while (!der_reader_empty(&seq)) {
        if (n == CA_MAX_RDNS || !cm_ok(der_get_tlv(&seq, DER_TAG_SET, &rdns[n]))) {
            return false;
        }
        n++;
    }
    ca_text_out o = {out, cap, 0, false};
    for (size_t k = n; k-- > 0;) {
        der_reader set;
        der_reader_init(&set, rdns[k]);
        bool first_atv = true;
        while (!der_reader_empty(&set)) {
            der_reader atv;
            cm_span type, value, whole;
            uint32_t tag;
            if (!cm_ok(der_enter(&set, DER_TAG_SEQUENCE, &atv)) ||
                !cm_ok(der_get_oid(&atv, &type)) ||
                !cm_ok(der_get_any(&atv, &tag, &value, &whole)) || !cm_ok(der_expect_end(&atv))) {
                out[0] = '\0';
                return false;
            }
            if (o.used != 0) {
                ca_text_putc(&o, first_atv ? ',' : '+'); // a multi-valued RDN joins with '+'
            }
            char oid_text[64];
            ca_text_puts(&o, ca_attr_label_of(type, oid_text, sizeof(oid_text)));
            ca_text_putc(&o, '=');
            ca_text_value(&o, tag, whole, value);
            first_atv = false;
        }
    }
    out[o.used] = '\0';
    return !o.truncated;
}
