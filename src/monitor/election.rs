//! Which replica's monitor speaks for the consumer group.
//!
//! Every replica (role `all` or `monitor`) joins the election group
//! `<consumer.group_id>-monitor-election`, subscribed to the alerts topic, and never reads from
//! it: assigned partitions are paused at once. The member that holds partition 0 of the alerts
//! topic leads: it alone reads every partition of the monitored topics, and so alone computes
//! group-level errors and drift and raises alerts and decisions. Kafka's group protocol is the
//! whole election: when the leader dies, its session times out (`session.timeout.ms`) and the
//! partition, with the leadership, goes to another member. `cooperative-sticky` keeps it where it
//! is while the leader lives, so a replica joining or leaving elsewhere does not move it.
//!
//! The alerts topic is used because every monitor already needs it and it is small: a
//! dedicated coordination topic would be one more topic for users to create.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

use crate::config::Config;
use crate::kafka::{consumer_side_config, ClusterError};

/// The election group's id.
pub fn group_id(config: &Config) -> String {
    format!("{}-monitor-election", config.consumer.group_id)
}

/// Tracks whether this member holds partition 0 of the election topic.
struct ElectionContext {
    topic: String,
    leader: AtomicBool,
}

impl ClientContext for ElectionContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::observe_client_error(&error, reason);
    }
}

impl ConsumerContext for ElectionContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Leadership ends before the partition is handed over, so two leaders never overlap in
        // this process's view (the old leader steps down at its next poll).
        if let Rebalance::Revoke(tpl) = rebalance {
            if tpl.elements().iter().any(|e| e.topic() == self.topic && e.partition() == 0) {
                self.leader.store(false, Ordering::SeqCst);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        let Ok(held) = consumer.assignment() else { return };
        // Never fetch: the assignment is the whole point.
        let _ = consumer.pause(&held);
        let leads = held.elements().iter().any(|e| e.topic() == self.topic && e.partition() == 0);
        self.leader.store(leads, Ordering::SeqCst);
    }
}

/// This replica's membership in the election group.
pub struct Election {
    consumer: BaseConsumer<ElectionContext>,
}

impl Election {
    /// Joins the election group (the alerts topic must exist; the monitor checks that first).
    pub fn join(config: &Config) -> Result<Election, ClusterError> {
        let mut cc = consumer_side_config(config);
        cc.set("group.id", group_id(config))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("partition.assignment.strategy", "cooperative-sticky");
        let topic = config.topics.alerts.clone();
        let context = ElectionContext { topic: topic.clone(), leader: AtomicBool::new(false) };
        let consumer: BaseConsumer<ElectionContext> = cc.create_with_context(context).map_err(ClusterError::Client)?;
        consumer.subscribe(&[&topic]).map_err(ClusterError::Client)?;
        Ok(Election { consumer })
    }

    /// Serves the group protocol for up to `timeout`; returns whether this replica leads.
    pub fn poll(&self, timeout: Duration) -> bool {
        // A record here would mean a fetch raced the pause: it is dropped, never used.
        let _ = self.consumer.poll(timeout);
        self.consumer.context().leader.load(Ordering::SeqCst)
    }
}
