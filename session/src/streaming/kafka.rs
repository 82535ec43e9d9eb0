//! Kafka topics as a streaming source and sink, over the Kafka protocol
//! (the `rskafka` client: pure Rust, async, no C library).
//!
//! A source reads each batch's offset range of every partition, as Spark's
//! Kafka source does: the ranges are written ahead to the checkpoint, so a
//! replayed batch reads exactly the same records. A sink produces each
//! batch's rows with the batch id in an `ember.batch` header: at least once
//! (a replayed batch is produced again), and readers can drop repeats.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

/// How long one call to the brokers may take before it is given up.
const BROKER_BOUND: Duration = Duration::from_secs(15);

/// How far back a record batch's first offset is looked for.
const MAX_BATCH_RECORDS: i64 = 100_000;

/// Bytes asked for in one fetch.
const FETCH_BYTES: i32 = 8 << 20;

/// The columns of a Kafka source that declares none, as Spark's.
pub(crate) fn record_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]))
}

/// One topic on its brokers, with a client per partition.
pub(crate) struct KafkaTopic {
    brokers: String,
    topic: String,
    partitions: BTreeMap<i32, PartitionClient>,
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    brokers: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(BROKER_BOUND, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("Kafka at {brokers}: {what}: {e}")),
        Err(_) => Err(format!(
            "Kafka at {brokers}: {what}: no answer within {BROKER_BOUND:?}; is the broker \
             running there?"
        )),
    }
}

