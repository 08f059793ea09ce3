use super::*;

fn event(n: u8) -> v1::Event {
    v1::Event {
        id: vec![n; 16],
        created_unix_ms: 1_764_000_000_000 + i64::from(n),
        detail: None,
    }
}

fn open(dir: &Path) -> (Spool, Recovery) {
    Spool::open_with_segments(dir, 1 << 30, 200).expect("open spool")
}

#[test]
fn batches_survive_a_restart_until_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, recovery) = open(dir.path());
    assert_eq!(recovery, Recovery::default());
    for n in 0..5 {
        let (seq, dropped) = spool
            .append(vec![event(n), event(n + 100)])
            .expect("append");
        assert_eq!((seq, dropped), (u64::from(n) + 1, 0));
    }
    assert_eq!(spool.ack(2), 2);
    assert_eq!(spool.events(), 6);
    drop(spool);

    let (spool, recovery) = open(dir.path());
    assert_eq!(recovery.batches, 3);
    assert_eq!(spool.next_seq(), 6, "sequence numbers continue");
    let first = spool.get(0).expect("read").expect("batch");
    assert_eq!(first.seq, 3);
    assert_eq!(first.events, vec![event(2), event(102)]);
}

#[test]
fn acknowledged_segments_are_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path());
    for n in 0..20 {
        spool.append(vec![event(n)]).expect("append");
    }
    let before = std::fs::read_dir(dir.path()).expect("list").count();
    assert!(before > 3, "small segments rotate: {before}");
    spool.ack(20);
    assert_eq!(spool.batches(), 0);
    assert_eq!(spool.bytes(), 0);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(
        left,
        vec!["acked".to_owned()],
        "only the ack marker remains"
    );
}

#[test]
fn torn_tail_is_cut_and_the_rest_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path());
    for n in 0..3 {
        spool.append(vec![event(n)]).expect("append");
    }
    drop(spool);
    let newest = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .max()
        .expect("a segment");
    let mut file = OpenOptions::new().append(true).open(&newest).expect("open");
    file.write_all(&[40, 0, 0, 0, 1, 2, 3]).expect("torn write");
    drop(file);
    let (mut spool, recovery) = open(dir.path());
    assert_eq!(recovery.batches, 3);
    assert_eq!(recovery.truncated_bytes, 7);
    assert_eq!(spool.append(vec![event(9)]).expect("append").0, 4);
}

#[test]
fn every_length_of_a_cut_segment_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = Spool::open_with_segments(dir.path(), 1 << 30, 1 << 20).expect("open");
    for n in 0..4 {
        spool.append(vec![event(n), event(n)]).expect("append");
    }
    drop(spool);
    let path = std::fs::read_dir(dir.path())
        .expect("list")
        .find_map(|e| e.ok().map(|e| e.path()))
        .expect("segment");
    let full = std::fs::read(&path).expect("read");
    let mut recovered = Vec::new();
    for len in (0..=full.len()).rev() {
        std::fs::write(&path, &full[..len]).expect("cut");
        let (spool, _) = Spool::open_with_segments(dir.path(), 1 << 30, 1 << 20).expect("open");
        recovered.push(spool.batches());
        if len == 0 {
            break;
        }
    }
    assert_eq!(recovered.first(), Some(&4));
    assert_eq!(recovered.last(), Some(&0));
    assert!(recovered.windows(2).all(|w| w[0] >= w[1]));
}

/// The segments of `dir`, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    segments
}

#[test]
fn a_damaged_older_segment_loses_only_its_bad_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path());
    for n in 0..10 {
        spool.append(vec![event(n)]).expect("append");
    }
    drop(spool);
    let oldest = segments(dir.path()).remove(0);
    let mut bytes = std::fs::read(&oldest).expect("read");
    bytes[20] ^= 0xFF;
    std::fs::write(&oldest, &bytes).expect("corrupt");
    let (spool, recovery) = open(dir.path());
    assert_eq!(recovery.quarantined.len(), 1);
    assert!(
        recovery.quarantined[0]
            .to_string_lossy()
            .ends_with(".corrupt")
    );
    assert_eq!(spool.batches(), 9, "only the damaged record is lost");
    assert_eq!(recovery.lost_batches, 1, "and it is counted");
    drop(spool);
    let (spool, recovery) = open(dir.path());
    assert_eq!(spool.batches(), 9);
    assert_eq!(
        (recovery.lost_batches, recovery.quarantined.len()),
        (0, 0),
        "a restart finds the repaired segment and counts nothing twice"
    );
}

