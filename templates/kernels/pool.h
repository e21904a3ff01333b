/* sqc's thread pool: parallel loops in which the calling thread works, and a helper thread that
 * is late (its vCPU taken by another process) is never waited for.
 *
 * OpenMP's `parallel for` joins every thread of the team at the end of each region, so one
 * descheduled vCPU stalls every op of a call: measured here, a 2-thread bert-base int8 call took
 * 832 ms instead of 30 ms while another process held the second core. In sqc_parallel_for the
 * loop is split into fixed chunks that threads claim from one atomic counter; the caller claims
 * too, and returns once every claimed chunk is done. A helper that wakes after the caller has
 * claimed everything finds nothing and goes back to waiting. Results do not depend on the thread
 * count or on who runs a chunk: the chunks are the same.
 *
 * One job at a time per loaded library: a second caller that finds the pool busy (another
 * engine call running concurrently) runs its loop alone. Helpers are created on first use (up
 * to SQC_POOL_MAX - 1), spin briefly between jobs (the ops of a call follow each other within
 * microseconds), then sleep on a condition variable.
 *
 * Publication is a seqlock: the caller makes `gen` odd, waits until no helper is inside the
 * previous job (`active`), writes the job, makes `gen` even. A helper increments `active`, then
 * re-reads `gen`: with sequentially consistent atomics either it sees the change and backs off,
 * or the caller sees it active and waits; so a helper only reads a job that stays put. */
#ifndef SQC_POOL_H
#define SQC_POOL_H
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#define SQC_POOL_MAX 64
#define SQC_POOL_SPINS 20000 /* idle polls before a helper sleeps (about 50-100 us) */

typedef void (*sqc_task_fn)(void *args, int64_t begin, int64_t end);

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int helpers;           /* created; guarded by lock */
    atomic_int busy;       /* a caller owns the pool */
    atomic_uint gen;       /* job generation: odd while a job is being written */
    atomic_int active;     /* helpers inside the current job */
    atomic_int sleepers;   /* helpers waiting on `wake` */
    atomic_int joined;     /* helpers that took part in the current job */
    atomic_llong next;     /* first unclaimed index */
    atomic_llong done;     /* indices finished */
    sqc_task_fn fn;
    void *args;
    int64_t n, chunk;
    int want;              /* helpers the current job may use */
    int caller_cpu;        /* the CPU the current job's caller published it from (-1: unknown) */
} sqc_pool = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };

static inline void sqc_pool_relax(void) { __builtin_ia32_pause(); }

/* The running thread's slot in the current job: 0 for the caller (also when it runs a loop
 * alone), 1 .. nthreads - 1 for the helpers in the order they joined. Unique among the threads
 * of one job, so a task may index per-thread buffers of a call's scratch by it. */
static _Thread_local int sqc_pool_slot_;
static inline int sqc_pool_slot(void) { return sqc_pool_slot_; }

/* claim and run chunks of the published job until none is left */
static void sqc_pool_work(void) {
    const int64_t n = sqc_pool.n, chunk = sqc_pool.chunk;
    for (;;) {
        const int64_t i = atomic_fetch_add(&sqc_pool.next, chunk);
        if (i >= n)
            return;
        const int64_t end = i + chunk < n ? i + chunk : n;
        sqc_pool.fn(sqc_pool.args, i, end);
        atomic_fetch_add(&sqc_pool.done, end - i);
    }
}

/* Move the calling helper off `cpu` when it is running there (Linux; a no-op elsewhere). A
 * helper woken from its sleep is often placed on the waking caller's CPU (the scheduler's
 * wake-affine placement), and the two spinning threads then share it for the few ms until the
 * load balancer moves one. Measured on this 2-vCPU machine, a 2-thread bert-base int8 call made
 * 0.2 s after the previous one took a median 18.6-21.5 ms (p90 up to 26 ms) against 15.4 ms
 * back to back, all of it in the call's first few ms; pinning the two threads apart removed it.
 * Excluding that CPU from the helper's affinity migrates it at once, and restoring the mask
 * right after leaves it where it is: 17.3 ms (p90 19 ms) with this. Threads are never pinned:
 * the mask ends as it began. */
