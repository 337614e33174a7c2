//! The broker honours what eddy's guarantees rest on, checked through a
//! Kafka client: topic creation, idempotent produce, group commits and
//! rebalances, transactions with fencing, and retention. Run against
//! Apache Kafka too (`EDDY_TEST_BROKER=kafka`), the same checks show that
//! `eddy dev-broker` (the patched librdkafka mock eddy embeds) behaves as
//! the reference does.

use eddy_tests::{Broker, BrokerOptions, Rec, consume, group_committed, produce};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn transactional(brokers: &str, id: &str) -> anyhow::Result<BaseProducer> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", id)
        .create()?;
    producer.init_transactions(T)?;
    Ok(producer)
}

fn send(producer: &BaseProducer, topic: &str, values: &[&str]) -> anyhow::Result<()> {
    for v in values {
        producer
            .send(BaseRecord::<(), str>::to(topic).payload(*v))
            .map_err(|(e, _)| e)?;
    }
    // Flushed before the transaction ends, so the records reach the log
    // whatever happens to the transaction.
    producer.flush(T)?;
    Ok(())
}

fn values(records: &[Rec]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().filter_map(Rec::text).collect();
    v.sort();
    v
}

#[test]
fn create_and_delete_topics() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()?;
    let topics = [
        NewTopic::new("five", 5, TopicReplication::Fixed(1)),
        NewTopic::new("one", 1, TopicReplication::Fixed(1)),
    ];
    let options = AdminOptions::new().operation_timeout(Some(T));
    let results = eddy_tests::block_on(admin.create_topics(&topics, &options))?;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let again = eddy_tests::block_on(admin.create_topics(&topics[..1], &options))?;
    assert!(
        matches!(again[0], Err((_, RDKafkaErrorCode::TopicAlreadyExists))),
        "{again:?}"
    );
    let metadata = admin.inner().fetch_metadata(Some("five"), T)?;
    assert_eq!(metadata.topics()[0].partitions().len(), 5);

    let deleted = eddy_tests::block_on(admin.delete_topics(&["five"], &options))?;
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    // Apache Kafka answers DeleteTopics before every broker's metadata has
    // caught up; the topic goes soon after, and only it.
    let names = eddy_tests::wait_for("`five` gone from metadata", T, || {
        let metadata = admin.inner().fetch_metadata(None, T)?;
        let names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect();
        Ok((!names.iter().any(|n| n == "five")).then_some(names))
    })?;
    assert!(names.iter().any(|n| n == "one"), "{names:?}");
    let again = eddy_tests::block_on(admin.delete_topics(&["five"], &options))?;
    assert!(
        matches!(
            again[0],
            Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))
        ),
        "{again:?}"
    );
    Ok(())
}

#[test]
fn aborted_and_open_transactions_are_invisible_to_read_committed() -> anyhow::Result<()> {
    let broker = Broker::start(&[("txn", 3)])?;
    let producer = transactional(broker.bootstrap(), "t1")?;
    for (batch, commit) in [("a", false), ("b", true), ("c", false), ("d", true)] {
        producer.begin_transaction()?;
        send(
            &producer,
            "txn",
            &[&format!("{batch}1"), &format!("{batch}2")],
        )?;
        if commit {
            producer.commit_transaction(T)?;
        } else {
            producer.abort_transaction(T)?;
        }
    }
    // One more transaction stays open while we read.
    producer.begin_transaction()?;
    send(&producer, "txn", &["open1", "open2"])?;
    let seen = consume(
        broker.bootstrap(),
        "txn",
        4,
        Duration::from_secs(20),
        Duration::from_secs(2),
    )?;
    assert_eq!(values(&seen), ["b1", "b2", "d1", "d2"]);
    // Once it commits, it becomes visible.
    producer.commit_transaction(T)?;
    let seen = consume(
        broker.bootstrap(),
        "txn",
        6,
        Duration::from_secs(20),
        Duration::from_secs(1),
    )?;
    assert_eq!(values(&seen), ["b1", "b2", "d1", "d2", "open1", "open2"]);
    Ok(())
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() -> anyhow::Result<()> {
    let broker = Broker::start(&[("zombie", 1)])?;
    let old = transactional(broker.bootstrap(), "same-id")?;
    old.begin_transaction()?;
    send(&old, "zombie", &["from the zombie"])?;
    let new = transactional(broker.bootstrap(), "same-id")?;
    assert!(
        old.commit_transaction(T).is_err(),
        "the fenced producer cannot commit"
    );
    new.begin_transaction()?;
    send(&new, "zombie", &["from the new producer"])?;
    new.commit_transaction(T)?;
    let seen = consume(
        broker.bootstrap(),
        "zombie",
        1,
        Duration::from_secs(20),
        Duration::from_secs(2),
    )?;
    assert_eq!(values(&seen), ["from the new producer"]);
    Ok(())
}

#[test]
fn offsets_sent_with_a_transaction_are_stored_on_commit_and_dropped_on_abort() -> anyhow::Result<()>
{
    let broker = Broker::start(&[("src", 1), ("sink", 1)])?;
    produce(
        broker.bootstrap(),
        "src",
        &(0..10)
            .map(|i| Rec::value(format!("{i}")))
            .collect::<Vec<_>>(),
    )?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "txn-group")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer
        .group_metadata()
        .ok_or_else(|| anyhow::anyhow!("no group metadata"))?;
    let producer = transactional(broker.bootstrap(), "txo")?;
    let offsets = |o: i64| -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("src", 0, Offset::Offset(o))?;
        Ok(tpl)
    };

    producer.begin_transaction()?;
    send(&producer, "sink", &["x"])?;
    producer.send_offsets_to_transaction(&offsets(4)?, &metadata, T)?;
    producer.abort_transaction(T)?;
    assert_eq!(
        group_committed(broker.bootstrap(), "txn-group", "src", 1)?,
        [-1]
    );

    producer.begin_transaction()?;
    send(&producer, "sink", &["y"])?;
    producer.send_offsets_to_transaction(&offsets(7)?, &metadata, T)?;
    producer.commit_transaction(T)?;
    assert_eq!(
        group_committed(broker.bootstrap(), "txn-group", "src", 1)?,
        [7]
    );
    Ok(())
}

