//! One handler per message the worker receives: orders from the manager,
//! its children's exits, and its own reconnection attempts.

use std::time::Duration;

use actix::prelude::*;

use super::child::{self, ChildSpec, NodeSpec};
use super::{ChildExited, ChildKey, Launch, RunningChild, Worker};
use crate::cluster_manager::{
    AppId, DriverId, DriverLogs, ExecutorNo, FOR_WORKERS, FromWorker, RunningExecutor, ToWorker,
    WorkerError, WorkerId,
};
use crate::supervision::PeerDown;

/// How long registering with the manager may take.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Try to (re)register with the manager.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct Connect;

/// Stop the worker and every child it runs.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopWorker;

/// The outcome of a registration attempt, and what it told the manager.
#[derive(Message)]
#[rtype(result = "()")]
#[allow(clippy::type_complexity)]
struct Registered(
    Result<
        (
            ember_transport::NodeId,
            ember_transport::Mailbox<FromWorker>,
        ),
        (String, bool),
    >,
    Told,
);

/// What a registration told the manager: the driver exits it carried and
/// the executors it said run. Built when the attempt starts; children may
/// end before it is through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Told {
    exits: Vec<(DriverId, Option<i32>)>,
    executors: Vec<(AppId, ExecutorNo)>,
}

impl Told {
    fn of(register: &FromWorker) -> Self {
        match register {
            FromWorker::Register {
                executors,
                exited_drivers,
                ..
            } => Told {
                exits: exited_drivers.clone(),
                executors: executors
                    .iter()
                    .map(|e| (e.app.clone(), e.executor))
                    .collect(),
            },
            _ => Told::default(),
        }
    }
}

/// The ends of children the manager was told of as running, or not at
/// all, because they ended while the registration was on its way: driver
/// exits it did not carry, and executors it listed that no longer run.
pub(super) fn untold_ends(
    worker: &WorkerId,
    told: &Told,
    exited_drivers: &[(DriverId, Option<i32>)],
    running: impl Fn(&ChildKey) -> bool,
) -> Vec<FromWorker> {
    let drivers = exited_drivers
        .iter()
        .filter(|exit| !told.exits.contains(exit))
        .map(|(driver, code)| FromWorker::DriverExited {
            driver: driver.clone(),
            code: *code,
            why: match code {
                Some(code) => format!("exited with code {code}"),
                None => "killed by a signal".to_string(),
            },
            worker: Some(worker.clone()),
        });
    let executors = told
        .executors
        .iter()
        .filter(|(app, executor)| !running(&ChildKey::Executor(app.clone(), *executor)))
        .map(|(app, executor)| FromWorker::ExecutorExited {
            app: app.clone(),
            executor: *executor,
            why: "exited while its worker registered again".to_string(),
        });
    drivers.chain(executors).collect()
}

impl Handler<StopWorker> for Worker {
    type Result = ();

