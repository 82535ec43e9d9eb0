//! Stage plans as bytes, so the driver can send a stage to an executor in
//! another process: DataFusion's operators travel as datafusion-proto
//! messages, Ember's shuffle nodes as extension nodes written by [`EmberCodec`].

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, ColumnarValue, ScalarUDF, WindowUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_proto_converter, physical_plan_to_bytes_with_proto_converter,
};
use datafusion_proto::physical_plan::from_proto::parse_physical_expr_with_converter;
use datafusion_proto::physical_plan::from_proto::{
    parse_physical_sort_exprs, parse_protobuf_partitioning,
};
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::to_proto::{
    serialize_partitioning, serialize_physical_sort_exprs,
};
use datafusion_proto::physical_plan::{
    AsExecutionPlan, PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::{self, physical_plan_node::PhysicalPlanType};

use crate::error::EngineError;
use crate::padded::PaddedSideExec;
use crate::shuffle::{ReadMode, ShuffleOutput, ShuffleReaderExec, ShuffleWriterExec};
use crate::stream_state::{MergeSpec, StateMergeExec};

type DfResult<T> = datafusion::error::Result<T>;

/// Serializes a stage plan for an executor.
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>, EngineError> {
    physical_plan_to_bytes_with_proto_converter(plan, &EmberCodec, &SubqueryValues)
        .map(Vec::from)
        .map_err(EngineError::PlanEncode)
}

/// Ember's changes to datafusion-proto's plan conversion:
/// - each scalar subquery expression is written as the literal it evaluates
///   to. The driver runs scalar subqueries as jobs of their own before it
///   cuts the query that reads them (`subquery`), so by the time a stage is
///   shipped every value is known; the executor gets the value.
/// - a `generate_series` scan projected to no columns (`count(*)`) travels
///   with its projected, empty schema but comes back generating the series
///   column, so batches and schema disagree; it is rebuilt as the series
///   under an empty projection, which keeps the row counts.
struct SubqueryValues;

impl PhysicalProtoConverterExtension for SubqueryValues {
    fn proto_to_execution_plan(
        &self,
        proto: &protobuf::PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(PhysicalPlanType::GenerateSeries(series)) = &proto.physical_plan_type
            && let Some(full) = series_without_projection(series)?
        {
            let node = protobuf::PhysicalPlanNode {
                physical_plan_type: Some(PhysicalPlanType::GenerateSeries(full)),
            };
            let series = node.try_into_physical_plan_with_context(ctx, self)?;
            let no_columns: Vec<ProjectionExpr> = Vec::new();
            return Ok(Arc::new(ProjectionExec::try_new(no_columns, series)?));
        }
        proto.try_into_physical_plan_with_context(ctx, self)
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> DfResult<protobuf::PhysicalPlanNode> {
        protobuf::PhysicalPlanNode::try_from_physical_plan_with_converter(
            Arc::clone(plan),
            codec,
            self,
        )
    }

    fn proto_to_physical_expr(
        &self,
        proto: &protobuf::PhysicalExprNode,
        input_schema: &Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> DfResult<Arc<dyn PhysicalExpr>> {
        parse_physical_expr_with_converter(proto, input_schema, ctx, self)
    }

    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> DfResult<protobuf::PhysicalExprNode> {
        if expr.downcast_ref::<ScalarSubqueryExpr>().is_some() {
            // The expression ignores its input: it reads the stored value.
            let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
            let value = match expr.evaluate(&empty)? {
                ColumnarValue::Scalar(value) => value,
                ColumnarValue::Array(_) => {
                    return Err(DataFusionError::Internal(
                        "a scalar subquery evaluated to an array".into(),
                    ));
                }
            };
            let literal: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(value));
            return serialize_physical_expr_with_converter(&literal, codec, self);
        }
        serialize_physical_expr_with_converter(expr, codec, self)
    }
}

/// Rebuilds a stage plan from `encode_plan`'s bytes. Functions and tables are
/// resolved through `ctx` (its function registry and runtime environment).
pub fn decode_plan(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
    // datafusion-proto panics on some messages it cannot handle (an Avro scan
    // without its `avro` feature); an executor must refuse them, not die.
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        physical_plan_from_bytes_with_proto_converter(bytes, ctx, &EmberCodec, &SubqueryValues)
    }));
    match decoded {
        Ok(plan) => plan.map_err(EngineError::PlanDecode),
        Err(panic) => Err(EngineError::PlanDecode(DataFusionError::Internal(format!(
            "datafusion-proto gave up on the plan: {}",
            panic_message(panic.as_ref())
        )))),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "no message"
    }
}

/// The datafusion-proto extension codec for Ember's plan nodes
/// (`ShuffleWriterExec`, `ShuffleReaderExec`, `PaddedSideExec`,
/// `StateMergeExec`).
///
/// A node's payload is a fixed header (`EMB`, format version, node kind,
/// stage id, and the node's small fields as bytes) followed, when the node
/// has expressions or a schema, by one datafusion-proto `PhysicalPlanNode`
/// used as a container: a `RepartitionExecNode` carrying the partitioning,
/// over a `MemoryScanExecNode` carrying schema and orderings for a reader.
/// (The engine has no `prost` of its own; `AsExecutionPlan` encodes these.)
#[derive(Debug, Default, Clone, Copy)]
pub struct EmberCodec;

