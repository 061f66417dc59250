// Row decode attention with rotary and the KV write inside, merged through a thread-block cluster (CUDA C++,
// compiled at run time with NVRTC by row_cluster.py). decode_row.row_rope_decode's contract for fp16, head_dim 128,
// one query head per KV head (REP 1), cache blocks of a multiple of 16 tokens; qkv fp16, or (sums) the qkv GEMV's
// fp32 sums read as fp16(sum) (decode_row's SUMS 1).
//
// Why: the Triton row kernel's partitions meet through global memory (partials, an acq_rel arrival atomic, the last
// arriver reloads 32 partials from L2): ~2.9 us a layer on the 7B batch-1 critical path
// (bench/results/decode-2026-12-01-s15-anatomy.md). Here the partitions of a (sequence, KV head) are the warps of one
// cluster of C CTAs (grid (C, kv_heads, batch), cluster (C, 1, 1); W warps a CTA; P = C * W partitions): each busy
// warp stores its partial (base-2 max, sum, unnormalised output) straight into cluster rank 0's shared memory
// (st.shared::cluster after mapa), arrives on the cluster barrier with release semantics and exits; rank 0 waits with
// acquire and merges from its own shared memory. No global workspace, no counters, one barrier phase on the path.
//
// Cluster barrier use: every thread arrives (relaxed) at the start; a thread waits on that first phase before its
// first remote store (PTX: a CTA's shared memory may be accessed only once the CTA runs; the phase completes when
// every non-exited thread of the cluster arrived, i.e. all CTAs started). Busy warps then arrive (release) on the
// second phase and exit; rank 0's threads wait (acquire) for it. Exited threads are not waited for (PTX ISA,
// barrier.cluster), so idle warps of ranks > 0 just exit, and no CTA's shared memory is read after it exits (only
// rank 0's is read, by rank 0, which exits last).
// ROW_MBAR 1 (the faster transport): rank 0's thread 0 initialises an mbarrier and expects the bytes of every busy
// partition of ranks > 0 before its phase-1 arrival (release); those partitions wait on phase 1, send their partials
// with st.async ... mbarrier::complete_tx::bytes into rank 0's shared memory and exit; rank 0's own partitions store
// locally (a CTA barrier); rank 0 waits on the mbarrier (try_wait, acquire) and merges. No second cluster phase and no
// release fence on the senders.
//
// Status (bench/results/decode-2026-12-01-s18-cluster.md, H200): correct (384 cases: <= 4.7e-4 of the reference's
// max, KV write bit for bit), but no step gain: the 7B int4 batch-1 step with ROW_MBAR 1, ROW_LOOKAHEAD 0 at 8 x 4
// is 0.9998x the shipped Triton row kernel's (4/8 rounds lower; the control 0.9998x, 6/8); the barrier transport and
// other shapes are slower (+1 % to +15 %). Alone under PDL the kernel is 4.45 us against 4.92 us. Bench-only.
//
// Work of a warp: 16-token tiles part, part + P, ...; lane = (h, j): tokens 2i + h (i < 8) of the tile, dims
// 8j .. 8j + 7 (one 16-byte load a row). Scores: 8 partial dot products a lane, reduced over the 16 lanes of a half
// by a butterfly that halves the values each step (4 + 2 + 1 + 1 shuffles): lane (h, j) ends with token 2 (j >> 1) + h.
// The online softmax runs in base 2 (q pre-scaled by scale * log2 e). The two halves combine at the end (xor 16).
//
// PDL (gdc, runtime, kernels.pdl's modes): 1 / 3 = launch dependents at the start, 2 = after the tiles; 0 = off.
// Before griddepcontrol.wait: the context length, the first tile's block-table entry and its cache rows of earlier
// steps (rows < ctx - 1: never written by this step). After it: qkv, cos / sin, the slot, the cache write. The owner
// partition (tile (ctx - 1) / 16 modulo P) rotates the new token's k, writes rope(k), v at its slot (-1: none) and
// puts that token into its last tile from registers (its cache row is never read here). Partition 0 always waits, so
// the kernel completes after its predecessor; a partition with no tile waits for nothing and stores nothing.

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define MAX_PARTS 64
#ifndef ROW_MINB
#define ROW_MINB 1  // __launch_bounds__'s minimum blocks of 256 threads an SM (2: <= 128 registers; benches vary it)
#endif
#ifndef ROW_MBAR
#define ROW_MBAR 0  // 1: partials sent with st.async to rank 0, which waits on its mbarrier (no second cluster phase)
#endif
#ifndef ROW_LOOKAHEAD
#define ROW_LOOKAHEAD 1  // 1: two register buffers, the next tile in flight; 0: one (fewer registers)
#endif
#define HD 128
#define INFINITY __int_as_float(0x7f800000)

