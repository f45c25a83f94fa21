//! Kafka's default partitioner, reproduced so that the replay knows each event's partition.
//!
//! The replay assigns partitions itself instead of leaving it to librdkafka, for two reasons:
//! `--resume` must know which partition an event went to (to compare with what that partition
//! already holds), and keyed records should land where a Java producer would put them, so the
//! topic stays compatible with any consumer that assumes Kafka's default partitioning. Java's
//! `DefaultPartitioner` is `toPositive(murmur2(keyBytes)) % numPartitions` (librdkafka's
//! `murmur2_random`); that is what [`partition_for`] computes.
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses none of them.

/// Kafka's murmur2 (seed `0x9747b28c`), as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate().rev() {
            h ^= (b as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` among `partitions` (> 0).
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) as u32 & 0x7fff_ffff) % partitions
}

/// The record key of a user: the decimal user id, as MovieLens writes it.
pub fn user_key(user: u32) -> String {
    user.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's own `UtilsTest.testMurmur2` and librdkafka's `rdmurmur2.c`.
    #[test]
    fn matches_kafka_reference_vectors() {
        for (key, want) in [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
            ("kafka", -798_503_068),
        ] {
            assert_eq!(murmur2(key.as_bytes()), want, "murmur2({key:?})");
        }
    }

    #[test]
    fn partitions_are_in_range_and_spread() {
        let mut counts = [0u32; 3];
        for user in 1..=3000 {
            counts[partition_for(user_key(user).as_bytes(), 3) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
