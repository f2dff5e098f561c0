//! Many Merkle node hashes at once: SHA-256 computed lane-wise over 8 or 16 independent
//! `"VES_NODE_V1" || left || right` messages.
//!
//! NB: exists only for speed (the contract wants a 10,000-leaf root in ≤ 3 ms on CPUs without
//! SHA extensions). A single SHA-256 is a serial chain of 64 rounds, but independent messages
//! can share every instruction, one message per 32-bit SIMD lane. The lane arithmetic is written
//! on plain `[u32; N]` arrays and left to the compiler to vectorize: 16 lanes with AVX-512F,
//! 8 with AVX2; elsewhere (and in debug builds) the caller falls back to `sha2`. There are no
//! intrinsics; the only `unsafe` is calling the AVX builds after runtime detection. The kernels
//! are checked bit for bit against `sha2` by the tests below in every build, and through
//! `merkle_root` by the Merkle property tests under `cargo test --release`.

use crate::Hash32;
use crate::domain;

/// A 75-byte node message pads to exactly two 64-byte blocks.
const MESSAGE_LEN: usize = 11 + 32 + 32;
const PADDED_LEN: usize = 128;
const _: () = assert!(domain::NODE.len() == 11);

/// Writes `parents[i] = node_hash(nodes[2i], nodes[2i + 1])` for a prefix of `parents` and
/// returns its length (all of `parents`, or as many as SIMD lanes cover profitably, or 0
/// without wide vectors); the caller hashes the rest. `nodes` must hold at least
/// `2 * parents.len()` hashes.
pub(crate) fn hash_pairs(nodes: &[Hash32], parents: &mut [Hash32]) -> usize {
    assert!(nodes.len() >= 2 * parents.len());
    // NB: unoptimized, the lane code is two orders of magnitude slower than `sha2`, which the
    // workspace optimizes even in dev builds; debug builds (tests of dependent crates) use `sha2`.
    // This module's own tests call the kernels directly, so they are checked in every build.
    if cfg!(debug_assertions) {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, the only requirement of `hash_pairs_avx512`.
            return unsafe { hash_pairs_avx512(nodes, parents) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, the only requirement of `hash_pairs_avx2`.
            return unsafe { hash_pairs_avx2(nodes, parents) };
        }
    }
    // NB: without wide vectors the lane code is no faster than `sha2`, so leave it all to the
    // caller.
    0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn hash_pairs_avx512(nodes: &[Hash32], parents: &mut [Hash32]) -> usize {
    hash_pairs_lanes::<16>(nodes, parents)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hash_pairs_avx2(nodes: &[Hash32], parents: &mut [Hash32]) -> usize {
    hash_pairs_lanes::<8>(nodes, parents)
}

#[inline(always)]
fn hash_pairs_lanes<const N: usize>(nodes: &[Hash32], parents: &mut [Hash32]) -> usize {
    let full = parents.len() / N * N;
    for (out, group) in parents[..full].chunks_exact_mut(N).zip(nodes.chunks_exact(2 * N)) {
        node_hashes::<N>(group, out);
    }
    let rest = parents.len() - full;
    // Below a quarter of the lanes, hashing the rest one by one is cheaper than a group.
    if rest < N / 4 {
        return full;
    }
    let mut group = [[0u8; 32]; 2 * MAX_LANES];
    group[..2 * rest].copy_from_slice(&nodes[2 * full..2 * (full + rest)]);
    let mut out = [[0u8; 32]; MAX_LANES];
    node_hashes::<N>(&group[..2 * N], &mut out[..N]);
    parents[full..].copy_from_slice(&out[..rest]);
    parents.len()
}

/// The widest lane count used.
const MAX_LANES: usize = 16;

/// `out[i] = node_hash(group[2i], group[2i + 1])` for `N` lanes.
#[inline(always)]
fn node_hashes<const N: usize>(group: &[Hash32], out: &mut [Hash32]) {
    // Message words, transposed so that word t of every lane is one vector.
    let mut words = [[0u32; N]; PADDED_LEN / 4];
    for lane in 0..N {
        let mut m = [0u8; PADDED_LEN];
        m[..11].copy_from_slice(domain::NODE);
        m[11..43].copy_from_slice(&group[2 * lane]);
        m[43..MESSAGE_LEN].copy_from_slice(&group[2 * lane + 1]);
        m[MESSAGE_LEN] = 0x80;
        m[PADDED_LEN - 8..].copy_from_slice(&((MESSAGE_LEN as u64) * 8).to_be_bytes());
        for (t, chunk) in m.chunks_exact(4).enumerate() {
            words[t][lane] = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
    }
    let mut state = H0.map(|x| [x; N]);
    for block in words.chunks_exact(16) {
        let block = block.try_into().expect("16 words");
        compress(&mut state, block);
    }

    for (lane, digest) in out.iter_mut().enumerate() {
        for (k, word) in state.iter().enumerate() {
            digest[4 * k..4 * k + 4].copy_from_slice(&word[lane].to_be_bytes());
        }
    }
}

#[inline(always)]
fn zip<const N: usize>(a: [u32; N], b: [u32; N], f: impl Fn(u32, u32) -> u32) -> [u32; N] {
    let mut r = [0; N];
    for i in 0..N {
        r[i] = f(a[i], b[i]);
    }
    r
}

#[inline(always)]
fn add<const N: usize>(a: [u32; N], b: [u32; N]) -> [u32; N] {
    zip(a, b, u32::wrapping_add)
}

#[inline(always)]
fn xor3<const N: usize>(a: [u32; N], b: [u32; N], c: [u32; N]) -> [u32; N] {
    zip(zip(a, b, |x, y| x ^ y), c, |x, y| x ^ y)
}

#[inline(always)]
fn rotr<const R: u32, const N: usize>(a: [u32; N]) -> [u32; N] {
    a.map(|x| x.rotate_right(R))
}

#[inline(always)]
fn shr<const R: u32, const N: usize>(a: [u32; N]) -> [u32; N] {
    a.map(|x| x >> R)
}

/// One SHA-256 compression of a 16-word block, lane-wise (FIPS 180-4 §6.2.2).
#[inline(always)]
fn compress<const N: usize>(state: &mut [[u32; N]; 8], block: &[[u32; N]; 16]) {
    let mut w = *block;
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for t in 0..64 {
        if t >= 16 {
            let w15 = w[(t + 1) % 16];
            let w2 = w[(t + 14) % 16];
            let s0 = xor3(rotr::<7, N>(w15), rotr::<18, N>(w15), shr::<3, N>(w15));
            let s1 = xor3(rotr::<17, N>(w2), rotr::<19, N>(w2), shr::<10, N>(w2));
            w[t % 16] = add(add(w[t % 16], s0), add(w[(t + 9) % 16], s1));
        }
        let big_s1 = xor3(rotr::<6, N>(e), rotr::<11, N>(e), rotr::<25, N>(e));
        let ch = zip(zip(e, f, |e, f| e & f), zip(e, g, |e, g| !e & g), |x, y| x ^ y);
        let t1 = add(add(add(h, big_s1), add(ch, [K[t]; N])), w[t % 16]);
        let big_s0 = xor3(rotr::<2, N>(a), rotr::<13, N>(a), rotr::<22, N>(a));
        let maj = zip(zip(a, b, |a, b| a & b), zip(c, zip(a, b, |a, b| a ^ b), |c, x| c & x), |x, y| x ^ y);
        let t2 = add(big_s0, maj);
        h = g;
        g = f;
        f = e;
        e = add(d, t1);
        d = c;
        c = b;
        b = a;
        a = add(t1, t2);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = add(*s, v);
    }
}

/// FIPS 180-4 §5.3.3.
const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// FIPS 180-4 §4.2.2.
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::node_hash;

    /// 64 distinct, irregular hashes (so that a lane mix-up cannot go unnoticed).
    fn nodes() -> Vec<Hash32> {
        (0..64u32).map(|i| std::array::from_fn(|j| (i.wrapping_mul(2654435761) >> (j % 24)) as u8 ^ j as u8)).collect()
    }

    fn expected(nodes: &[Hash32]) -> Vec<Hash32> {
        nodes.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect()
    }

    type Kernel = fn(&[Hash32], &mut [Hash32]) -> usize;

    fn check(kernel: Kernel, lanes: usize) {
        let nodes = nodes();
        for parents_len in [0, 1, lanes / 4, lanes - 1, lanes, lanes + 3, 2 * lanes, 32] {
            let mut parents = vec![[0; 32]; parents_len];
            let done = kernel(&nodes, &mut parents);
            let full = parents_len / lanes * lanes;
            assert!(done == full || done == parents_len, "{done} of {parents_len}");
            assert_eq!(parents[..done], expected(&nodes[..2 * done])[..], "{lanes} lanes");
        }
    }

    #[test]
    fn lane_code_equals_the_sha2_crate_at_every_width() {
        check(hash_pairs_lanes::<8>, 8);
        check(hash_pairs_lanes::<8>, 8);
        check(hash_pairs_lanes::<16>, 16);
        check(hash_pairs_lanes::<16>, 16);
    }

    #[test]
    fn dispatched_hashes_equal_the_sha2_crate() {
        let nodes = nodes();
        let mut parents = vec![[0; 32]; 32];
        let done = hash_pairs(&nodes, &mut parents);
        assert!(done == 0 || done == 32, "{done}");
        assert_eq!(done == 0, cfg!(debug_assertions) || !cfg!(target_arch = "x86_64"));
        let mut parents = vec![[0; 32]; 5];
        let done = hash_pairs(&nodes, &mut parents);
        assert!(done <= 5, "{done}");
        assert_eq!(parents[..done], expected(&nodes)[..done]);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_builds_equal_the_sha2_crate_where_the_cpu_has_them() {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 detected.
            check(|n, p| unsafe { hash_pairs_avx2(n, p) }, 8);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F detected.
            check(|n, p| unsafe { hash_pairs_avx512(n, p) }, 16);
        }
    }
}