#[test]
fn a_partition_keeps_far_more_than_a_few_mib() -> anyhow::Result<()> {
    let broker = Broker::start(&[("big", 1)])?;
    let payload = "x".repeat(200);
    let records: Vec<Rec> = (0..200_000)
        .map(|_| {
            let mut r = Rec::value(payload.as_str());
            r.partition = 0;
            r
        })
        .collect();
    produce(broker.bootstrap(), "big", &records)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "w")
        .create()?;
    let (low, high) = consumer.fetch_watermarks("big", 0, T)?;
    assert_eq!(
        (low, high),
        (0, 200_000),
        "40 MiB in one partition, none dropped"
    );
    Ok(())
}

#[test]
fn a_consumer_group_spreads_partitions_over_members_and_rebalances() -> anyhow::Result<()> {
    let broker = Broker::start(&[("spread", 4)])?;
    let member = || -> anyhow::Result<BaseConsumer> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("group.id", "spread-group")
            .set("session.timeout.ms", "6000")
            .create()?;
        c.subscribe(&["spread"])?;
        Ok(c)
    };
    let a = member()?;
    let b = member()?;
    let assigned = |c: &BaseConsumer| c.assignment().map(|a| a.count()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(assigned(&a) == 2 && assigned(&b) == 2) {
        assert!(
            Instant::now() < deadline,
            "two members share four partitions: {} + {}",
            assigned(&a),
            assigned(&b)
        );
        a.poll(Duration::from_millis(50));
        b.poll(Duration::from_millis(50));
    }
    drop(b); // leaves the group
    let deadline = Instant::now() + Duration::from_secs(30);
    while assigned(&a) != 4 {
        assert!(
            Instant::now() < deadline,
            "the remaining member takes over: {}",
            assigned(&a)
        );
        a.poll(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn the_broker_listens_on_the_port_it_is_given() -> anyhow::Result<()> {
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let broker = Broker::start_with(
        &[("t", 1)],
        &BrokerOptions {
            port: Some(port),
            ..BrokerOptions::default()
        },
    )?;
    assert_eq!(broker.bootstrap(), format!("127.0.0.1:{port}"));
    produce(broker.bootstrap(), "t", &[Rec::value("via the fixed port")])?;
    let seen = consume(
        broker.bootstrap(),
        "t",
        1,
        Duration::from_secs(20),
        Duration::ZERO,
    )?;
    assert_eq!(values(&seen), ["via the fixed port"]);

    // A second broker on the same port is refused with a clear error.
    let out = std::process::Command::new(eddy_tests::eddy_bin())
        .args(["dev-broker", "--port", &port.to_string()])
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("could not start the broker on 127.0.0.1:{port}")),
        "{stderr}"
    );
    Ok(())
}