    fn handle(&mut self, _msg: StopWorker, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Connect> for Worker {
    type Result = ();

    fn handle(&mut self, _msg: Connect, ctx: &mut Context<Self>) {
        if self.manager.is_some() || self.connecting {
            return;
        }
        self.connecting = true;
        let node = self.spec.node.clone();
        let manager = self.spec.manager.clone();
        let register = self.registration_message();
        let told = Told::of(&register);
        let me = ctx.address();
        ctx.spawn(
            async move {
                let outcome = async {
                    let known = manager.node.clone();
                    let id =
                        if !known.0.is_empty() && node.peers().iter().any(|(id, _)| *id == known) {
                            known
                        } else {
                            node.connect(manager.addr, &manager.host)
                                .await
                                .map_err(|e| (e.to_string(), false))?
                        };
                    let address = ember_transport::ActorAddress {
                        node: id.clone(),
                        name: FOR_WORKERS.to_string(),
                    };
                    let mailbox = node
                        .mailbox::<FromWorker>(&address)
                        .map_err(|e| (e.to_string(), false))?;
                    match mailbox.ask(register, REGISTER_TIMEOUT).await {
                        Ok(Ok(())) => Ok((id, mailbox)),
                        Ok(Err(why)) => Err((why.to_string(), false)),
                        Err(ember_transport::SendError::Refused(_, refusal)) => Err((
                            format!("the cluster manager refused this worker: {refusal}"),
                            true,
                        )),
                        Err(e) => Err((e.to_string(), false)),
                    }
                }
                .await;
                me.do_send(Registered(outcome, told));
            }
            .into_actor(self),
        );
    }
}

impl Handler<Registered> for Worker {
    type Result = ();

    fn handle(&mut self, msg: Registered, ctx: &mut Context<Self>) {
        self.connecting = false;
        match msg.0 {
            Ok((id, mailbox)) => {
                self.spec.manager.node = id;
                // Children that ended while the registration was on its
                // way were registered as running: their ends are told now,
                // and a driver's exit stays for the next registration until
                // one carries it (the manager must never take an ended
                // driver for a running one, nor for lost).
                let told = msg.1;
                for report in untold_ends(&self.id, &told, &self.exited_drivers, |key| {
                    self.children.contains_key(key)
                }) {
                    let _ = mailbox.tell(report);
                }
                self.exited_drivers
                    .retain(|exit| !told.exits.contains(exit));
                tracing::info!(manager = %self.spec.manager.node, children = self.children.len(), "registered with the cluster manager");
                self.spec
                    .node
                    .monitor(mailbox.address(), ctx.address().recipient::<PeerDown>());
                self.manager = Some(mailbox);
                self.warned = false;
            }
            Err((why, fatal)) if fatal => {
                tracing::error!(%why, "stopping: a worker needs a certificate issued with --role worker");
                eprintln!("error: {why}; a worker needs a certificate issued with --role worker");
                System::current().stop_with_code(2);
            }
            Err((why, _)) => {
                if self.warned {
                    tracing::debug!(%why, "cluster manager still unreachable");
                } else {
                    tracing::warn!(%why, manager = %self.spec.manager.addr, "cannot register with the cluster manager; retrying");
                    self.warned = true;
                }
                ctx.notify_later(Connect, self.spec.retry);
            }
        }
    }
}

impl Handler<PeerDown> for Worker {
    type Result = ();

    /// The manager is gone: children keep running; register again when it
    /// is back.
    fn handle(&mut self, msg: PeerDown, ctx: &mut Context<Self>) {
        if self
            .manager
            .as_ref()
            .is_some_and(|m| *m.address() == msg.peer)
        {
            tracing::warn!(reason = %msg.reason, children = self.children.len(), "lost the cluster manager; children keep running");
            self.manager = None;
            ctx.notify_later(Connect, self.spec.retry);
        }
    }
}

impl Handler<ToWorker> for Worker {
    type Result = Result<DriverLogs, WorkerError>;

    fn handle(&mut self, msg: ToWorker, ctx: &mut Context<Self>) -> Self::Result {
        match msg {
            ToWorker::LaunchExecutor {
                app,
                executor,
                cores,
                memory_mb,
                driver,
                secret,
                conf,
                binary,
                files,
            } => {
                let key = ChildKey::Executor(app.clone(), executor);
                let dir = self.spec.work_dir.join(&app).join(executor.to_string());
                let mut node = self.node_spec(format!("{app}-{executor}"));
                // The application's settings win over the worker's.
                node.conf.extend(conf);
                let spec = ChildSpec::Executor {
                    node,
                    app: app.clone(),
                    executor,
                    cores,
                    memory_mb,
                    driver,
                    secret,
                };
                let args = vec![
                    "--role".to_string(),
                    "executor".to_string(),
                    "--app".to_string(),
                    app,
                    "--executor".to_string(),
                    executor.to_string(),
                ];
                let launch = Launch {
                    key,
                    args,
                    dir,
                    spec,
                    cores,
                    memory_mb,
                    binary,
                    files,
                };
                self.launch(launch, ctx);
                Ok(DriverLogs::default())
            }
            ToWorker::KillExecutor { app, executor } => {
                self.kill(ChildKey::Executor(app, executor), ctx);
                Ok(DriverLogs::default())
            }
            ToWorker::ScriptPart {
                driver,
                offset,
                part,
            } => {
                let bytes = self
                    .scripts
                    .append(&driver, offset, &part)
                    .map_err(WorkerError::Script)?;
                // A launch that never follows does not hold the script for ever.
                ctx.notify_later(ForgetScript { driver, bytes }, SCRIPT_KEPT);
                Ok(DriverLogs::default())
            }
            ToWorker::LaunchDriver {
                driver,
                mut job,
                cores,
                memory_mb,
                script_bytes,
            } => {
                let key = ChildKey::Driver(driver.clone());
                if self.children.contains_key(&key) || self.binaries.is_waiting(&key) {
                    // Never two copies of one driver.
                    self.scripts.forget(&driver);
                    return Ok(DriverLogs::default());
                }
                if let Some(bytes) = script_bytes {
                    match self.scripts.take(&driver, bytes) {
                        Ok(script) => job.script = script,
                        Err(e) => {
                            let why =
                                format!("could not start: its script did not arrive whole: {e}");
                            Self::not_started(key, why, ctx);
                            return Ok(DriverLogs::default());
                        }
                    }
                }
                let dir = self.driver_dir(&driver);
                let binary = job.binary.clone();
                let files = job.files.clone();
                let spec = ChildSpec::Driver {
                    node: self.node_spec(driver.clone()),
                    driver: driver.clone(),
                    job,
                    manager: self.spec.manager.clone(),
                };
                let args = vec![
                    "--role".to_string(),
                    "driver".to_string(),
                    "--driver-id".to_string(),
                    driver,
                ];
                let launch = Launch {
                    key,
                    args,
                    dir,
                    spec,
                    cores,
                    memory_mb,
                    binary,
                    files,
                };
                self.launch(launch, ctx);
                Ok(DriverLogs::default())
            }
            ToWorker::KillDriver { driver } => {
                self.kill(ChildKey::Driver(driver), ctx);
                Ok(DriverLogs::default())
            }
            ToWorker::ReadLogs { driver, max_bytes } => {
                let dir = self.driver_dir(&driver);
                if !dir.is_dir() {
                    return Err(WorkerError::NoLogs {
                        worker: self.id.clone(),
                        driver,
                    });
                }
                let (stdout, cut_out) = child::tail(&dir.join("stdout"), max_bytes);
                let (stderr, cut_err) = child::tail(&dir.join("stderr"), max_bytes);
                Ok(DriverLogs {
                    stdout,
                    stderr,
                    truncated: cut_out || cut_err,
                })
            }
        }
    }
}

/// How long a driver's script, sent ahead in parts, waits for its launch.
const SCRIPT_KEPT: std::time::Duration = std::time::Duration::from_secs(120);

/// A self-addressed clean-up: a script still holding `bytes`, nothing
/// having arrived since and its launch never having come, is dropped.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct ForgetScript {
    driver: String,
    bytes: u64,
}

impl Handler<ForgetScript> for Worker {
    type Result = ();

