//! `--role driver`: a cluster-mode driver a worker started, with its job on
//! standard input. This module turns the launch spec into the session
//! options the driver runs with; what the driver then runs (a SQL script,
//! or an application's own code) is its caller's.

use ember_actors::cluster_manager::{AppRequest, DriverJob};
use ember_actors::worker::child::{ChildSpec, read_spec};
use ember_session::{ClusterSettings, Master, SessionOptions};

/// A cluster-mode driver as its worker launched it.
pub struct DriverLaunch {
    /// The submission this driver runs (its driver id).
    pub driver: String,
    /// What was submitted.
    pub job: DriverJob,
    /// How to start the driver's session on the cluster.
    pub options: SessionOptions,
}

/// Reads the launch spec on standard input, enters the directory the job
/// was submitted from (when this node has it), and gathers the session's
/// settings.
pub fn launched() -> Result<DriverLaunch, String> {
    let spec = read_spec(&mut std::io::stdin().lock()).map_err(|e| e.to_string())?;
    let launch = DriverLaunch::from_spec(spec)?;
    // The worker put the side files in the work dir it started this
    // driver in, which it may leave for the submitting directory.
    if !launch.job.files.is_empty()
        && let Ok(dir) = std::env::current_dir()
    {
        ember_engine::files::set_root(&dir);
    }
    if let Some(Err(e)) = launch.job.base_dir.as_ref().map(std::env::set_current_dir) {
        tracing::warn!(error = %e, "cannot enter the submitting directory; relative paths resolve in the work dir");
    }
    Ok(launch)
}

impl DriverLaunch {
    /// A driver's launch spec as session settings: the worker's, then the
    /// job's.
    pub fn from_spec(spec: ChildSpec) -> Result<Self, String> {
        let ChildSpec::Driver {
            node,
            driver,
            job,
            manager,
        } = spec
        else {
            return Err("the launch spec is not a driver's".into());
        };
        let pairs: Vec<(String, String)> = node.conf.iter().chain(&job.conf).cloned().collect();
        let conf = crate::roles::conf_from(&pairs)?;
        let master = Master::Cluster {
            host: manager.host.clone(),
            port: manager.addr.port(),
        };
        let options = SessionOptions {
            master,
            conf,
            functions: ember_engine::Functions::new(),
            listener: None,
            files: vec![],
            cluster: Some(ClusterSettings {
                certs: node.certs.clone(),
                cert_name: Some(node.cert_name.clone()),
                role: ember_certs::Role::Worker,
                instance: node.instance.clone(),
                driver_host: node.host.clone(),
                request: AppRequest {
                    name: job.name.clone(),
                    executor_cores: job.executor_cores,
                    executor_memory_mb: job.executor_memory_mb,
                    max_cores: job.max_cores,
                    conf: vec![],
                    binary: job.binary.clone(),
                    files: job.files.clone(),
                },
                submission: Some(driver.clone()),
                binary: None,
            }),
        };
        Ok(DriverLaunch {
            driver,
            job,
            options,
        })
    }
}