static void sqc_pool_leave_cpu(int cpu) {
#if defined(__linux__) && defined(CPU_SET)
    if (cpu < 0 || sched_getcpu() != cpu)
        return;
    cpu_set_t mask, others;
    if (pthread_getaffinity_np(pthread_self(), sizeof mask, &mask) != 0 || CPU_COUNT(&mask) < 2)
        return;
    others = mask;
    CPU_CLR(cpu, &others);
    if (CPU_COUNT(&others) == 0 || pthread_setaffinity_np(pthread_self(), sizeof others, &others) != 0)
        return;
    pthread_setaffinity_np(pthread_self(), sizeof mask, &mask);
#else
    (void)cpu;
#endif
}

static inline int sqc_pool_this_cpu(void) {
#if defined(__linux__) && defined(CPU_SET)
    return sched_getcpu();
#else
    return -1;
#endif
}

static void *sqc_pool_helper(void *unused) {
    (void)unused;
    unsigned seen = atomic_load(&sqc_pool.gen) & ~1u;
    for (;;) {
        unsigned g = atomic_load(&sqc_pool.gen);
        for (int spins = 0; (g == seen || (g & 1u)) && spins < SQC_POOL_SPINS; ++spins) {
            sqc_pool_relax();
            g = atomic_load(&sqc_pool.gen);
        }
        if (g == seen || (g & 1u)) {
            pthread_mutex_lock(&sqc_pool.lock);
            atomic_fetch_add(&sqc_pool.sleepers, 1);
            while ((g = atomic_load(&sqc_pool.gen)) == seen || (g & 1u))
                pthread_cond_wait(&sqc_pool.wake, &sqc_pool.lock);
            atomic_fetch_sub(&sqc_pool.sleepers, 1);
            pthread_mutex_unlock(&sqc_pool.lock);
            sqc_pool_leave_cpu(sqc_pool.caller_cpu); /* just woken: maybe on the caller's CPU */
        }
        seen = g;
        atomic_fetch_add(&sqc_pool.active, 1);
        if (atomic_load(&sqc_pool.gen) == g) {
            const int j = atomic_fetch_add(&sqc_pool.joined, 1);
            if (j < sqc_pool.want) {
                sqc_pool_slot_ = j + 1;
                sqc_pool_work();
            }
        }
        atomic_fetch_sub(&sqc_pool.active, 1);
    }
    return NULL;
}

/* In a child of fork() (gunicorn --preload, multiprocessing) the helpers do not exist: start
 * afresh, so the child makes its own on its first parallel loop. */
static void sqc_pool_after_fork(void) {
    pthread_mutex_init(&sqc_pool.lock, NULL);
    pthread_cond_init(&sqc_pool.wake, NULL);
    sqc_pool.helpers = 0;
    atomic_store(&sqc_pool.busy, 0);
    atomic_store(&sqc_pool.active, 0);
    atomic_store(&sqc_pool.sleepers, 0);
}

/* fn(args, begin, end) over [0, n) in chunks of `chunk` indices, on up to nthreads threads (the
 * caller one of them). nthreads <= 1, a single chunk, or a busy pool: the caller runs it all. */
static void sqc_parallel_for(int nthreads, int64_t n, int64_t chunk, sqc_task_fn fn, void *args) {
    if (n <= 0)
        return;
    if (chunk < 1)
        chunk = 1;
    if (nthreads > SQC_POOL_MAX)
        nthreads = SQC_POOL_MAX;
    int expected = 0;
    sqc_pool_slot_ = 0;
    if (nthreads <= 1 || n <= chunk || !atomic_compare_exchange_strong(&sqc_pool.busy, &expected, 1)) {
        fn(args, 0, n);
        return;
    }
    if (sqc_pool.helpers < nthreads - 1) {
        static int at_fork_registered;
        pthread_mutex_lock(&sqc_pool.lock);
        if (!at_fork_registered) {
            pthread_atfork(NULL, NULL, sqc_pool_after_fork);
            at_fork_registered = 1;
        }
        while (sqc_pool.helpers < nthreads - 1) {
            pthread_t t;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            const int failed = pthread_create(&t, &attr, sqc_pool_helper, NULL);
            pthread_attr_destroy(&attr);
            if (failed)
                break; /* fewer helpers: the caller does more */
            sqc_pool.helpers++;
        }
        pthread_mutex_unlock(&sqc_pool.lock);
    }
    atomic_fetch_add(&sqc_pool.gen, 1); /* odd: writing */
    while (atomic_load(&sqc_pool.active) > 0)
        sqc_pool_relax(); /* a helper still inside the previous job (between two claims) */
    sqc_pool.fn = fn;
    sqc_pool.args = args;
    sqc_pool.n = n;
    sqc_pool.chunk = chunk;
    sqc_pool.want = nthreads - 1;
    sqc_pool.caller_cpu = atomic_load(&sqc_pool.sleepers) > 0 ? sqc_pool_this_cpu() : -1;
    atomic_store(&sqc_pool.next, 0);
    atomic_store(&sqc_pool.done, 0);
    atomic_store(&sqc_pool.joined, 0);
    atomic_fetch_add(&sqc_pool.gen, 1); /* even: published */
    if (atomic_load(&sqc_pool.sleepers) > 0) {
        pthread_mutex_lock(&sqc_pool.lock);
        pthread_cond_broadcast(&sqc_pool.wake);
        pthread_mutex_unlock(&sqc_pool.lock);
    }
    sqc_pool_work();
    while (atomic_load(&sqc_pool.done) < n)
        sqc_pool_relax(); /* chunks a helper claimed and is still running */
    atomic_store(&sqc_pool.busy, 0);
}

