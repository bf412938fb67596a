// Subject patterns (subject_pattern.REF, issue 14): a glob over the RFC 4514 text of a Name as
// ca_name_to_text writes it. The rules are in ca.h (ca_subject_match).
#include <stdint.h>
#include <string.h>

#include "engine/ca/ca.h"

bool ca_subject_pattern_valid(const char *pattern)
{
    const size_t n = strlen(pattern);
    if (n == 0 || n > CA_MAX_PATTERN) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (pattern[i] == '\\') {
            if (i + 1 == n) {
                return false;
            }
            i++;
        }
    }
    return true;
}

// ca_text_sep reports whether |t|[i] is an RDN or attribute separator of ca_name_to_text's
// output: ',' or '+' not escaped by a backslash (RFC 4514 §2.4 escapes them inside values).
static bool ca_text_sep(const char *t, size_t i)
{
    if (t[i] != ',' && t[i] != '+') {
        return false;
    }
    size_t bs = 0;
    while (bs < i && t[i - 1 - bs] == '\\') {
        bs++;
    }
    return bs % 2 == 0;
}

bool ca_subject_match(const char *pattern, const char *subject)
{
    // Iterative glob with one backtrack point per '*' (the classic two-pointer match); a '*'
    // never extends over a separator, so the backtrack point is dropped at one.
    size_t p = 0, t = 0;
    size_t star_p = SIZE_MAX, star_t = 0;
    const size_t pn = strlen(pattern), tn = strlen(subject);
    while (t < tn) {
        if (p < pn && pattern[p] == '*') {
            star_p = ++p;
            star_t = t;
            continue;
        }
        if (p < pn) {
            const bool lit = pattern[p] == '\\' && p + 1 < pn;
            const char want = lit ? pattern[p + 1] : pattern[p];
            const bool any = !lit && want == '?';
            if ((any && !ca_text_sep(subject, t)) || (!any && want == subject[t])) {
                p += lit ? 2 : 1;
                t++;
                continue;
            }
        }
        if (star_p != SIZE_MAX && !ca_text_sep(subject, star_t)) {
            p = star_p;
            t = ++star_t;
            continue;
        }
        return false;
    }
    while (p < pn && pattern[p] == '*') {
        p++;
    }
    return p == pn;
}
