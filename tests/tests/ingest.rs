//! The collector facing a misbehaving agent over real mutual TLS, with a
//! real ClickHouse: malformed and oversized messages get a clear status and
//! store nothing, the payload can never change who an event is attributed
//! to, and the collector keeps serving other agents.

use std::net::IpAddr;
use std::time::Duration;

use doorwatch_agent::tls::ClientTls;
use doorwatch_e2e::stack::{self, COLLECTOR_NAME, Stack};
use doorwatch_proto::v1::{self, AgentMessage, agent_message};
use tonic::Code;

fn hello(hostname: &str) -> AgentMessage {
    AgentMessage {
        body: Some(agent_message::Body::Hello(v1::Hello {
            protocol_version: 1,
            agent_version: "test".into(),
            hostname: hostname.into(),
            os: "linux".into(),
            local_ips: vec![],
        })),
    }
}

fn scan_event(explanation: String) -> v1::Event {
    v1::Event {
        id: uuid::Uuid::now_v7().as_bytes().to_vec(),
        created_unix_ms: 1_764_000_000_000,
        detail: Some(v1::event::Detail::Scan(v1::ScanDetected {
            episode_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            state: v1::EpisodeState::Detected as i32,
            scanner_ip: vec![198, 18, 0, 2],
            target_ip: vec![198, 18, 0, 10],
            scan_types: vec![v1::ScanType::Syn as i32],
            ports_probed: 10,
            port_sample: vec![1, 2, 3],
            open_ports: vec![],
            probes: 10,
            first_seen_unix_ms: 1_764_000_000_000,
            last_seen_unix_ms: 1_764_000_001_000,
            confidence: 80,
            explanation,
            companions: vec![],
            fragmented: false,
            handshake_verified: false,
            exposed: vec![],
            severity: v1::Severity::Low as i32,
        })),
    }
}

fn batch(seq: u64, events: Vec<v1::Event>) -> AgentMessage {
    AgentMessage {
        body: Some(agent_message::Body::Batch(v1::EventBatch { seq, events })),
    }
}

/// How many of `messages` are batches (each should be acknowledged).
fn batches_in(messages: &[AgentMessage]) -> usize {
    messages
        .iter()
        .filter(|m| matches!(m.body, Some(agent_message::Body::Batch(_))))
        .count()
}

/// A gRPC client over mutual TLS with agent `name`'s certificate.
async fn client(
    pki: &std::path::Path,
    collector: std::net::SocketAddr,
    name: &str,
) -> v1::agent_stream_client::AgentStreamClient<tonic::transport::Channel> {
    let tls = ClientTls::load(
        &pki.join("ca.pem"),
        &pki.join(format!("agents/{name}.pem")),
        &pki.join(format!("agents/{name}.key")),
        COLLECTOR_NAME,
    )
    .expect("client tls");
    let channel = tls.connect(&collector.to_string()).await.expect("connect");
    v1::agent_stream_client::AgentStreamClient::new(channel)
}

/// Opens a stream as agent `name`, sends `messages`, and returns how the
/// stream ended: acknowledged seqs, or the error status.
async fn session(
    stack: &Stack,
    name: &str,
    messages: Vec<AgentMessage>,
) -> Result<Vec<u64>, tonic::Status> {
    let mut client = client(&stack.pki, stack.collector_address, name)
        .await
        .max_encoding_message_size(64 * 1024 * 1024);
    let expected_acks = batches_in(&messages);
    let mut inbound = client
        .session(tokio_stream::iter(messages).chain(tokio_stream::pending()))
        .await?
        .into_inner();
    let mut acks = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .expect("collector answers within 10 s")?;
        match next.and_then(|m| m.body) {
            Some(v1::collector_message::Body::Ack(ack)) => {
                acks.push(ack.seq);
                if acks.len() == expected_acks {
                    return Ok(acks);
                }
            }
            Some(_) => {}
            None => return Ok(acks),
        }
    }
}

use tokio_stream::StreamExt;

