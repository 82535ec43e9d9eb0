//! A cluster-mode driver as a worker launches it (`ember --role driver`),
//! on the worker's host: it reaches the manager, starts its submission's
//! application, runs the jobs of the simulated application its script
//! names, commits each job's files once per submission (the claim
//! `<submission>.<job>`), and exits 0, or 1 with the reason.

use std::path::PathBuf;
use std::sync::Arc;

use ember_actors::EmberConf;
use ember_actors::cluster_app::{ClusterApp, ClusterAppSpec, reach_manager};
use ember_actors::cluster_manager::{AppRequest, DriverId, DriverJob};
use ember_actors::remote::NodeContact;
use ember_actors::worker::child::NodeSpec;
use ember_certs::NodeCredentials;
use ember_engine::{Committed, StagePlanner};
use ember_transport::Node;

use crate::jobs::{FileJob, file_destination, write_job};
use crate::scenario::AppPlan;
use crate::workload::{PARTITIONS, QUERIES};
use crate::world::SimProcess;

/// What a simulated driver needs beyond its launch spec: the seed's
/// applications (its script names one) and where their files go.
pub struct DriverPrograms {
    pub plans: Vec<AppPlan>,
    pub output: PathBuf,
    /// The deliberate bug of file output: every staged attempt committed.
    pub commit_every_attempt: bool,
    /// The deliberate bug of cluster mode: a relaunched driver attempt
    /// claims its output under a name of its own, not its submission's, so
    /// it commits again what an earlier attempt committed.
    pub claim_per_attempt: bool,
}

const SCRIPT_PREFIX: &str = "-- sim app ";

/// The script a cluster-mode submission of application `app` carries.
pub fn script_for(app: usize) -> String {
    format!("{SCRIPT_PREFIX}{app}")
}

/// The application a submission's script names.
pub fn app_named(script: &str) -> Option<usize> {
    script
        .trim()
        .strip_prefix(SCRIPT_PREFIX)?
        .trim()
        .parse()
        .ok()
}

/// One driver attempt as its worker launches it: the certificate it runs
/// with, its node, the submission it runs and the manager to reach.
pub struct DriverLaunch {
    pub creds: NodeCredentials,
    pub node: NodeSpec,
    pub driver: DriverId,
    pub job: DriverJob,
    pub manager: NodeContact,
}

/// Runs the driver to its end: its exit code, and how it exited.
pub async fn run(
    process: &Arc<SimProcess>,
    launch: DriverLaunch,
    programs: &DriverPrograms,
) -> (i32, String) {
    match drive(process, launch, programs).await {
        Ok(()) => (0, "exited with code 0".to_string()),
        Err(why) => (1, format!("exited with code 1: {why}")),
    }
}

async fn drive(
    process: &Arc<SimProcess>,
    launch: DriverLaunch,
    programs: &DriverPrograms,
) -> Result<(), String> {
    let DriverLaunch {
        creds,
        node: ns,
        driver,
        job,
        manager,
    } = launch;
    let index = app_named(&job.script)
        .ok_or_else(|| format!("the script names no simulated application: {}", job.script))?;
    let plan = programs
        .plans
        .get(index)
        .ok_or_else(|| format!("no simulated application {index}"))?;
    // As `ember --role driver`: the worker's settings, then the job's.
    let mut conf = EmberConf::new();
    for (k, v) in ns.conf.iter().chain(job.conf.iter()) {
        conf.set(k, v).map_err(|e| e.to_string())?;
    }
    let options = conf.node_options().map_err(|e| e.to_string())?;
    let socket = Arc::clone(process.socket());
    let seed = u64::from(socket.addr().port()) << 8 | 0xd;
    let node = Node::start_simulated(
        &creds,
        Some(&ns.instance),
        Arc::clone(&socket),
        options,
        seed,
    )
    .map_err(|e| e.to_string())?;
    process.set_node(node.clone());
    let manager = reach_manager(&node, manager.addr, &manager.host)
        .await
        .map_err(|e| e.to_string())?;
    let app = ClusterApp::start(ClusterAppSpec {
        contact: NodeContact {
            node: node.id().clone(),
            addr: socket.addr(),
            host: ns.host.clone(),
        },
        node,
        manager,
        request: AppRequest {
            name: job.name.clone(),
            executor_cores: job.executor_cores,
            executor_memory_mb: job.executor_memory_mb,
            max_cores: job.max_cores,
            conf: conf.pairs(),
            binary: None,
        },
        submission: Some(driver.clone()),
        scheduler: conf.scheduler(4),
        listener: None,
    })
    .await
    .map_err(|e| e.to_string())?;
    process.set_driver(app.driver().clone());
    let ctx = datafusion::prelude::SessionContext::new_with_config(
        ember_engine::session::planning_config(PARTITIONS),
    );
    let mut planner = StagePlanner::new();
    let mut failure = None;
    for (j, &query) in plan.jobs.iter().enumerate() {
        let claim = match process.earlier_attempts() {
            earlier if programs.claim_per_attempt && earlier > 0 => {
                format!("{driver}-attempt-{earlier}.{j}")
            }
            _ => format!("{driver}.{j}"),
        };
        let write = FileJob {
            destination: file_destination(&programs.output, index, j),
            claim,
            commit_every_attempt: programs.commit_every_attempt,
        };
        match write_job(&ctx, &mut planner, app.driver(), QUERIES[query], &write).await {
            Ok(Committed::Now) => process.note(format!("committed app {index} job {j}")),
            Ok(Committed::Earlier) => process.note(format!(
                "found app {index} job {j} committed by an earlier attempt"
            )),
            Err(why) => {
                process.failed_job(j, &why);
                failure = Some(format!("job {j} failed: {why}"));
                break;
            }
        }
    }
    app.stop(failure.clone()).await;
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_names_its_application() {
        assert_eq!(app_named(&script_for(2)), Some(2));
        assert_eq!(app_named("SELECT 1"), None);
        assert_eq!(app_named("-- sim app x"), None);
    }
}
