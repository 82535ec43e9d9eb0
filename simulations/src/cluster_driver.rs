//! A cluster-mode driver as a worker launches it (`ember --role driver`),
//! on the worker's host: the runtime turns its launch spec into session
//! settings, the real [`Session`] joins the cluster through the simulated
//! network, and the real script runner runs the submitted script: a view
//! per job (DDL in the driver's catalog) and a `COPY` of it, committed once
//! per submission by the session's output commit. It exits 0, or 1 with
//! the reason.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ember_actors::cluster_app::reach_manager;
use ember_actors::remote::NodeContact;
use ember_actors::worker::child::ChildSpec;
use ember_certs::NodeCredentials;
use ember_engine::script::split_statements;
use ember_engine::{Committed, EngineError, StagedOutput, TaskAttempt};
use ember_runtime::DriverLaunch;
use ember_session::{
    CommitUsedAttempts, Flow, Mode, OutputCommitter, ScriptError, Session, run_script,
};
use ember_transport::Node;

use crate::jobs::{file_destination, staged_attempts};
use crate::workload::QUERIES;
use crate::world::SimProcess;

/// The deliberate bugs a simulated driver may carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct DriverBugs {
    /// The deliberate bug of file output: every staged attempt committed.
    pub commit_every_attempt: bool,
    /// The deliberate bug of cluster mode: a relaunched driver attempt
    /// claims its output under a name of its own, not its submission's, so
    /// it commits again what an earlier attempt committed.
    pub claim_per_attempt: bool,
}

const NAME_PREFIX: &str = "sim-";

/// The name of simulated application `app` (its submission's too).
pub fn app_name(app: usize) -> String {
    format!("{NAME_PREFIX}{app}")
}

/// The application a name names.
pub fn app_named(name: &str) -> Option<usize> {
    name.strip_prefix(NAME_PREFIX)?.parse().ok()
}

/// Statements each job of a submission's script takes: its view, then
/// the `COPY` of it.
const STATEMENTS_PER_JOB: usize = 2;

/// The script a cluster-mode submission of application `app` carries: for
/// each of its `jobs` (indexes into the workload's queries), a view of the
/// query and a `COPY` of the view into the job's destination under
/// `output`.
pub fn submission_script(
    app: usize,
    jobs: &[usize],
    output: &Path,
    stream: Option<&Path>,
) -> String {
    let mut script = String::new();
    for (j, &query) in jobs.iter().enumerate() {
        script.push_str(&format!(
            "CREATE OR REPLACE VIEW job_{j} AS {};\n\
             COPY (SELECT * FROM job_{j}) TO '{}/' STORED AS CSV OPTIONS ('format.has_header' 'false');\n",
            QUERIES[query],
            file_destination(output, app, j).display()
        ));
    }
    // A stream after the jobs: its two statements take a job's place, and
    // the script's end awaits it.
    if let Some(dir) = stream {
        for statement in crate::streaming::statements(app, dir) {
            script.push_str(&statement);
            script.push_str(";\n");
        }
    }
    script
}

/// One driver attempt as its worker launches it: the certificate it runs
/// with, and its launch spec.
pub struct Launch {
    pub creds: NodeCredentials,
    pub spec: ChildSpec,
}

/// Runs the driver to its end: its exit code, and how it exited.
pub async fn run(process: &Arc<SimProcess>, launch: Launch, bugs: DriverBugs) -> (i32, String) {
    match drive(process, launch, bugs).await {
        Ok(()) => (0, "exited with code 0".to_string()),
        Err(why) => (1, format!("exited with code 1: {why}")),
    }
}