__device__ __forceinline__ void gdc_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void gdc_launch() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void cl_arrive_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}
__device__ __forceinline__ void cl_arrive_release() {
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
}
__device__ __forceinline__ void cl_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }

__device__ __forceinline__ u32 smem_u32(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
// the address of the same shared variable in cluster rank 0
__device__ __forceinline__ u32 rank0(u32 a) {
  u32 r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, 0;" : "=r"(r) : "r"(a));
  return r;
}
__device__ __forceinline__ void st_cluster_v4(u32 a, float x, float y, float z, float w) {
  asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};" ::"r"(a), "f"(x), "f"(y), "f"(z), "f"(w)
               : "memory");
}
__device__ __forceinline__ void st_cluster_f32(u32 a, float x) {
  asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(a), "f"(x) : "memory");
}

// mbarrier transport (ROW_MBAR): st.async writes into rank 0's shared memory and completes bytes on its mbarrier
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
__device__ __forceinline__ void mbar_expect(u32 bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait0(u32 bar) {
  u32 done = 0;
  while (!done) {
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done) : "r"(bar) : "memory");
  }
}
__device__ __forceinline__ void st_async_v4(u32 a, float x, float y, float z, float w, u32 bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, [%5];"
               ::"r"(a), "f"(x), "f"(y), "f"(z), "f"(w), "r"(bar) : "memory");
}
__device__ __forceinline__ void st_async_v2(u32 a, float x, float y, u32 bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [%0], {%1, %2}, [%3];"
               ::"r"(a), "f"(x), "f"(y), "r"(bar) : "memory");
}

__device__ __forceinline__ float h2f(unsigned short b) {
  float f;
  asm("{ .reg .f16 h; mov.b16 h, %1; cvt.f32.f16 %0, h; }" : "=f"(f) : "h"(b));
  return f;
}
__device__ __forceinline__ unsigned short f2h(float f) {
  unsigned short r;
  asm("{ .reg .f16 h; cvt.rn.f16.f32 h, %1; mov.b16 %0, h; }" : "=h"(r) : "f"(f));
  return r;
}
__device__ __forceinline__ float ex2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
// the 8 halves of a 16-byte row piece as floats
__device__ __forceinline__ void unpack8(uint4 v, float* f) {
  const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    f[2 * e] = h2f((unsigned short)(w[e] & 0xffffu));
    f[2 * e + 1] = h2f((unsigned short)(w[e] >> 16));
  }
}
__device__ __forceinline__ uint4 pack8(const unsigned short* h) {
  return make_uint4(h[0] | ((u32)h[1] << 16), h[2] | ((u32)h[3] << 16), h[4] | ((u32)h[5] << 16),
                    h[6] | ((u32)h[7] << 16));
}
// 8 consecutive values of qkv as fp16 bits: fp16 storage, or (sums) the qkv GEMV's fp32 sums rounded to fp16
__device__ __forceinline__ uint4 load8(const void* base, i64 at, int sums) {
  if (!sums) return *reinterpret_cast<const uint4*>(reinterpret_cast<const unsigned short*>(base) + at);
  const float4 a = *reinterpret_cast<const float4*>(reinterpret_cast<const float*>(base) + at);
  const float4 b = *reinterpret_cast<const float4*>(reinterpret_cast<const float*>(base) + at + 4);
  const unsigned short hv[8] = {f2h(a.x), f2h(a.y), f2h(a.z), f2h(a.w), f2h(b.x), f2h(b.y), f2h(b.z), f2h(b.w)};
  return pack8(hv);
}

