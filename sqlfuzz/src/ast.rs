//! The query tree the generator builds and the minimizer shrinks, and its
//! SQL text. Every operator is written with parentheses, so the text never
//! depends on precedence rules.

use std::fmt::{self, Display, Formatter, Write};

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub ctes: Vec<Cte>,
    pub body: Body,
    pub order_by: Vec<OrderItem>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cte {
    pub name: String,
    pub query: Query,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Select(Box<Select>),
    SetOp {
        op: SetOp,
        all: bool,
        left: Box<Body>,
        right: Box<Body>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    Union,
    Intersect,
    Except,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub distinct: bool,
    pub items: Vec<SelectItem>,
    pub from: Option<From>,
    pub filter: Option<Expr>,
    pub group_by: Option<GroupBy>,
    pub having: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SelectItem {
    pub expr: Expr,
    pub alias: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupBy {
    pub kind: Grouping,
    pub exprs: Vec<Expr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Plain,
    Rollup,
    Cube,
    /// `GROUPING SETS ((a), (b), ())`: each expression alone, and the total.
    Sets,
}

#[derive(Debug, Clone, PartialEq)]
pub enum From {
    Table {
        name: String,
        alias: String,
    },
    Derived {
        query: Box<Query>,
        alias: String,
    },
    Join {
        kind: JoinKind,
        left: Box<From>,
        right: Box<From>,
        on: Option<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    Cross,
    LeftSemi,
    LeftAnti,
}

impl JoinKind {
    fn sql(self) -> &'static str {
        match self {
            JoinKind::Inner => "JOIN",
            JoinKind::Left => "LEFT JOIN",
            JoinKind::Right => "RIGHT JOIN",
            JoinKind::Full => "FULL JOIN",
            JoinKind::Cross => "CROSS JOIN",
            JoinKind::LeftSemi => "LEFT SEMI JOIN",
            JoinKind::LeftAnti => "LEFT ANTI JOIN",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub expr: Expr,
    pub desc: bool,
    pub nulls_first: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `rel.name`, or an output name when `rel` is `None`.
    Column {
        rel: Option<String>,
        name: String,
    },
    /// A literal, already SQL text.
    Lit(String),
    Call {
        op: Op,
        args: Vec<Expr>,
    },
    Window {
        /// `Op::Func`, `Op::Agg` or `Op::CountStar`.
        func: Op,
        args: Vec<Expr>,
        partition_by: Vec<Expr>,
        order_by: Vec<OrderItem>,
        /// `ROWS BETWEEN 1 PRECEDING AND CURRENT ROW` instead of the default.
        rows_frame: bool,
    },
    Subquery {
        kind: SubqueryKind,
        /// The left side of `IN` / `NOT IN`.
        lhs: Option<Box<Expr>>,
        query: Box<Query>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `(a OP b)`: arithmetic, comparison, AND, OR, `||`, IS DISTINCT FROM.
    Binary(&'static str),
    /// `name(args)`.
    Func(&'static str),
    /// `name([DISTINCT] arg)`.
    Agg {
        name: &'static str,
        distinct: bool,
    },
    CountStar,
    Not,
    IsNull,
    IsNotNull,
    /// `(a BETWEEN b AND c)`.
    Between,
    /// `(a IN (b, c, ...))`, or `NOT IN` when negated.
    InList {
        negated: bool,
    },
    /// `CASE WHEN a THEN b [WHEN c THEN d] [ELSE e] END`.
    Case,
    /// `CAST(a AS type)`.
    Cast(&'static str),
    /// `(a LIKE 'pattern')`.
    Like(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubqueryKind {
    Exists,
    NotExists,
    In,
    NotIn,
    Scalar,
}

impl Query {
    /// A query of one select and nothing else.
    pub fn select(select: Select) -> Self {
        Query {
            ctes: Vec::new(),
            body: Body::Select(Box::new(select)),
            order_by: Vec::new(),
            limit: None,
            offset: None,
        }
    }

    /// The SQL text.
    pub fn sql(&self) -> String {
        self.to_string()
    }

    /// Whether rows come out in an order the query fixes (ORDER BY over
    /// every output column), so results compare in order.
    pub fn is_ordered(&self) -> bool {
        !self.order_by.is_empty()
    }
}

impl Display for Query {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if !self.ctes.is_empty() {
            f.write_str("WITH ")?;
            for (i, cte) in self.ctes.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{} AS ({})", cte.name, cte.query)?;
            }
            f.write_char(' ')?;
        }
        write!(f, "{}", self.body)?;
        if !self.order_by.is_empty() {
            f.write_str(" ORDER BY ")?;
            write_order(f, &self.order_by)?;
        }
        if let Some(limit) = self.limit {
            write!(f, " LIMIT {limit}")?;
        }
        if let Some(offset) = self.offset {
            write!(f, " OFFSET {offset}")?;
        }
        Ok(())
    }
}

impl Display for Body {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Body::Select(select) => write!(f, "{select}"),
            Body::SetOp {
                op,
                all,
                left,
                right,
            } => {
                let op = match op {
                    SetOp::Union => "UNION",
                    SetOp::Intersect => "INTERSECT",
                    SetOp::Except => "EXCEPT",
                };
                let all = if *all { " ALL" } else { "" };
                write!(f, "{} {op}{all} {}", nested(left), nested(right))
            }
        }
    }
}

/// A set operation's side: a plain select as is, a nested set operation in
/// parentheses.
fn nested(body: &Body) -> String {
    match body {
        Body::Select(_) => body.to_string(),
        Body::SetOp { .. } => format!("({body})"),
    }
}

impl Display for Select {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        if self.distinct {
            f.write_str("DISTINCT ")?;
        }
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} AS {}", item.expr, item.alias)?;
        }
        if let Some(from) = &self.from {
            write!(f, " FROM {from}")?;
        }
        if let Some(filter) = &self.filter {
            write!(f, " WHERE {filter}")?;
        }
        if let Some(group_by) = &self.group_by {
            f.write_str(" GROUP BY ")?;
            let list = join(&group_by.exprs);
            match group_by.kind {
                Grouping::Plain => f.write_str(&list)?,
                Grouping::Rollup => write!(f, "ROLLUP ({list})")?,
                Grouping::Cube => write!(f, "CUBE ({list})")?,
                Grouping::Sets => {
                    let sets: Vec<String> =
                        group_by.exprs.iter().map(|e| format!("({e})")).collect();
                    write!(f, "GROUPING SETS ({}, ())", sets.join(", "))?;
                }
            }
        }
        if let Some(having) = &self.having {
            write!(f, " HAVING {having}")?;
        }
        Ok(())
    }
}

impl Display for From {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            From::Table { name, alias } => write!(f, "{name} AS {alias}"),
            From::Derived { query, alias } => write!(f, "({query}) AS {alias}"),
            From::Join {
                kind,
                left,
                right,
                on,
            } => {
                let right = match right.as_ref() {
                    From::Join { .. } => format!("({right})"),
                    _ => right.to_string(),
                };
                write!(f, "{left} {} {right}", kind.sql())?;
                if let Some(on) = on {
                    write!(f, " ON {on}")?;
                }
                Ok(())
            }
        }
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column {
                rel: Some(rel),
                name,
            } => write!(f, "{rel}.{name}"),
            Expr::Column { rel: None, name } => f.write_str(name),
            Expr::Lit(text) => f.write_str(text),
            Expr::Call { op, args } => write_call(f, op, args),
            Expr::Window {
                func,
                args,
                partition_by,
                order_by,
                rows_frame,
            } => {
                write_call(f, func, args)?;
                f.write_str(" OVER (")?;
                if !partition_by.is_empty() {
                    write!(f, "PARTITION BY {}", join(partition_by))?;
                }
                if !order_by.is_empty() {
                    if !partition_by.is_empty() {
                        f.write_char(' ')?;
                    }
                    f.write_str("ORDER BY ")?;
                    write_order(f, order_by)?;
                    if *rows_frame {
                        f.write_str(" ROWS BETWEEN 1 PRECEDING AND CURRENT ROW")?;
                    }
                }
                f.write_char(')')
            }
            Expr::Subquery { kind, lhs, query } => {
                let lhs = lhs.as_deref().map(ToString::to_string).unwrap_or_default();
                match kind {
                    SubqueryKind::Exists => write!(f, "EXISTS ({query})"),
                    SubqueryKind::NotExists => write!(f, "NOT EXISTS ({query})"),
                    SubqueryKind::In => write!(f, "({lhs} IN ({query}))"),
                    SubqueryKind::NotIn => write!(f, "({lhs} NOT IN ({query}))"),
                    SubqueryKind::Scalar => write!(f, "({query})"),
                }
            }
        }
    }
}

fn write_call(f: &mut Formatter<'_>, op: &Op, args: &[Expr]) -> fmt::Result {
    let arg = |i: usize| args.get(i).map(ToString::to_string).unwrap_or_default();
    match op {
        Op::Binary(symbol) => write!(f, "({} {symbol} {})", arg(0), arg(1)),
        Op::Func(name) => write!(f, "{name}({})", join(args)),
        Op::Agg { name, distinct } => {
            let distinct = if *distinct { "DISTINCT " } else { "" };
            write!(f, "{name}({distinct}{})", join(args))
        }
        Op::CountStar => f.write_str("count(*)"),
        Op::Not => write!(f, "(NOT {})", arg(0)),
        Op::IsNull => write!(f, "({} IS NULL)", arg(0)),
        Op::IsNotNull => write!(f, "({} IS NOT NULL)", arg(0)),
        Op::Between => write!(f, "({} BETWEEN {} AND {})", arg(0), arg(1), arg(2)),
        Op::InList { negated } => {
            let not = if *negated { "NOT " } else { "" };
            let list = args.get(1..).map(join).unwrap_or_default();
            write!(f, "({} {not}IN ({list}))", arg(0))
        }
        Op::Case => {
            f.write_str("CASE")?;
            let mut pairs = args.chunks_exact(2);
            for pair in pairs.by_ref() {
                write!(f, " WHEN {} THEN {}", pair[0], pair[1])?;
            }
            if let [otherwise] = pairs.remainder() {
                write!(f, " ELSE {otherwise}")?;
            }
            f.write_str(" END")
        }
        Op::Cast(ty) => write!(f, "CAST({} AS {ty})", arg(0)),
        Op::Like(pattern) => write!(f, "({} LIKE '{}')", arg(0), pattern.replace('\'', "''")),
    }
}

fn write_order(f: &mut Formatter<'_>, items: &[OrderItem]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        let dir = if item.desc { "DESC" } else { "ASC" };
        let nulls = if item.nulls_first { "FIRST" } else { "LAST" };
        write!(f, "{} {dir} NULLS {nulls}", item.expr)?;
    }
    Ok(())
}

