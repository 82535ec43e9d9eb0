//! The minimizer: smaller variants of a query (a CTE, join side, predicate,
//! select item, GROUP BY or ORDER BY item, subquery or operator dropped, an
//! expression replaced by one of its parts), and a greedy loop that keeps
//! any variant that still fails until none does or the budget is spent.
//! Variants never remove an ORDER BY that a LIMIT or OFFSET depends on, nor
//! any of a window's order, so a variant's answer is as determined as the
//! original's.

use crate::ast::{Body, Expr, From, Grouping, Op, Query, Select, SubqueryKind};

/// Variants of `query` one step smaller, whose SQL text is shorter; coarse
/// steps first.
pub fn shrink_candidates(query: &Query) -> Vec<Query> {
    let length = query.sql().len();
    let mut out = query_variants(query);
    out.retain(|q| q.sql().len() < length);
    out
}

/// Shrinks `query` while `still_fails` holds, trying at most `budget`
/// variants. The result fails too (or is `query` itself).
pub fn minimize(
    query: &Query,
    budget: usize,
    mut still_fails: impl FnMut(&Query) -> bool,
) -> Query {
    let mut current = query.clone();
    let mut tried = 0;
    'outer: while tried < budget {
        for candidate in shrink_candidates(&current) {
            if tried >= budget {
                break 'outer;
            }
            tried += 1;
            if still_fails(&candidate) {
                current = candidate;
                continue 'outer;
            }
        }
        break;
    }
    current
}

fn query_variants(query: &Query) -> Vec<Query> {
    let mut out = Vec::new();
    let with = |f: &dyn Fn(&mut Query)| {
        let mut q = query.clone();
        f(&mut q);
        q
    };
    for i in 0..query.ctes.len() {
        out.push(with(&|q| {
            q.ctes.remove(i);
        }));
    }
    if query.limit.is_some() {
        out.push(with(&|q| q.limit = None));
    }
    if query.offset.is_some() {
        out.push(with(&|q| q.offset = None));
    }
    if query.limit.is_none() && query.offset.is_none() && !query.order_by.is_empty() {
        out.push(with(&|q| q.order_by.clear()));
    }
    for body in body_variants(&query.body) {
        let mut q = query.clone();
        q.body = body;
        // Keep the order over the outputs that are left.
        let outputs = output_names(&q.body);
        q.order_by.retain(
            |o| matches!(&o.expr, Expr::Column { rel: None, name } if outputs.contains(name)),
        );
        if q.order_by.is_empty() {
            q.limit = None;
            q.offset = None;
        }
        out.push(q);
    }
    for (i, cte) in query.ctes.iter().enumerate() {
        for variant in query_variants(&cte.query) {
            let mut q = query.clone();
            q.ctes[i].query = variant;
            out.push(q);
        }
    }
    out
}

fn output_names(body: &Body) -> Vec<String> {
    match body {
        Body::Select(s) => s.items.iter().map(|i| i.alias.clone()).collect(),
        Body::SetOp { left, .. } => output_names(left),
    }
}

fn body_variants(body: &Body) -> Vec<Body> {
    match body {
        Body::Select(select) => select_variants(select)
            .into_iter()
            .map(|s| Body::Select(Box::new(s)))
            .collect(),
        Body::SetOp {
            op,
            all,
            left,
            right,
        } => {
            let mut out = vec![left.as_ref().clone(), right.as_ref().clone()];
            if !*all {
                out.push(Body::SetOp {
                    op: *op,
                    all: true,
                    left: left.clone(),
                    right: right.clone(),
                });
            }
            for l in body_variants(left) {
                out.push(Body::SetOp {
                    op: *op,
                    all: *all,
                    left: Box::new(l),
                    right: right.clone(),
                });
            }
            for r in body_variants(right) {
                out.push(Body::SetOp {
                    op: *op,
                    all: *all,
                    left: left.clone(),
                    right: Box::new(r),
                });
            }
            out
        }
    }
}

fn select_variants(select: &Select) -> Vec<Select> {
    let mut out = Vec::new();
    let with = |f: &dyn Fn(&mut Select)| {
        let mut s = select.clone();
        f(&mut s);
        s
    };
    if let Some(from) = &select.from {
        for variant in from_variants(from) {
            out.push(with(&|s| s.from = Some(variant.clone())));
        }
    }
    if select.filter.is_some() {
        out.push(with(&|s| s.filter = None));
    }
    if select.having.is_some() {
        out.push(with(&|s| s.having = None));
    }
    if let Some(group_by) = &select.group_by {
        out.push(with(&|s| s.group_by = None));
        if group_by.kind != Grouping::Plain {
            out.push(with(&|s| {
                if let Some(g) = s.group_by.as_mut() {
                    g.kind = Grouping::Plain;
                }
            }));
        }
        for i in 0..group_by.exprs.len() {
            out.push(with(&|s| {
                if let Some(g) = s.group_by.as_mut() {
                    g.exprs.remove(i);
                }
            }));
        }
    }
    if select.items.len() > 1 {
        for i in 0..select.items.len() {
            out.push(with(&|s| {
                s.items.remove(i);
            }));
        }
    }
    if select.distinct {
        out.push(with(&|s| s.distinct = false));
    }
    if let Some(filter) = &select.filter {
        for variant in expr_variants(filter) {
            out.push(with(&|s| s.filter = Some(variant.clone())));
        }
    }
    if let Some(having) = &select.having {
        for variant in expr_variants(having) {
            out.push(with(&|s| s.having = Some(variant.clone())));
        }
    }
    for (i, item) in select.items.iter().enumerate() {
        for variant in expr_variants(&item.expr) {
            out.push(with(&|s| s.items[i].expr = variant.clone()));
        }
    }
    out
}

