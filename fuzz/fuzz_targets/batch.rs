//! The collector's batch validation: protobuf bytes as an `EventBatch`,
//! its cost estimate, then `rows_from_batch`. Never a panic; the rows stay
//! within the per-batch bounds.
#![no_main]

use doorwatch_collector::ingest::rows::cost::decoded_cost;
use doorwatch_collector::ingest::rows_from_batch;
use doorwatch_collector::trust::identity::AgentIdentity;
use doorwatch_proto::MAX_EVENTS_PER_BATCH;
use doorwatch_proto::v1::EventBatch;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = EventBatch::decode(data) else {
        return;
    };
    let identity = AgentIdentity {
        agent_id: "pc-fuzz".into(),
    };
    // usize: never negative; computing it must not panic or overflow.
    let _cost = decoded_cost(&batch, &identity.agent_id);
    let events = batch.events.len();
    let Ok(rows) = rows_from_batch(&identity, 1_764_000_000, batch) else {
        return;
    };
    assert!(events <= MAX_EVENTS_PER_BATCH);
    assert!(rows.knocks.len() <= MAX_EVENTS_PER_BATCH * 256);
    assert!(rows.scans.len() + rows.floods.len() + rows.anomalies.len() <= events);
});
