//! eddy's Kafka data path against the embedded broker: records produced
//! with counted acknowledgements and taken back a batch at a time, every
//! field intact (`eddy::kafka::{Producer, Acks, FetchQueue}`, which talk
//! to librdkafka directly).

use eddy::kafka::{
    Acks, EmbeddedBroker, FetchQueue, KafkaSettings, Outgoing, OutgoingHeaders, Producer, TopicSpec,
};
use rdkafka::consumer::{BaseConsumer, Consumer as _, DefaultConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A record as it went in and should come out.
#[derive(Clone, Debug, PartialEq)]
struct Sent {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn sent(i: usize) -> Sent {
    Sent {
        // Every 7th has no key, every 11th is a tombstone.
        key: (!i.is_multiple_of(7)).then(|| format!("k{i}").into_bytes()),
        value: (!i.is_multiple_of(11)).then(|| format!("value {i}").into_bytes()),
        timestamp: 1_700_000_000_000 + i64::try_from(i).unwrap_or(0),
        // Every 5th has two headers, one of them without a value.
        headers: if i.is_multiple_of(5) {
            vec![
                ("trace".to_owned(), Some(format!("t{i}").into_bytes())),
                ("empty".to_owned(), None),
            ]
        } else {
            Vec::new()
        },
    }
}

fn broker(topics: &[(&str, i32)]) -> EmbeddedBroker {
    let topics: Vec<TopicSpec> = topics
        .iter()
        .map(|(name, partitions)| TopicSpec {
            name: (*name).to_owned(),
            partitions: *partitions,
        })
        .collect();
    EmbeddedBroker::start(&topics, 64 << 20, None, None).expect("the embedded broker starts")
}

fn send_all(producer: &Producer, topic: &str, records: &[Sent]) -> Acks {
    let topic = producer.topic(topic).expect("a topic handle");
    let acks = Acks::default();
    for record in records {
        let headers = record
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_deref()));
        let outgoing = Outgoing {
            partition: Some(0),
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            timestamp: Some(record.timestamp),
            headers: OutgoingHeaders::new(headers),
            ..Outgoing::to(&topic)
        };
        producer
            .send(outgoing, &acks)
            .expect("the record is queued");
    }
    acks
}

/// A consumer of `topic`/0 from `offset` and the partition's queue, split
/// off before the assignment.
fn consume(
    kafka: &KafkaSettings,
    topic: &str,
    offset: i64,
) -> (
    Arc<BaseConsumer<DefaultConsumerContext>>,
    FetchQueue<DefaultConsumerContext>,
) {
    let consumer: Arc<BaseConsumer<DefaultConsumerContext>> = Arc::new(
        kafka
            .consumer("kafka-io-test")
            .create()
            .expect("a consumer"),
    );
    let queue = FetchQueue::split(&consumer, topic, 0).expect("the partition's queue");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Offset(offset))
        .expect("an assignment");
    consumer.assign(&assignment).expect("assigned");
    (consumer, queue)
}

/// Takes batches of at most `max` until `want` records came, or fails
/// after 30 s; the records with their offsets.
fn take_records(
    queue: &mut FetchQueue<DefaultConsumerContext>,
    want: usize,
    max: usize,
) -> Vec<(i64, Sent)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} records came",
            got.len()
        );
        let before = got.len();
        let taken = queue.take(max, Duration::from_millis(200), |r| {
            got.push((
                r.offset,
                Sent {
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.map(<[u8]>::to_vec),
                    timestamp: r.timestamp,
                    headers: r
                        .headers()
                        .map(|(name, value)| (name.into_owned(), value.map(<[u8]>::to_vec)))
                        .collect(),
                },
            ));
        });
        assert_eq!(taken, got.len() - before, "take counts what it handed");
        assert!(taken <= max, "a take of at most {max} handed {taken}");
        assert!(queue.next_error().is_none(), "no consume error");
    }
    got
}

#[test]
fn records_come_back_in_order_with_every_field_and_acks_give_the_last_offset() {
    let broker = broker(&[("io", 1)]);
    let kafka = KafkaSettings::new(broker.bootstrap());
    let producer = Producer::create(&kafka.producer()).expect("a producer");
    let records: Vec<Sent> = (0..2_500).map(sent).collect();
    let acks = send_all(&producer, "io", &records);
    assert_eq!(acks.wait().expect("all delivered"), 2_499);
    // Waiting again reports the same: nothing is outstanding.
    assert_eq!(acks.wait().expect("all delivered"), 2_499);

    let (_consumer, mut queue) = consume(&kafka, "io", 0);
    let got = take_records(&mut queue, records.len(), 1_000);
    let offsets: Vec<i64> = got.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets, (0..2_500).collect::<Vec<i64>>());
    for ((_, got), want) in got.iter().zip(&records) {
        assert_eq!(got, want);
    }
    // Nothing more: a take that finds nothing waits out its wait and hands none.
    assert_eq!(queue.take(10, Duration::from_millis(50), |_| {}), 0);
}

