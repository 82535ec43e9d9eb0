//! Seeded simulations of a whole cluster, as `ember simulate` runs them:
//! a quick campaign keeps every promise, a seed replays exactly, a
//! deliberate bug is caught with a seed that replays it, and the seeds that
//! once found bugs stay fixed.

use std::process::Command;

use ember::simulations::{Bugs, Campaign, FaultKind, Shape};

fn campaign(first_seed: u64, seeds: u64, bugs: Bugs) -> Campaign {
    Campaign {
        first_seed,
        seeds,
        shape: Shape::default(),
        bugs,
        threads: 2,
    }
}

#[test]
fn a_quick_campaign_keeps_every_promise() {
    let report = campaign(0, 200, Bugs::default()).run(&|_| {}).unwrap();
    assert!(report.violations.is_empty(), "{report}");
    assert_eq!(report.seeds, 200);
    for kind in FaultKind::DEFAULT {
        assert!(
            report.faults.get(&kind).copied().unwrap_or(0) > 10,
            "{kind} was hardly injected: {report}"
        );
    }
    // Faults do make jobs fail, and most still succeed with the right rows.
    assert!(report.jobs_failed > 0, "{report}");
    assert!(report.jobs_succeeded > 4 * report.jobs_failed, "{report}");
}

#[test]
fn a_seed_replays_to_the_same_trace() {
    let sim = campaign(0, 1, Bugs::default());
    for seed in [7, 104] {
        let first = sim.replay(seed).unwrap();
        let second = sim.replay(seed).unwrap();
        assert_eq!(first.trace, second.trace, "seed {seed}");
        assert_eq!(first.trace_hash, second.trace_hash);
        assert!(
            first.trace.iter().any(|l| l.contains("begin")),
            "{:?}",
            first.trace
        );
    }
    let a = sim.replay(7).unwrap();
    let b = sim.replay(8).unwrap();
    assert_ne!(a.trace_hash, b.trace_hash);
}

#[test]
fn executors_that_ignore_driver_loss_are_caught_with_a_replayable_seed() {
    let buggy = campaign(
        0,
        40,
        Bugs {
            orphan_executors: true,
            ..Bugs::default()
        },
    );
    let report = buggy.run(&|_| {}).unwrap();
    let (seed, violation) = report
        .violations
        .iter()
        .find(|(_, v)| v.contains("orphan executor"))
        .unwrap_or_else(|| panic!("the bug went unnoticed: {report}"))
        .clone();
    assert!(report.to_string().contains(&format!(
        "replay: ember simulate --seed {seed} --bug orphan-executors"
    )));
    // The seed replays the violation, and without the bug it holds.
    let replayed = buggy.replay(seed).unwrap();
    assert!(replayed.violations.contains(&violation), "{replayed:?}");
    let fixed = campaign(0, 1, Bugs::default()).replay(seed).unwrap();
    assert!(fixed.violations.is_empty(), "{:?}", fixed.violations);
}

/// Seeds that found a job hanging after its running stage lost map output
/// with a partitioned executor.
#[test]
fn seeds_that_found_bugs_stay_fixed() {
    let sim = campaign(0, 1, Bugs::default());
    for seed in [60, 104, 131, 267] {
        let report = sim.replay(seed).unwrap();
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}",
            report.violations
        );
        assert_eq!(report.jobs_succeeded + report.jobs_failed, 4);
    }
}

#[test]
fn the_command_prints_a_report_and_refuses_unknown_faults() {
    let ember = env!("CARGO_BIN_EXE_ember");
    let out = Command::new(ember)
        .args(["simulate", "--seeds", "4", "--faults", "kill,pause"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("seeds run:            4"), "{stdout}");
    assert!(stdout.contains("violations:           none"), "{stdout}");
    assert!(!stdout.contains("partition"), "{stdout}");

    let out = Command::new(ember)
        .args(["simulate", "--faults", "flood"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown fault 'flood'"), "{stderr}");
    assert!(stderr.contains("partition"), "{stderr}");
}
