//! Uncorrelated scalar subqueries, run the way Spark runs them: each as a job
//! of its own before the query that reads it is cut into stages. DataFusion
//! computes them inside the plan and shares the value through state that does
//! not survive the cut into tasks or the plan codec; here they are lifted out,
//! run, and their values written where the plan's expressions read them.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::physical_planning_context::{ScalarSubqueryResults, SubqueryIndex};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;

/// A scalar subquery lifted out of a plan: run `plan` as a job, then hand its
/// rows to [`ScalarSubquery::resolve`].
#[derive(Debug, Clone)]
pub struct ScalarSubquery {
    pub plan: Arc<dyn ExecutionPlan>,
    index: SubqueryIndex,
    results: ScalarSubqueryResults,
}

impl ScalarSubquery {
    /// Stores the subquery's value from its rows, as DataFusion would: no
    /// row is NULL, one row is its value, more is an error.
    pub fn resolve(&self, batches: &[RecordBatch]) -> Result<()> {
        let schema = self.plan.schema();
        let [field] = schema.fields().iter().collect::<Vec<_>>()[..] else {
            return Err(DataFusionError::Plan(format!(
                "a scalar subquery must return one column, this one returns {}",
                schema.fields().len()
            )));
        };
        let mut value = None;
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            if value.is_some() || batch.num_rows() > 1 {
                return Err(DataFusionError::Execution(
                    "Scalar subquery returned more than one row".to_string(),
                ));
            }
            value = Some(ScalarValue::try_from_array(batch.column(0), 0)?);
        }
        let value = match value {
            Some(value) => value,
            None => ScalarValue::try_from(field.data_type())?,
        };
        self.results.set(self.index, value)
    }
}

/// Removes every `ScalarSubqueryExec` from `plan`, outermost first, and
/// returns the plan with the subqueries to run before it. Subqueries nested
/// inside a subquery stay in that subquery's plan, for its own run.
pub fn lift_scalar_subqueries(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<(Arc<dyn ExecutionPlan>, Vec<ScalarSubquery>)> {
    let mut lifted = Vec::new();
    let plan = plan
        .transform_down(|mut node| {
            let mut changed = false;
            while let Some(exec) = node.downcast_ref::<ScalarSubqueryExec>() {
                lifted.extend(exec.subqueries().iter().map(|link| ScalarSubquery {
                    plan: Arc::clone(&link.plan),
                    index: link.index,
                    results: exec.results().clone(),
                }));
                node = Arc::clone(exec.input());
                changed = true;
            }
            Ok(if changed {
                Transformed::yes(node)
            } else {
                Transformed::no(node)
            })
        })?
        .data;
    Ok((plan, lifted))
}
