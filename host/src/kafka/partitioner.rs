//! Kafka's default partitioner for keyed records (murmur2, as the Java
//! client and librdkafka's `murmur2_random` compute it), so eddy finds the
//! partition, and therefore the task, that owns a key.

/// The partition of `partitions` a record with `key` goes to.
pub fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    let hash = murmur2_hash(key) & 0x7fff_ffff;
    // Both are non-negative and fit in i32.
    (hash % partitions.max(1) as u32) as i32
}

/// Kafka's murmur2 hash of `data`: stable across processes, versions and
/// machines, so daemons that hash the same bytes agree.
pub fn murmur2_hash(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_java_client() {
        // Values from Kafka's own UtilsTest.testMurmur2.
        assert_eq!(murmur2_hash(b"21") as i32, -973_932_308);
        assert_eq!(murmur2_hash(b"foobar") as i32, -790_332_482);
        assert_eq!(
            murmur2_hash(b"a-little-bit-long-string") as i32,
            -985_981_536
        );
        assert_eq!(
            murmur2_hash(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2_hash(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2_hash(b"abc") as i32, 479_470_107);
        assert!((0..3).contains(&murmur2_partition(b"hello", 3)));
    }
}