    fn handle(&mut self, msg: ForgetScript, _ctx: &mut Context<Self>) {
        if self.scripts.bytes_of(&msg.driver) == Some(msg.bytes) {
            tracing::warn!(driver = %msg.driver, "dropping a script whose launch never came");
            self.scripts.forget(&msg.driver);
        }
    }
}

impl Handler<ChildExited> for Worker {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, _ctx: &mut Context<Self>) {
        if self
            .children
            .get(&msg.key)
            .is_some_and(|c| c.process.pid() == msg.pid)
        {
            self.children.remove(&msg.key);
        }
        let report = match msg.key {
            ChildKey::Executor(app, executor) => {
                tracing::info!(%app, executor, why = %msg.why, "executor exited");
                FromWorker::ExecutorExited {
                    app,
                    executor,
                    why: msg.why,
                }
            }
            ChildKey::Driver(driver) => {
                tracing::info!(%driver, why = %msg.why, "driver exited");
                // Said again at the next registration: the manager may be
                // away now, and must never take an ended driver for lost.
                self.exited_drivers.push((driver.clone(), msg.code));
                FromWorker::DriverExited {
                    driver,
                    code: msg.code,
                    why: msg.why,
                    worker: Some(self.id.clone()),
                }
            }
        };
        // Without a manager now, the next registration says what still runs.
        if let Some(manager) = &self.manager {
            let _ = manager.tell(report);
        }
    }
}

