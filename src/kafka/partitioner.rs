//! Where an upstream producer puts a key: the partitioners of the two
//! client families, so `engage bootstrap` can write each customer's state
//! into the partition the input topics put that customer's events in.
//!
//! - [`UpstreamPartitioner::Murmur2`]: the Java client's default
//!   (`BuiltInPartitioner.partitionForKey`: `toPositive(murmur2(key)) % n`),
//!   which Kafka Streams, Kafka Connect and the clients that copy it use;
//!   librdkafka's `murmur2` and `murmur2_random` are the same function.
//! - [`UpstreamPartitioner::ConsistentRandom`]: librdkafka's default
//!   (`rd_kafka_msg_partitioner_consistent_random`: `rd_crc32(key) % n`, the
//!   zlib CRC-32), used by every librdkafka-based client (confluent-kafka
//!   for Python, Go and .NET, rust-rdkafka, node-rdkafka) unless it sets
//!   `partitioner`.
//!
//! Both send a key to one partition for a given partition count; they
//! differ only in the hash. Empty or absent keys are spread at random by
//! both, but engage's inputs are always keyed by a non-empty customer id.

pub use crate::config::UpstreamPartitioner;

impl UpstreamPartitioner {
    /// The partition of `key` among `partitions` (at least 1).
    pub fn partition(self, key: &[u8], partitions: i32) -> i32 {
        let n = partitions.max(1) as u32;
        let p = match self {
            UpstreamPartitioner::Murmur2 => (murmur2(key) & 0x7fff_ffff) % n,
            UpstreamPartitioner::ConsistentRandom => crc32(key) % n,
        };
        p as i32
    }

    /// The librdkafka `partitioner` property that places keys the same way.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            UpstreamPartitioner::Murmur2 => "murmur2_random",
            UpstreamPartitioner::ConsistentRandom => "consistent_random",
        }
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`, and
/// librdkafka's `rd_murmur2`): MurmurHash2 with seed `0x9747b28c`, words
/// read little-endian.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// CRC-32 (IEEE 802.3, reflected, polynomial `0xedb88320`): zlib's
/// `crc32`, which librdkafka's `rd_crc32` is.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data.iter().fold(!0u32, |c, b| TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_clients_test_vectors() {
        // org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed ints).
        let vectors: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
        ];
        for (key, want) in vectors {
            assert_eq!(murmur2(key.as_bytes()) as i32, want, "{key}");
        }
    }

    #[test]
    fn crc32_matches_zlib() {
        // The standard check value, and Python's zlib.crc32 of a pangram.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414f_a339);
    }

    #[test]
    fn partitions_are_the_positive_hash_modulo_the_count() {
        // toPositive(-973932308) % 6 = 1173551340 % 6 = 0.
        assert_eq!(UpstreamPartitioner::Murmur2.partition(b"21", 6), 1_173_551_340 % 6);
        assert_eq!(UpstreamPartitioner::ConsistentRandom.partition(b"123456789", 7), (0xcbf4_3926u32 % 7) as i32);
        for key in [&b"c-1"[..], b"x", b"customer-000042"] {
            for n in [1, 2, 3, 12] {
                for p in [UpstreamPartitioner::Murmur2, UpstreamPartitioner::ConsistentRandom] {
                    assert!((0..n).contains(&p.partition(key, n)));
                }
            }
        }
    }
}
