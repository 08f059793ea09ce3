//! The agent's pcap reader on any file's bytes, each record through the
//! decoder as `replay` does: records stay inside the file, and a bad
//! record ends the iteration.
#![no_main]

use doorwatch_agent::{decode, pcap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| {
    let Ok(reader) = pcap::Reader::new(file) else {
        return;
    };
    let mut records = 0usize;
    let mut bytes = 0usize;
    for record in reader {
        let Ok(record) = record else {
            break;
        };
        records += 1;
        bytes += 16 + record.data.len();
        assert!(24 + bytes <= file.len(), "records reach past the file");
        let _ = decode::ethernet(record.data);
    }
    assert!(records <= file.len() / 16);
});
