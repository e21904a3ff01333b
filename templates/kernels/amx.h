/* AMX tiles (Intel Sapphire Rapids and later): the tile configuration and the permission to
   use them, shared by the int8 GEMM (int8_gemm.h.j2) and the integer attention (ops.h), which
   include it where the target has AMX; included once per C file. Linux hands out AMX state only
   on request (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); where the request fails the
   callers run their VNNI code instead. */
#ifndef SQC_AMX_DEFINED
#define SQC_AMX_DEFINED
typedef struct __attribute__((aligned(64))) {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} sqc_amx_tilecfg;

/* 1 once this process may use AMX tiles: asks the kernel the first time (a raw syscall, so no
   _GNU_SOURCE is needed; asking twice is harmless). */
static int sqc_amx_permitted(void)
{
    static int state; /* 0 not asked, 1 granted, -1 refused */
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (s == 0) {
        long ret;
        __asm__ volatile("syscall"
                         : "=a"(ret)
                         : "0"(158L /* SYS_arch_prctl */), "D"(0x1023L /* ARCH_REQ_XCOMP_PERM */),
                           "S"(18L /* XFEATURE_XTILEDATA */)
                         : "rcx", "r11", "memory");
        s = ret == 0 ? 1 : -1;
        __atomic_store_n(&state, s, __ATOMIC_RELEASE);
    }
    return s > 0;
}

/* Every tile 16 rows x 64 bytes (palette 1), on this thread */
static inline void sqc_amx_configure(void)
{
    sqc_amx_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
}
#endif /* SQC_AMX_DEFINED */