#[test]
fn a_bad_record_in_the_newest_segment_keeps_every_later_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = Spool::open_with_segments(dir.path(), 1 << 30, 1 << 20).expect("open");
    for n in 0..6 {
        spool.append(vec![event(n), event(n + 50)]).expect("append");
    }
    drop(spool);
    let newest = segments(dir.path()).pop().expect("a segment");
    let mut bytes = std::fs::read(&newest).expect("read");
    // A flipped bit in the second record's payload.
    let record = bytes.len() / 6;
    bytes[record + HEADER + 3] ^= 0x01;
    std::fs::write(&newest, &bytes).expect("corrupt");
    let (mut spool, recovery) =
        Spool::open_with_segments(dir.path(), 1 << 30, 1 << 20).expect("open");
    assert_eq!(spool.batches(), 5, "the four after the bad one are kept");
    assert_eq!(recovery.lost_batches, 1);
    assert_eq!(recovery.truncated_bytes, 0);
    let seqs: Vec<u64> = (0..spool.batches())
        .map(|i| spool.get(i).expect("read").expect("batch").seq)
        .collect();
    assert_eq!(seqs, vec![1, 3, 4, 5, 6]);
    assert_eq!(spool.append(vec![event(9)]).expect("append").0, 7);
}

#[test]
fn an_unreadable_older_segment_is_counted_from_the_gap_it_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path());
    for n in 0..20 {
        spool.append(vec![event(n)]).expect("append");
    }
    drop(spool);
    let all = segments(dir.path());
    assert!(all.len() >= 3, "{all:?}");
    let second = &all[1];
    let len = std::fs::metadata(second).expect("stat").len() as usize;
    std::fs::write(second, vec![0xAB; len]).expect("overwrite");
    let before: usize = all.len();
    let (spool, recovery) = open(dir.path());
    assert!(recovery.lost_batches >= 1, "{recovery:?}");
    assert_eq!(
        spool.batches() as u64 + recovery.lost_batches,
        20,
        "every batch is either kept or counted"
    );
    assert_eq!(segments(dir.path()).len(), before - 1);
}

#[test]
fn over_the_cap_the_oldest_are_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = Spool::open_with_segments(dir.path(), 600, 200).expect("open");
    let mut dropped = 0;
    for n in 0..30 {
        dropped += spool.append(vec![event(n)]).expect("append").1;
    }
    assert!(spool.bytes() <= 600 + 200, "{} bytes", spool.bytes());
    assert_eq!(
        dropped + spool.events(),
        30,
        "every event is kept or counted"
    );
    assert!(dropped > 0);
}

fn report(n: u8, state: v1::EpisodeState) -> v1::Event {
    v1::Event {
        detail: Some(v1::event::Detail::Scan(v1::ScanDetected {
            state: state as i32,
            explanation: "x".repeat(40),
            ..Default::default()
        })),
        ..event(n)
    }
}

#[test]
fn over_the_cap_progress_reports_go_before_detections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = Spool::open_with_segments(dir.path(), 2_000, 400).expect("open");
    let mut dropped = 0;
    let mut detections = 0;
    for n in 0..40 {
        let state = if n % 4 == 0 {
            detections += 1;
            v1::EpisodeState::Detected
        } else {
            v1::EpisodeState::Active
        };
        dropped += spool.append(vec![report(n, state)]).expect("append").1;
    }
    assert!(dropped > 0, "the cap was reached");
    assert_eq!(
        dropped + spool.events(),
        40,
        "every event is kept or counted"
    );
    let kept: Vec<v1::Event> = (0..spool.batches())
        .filter_map(|i| spool.get(i).expect("readable"))
        .flat_map(|b| b.events)
        .collect();
    let kept_detections = kept
        .iter()
        .filter(|e| importance(e) == Importance::Detection)
        .count();
    assert_eq!(
        kept_detections, detections,
        "no detection was dropped: {dropped} progress reports went first"
    );

    // The rewritten segments survive a restart, sequence numbers intact.
    let seqs: Vec<u64> = (0..spool.batches())
        .filter_map(|i| spool.get(i).expect("readable").map(|b| b.seq))
        .collect();
    drop(spool);
    let (reopened, recovery) = Spool::open_with_segments(dir.path(), 2_000, 400).expect("reopen");
    assert!(recovery.quarantined.is_empty(), "{recovery:?}");
    let again: Vec<u64> = (0..reopened.batches())
        .filter_map(|i| reopened.get(i).expect("readable").map(|b| b.seq))
        .collect();
    assert_eq!(seqs, again);
    assert_eq!(reopened.events(), 40 - dropped);
}