fn stored(stack: &Stack) -> String {
    stack
        .clickhouse
        .query_ok("SELECT count(), arrayStringConcat(groupUniqArray(agent_id), ',') FROM doorwatch.scan_events FINAL FORMAT TSV")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_agents_get_clear_errors_and_store_nothing() {
    let loopback: IpAddr = "127.0.0.1".parse().expect("literal");
    let stack = tokio::task::block_in_place(|| Stack::start(loopback));
    stack::issue_agent(&stack.pki, "pc-1");
    stack::issue_agent(&stack.pki, "pc-2");

    // A batch before Hello.
    let err = session(&stack, "pc-1", vec![batch(1, vec![scan_event("x".into())])])
        .await
        .expect_err("batch before hello");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("must be Hello"), "{}", err.message());

    // A malformed event: the error names the batch, the event and the field.
    let mut bad = scan_event("x".into());
    bad.id = vec![1, 2, 3];
    let err = session(
        &stack,
        "pc-1",
        vec![hello("pc-1"), batch(1, vec![scan_event("ok".into()), bad])],
    )
    .await
    .expect_err("malformed event");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("event 1 of batch 1: id must be 16 bytes"),
        "{}",
        err.message()
    );

    // An oversized message (5 MiB > the 4 MiB limit).
    let err = session(
        &stack,
        "pc-1",
        vec![
            hello("pc-1"),
            batch(1, vec![scan_event("x".repeat(5 << 20))]),
        ],
    )
    .await
    .expect_err("oversized message");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // Sequence numbers must increase on a stream.
    let err = session(
        &stack,
        "pc-1",
        vec![
            hello("pc-1"),
            batch(5, vec![scan_event("a".into())]),
            batch(5, vec![scan_event("b".into())]),
        ],
    )
    .await
    .expect_err("repeated seq");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("does not follow"),
        "{}",
        err.message()
    );
    assert_eq!(
        stored(&stack),
        "1\tpc-1",
        "only the one valid batch before the bad one is stored"
    );

    // An agent claiming to be another in its Hello is still itself.
    let acks = session(
        &stack,
        "pc-2",
        vec![hello("pc-1"), batch(1, vec![scan_event("mine".into())])],
    )
    .await
    .expect("valid batch");
    assert_eq!(acks, vec![1]);
    let owner = stack
        .clickhouse
        .query_ok("SELECT agent_id FROM doorwatch.scan_events FINAL WHERE explanation = 'mine'");
    assert_eq!(owner.trim(), "pc-2", "identity comes from the certificate");
}

/// Like [`session`], but also collects the Throttle messages and says
/// when the last acknowledgement arrived.
async fn throttled_session(
    pki: std::path::PathBuf,
    collector: std::net::SocketAddr,
    name: &str,
    messages: Vec<AgentMessage>,
) -> (Vec<u64>, Vec<v1::Throttle>, std::time::Instant) {
    let mut client = client(&pki, collector, name).await;
    let expected_acks = batches_in(&messages);
    let mut inbound = client
        .session(tokio_stream::iter(messages).chain(tokio_stream::pending()))
        .await
        .expect("stream opens")
        .into_inner();
    let (mut acks, mut throttles) = (Vec::new(), Vec::new());
    while acks.len() < expected_acks {
        let next = tokio::time::timeout(Duration::from_secs(30), inbound.message())
            .await
            .expect("collector answers within 30 s")
            .expect("stream stays up");
        match next.and_then(|m| m.body) {
            Some(v1::collector_message::Body::Ack(ack)) => acks.push(ack.seq),
            Some(v1::collector_message::Body::Throttle(t)) => throttles.push(t),
            Some(_) => {}
            None => break,
        }
    }
    (acks, throttles, std::time::Instant::now())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_over_its_rate_is_throttled_and_others_are_not() {
    let loopback: IpAddr = "127.0.0.1".parse().expect("literal");
    let mut stack = tokio::task::block_in_place(|| Stack::start(loopback));
    // 1,000 events/s per agent, no more than 1,000 at once.
    tokio::task::block_in_place(|| {
        stack.stop_collector();
        let mut text = std::fs::read_to_string(&stack.collector_config).expect("config");
        text.push_str("[ingest]\nagent_events_per_second = 1000\nagent_burst_events = 1000\n");
        std::fs::write(&stack.collector_config, text).expect("write config");
        stack.restart_collector("collector");
    });
    stack::issue_agent(&stack.pki, "greedy");
    stack::issue_agent(&stack.pki, "polite");

    // The greedy agent sends 4,000 events at once: three seconds over.
    let mut greedy_messages = vec![hello("greedy")];
    for seq in 1..=4 {
        let events = (0..1000).map(|_| scan_event("g".into())).collect();
        greedy_messages.push(batch(seq, events));
    }
    let greedy = tokio::spawn(throttled_session(
        stack.pki.clone(),
        stack.collector_address,
        "greedy",
        greedy_messages,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (polite_acks, polite_throttles, polite_done) = throttled_session(
        stack.pki.clone(),
        stack.collector_address,
        "polite",
        vec![hello("polite"), batch(1, vec![scan_event("p".into())])],
    )
    .await;
    let (greedy_acks, greedy_throttles, greedy_done) = greedy.await.expect("greedy task");

    assert_eq!(polite_acks, vec![1]);
    assert!(polite_throttles.is_empty(), "{polite_throttles:?}");
    assert!(
        polite_done < greedy_done,
        "the polite agent is served while the greedy one is held back"
    );
    assert_eq!(greedy_acks, vec![1, 2, 3, 4], "throttled, not refused");
    assert!(!greedy_throttles.is_empty(), "the greedy agent is told");
    let reason = &greedy_throttles[0].reason;
    assert!(reason.contains("1000 events/s"), "{reason}");
    assert!(greedy_throttles[0].retry_after_ms > 0);
    let stored = stack.clickhouse.query_ok(
        "SELECT count() FROM doorwatch.scan_events FINAL WHERE agent_id IN ('greedy', 'polite')",
    );
    assert_eq!(stored.trim(), "4001", "everything is stored");
}
