/* An LD_PRELOAD library that hides instruction-set extensions from a process's CPUID: the libraries in it
 * (onnxruntime's MLAS, OpenVINO's and PyTorch's oneDNN, cpuinfo) then dispatch the kernels of an older CPU, on this
 * machine's cores. Built and used by benchmarks/isa_mask.py; see there.
 *
 * How: Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID 0; the cpuid_fault flag of /proc/cpuinfo) makes every
 * CPUID instruction of the process, in every thread it starts, raise SIGSEGV; the handler runs the real CPUID with
 * faulting briefly off for its thread, clears the masked bits and steps over the instruction. Faulting is reset
 * by execve, and a child that keeps LD_PRELOAD loads this again.
 *
 * KDQAT_CPUID_MASK:
 *   avx2         AVX2 and FMA, no AVX-512, no VNNI of either width, no AMX (Haswell to Zen 3)
 *   avx2_vnni    AVX2 with AVX-VNNI, no AVX-512, no AMX (Alder Lake, Meteor Lake)
 *   avx512_vnni  AVX-512 with VNNI, no AVX-512 BF16/FP16, no AVX-VNNI, no AMX (Cascade Lake, Ice Lake)
 * KDQAT_CPUID_MASK_LOG=1: each CPUID the process runs, masked, on standard error.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))

/* CPUID leaf 7 bits cleared at each level (Intel SDM vol. 2A, CPUID). */
struct mask {
    uint32_t l7_ebx, l7_ecx, l7_edx; /* leaf 7, subleaf 0 */
    uint32_t l71_eax, l71_edx;       /* leaf 7, subleaf 1 */
};

/* AMX-BF16 (22), AMX-TILE (24), AMX-INT8 (25), AVX512_FP16 (23); AVX-VNNI (4), AVX512_BF16 (5), AMX-FP16 (21),
 * AVX-IFMA (23); AVX-VNNI-INT8 (4), AVX-NE-CONVERT (5), AVX-VNNI-INT16 (10), AVX10 (19) */
static const struct mask AVX512_VNNI = {
    0, 0, BIT(22) | BIT(23) | BIT(24) | BIT(25),
    BIT(4) | BIT(5) | BIT(21) | BIT(23), BIT(4) | BIT(5) | BIT(10) | BIT(19)};

/* also AVX512 F (16), DQ (17), IFMA (21), PF (26), ER (27), CD (28), BW (30), VL (31); VBMI (1), VBMI2 (6),
 * VNNI (11), BITALG (12), VPOPCNTDQ (14); 4VNNIW (2), 4FMAPS (3), VP2INTERSECT (8) */
static const struct mask AVX2 = {
    BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31),
    BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14),
    BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25),
    BIT(4) | BIT(5) | BIT(21) | BIT(23), BIT(4) | BIT(5) | BIT(10) | BIT(19)};

/* AVX2 less AVX-VNNI (leaf 7.1 EAX bit 4) */
static const struct mask AVX2_VNNI = {
    BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31),
    BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14),
    BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25),
    BIT(5) | BIT(21) | BIT(23), BIT(4) | BIT(5) | BIT(10) | BIT(19)};

static struct mask active;
static int log_calls;

static void say(const char *text) { (void)!write(2, text, strlen(text)); }

static void hex(char *out, uint32_t value) {
    for (int i = 7; i >= 0; --i, value >>= 4) out[i] = "0123456789abcdef"[value & 15];
}

static void on_fault(int sig, siginfo_t *info, void *context) {
    (void)sig, (void)info;
    greg_t *reg = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)reg[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real segmentation fault: let it happen as it would have */
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)reg[REG_RAX], sub = (uint32_t)reg[REG_RCX], a, b, c, d;
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, sub, a, b, c, d);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    if (leaf == 7 && sub == 0) {
        b &= ~active.l7_ebx, c &= ~active.l7_ecx, d &= ~active.l7_edx;
    } else if (leaf == 7 && sub == 1) {
        a &= ~active.l71_eax, d &= ~active.l71_edx;
    }
    if (log_calls) {
        char line[] = "cpuid ######## ########: ######## ######## ######## ########\n";
        hex(line + 6, leaf), hex(line + 15, sub), hex(line + 25, a), hex(line + 34, b), hex(line + 43, c),
            hex(line + 52, d);
        say(line);
    }
    reg[REG_RAX] = a, reg[REG_RBX] = b, reg[REG_RCX] = c, reg[REG_RDX] = d;
    reg[REG_RIP] += 2;
}

__attribute__((constructor)) static void start_masking(void) {
    const char *level = getenv("KDQAT_CPUID_MASK");
    if (level == NULL || strcmp(level, "avx2") == 0) {
        active = AVX2;
    } else if (strcmp(level, "avx2_vnni") == 0) {
        active = AVX2_VNNI;
    } else if (strcmp(level, "avx512_vnni") == 0) {
        active = AVX512_VNNI;
    } else {
        say("cpuid_mask: KDQAT_CPUID_MASK must be avx2, avx2_vnni or avx512_vnni\n");
        _exit(2);
    }
    const char *logging = getenv("KDQAT_CPUID_MASK_LOG");
    log_calls = logging != NULL && strcmp(logging, "1") == 0;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &action, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) { /* never run unmasked while claiming a mask */
        say("cpuid_mask: this kernel or CPU cannot fault on CPUID (no cpuid_fault); nothing was run\n");
        _exit(2);
    }
}
