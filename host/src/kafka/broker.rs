//! The embedded broker: librdkafka's mock cluster, a Kafka wire-protocol
//! peer on 127.0.0.1 that any Kafka client can reach. It lives in memory for
//! as long as its owner.

use super::TopicSpec;
use anyhow::Context as _;
use rdkafka::mocking::MockCluster;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// A running embedded broker; dropping it stops the broker.
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster and creates `topics` in it.
    pub fn start(topics: &[TopicSpec]) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let topics = topics.to_vec();
        // The mock cluster handle is not Send: it lives on its own thread.
        let thread = std::thread::Builder::new()
            .name("eddy-broker".into())
            .spawn(move || {
                let cluster = match start_cluster(&topics) {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until the owner is dropped.
                let _ = stop_rx.recv();
                drop(cluster);
            })?;
        let bootstrap = ready_rx
            .recv()
            .context("the embedded broker thread exited before starting")??;
        Ok(Self {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The broker's bootstrap address.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

fn start_cluster(
    topics: &[TopicSpec],
) -> anyhow::Result<MockCluster<'static, rdkafka::producer::DefaultProducerContext>> {
    let cluster = MockCluster::new(1).context("could not start the embedded Kafka broker")?;
    for topic in topics {
        cluster
            .create_topic(&topic.name, topic.partitions, 1)
            .with_context(|| format!("could not create topic {}", topic.name))?;
    }
    Ok(cluster)
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