async fn drive(process: &Arc<SimProcess>, launch: Launch, bugs: DriverBugs) -> Result<(), String> {
    let ChildSpec::Driver {
        node: ns, manager, ..
    } = &launch.spec
    else {
        return Err("the launch spec is not a driver's".into());
    };
    let (instance, manager) = (ns.instance.clone(), manager.clone());
    // As `ember --role driver` reads it, without entering a directory.
    let DriverLaunch { job, options, .. } = DriverLaunch::from_spec(launch.spec)?;
    let node_options = options.conf.node_options().map_err(|e| e.to_string())?;
    let socket = Arc::clone(process.socket());
    let seed = u64::from(socket.addr().port()) << 8 | 0xd;
    let node = Node::start_simulated(
        &launch.creds,
        Some(&instance),
        Arc::clone(&socket),
        node_options,
        seed,
    )
    .map_err(|e| e.to_string())?;
    process.set_node(node.clone());
    let manager: NodeContact = reach_manager(&node, manager.addr, &manager.host)
        .await
        .map_err(|e| e.to_string())?;
    let mut session = Session::join(node, manager, options)
        .await
        .map_err(|e| e.to_string())?;
    process.set_driver(session.driver().clone());
    let app = app_named(&job.name).map_or("?".to_string(), |a| a.to_string());
    session.set_committer(Arc::new(SimCommitter {
        bugs,
        earlier_attempts: process.earlier_attempts(),
        noted: Some((Arc::clone(process), app, AtomicUsize::new(0))),
    }));
    let statements = split_statements(&job.script);
    let ran = run_script::<std::convert::Infallible>(
        &mut session,
        &job.name,
        &statements,
        Mode::Run,
        async |_, _, _| Ok(Flow::Continue),
    )
    .await;
    let failure = match ran {
        Ok(_) => None,
        Err(ScriptError::Statement(failed)) => {
            let j = (failed.index - 1) / STATEMENTS_PER_JOB;
            let why = failed.error.to_string();
            process.failed_job(j, &why);
            Some(format!("job {j} failed: {why}"))
        }
        Err(ScriptError::Sink(never)) => match never {},
    };
    session.stop_with(failure.clone()).await;
    failure.map_or(Ok(()), Err)
}

/// The session's output commit, or one with the deliberate bugs.
struct SimCommitter {
    bugs: DriverBugs,
    /// Driver attempts of this submission before this one.
    earlier_attempts: usize,
    /// A driver's process, its application, and the outputs committed so
    /// far: each commit goes in the trace.
    noted: Option<(Arc<SimProcess>, String, AtomicUsize)>,
}

impl SimCommitter {
    fn note(&self, committed: &Result<Committed, EngineError>) {
        let Some((process, app, outputs)) = &self.noted else {
            return;
        };
        let j = outputs.fetch_add(1, Ordering::Relaxed);
        match committed {
            Ok(Committed::Now) => process.note(format!("committed app {app} job {j}")),
            Ok(Committed::Earlier) => process.note(format!(
                "found app {app} job {j} committed by an earlier attempt"
            )),
            Err(_) => {}
        }
    }
}

impl OutputCommitter for SimCommitter {
    fn commit(
        &self,
        staged: StagedOutput,
        used: &[TaskAttempt],
        claim: Option<&str>,
    ) -> Result<Committed, EngineError> {
        let committed = if self.bugs.commit_every_attempt {
            let every = staged_attempts(staged.staging_dir());
            staged.commit(&every).map(|()| Committed::Now)
        } else {
            match claim {
                Some(claim) if self.bugs.claim_per_attempt && self.earlier_attempts > 0 => {
                    let own = format!("{claim}-attempt-{}", self.earlier_attempts);
                    CommitUsedAttempts.commit(staged, used, Some(&own))
                }
                _ => CommitUsedAttempts.commit(staged, used, claim),
            }
        };
        self.note(&committed);
        committed
    }
}

/// The session's output commit for a client-mode application, or one
/// that commits every staged attempt (the deliberate bug).
pub fn committer(bugs: DriverBugs) -> Arc<dyn OutputCommitter> {
    Arc::new(SimCommitter {
        bugs,
        earlier_attempts: 0,
        noted: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_names_its_application() {
        assert_eq!(app_named(&app_name(2)), Some(2));
        assert_eq!(app_named("watch-time"), None);
        assert_eq!(app_named("sim-x"), None);
    }

    #[test]
    fn a_submission_script_has_a_view_and_a_copy_per_job() {
        let script = submission_script(1, &[0, 3], Path::new("/out"), None);
        let statements = split_statements(&script);
        assert_eq!(statements.len(), 2 * STATEMENTS_PER_JOB);
        assert!(
            statements[0]
                .text
                .starts_with("CREATE OR REPLACE VIEW job_0")
        );
        assert!(statements[3].text.contains("TO '/out/app-1-job-1/'"));
    }
}
