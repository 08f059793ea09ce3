//! The spool's segment reader (what `Spool::open` runs on every segment
//! file) on any bytes; and, so the fuzzer gets past the checksum, on a
//! record the spool itself wrote around fuzzed payload bytes. The reader
//! resynchronises after a damaged record, so a record the fuzzer hides
//! inside an unreadable one may be found.
#![no_main]

use doorwatch_agent::spool;
use doorwatch_proto::v1::EventBatch;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let (records, valid) = spool::parse_segment(data);
    assert!(valid <= data.len());
    assert!(records <= data.len() / 16);

    // First byte 0xff: the rest is `[seq u64 le][payload]`, written as the
    // spool writes a record, then followed by the raw input as a torn tail.
    if let [0xff, rest @ ..] = data
        && let Some((seq, payload)) = rest.split_first_chunk::<8>()
    {
        let seq = u64::from_le_bytes(*seq);
        let mut segment = spool::segment_record(seq, payload);
        let written = segment.len();
        let (records, valid) = spool::parse_segment(&segment);
        let readable = EventBatch::decode(payload).is_ok_and(|b| b.seq == seq);
        if readable && payload.len() <= doorwatch_proto::MAX_MESSAGE_BYTES {
            assert_eq!(
                (records, valid),
                (1, written),
                "a written record was not read back"
            );
        } else {
            // The written record is unreadable; the reader may still find
            // a valid record inside its bytes (it resynchronises after
            // damage), but never past them.
            assert!(
                valid <= written,
                "read past the segment: {valid} > {written}"
            );
        }
        segment.extend_from_slice(data);
        let (_, valid_after) = spool::parse_segment(&segment);
        assert!(
            valid_after >= valid,
            "a tail made the record before it unreadable"
        );
    }
});