const MAGIC: [u8; 4] = *b"EMB\x01";
const WRITER: u8 = 1;
const READER: u8 = 2;
const PADDED_SIDE: u8 = 3;
const STATE_MERGE: u8 = 4;
const PASSTHROUGH: u8 = 0;
const REPARTITION: u8 = 1;
const ALL_MAPS: u8 = 0;
const SAME_INDEX: u8 = 1;

impl PhysicalExtensionCodec for EmberCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut payload = Payload::open(buf)?;
        let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
        let decoder = Decoder {
            ctx: &decode_ctx,
            converter: proto_converter,
        };
        match payload.u8("node kind")? {
            WRITER => decoder.writer(payload, inputs),
            READER => decoder.reader(payload, inputs),
            PADDED_SIDE => padded_side(payload, inputs),
            STATE_MERGE => state_merge(payload, inputs),
            other => Err(malformed(format!("unknown node kind {other}")).into()),
        }
    }

    // Reached when the executor's registry lacks a function the plan
    // names: the application registers it, and this process is not running
    // the application's binary (or a different build of it).
    fn try_decode_udf(&self, name: &str, _buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        Err(unknown_function("scalar", name))
    }

    fn try_decode_udaf(&self, name: &str, _buf: &[u8]) -> DfResult<Arc<AggregateUDF>> {
        Err(unknown_function("aggregate", name))
    }

    fn try_decode_udwf(&self, name: &str, _buf: &[u8]) -> DfResult<Arc<WindowUDF>> {
        Err(unknown_function("window", name))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let encoder = Encoder {
            codec: self,
            converter: proto_converter,
        };
        if let Some(writer) = node.downcast_ref::<ShuffleWriterExec>() {
            encoder.writer(writer, buf)
        } else if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            encoder.reader(reader, buf)
        } else if node.downcast_ref::<PaddedSideExec>().is_some() {
            header(buf, PADDED_SIDE, 0);
            Ok(())
        } else if let Some(merge) = node.downcast_ref::<StateMergeExec>() {
            header(buf, STATE_MERGE, 0);
            serde_json::to_writer(&mut *buf, merge.spec())
                .map_err(|e| DataFusionError::External(Box::new(e)))
        } else {
            Err(DataFusionError::NotImplemented(format!(
                "{} is neither a DataFusion operator datafusion-proto knows nor an Ember \
                 node",
                node.name()
            )))
        }
    }
}

struct Encoder<'a> {
    codec: &'a EmberCodec,
    converter: &'a dyn PhysicalProtoConverterExtension,
}

