//! The differential SQL fuzzer: a quick campaign finds Ember in agreement
//! with plain DataFusion, seeds replay the same queries, a wrong answer is
//! caught, reported with a replay command and minimized, and every seed
//! that once found a bug stays fixed.

use ember::fuzz_sql::{Bug, Campaign, DiffKind, Report, Target, run_campaign};

use crate::support::text;

fn target(master: &str, shuffle_partitions: usize) -> Target {
    Target {
        master: master.to_string(),
        shuffle_partitions,
    }
}

fn campaign(first_seed: u64, seeds: u64, queries: usize, targets: Vec<Target>) -> Campaign {
    Campaign {
        first_seed,
        seeds,
        only_query: None,
        queries_per_seed: queries,
        targets,
        minimize_budget: 60,
        bug: None,
        verbose: false,
    }
}

fn differences(report: &Report) -> String {
    report
        .differences
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[actix::test]
async fn a_quick_campaign_finds_ember_agreeing_with_datafusion() {
    let targets = vec![
        target("local", 3),
        target("local[2]", 1),
        target("local[2]", 2),
        target("local[3]", 7),
    ];
    let mut campaign = campaign(0, 5, 12, targets);
    campaign.minimize_budget = 30;
    let report = run_campaign(&campaign, &|_| {}).await.unwrap();
    assert_eq!(report.seeds, 5);
    assert_eq!(report.queries, 60);
    assert!(
        report.discarded * 3 < report.queries,
        "most generated queries plan: {report}"
    );
    assert_eq!(report.runs, (report.queries - report.discarded) * 4);
    assert!(report.differences.is_empty(), "{report}\n{}", differences(&report));
}

#[actix::test]
async fn a_wrong_answer_is_caught_with_a_replay_command_and_a_smaller_query() {
    let mut campaign = campaign(11, 1, 6, vec![target("local[2]", 2)]);
    campaign.bug = Some(Bug::DropLastRow);
    let report = run_campaign(&campaign, &|_| {}).await.unwrap();
    let found = report
        .differences
        .iter()
        .find(|d| d.kind == DiffKind::RowsDiffer && d.minimized.is_some())
        .unwrap_or_else(|| panic!("a dropped row is a difference: {report}"));
    assert_eq!(found.seed, 11);
    assert_eq!(
        found.replay,
        format!(
            "ember fuzz-sql --seed 11 --query {} --modes 'local[2]' --shuffle-partitions 2",
            found.query
        )
    );
    let minimized = found.minimized.as_deref().unwrap();
    assert!(
        minimized.len() < found.sql.len(),
        "{minimized} is smaller than {}",
        found.sql
    );
    let shown = found.to_string();
    assert!(shown.contains("missing:   1 rows"), "{shown}");
    assert!(shown.contains("minimized: "), "{shown}");
}

#[test]
fn a_seed_replays_the_same_queries_and_answers() {
    let replay = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ember"))
            .args([
                "fuzz-sql",
                "--seed",
                "5",
                "--queries-per-seed",
                "4",
                "--modes",
                "local",
                "--shuffle-partitions",
                "1",
                "-v",
            ])
            .output()
            .unwrap();
        // Differences (exit code 1) are replayed too.
        assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let first = replay();
    assert!(first.contains("seed 5 query 3: "), "{first}");
    assert!(first.contains("fuzz-sql: 1 seeds, 4 queries"), "{first}");
    // Temporary directories differ between runs; queries and answers not.
    let stable = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| !l.contains("ember-fuzz-sql-") && !l.starts_with("fuzz-sql:"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(stable(&first), stable(&replay()));
}

#[test]
fn differences_exit_with_1_and_print_how_to_replay() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ember"))
        .args([
            "fuzz-sql",
            "--seeds",
            "1",
            "--first-seed",
            "11",
            "--queries-per-seed",
            "3",
            "--modes",
            "local",
            "--shuffle-partitions",
            "1",
            "--minimize-budget",
            "5",
            "--bug",
            "drop-last-row",
        ])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("DIFFERENCE seed 11, query "), "{stdout}");
    assert!(stdout.contains("replay:    ember fuzz-sql --seed 11 --query "), "{stdout}");
    assert!(stdout.contains("differences: "), "{stdout}");
}

/// Seeds (and the query and target) that once found a bug in Ember: each
/// must agree with plain DataFusion from now on.
const REGRESSION_SEEDS: &[(u64, usize, &str, usize)] = &[];

#[actix::test]
async fn seeds_that_found_bugs_stay_fixed() {
    for &(seed, query, master, partitions) in REGRESSION_SEEDS {
        let mut campaign = campaign(seed, 1, query + 1, vec![target(master, partitions)]);
        campaign.only_query = Some(query);
        campaign.minimize_budget = 0;
        let report = run_campaign(&campaign, &|_| {}).await.unwrap();
        assert_eq!(report.queries, 1);
        assert!(
            report.differences.is_empty(),
            "seed {seed} query {query} on {master}/{partitions}: {}",
            differences(&report)
        );
    }
}