// rope_cache's rounding: fp16(fp16(x * cos) + fp16(rot * sin)), rot = -x[d + 64] (d < 64) or x[d - 64]; no FMA
__device__ __forceinline__ void rope8(uint4 x, uint4 partner, const float* c, const float* s, bool low,
                                      unsigned short* out) {
  float xf[8], pf[8];
  unpack8(x, xf);
  unpack8(partner, pf);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const float rot = low ? -pf[e] : pf[e];
    const float a = h2f(f2h(__fmul_rn(xf[e], c[e])));
    const float b = h2f(f2h(__fmul_rn(rot, s[e])));
    out[e] = f2h(__fadd_rn(a, b));
  }
}

// this lane's K / V pieces of tile t (rows 2i + h, dims 8j ..): rows of earlier steps only (below old_end), else 0
__device__ __forceinline__ void load_tile(int t, int old_end, const int* bt, int block_size, i64 sb, i64 sk,
                                          const unsigned short* kp, const unsigned short* vp, int h, uint4 (&kk)[8],
                                          uint4 (&vv)[8]) {
  const int t0 = t << 4;
  const int blk = t0 < old_end ? bt[t0 / block_size] : 0;
  const i64 base = (i64)blk * sb + (i64)(t0 % block_size) * sk;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = 2 * i + h;
    if (t0 + r < old_end) {
      kk[i] = *reinterpret_cast<const uint4*>(kp + base + r * sk);
      vv[i] = *reinterpret_cast<const uint4*>(vp + base + r * sk);
    } else {
      kk[i] = make_uint4(0u, 0u, 0u, 0u);
      vv[i] = make_uint4(0u, 0u, 0u, 0u);
    }
  }
}

// one 16-token tile into the online softmax (m, l, acc: this lane's); the owner's last tile (t == new_tile) takes
// this step's token (row new_r) from registers
__device__ __forceinline__ void tile_step(int t, int new_tile, int new_r, int ctx, int h, int j, const float* q,
                                          uint4 k_new, uint4 v_new, uint4 (&kc)[8], uint4 (&vc)[8], float& m_i,
                                          float& l_i, float* acc) {
  const bool sub = t == new_tile && (new_r & 1) == h;
#pragma unroll
  for (int i = 0; i < 8; ++i) {  // selects, not a branch on i (keeps the arrays in registers)
    const bool take = sub && i == (new_r >> 1);
    kc[i] = take ? k_new : kc[i];
    vc[i] = take ? v_new : vc[i];
  }
  float part_dot[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    float kf[8];
    unpack8(kc[i], kf);
    float a = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) a = fmaf(q[e], kf[e], a);
    part_dot[i] = a;
  }
  // butterfly reduce-scatter over the half's 16 lanes: lane j ends with row i = j >> 1
  const bool b3 = j & 8, b2 = j & 4, b1 = j & 2;
  float v4[4], v2[2], sc;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float send = b3 ? part_dot[k] : part_dot[k + 4];
    const float keep = b3 ? part_dot[k + 4] : part_dot[k];
    v4[k] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
  }
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const float send = b2 ? v4[k] : v4[k + 2];
    const float keep = b2 ? v4[k + 2] : v4[k];
    v2[k] = keep + __shfl_xor_sync(0xffffffffu, send, 4);
  }
  {
    const float send = b1 ? v2[0] : v2[1];
    const float keep = b1 ? v2[1] : v2[0];
    sc = keep + __shfl_xor_sync(0xffffffffu, send, 2);
  }
  sc += __shfl_xor_sync(0xffffffffu, sc, 1);
  const int tok = (t << 4) + 2 * (j >> 1) + h;
  sc = tok < ctx ? sc : -INFINITY;
  float mx = fmaxf(sc, __shfl_xor_sync(0xffffffffu, sc, 2));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
  const float m_new = fmaxf(m_i, mx);
  const float m_safe = m_new == -INFINITY ? 0.f : m_new;
  const float alpha = ex2(m_i - m_safe);
  const float p = ex2(sc - m_safe);
  float ps = 0.f;
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[e] *= alpha;
  const int src_base = h << 4;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float pi = __shfl_sync(0xffffffffu, p, src_base + 2 * i);
    ps += pi;
    float vf[8];
    unpack8(vc[i], vf);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = fmaf(pi, vf[e], acc[e]);
  }
  l_i = l_i * alpha + ps;
  m_i = m_new;
}

