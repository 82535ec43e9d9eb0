//! The worker: a node's agent. It registers its cores and memory with the
//! cluster manager, runs each executor and cluster-mode driver as a child
//! process of the same binary, watches them, reports their exits at once,
//! and kills them on request or when it stops itself. When it loses the
//! manager it keeps its children and registers again when it returns.

mod binaries;
pub mod child;
mod handlers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use ember_transport::{Mailbox, Node, Registration};

use crate::cluster_manager::{AppId, DriverId, ExecutorNo, FromWorker, WorkerId};
use crate::remote::NodeContact;

/// How a worker starts.
pub struct WorkerSpec {
    pub node: Node,
    pub manager: NodeContact,
    /// The host name children listen on and their certificates name.
    pub host: String,
    pub cores: u32,
    pub memory_mb: u64,
    pub work_dir: PathBuf,
    /// How children are started: processes of the `ember` binary
    /// ([`ProcessLauncher`]), or, in a simulation, actors of its own.
    pub launcher: Box<dyn Launcher>,
    pub certs: PathBuf,
    pub cert_name: String,
    /// Settings handed on to children.
    pub conf: Vec<(String, String)>,
    /// How often to try the manager again while it is away.
    pub retry: Duration,
    /// Whether the worker's end ends its actix System (its process).
    pub stops_system: bool,
}

/// Starts a worker's children and tells it, with [`ChildExited`], when each
/// ends.
pub trait Launcher {
    /// Starts `program` (`None`: the worker's own binary) with `args`.
    fn launch(
        &mut self,
        key: &ChildKey,
        program: Option<&Path>,
        args: &[String],
        dir: &Path,
        spec: &ChildSpec,
        exited: Recipient<ChildExited>,
    ) -> std::io::Result<Box<dyn RunningProcess>>;
}

/// A child the worker started.
pub trait RunningProcess {
    fn pid(&self) -> u32;
    /// Ends it at once, as SIGKILL does; its end is still reported.
    fn kill(&self);
}

/// A child ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub key: ChildKey,
    pub pid: u32,
    pub code: Option<i32>,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChildKey {
    Executor(AppId, ExecutorNo),
    Driver(DriverId),
}

/// A child to start: what the worker was told to launch.
struct Launch {
    key: ChildKey,
    args: Vec<String>,
    dir: PathBuf,
    spec: ChildSpec,
    cores: u32,
    memory_mb: u64,
    /// The program to run, fetched from the manager; `None`: the worker's
    /// own binary.
    binary: Option<crate::binaries::BinaryRef>,
    /// Side files to put in `dir` before the child starts.
    files: Vec<crate::binaries::SideFile>,
}

struct RunningChild {
    process: Box<dyn RunningProcess>,
    cores: u32,
    memory_mb: u64,
}

pub struct Worker {
    spec: WorkerSpec,
    id: WorkerId,
    manager: Option<Mailbox<FromWorker>>,
    children: BTreeMap<ChildKey, RunningChild>,
    registration: Option<Registration>,
    /// Whether a registration attempt is under way.
    connecting: bool,
    /// Whether the last attempt failed (to log a lost manager once).
    warned: bool,
    /// Drivers that exited since the last registration, and their codes.
    exited_drivers: Vec<(String, Option<i32>)>,
    /// Drivers' scripts arriving in parts ahead of their launch.
    scripts: crate::cluster_manager::upload::ScriptAssembly,
    /// Application binaries kept here, and launches waiting for one.
    binaries: binaries::BinaryCache,
}

impl Worker {
    pub fn new(spec: WorkerSpec) -> Self {
        Self {
            binaries: binaries::BinaryCache::new(spec.work_dir.join("binaries")),
            id: spec.node.id().0.clone(),
            spec,
            manager: None,
            children: BTreeMap::new(),
            registration: None,
            connecting: false,
            exited_drivers: Vec::new(),
            scripts: Default::default(),
            warned: false,
        }
    }

    fn driver_dir(&self, driver: &str) -> PathBuf {
        self.spec.work_dir.join(driver)
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let access = ember_transport::Access::Roles(vec![ember_certs::Role::ClusterManager]);
        match self.spec.node.register(
            crate::cluster_manager::WORKER,
            ctx.address()
                .recipient::<crate::cluster_manager::ToWorker>(),
            access,
        ) {
            Ok(registration) => self.registration = Some(registration),
            Err(e) => {
                tracing::error!(error = %e, "cannot take orders");
                ctx.stop();
                return;
            }
        }
        ctx.notify(handlers::Connect);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(registration) = self.registration.as_mut() {
            registration.set_reason(ember_transport::ExitReason::Normal);
        }
        let count = self.children.len();
        for child in std::mem::take(&mut self.children).into_values() {
            child.process.kill();
        }
        tracing::info!(killed = count, "worker stopped");
        if self.spec.stops_system {
            System::current().stop();
        }
    }
}

pub use child::{ChildSpec, ProcessLauncher};
pub use handlers::StopWorker;