impl Encoder<'_> {
    fn writer(&self, writer: &ShuffleWriterExec, buf: &mut Vec<u8>) -> DfResult<()> {
        header(buf, WRITER, writer.stage());
        match writer.output() {
            ShuffleOutput::Passthrough => buf.push(PASSTHROUGH),
            ShuffleOutput::Repartition(partitioning) => {
                buf.push(REPARTITION);
                self.container(partitioning, None)?.try_encode(buf)?;
            }
        }
        Ok(())
    }

    fn reader(&self, reader: &ShuffleReaderExec, buf: &mut Vec<u8>) -> DfResult<()> {
        header(buf, READER, reader.stage());
        put_u64(buf, reader.map_partitions() as u64);
        buf.push(match reader.mode() {
            ReadMode::AllMaps => ALL_MAPS,
            ReadMode::SameIndex => SAME_INDEX,
        });
        let ranges = reader.ranges().unwrap_or_default();
        put_u64(buf, ranges.len() as u64);
        for &(start, end) in ranges {
            put_u64(buf, start as u64);
            put_u64(buf, end as u64);
        }
        let properties = reader.properties();
        let eq_properties = &properties.eq_properties;
        // A constant column is sorted, and travels as a one-column ordering:
        // a window partitioned by it needs to know it needs no sort.
        let constants = eq_properties
            .constants()
            .into_iter()
            .map(|constant| LexOrdering::new([PhysicalSortExpr::new_default(constant.expr)]));
        let sort_information = eq_properties
            .oeq_class()
            .iter()
            .cloned()
            .map(Some)
            .chain(constants)
            .flatten()
            .map(|ordering| {
                Ok(protobuf::PhysicalSortExprNodeCollection {
                    physical_sort_expr_nodes: serialize_physical_sort_exprs(
                        ordering.iter().cloned(),
                        self.codec,
                        self.converter,
                    )?,
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        // Columns known equal (a join's keys) travel too: a sort on one
        // orders the other for the operators above. Each class is a
        // one-collection scan node in one of the container's byte fields.
        let equal_columns = eq_properties
            .eq_group()
            .iter()
            .filter(|class| class.len() > 1)
            .map(|class| {
                let node = protobuf::PhysicalPlanNode {
                    physical_plan_type: Some(PhysicalPlanType::MemoryScan(
                        protobuf::MemoryScanExecNode {
                            sort_information: vec![protobuf::PhysicalSortExprNodeCollection {
                                physical_sort_expr_nodes: serialize_physical_sort_exprs(
                                    class.iter().cloned().map(PhysicalSortExpr::new_default),
                                    self.codec,
                                    self.converter,
                                )?,
                            }],
                            ..Default::default()
                        },
                    )),
                };
                let mut bytes = Vec::new();
                node.try_encode(&mut bytes)?;
                Ok(bytes)
            })
            .collect::<DfResult<Vec<_>>>()?;
        let rows = protobuf::MemoryScanExecNode {
            schema: Some(eq_properties.schema().as_ref().try_into()?),
            sort_information,
            partitions: equal_columns,
            ..Default::default()
        };
        self.container(&properties.partitioning, Some(rows))?
            .try_encode(buf)
    }

    /// A `RepartitionExecNode` holding `partitioning`, over `rows` if given.
    fn container(
        &self,
        partitioning: &Partitioning,
        rows: Option<protobuf::MemoryScanExecNode>,
    ) -> DfResult<protobuf::PhysicalPlanNode> {
        let input = rows.map(|rows| {
            Box::new(protobuf::PhysicalPlanNode {
                physical_plan_type: Some(PhysicalPlanType::MemoryScan(rows)),
            })
        });
        Ok(protobuf::PhysicalPlanNode {
            physical_plan_type: Some(PhysicalPlanType::Repartition(Box::new(
                protobuf::RepartitionExecNode {
                    input,
                    partitioning: Some(serialize_partitioning(
                        partitioning,
                        self.codec,
                        self.converter,
                    )?),
                    preserve_order: false,
                },
            ))),
        })
    }
}

/// A `generate_series` node whose schema was projected to no columns, with
/// the series' own one-column schema instead; `None` for any other.
fn series_without_projection(
    series: &protobuf::GenerateSeriesNode,
) -> DfResult<Option<protobuf::GenerateSeriesNode>> {
    use protobuf::generate_series_node::Args;
    let Some(schema) = series.schema.as_ref() else {
        return Ok(None);
    };
    if !Schema::try_from(schema)?.fields().is_empty() {
        return Ok(None);
    }
    // The types `generate_series` and `range` produce for each kind of
    // argument (dates are generated as timestamps).
    let value = match &series.args {
        Some(Args::Int64Args(_)) => DataType::Int64,
        Some(Args::TimestampArgs(args)) => {
            DataType::Timestamp(TimeUnit::Nanosecond, args.tz.as_deref().map(Arc::from))
        }
        Some(Args::DateArgs(_)) => DataType::Timestamp(TimeUnit::Nanosecond, None),
        Some(Args::ContainsNull(_)) | None => return Ok(None),
    };
    let full = Schema::new(vec![Field::new("value", value, false)]);
    Ok(Some(protobuf::GenerateSeriesNode {
        schema: Some((&full).try_into()?),
        ..series.clone()
    }))
}

/// A [`PaddedSideExec`]: no fields of its own (its header's stage is 0).
fn padded_side(
    mut payload: Payload<'_>,
    inputs: &[Arc<dyn ExecutionPlan>],
) -> DfResult<Arc<dyn ExecutionPlan>> {
    payload.usize("stage")?;
    payload.finish()?;
    let input = one_input(inputs, "a padded join input")?;
    Ok(Arc::new(PaddedSideExec::new(Arc::clone(input))))
}

/// A [`StateMergeExec`]: its merge's description, as JSON.
fn state_merge(
    mut payload: Payload<'_>,
    inputs: &[Arc<dyn ExecutionPlan>],
) -> DfResult<Arc<dyn ExecutionPlan>> {
    payload.usize("stage")?;
    let spec: MergeSpec = serde_json::from_slice(payload.rest())
        .map_err(|e| malformed(format!("a state merge's description: {e}")))?;
    let input = one_input(inputs, "a state merge")?;
    Ok(Arc::new(StateMergeExec::new(Arc::clone(input), spec)))
}

/// The one input of an Ember node (`what`, for the error).
fn one_input<'a>(
    inputs: &'a [Arc<dyn ExecutionPlan>],
    what: &str,
) -> DfResult<&'a Arc<dyn ExecutionPlan>> {
    match inputs {
        [input] => Ok(input),
        _ => Err(malformed(format!(
            "{what} has one input, this one has {}",
            inputs.len()
        ))
        .into()),
    }
}

fn header(buf: &mut Vec<u8>, kind: u8, stage: usize) {
    buf.extend_from_slice(&MAGIC);
    buf.push(kind);
    put_u64(buf, stage as u64);
}

fn put_u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(&value.to_le_bytes());
}

