//! The embedded broker keeps what it holds in a folder: a broker started on
//! the same folder has the topics, every record at its offset, the
//! committed offsets and the aborted transactions of the last one, and
//! aborts the transactions it left open (its coordinator is gone), so
//! read_committed readers neither see their records nor stall on them.

use eddy::kafka::{EmbeddedBroker, TopicSpec};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn start(data: &Path) -> EmbeddedBroker {
    let topics = [TopicSpec {
        name: "t".to_owned(),
        partitions: 1,
    }];
    EmbeddedBroker::start(&topics, 64 << 20, None, Some(data.to_owned()))
        .expect("the embedded broker starts on its folder")
}

fn send(producer: &BaseProducer, value: &str) {
    producer
        .send(BaseRecord::<(), str>::to("t").partition(0).payload(value))
        .expect("queued");
    producer.flush(T).expect("acknowledged");
}

/// Every record of t/0 a read_committed reader sees, with its offset, read
/// to the partition's end: it fails if an open transaction holds the
/// reader back.
fn read_committed(bootstrap: &str) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("a consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t", 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assigned");
    let mut seen = Vec::new();
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => seen.push((
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return seen,
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    panic!("the reader never reached the end of t/0 (saw {seen:?})");
}

#[test]
fn a_broker_on_the_same_folder_resumes_with_records_offsets_and_transactions() {
    let data = tempfile::tempdir().expect("a folder");
    let broker = start(data.path());
    let bootstrap = broker.bootstrap().to_owned();

    let plain: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("a producer");
    send(&plain, "plain");
    let txn: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("transactional.id", "tx")
        .create()
        .expect("a transactional producer");
    txn.init_transactions(T).expect("transactions start");
    txn.begin_transaction().expect("begin");
    send(&txn, "committed");
    txn.commit_transaction(T).expect("commit");
    txn.begin_transaction().expect("begin");
    send(&txn, "aborted");
    txn.abort_transaction(T).expect("abort");
    txn.begin_transaction().expect("begin");
    send(&txn, "left open");

    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "g")
        .create()
        .expect("a consumer");
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("t", 0, Offset::Offset(2))
        .expect("offset");
    group
        .commit(&offsets, CommitMode::Sync)
        .expect("offset committed");
    let before = read_committed(&bootstrap);
    assert_eq!(
        before.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
        ["plain", "committed"],
        "the open transaction is invisible before the restart too"
    );

    // The broker goes with its transaction open, as in a crash.
    drop(broker);
    drop(txn);
    drop(group);
    drop(plain);

    let broker = start(data.path());
    let bootstrap = broker.bootstrap();
    assert_eq!(
        read_committed(bootstrap),
        before,
        "the same records at the same offsets; the open transaction aborted, not shown"
    );
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "g")
        .create()
        .expect("a consumer");
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("t", 0);
    let committed = group.committed_offsets(wanted, T).expect("offsets");
    assert_eq!(
        committed.find_partition("t", 0).map(|p| p.offset()),
        Some(Offset::Offset(2))
    );

    // It keeps writing where the last one stopped.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("a producer");
    send(&producer, "after");
    let after = read_committed(bootstrap);
    assert_eq!(after.last().map(|(_, v)| v.as_str()), Some("after"));
    assert!(after.last().map(|(o, _)| *o) > before.last().map(|(o, _)| *o));
}
