//! File scans whose errors name the file they came from: DataFusion reports
//! a bad CSV or JSON row by its line alone, and a table is often many files.
//! Applied to a task's plan just before it runs.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    CsvSource, FileOpenFuture, FileOpener, FileScanConfig, FileScanConfigBuilder, FileSource,
    JsonSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::object_store::ObjectStore;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan};
use futures::{FutureExt, StreamExt, TryStreamExt};

/// `plan` with every CSV and JSON scan naming, in each error it raises,
/// the file it was reading.
pub fn name_files_in_errors(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        // Parquet is read through DataFusion's morsel interface, not a
        // file opener, and is left as it is.
        let source = &config.file_source;
        if !(source.is::<CsvSource>() || source.is::<JsonSource>()) {
            return Ok(Transformed::no(node));
        }
        let named = FileScanConfigBuilder::from(config.clone())
            .with_source(Arc::new(Named {
                inner: Arc::clone(source),
            }))
            .build();
        Ok(Transformed::yes(
            DataSourceExec::from_data_source(named) as Arc<dyn ExecutionPlan>
        ))
    })
    .map(|t| t.data)
}

/// A file source whose openers name their file in errors; everything else
/// is its inner source's.
struct Named {
    inner: Arc<dyn FileSource>,
}

impl FileSource for Named {
    fn create_file_opener(
        &self,
        object_store: Arc<dyn ObjectStore>,
        base_config: &FileScanConfig,
        partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        Ok(Arc::new(NamedOpener {
            inner: self
                .inner
                .create_file_opener(object_store, base_config, partition)?,
            store: base_config.object_store_url.clone(),
        }))
    }

    fn table_schema(&self) -> &TableSchema {
        self.inner.table_schema()
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        Arc::new(Named {
            inner: self.inner.with_batch_size(batch_size),
        })
    }

    fn filter(&self) -> Option<Arc<dyn PhysicalExpr>> {
        self.inner.filter()
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        self.inner.projection()
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        self.inner.metrics()
    }

    fn file_type(&self) -> &str {
        self.inner.file_type()
    }

    fn fmt_extra(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_extra(t, f)
    }

    fn supports_repartitioning(&self) -> bool {
        self.inner.supports_repartitioning()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.inner.apply_expressions(f)
    }
}

struct NamedOpener {
    inner: Arc<dyn FileOpener>,
    store: ObjectStoreUrl,
}

impl FileOpener for NamedOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let name = display_name(&self.store, &file);
        let opening = self.inner.open(file).map_err(|e| naming(&name, e))?;
        Ok(async move {
            let batches = opening.await.map_err(|e| naming(&name, e))?;
            Ok(batches.map_err(move |e| naming(&name, e)).boxed())
        }
        .boxed())
    }
}

/// A local file as its path, any other as its URL.
fn display_name(store: &ObjectStoreUrl, file: &PartitionedFile) -> String {
    let url = format!("{}{}", store.as_str(), file.object_meta.location);
    match url.strip_prefix("file://") {
        Some(path) => path.to_string(),
        None => url,
    }
}

/// `error` with the file it came from in front; running out of memory is
/// not the file's doing and keeps its kind.
fn naming(file: &str, error: DataFusionError) -> DataFusionError {
    match error {
        DataFusionError::ResourcesExhausted(_) => error,
        error => DataFusionError::Execution(format!("{file}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{CsvReadOptions, SessionContext};

    use super::*;

    #[tokio::test]
    async fn a_bad_csv_row_is_reported_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.csv"), "a,b\n1,x\n").unwrap();
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "a,b\n1,x\n2,y,z\n").unwrap();
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let ctx = SessionContext::new();
        let options = CsvReadOptions::new().schema(&schema);
        ctx.register_csv("t", dir.path().to_str().unwrap(), options)
            .await
            .unwrap();
        let plan = crate::testing::physical(&ctx, "SELECT * FROM t").await;

        let plain = collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .unwrap_err();
        assert!(!plain.to_string().contains("bad.csv"), "{plain}");

        let named = name_files_in_errors(plan).unwrap();
        let error = collect(named, ctx.task_ctx())
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(&format!("{}: ", bad.display())), "{error}");
        assert!(error.contains("incorrect number of fields"), "{error}");
    }
}