fn from_variants(from: &From) -> Vec<From> {
    match from {
        From::Table { .. } => Vec::new(),
        From::Derived { query, alias } => query_variants(query)
            .into_iter()
            .map(|q| From::Derived {
                query: Box::new(q),
                alias: alias.clone(),
            })
            .collect(),
        From::Join {
            kind,
            left,
            right,
            on,
        } => {
            let mut out = vec![left.as_ref().clone(), right.as_ref().clone()];
            let join = |left: &From, right: &From, on: &Option<Expr>| From::Join {
                kind: *kind,
                left: Box::new(left.clone()),
                right: Box::new(right.clone()),
                on: on.clone(),
            };
            if let Some(on) = on {
                for variant in expr_variants(on) {
                    out.push(join(left, right, &Some(variant)));
                }
            }
            for l in from_variants(left) {
                out.push(join(&l, right, on));
            }
            for r in from_variants(right) {
                out.push(join(left, &r, on));
            }
            out
        }
    }
}

/// Each argument standing in for the expression, then the expression with
/// one part shrunk.
fn expr_variants(expr: &Expr) -> Vec<Expr> {
    let mut out = Vec::new();
    match expr {
        Expr::Column { .. } => {}
        Expr::Lit(text) => {
            if text != "NULL" && text.len() > 4 {
                out.push(Expr::Lit("NULL".to_string()));
            }
        }
        Expr::Call { op, args } => {
            out.extend(args.iter().cloned());
            if *op == Op::Case && args.len() == 3 {
                out.push(Expr::Call {
                    op: op.clone(),
                    args: args[..2].to_vec(),
                });
            }
            if let Op::Agg {
                name,
                distinct: true,
            } = op
            {
                out.push(Expr::Call {
                    op: Op::Agg {
                        name,
                        distinct: false,
                    },
                    args: args.clone(),
                });
            }
            if matches!(op, Op::InList { .. }) && args.len() > 2 {
                for i in 1..args.len() {
                    let mut fewer = args.clone();
                    fewer.remove(i);
                    out.push(Expr::Call {
                        op: op.clone(),
                        args: fewer,
                    });
                }
            }
            for (i, arg) in args.iter().enumerate() {
                for variant in expr_variants(arg) {
                    let mut args = args.clone();
                    args[i] = variant;
                    out.push(Expr::Call {
                        op: op.clone(),
                        args,
                    });
                }
            }
        }
        Expr::Window {
            func,
            args,
            partition_by,
            order_by,
            rows_frame,
        } => {
            out.extend(args.iter().cloned());
            let window = |partition_by: Vec<Expr>, rows_frame: bool| Expr::Window {
                func: func.clone(),
                args: args.clone(),
                partition_by,
                order_by: order_by.clone(),
                rows_frame,
            };
            for i in 0..partition_by.len() {
                let mut fewer = partition_by.clone();
                fewer.remove(i);
                out.push(window(fewer, *rows_frame));
            }
            if *rows_frame {
                out.push(window(partition_by.clone(), false));
            }
        }
        Expr::Subquery { kind, lhs, query } => {
            if *kind != SubqueryKind::Scalar {
                out.push(Expr::Lit("TRUE".to_string()));
                out.push(Expr::Lit("FALSE".to_string()));
            }
            if let Some(lhs) = lhs {
                for variant in expr_variants(lhs) {
                    out.push(Expr::Subquery {
                        kind: *kind,
                        lhs: Some(Box::new(variant)),
                        query: query.clone(),
                    });
                }
            }
            for variant in query_variants(query) {
                out.push(Expr::Subquery {
                    kind: *kind,
                    lhs: lhs.clone(),
                    query: Box::new(variant),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::generate_case;

    #[test]
    fn candidates_are_shorter() {
        for seed in 0..10 {
            for query in generate_case(seed, 5).queries {
                let length = query.sql().len();
                for candidate in shrink_candidates(&query) {
                    assert!(candidate.sql().len() < length);
                }
            }
        }
    }

    #[test]
    fn minimizing_keeps_the_failure_and_drops_the_rest() {
        // "Fails" while the query still has a FULL JOIN: the minimum is
        // one join of two tables and little else.
        let (seed, query) = (0..200)
            .flat_map(|seed| {
                generate_case(seed, 20)
                    .queries
                    .into_iter()
                    .map(move |q| (seed, q))
            })
            .find(|(_, q)| q.sql().contains("FULL JOIN") && q.sql().len() > 300)
            .unwrap_or_else(|| unreachable!("some query of 200 seeds has a long FULL JOIN"));
        let fails = |q: &Query| q.sql().contains("FULL JOIN");
        let small = minimize(&query, 2_000, fails);
        assert!(fails(&small), "seed {seed}: {small}");
        assert!(
            small.sql().len() < query.sql().len() / 2,
            "seed {seed}: {} -> {}",
            query.sql(),
            small.sql()
        );
        assert_eq!(small.sql().matches(" JOIN ").count(), 1, "{small}");
        assert!(!small.sql().contains("WHERE"), "{small}");
    }

    #[test]
    fn the_budget_bounds_the_work() {
        let query = generate_case(3, 1).queries.remove(0);
        let mut calls = 0;
        let _ = minimize(&query, 5, |_| {
            calls += 1;
            true
        });
        assert!(calls <= 5);
    }
}
