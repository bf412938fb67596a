// cmp_failinfo_from_code: the PKIFailureInfo mask of a result code. The mapping itself is
// cm_code_failinfo (engine/base, from the registry codes.def).
#include "engine/cmp/cmp.h"

uint32_t cmp_failinfo_from_code(cm_result r)
{
    return cm_ok(r) ? 0 : CMP_FAILINFO_BIT((uint32_t)cm_code_failinfo(r.code));
}