struct Partials {
  float acc[MAX_PARTS][HD];
  float m[MAX_PARTS];
  float l[MAX_PARTS];
  float2 ml[MAX_PARTS];  // ROW_MBAR: (m, l) a partition, one 8-byte st.async
  unsigned long long bar;  // ROW_MBAR: rank 0's transaction barrier
};
#define PART_BYTES (HD * 4 + 8)  // one partition's partial as st.async sends it

extern "C" __global__ void __launch_bounds__(256, ROW_MINB) row_cluster(
    const void* __restrict__ qkv, int stride_qt, int sums, const unsigned short* __restrict__ cos_,
    const unsigned short* __restrict__ sin_, int stride_cs, const void* __restrict__ slots, int slot64,
    unsigned short* k_cache, unsigned short* v_cache, const int* __restrict__ tables, int stride_bt,
    const int* __restrict__ ctx_lens, unsigned short* __restrict__ out, float qscale, int heads, int kv_heads,
    int block_size, int gdc, int diag) {
  __shared__ __align__(16) Partials sh;
#if ROW_MBAR
  // rank 0's thread 0: the mbarrier (one arrival: its own expect_tx of every busy partition's bytes), made visible to
  // the cluster by the release of its phase-1 arrival; the senders wait on phase 1 before their first st.async
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    const int c0 = ctx_lens[blockIdx.z];
    const int nb = min((c0 + 15) >> 4, (int)(gridDim.x * (blockDim.x >> 5)));
    const u32 bar = smem_u32(&sh.bar);
    mbar_init(bar, 1);
    if (nb > 1) mbar_expect(bar, (u32)(nb - min(nb, (int)(blockDim.x >> 5))) * PART_BYTES);  // (0: completes now)
  }
  cl_arrive_release();
#else
  cl_arrive_relaxed();  // phase 1: this CTA runs (module comment)
