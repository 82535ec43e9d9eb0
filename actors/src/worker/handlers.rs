//! One handler per message the worker receives: orders from the manager,
//! its children's exits, and its own reconnection attempts.

use std::time::Duration;

use actix::prelude::*;

use super::child::{self, ChildSpec, NodeSpec};
use super::{ChildExited, ChildKey, RunningChild, Worker};
use crate::cluster_manager::{DriverLogs, FOR_WORKERS, FromWorker, RunningExecutor, ToWorker};
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

/// The outcome of a registration attempt.
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
);

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
                        Ok(Err(why)) => Err((why, false)),
                        Err(ember_transport::SendError::Refused(_, refusal)) => Err((
                            format!("the cluster manager refused this worker: {refusal}"),
                            true,
                        )),
                        Err(e) => Err((e.to_string(), false)),
                    }
                }
                .await;
                me.do_send(Registered(outcome));
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
                self.exited_drivers.clear();
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
    type Result = Result<DriverLogs, String>;

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
                    driver,
                    secret,
                };
                let args = [
                    "--role".to_string(),
                    "executor".to_string(),
                    "--app".to_string(),
                    app,
                    "--executor".to_string(),
                    executor.to_string(),
                ];
                self.start_child(key, &args, &dir, &spec, cores, memory_mb, ctx);
                Ok(DriverLogs::default())
            }
            ToWorker::KillExecutor { app, executor } => {
                if let Some(child) = self.children.get(&ChildKey::Executor(app, executor)) {
                    child.process.kill();
                }
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
                    .map_err(|e| e.to_string())?;
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
                if self.children.contains_key(&key) {
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
                            tracing::error!(%driver, %why, "driver did not start");
                            ctx.notify(ChildExited {
                                key,
                                pid: 0,
                                code: None,
                                why,
                            });
                            return Ok(DriverLogs::default());
                        }
                    }
                }
                let dir = self.driver_dir(&driver);
                let spec = ChildSpec::Driver {
                    node: self.node_spec(driver.clone()),
                    driver: driver.clone(),
                    job,
                    manager: self.spec.manager.clone(),
                };
                let args = [
                    "--role".to_string(),
                    "driver".to_string(),
                    "--driver-id".to_string(),
                    driver,
                ];
                self.start_child(key, &args, &dir, &spec, cores, memory_mb, ctx);
                Ok(DriverLogs::default())
            }
            ToWorker::KillDriver { driver } => {
                if let Some(child) = self.children.get(&ChildKey::Driver(driver)) {
                    child.process.kill();
                }
                Ok(DriverLogs::default())
            }
            ToWorker::ReadLogs { driver, max_bytes } => {
                let dir = self.driver_dir(&driver);
                if !dir.is_dir() {
                    return Err(format!("worker {} has no logs of {driver}", self.id));
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

    #[allow(clippy::too_many_arguments)]
    fn start_child(
        &mut self,
        key: ChildKey,
        args: &[String],
        dir: &std::path::Path,
        spec: &ChildSpec,
        cores: u32,
        memory_mb: u64,
        ctx: &mut Context<Self>,
    ) {
        let launched = self
            .spec
            .launcher
            .launch(&key, args, dir, spec, ctx.address().recipient());
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
            Err(e) => {
                let why = format!("could not start: {e}");
                tracing::error!(?key, %why, "child did not start");
                ctx.notify(ChildExited {
                    key,
                    pid: 0,
                    code: None,
                    why,
                });
            }
        }
    }
}
