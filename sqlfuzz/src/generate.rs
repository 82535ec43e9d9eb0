//! The generator: a seed gives tables and data, and query `k` of a seed
//! comes from its own RNG stream, so it is the same whatever the number of
//! queries asked for. Queries are built to have one right answer: LIMIT and
//! OFFSET only under an ORDER BY over every output column, order-sensitive
//! window functions only over a total order of their input rows (and one per
//! select), no order-sensitive aggregates, nothing random or time-dependent.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::ast::{
    Body, Cte, Expr, From, GroupBy, Grouping, JoinKind, Op, OrderItem, Query, Select, SelectItem,
    SetOp, SubqueryKind,
};
use crate::schema::{Family, SqlType, Table, pick, random_table, random_value};

/// Everything a seed gives: tables with their data, and queries over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub seed: u64,
    pub tables: Vec<Table>,
    pub queries: Vec<Query>,
}

/// The tables of `seed` and its first `queries` queries.
pub fn generate_case(seed: u64, queries: usize) -> Case {
    let tables = generate_tables(seed);
    let queries = (0..queries)
        .map(|k| generate_query(seed, &tables, k))
        .collect();
    Case {
        seed,
        tables,
        queries,
    }
}

/// Two to four tables `t0`, `t1`, ... whose first column `k` is an integer
/// key with a small domain, so joins match.
pub fn generate_tables(seed: u64) -> Vec<Table> {
    let mut rng = stream(seed, 0);
    let count = rng.random_range(2..5);
    (0..count)
        .map(|i| {
            let key = *pick(&mut rng, &[SqlType::Int, SqlType::BigInt]);
            random_table(&mut rng, &format!("t{i}"), key)
        })
        .collect()
}

/// Query `k` of `seed` over `tables`.
pub fn generate_query(seed: u64, tables: &[Table], k: usize) -> Query {
    let mut generator = Generator {
        rng: stream(seed, k as u64 + 1),
        relations: tables
            .iter()
            .map(|t| Relation {
                name: t.name.clone(),
                columns: t
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.ty.family()))
                    .collect(),
            })
            .collect(),
        next_alias: 0,
    };
    generator.top_query()
}

fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// A table or CTE a FROM clause can name.
#[derive(Debug, Clone)]
struct Relation {
    name: String,
    columns: Vec<(String, Family)>,
}

/// A column visible to an expression.
#[derive(Debug, Clone)]
struct ColRef {
    rel: String,
    name: String,
    family: Family,
}

impl ColRef {
    fn expr(&self) -> Expr {
        Expr::Column {
            rel: Some(self.rel.clone()),
            name: self.name.clone(),
        }
    }
}

/// Subqueries nest at most this deep.
const MAX_DEPTH: usize = 2;

struct Generator {
    rng: ChaCha8Rng,
    relations: Vec<Relation>,
    next_alias: usize,
}

/// What a subquery selects.
#[derive(Clone, Copy)]
enum SubItem {
    /// Anything (EXISTS).
    Any,
    /// One value of a family (IN).
    Value(Family),
    /// One aggregate of a family, so one row (scalar subqueries).
    Aggregate(Family),
}

fn call(op: Op, args: Vec<Expr>) -> Expr {
    Expr::Call { op, args }
}

fn binary(symbol: &'static str, left: Expr, right: Expr) -> Expr {
    call(Op::Binary(symbol), vec![left, right])
}

fn output(i: usize) -> String {
    format!("o{i}")
}

