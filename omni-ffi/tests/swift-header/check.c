/* The C header generated for the Swift bindings (bindings/swift/omni_ffiFFI.h)
 * compiled with clang and linked against libomni_ffi: the declarations Swift
 * will call match the symbols the library exports. Calls a few scaffolding
 * functions the way OmniFFI.swift does. (Swift itself cannot run here.) */
#include <stdio.h>
#include <string.h>

#include "omni_ffiFFI.h"

int main(void) {
    RustCallStatus status;
    memset(&status, 0, sizeof status);
    RustBuffer v = uniffi_omni_ffi_fn_func_omni_version(&status);
    if (status.code != 0 || v.len == 0 || v.data == NULL) {
        printf("FAIL - omni_version through the Swift header: status %d\n", status.code);
        return 1;
    }
    printf("ok - omni_version through the Swift header: %.*s\n", (int)v.len, (const char *)v.data);
    ffi_omni_ffi_rustbuffer_free(v, &status);
    if (status.code != 0) {
        printf("FAIL - rustbuffer_free\n");
        return 1;
    }
    /* Every API checksum OmniFFI.swift verifies at load (checksums.inc is
     * extracted from OmniFFI.swift by run-binding-tests.sh): a mismatch would
     * make the Swift bindings refuse the library. */
    int bad = 0, n = 0;
#define CHECKSUM(fn, expected)                                          \
    do {                                                                \
        n++;                                                            \
        if (fn() != (expected)) {                                       \
            printf("FAIL - %s: %u, Swift expects %u\n", #fn, fn(), expected); \
            bad++;                                                      \
        }                                                               \
    } while (0);
#include "checksums.inc"
#undef CHECKSUM
    printf("%s - %d API checksums of OmniFFI.swift match the library\n", bad ? "FAIL" : "ok", n);
    uint32_t contract = ffi_omni_ffi_uniffi_contract_version();
    printf("ok - uniffi contract version %u\n", contract);
    return bad == 0 && n > 10 && contract > 0 ? 0 : 1;
}