impl Worker {
    fn node_spec(&self, instance: String) -> NodeSpec {
        NodeSpec {
            certs: self.spec.certs.clone(),
            cert_name: self.spec.cert_name.clone(),
            instance,
            host: self.spec.host.clone(),
            conf: self.spec.conf.clone(),
        }
    }

    fn registration_message(&self) -> FromWorker {
        let mut drivers = Vec::new();
        let mut executors = Vec::new();
        for (key, child) in &self.children {
            match key {
                ChildKey::Driver(id) => drivers.push(id.clone()),
                ChildKey::Executor(app, executor) => executors.push(RunningExecutor {
                    app: app.clone(),
                    executor: *executor,
                    cores: child.cores,
                    memory_mb: child.memory_mb,
                }),
            }
        }
        FromWorker::Register {
            worker: self.id.clone(),
            address: ember_transport::ActorAddress {
                node: self.spec.node.id().clone(),
                name: crate::cluster_manager::WORKER.to_string(),
            },
            host: self.spec.host.clone(),
            cores: self.spec.cores,
            memory_mb: self.spec.memory_mb,
            drivers,
            executors,
            exited_drivers: self.exited_drivers.clone(),
        }
    }

    /// Starts `launch` with `program` (`None`: the worker's own binary).
    pub(super) fn start_child(
        &mut self,
        launch: Launch,
        program: Option<&std::path::Path>,
        ctx: &mut Context<Self>,
    ) {
        let Launch {
            key,
            args,
            dir,
            spec,
            cores,
            memory_mb,
            ..
        } = launch;
        let launched =
            self.spec
                .launcher
                .launch(&key, program, &args, &dir, &spec, ctx.address().recipient());
        match launched {
            Ok(process) => {
                tracing::info!(?key, pid = process.pid(), dir = %dir.display(), "child started");
                self.children.insert(
                    key,
                    RunningChild {
                        process,
                        cores,
                        memory_mb,
                    },
                );
            }
            Err(e) => Self::not_started(key, format!("could not start: {e}"), ctx),
        }
    }

    /// Kills the child `key`, running or still waiting to start.
    fn kill(&mut self, key: ChildKey, ctx: &mut Context<Self>) {
        if let Some(child) = self.children.get(&key) {
            child.process.kill();
        }
        self.cancel_waiting(key, ctx);
    }

    /// A child that could not start: its end is reported as any child's.
    pub(super) fn not_started(key: ChildKey, why: String, ctx: &mut Context<Self>) {
        tracing::error!(?key, %why, "child did not start");
        ctx.notify(ChildExited {
            key,
            pid: 0,
            code: None,
            why,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told() -> Told {
        Told {
            exits: vec![("driver-1".into(), Some(1))],
            executors: vec![("app-1".into(), 0), ("app-1".into(), 1)],
        }
    }

    #[test]
    fn ends_during_a_registration_are_told_once_it_is_through() {
        // driver-2 exited 0 and executor 0 ended after the registration
        // was built: the manager heard of both as running.
        let exited = vec![("driver-1".into(), Some(1)), ("driver-2".into(), Some(0))];
        let running = |key: &ChildKey| *key == ChildKey::Executor("app-1".into(), 1);
        let reports = untold_ends(&"w1".into(), &told(), &exited, running);
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert!(matches!(
            &reports[0],
            FromWorker::DriverExited { driver, code: Some(0), why, worker: Some(w) }
                if driver == "driver-2" && why == "exited with code 0" && w == "w1"
        ));
        assert!(matches!(
            &reports[1],
            FromWorker::ExecutorExited { app, executor: 0, .. } if app == "app-1"
        ));
    }

    #[test]
    fn a_registration_that_said_it_all_leaves_nothing_to_tell() {
        let exited = vec![("driver-1".into(), Some(1))];
        let reports = untold_ends(&"w1".into(), &told(), &exited, |_| true);
        assert!(reports.is_empty(), "{reports:?}");
    }
}