#[test]
fn a_seek_moves_the_next_take_to_its_offset() {
    let broker = broker(&[("seek", 1)]);
    let kafka = KafkaSettings::new(broker.bootstrap());
    let producer = Producer::create(&kafka.producer()).expect("a producer");
    let records: Vec<Sent> = (0..100).map(sent).collect();
    send_all(&producer, "seek", &records)
        .wait()
        .expect("all delivered");

    let (_consumer, mut queue) = consume(&kafka, "seek", 0);
    let first = take_records(&mut queue, 30, 30);
    assert_eq!(first.first().map(|(o, _)| *o), Some(0));
    queue
        .seek(Offset::Offset(10), Duration::from_secs(10))
        .expect("seek");
    let after = take_records(&mut queue, 5, 5);
    let offsets: Vec<i64> = after.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, [10, 11, 12, 13, 14]);
    assert_eq!(after[0].1, records[10]);
}

#[test]
fn a_record_that_cannot_be_delivered_fails_its_acks() {
    let broker = broker(&[("present", 1)]);
    let kafka = KafkaSettings::new(broker.bootstrap());
    let mut config = kafka.producer();
    // Without this the broker would create the missing topic on first use.
    config
        .set("allow.auto.create.topics", "false")
        .set("message.timeout.ms", "1000");
    let producer = Producer::create(&config).expect("a producer");
    let acks = send_all(&producer, "present", &[sent(1)]);
    let missing = producer.topic("absent").expect("a topic handle");
    producer
        .send(
            Outgoing {
                value: Some(b"lost"),
                ..Outgoing::to(&missing)
            },
            &acks,
        )
        .expect("queued");
    let started = Instant::now();
    let error = acks
        .wait()
        .expect_err("the undeliverable record fails the acks");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "settled within the message timeout"
    );
    assert!(
        error.to_string().to_lowercase().contains("timed out"),
        "{error}"
    );
}

#[test]
fn a_record_refused_when_sent_is_not_counted() {
    let broker = broker(&[("one", 1)]);
    let kafka = KafkaSettings::new(broker.bootstrap());
    let producer = Producer::create(&kafka.producer()).expect("a producer");
    let acks = send_all(&producer, "one", &[sent(1)]);
    assert_eq!(acks.wait().expect("delivered"), 0);
    // The topic's metadata is known now: a partition it lacks is refused.
    let topic = producer.topic("one").expect("a topic handle");
    let refused = producer.send(
        Outgoing {
            partition: Some(5),
            value: Some(b"nowhere"),
            ..Outgoing::to(&topic)
        },
        &acks,
    );
    assert!(refused.is_err(), "{refused:?}");
    // Nothing of it is outstanding: waiting returns at once.
    assert_eq!(acks.wait().expect("the first record's delivery"), 0);
}

/// `acks.wait()` on a thread, given up after `within`: a delivery report
/// that never came fails the test instead of hanging it.
fn wait_within(acks: Acks, within: Duration) -> i64 {
    let (settled, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || settled.send(acks.wait()));
    outcome
        .recv_timeout(within)
        .expect("the delivery was reported in time")
        .expect("delivered")
}

#[test]
fn deliveries_wake_the_sleeping_report_thread_and_dropping_the_producer_stops_it() {
    let broker = broker(&[("wake", 1)]);
    let kafka = KafkaSettings::new(broker.bootstrap());
    let producer = Producer::create(&kafka.producer()).expect("a producer");
    // Each record is sent once the thread has served the one before and
    // gone back to sleep, so each report must wake it.
    for i in 0..50 {
        let acks = send_all(&producer, "wake", &[sent(i)]);
        assert_eq!(
            wait_within(acks, Duration::from_secs(10)),
            i64::try_from(i).unwrap_or(-1)
        );
    }
    // Dropping the producer joins its report thread: it must wake and end.
    let topic = producer.topic("wake").expect("a topic handle");
    let (dropped, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(topic);
        drop(producer);
        dropped.send(())
    });
    done.recv_timeout(Duration::from_secs(10))
        .expect("dropping the producer ended its report thread");
}
