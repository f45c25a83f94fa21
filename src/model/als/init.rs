//! The model's initial factors: a deterministic random unit vector per entity, seeded by its id.
//!
//! Spark MLlib initialises each factor to a random direction (normal components, unit length);
//! so does this, from a seeded generator of its own. The model after a sequence of ratings is a
//! function of these vectors, and the checkpoint rebuilds the model from its rating log, so they
//! must never change by accident: the functions are pinned by a test of their exact outputs
//! (a change to them is a change to every model, and has to be made on purpose, with the test).
//!
//! May import: [`super::kernels`] (the dot product).

use super::kernels::dot;

/// SplitMix64's finaliser of `seed` and `stream`: a well-mixed 64-bit value.
pub fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Appends entity `id`'s initial factor of rank `k` to `factors`: `k` normal components (Box–
/// Muller from a uniform sequence seeded by `id ^ salt`), scaled to unit length. `salt` tells the
/// sides apart, so user 7 and movie 7 start in different directions.
pub fn push_initial_factor(id: u32, salt: u64, k: usize, factors: &mut Vec<f32>) {
    let mut s = (u64::from(id) ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut uniform = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        ((mix(s, 0) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let start = factors.len();
    for _ in 0..k {
        let (u1, u2) = (uniform(), uniform());
        factors.push(((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32);
    }
    let norm = dot(&factors[start..], &factors[start..]).sqrt().max(f32::MIN_POSITIVE);
    for f in &mut factors[start..] {
        *f /= norm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_pinned() {
        assert_eq!(mix(0, 0), PINNED_MIX[0]);
        assert_eq!(mix(42, 7), PINNED_MIX[1]);
        assert_eq!(mix(u64::MAX, 1 << 40), PINNED_MIX[2]);
    }

    #[test]
    fn initial_factors_are_pinned() {
        let mut f = Vec::new();
        push_initial_factor(1, 0x5553_4552, 4, &mut f);
        push_initial_factor(193_886, 0x4954_454d, 4, &mut f);
        let bits: Vec<u32> = f.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, PINNED_FACTORS);
        let norm: f32 = f[..4].iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-6);
    }

    const PINNED_MIX: [u64; 3] = [0, 6029533247520485195, 5229476615895845900];
    const PINNED_FACTORS: [u32; 8] =
        [1058661481, 1059709427, 3178094435, 1055000296, 1060152204, 3190935773, 3203158900, 3204948434];
}
