//! What the shell shows of its session: tables, columns, executors, as
//! rows printed like a query's.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::datasource::listing::ListingTable;
use datafusion::logical_expr::TableType;
use datafusion::prelude::SessionContext;
use ember_actors::driver::ExecutorSummary;

use super::complete::Vocabulary;

/// Rows to print, with their schema.
pub struct Listing {
    pub schema: SchemaRef,
    pub batch: RecordBatch,
}

/// A column of a listing.
pub enum Values {
    Text(Vec<String>),
    Count(Vec<u64>),
}

impl Listing {
    pub fn new(columns: Vec<(&str, Values)>) -> Result<Self, ArrowError> {
        let batch = RecordBatch::try_from_iter(columns.into_iter().map(|(name, values)| {
            let array: ArrayRef = match values {
                Values::Text(v) => Arc::new(StringArray::from(v)),
                Values::Count(v) => Arc::new(UInt64Array::from(v)),
            };
            (name, array)
        }))?;
        Ok(Self {
            schema: batch.schema(),
            batch,
        })
    }
}

/// A table of the session.
pub struct TableInfo {
    pub name: String,
    pub kind: String,
    pub schema: SchemaRef,
    pub location: Option<String>,
}

/// Every table of the session, with names as queries write them.
pub async fn tables(ctx: &SessionContext) -> Vec<TableInfo> {
    let (default_catalog, default_schema) = {
        let state = ctx.state();
        let catalog = &state.config().options().catalog;
        (
            catalog.default_catalog.clone(),
            catalog.default_schema.clone(),
        )
    };
    let mut out = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            if schema_name == "information_schema" {
                continue;
            }
            let mut names = schema.table_names();
            names.sort();
            for table in names {
                let Ok(Some(provider)) = schema.table(&table).await else {
                    continue;
                };
                let name = if catalog_name == default_catalog && schema_name == default_schema {
                    table
                } else {
                    format!("{catalog_name}.{schema_name}.{table}")
                };
                let location = provider.downcast_ref::<ListingTable>().map(|t| {
                    let paths: Vec<String> =
                        t.table_paths().iter().map(|u| u.to_string()).collect();
                    paths.join(", ")
                });
                out.push(TableInfo {
                    name,
                    kind: match provider.table_type() {
                        TableType::Base => "table",
                        TableType::View => "view",
                        TableType::Temporary => "temporary",
                    }
                    .to_string(),
                    schema: provider.schema(),
                    location,
                });
            }
        }
    }
    out
}

/// `\tables`.
pub async fn table_listing(ctx: &SessionContext) -> Result<Listing, ArrowError> {
    let tables = tables(ctx).await;
    Listing::new(vec![
        (
            "table",
            Values::Text(tables.iter().map(|t| t.name.clone()).collect()),
        ),
        (
            "type",
            Values::Text(tables.iter().map(|t| t.kind.clone()).collect()),
        ),
        (
            "columns",
            Values::Count(
                tables
                    .iter()
                    .map(|t| t.schema.fields().len() as u64)
                    .collect(),
            ),
        ),
        (
            "location",
            Values::Text(
                tables
                    .iter()
                    .map(|t| t.location.clone().unwrap_or_default())
                    .collect(),
            ),
        ),
    ])
}

/// `\describe TABLE`.
pub async fn describe(ctx: &SessionContext, table: &str) -> Result<Listing, String> {
    let provider = ctx
        .table_provider(table)
        .await
        .map_err(|_| format!("no table named {table}; \\tables lists them"))?;
    let schema = provider.schema();
    let fields = schema.fields();
    Listing::new(vec![
        (
            "column",
            Values::Text(fields.iter().map(|f| f.name().clone()).collect()),
        ),
        (
            "type",
            Values::Text(fields.iter().map(|f| f.data_type().to_string()).collect()),
        ),
        (
            "nullable",
            Values::Text(
                fields
                    .iter()
                    .map(|f| if f.is_nullable() { "YES" } else { "NO" }.to_string())
                    .collect(),
            ),
        ),
    ])
    .map_err(|e| e.to_string())
}

use ember_engine::memory::human_size;

/// `\executors`: active ones first, then those lost.
pub fn executor_listing(mut executors: Vec<ExecutorSummary>) -> Result<Listing, ArrowError> {
    executors.sort_by_key(|e| {
        (
            e.state != ember_actors::driver::ExecutorState::Active,
            e.id.0.clone(),
        )
    });
    let text =
        |f: &dyn Fn(&ExecutorSummary) -> String| Values::Text(executors.iter().map(f).collect());
    let count =
        |f: &dyn Fn(&ExecutorSummary) -> u64| Values::Count(executors.iter().map(f).collect());
    Listing::new(vec![
        ("id", text(&|e| e.id.0.clone())),
        ("host", text(&|e| e.host.clone())),
        ("cores", count(&|e| e.slots as u64)),
        ("state", text(&|e| e.state.to_string())),
        ("running", count(&|e| e.running_tasks as u64)),
        ("succeeded", count(&|e| e.tasks_succeeded)),
        ("failed", count(&|e| e.tasks_failed)),
        ("memory", text(&|e| memory(&e.usage))),
        ("spilled", text(&|e| human_size(e.usage.spilled_bytes))),
        (
            "shuffle_on_disk",
            text(&|e| human_size(e.usage.shuffle_disk_bytes)),
        ),
        (
            "peak_rss",
            text(&|e| match e.usage.peak_rss {
                0 => "-".to_string(),
                bytes => human_size(bytes),
            }),
        ),
    ])
}

/// Memory held of the budget: `12 MB / 1.0 GB`.
fn memory(usage: &ember_actors::protocol::ExecutorUsage) -> String {
    match usage.memory_limit {
        0 => format!("{} / unlimited", human_size(usage.memory_used)),
        limit => format!("{} / {}", human_size(usage.memory_used), human_size(limit)),
    }
}

/// The names completion offers now.
pub async fn vocabulary(ctx: &SessionContext) -> Vocabulary {
    let tables = tables(ctx).await;
    let mut columns: Vec<String> = tables
        .iter()
        .flat_map(|t| t.schema.fields().iter().map(|f| f.name().clone()))
        .collect();
    columns.sort();
    columns.dedup();
    let state = ctx.state();
    let mut functions: Vec<String> = state
        .scalar_functions()
        .keys()
        .chain(state.aggregate_functions().keys())
        .chain(state.window_functions().keys())
        .cloned()
        .collect();
    functions.sort();
    functions.dedup();
    Vocabulary {
        tables: tables.into_iter().map(|t| t.name).collect(),
        columns,
        functions,
    }
}
