//! The embedded broker: librdkafka's mock cluster, a Kafka wire-protocol
//! peer on 127.0.0.1 that any Kafka client can reach. eddy vendors librdkafka
//! with a patched mock (`vendor/rdkafka-sys/PATCHES.md`): transactions,
//! fencing, CreateTopics, configurable retention, and persistence. Given a
//! folder it keeps its topics, logs and committed offsets there, so a
//! daemon restarted on the same data directory resumes where it stopped, as
//! it would on Apache Kafka; without one it lives in memory.

use super::TopicSpec;
use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer as _};
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// How much each partition of an embedded broker keeps by default.
pub const DEFAULT_RETENTION_BYTES: u64 = 1 << 30;

/// The mock cluster and the client handle it runs on. Not `Send`: it lives
/// on the thread that created it.
struct MockCluster {
    cluster: NonNull<rdsys::rd_kafka_mock_cluster_t>,
    // Dropped after the cluster (see Drop): the cluster runs on its handle.
    _client: BaseProducer,
}

impl MockCluster {
    fn new(retention_bytes: u64, port: Option<u16>, data: Option<&Path>) -> anyhow::Result<Self> {
        let client: BaseProducer = ClientConfig::new()
            .set("log_level", "3")
            .create()
            .context("could not create the broker's client handle")?;
        // SAFETY: the handle is valid and outlives the cluster, which is
        // destroyed first in Drop.
        let raw = unsafe {
            rdsys::rd_kafka_mock_cluster_new_on_port(
                client.client().native_ptr(),
                1,
                port.map_or(0, i32::from),
            )
        };
        let cluster = NonNull::new(raw).with_context(|| match port {
            Some(port) => format!(
                "could not start the broker on 127.0.0.1:{port} (is the port in use? pick \
                 another with --port, or leave it out for a free one)"
            ),
            None => "librdkafka could not start the mock cluster".to_owned(),
        })?;
        let max_bytes = usize::try_from(retention_bytes).unwrap_or(usize::MAX);
        // SAFETY: `cluster` is a live mock cluster; no topic exists yet, as
        // the function requires.
        unsafe {
            rdsys::rd_kafka_mock_set_partition_retention(cluster.as_ptr(), max_bytes, 100_000_000)
        };
        let this = Self {
            cluster,
            _client: client,
        };
        if let Some(dir) = data {
            this.persist(dir)?;
        }
        Ok(this)
    }

    /// Loads what an earlier broker kept in `dir` and keeps writing there.
    fn persist(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        let path = dir
            .to_str()
            .and_then(|s| CString::new(s).ok())
            .with_context(|| format!("{} is not a usable path", dir.display()))?;
        // SAFETY: the cluster is live and no client has used it yet, as the
        // function requires; `path` outlives the call, which copies it.
        let err =
            unsafe { rdsys::rd_kafka_mock_cluster_persist(self.cluster.as_ptr(), path.as_ptr()) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!(
                "could not keep the broker's data in {} ({err:?}): check that the folder is \
                 writable, or start without it",
                dir.display()
            );
        }
        Ok(())
    }

    fn bootstrap(&self) -> String {
        // SAFETY: the cluster is live; the string it returns lives as long
        // as the cluster and is copied here.
        unsafe {
            CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(
                self.cluster.as_ptr(),
            ))
        }
        .to_string_lossy()
        .into_owned()
    }

    fn create_topic(&self, topic: &TopicSpec) -> anyhow::Result<()> {
        let name = CString::new(topic.name.as_str()).context("topic names cannot contain NUL")?;
        // SAFETY: the cluster is live and `name` outlives the call.
        let err = unsafe {
            rdsys::rd_kafka_mock_topic_create(
                self.cluster.as_ptr(),
                name.as_ptr(),
                topic.partitions,
                1,
            )
        };
        match err {
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
            // Kept from an earlier start (persistence): it stays as it is.
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS => Ok(()),
            err => bail!("could not create topic {}: {err:?}", topic.name),
        }
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_mock_cluster_new and destroyed once,
        // before the client handle it runs on.
        unsafe { rdsys::rd_kafka_mock_cluster_destroy(self.cluster.as_ptr()) };
    }
}

/// A running embedded broker; dropping it stops the broker.
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster on `port` (a free one if `None`),
    /// keeping up to `retention_bytes` per partition, with what `data` holds
    /// from an earlier start (and kept there from now on; in memory if
    /// `None`), and creates those of `topics` that do not exist yet.
    pub fn start(
        topics: &[TopicSpec],
        retention_bytes: u64,
        port: Option<u16>,
        data: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let topics = topics.to_vec();
        let thread = std::thread::Builder::new()
            .name("eddy-broker".into())
            .spawn(move || {
                let started =
                    MockCluster::new(retention_bytes, port, data.as_deref()).and_then(|cluster| {
                        for topic in &topics {
                            cluster.create_topic(topic)?;
                        }
                        Ok(cluster)
                    });
                let cluster = match started {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap()));
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

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
