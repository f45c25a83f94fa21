//! `streamflix process`: consume the input topics from Kafka, publish the outputs to Kafka.
//!
//! May import: every layer of the crate, and the replay crate (Kafka client options, topic
//! creation).

use std::sync::Arc;

use anyhow::{Context, Result};
use streamflix_replay::kafka::{ensure_topics, KafkaOptions};

use crate::cli::args::ProcessArgs;
use crate::cli::report;
use crate::cli::start::{self, find_in, load_catalog, Start, Started};
use crate::io::kafka::{self, KafkaOutputs, Topics};

/// Runs `streamflix process`.
///
/// # Errors
/// Bad settings, the broker or the store failed.
pub fn process(args: &ProcessArgs) -> Result<()> {
    let ProcessArgs {
        brokers,
        topic_prefix,
        movies,
        state,
        group_id,
        input_timeout,
        kafka_property,
        snapshots,
        serve,
        core,
    } = args;
    let cfg = core.config()?;
    let movies = if movies.is_dir() { find_in(movies, "movies")? } else { movies.clone() };
    let catalog = Arc::new(load_catalog(&movies)?);
    let opts = KafkaOptions { brokers: brokers.clone(), extra: kafka_property.clone() };
    let topics = Topics::with_prefix(topic_prefix);
    // Created first: an idempotent producer takes a few hundred ms to connect and get its
    // producer id, which then overlaps the rest of the start-up instead of holding up the
    // first checkpoint's flush (through tansu, 0.3-0.6 s of a 2.2-2.7 s run).
    let sink = KafkaOutputs::new(&opts, topics.clone(), catalog.genre_names().to_vec())?;
    let partitions = kafka::input_partitions(&opts, &topics)?;
    let n = partitions.iter().filter(|(t, _)| *t == topics.ratings).count() as u32;
    let input = kafka::input_identity(&opts, &topics);
    let snapshots = snapshots.settings(None);
    let start = Start { mode: "kafka", state, input, cfg, catalog, partitions, serve, snapshots };
    let Started { mut pipeline, services } = start::start(start, Box::new(sink))?;
    let outs = [topics.sessions.as_str(), topics.alerts.as_str(), topics.dlq.as_str()];
    services
        .rt
        .block_on(ensure_topics(&opts, &outs, n.max(1), 1, &[("retention.ms".into(), "-1".into())]))
        .context("creating output topics")?;
    let timeout = std::time::Duration::from_secs((*input_timeout).max(1) as u64);
    let outcome =
        kafka::run(&opts, group_id, &mut pipeline, serve.exit_when_done, services.shutdown.flag(), timeout)?;
    report::summary(&pipeline, outcome.records, outcome.seconds);
    services.finish(serve.exit_when_done)?;
    drop(pipeline);
    start::seal(&args.state);
    Ok(())
}
