//! The per-side storage of the ALS model: ids, factors, sufficient statistics and rating lists.
//!
//! One [`Side`] holds one side of the factorisation (users or items) in flat arrays indexed by a
//! dense entity index, so a rating touches one place per array and a prefetch can run ahead of
//! it; [`Shape`] is the layout of an entity's statistics for a rank, [`Rated`] its packed rating
//! list. No arithmetic beyond the layout lives here (that is [`super::kernels`]).
//!
//! May import: its parent [`super`] (the model), `crate::core`.

use ndarray::ArrayView2;
use rustc_hash::FxHashMap;

use super::kernels::{prefetch, prefetch_floats};

/// One side of the factorisation (users or items).
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub(super) index: IdIndex,
    pub(super) ids: Vec<u32>,
    /// Factors, row-major n × k.
    pub(super) factors: Vec<f32>,
    /// Per entity, [`Shape::stride`] floats: the right-hand side b (k), the residual
    /// b − (G + λnI)x of the current factor (k), and the Gram matrix G in [`Shape`]'s layout.
    pub(super) stats: Vec<f32>,
    /// Ratings per entity, in arrival order.
    pub(super) ratings: Vec<Rated>,
}

/// One entity's ratings in arrival order, 4 bytes each: the other side's index in the low
/// [`INDEX_BITS`] bits, the rating in half stars (1–10) above them. One array per entity, so
/// recording a rating touches one place in memory per side.
#[derive(Debug, Clone, Default)]
pub struct Rated {
    pub(super) packed: Vec<u32>,
}

/// Bits of a rating entry that hold the other side's index: up to 268 M users or movies.
pub(super) const INDEX_BITS: u32 = 28;
pub(super) const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

impl Rated {
    /// Ratings.
    #[inline]
    pub fn len(&self) -> usize {
        self.packed.len()
    }

    /// None yet.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// The other side's indices.
    pub fn others(&self) -> impl Iterator<Item = u32> + '_ {
        self.packed.iter().map(|&p| Rated::unpack(p).0)
    }

    /// (other side's index, rating) pairs.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.packed.iter().map(|&p| Rated::unpack(p))
    }

    /// One packed entry as (other side's index, rating).
    #[inline(always)]
    pub(super) fn unpack(p: u32) -> (u32, f32) {
        (p & INDEX_MASK, (p >> INDEX_BITS) as f32 / 2.0)
    }

    #[inline]
    pub(super) fn push(&mut self, other: u32, rating: f32) {
        // MovieLens's scale: 0.5–5.0 in half steps (the processor rejects anything else).
        let half_stars = (rating * 2.0).round().clamp(1.0, 10.0) as u32;
        self.packed.push(other | half_stars << INDEX_BITS);
    }
}

/// Width of the Gram matrix's row blocks: eight f32 fill one 256-bit vector register.
pub(super) const LANES: usize = 8;

/// Length of row `i` of a rank-`k` Gram matrix in the stored layout: the lower triangle with each
/// row extended to the end of its block of [`LANES`] rows, so every row is whole vectors and the
/// diagonal blocks are stored in full (rank 32: 640 floats, against 528 packed and 1,024 full).
#[inline(always)]
pub(super) const fn row_len(i: usize, k: usize) -> usize {
    let end = (i / LANES + 1) * LANES;
    if end < k {
        end
    } else {
        k
    }
}

/// The per-entity storage layout for rank k.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Shape {
    pub(super) k: usize,
    /// Floats of one entity's statistics: b (k), the residual (k), G (its rows, [`row_len`]).
    pub(super) stride: usize,
}

impl Shape {
    pub(super) const fn new(k: usize) -> Shape {
        let mut stride = 2 * k;
        let mut i = 0;
        while i < k {
            stride += row_len(i, k);
            i += 1;
        }
        Shape { k, stride }
    }

    /// The default rank's layout, as a constant: the per-event code compiled for it has every
    /// loop bound known, so it is unrolled into whole vectors with no remainder loops.
    pub(super) const RANK32: Shape = Shape::new(32);
}