impl Generator {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n.max(1))
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.next_alias += 1;
        format!("{prefix}{}", self.next_alias)
    }

    /// Index into `weights`, chosen with those weights.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut roll = self.rng.random_range(0..total.max(1));
        for (i, w) in weights.iter().enumerate() {
            if roll < *w {
                return i;
            }
            roll -= w;
        }
        0
    }

    fn top_query(&mut self) -> Query {
        let mut ctes = Vec::new();
        if self.chance(0.2) {
            for i in 0..1 + self.below(2) {
                let name = format!("w{i}");
                let (select, families) = self.select(&[], None, 1);
                self.relations.push(Relation {
                    name: name.clone(),
                    columns: families
                        .iter()
                        .enumerate()
                        .map(|(i, f)| (output(i), *f))
                        .collect(),
                });
                ctes.push(Cte {
                    name,
                    query: Query::select(select),
                });
            }
        }
        let (body, families) = if self.chance(0.15) {
            let (left, families) = self.select(&[], None, 0);
            let (right, _) = self.select(&[], Some(&families), 0);
            let op = *pick(
                &mut self.rng,
                &[SetOp::Union, SetOp::Union, SetOp::Intersect, SetOp::Except],
            );
            let body = Body::SetOp {
                op,
                all: self.chance(0.5),
                left: Box::new(Body::Select(Box::new(left))),
                right: Box::new(Body::Select(Box::new(right))),
            };
            (body, families)
        } else {
            let (select, families) = self.select(&[], None, 0);
            (Body::Select(Box::new(select)), families)
        };
        let mut query = Query {
            ctes,
            body,
            order_by: Vec::new(),
            limit: None,
            offset: None,
        };
        // Only an ORDER BY over every output column makes LIMIT and OFFSET
        // pick the same rows everywhere.
        if self.chance(0.45) {
            query.order_by = (0..families.len())
                .map(|i| {
                    self.order_item(Expr::Column {
                        rel: None,
                        name: output(i),
                    })
                })
                .collect();
            if self.chance(0.5) {
                query.limit = Some(self.below(10) as u64);
            }
            if self.chance(0.25) {
                query.offset = Some(self.below(5) as u64);
            }
        }
        query
    }

    fn order_item(&mut self, expr: Expr) -> OrderItem {
        OrderItem {
            expr,
            desc: self.chance(0.4),
            nulls_first: self.chance(0.5),
        }
    }

    /// A select over its own FROM clause; `outer` columns may be referenced
    /// (correlation). With `want`, the items have exactly those families.
    fn select(
        &mut self,
        outer: &[ColRef],
        want: Option<&[Family]>,
        depth: usize,
    ) -> (Select, Vec<Family>) {
        let (from, scope) = self.joined_relations(depth);
        let visible: Vec<ColRef> = scope.iter().chain(outer).cloned().collect();
        let filter = self.chance(0.6).then(|| self.predicate(&visible, depth, 2));
        let mut select = Select {
            distinct: false,
            items: Vec::new(),
            from: Some(from),
            filter,
            group_by: None,
            having: None,
        };
        let mut families = Vec::new();
        let mut push = |select: &mut Select, expr: Expr, family: Family| {
            select.items.push(SelectItem {
                expr,
                alias: output(families.len()),
            });
            families.push(family);
        };
        if self.chance(0.35) {
            let groups: Vec<ColRef> = (0..self.below(if want.is_some() { 2 } else { 3 }))
                .filter_map(|_| self.column(&scope, None))
                .collect();
            let kind = if !groups.is_empty() && self.chance(0.3) {
                *pick(
                    &mut self.rng,
                    &[Grouping::Rollup, Grouping::Cube, Grouping::Sets],
                )
            } else {
                Grouping::Plain
            };
            match want {
                Some(want) => {
                    for family in want {
                        let expr = self.aggregate(&scope, *family, depth);
                        push(&mut select, expr, *family);
                    }
                }
                None => {
                    for group in &groups {
                        push(&mut select, group.expr(), group.family);
                    }
                    if kind != Grouping::Plain
                        && self.chance(0.3)
                        && let Some(group) = groups.first()
                    {
                        push(
                            &mut select,
                            call(Op::Func("grouping"), vec![group.expr()]),
                            Family::Num,
                        );
                    }
                    for _ in 0..1 + self.below(3) {
                        let family = self.scope_family(&scope);
                        let expr = self.aggregate(&scope, family, depth);
                        push(&mut select, expr, family);
                    }
                }
            }
            if !groups.is_empty() {
                select.group_by = Some(GroupBy {
                    kind,
                    exprs: groups.iter().map(ColRef::expr).collect(),
                });
            }
            if self.chance(0.3) {
                let aggregate = self.aggregate(&scope, Family::Num, depth);
                let bound = if depth < MAX_DEPTH && self.chance(0.2) {
                    self.subquery(&scope, depth, SubItem::Aggregate(Family::Num))
                } else {
                    self.literal(Family::Num)
                };
                let symbol = self.comparison();
                select.having = Some(binary(symbol, aggregate, bound));
            }
        } else {
            match want {
                Some(want) => {
                    for family in want {
                        let expr = self.expr(&scope, *family, depth, 2);
                        push(&mut select, expr, *family);
                    }
                }
                None => {
                    for _ in 0..1 + self.below(4) {
                        let family = self.scope_family(&scope);
                        let expr = self.expr(&scope, family, depth, 2);
                        push(&mut select, expr, family);
                    }
                    if !scope.is_empty() && self.chance(0.25) {
                        let mut order_sensitive = false;
                        for _ in 0..1 + self.below(2) {
                            let (expr, family) = self.window(&scope, &mut order_sensitive);
                            push(&mut select, expr, family);
                        }
                    }
                }
            }
            select.distinct = self.chance(0.15);
        }
        (select, families)
    }

    /// One to three relations joined, and the columns they make visible.
    fn joined_relations(&mut self, depth: usize) -> (From, Vec<ColRef>) {
        let (mut from, mut scope) = self.relation(depth);
        let joins = if depth == 0 {
            self.weighted(&[40, 40, 20])
        } else {
            self.weighted(&[70, 30])
        };
        for _ in 0..joins {
            let (right, right_scope) = self.relation(depth);
            let kind = [
                JoinKind::Inner,
                JoinKind::Left,
                JoinKind::Right,
                JoinKind::Full,
                JoinKind::Cross,
                JoinKind::LeftSemi,
                JoinKind::LeftAnti,
            ][self.weighted(&[28, 20, 14, 16, 8, 7, 7])];
            let on = (kind != JoinKind::Cross).then(|| self.join_condition(&scope, &right_scope));
            from = From::Join {
                kind,
                left: Box::new(from),
                right: Box::new(right),
                on,
            };
            if !matches!(kind, JoinKind::LeftSemi | JoinKind::LeftAnti) {
                scope.extend(right_scope);
            }
        }
        (from, scope)
    }

    /// A table, CTE or derived table under a fresh alias.
    fn relation(&mut self, depth: usize) -> (From, Vec<ColRef>) {
        if depth < MAX_DEPTH && self.chance(if depth == 0 { 0.12 } else { 0.05 }) {
            let (select, families) = self.select(&[], None, depth + 1);
            let alias = self.alias("d");
            let scope = families
                .iter()
                .enumerate()
                .map(|(i, family)| ColRef {
                    rel: alias.clone(),
                    name: output(i),
                    family: *family,
                })
                .collect();
            let from = From::Derived {
                query: Box::new(Query::select(select)),
                alias,
            };
            return (from, scope);
        }
        let relation = pick(&mut self.rng, &self.relations).clone();
        let alias = self.alias("a");
        let scope = relation
            .columns
            .iter()
            .map(|(name, family)| ColRef {
                rel: alias.clone(),
                name: name.clone(),
                family: *family,
            })
            .collect();
        (
            From::Table {
                name: relation.name,
                alias,
            },
            scope,
        )
    }

    fn join_condition(&mut self, left: &[ColRef], right: &[ColRef]) -> Expr {
        let pairs: Vec<(ColRef, ColRef)> = left
            .iter()
            .flat_map(|l| right.iter().map(move |r| (l.clone(), r.clone())))
            .filter(|(l, r)| l.family == r.family && l.family != Family::Bool)
            .collect();
        if pairs.is_empty() {
            let both: Vec<ColRef> = left.iter().chain(right).cloned().collect();
            return self.predicate(&both, MAX_DEPTH, 1);
        }
        // Keys named `k` first: they share a small domain.
        let keys: Vec<&(ColRef, ColRef)> = pairs
            .iter()
            .filter(|(l, r)| l.name == "k" && r.name == "k")
            .collect();
        let (l, r) = match keys.first() {
            Some(key) if self.chance(0.6) => (*key).clone(),
            _ => pick(&mut self.rng, &pairs).clone(),
        };
        let mut condition = if self.chance(0.85) {
            binary("=", l.expr(), r.expr())
        } else {
            let symbol = *pick(&mut self.rng, &["<", "<=", "<>", ">"]);
            binary(symbol, l.expr(), r.expr())
        };
        if self.chance(0.3) {
            let extra = if self.chance(0.5) {
                let (l, r) = pick(&mut self.rng, &pairs).clone();
                let symbol = self.comparison();
                binary(symbol, l.expr(), r.expr())
            } else {
                // A filter on one side only: where outer joins differ from
                // filtering after the join.
                self.predicate(right, MAX_DEPTH, 0)
            };
            condition = binary("AND", condition, extra);
        }
        condition
    }

    fn comparison(&mut self) -> &'static str {
        const COMPARISONS: [&str; 6] = ["=", "<>", "<", "<=", ">", ">="];
        COMPARISONS[self.below(COMPARISONS.len())]
    }

    fn family(&mut self) -> Family {
        Family::ALL[self.weighted(&[45, 20, 15, 10, 10])]
    }

    /// Mostly the family of one of the scope's columns, so expressions
    /// read data rather than literals.
    fn scope_family(&mut self, scope: &[ColRef]) -> Family {
        match self.column(scope, None) {
            Some(c) if self.chance(0.8) => c.family,
            _ => self.family(),
        }
    }

    /// A column of `family` (any family when `None`), if the scope has one.
    fn column(&mut self, scope: &[ColRef], family: Option<Family>) -> Option<ColRef> {
        let fitting: Vec<&ColRef> = scope
            .iter()
            .filter(|c| family.is_none_or(|f| c.family == f))
            .collect();
        (!fitting.is_empty()).then(|| fitting[self.below(fitting.len())].clone())
    }

    fn literal(&mut self, family: Family) -> Expr {
        if self.chance(0.05) {
            return Expr::Lit("NULL".to_string());
        }
        let ty = match family {
            Family::Num => *pick(
                &mut self.rng,
                &[
                    SqlType::Int,
                    SqlType::Int,
                    SqlType::Double,
                    SqlType::Decimal,
                ],
            ),
            Family::Text => SqlType::Text,
            Family::Bool => SqlType::Bool,
            Family::Date => SqlType::Date,
            Family::Time => SqlType::Timestamp,
        };
        Expr::Lit(random_value(&mut self.rng, ty).sql())
    }

    /// A column of `family` when there is one (mostly), else a literal.
    fn leaf(&mut self, scope: &[ColRef], family: Family) -> Expr {
        match self.column(scope, Some(family)) {
            Some(column) if self.chance(0.85) => column.expr(),
            _ => self.literal(family),
        }
    }

    /// A scalar expression of `family`, at most `budget` operators deep.
    fn expr(&mut self, scope: &[ColRef], family: Family, depth: usize, budget: usize) -> Expr {
        if family == Family::Bool {
            return self.predicate(scope, depth, budget);
        }
        if budget == 0 || self.chance(0.45) {
            return self.leaf(scope, family);
        }
        let next = budget - 1;
        match family {
            Family::Num => match self.weighted(&[10, 6, 5, 3, 5, 3, 3, 4, 3, 2, 5]) {
                0 => {
                    let symbol = *pick(&mut self.rng, &["+", "-"]);
                    let left = self.expr(scope, family, depth, next);
                    let right = self.expr(scope, family, depth, next);
                    binary(symbol, left, right)
                }
                1 => {
                    let left = self.expr(scope, family, depth, next);
                    let factor = Expr::Lit(pick(&mut self.rng, &["2", "3", "-1"]).to_string());
                    binary("*", left, factor)
                }
                2 => {
                    let arg = self.expr(scope, family, depth, next);
                    call(Op::Func("abs"), vec![arg])
                }
                3 => {
                    let arg = self.expr(scope, family, depth, next);
                    binary("%", arg, Expr::Lit("3".to_string()))
                }
                4 => {
                    let arg = self.expr(scope, family, depth, next);
                    let fallback = self.literal(family);
                    call(Op::Func("coalesce"), vec![arg, fallback])
                }
                5 => {
                    let arg = self.expr(scope, Family::Text, depth, next);
                    call(Op::Func("character_length"), vec![arg])
                }
                6 => {
                    let arg = self.expr(scope, family, depth, next);
                    call(Op::Cast("DOUBLE"), vec![arg])
                }
                7 => self.case(scope, family, depth, next),
                8 => {
                    let arg = self.expr(scope, Family::Date, depth, next);
                    call(
                        Op::Func("date_part"),
                        vec![Expr::Lit("'day'".to_string()), arg],
                    )
                }
                9 => {
                    let arg = self.expr(scope, family, depth, next);
                    call(Op::Func("round"), vec![arg])
                }
                _ if depth < MAX_DEPTH => {
                    self.subquery(scope, depth, SubItem::Aggregate(Family::Num))
                }
                _ => self.leaf(scope, family),
            },
            Family::Text => match self.weighted(&[4, 3, 4, 4, 3, 3, 4, 3]) {
                0 => {
                    let arg = self.expr(scope, family, depth, next);
                    let name = *pick(&mut self.rng, &["upper", "lower"]);
                    call(Op::Func(name), vec![arg])
                }
                1 => {
                    let left = self.expr(scope, family, depth, next);
                    let right = self.expr(scope, family, depth, next);
                    call(Op::Func("concat"), vec![left, right])
                }
                2 => {
                    let left = self.expr(scope, family, depth, next);
                    let right = self.literal(family);
                    binary("||", left, right)
                }
                3 => {
                    let arg = self.expr(scope, family, depth, next);
                    call(
                        Op::Func("substr"),
                        vec![arg, Expr::Lit("1".into()), Expr::Lit("2".into())],
                    )
                }
                4 => {
                    let arg = self.expr(scope, family, depth, next);
                    let fallback = self.literal(family);
                    call(Op::Func("coalesce"), vec![arg, fallback])
                }
                5 => {
                    let other = *pick(&mut self.rng, &[Family::Num, Family::Date]);
                    let arg = self.expr(scope, other, depth, next);
                    call(Op::Cast("VARCHAR"), vec![arg])
                }
                6 => self.case(scope, family, depth, next),
                _ if depth < MAX_DEPTH => {
                    self.subquery(scope, depth, SubItem::Aggregate(Family::Text))
                }
                _ => self.leaf(scope, family),
            },
            Family::Date => match self.weighted(&[3, 2]) {
                0 => {
                    let arg = self.expr(scope, family, depth, next);
                    let fallback = self.literal(family);
                    call(Op::Func("coalesce"), vec![arg, fallback])
                }
                _ => self.case(scope, family, depth, next),
            },
            Family::Time | Family::Bool => match self.weighted(&[3, 2, 2, 2]) {
                0 => {
                    let arg = self.expr(scope, family, depth, next);
                    let fallback = self.literal(family);
                    call(Op::Func("coalesce"), vec![arg, fallback])
                }
                1 => {
                    let arg = self.expr(scope, Family::Date, depth, next);
                    call(Op::Cast("TIMESTAMP"), vec![arg])
                }
                2 => {
                    let arg = self.expr(scope, family, depth, next);
                    call(
                        Op::Func("date_trunc"),
                        vec![Expr::Lit("'day'".to_string()), arg],
                    )
                }
                _ => self.case(scope, family, depth, next),
            },
        }
    }

    fn case(&mut self, scope: &[ColRef], family: Family, depth: usize, budget: usize) -> Expr {
        let when = self.predicate(scope, depth, budget);
        let then = self.expr(scope, family, depth, budget);
        let mut args = vec![when, then];
        if self.chance(0.7) {
            args.push(self.expr(scope, family, depth, budget));
        }
        call(Op::Case, args)
    }

    /// A boolean expression over `scope`; subqueries below `MAX_DEPTH`.
    fn predicate(&mut self, scope: &[ColRef], depth: usize, budget: usize) -> Expr {
        let subqueries = if depth < MAX_DEPTH { 16 } else { 0 };
        let nesting = if budget > 0 { 1 } else { 0 };
        match self.weighted(&[35, 8, 15 * nesting, 4 * nesting, 5, 7, 4, 4, 3, subqueries]) {
            0 => {
                let family = match self.column(scope, None) {
                    Some(c) if c.family != Family::Bool => c.family,
                    _ => Family::Num,
                };
                let left = self.leaf(scope, family);
                let right = if self.chance(0.6) {
                    self.literal(family)
                } else {
                    self.expr(scope, family, depth, budget.min(1))
                };
                let symbol = self.comparison();
                binary(symbol, left, right)
            }
            1 => {
                let family = self.scope_family(scope);
                let arg = self.leaf(scope, family);
                let op = if self.chance(0.5) {
                    Op::IsNull
                } else {
                    Op::IsNotNull
                };
                call(op, vec![arg])
            }
            2 => {
                let symbol = *pick(&mut self.rng, &["AND", "OR"]);
                let left = self.predicate(scope, depth, budget - 1);
                let right = self.predicate(scope, depth, budget - 1);
                binary(symbol, left, right)
            }
            3 => {
                let arg = self.predicate(scope, depth, budget - 1);
                call(Op::Not, vec![arg])
            }
            4 => {
                let family = match self.scope_family(scope) {
                    Family::Bool => Family::Num,
                    family => family,
                };
                let arg = self.leaf(scope, family);
                let low = self.literal(family);
                let high = self.literal(family);
                call(Op::Between, vec![arg, low, high])
            }
            5 => {
                let family = match self.scope_family(scope) {
                    Family::Bool | Family::Time => Family::Num,
                    family => family,
                };
                let mut args = vec![self.leaf(scope, family)];
                for _ in 0..1 + self.below(3) {
                    args.push(self.literal(family));
                }
                let negated = self.chance(0.4);
                call(Op::InList { negated }, args)
            }
            6 => {
                let arg = self.leaf(scope, Family::Text);
                let pattern = pick(&mut self.rng, &["a%", "%b%", "_", "%é%", "日%", "%"]);
                call(Op::Like((*pattern).to_string()), vec![arg])
            }
            7 => self.leaf(scope, Family::Bool),
            8 => {
                let family = self.scope_family(scope);
                let left = self.leaf(scope, family);
                let right = self.leaf(scope, family);
                binary("IS DISTINCT FROM", left, right)
            }
            _ => self.subquery_predicate(scope, depth),
        }
    }

    /// EXISTS, NOT EXISTS, IN, NOT IN, or a comparison with a scalar
    /// subquery; correlated with `scope` more often than not.
    fn subquery_predicate(&mut self, scope: &[ColRef], depth: usize) -> Expr {
        match self.weighted(&[4, 3, 4, 3, 4]) {
            0 => Expr::Subquery {
                kind: SubqueryKind::Exists,
                lhs: None,
                query: Box::new(self.subquery_query(scope, depth, SubItem::Any)),
            },
            1 => Expr::Subquery {
                kind: SubqueryKind::NotExists,
                lhs: None,
                query: Box::new(self.subquery_query(scope, depth, SubItem::Any)),
            },
            kind @ (2 | 3) => {
                let family = match self.column(scope, None) {
                    Some(c) if c.family != Family::Bool => c.family,
                    _ => Family::Num,
                };
                let lhs = self.leaf(scope, family);
                Expr::Subquery {
                    kind: if kind == 2 {
                        SubqueryKind::In
                    } else {
                        SubqueryKind::NotIn
                    },
                    lhs: Some(Box::new(lhs)),
                    query: Box::new(self.subquery_query(scope, depth, SubItem::Value(family))),
                }
            }
            _ => {
                let family = *pick(&mut self.rng, &[Family::Num, Family::Num, Family::Text]);
                let left = self.leaf(scope, family);
                let right = self.subquery(scope, depth, SubItem::Aggregate(family));
                let symbol = self.comparison();
                binary(symbol, left, right)
            }
        }
    }

    /// A scalar subquery.
    fn subquery(&mut self, outer: &[ColRef], depth: usize, item: SubItem) -> Expr {
        Expr::Subquery {
            kind: SubqueryKind::Scalar,
            lhs: None,
            query: Box::new(self.subquery_query(outer, depth, item)),
        }
    }

    fn subquery_query(&mut self, outer: &[ColRef], depth: usize, item: SubItem) -> Query {
        let inner_depth = depth + 1;
        let (from, scope) = self.joined_relations(inner_depth);
        let mut conditions = Vec::new();
        if self.chance(0.65) {
            let pairs: Vec<(ColRef, ColRef)> = scope
                .iter()
                .flat_map(|i| outer.iter().map(move |o| (i.clone(), o.clone())))
                .filter(|(i, o)| i.family == o.family && i.family != Family::Bool)
                .collect();
            if !pairs.is_empty() {
                let (i, o) = pick(&mut self.rng, &pairs).clone();
                let symbol = if self.chance(0.8) {
                    "="
                } else {
                    *pick(&mut self.rng, &["<>", "<", ">="])
                };
                conditions.push(binary(symbol, i.expr(), o.expr()));
            }
        }
        if self.chance(0.5) {
            let visible: Vec<ColRef> = scope.iter().chain(outer).cloned().collect();
            conditions.push(self.predicate(&visible, inner_depth, 1));
        }
        let filter = conditions
            .into_iter()
            .reduce(|left, right| binary("AND", left, right));
        let mut select = Select {
            distinct: false,
            items: Vec::new(),
            from: Some(from),
            filter,
            group_by: None,
            having: None,
        };
        let expr = match item {
            SubItem::Any => match self.column(&scope, None) {
                Some(c) if self.chance(0.5) => c.expr(),
                _ => Expr::Lit("1".to_string()),
            },
            SubItem::Value(family) => {
                select.distinct = self.chance(0.15);
                self.expr(&scope, family, inner_depth, 1)
            }
            SubItem::Aggregate(family) => self.aggregate(&scope, family, inner_depth),
        };
        select.items.push(SelectItem {
            expr,
            alias: output(0),
        });
        Query::select(select)
    }

    /// An aggregate of `family` over `scope` (one value per group).
    fn aggregate(&mut self, scope: &[ColRef], family: Family, depth: usize) -> Expr {
        let agg = |name: &'static str, distinct: bool, arg: Expr| {
            call(Op::Agg { name, distinct }, vec![arg])
        };
        match family {
            Family::Num => match self.weighted(&[5, 3, 3, 6, 2, 4, 3, 3]) {
                0 => call(Op::CountStar, vec![]),
                1 => {
                    let family = self.scope_family(scope);
                    agg("count", false, self.leaf(scope, family))
                }
                2 => {
                    let family = self.scope_family(scope);
                    agg("count", true, self.leaf(scope, family))
                }
                3 => {
                    let arg = self.expr(scope, family, depth.max(MAX_DEPTH), 1);
                    agg("sum", false, arg)
                }
                4 => agg("sum", true, self.leaf(scope, family)),
                5 => agg("avg", self.chance(0.2), self.leaf(scope, family)),
                6 => agg("min", false, self.leaf(scope, family)),
                _ => agg("max", false, self.leaf(scope, family)),
            },
            Family::Bool => {
                let name = *pick(&mut self.rng, &["bool_and", "bool_or"]);
                let arg = self.predicate(scope, MAX_DEPTH, 1);
                agg(name, false, arg)
            }
            Family::Text | Family::Date | Family::Time => {
                let name = *pick(&mut self.rng, &["min", "max"]);
                agg(name, self.chance(0.1), self.leaf(scope, family))
            }
        }
    }

    /// A window function over `scope`. Order-sensitive ones (row_number,
    /// lag, ROWS frames, ...) order by every column of the scope, so rows
    /// that tie are identical; at most one of them per select, since two
    /// could break the same tie differently.
    fn window(&mut self, scope: &[ColRef], order_sensitive: &mut bool) -> (Expr, Family) {
        let mut partition_by = Vec::new();
        for _ in 0..self.below(3) {
            if let Some(c) = self.column(scope, None) {
                partition_by.push(c.expr());
            }
        }
        let total_order: Vec<OrderItem> = scope.iter().map(|c| self.order_item(c.expr())).collect();
        let sensitive_allowed = !*order_sensitive;
        let choice = if sensitive_allowed {
            self.weighted(&[4, 3, 2, 2, 1, 2, 2, 2, 4, 3, 2])
        } else {
            self.weighted(&[0, 3, 2, 2, 0, 0, 0, 0, 4, 3, 0])
        };
        let num = |g: &mut Self| g.leaf(scope, Family::Num);
        let (func, args, family, sensitive, rows_frame, ordered) = match choice {
            0 => (
                Op::Func("row_number"),
                vec![],
                Family::Num,
                true,
                false,
                true,
            ),
            1 => (Op::Func("rank"), vec![], Family::Num, false, false, true),
            2 => (
                Op::Func("dense_rank"),
                vec![],
                Family::Num,
                false,
                false,
                true,
            ),
            3 => (
                Op::Func("cume_dist"),
                vec![],
                Family::Num,
                false,
                false,
                true,
            ),
            4 => (
                Op::Func("ntile"),
                vec![Expr::Lit("3".into())],
                Family::Num,
                true,
                false,
                true,
            ),
            5 => {
                let family = self.scope_family(scope);
                let arg = self.leaf(scope, family);
                let name = *pick(&mut self.rng, &["lag", "lead"]);
                (Op::Func(name), vec![arg], family, true, false, true)
            }
            6 => {
                let family = self.scope_family(scope);
                let arg = self.leaf(scope, family);
                let name = *pick(&mut self.rng, &["first_value", "last_value"]);
                (Op::Func(name), vec![arg], family, true, false, true)
            }
            7 => {
                let arg = num(self);
                let agg = Op::Agg {
                    name: "sum",
                    distinct: false,
                };
                (agg, vec![arg], Family::Num, true, true, true)
            }
            8 => {
                let arg = num(self);
                let name = *pick(&mut self.rng, &["sum", "min", "max", "avg"]);
                let agg = Op::Agg {
                    name,
                    distinct: false,
                };
                let ordered = self.chance(0.5);
                (agg, vec![arg], Family::Num, false, false, ordered)
            }
            9 => (
                Op::CountStar,
                vec![],
                Family::Num,
                false,
                false,
                self.chance(0.5),
            ),
            _ => {
                let arg = num(self);
                let agg = Op::Agg {
                    name: "max",
                    distinct: false,
                };
                (agg, vec![arg], Family::Num, true, true, true)
            }
        };
        *order_sensitive |= sensitive;
        let expr = Expr::Window {
            func,
            args,
            partition_by,
            order_by: if ordered { total_order } else { Vec::new() },
            rows_frame,
        };
        (expr, family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_case() {
        for seed in 0..20 {
            assert_eq!(generate_case(seed, 8), generate_case(seed, 8));
        }
        assert_ne!(generate_case(1, 8).queries, generate_case(2, 8).queries);
    }

    /// FNV-1a of every table's CSV and every query's SQL of a few seeds.
    fn fingerprint() -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for seed in 0..8 {
            let case = generate_case(seed, 20);
            let tables = case
                .tables
                .iter()
                .flat_map(|t| (0..t.files.len()).map(|f| t.csv(f)).collect::<Vec<_>>());
            for text in tables.chain(case.queries.iter().map(Query::sql)) {
                for byte in text.bytes() {
                    hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        hash
    }

    #[test]
    fn seeds_keep_giving_what_they_gave() {
        // The regression seeds in tests/fuzz_sql.rs name queries by seed;
        // if this changes on purpose, find them again and update both.
        assert_eq!(fingerprint(), 13_661_244_392_200_242_543);
    }

    #[test]
    fn query_k_does_not_depend_on_how_many_are_asked_for() {
        let few = generate_case(7, 3);
        let many = generate_case(7, 30);
        assert_eq!(few.queries[..], many.queries[..3]);
    }

    #[test]
    fn limits_only_come_under_an_order_over_every_output() {
        for seed in 0..40 {
            for query in generate_case(seed, 20).queries {
                if query.limit.is_some() || query.offset.is_some() {
                    let outputs = match &query.body {
                        Body::Select(s) => s.items.len(),
                        Body::SetOp { left, .. } => match left.as_ref() {
                            Body::Select(s) => s.items.len(),
                            Body::SetOp { .. } => 0,
                        },
                    };
                    assert_eq!(query.order_by.len(), outputs, "{query}");
                }
                let sql = query.sql();
                for banned in ["random(", "now(", "array_agg", "string_agg"] {
                    assert!(!sql.contains(banned), "{sql}");
                }
            }
        }
    }

    #[test]
    fn campaigns_cover_the_shapes_that_matter() {
        let sql: Vec<String> = (0..60)
            .flat_map(|seed| generate_case(seed, 25).queries)
            .map(|q| q.sql())
            .collect();
        for shape in [
            " JOIN ",
            "LEFT JOIN",
            "RIGHT JOIN",
            "FULL JOIN",
            "CROSS JOIN",
            "LEFT SEMI JOIN",
            "LEFT ANTI JOIN",
            "NOT EXISTS (",
            "EXISTS (",
            " NOT IN (SELECT",
            " IN (SELECT",
            "ROLLUP (",
            "CUBE (",
            "GROUPING SETS",
            "HAVING",
            " OVER (",
            "count(DISTINCT",
            "UNION",
            "INTERSECT",
            "EXCEPT",
            "LIMIT",
            "OFFSET",
            "WITH ",
            "SELECT DISTINCT",
            "ROWS BETWEEN",
        ] {
            assert!(
                sql.iter().any(|s| s.contains(shape)),
                "no generated query has {shape}"
            );
        }
        // A disjunction with a subquery under it: a mark join.
        assert!(
            sql.iter()
                .any(|s| s.contains(" OR EXISTS (")
                    || s.contains(" OR (") && s.contains(" IN (SELECT")),
            "no subquery under OR"
        );
    }

    #[test]
    fn tables_have_several_files_and_sometimes_none_of_their_rows() {
        let tables: Vec<Table> = (0..40).flat_map(generate_tables).collect();
        assert!(tables.iter().any(|t| t.files.len() > 1));
        assert!(tables.iter().any(|t| t.rows() == 0));
        assert!(tables.iter().any(|t| t.files.iter().any(Vec::is_empty)));
        let csv: String = tables.iter().map(|t| t.csv(0)).collect();
        assert!(csv.contains("日") || csv.contains("é"), "unicode text");
        assert!(csv.contains(",,") || csv.contains(",\n"), "NULL cells");
    }
}