fn join(exprs: &[Expr]) -> String {
    exprs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(rel: &str, name: &str) -> Expr {
        Expr::Column {
            rel: Some(rel.into()),
            name: name.into(),
        }
    }

    #[test]
    fn renders_joins_subqueries_and_grouping_sets() {
        let inner = Query::select(Select {
            distinct: false,
            items: vec![SelectItem {
                expr: col("b", "k"),
                alias: "o0".into(),
            }],
            from: Some(From::Table {
                name: "t1".into(),
                alias: "b".into(),
            }),
            filter: None,
            group_by: None,
            having: None,
        });
        let select = Select {
            distinct: false,
            items: vec![
                SelectItem {
                    expr: col("a", "k"),
                    alias: "o0".into(),
                },
                SelectItem {
                    expr: Expr::Call {
                        op: Op::CountStar,
                        args: vec![],
                    },
                    alias: "o1".into(),
                },
            ],
            from: Some(From::Table {
                name: "t0".into(),
                alias: "a".into(),
            }),
            filter: Some(Expr::Subquery {
                kind: SubqueryKind::NotIn,
                lhs: Some(Box::new(col("a", "k"))),
                query: Box::new(inner),
            }),
            group_by: Some(GroupBy {
                kind: Grouping::Sets,
                exprs: vec![col("a", "k")],
            }),
            having: None,
        };
        let mut query = Query::select(select);
        query.order_by = vec![OrderItem {
            expr: Expr::Column {
                rel: None,
                name: "o0".into(),
            },
            desc: true,
            nulls_first: false,
        }];
        query.limit = Some(3);
        assert_eq!(
            query.sql(),
            "SELECT a.k AS o0, count(*) AS o1 FROM t0 AS a WHERE (a.k NOT IN (SELECT b.k AS o0 FROM t1 AS b)) \
             GROUP BY GROUPING SETS ((a.k), ()) ORDER BY o0 DESC NULLS LAST LIMIT 3"
        );
    }
}
