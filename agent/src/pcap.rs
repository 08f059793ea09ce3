//! Reads classic pcap files (libpcap format, both byte orders, micro- and
//! nanosecond timestamps) from memory. Pure: bytes in, frames out.
//!
//! Used by tests and offline replay, so the detector sees captured traffic
//! exactly as it would see live traffic.

/// One captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Capture time, Unix milliseconds.
    pub unix_ms: u64,
    /// The captured bytes (at most the snapshot length).
    pub data: &'a [u8],
}

/// Why a capture file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PcapError {
    #[error(
        "not a pcap file (magic {0:#010x}); pcapng is not supported, convert with `editcap -F pcap`"
    )]
    BadMagic(u32),
    #[error("pcap file truncated in the {0}")]
    Truncated(&'static str),
    #[error("link type {0} is not Ethernet (1)")]
    LinkType(u32),
}

/// Iterates over the records of a pcap file held in memory.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
    big_endian: bool,
    nanos: bool,
}

impl<'a> Reader<'a> {
    /// Checks the file header; only Ethernet captures are accepted.
    pub fn new(bytes: &'a [u8]) -> Result<Self, PcapError> {
        let header = bytes.get(..24).ok_or(PcapError::Truncated("file header"))?;
        let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let (big_endian, nanos) = match magic {
            0xA1B2_C3D4 => (false, false),
            0xA1B2_3C4D => (false, true),
            0xD4C3_B2A1 => (true, false),
            0x4D3C_B2A1 => (true, true),
            other => return Err(PcapError::BadMagic(other)),
        };
        let reader = Self {
            rest: &bytes[24..],
            big_endian,
            nanos,
        };
        let link_type = reader.u32_at(header, 20);
        if link_type != 1 {
            return Err(PcapError::LinkType(link_type));
        }
        Ok(reader)
    }

    fn u32_at(&self, bytes: &[u8], at: usize) -> u32 {
        let b = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Record<'a>, PcapError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(header) = self.rest.get(..16) else {
            self.rest = &[];
            return Some(Err(PcapError::Truncated("record header")));
        };
        let secs = u64::from(self.u32_at(header, 0));
        let frac = u64::from(self.u32_at(header, 4));
        let len = self.u32_at(header, 8) as usize;
        let Some(data) = self.rest.get(16..16 + len) else {
            self.rest = &[];
            return Some(Err(PcapError::Truncated("record data")));
        };
        self.rest = &self.rest[16 + len..];
        let frac_ms = if self.nanos {
            frac / 1_000_000
        } else {
            frac / 1_000
        };
        Some(Ok(Record {
            unix_ms: secs * 1000 + frac_ms,
            data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/nmap-mixed.pcap");

    #[test]
    fn reads_every_record_of_the_fixture() {
        let records: Vec<_> = Reader::new(FIXTURE)
            .expect("header")
            .collect::<Result<_, _>>()
            .expect("records");
        assert_eq!(records.len(), 88);
        assert!(records.windows(2).all(|w| w[0].unix_ms <= w[1].unix_ms));
    }

    #[test]
    fn every_prefix_is_an_error_or_fewer_records_never_a_panic() {
        for end in 0..FIXTURE.len() {
            if let Ok(reader) = Reader::new(&FIXTURE[..end]) {
                for _ in reader {}
            }
        }
    }

    #[test]
    fn pcapng_is_refused_with_advice() {
        let err = Reader::new(&[
            0x0A, 0x0D, 0x0D, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ])
        .expect_err("pcapng");
        assert!(err.to_string().contains("editcap"));
    }
}
