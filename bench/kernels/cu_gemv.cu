// Inlaid int4 GEMM for M = 1..16 (CUDA C++, compiled at run time with NVRTC by cu_gemv_kernel.py).
//
// y[M, N] = x[M, K] @ dequant(W), W 4-bit GPTQ with groups of G rows (G % 64 == 0), fp16 scales, packed zeros.
// Tensor cores, weight as the A operand: y^T = W^T x^T with mma.sync m16n8k16 (A = 16 output columns x 16 K,
// B = 16 K x 8 rows of x): one MMA per 16x16 weight tile for M <= 8 (MB = 8), two for M <= 16 (MB = 16).
// The weight is repacked once at load (cu_gemv_pack.py) so that one 32-bit word is exactly one lane's A fragment
// of one 16x16 tile and one 16-byte load is 4 consecutive K16 tiles (a "chunk", K = 64) of one N16 tile: the
// words of a warp's chunk are 512 contiguous bytes, loaded straight into registers (no shared memory, no shuffle).
// Lane (g = lane / 4, t = lane % 4), nibble i of its word = W[k0 + 2t + (i >> 2) + 8 * ((i >> 1) & 1),
// n0 + g + 8 * (i & 1)], so LOP3 with the fp16 magic 0x6400 yields the fragment's half2 pairs directly:
// bits 0-3 / 16-19 -> reg 0 (row g, k 2t, 2t+1), bits 4-7 / 20-23 (x16) -> reg 1 (row g+8), then >> 8 for regs 2, 3.
// (q - z) is exact in fp16 (HSUB2 / HFMA2 with 1/16); the scale is applied in fp32 to each chunk's MMA sum.
//
// Work split: a block = WN x WK <= 16 warps; warp (wn, wk) owns N16 tile strip * WN + wn and the chunks wk, wk + WK, ...
// of the block's K range; the CS blocks of a cluster (launch attribute) split K and reduce through distributed
// shared memory into cluster rank 0, which writes y (no global workspace, no counters: graph- and PDL-safe).
// x of the block's K range is staged once in shared memory in fragment order (one 8-byte LDS per B fragment).
// Each warp keeps RING chunks (words + scales + zeros) in flight in registers.
// PDL (gdc, runtime): 1 = launch dependents at start, wait after the first weight loads; 2 = wait after the first
// weight loads, launch dependents after the main loop; 3 = launch at start, wait first; 0 = off. Only weights
// (never written by a decode step) are read before the wait; x and y only after it.

typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ u32 lop3_and_or(u32 a, u32 b, u32 c) {
  u32 r;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

template <bool BF16>
__device__ __forceinline__ u32 hsub2(u32 a, u32 b) {
  u32 r;
  if (BF16) {
    asm("sub.rn.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  } else {
    asm("sub.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  }
  return r;
}

__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) {
  u32 r;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

template <bool BF16>
__device__ __forceinline__ void mma(float* d, const u32* a, u32 b0, u32 b1) {
  if (BF16) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ float h2f(u32 bits16) {
  float f;
  asm("{ .reg .f16 h; mov.b16 h, %1; cvt.f32.f16 %0, h; }" : "=f"(f) : "h"((unsigned short)bits16));
  return f;
}

template <bool BF16>
__device__ __forceinline__ unsigned short f2h(float f) {
  unsigned short r;
  if (BF16) {
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  } else {
    asm("{ .reg .f16 h; cvt.rn.f16.f32 h, %1; mov.b16 %0, h; }" : "=h"(r) : "f"(f));
  }
  return r;
}

__device__ __forceinline__ void gdc_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void gdc_launch() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }

// fp32 add into the shared memory of cluster rank 0 (or of this block)
template <bool CL>
__device__ __forceinline__ void red_add(float* p, float v) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  if (CL) {
    u32 r;
    asm volatile("mapa.shared::cluster.u32 %0, %1, 0;" : "=r"(r) : "r"(a));
    asm volatile("red.relaxed.cluster.shared::cluster.add.f32 [%0], %1;" ::"r"(r), "f"(v) : "memory");
  } else {
    asm volatile("red.shared.add.f32 [%0], %1;" ::"r"(a), "f"(v) : "memory");
  }
}

// MB: rows of x per MMA group (8: one MMA per tile, 16: two); RING: chunks in flight per warp; CL: K split over a
// cluster; SYM: zero 8 (no zero loads); PERM: act-order gather of x; BF16: bf16 x and y (fp16 otherwise).
#define CU_GEMV_PARAMS                                                                                        \
  const uint4 *__restrict__ wq, const u32 *__restrict__ scales, const u32 *__restrict__ qz,                  \
      const int *__restrict__ perm, const unsigned short *__restrict__ x, int ldx, unsigned short *__restrict__ y, \
      int ldy, int M, int N, int K, float inv_cpg, int zoff, int WN, int WK, int CS, int gdc
#define CU_GEMV_ARGS wq, scales, qz, perm, x, ldx, y, ldy, M, N, K, inv_cpg, zoff, WN, WK, CS, gdc

extern __shared__ __align__(16) unsigned char smem[];

__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
__device__ __forceinline__ void cp16(u32 dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp4(u32 dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
__device__ __forceinline__ uint4 lds128(u32 a) {
  uint4 r;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "r"(a));
  return r;
}
__device__ __forceinline__ u32 lds32(u32 a) {
  u32 r;
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(r) : "r"(a));
  return r;
}

// Per warp, a ring of RING stages in shared memory, filled by cp.async (each lane copies and later reads back only its
// own bytes, so no barrier): per stage the chunk's words (32 x 16 B), the lane's scale pair (32 x 4 B: repacked
// scales [G][N/16][8] = (s[n0 + g], s[n0 + g + 8])) and its zero byte's word (32 x 4 B: repacked zeros [G][N/16] of
// 8 bytes, byte g = z[n0 + g] | z[n0 + g + 8] << 4, stored values). RING - 1 chunks stay in flight per warp.
constexpr int STAGE_BYTES = 512 + 128 + 128;

template <int MB, int RING, bool CL, bool SYM, bool PERM, bool BF16>
__device__ __forceinline__ void cu_gemv_body(CU_GEMV_PARAMS) {
  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wn = warp % WN, wk = warp / WN;
  const int nthreads = blockDim.x, nwarps = nthreads >> 5;
  const int cr = CL ? (int)(blockIdx.x % CS) : 0;  // cluster rank (clusters run along x)
  const int strip = blockIdx.x / CS;
  const int NT = N >> 4, KC = K >> 6;
  const int nt = strip * WN + wn;
  const bool active = nt < NT;
  const int c0 = (int)(((long long)cr * KC) / CS), c1 = (int)(((long long)(cr + 1) * KC) / CS);
  const int nchunks = c1 - c0;
  const int maxchunks = (KC + CS - 1) / CS;
  // shared memory: the warps' rings, x of the block's K range in fragment order [chunk][k16 j][row m < M][t] x 8 B,
  // the reduction [WN*16][MB] fp32
  unsigned char* rings = smem;
  uint2* xs = reinterpret_cast<uint2*>(smem + (u64)nwarps * RING * STAGE_BYTES);
  float* red = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(xs) + (u64)maxchunks * 4 * M * 32);

  // diagnostics (benches only): 4 = stream the same bytes, skip the arithmetic; 8 = skip staging x (run 4 of
  // 2026-11-30 also had 16 = stage x before the first weight copies: no gain, removed)
  const bool read_only = gdc & 4, no_stage = gdc & 8;
  gdc &= 3;
  if (gdc == 1 || gdc == 3) gdc_launch();
  if (gdc == 3) gdc_wait();

  // this warp's chunks: c0 + wk + WK * i, i < L, copied in order
  const int L = active && wk < nchunks ? (nchunks - wk + WK - 1) / WK : 0;
  const uint4* wnext = wq + ((u64)nt * KC + c0 + wk) * 32 + lane;
  const int wstep = WK * 32;
  int cnext = c0 + wk;
  const u32* sbase = scales + (u64)nt * 8 + g;
  const u32* zbase = qz + (u64)nt * 2 + (g >> 2);
  const u32 ring0 = smem_addr(rings + (u64)warp * RING * STAGE_BYTES);
  auto issue = [&](int st) {
    // group = floor((c + 0.5) * 64 / group size): exact in fp32 for these sizes
    const int grp = (int)(((float)cnext + 0.5f) * inv_cpg);
    cp16(ring0 + st * 512 + lane * 16, wnext);
    cp4(ring0 + RING * 512 + st * 128 + lane * 4, sbase + (u64)grp * NT * 8);
    if (!SYM) cp4(ring0 + RING * 640 + st * 128 + lane * 4, zbase + (u64)grp * NT * 2);
    wnext += wstep;
    cnext += WK;
  };
#pragma unroll
  for (int st = 0; st < RING - 1; ++st) {
    if (st < L) issue(st);
    cp_commit();
  }

  // zero the reduction buffer (before the first cluster barrier: other ranks add into rank 0's)
  for (int i = tid; i < WN * 16 * MB; i += nthreads) red[i] = 0.f;
  if (gdc == 1 || gdc == 2) gdc_wait();

  // stage x[:, block's K range] (rows < M) in fragment order: unit (chunk, j, m) = 16 halves -> 4 entries (t);
  // XU units per thread in flight at once (their loads all issued before any store)
  if (!no_stage) {
    constexpr int XU = 4;
    const int units = nchunks * 4 * M;
    for (int u0 = tid; u0 < units; u0 += nthreads * XU) {
      u32 h[XU][8];  // halves k0 .. k0 + 15 as pairs
#pragma unroll
      for (int v = 0; v < XU; ++v) {
        const int u = u0 + v * nthreads;
        if (u < units) {
          const int m = u % M, cj = u / M;  // cj = chunk * 4 + j
          const int k0 = (c0 << 6) + (cj << 4);
          if (PERM) {
#pragma unroll
            for (int p = 0; p < 8; ++p) {
              const u32 lo = x[(u64)m * ldx + perm[k0 + 2 * p]];
              const u32 hi = x[(u64)m * ldx + perm[k0 + 2 * p + 1]];
              h[v][p] = lo | (hi << 16);
            }
          } else {
            const uint4* src = reinterpret_cast<const uint4*>(x + (u64)m * ldx + k0);
            const uint4 a = src[0], b = src[1];
            h[v][0] = a.x; h[v][1] = a.y; h[v][2] = a.z; h[v][3] = a.w;
            h[v][4] = b.x; h[v][5] = b.y; h[v][6] = b.z; h[v][7] = b.w;
          }
        }
      }
#pragma unroll
      for (int v = 0; v < XU; ++v) {
        const int u = u0 + v * nthreads;
        if (u < units) {
          uint2* dst = xs + (u64)u * 4;  // u = cj * M + m
#pragma unroll
          for (int tt = 0; tt < 4; ++tt) dst[tt] = make_uint2(h[v][tt], h[v][tt + 4]);  // (2t, 2t+1), (2t+8, 2t+9)
        }
      }
    }
  }
  __syncthreads();
  if (CL) cluster_arrive();  // rank 0's reduction buffer is zero (waited for before the adds)

  constexpr int NB = MB / 8;
  float acc[NB][4];
#pragma unroll
  for (int b = 0; b < NB; ++b)
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[b][r] = 0.f;

  const u32 MAGIC = BF16 ? 0x43004300u : 0x64006400u;
  const u32 SIXTEENTH = 0x2C002C00u;  // fp16 1/16
  const u32 zl_sym = BF16 ? 0x43084308u : 0x64086408u;  // 1024 + 8 (bf16: 128 + 8)
  const u32 zh_sym = 0xD480D480u;                       // fp16 -(64 + 8)
  const u32 zshift = 8 * (g & 3);
  bool rowok[NB];
#pragma unroll
  for (int b = 0; b < NB; ++b) rowok[b] = g + 8 * b < M;

  int rst = 0, wst = RING - 1;  // read and write stages
  for (int i = 0; i < L; ++i) {
    if (i + RING - 1 < L) issue(wst);
    cp_commit();
    cp_wait<RING - 1>();  // chunk i's copies (this lane's) have landed
    wst = wst + 1 == RING ? 0 : wst + 1;
    const uint4 wv = lds128(ring0 + rst * 512 + lane * 16);
    const u32 sv = lds32(ring0 + RING * 512 + rst * 128 + lane * 4);
    u32 zl, zh, zl8;
    if (SYM) {
      zl = zl_sym; zh = zh_sym; zl8 = zl_sym;
    } else {
      const u32 zb = lds32(ring0 + RING * 640 + rst * 128 + lane * 4) >> zshift;
      const u32 base = BF16 ? 0x4300u : 0x6400u;
      zl = (base + (zb & 15u) + zoff) * 0x10001u;
      zl8 = (base + ((zb >> 4) & 15u) + zoff) * 0x10001u;
      zh = BF16 ? 0u : hsub2<false>(0x63806380u, zl8);  // 960 - (1024 + z) = -(64 + z)
    }
    rst = rst + 1 == RING ? 0 : rst + 1;
    if (read_only) {
      acc[0][0] += __uint_as_float((wv.x ^ wv.y ^ wv.z ^ wv.w ^ sv ^ zl) & 0x3fffffffu);
      continue;
    }
    const int lc = wk + WK * i;  // chunk index within the block
    const uint2* xrow = xs + (u64)lc * 4 * M * 4 + g * 4 + t;
    float tmp[NB][4];
#pragma unroll
    for (int b = 0; b < NB; ++b)
#pragma unroll
      for (int r = 0; r < 4; ++r) tmp[b][r] = 0.f;
    const u32 words[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const u32 q = words[j];
      u32 a[4];
      if (BF16) {
        a[0] = hsub2<true>(lop3_and_or(q, 0x000f000fu, MAGIC), zl);
        a[1] = hsub2<true>(lop3_and_or(q >> 4, 0x000f000fu, MAGIC), zl8);
        a[2] = hsub2<true>(lop3_and_or(q >> 8, 0x000f000fu, MAGIC), zl);
        a[3] = hsub2<true>(lop3_and_or(q >> 12, 0x000f000fu, MAGIC), zl8);
      } else {
        const u32 q8 = q >> 8;
        a[0] = hsub2<false>(lop3_and_or(q, 0x000f000fu, MAGIC), zl);
        a[1] = hfma2(lop3_and_or(q, 0x00f000f0u, MAGIC), SIXTEENTH, zh);
        a[2] = hsub2<false>(lop3_and_or(q8, 0x000f000fu, MAGIC), zl);
        a[3] = hfma2(lop3_and_or(q8, 0x00f000f0u, MAGIC), SIXTEENTH, zh);
      }
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        const uint2 xb = rowok[b] ? xrow[(j * M + b * 8) * 4] : make_uint2(0u, 0u);
        mma<BF16>(tmp[b], a, xb.x, xb.y);
      }
    }
    const float s0 = h2f(sv & 0xffffu), s1 = h2f(sv >> 16);
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      acc[b][0] += tmp[b][0] * s0;
      acc[b][1] += tmp[b][1] * s0;
      acc[b][2] += tmp[b][2] * s1;
      acc[b][3] += tmp[b][3] * s1;
    }
  }
  cp_wait<0>();
  if (gdc == 2) gdc_launch();

  // reduction: C fragment (row = output column n0 + g (+8), col = x row 2t (+1) (+8 per MMA group))
  if (CL) cluster_wait();
  if (L > 0) {
#pragma unroll
    for (int b = 0; b < NB; ++b)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int m = 8 * b + 2 * t + (r & 1);
        const int col = wn * 16 + g + 8 * (r >> 1);
        if (m < M) red_add<CL>(red + col * MB + m, acc[b][r]);
      }
  }
  if (CL) {
    cluster_arrive();
    cluster_wait();
  } else {
    __syncthreads();
  }
  if (cr == 0) {
    const int nbase = strip * WN * 16;
    for (int i = tid; i < WN * 16 * M; i += nthreads) {
      const int m = i / (WN * 16), col = i % (WN * 16);
      const int n = nbase + col;
      if (n < N) y[(u64)m * ldy + n] = f2h<BF16>(red[col * MB + m]);
    }
  }
}

// cu_gemv_kernel.py compiles one instantiation per program: an extern "C" kernel named cu_gemv_inst, e.g.
// CU_GEMV_INSTANCE(8, 8, false, false, false, false)
#define CU_GEMV_INSTANCE(MB, RING, CL, SYM, PERM, BF16)                                  \
  extern "C" __global__ void __launch_bounds__(512) cu_gemv_inst(CU_GEMV_PARAMS) { \
    cu_gemv_body<MB, RING, CL, SYM, PERM, BF16>(CU_GEMV_ARGS);                          \
  }