/* chunk for a loop of n light iterations: about 4 chunks per thread, at least `min` each */
static inline int64_t sqc_chunk(int64_t n, int nthreads, int64_t min) {
    const int64_t c = n / (4 * (int64_t)(nthreads > 0 ? nthreads : 1));
    return c > min ? c : min;
}

/* Spreading a prefetch over a k loop (the dense GEMMs' micro-kernels): at small M a weight panel
 * is used by few micro-tiles and its first pass would otherwise wait on DRAM (a 128 x 768 x 768
 * int8 GEMM: 209 us with cold weights, 171 us hot; fp32 660 against 583 us). Each micro-tile
 * of a panel fetches its share of the next panel into L2 while it runs: sqc_gemm_pf_share gives
 * the cache lines of that share, sqc_gemm_pf_step, called once per k step, issues one of them
 * every steps / lines steps (acc starts at 0). */
static inline int sqc_gemm_pf_share(size_t panel_bytes, int calls) {
    return (int)(((panel_bytes + 63) / 64 + (size_t)calls - 1) / (size_t)calls);
}

static inline __attribute__((always_inline)) void sqc_gemm_pf_step(const char **pf, int *acc,
                                                                   int lines, int steps) {
    *acc += lines;
    if (*acc >= steps) {
        *acc -= steps;
        _mm_prefetch(*pf, _MM_HINT_T1);
        *pf += 64;
    }
}

/* The thread tiles of a dense GEMM: M in blocks of m_rows (a multiple of mr, as even as
 * possible, at most about mc), N in blocks of n_pan weight panels (as even as possible, at most
 * max_pan), more N blocks where that makes the tile count a multiple of nthreads (M = 128,
 * N = 768 in 32-column panels on 2 threads: 4 tiles of 6 panels, not 3 of 8). Tile boundaries
 * fall on micro-tile boundaries, so no result depends on the split. Returns the tile count;
 * tile t is M block t / *n_blocks, N block t % *n_blocks. */
static inline int sqc_gemm_tiles(int M, int n_panels, int mr, int mc, int max_pan, int nthreads,
                                 int *m_rows, int *n_pan, int *n_blocks) {
    const int m_blocks_max = (M + mc - 1) / mc;
    int rows = (M + m_blocks_max - 1) / m_blocks_max;
    rows = (rows + mr - 1) / mr * mr;
    const int m_blocks = (M + rows - 1) / rows;
    const int nb_max = (n_panels + max_pan - 1) / max_pan;
    int pan = (n_panels + nb_max - 1) / nb_max;
    for (int nb = nb_max; nthreads > 1 && nb <= n_panels; nb++) {
        const int p = (n_panels + nb - 1) / nb;
        if (m_blocks * ((n_panels + p - 1) / p) % nthreads == 0) {
            pan = p;
            break;
        }
    }
    *m_rows = rows;
    *n_pan = pan;
    *n_blocks = (n_panels + pan - 1) / pan;
    return m_blocks * *n_blocks;
}
#endif /* SQC_POOL_H */
