//! Topic administration: `streamcast topics create`, and `--create-topics` at start-up.
//!
//! The worker never creates topics on its own; it reports the missing ones and stops.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

/// Creates `topics` with `partitions` partitions each; existing topics are left as they are.
/// Returns the names that were created.
pub async fn create_topics(
    client: &ClientConfig,
    topics: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<Vec<String>, rdkafka::error::KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new, &options).await?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic = %name, error = %code, "Topic creation failed.");
                })
            }
        }
    }
    Ok(created)
}
