// p11shim: a PKCS#11 module that stands in front of a real one to emulate a network HSM and to
// inject faults, for hsm tests and benches.
//
// Environment (read when the module is first loaded, P11SHIM_MODULE; and at each C_Initialize,
// the rest):
//   P11SHIM_MODULE          path of the real PKCS#11 module (required)
//   P11SHIM_SIGN_DELAY_US   microseconds each C_Sign sleeps before forwarding (default 0)
//   P11SHIM_FAIL_EVERY      make every Nth completed C_Sign fail (0: never)
//   P11SHIM_FAIL_RV         the CK_RV it fails with (default CKR_DEVICE_ERROR; 0x... accepted)
//   P11SHIM_FAIL_CLOSE      when 1, the failing call also closes the session in the real
//                           module, so the caller must really reopen it
//
// Every function is forwarded: C_GetFunctionList hands out a copy of the real module's
// function list with C_Initialize, C_Finalize and C_Sign replaced. A PKCS#11 module has no
// context pointer, so the shim's state is process-global by necessity.
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

typedef struct p11shim_state {
    pthread_once_t once;
    void *dl;
    CK_FUNCTION_LIST *real;
    CK_FUNCTION_LIST list;
    CK_RV load_rv;
    bool owns_init;    // our C_Initialize initialised the real module
    uint64_t delay_us; // atomics: written at C_Initialize, read by C_Sign
    uint64_t fail_every;
    uint64_t fail_rv;
    uint64_t fail_close;
    uint64_t sign_count;
} p11shim_state;

static p11shim_state g_shim = {.once = PTHREAD_ONCE_INIT};

static uint64_t p11shim_env(const char *name, uint64_t def)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        return def;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 0);
    if (errno != 0 || end == v || *end != '\0') {
        return def;
    }
    return (uint64_t)x;
}

static CK_RV p11shim_c_initialize(CK_VOID_PTR args)
{
    __atomic_store_n(&g_shim.delay_us, p11shim_env("P11SHIM_SIGN_DELAY_US", 0), __ATOMIC_RELAXED);
    __atomic_store_n(&g_shim.fail_every, p11shim_env("P11SHIM_FAIL_EVERY", 0), __ATOMIC_RELAXED);
    __atomic_store_n(&g_shim.fail_rv, p11shim_env("P11SHIM_FAIL_RV", CKR_DEVICE_ERROR),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&g_shim.fail_close, p11shim_env("P11SHIM_FAIL_CLOSE", 0), __ATOMIC_RELAXED);
    __atomic_store_n(&g_shim.sign_count, 0, __ATOMIC_RELAXED);
    CK_RV rv = g_shim.real->C_Initialize(args);
    // The real module may already be initialised by someone else in this process (the same
    // library loaded directly): share it, and leave finalising to its owner.
    if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        g_shim.owns_init = false;
        return CKR_OK;
    }
    g_shim.owns_init = rv == CKR_OK;
    return rv;
}

static CK_RV p11shim_c_finalize(CK_VOID_PTR reserved)
{
    if (!g_shim.owns_init) {
        return CKR_OK;
    }
    g_shim.owns_init = false;
    return g_shim.real->C_Finalize(reserved);
}

static CK_RV p11shim_c_sign(CK_SESSION_HANDLE s, CK_BYTE_PTR data, CK_ULONG data_len,
                            CK_BYTE_PTR sig, CK_ULONG_PTR sig_len)
{
    uint64_t delay = __atomic_load_n(&g_shim.delay_us, __ATOMIC_RELAXED);
    if (delay > 0 && sig != NULL) {
        struct timespec ts = {(time_t)(delay / 1000000u), (long)(delay % 1000000u) * 1000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    CK_RV rv = g_shim.real->C_Sign(s, data, data_len, sig, sig_len);
    uint64_t every = __atomic_load_n(&g_shim.fail_every, __ATOMIC_RELAXED);
    if (rv != CKR_OK || sig == NULL || every == 0) {
        return rv;
    }
    // The real operation has completed (so no operation is left active); report a fault.
    uint64_t n = __atomic_add_fetch(&g_shim.sign_count, 1, __ATOMIC_RELAXED);
    if (n % every != 0) {
        return rv;
    }
    if (__atomic_load_n(&g_shim.fail_close, __ATOMIC_RELAXED) != 0) {
        (void)g_shim.real->C_CloseSession(s);
    }
    return (CK_RV)__atomic_load_n(&g_shim.fail_rv, __ATOMIC_RELAXED);
}

static CK_RV p11shim_c_getfunctionlist(CK_FUNCTION_LIST_PTR_PTR out);

static void p11shim_load(void)
{
    const char *path = getenv("P11SHIM_MODULE");
    if (path == NULL) {
        g_shim.load_rv = CKR_GENERAL_ERROR;
        return;
    }
    g_shim.dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (g_shim.dl == NULL) {
        g_shim.load_rv = CKR_GENERAL_ERROR;
        return;
    }
    CK_C_GetFunctionList get = NULL;
    void *sym = dlsym(g_shim.dl, "C_GetFunctionList");
    memcpy(&get, &sym, sizeof(get));
    if (get == NULL || get(&g_shim.real) != CKR_OK || g_shim.real == NULL) {
        g_shim.load_rv = CKR_GENERAL_ERROR;
        return;
    }
    g_shim.list = *g_shim.real;
    g_shim.list.C_Initialize = p11shim_c_initialize;
    g_shim.list.C_Finalize = p11shim_c_finalize;
    g_shim.list.C_Sign = p11shim_c_sign;
    g_shim.list.C_GetFunctionList = p11shim_c_getfunctionlist;
    g_shim.load_rv = CKR_OK;
}

static CK_RV p11shim_c_getfunctionlist(CK_FUNCTION_LIST_PTR_PTR out)
{
    if (out == NULL) {
        return CKR_ARGUMENTS_BAD;
    }
    (void)pthread_once(&g_shim.once, p11shim_load);
    if (g_shim.load_rv != CKR_OK) {
        return g_shim.load_rv;
    }
    *out = &g_shim.list;
    return CKR_OK;
}

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
    return p11shim_c_getfunctionlist(out);
}