impl KafkaTopic {
    /// Connects to `brokers` (comma-separated `host:port`) and finds
    /// `topic`'s partitions; a topic the brokers do not have is an error
    /// that lists those they have.
    pub(crate) async fn connect(brokers: &str, topic: &str) -> Result<Self, String> {
        let client = Self::client(brokers).await?;
        let topics = bounded("listing topics", brokers, client.list_topics()).await?;
        let Some(found) = topics.iter().find(|t| t.name == topic) else {
            let mut names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
            names.sort_unstable();
            return Err(format!(
                "Kafka at {brokers} has no topic '{topic}' (it has: {}); create it first",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        };
        let mut partitions = BTreeMap::new();
        for &partition in &found.partitions {
            let client = bounded(
                "connecting to a partition",
                brokers,
                client.partition_client(topic, partition, UnknownTopicHandling::Error),
            )
            .await?;
            partitions.insert(partition, client);
        }
        Ok(Self {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            partitions,
        })
    }

    async fn client(brokers: &str) -> Result<Client, String> {
        let bootstrap: Vec<String> = brokers
            .split(',')
            .map(|b| b.trim().trim_start_matches("kafka://").to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if bootstrap.is_empty() {
            return Err("a Kafka LOCATION is 'host:port[,host:port...]'".to_string());
        }
        bounded(
            "connecting",
            brokers,
            ClientBuilder::new(bootstrap).client_id("ember").build(),
        )
        .await
    }

    /// Every partition's earliest or next (latest) offset.
    pub(crate) async fn offsets(&self, latest: bool) -> Result<BTreeMap<i32, i64>, String> {
        let at = if latest {
            OffsetAt::Latest
        } else {
            OffsetAt::Earliest
        };
        let mut offsets = BTreeMap::new();
        for (&partition, client) in &self.partitions {
            let mut offset =
                bounded("reading offsets", &self.brokers, client.get_offset(at)).await?;
            if latest {
                // A fetch's high watermark too: some brokers (tansu's
                // in-memory storage) answer ListOffsets with the end of the
                // last record batch's first record, not of its last.
                let (_, high) = bounded(
                    "reading the high watermark",
                    &self.brokers,
                    client.fetch_records(offset, 1..2, 0),
                )
                .await?;
                offset = offset.max(high);
            }
            offsets.insert(partition, offset);
        }
        Ok(offsets)
    }

    /// The records `start..end` of each partition, as rows of
    /// [`record_schema`], in partition and offset order.
    pub(crate) async fn read(
        &self,
        ranges: &BTreeMap<i32, (i64, i64)>,
    ) -> Result<RecordBatch, String> {
        let mut keys: Vec<Option<Vec<u8>>> = Vec::new();
        let mut values: Vec<Option<Vec<u8>>> = Vec::new();
        let mut partitions = Vec::new();
        let mut offsets = Vec::new();
        let mut stamps = Vec::new();
        for (&partition, &(start, end)) in ranges {
            let Some(client) = self.partitions.get(&partition) else {
                return Err(format!(
                    "Kafka topic {}: partition {partition} is gone",
                    self.topic
                ));
            };
            let mut next = start;
            while next < end {
                let (mut records, _high) = bounded(
                    "fetching records",
                    &self.brokers,
                    // The records are there (the batch's range ends at or
                    // before the high watermark): no wait for more.
                    client.fetch_records(next, 1..FETCH_BYTES, 0),
                )
                .await?;
                // A broker that answers a fetch only at a record batch's
                // first offset (tansu's in-memory storage) may answer one
                // in the middle of a batch with the batches after it:
                // the rest of the batch holding `next` comes from
                // `fetch_containing`, or it would be skipped without a
                // word. Only a gap the broker really has is stepped over.
                let first_from = |records: &[rskafka::record::RecordAndOffset]| {
                    records
                        .iter()
                        .map(|r| r.offset)
                        .filter(|&o| o >= next)
                        .min()
                };
                if first_from(&records) != Some(next) {
                    let containing = self.fetch_containing(client, next).await?;
                    let earliest = |found: Option<i64>| found.unwrap_or(i64::MAX);
                    if earliest(first_from(&containing)) < earliest(first_from(&records)) {
                        records = containing;
                    }
                }
                let mut advanced = false;
                for r in records {
                    if r.offset < next {
                        continue;
                    }
                    if r.offset >= end {
                        break;
                    }
                    advanced = true;
                    next = r.offset + 1;
                    keys.push(r.record.key);
                    values.push(r.record.value);
                    partitions.push(partition);
                    offsets.push(r.offset);
                    stamps.push(r.record.timestamp.timestamp_micros());
                }
                if !advanced {
                    return Err(format!(
                        "Kafka topic {} partition {partition}: offsets {next}..{end} were written \
                         ahead for this batch but the broker no longer has them (retention?)",
                        self.topic
                    ));
                }
            }
        }
        let rows = keys.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from_iter(keys)),
            Arc::new(BinaryArray::from_iter(values)),
            Arc::new(StringArray::from(vec![self.topic.as_str(); rows])),
            Arc::new(Int32Array::from(partitions)),
            Arc::new(Int64Array::from(offsets)),
            Arc::new(TimestampMicrosecondArray::from(stamps)),
        ];
        RecordBatch::try_new(record_schema(), columns).map_err(|e| e.to_string())
    }

    /// The records of the record batch holding `offset`, for brokers that
    /// answer a fetch only at a batch's first offset (tansu's in-memory
    /// storage; Kafka answers with the whole batch): its first offset is
    /// looked for backwards, one fetch per offset, at most
    /// [`MAX_BATCH_RECORDS`] back.
    async fn fetch_containing(
        &self,
        client: &PartitionClient,
        offset: i64,
    ) -> Result<Vec<rskafka::record::RecordAndOffset>, String> {
        let lowest = offset.saturating_sub(MAX_BATCH_RECORDS).max(0);
        for base in (lowest..offset).rev() {
            let (records, _) = bounded(
                "fetching records",
                &self.brokers,
                client.fetch_records(base, 1..FETCH_BYTES, 0),
            )
            .await?;
            // `base` was mid-batch if what came back starts after it
            // (the batches after, or nothing): look further back.
            if records.iter().all(|r| r.offset > base) {
                continue;
            }
            // The batch starting at `base` holds `offset`, or ends before
            // it (a gap the broker really has).
            if records.iter().any(|r| r.offset >= offset) {
                return Ok(records);
            }
            break;
        }
        Ok(Vec::new())
    }

    /// Produces `rows` (a `value` column, and a `key` column if there is
    /// one; strings or bytes) with `ember.batch = batch` in each record's
    /// headers, spread over the partitions by key (round robin without).
    pub(crate) async fn produce(&self, batch: u64, rows: &[RecordBatch]) -> Result<u64, String> {
        let count = self.partitions.len().max(1);
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        let ids: Vec<i32> = self.partitions.keys().copied().collect();
        let mut produced = 0u64;
        let now = rskafka::chrono::Utc::now();
        for rows in rows {
            let value = bytes_column(rows, "value")?.ok_or_else(|| {
                "a Kafka sink writes a 'value' column (and 'key' if there is one): name a \
                 column value, such as SELECT to_json(...) AS value, or CAST(x AS VARCHAR) AS \
                 value"
                    .to_string()
            })?;
            let key = bytes_column(rows, "key")?;
            for i in 0..rows.num_rows() {
                let key = key.as_ref().and_then(|k| k[i].clone());
                let slot = match &key {
                    Some(k) => (fnv1a(k) % count as u64) as usize,
                    None => (produced as usize) % count,
                };
                let record = Record {
                    key,
                    value: value[i].clone(),
                    headers: BTreeMap::from([(
                        "ember.batch".to_string(),
                        batch.to_string().into_bytes(),
                    )]),
                    timestamp: now,
                };
                by_partition.entry(ids[slot]).or_default().push(record);
                produced += 1;
            }
        }
        for (partition, records) in by_partition {
            let Some(client) = self.partitions.get(&partition) else {
                continue;
            };
            // Requests of a few thousand records each.
            let mut records = records.into_iter().peekable();
            while records.peek().is_some() {
                let chunk: Vec<Record> = records.by_ref().take(5000).collect();
                bounded(
                    "producing records",
                    &self.brokers,
                    client.produce(chunk, Compression::NoCompression),
                )
                .await?;
            }
        }
        Ok(produced)
    }
}

/// Column `name` of `rows` as bytes per row, if there is one.
fn bytes_column(rows: &RecordBatch, name: &str) -> Result<Option<Vec<Option<Vec<u8>>>>, String> {
    let Ok(index) = rows.schema().index_of(name) else {
        return Ok(None);
    };
    let column = rows.column(index);
    let text = datafusion::arrow::compute::cast(column, &DataType::Utf8).ok();
    let bytes: Vec<Option<Vec<u8>>> = if let Some(b) = column.as_any().downcast_ref::<BinaryArray>()
    {
        (0..b.len())
            .map(|i| b.is_valid(i).then(|| b.value(i).to_vec()))
            .collect()
    } else if let Some(s) = text
        .as_ref()
        .and_then(|t| t.as_any().downcast_ref::<StringArray>())
    {
        (0..s.len())
            .map(|i| s.is_valid(i).then(|| s.value(i).as_bytes().to_vec()))
            .collect()
    } else {
        return Err(format!(
            "a Kafka sink's '{name}' column must be text or bytes, not {}",
            column.data_type()
        ));
    };
    Ok(Some(bytes))
}

/// A stable hash of a key, so a key always goes to the same partition.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Decodes each record's value as a JSON object into `schema`'s columns
/// (a missing field is NULL), in parts decoded side by side, one per core
/// (each part a partition of the batch's table).
pub(crate) fn decode_json(
    records: &RecordBatch,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, String> {
    let values = records
        .column(1)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or("Kafka values are not bytes")?;
    let ranges = parts(values.len());
    std::thread::scope(|scope| {
        let decoding: Vec<_> = ranges
            .into_iter()
            .map(|range| scope.spawn(move || decode_range(values, range, schema)))
            .collect();
        decoding
            .into_iter()
            .map(|d| {
                d.join()
                    .unwrap_or_else(|_| Err("a JSON decoder panicked".to_string()))
            })
            .collect()
    })
}

/// `rows` split into one range per core, at least 10,000 rows each.
pub(crate) fn parts(rows: usize) -> Vec<std::ops::Range<usize>> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let count = cores.min(rows / 10_000).max(1);
    let size = rows.div_ceil(count);
    (0..count)
        .map(|i| i * size..((i + 1) * size).min(rows))
        .filter(|r| !r.is_empty() || rows == 0)
        .collect()
}

fn decode_range(
    values: &BinaryArray,
    range: std::ops::Range<usize>,
    schema: &SchemaRef,
) -> Result<RecordBatch, String> {
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(8192)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    // Every value on a line of its own, decoded in one pass.
    let mut lines = Vec::new();
    for i in range {
        if values.is_valid(i) {
            lines.extend_from_slice(values.value(i));
            lines.push(b'\n');
        }
    }
    let mut out = Vec::new();
    let mut rest: &[u8] = &lines;
    while !rest.is_empty() {
        let used = decoder.decode(rest).map_err(|e| {
            format!("a Kafka record's value is not JSON of the declared columns: {e}")
        })?;
        if used == 0 {
            if let Some(batch) = decoder.flush().map_err(|e| e.to_string())? {
                out.push(batch);
            }
            continue;
        }
        rest = &rest[used..];
    }
    if let Some(batch) = decoder.flush().map_err(|e| e.to_string())? {
        out.push(batch);
    }
    datafusion::arrow::compute::concat_batches(schema, &out).map_err(|e| e.to_string())
}
