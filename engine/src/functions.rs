//! An application's own functions: scalar (UDF), aggregate (UDAF) and
//! table (UDTF) functions it registers once, for its driver's planner and
//! for every executor that decodes its plans. Plans name functions; each
//! process resolves the names through this registry, so a function runs
//! wherever the application's binary runs.

use std::fmt;
use std::sync::Arc;

use datafusion::catalog::TableFunctionImpl;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::prelude::SessionContext;

/// The functions an application adds to SQL.
#[derive(Clone, Default)]
pub struct Functions {
    scalar: Vec<ScalarUDF>,
    aggregate: Vec<AggregateUDF>,
    window: Vec<WindowUDF>,
    table: Vec<(String, Arc<dyn TableFunctionImpl>)>,
}

impl Functions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a scalar function (`create_udf`, or a `ScalarUDFImpl`).
    pub fn scalar(mut self, udf: impl Into<ScalarUDF>) -> Self {
        self.scalar.push(udf.into());
        self
    }

    /// Adds an aggregate function (`create_udaf`, or an `AggregateUDFImpl`).
    pub fn aggregate(mut self, udaf: impl Into<AggregateUDF>) -> Self {
        self.aggregate.push(udaf.into());
        self
    }

    /// Adds a window function (a `WindowUDFImpl`).
    pub fn window(mut self, udwf: impl Into<WindowUDF>) -> Self {
        self.window.push(udwf.into());
        self
    }

    /// Adds a table function, called in `FROM name(args)`. It runs where
    /// the query is planned (the driver); the rows it gives travel in the
    /// plan.
    pub fn table(mut self, name: &str, udtf: Arc<dyn TableFunctionImpl>) -> Self {
        self.table.push((name.to_string(), udtf));
        self
    }

    /// Registers every function with `ctx`.
    pub fn register(&self, ctx: &SessionContext) {
        for udf in &self.scalar {
            ctx.register_udf(udf.clone());
        }
        for udaf in &self.aggregate {
            ctx.register_udaf(udaf.clone());
        }
        for udwf in &self.window {
            ctx.register_udwf(udwf.clone());
        }
        for (name, udtf) in &self.table {
            ctx.register_udtf(name, Arc::clone(udtf));
        }
    }

    /// The functions' names, scalar, aggregate, window and table in turn.
    pub fn names(&self) -> Vec<String> {
        let scalar = self.scalar.iter().map(|f| f.name().to_string());
        let aggregate = self.aggregate.iter().map(|f| f.name().to_string());
        let window = self.window.iter().map(|f| f.name().to_string());
        let table = self.table.iter().map(|(name, _)| name.clone());
        scalar.chain(aggregate).chain(window).chain(table).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.scalar.is_empty()
            && self.aggregate.is_empty()
            && self.window.is_empty()
            && self.table.is_empty()
    }
}

impl fmt::Debug for Functions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