/// One entity's statistics, split: (b, residual, G).
#[inline]
pub(super) fn split_stats(st: &mut [f32], k: usize) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let (b, rest) = st.split_at_mut(k);
    let (r, g) = rest.split_at_mut(k);
    (b, r, g)
}

impl Side {
    /// Entities on this side.
    #[inline]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// No entities yet.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Dense index of external id `id`.
    #[inline]
    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.index.get(id).map(|i| i as usize)
    }

    /// External id of dense index `i`.
    #[inline]
    pub fn id(&self, i: usize) -> u32 {
        self.ids[i]
    }

    /// Ratings seen for entity `i`.
    #[inline]
    pub fn ratings(&self, i: usize) -> &Rated {
        &self.ratings[i]
    }

    #[inline]
    pub(super) fn factor(&self, i: usize, k: usize) -> &[f32] {
        &self.factors[i * k..(i + 1) * k]
    }

    /// All factors as an n × k matrix.
    pub fn matrix(&self, k: usize) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.len(), k), &self.factors).expect("n × k factors")
    }

    /// Entity `e`'s factor, statistics and ratings, the first two to change.
    #[inline]
    pub(super) fn entity_mut(&mut self, e: usize, shape: Shape) -> (&mut [f32], &mut [f32], &Rated) {
        let (k, stride) = (shape.k, shape.stride);
        (
            &mut self.factors[e * k..(e + 1) * k],
            &mut self.stats[e * stride..(e + 1) * stride],
            &self.ratings[e],
        )
    }

    /// Starts loading entity `e`'s factor, statistics and rating-list header into the cache
    /// (see [`Als::prefetch`]).
    #[inline(always)]
    pub(super) fn prefetch(&self, e: usize, shape: Shape) {
        let (k, stride) = (shape.k, shape.stride);
        prefetch_floats(&self.stats[e * stride..(e + 1) * stride]);
        prefetch_floats(&self.factors[e * k..(e + 1) * k]);
        // The rating list's header, not its end: finding the end would be a load that waits.
        prefetch(&self.ratings[e]);
    }

    #[inline]
    pub(super) fn get_or_insert(&mut self, id: u32, shape: Shape, salt: u64) -> usize {
        if let Some(i) = self.index.get(id) {
            return i as usize;
        }
        let k = shape.k;
        let i = self.ids.len();
        assert!(i < 1 << INDEX_BITS, "more than 2^{INDEX_BITS} users or movies");
        self.index.insert(id, i as u32);
        self.ids.push(id);
        super::init::push_initial_factor(id, salt, k, &mut self.factors);
        // No ratings: b = 0, G = 0, λn = 0, so the residual b − (G + λnI)x is 0 too.
        self.stats.extend(std::iter::repeat_n(0.0, shape.stride));
        self.ratings.push(Rated::default());
        i
    }
}

/// External id → dense index. Ids below [`IdIndex::DENSE`] (all of MovieLens's) are looked up in
/// a flat table, one load that a prefetch can run ahead of; larger ones in a hash map.
#[derive(Debug, Clone, Default)]
pub(super) struct IdIndex {
    /// Index + 1 by id; 0 = absent.
    pub(super) dense: Vec<u32>,
    pub(super) sparse: FxHashMap<u32, u32>,
}

impl IdIndex {
    /// Ids the flat table covers at most (4 bytes each: 16 MB when full).
    pub(super) const DENSE: u32 = 1 << 22;

    #[inline(always)]
    pub(super) fn get(&self, id: u32) -> Option<u32> {
        match self.dense.get(id as usize) {
            Some(&i) => i.checked_sub(1),
            None if id < Self::DENSE => None,
            None => self.sparse.get(&id).copied(),
        }
    }

    pub(super) fn insert(&mut self, id: u32, index: u32) {
        if id < Self::DENSE {
            let at = id as usize;
            if at >= self.dense.len() {
                // Doubling (at least to the id) keeps growth amortised.
                let len = (at + 1).max(self.dense.len() * 2).min(Self::DENSE as usize);
                self.dense.resize(len, 0);
            }
            self.dense[at] = index + 1;
        } else {
            self.sparse.insert(id, index);
        }
    }
}