struct Decoder<'a> {
    ctx: &'a PhysicalPlanDecodeContext<'a>,
    converter: &'a dyn PhysicalProtoConverterExtension,
}

impl Decoder<'_> {
    fn writer(
        &self,
        mut payload: Payload<'_>,
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let stage = payload.usize("stage")?;
        let input = one_input(inputs, "a shuffle writer")?;
        let output = match payload.u8("shuffle output")? {
            PASSTHROUGH => {
                payload.finish()?;
                ShuffleOutput::Passthrough
            }
            REPARTITION => {
                let container = container(payload.rest())?;
                let partitioning = self.partitioning(&container, &input.schema())?;
                ShuffleOutput::Repartition(partitioning)
            }
            other => return Err(malformed(format!("unknown shuffle output {other}")).into()),
        };
        Ok(Arc::new(ShuffleWriterExec::new(
            Arc::clone(input),
            stage,
            output,
        )))
    }

    fn reader(
        &self,
        mut payload: Payload<'_>,
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let stage = payload.usize("stage")?;
        let map_partitions = payload.usize("map partitions")?;
        let mode = match payload.u8("read mode")? {
            ALL_MAPS => ReadMode::AllMaps,
            SAME_INDEX => ReadMode::SameIndex,
            other => return Err(malformed(format!("unknown read mode {other}")).into()),
        };
        let coalesced = payload.usize("coalesced partitions")?;
        let mut ranges = Vec::new();
        for _ in 0..coalesced {
            let start = payload.usize("coalesced range")?;
            let end = payload.usize("coalesced range")?;
            if start >= end {
                return Err(malformed(format!("an empty coalesced range {start}..{end}")).into());
            }
            ranges.push((start, end));
        }
        if !inputs.is_empty() {
            return Err(malformed(format!(
                "a shuffle reader is a leaf, this one has {} inputs",
                inputs.len()
            ))
            .into());
        }
        let container = container(payload.rest())?;
        let Some(PhysicalPlanType::MemoryScan(rows)) = container
            .input
            .as_ref()
            .and_then(|input| input.physical_plan_type.as_ref())
        else {
            return Err(malformed("the shuffle reader's schema is missing".into()).into());
        };
        let schema: SchemaRef =
            Arc::new(Schema::try_from(rows.schema.as_ref().ok_or_else(
                || malformed("the shuffle reader's schema is missing".into()),
            )?)?);
        let orderings = rows
            .sort_information
            .iter()
            .map(|ordering| {
                parse_physical_sort_exprs(
                    &ordering.physical_sort_expr_nodes,
                    self.ctx,
                    &schema,
                    self.converter,
                )
            })
            .collect::<DfResult<Vec<Vec<PhysicalSortExpr>>>>()?;
        let partitioning = self.partitioning(&container, &schema)?;
        let mut eq_properties =
            EquivalenceProperties::new_with_orderings(Arc::clone(&schema), orderings);
        for class in &rows.partitions {
            let Some(PhysicalPlanType::MemoryScan(node)) =
                protobuf::PhysicalPlanNode::try_decode(class)?.physical_plan_type
            else {
                return Err(malformed("a class of equal columns is unreadable".into()).into());
            };
            for collection in &node.sort_information {
                let exprs = parse_physical_sort_exprs(
                    &collection.physical_sort_expr_nodes,
                    self.ctx,
                    &schema,
                    self.converter,
                )?;
                if let Some((first, rest)) = exprs.split_first() {
                    for other in rest {
                        eq_properties.add_equal_conditions(
                            Arc::clone(&first.expr),
                            Arc::clone(&other.expr),
                        )?;
                    }
                }
            }
        }
        let reader =
            ShuffleReaderExec::new(stage, map_partitions, mode, partitioning, eq_properties);
        Ok(Arc::new(if ranges.is_empty() {
            reader
        } else {
            // The partitioning decoded is the coalesced one already.
            let count = reader.properties().partitioning.partition_count();
            if count != ranges.len() {
                return Err(malformed(format!(
                    "{} coalesced ranges for {count} partitions",
                    ranges.len()
                ))
                .into());
            }
            reader.adapted(map_partitions, Some(ranges.into()))
        }))
    }

    fn partitioning(
        &self,
        container: &protobuf::RepartitionExecNode,
        schema: &Schema,
    ) -> DfResult<Partitioning> {
        parse_protobuf_partitioning(
            container.partitioning.as_ref(),
            self.ctx,
            schema,
            self.converter,
        )?
        .ok_or_else(|| malformed("the shuffle's partitioning is missing".into()).into())
    }
}

/// The `RepartitionExecNode` an Ember node's fields travel in.
fn container(bytes: &[u8]) -> DfResult<protobuf::RepartitionExecNode> {
    match protobuf::PhysicalPlanNode::try_decode(bytes)?.physical_plan_type {
        Some(PhysicalPlanType::Repartition(node)) => Ok(*node),
        _ => Err(malformed("the shuffle's partitioning is missing".into()).into()),
    }
}

