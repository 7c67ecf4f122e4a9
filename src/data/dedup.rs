//! Deduplication: exact (xxh3 of the record body after cleaning) and near-duplicate (MinHash
//! signatures over word or character shingles, LSH with `bands × rows`, candidates confirmed by
//! the estimated Jaccard similarity). The first record of a cluster in read order is kept, so the
//! result does not depend on the seed.
//!
//! LSH makes a pair with Jaccard similarity `s` a candidate with probability
//! `1 - (1 - s^rows)^bands`; with 16 × 8 that is 0.5 near `s = (1/16)^(1/8) ≈ 0.71`, 0.96 at 0.8
//! and 0.9999 at 0.9. Candidates are then kept only if their estimated similarity is at least the
//! declared `threshold`.

use super::plan::ShingleUnit;
use xxhash_rust::xxh3::xxh3_64;

/// MinHash over `bands × rows` hash functions.
#[derive(Clone, Debug)]
pub struct MinHasher {
    pub bands: usize,
    pub rows: usize,
    pub shingle: usize,
    pub unit: ShingleUnit,
    seeds: Vec<u64>,
}

/// splitmix64's finaliser: a cheap bijective mix that turns `h ^ seed` into an independent hash.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl MinHasher {
    pub fn new(bands: usize, rows: usize, shingle: usize, unit: ShingleUnit) -> MinHasher {
        // Fixed seeds: near-dedup must not change with the pipeline's seed.
        let seeds = (0..bands * rows).map(|i| mix64(0x9e37_79b9_7f4a_7c15 ^ i as u64)).collect();
        MinHasher { bands, rows, shingle: shingle.max(1), unit, seeds }
    }

    /// The hashes of the text's shingles (lowercased words or characters, whitespace collapsed).
    pub fn shingle_hashes(&self, text: &str) -> Vec<u64> {
        let lower = text.to_lowercase();
        let mut out = Vec::new();
        match self.unit {
            ShingleUnit::Words => {
                let words: Vec<&str> = lower
                    .split(|c: char| !c.is_alphanumeric() && c != '\'')
                    .filter(|w| !w.is_empty())
                    .collect();
                if words.len() <= self.shingle {
                    out.push(xxh3_64(words.join(" ").as_bytes()));
                } else {
                    for g in words.windows(self.shingle) {
                        out.push(xxh3_64(g.join(" ").as_bytes()));
                    }
                }
            }
            ShingleUnit::Chars => {
                let chars: Vec<char> =
                    lower.split_whitespace().collect::<Vec<_>>().join(" ").chars().collect();
                if chars.len() <= self.shingle {
                    out.push(xxh3_64(chars.iter().collect::<String>().as_bytes()));
                } else {
                    let mut buf = String::new();
                    for g in chars.windows(self.shingle) {
                        buf.clear();
                        buf.extend(g);
                        out.push(xxh3_64(buf.as_bytes()));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The MinHash signature: for each hash function, the least hash over the shingles.
    pub fn signature(&self, text: &str) -> Vec<u64> {
        let shingles = self.shingle_hashes(text);
        let mut sig = vec![u64::MAX; self.seeds.len()];
        for h in shingles {
            for (s, seed) in sig.iter_mut().zip(&self.seeds) {
                let v = mix64(h ^ seed);
                if v < *s {
                    *s = v;
                }
            }
        }
        sig
    }
}

/// The fraction of equal signature entries: an unbiased estimate of the Jaccard similarity.
pub fn jaccard_estimate(a: &[u64], b: &[u64]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// Union-find whose root is always the smallest index of its set (the record kept).
pub struct Clusters {
    parent: Vec<usize>,
}

impl Clusters {
    pub fn new(n: usize) -> Clusters {
        Clusters { parent: (0..n).collect() }
    }

    pub fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    pub fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[hi] = lo;
    }
}

/// Pairs of records whose signatures share a band bucket and whose estimated similarity is at
/// least `threshold`. Within a bucket each member is compared with the bucket's first member and
/// its predecessor, which keeps large buckets linear; clusters are then closed by union-find.
pub fn similar_pairs(sigs: &[Vec<u64>], bands: usize, rows: usize, threshold: f64) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    let mut buckets: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
    for band in 0..bands {
        buckets.clear();
        for (i, sig) in sigs.iter().enumerate() {
            let mut bytes = Vec::with_capacity(rows * 8 + 8);
            bytes.extend_from_slice(&(band as u64).to_le_bytes());
            for v in &sig[band * rows..(band + 1) * rows] {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            buckets.entry(xxh3_64(&bytes)).or_default().push(i);
        }
        for members in buckets.values().filter(|m| m.len() > 1) {
            let first = members[0];
            for (k, &j) in members.iter().enumerate().skip(1) {
                for other in [first, members[k - 1]] {
                    if jaccard_estimate(&sigs[other], &sigs[j]) >= threshold {
                        pairs.push((other, j));
                    }
                }
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_texts_have_similar_signatures() {
        let m = MinHasher::new(16, 8, 3, ShingleUnit::Words);
        let a = "it is a truth universally acknowledged that a single man in possession of a good \
                 fortune must be in want of a wife however little known the feelings";
        let b = a.replace("single", "young");
        let c = "the family of dashwood had long been settled in sussex their estate was large";
        let (sa, sb, sc) = (m.signature(a), m.signature(&b), m.signature(c));
        assert!(jaccard_estimate(&sa, &sb) > 0.7);
        assert!(jaccard_estimate(&sa, &sc) < 0.1);
        let pairs = similar_pairs(&[sa, sc, sb], 16, 8, 0.7);
        assert_eq!(pairs, vec![(0, 2)]);
    }

    #[test]
    fn clusters_keep_the_first_record() {
        let mut c = Clusters::new(4);
        c.union(3, 1);
        c.union(1, 2);
        assert_eq!(c.find(3), 1);
        assert_eq!(c.find(0), 0);
    }
}
