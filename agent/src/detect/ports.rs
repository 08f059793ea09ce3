//! A set of ports: a short sorted list while small, an 8 KiB bitmap once
//! it grows. Scanners that probe thousands of ports cost 8 KiB; the many
//! sources that probe one or two ports cost a few bytes.

/// Ports kept in a list before switching to the bitmap.
const SMALL_SET: usize = 32;

#[derive(Debug, Clone)]
pub enum PortSet {
    Small(Vec<u16>),
    Bitmap { bits: Box<[u64; 1024]>, len: u32 },
}

impl Default for PortSet {
    fn default() -> Self {
        Self::Small(Vec::new())
    }
}

impl PortSet {
    /// Adds `port`; true if it was new.
    pub fn insert(&mut self, port: u16) -> bool {
        match self {
            Self::Small(list) => match list.binary_search(&port) {
                Ok(_) => false,
                Err(at) if list.len() < SMALL_SET => {
                    list.insert(at, port);
                    true
                }
                Err(_) => {
                    let mut bits = Box::new([0u64; 1024]);
                    for &p in list.iter() {
                        bits[usize::from(p) / 64] |= 1 << (p % 64);
                    }
                    let len = list.len() as u32;
                    *self = Self::Bitmap { bits, len };
                    self.insert(port)
                }
            },
            Self::Bitmap { bits, len } => {
                let (word, bit) = (usize::from(port) / 64, port % 64);
                let new = bits[word] & (1 << bit) == 0;
                if new {
                    bits[word] |= 1 << bit;
                    *len += 1;
                }
                new
            }
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        match self {
            Self::Small(list) => list.binary_search(&port).is_ok(),
            Self::Bitmap { bits, .. } => bits[usize::from(port) / 64] & (1 << (port % 64)) != 0,
        }
    }

    pub fn len(&self) -> u32 {
        match self {
            Self::Small(list) => list.len() as u32,
            Self::Bitmap { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lowest `max` ports, ascending.
    pub fn sample(&self, max: usize) -> Vec<u16> {
        self.iter().take(max).collect()
    }

    /// Ports in ascending order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = u16> + '_> {
        match self {
            Self::Small(list) => Box::new(list.iter().copied()),
            Self::Bitmap { bits, .. } => Box::new(
                bits.iter()
                    .enumerate()
                    .filter(|(_, word)| **word != 0)
                    .flat_map(|(i, &word)| {
                        (0..64u16)
                            .filter(move |b| word & (1 << b) != 0)
                            .map(move |b| i as u16 * 64 + b)
                    }),
            ),
        }
    }

    /// How many ports both sets hold.
    pub fn overlap(&self, other: &PortSet) -> u32 {
        match (self, other) {
            (Self::Bitmap { bits: a, .. }, Self::Bitmap { bits: b, .. }) => a
                .iter()
                .zip(b.iter())
                .map(|(x, y)| (x & y).count_ones())
                .sum(),
            (Self::Small(list), set) | (set, Self::Small(list)) => {
                list.iter().filter(|&&p| set.contains(p)).count() as u32
            }
        }
    }

    /// Bytes this set holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Self::Small(list) => list.capacity() * 2,
            Self::Bitmap { .. } => 8192,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_to_bitmap_without_losing_ports() {
        let mut set = PortSet::default();
        let ports: Vec<u16> = (0..=u16::MAX).step_by(7).collect();
        for &p in ports.iter().rev() {
            assert!(set.insert(p));
        }
        assert!(!set.insert(0));
        assert_eq!(set.len(), 9363);
        assert_eq!(set.sample(3), vec![0, 7, 14]);
        assert_eq!(set.iter().count(), 9363);
        assert!(set.contains(65_534) && !set.contains(65_535));
    }

    #[test]
    fn overlap_counts_shared_ports_in_every_representation() {
        let mut small = PortSet::default();
        let mut big = PortSet::default();
        let mut big2 = PortSet::default();
        for p in 1..=10 {
            small.insert(p);
        }
        for p in 5..=100 {
            big.insert(p);
            big2.insert(p + 50);
        }
        assert_eq!(small.overlap(&big), 6);
        assert_eq!(big.overlap(&small), 6);
        assert_eq!(big.overlap(&big2), 46);
    }
}