/// A plan names a function this process does not know.
fn unknown_function(kind: &str, name: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "this executor has no {kind} function named '{name}': functions an application \
         registers travel with its binary, so submit the application's binary \
         (`ember submit APP-BINARY`), built from the same sources as its driver"
    ))
}

fn malformed(why: String) -> EngineError {
    EngineError::MalformedNode(why)
}

/// Reads an Ember node payload front to back.
struct Payload<'a> {
    rest: &'a [u8],
}

impl<'a> Payload<'a> {
    fn open(buf: &'a [u8]) -> Result<Self, EngineError> {
        match buf.split_first_chunk::<4>() {
            Some((magic, rest)) if *magic == MAGIC => Ok(Self { rest }),
            _ => Err(malformed(
                "it was not written by this version of Ember's codec".into(),
            )),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8, EngineError> {
        let (value, rest) = self
            .rest
            .split_first()
            .ok_or_else(|| malformed(format!("the {what} is cut off")))?;
        self.rest = rest;
        Ok(*value)
    }

    fn usize(&mut self, what: &str) -> Result<usize, EngineError> {
        let (value, rest) = self
            .rest
            .split_first_chunk::<8>()
            .ok_or_else(|| malformed(format!("the {what} is cut off")))?;
        self.rest = rest;
        usize::try_from(u64::from_le_bytes(*value))
            .map_err(|_| malformed(format!("the {what} does not fit this machine")))
    }

    fn rest(self) -> &'a [u8] {
        self.rest
    }

    fn finish(self) -> Result<(), EngineError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{} unexpected bytes after the node",
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::script::split_statements;
    use crate::session::planning_config;
    use crate::stages::{Stage, StageGraph};
    use crate::testing::{graph, run_stages as run};

    const WATCH_TIME: &str = include_str!("../../examples/watch_time.sql");

    /// The watch-time script's statements (create, top ten, copy), reading
    /// the example data and writing the copy to `out`.
    fn watch_time(out: &Path) -> Vec<String> {
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/");
        split_statements(WATCH_TIME)
            .into_iter()
            .map(|s| {
                s.text
                    .replace("'examples/", &format!("'{examples}"))
                    .replace(
                        "'target/ember-output/watch_time_per_video.parquet'",
                        &format!("'{}'", out.display()),
                    )
            })
            .collect()
    }

    fn scratch_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-codec-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    async fn driver_with_views() -> SessionContext {
        let ctx = SessionContext::new_with_config(planning_config(2));
        let create = &watch_time(Path::new("unused"))[0];
        assert!(create.starts_with("CREATE EXTERNAL TABLE"), "{create}");
        ctx.sql(create).await.unwrap().collect().await.unwrap();
        ctx
    }

    /// An executor's context: it knows no tables, only functions.
    fn executor() -> Arc<TaskContext> {
        SessionContext::new_with_config(planning_config(2)).task_ctx()
    }

    fn text(plan: &Arc<dyn ExecutionPlan>) -> String {
        displayable(plan.as_ref()).indent(true).to_string()
    }

    /// Every stage sent through bytes, as the driver sends it to an executor.
    fn round_trip(graph: &StageGraph) -> StageGraph {
        round_trip_with(graph, &executor())
    }

    /// Every stage sent through bytes to an executor with context `executor`.
    fn round_trip_with(graph: &StageGraph, executor: &Arc<TaskContext>) -> StageGraph {
        let stages = graph
            .stages
            .iter()
            .map(|stage| {
                let bytes = encode_plan(Arc::clone(&stage.plan)).unwrap();
                let plan = decode_plan(&bytes, executor).unwrap();
                assert_eq!(text(&plan), text(&stage.plan), "stage {}", stage.id);
                Stage {
                    plan,
                    ..stage.clone()
                }
            })
            .collect();
        StageGraph {
            stages,
            one_task: graph.one_task.clone(),
        }
    }

    fn pretty(batches: &[RecordBatch]) -> String {
        pretty_format_batches(batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn the_watch_time_query_runs_the_same_after_a_round_trip() {
        let ctx = driver_with_views().await;
        let top_ten = &watch_time(Path::new("unused"))[1];
        let original = graph(&ctx, top_ten).await;
        assert!(original.stages.len() >= 3, "{original}");
        let shipped = round_trip(&original);
        let expected = pretty(&run(&ctx, &original).await);
        assert_eq!(pretty(&run(&ctx, &shipped).await), expected);
        assert_eq!(expected.lines().count(), 10 + 4, "{expected}");
    }

    #[tokio::test]
    async fn a_copy_writes_the_same_file_after_a_round_trip() {
        let ctx = driver_with_views().await;
        let dir = scratch_dir("copy");
        let (local, shipped) = (dir.join("local.parquet"), dir.join("shipped.parquet"));
        let original = graph(&ctx, &watch_time(&local)[2]).await;
        assert!(original.to_string().contains("DataSinkExec"), "{original}");
        let local_count = run(&ctx, &original).await;

        let shipped_graph = round_trip(&graph(&ctx, &watch_time(&shipped)[2]).await);
        assert_eq!(
            pretty(&run(&ctx, &shipped_graph).await),
            pretty(&local_count)
        );

        let read = |path: PathBuf| {
            let ctx = ctx.clone();
            async move {
                let path = path.display().to_string();
                let df = ctx.read_parquet(path, Default::default()).await.unwrap();
                pretty(&df.collect().await.unwrap())
            }
        };
        let written = read(shipped).await;
        assert_eq!(written, read(local).await);
        assert!(written.contains("viewers"), "{written}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn joins_windows_and_unions_round_trip() {
        let ctx = driver_with_views().await;
        for (key, value) in [
            (
                "datafusion.optimizer.hash_join_single_partition_threshold",
                "0",
            ),
            (
                "datafusion.optimizer.hash_join_single_partition_threshold_rows",
                "0",
            ),
        ] {
            ctx.sql(&format!("SET {key} = {value}")).await.unwrap();
        }
        let queries = [
            "SELECT a.country, COUNT(*) AS n FROM views a JOIN views b \
             ON a.video_id = b.video_id AND a.user_id = b.user_id GROUP BY a.country ORDER BY a.country",
            "SELECT video_id, ROW_NUMBER() OVER (PARTITION BY country ORDER BY watch_seconds DESC, \
             event_time, user_id) AS rank FROM views ORDER BY video_id, rank LIMIT 20",
            "SELECT country FROM views WHERE watch_seconds > 1000 UNION \
             SELECT country FROM views WHERE watch_seconds < 10 ORDER BY country",
            "SELECT COUNT(*) FROM views WHERE video_id IN (SELECT video_id FROM views \
             WHERE country = 'KR')",
            "SELECT value * 2 AS v FROM range(5) ORDER BY v",
        ];
        for sql in queries {
            let original = graph(&ctx, sql).await;
            let shipped = round_trip(&original);
            assert_eq!(
                pretty(&run(&ctx, &shipped).await),
                pretty(&run(&ctx, &original).await),
                "{sql}"
            );
        }
    }

    /// Runs every stage after a trip through bytes, without comparing plan
    /// texts (the codec may rebuild a node as an equivalent pair).
    async fn shipped_rows(ctx: &SessionContext, sql: &str) -> String {
        let executor = executor();
        let original = graph(ctx, sql).await;
        let stages = original
            .stages
            .iter()
            .map(|stage| Stage {
                plan: decode_plan(&encode_plan(Arc::clone(&stage.plan)).unwrap(), &executor)
                    .unwrap(),
                ..stage.clone()
            })
            .collect();
        let shipped = StageGraph {
            stages,
            one_task: None,
        };
        pretty(&run(ctx, &shipped).await)
    }

    #[tokio::test]
    async fn a_padded_join_input_keeps_its_sort_after_a_round_trip() {
        let ctx = crate::session::planning_context(planning_config(2), None);
        let sql = "SELECT d.tag, r.y FROM (SELECT 'x' AS tag FROM (VALUES (1),(2)) t(a)) d \
                   FULL JOIN (VALUES (1),(2),(3)) r(y) ON r.y = 2 \
                   ORDER BY d.tag NULLS FIRST, r.y";
        assert!(text(&graph(&ctx, sql).await.stages[0].plan).contains("PaddedSideExec"));
        let rows = shipped_rows(&ctx, sql).await;
        let nulls_first = rows.find("| 1 |").unwrap() < rows.find("| x   |").unwrap();
        assert!(nulls_first, "{rows}");
    }

    #[tokio::test]
    async fn a_state_merge_keeps_its_description_after_a_round_trip() {
        use crate::stream_state::{Aggregation, Merge, OutputMode};
        let ctx = SessionContext::new_with_config(planning_config(2));
        let groups = crate::testing::physical(
            &ctx,
            "SELECT column1 AS k, count(*) AS n FROM (VALUES ('a'), ('b')) GROUP BY column1",
        )
        .await;
        let spec = MergeSpec {
            aggregation: Aggregation {
                keys: vec!["k".into()],
                merges: vec![("n".into(), Merge::Sum)],
                window: Some(("k".into(), 60_000_000)),
                event_key: None,
                session: None,
            },
            mode: OutputMode::Update,
            watermark: Some(-5),
            dir: "/checkpoints/q/state".into(),
            batch: 7,
            previous: Some(6),
            run: 42,
        };
        let merge = Arc::new(StateMergeExec::new(groups, spec.clone()));
        let shipped = decode_plan(&encode_plan(merge).unwrap(), &executor()).unwrap();
        let decoded = shipped.downcast_ref::<StateMergeExec>().unwrap();
        assert_eq!(decoded.spec(), &spec);
    }

    #[tokio::test]
    async fn counting_a_generated_series_keeps_its_rows_after_a_round_trip() {
        let ctx = SessionContext::new_with_config(planning_config(2));
        for (sql, expected) in [
            ("SELECT count(*) AS n FROM generate_series(1, 3000)", "3000"),
            ("SELECT count(*) AS n FROM range(10, 0, -3)", "4"),
            (
                "SELECT count(*) AS n FROM generate_series(TIMESTAMP '2026-01-01', \
                 TIMESTAMP '2026-01-02', INTERVAL '1 hour')",
                "25",
            ),
        ] {
            let rows = shipped_rows(&ctx, sql).await;
            assert!(rows.contains(&format!("| {expected} ")), "{sql}: {rows}");
        }
    }

    #[tokio::test]
    async fn a_window_over_a_column_held_constant_runs_after_a_round_trip() {
        let ctx = SessionContext::new_with_config(planning_config(2));
        let sql = "SELECT k, min(5) OVER (PARTITION BY k) AS m \
                   FROM (SELECT value % 5 AS k FROM generate_series(1, 100)) WHERE k = 3";
        let rows = shipped_rows(&ctx, sql).await;
        assert_eq!(rows.matches("| 3 | 5 |").count(), 20, "{rows}");
    }

    #[tokio::test]
    async fn a_window_partitioned_by_a_join_key_runs_after_a_round_trip() {
        let ctx = driver_with_views().await;
        let sql = "SELECT count(*) AS n FROM (SELECT row_number() OVER \
                   (PARTITION BY a.country ORDER BY a.video_id, b.user_id) AS r, \
                   rank() OVER (PARTITION BY b.video_id ORDER BY a.video_id, a.country, b.user_id DESC) AS k \
                   FROM views a JOIN views b ON a.video_id = b.video_id AND a.user_id = b.user_id)";
        let shipped = shipped_rows(&ctx, sql).await;
        let local = pretty(&run(&ctx, &graph(&ctx, sql).await).await);
        assert_eq!(shipped, local);
    }

    /// An application's functions: the scalar `twice` and the aggregate
    /// `total`, the second as a plain sum under its own name.
    fn app_functions() -> crate::Functions {
        use datafusion::arrow::array::{ArrayRef, AsArray};
        use datafusion::arrow::datatypes::{DataType, Int64Type};
        use datafusion::logical_expr::{Volatility, create_udf};
        let twice = create_udf(
            "twice",
            vec![DataType::Int64],
            DataType::Int64,
            Volatility::Immutable,
            Arc::new(|args: &[ColumnarValue]| {
                let values = ColumnarValue::values_to_arrays(args)?;
                let doubled: datafusion::arrow::array::Int64Array =
                    values[0].as_primitive::<Int64Type>().unary(|v| v * 2);
                Ok(ColumnarValue::Array(Arc::new(doubled) as ArrayRef))
            }),
        );
        let total = datafusion::functions_aggregate::sum::sum_udaf()
            .as_ref()
            .clone()
            .with_aliases(["total"]);
        crate::Functions::new().scalar(twice).aggregate(total)
    }

    #[tokio::test]
    async fn an_applications_functions_resolve_by_name_where_registered() {
        let ctx = SessionContext::new_with_config(planning_config(2));
        app_functions().register(&ctx);
        let sql = "SELECT value % 3 AS k, total(twice(value)) AS t FROM generate_series(1, 9) GROUP BY value % 3 ORDER BY k";
        let graph = graph(&ctx, sql).await;
        // An executor running the application's binary knows them.
        let knowing = SessionContext::new_with_config(planning_config(2));
        app_functions().register(&knowing);
        for stage in &graph.stages {
            let bytes = encode_plan(Arc::clone(&stage.plan)).unwrap();
            decode_plan(&bytes, &knowing.task_ctx()).unwrap();
        }
        assert_eq!(
            pretty(&run(&ctx, &round_trip_with(&graph, &knowing.task_ctx())).await),
            pretty(&run(&ctx, &graph).await)
        );
        // One that does not fails, naming the function.
        let first = encode_plan(Arc::clone(&graph.stages[0].plan)).unwrap();
        let e = decode_plan(&first, &executor()).unwrap_err().to_string();
        assert!(e.contains("no scalar function named 'twice'"), "{e}");
        assert!(e.contains("application's binary"), "{e}");
    }

    #[tokio::test]
    async fn a_scalar_subquery_travels_as_its_value() {
        let ctx = SessionContext::new_with_config(planning_config(2));
        let sql = "SELECT value FROM generate_series(1, 10) \
                   WHERE value > (SELECT avg(value) FROM generate_series(1, 10))";
        let plan = crate::testing::physical(&ctx, sql).await;
        let (plan, subqueries) = crate::subquery::lift_scalar_subqueries(plan).unwrap();
        assert_eq!(subqueries.len(), 1);
        // Unrun, the subquery's value cannot be shipped.
        assert!(encode_plan(Arc::clone(&plan)).is_err());
        let value = RecordBatch::try_new(
            subqueries[0].plan.schema(),
            vec![Arc::new(datafusion::arrow::array::Float64Array::from(
                vec![5.5],
            ))],
        )
        .unwrap();
        subqueries[0].resolve(&[value]).unwrap();
        let shipped = decode_plan(&encode_plan(plan).unwrap(), &executor()).unwrap();
        let shown = text(&shipped);
        assert!(shown.contains("5.5"), "{shown}");
        assert!(!shown.contains("scalar_subquery"), "{shown}");
    }

    #[tokio::test]
    async fn an_operator_datafusion_proto_lacks_is_named_in_the_error() {
        let ctx = SessionContext::new_with_config(planning_config(2));
        let sql = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) \
                   SELECT n FROM t";
        let recursive = graph(&ctx, sql).await;
        let stage = recursive.result_stage().unwrap();
        let err = encode_plan(Arc::clone(&stage.plan)).unwrap_err();
        assert!(matches!(err, EngineError::PlanEncode(_)), "{err}");
        assert!(
            err.to_string().contains("RecursiveQueryExec is neither"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn select_one_round_trips() {
        let ctx = SessionContext::new_with_config(planning_config(2));
        let original = graph(&ctx, "SELECT 1 AS one").await;
        let shipped = round_trip(&original);
        assert_eq!(
            pretty(&run(&ctx, &shipped).await),
            pretty(&run(&ctx, &original).await)
        );
    }

    #[tokio::test]
    async fn a_reader_keeps_its_partitioning_and_ordering() {
        let ctx = driver_with_views().await;
        let scan = ctx
            .table("views")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let schema = scan.schema();
        let video = col("video_id", &schema).unwrap();
        let user = col("user_id", &schema).unwrap();
        let orderings = vec![
            vec![PhysicalSortExpr::new_default(Arc::clone(&video))],
            vec![PhysicalSortExpr::new_default(Arc::clone(&user)).desc()],
        ];
        let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::new(
            4,
            3,
            ReadMode::SameIndex,
            Partitioning::Hash(vec![video], 5),
            EquivalenceProperties::new_with_orderings(Arc::clone(&schema), orderings),
        ));
        let plan = decode_plan(&encode_plan(Arc::clone(&reader)).unwrap(), &executor()).unwrap();
        let decoded = plan.downcast_ref::<ShuffleReaderExec>().unwrap();
        assert_eq!(
            (decoded.stage(), decoded.map_partitions(), decoded.mode()),
            (4, 3, ReadMode::SameIndex)
        );
        let (before, after) = (reader.properties(), decoded.properties());
        assert_eq!(after.partitioning, before.partitioning);
        assert_eq!(after.eq_properties.schema(), &schema);
        assert_eq!(
            after.eq_properties.oeq_class(),
            before.eq_properties.oeq_class()
        );

        // Coalesced after its parent ran: which reduce partitions each
        // partition reads travels with it.
        let ranges: Arc<[(usize, usize)]> = Arc::from(vec![(0, 2), (2, 5)]);
        let coalesced: Arc<dyn ExecutionPlan> =
            Arc::new(decoded.adapted(2, Some(Arc::clone(&ranges))));
        let plan = decode_plan(&encode_plan(Arc::clone(&coalesced)).unwrap(), &executor()).unwrap();
        let decoded = plan.downcast_ref::<ShuffleReaderExec>().unwrap();
        assert_eq!(decoded.ranges(), Some(&ranges[..]));
        assert_eq!(decoded.map_partitions(), 2);
        assert_eq!(decoded.properties().partitioning.partition_count(), 2);
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let executor = executor();
        let select = graph(
            &SessionContext::new_with_config(planning_config(2)),
            "SELECT 1",
        )
        .await;
        let good = encode_plan(Arc::clone(&select.stages[0].plan)).unwrap();
        // Field 17 of a plan node is an Avro scan, which this build cannot read.
        let avro_scan = vec![0x8a, 0x01, 0x00];
        let ember_node = |payload: &[u8]| {
            let mut bytes = Vec::new();
            protobuf::PhysicalPlanNode {
                physical_plan_type: Some(PhysicalPlanType::Extension(
                    protobuf::PhysicalExtensionNode {
                        node: payload.to_vec(),
                        inputs: vec![],
                    },
                )),
            }
            .try_encode(&mut bytes)
            .unwrap();
            bytes
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("text", b"SELECT 1 please".to_vec()),
            ("ones", vec![0xff; 64]),
            ("cut short", good[..good.len() / 2].to_vec()),
            ("avro scan", avro_scan),
            ("not ember", ember_node(b"hello")),
            ("unknown kind", ember_node(b"EMB\x01\x07")),
            ("short reader", ember_node(b"EMB\x01\x02\x01\x00")),
        ];
        for (name, bytes) in cases {
            match decode_plan(&bytes, &executor) {
                Err(EngineError::PlanDecode(_)) => {}
                other => panic!("{name}: expected a decode error, got {other:?}"),
            }
        }
        let err = decode_plan(&ember_node(b"EMB\x01\x07"), &executor).unwrap_err();
        assert!(err.to_string().contains("unknown node kind 7"), "{err}");
    }
}