#endif
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, W = blockDim.x >> 5;
  const int rank = blockIdx.x, C = gridDim.x, kvh = blockIdx.y, s = blockIdx.z;
  const int P = C * W, part = rank * W + warp;
  const int h = lane >> 4, j = lane & 15;
  if (gdc == 1 || gdc == 3) gdc_launch();
  const int ctx = ctx_lens[s];  // staged step metadata: read before the wait (decode_row's exception)
  // diag (benches only; 0 in use): 1 = no tile work (no loads, no math: partials of nothing), 2 = no merge (every
  // busy partition writes its own partial as the output and exits: no barrier wait, no DSMEM)
  const int n_tiles = (ctx + 15) >> 4;
  const int work_tiles = (diag & 1) ? 0 : n_tiles;
  const int n_busy = min(n_tiles, P);
  const bool busy = part < n_tiles || part == 0;
  const i64 sk = (i64)kv_heads * HD;         // cache row stride (contiguous [blocks, block_size, kv_heads, 128])
  const i64 sb = (i64)block_size * sk;       // cache block stride
  const int* bt = tables + (i64)s * stride_bt;
  const int old_end = ctx - 1;               // rows below come from the cache; row ctx - 1 from qkv
  float m_i = -INFINITY, l_i = 0.f, acc[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[e] = 0.f;

  if (busy) {
    uint4 ka[8], va[8];
    const unsigned short* kp = k_cache + (i64)kvh * HD + 8 * j;  // this lane's dims of head kvh
    const unsigned short* vp = v_cache + (i64)kvh * HD + 8 * j;
    load_tile(part, (diag & 1) ? 0 : old_end, bt, block_size, sb, sk, kp, vp, h, ka, va);  // before the wait: rows of earlier steps only
    if (gdc) gdc_wait();
    // q of head kvh (REP 1), rotated: this lane's 8 dims and their rotate_half partners
    const int d0 = 8 * j, dp = j < 8 ? d0 + 64 : d0 - 64;
    const i64 qrow = (i64)s * stride_qt;  // element offsets into qkv (fp16, or fp32 sums)
    const uint4 qx = load8(qkv, qrow + (i64)kvh * HD + d0, sums);
    const uint4 qp = load8(qkv, qrow + (i64)kvh * HD + dp, sums);
    float cf[8], sf[8];
    unpack8(*reinterpret_cast<const uint4*>(cos_ + (i64)s * stride_cs + d0), cf);
    unpack8(*reinterpret_cast<const uint4*>(sin_ + (i64)s * stride_cs + d0), sf);
    const int new_tile = ctx > 0 ? (ctx - 1) >> 4 : -1;
    const bool owner = ctx > 0 && part == new_tile % P;
    uint4 k_new = make_uint4(0u, 0u, 0u, 0u), v_new = k_new;
    if (owner) {
      const i64 krow = qrow + (i64)(heads + kvh) * HD;
      const uint4 kx = load8(qkv, krow + d0, sums);
      const uint4 kp = load8(qkv, krow + dp, sums);
      v_new = load8(qkv, qrow + (i64)(heads + kv_heads + kvh) * HD + d0, sums);
      const i64 slot = slot64 ? reinterpret_cast<const i64*>(slots)[s] : (i64)reinterpret_cast<const int*>(slots)[s];
      unsigned short kr[8];
      rope8(kx, kp, cf, sf, j < 8, kr);
      k_new = pack8(kr);
      if (slot >= 0) {  // lanes of half 0 write rope(k), half 1 v (16 bytes each)
        const i64 at = (slot / block_size) * sb + (slot % block_size) * sk + (i64)kvh * HD + d0;
        if (h == 0) *reinterpret_cast<uint4*>(k_cache + at) = k_new;
        else *reinterpret_cast<uint4*>(v_cache + at) = v_new;
      }
    }
    float q[8];
    {
      unsigned short qr[8];
      rope8(qx, qp, cf, sf, j < 8, qr);
#pragma unroll
      for (int e = 0; e < 8; ++e) q[e] = h2f(qr[e]) * qscale;  // qscale = scale * log2(e)
    }
    const int new_r = (ctx - 1) & 15;
#if ROW_LOOKAHEAD
    uint4 kb[8], vb[8];
    for (int t = part; t < work_tiles; t += 2 * P) {  // two register buffers: the next tile in flight
      load_tile(t + P, old_end, bt, block_size, sb, sk, kp, vp, h, kb, vb);
      tile_step(t, new_tile, new_r, ctx, h, j, q, k_new, v_new, ka, va, m_i, l_i, acc);
      if (t + P >= n_tiles) break;
      load_tile(t + 2 * P, old_end, bt, block_size, sb, sk, kp, vp, h, ka, va);
      tile_step(t + P, new_tile, new_r, ctx, h, j, q, k_new, v_new, kb, vb, m_i, l_i, acc);
    }
#else
    for (int t = part; t < work_tiles; t += P) {  // one buffer: each later tile loaded, then used
      if (t != part) load_tile(t, old_end, bt, block_size, sb, sk, kp, vp, h, ka, va);
      tile_step(t, new_tile, new_r, ctx, h, j, q, k_new, v_new, ka, va, m_i, l_i, acc);
    }
#endif
    // the two halves (token parities) together: lanes of both halves hold the partition's partial afterwards
    l_i += __shfl_xor_sync(0xffffffffu, l_i, 16);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] += __shfl_xor_sync(0xffffffffu, acc[e], 16);
  }
  if (gdc == 2) gdc_launch();
  unsigned short* orow = out + ((i64)s * heads + kvh) * HD;  // REP 1: head kvh
  if (n_busy <= 1 || (diag & 2)) {  // one partition covers the context (or none: zeros); no merge
    if ((part == 0 || ((diag & 2) && busy)) && h == 0) {
      const float inv = l_i > 0.f ? 1.f / l_i : 1.f;
      unsigned short o[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = f2h(acc[e] * inv);
      *reinterpret_cast<uint4*>(orow + 8 * j) = pack8(o);
    }
    return;
  }
  if (rank != 0 && !busy) return;  // exited threads are not waited for
#if ROW_MBAR
  cl_wait();  // phase 1: every CTA runs and rank 0's mbarrier is initialised
  const u32 bar0 = rank0(smem_u32(&sh.bar));
  if (busy && h == 0) {
    if (rank != 0) {  // the bytes land in rank 0 (which waits for them) whether or not this CTA still runs
      const u32 a = rank0(smem_u32(&sh.acc[part][8 * j]));
      st_async_v4(a, acc[0], acc[1], acc[2], acc[3], bar0);
      st_async_v4(a + 16, acc[4], acc[5], acc[6], acc[7], bar0);
      if (j == 0) st_async_v2(rank0(smem_u32(&sh.ml[part])), m_i, l_i, bar0);
    } else {  // rank 0's own partitions: plain shared stores (not counted by the mbarrier), then a CTA barrier
      *reinterpret_cast<float4*>(&sh.acc[part][8 * j]) = make_float4(acc[0], acc[1], acc[2], acc[3]);
      *reinterpret_cast<float4*>(&sh.acc[part][8 * j + 4]) = make_float4(acc[4], acc[5], acc[6], acc[7]);
      if (j == 0) sh.ml[part] = make_float2(m_i, l_i);
    }
  }
  if (rank != 0) return;
  if (gdc && !busy) gdc_wait();  // rank 0's idle warps store the output too
  __syncthreads();
  mbar_wait0(smem_u32(&sh.bar));
  for (int d = threadIdx.x; d < HD; d += blockDim.x) {
    float mm = -INFINITY;
#pragma unroll 8
    for (int p = 0; p < n_busy; ++p) mm = fmaxf(mm, sh.ml[p].x);
    mm = mm == -INFINITY ? 0.f : mm;
    float tot = 0.f, o = 0.f;
#pragma unroll 8
    for (int p = 0; p < n_busy; ++p) {
      const float2 ml = sh.ml[p];
      const float w = ex2(ml.x - mm);
      tot = fmaf(ml.y, w, tot);
      o = fmaf(sh.acc[p][d], w, o);
    }
    orow[d] = f2h(o / (tot > 0.f ? tot : 1.f));
  }
  return;
#endif
  if (busy) {
    cl_wait();  // phase 1: every CTA of the cluster runs
    if (h == 0) {
      const u32 a = rank0(smem_u32(&sh.acc[part][8 * j]));
      st_cluster_v4(a, acc[0], acc[1], acc[2], acc[3]);
      st_cluster_v4(a + 16, acc[4], acc[5], acc[6], acc[7]);
      if (j == 0) st_cluster_f32(rank0(smem_u32(&sh.m[part])), m_i);
      if (j == 1) st_cluster_f32(rank0(smem_u32(&sh.l[part])), l_i);
    }
    cl_arrive_release();  // phase 2
    if (rank != 0) return;
  } else {  // rank 0's idle warps join both phases (they merge below; their stores after the PDL wait too)
    if (gdc) gdc_wait();
    cl_wait();
    cl_arrive_release();
  }
  cl_wait();  // phase 2: every busy partition's partial is in this CTA's shared memory
  // merge n_busy partials: thread d of rank 0 for dim d (stride blockDim)
  for (int d = threadIdx.x; d < HD; d += blockDim.x) {
    float mm = -INFINITY;
#pragma unroll 8
    for (int p = 0; p < n_busy; ++p) mm = fmaxf(mm, sh.m[p]);
    mm = mm == -INFINITY ? 0.f : mm;
    float tot = 0.f, o = 0.f;
#pragma unroll 8
    for (int p = 0; p < n_busy; ++p) {
      const float w = ex2(sh.m[p] - mm);
      tot = fmaf(sh.l[p], w, tot);
      o = fmaf(sh.acc[p][d], w, o);
    }
    orow[d] = f2h(o / (tot > 0.f ? tot : 1.f));
  }
}
