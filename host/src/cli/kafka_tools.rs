//! `eddy produce` and `eddy consume`: enough of a Kafka client that a demo
//! needs no other tool.

use super::args::{BrokerArgs, ConsumeArgs, Format, ProduceArgs};
use crate::config::ServeConfig;
use crate::kafka::{Connection, KafkaMetadata, KafkaSettings};
use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use std::io::Write as _;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt as _;

/// The cluster to reach: `--brokers`, else the configuration file's, else
/// the daemon's (asked over gRPC); with the file's [kafka] table.
async fn kafka(args: &BrokerArgs) -> anyhow::Result<KafkaSettings> {
    let config = match &args.config {
        Some(file) => Some(ServeConfig::load(Some(file), serde_json::json!({}))?),
        None => None,
    };
    let from_file = config
        .as_ref()
        .map(|c| c.brokers.clone())
        .filter(|b| !b.is_empty());
    let brokers = match (&args.brokers, from_file) {
        (Some(b), _) => b.clone(),
        (None, Some(b)) => b,
        (None, None) => super::client::daemon_brokers(&args.server)
            .await
            .context("no --brokers given and the daemon could not be asked for its broker")?,
    };
    let mut settings = KafkaSettings::new(brokers);
    if let Some(config) = config {
        settings.connection = Connection::resolve(&config.kafka)?;
    }
    Ok(settings)
}

/// Produces one record per stdin line; waits until every record is acknowledged.
pub(super) async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let kafka = kafka(&args.broker).await?;
    let brokers = kafka.brokers.clone();
    let producer: FutureProducer = kafka
        .cli_client()
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .context("could not create a producer")?;
    // Fail fast, with a clear message, when the broker cannot be reached.
    producer
        .client()
        .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
        .with_context(|| format!("could not reach Kafka at {brokers}"))?;
    let topic = args.topic.as_str();
    let separator = args.key_separator.as_deref();
    // Lines are produced as they arrive, so `tail -f log | eddy produce`
    // works; at most MAX_IN_FLIGHT deliveries are awaited at any time.
    const MAX_IN_FLIGHT: usize = 10_000;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut deliveries = std::collections::VecDeque::new();
    let mut count = 0u64;
    while let Some(line) = lines.next_line().await.context("could not read stdin")? {
        let (key, value) = match separator.and_then(|sep| line.split_once(sep)) {
            Some((k, v)) => (Some(k), v),
            None => (None, line.as_str()),
        };
        let mut record = FutureRecord::<str, str>::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push_back(delivery);
                    break;
                }
                // The local queue is full: wait for the oldest delivery.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    match deliveries.pop_front() {
                        Some(oldest) => delivered(oldest, topic, &brokers).await?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => anyhow::bail!("could not produce to {topic}: {e}"),
            }
        }
        count += 1;
        if deliveries.len() >= MAX_IN_FLIGHT
            && let Some(oldest) = deliveries.pop_front()
        {
            delivered(oldest, topic, &brokers).await?;
        }
    }
    for delivery in deliveries {
        delivered(delivery, topic, &brokers).await?;
    }
    producer.flush(Duration::from_secs(10))?;
    eprintln!("produced {count} records to {topic}");
    Ok(())
}

async fn delivered(
    delivery: rdkafka::producer::DeliveryFuture,
    topic: &str,
    brokers: &str,
) -> anyhow::Result<()> {
    delivery
        .await
        .context("producer closed")?
        .map_err(|(e, _)| anyhow::anyhow!("could not produce to {topic} at {brokers}: {e}"))?;
    Ok(())
}

/// Reads the topic's partitions directly (no consumer group).
pub(super) async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let kafka = kafka(&args.broker).await?;
    tokio::task::spawn_blocking(move || consume_blocking(&args, &kafka)).await?
}

fn consume_blocking(args: &ConsumeArgs, kafka: &KafkaSettings) -> anyhow::Result<()> {
    let consumer: BaseConsumer = kafka
        .cli_client()
        .set("group.id", "eddy-cli")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("could not create a consumer")?;
    let partitions = KafkaMetadata::new(kafka)?.partition_count(&args.topic)?;
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&args.topic, p, start)?;
    }
    consumer.assign(&tpl)?;
    let mut seen = 0u64;
    let mut last = Instant::now();
    let mut out = std::io::stdout().lock();
    while args.count.is_none_or(|n| seen < n) {
        if args.idle_timeout.is_some_and(|t| last.elapsed() >= t) {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("consume failed")?;
        last = Instant::now();
        seen += 1;
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        match args.format {
            Format::Json => {
                let headers: Vec<_> = message
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| serde_json::json!([h.key, text(h.value)]))
                            .collect()
                    })
                    .unwrap_or_default();
                let line = serde_json::json!({
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "timestamp": message.timestamp().to_millis(),
                    "key": text(message.key()),
                    "value": text(message.payload()),
                    "headers": headers,
                });
                writeln!(out, "{line}")?;
            }
            Format::Text => {
                let value = text(message.payload()).unwrap_or_default();
                if args.print_key {
                    let key = text(message.key()).unwrap_or_default();
                    writeln!(out, "{key}\t{value}")?;
                } else {
                    writeln!(out, "{value}")?;
                }
            }
        }
        out.flush()?;
    }
    Ok(())
}
