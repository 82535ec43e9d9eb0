//! Seeded random SQL cases for differential testing, in the spirit of
//! SQLancer and SQLsmith: a seed gives tables, their data (as CSV text) and
//! queries whose answer does not depend on how an engine splits the work.
//! Everything here is a pure function of the seed; nothing runs SQL.

pub mod ast;
pub mod generate;
pub mod schema;
pub mod shrink;

pub use ast::{Body, Expr, From, JoinKind, Query, Select};
pub use generate::{Case, generate_case, generate_query};
pub use schema::{FileFormat, SqlType, Table, Value};
pub use shrink::{minimize, shrink_candidates};
