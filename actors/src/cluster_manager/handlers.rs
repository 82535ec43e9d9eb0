//! One handler per audience of the cluster manager; each feeds the state
//! machine and carries out what it decides, journaling what changed.

use actix::prelude::*;
use ember_transport::ExitReason;

use super::errors::{ManagerError, WorkerError};
use super::journal::JournalError;
use super::journal::{AppRecord, DriverRecord};
use super::messages::*;
use super::state::{Action, AppId, AppState, DriverRequest, DriverState, Event};
use super::upload::{MAX_SCRIPT_BYTES, SCRIPT_PART_BYTES, UploadError, split_script};
use super::{
    AppLink, ClusterManager, WorkerLink, app_state_words, driver_state_words, executor_history,
    new_id, recovered_executor, timestamp,
};
use crate::supervision::PeerDown;

impl Handler<FromWorker> for ClusterManager {
    type Result = Result<(), ManagerError>;

    fn handle(&mut self, msg: FromWorker, ctx: &mut Context<Self>) -> Self::Result {
        match msg {
            FromWorker::Register {
                worker,
                address,
                host,
                cores,
                memory_mb,
                drivers,
                executors,
                exited_drivers,
            } => {
                let mailbox = self
                    .node
                    .mailbox::<ToWorker>(&address)
                    .map_err(unreachable)?;
                self.node
                    .monitor(&address, ctx.address().recipient::<PeerDown>());
                tracing::info!(%worker, %host, cores, memory_mb, "worker registered");
                self.workers.insert(
                    worker.clone(),
                    WorkerLink {
                        address,
                        host,
                        mailbox,
                    },
                );
                self.step(
                    Event::WorkerRegistered {
                        worker,
                        cores,
                        memory_mb,
                        drivers,
                        executors,
                        exited_drivers,
                    },
                    ctx,
                );
            }
            FromWorker::ExecutorExited { app, executor, why } => {
                tracing::info!(%app, executor, %why, "executor exited");
                self.step(Event::ExecutorExited { app, executor, why }, ctx);
            }
            FromWorker::DriverExited {
                driver,
                code,
                why,
                worker,
            } => {
                tracing::info!(%driver, ?code, %why, ?worker, "driver exited");
                let current = match self.state.driver_state(&driver) {
                    Some(
                        DriverState::Running { worker: w }
                        | DriverState::Unreachable { worker: w, .. },
                    ) => worker.as_ref().is_none_or(|from| from == w),
                    _ => false,
                };
                if let Some(record) = self.drivers.get_mut(&driver)
                    && current
                {
                    record.reason = Some(why.clone());
                }
                self.step(
                    Event::DriverExited {
                        driver,
                        code,
                        why,
                        worker,
                    },
                    ctx,
                );
            }
        }
        Ok(())
    }
}

impl Handler<FromApp> for ClusterManager {
    type Result = Result<AppId, ManagerError>;

    fn handle(&mut self, msg: FromApp, ctx: &mut Context<Self>) -> Self::Result {
        match msg {
            FromApp::Register {
                request,
                driver,
                client,
                secret,
                submission,
                existing,
            } => {
                self.check_binary(request.binary.as_ref())
                    .and_then(|()| self.check_files(&request.files))
                    .map_err(ManagerError::Binary)?;
                let client_mailbox = self.node.mailbox::<ToApp>(&client).map_err(unreachable)?;
                // A driver whose first registration was journaled but never
                // answered (this manager went down meanwhile) asks again: it
                // is the application it was, not a second one.
                let existing = existing.or_else(|| {
                    self.apps
                        .iter()
                        .find(|(_, a)| a.record.secret == secret && a.record.ended.is_none())
                        .map(|(id, _)| id.clone())
                });
                // A driver that was away comes back as the application it
                // was, or not at all: once the application has ended (its
                // executors are gone), it is never started again as another.
                if let Some(id) = &existing {
                    match self.apps.get(id) {
                        Some(a) if a.record.secret != secret => {
                            return Err(ManagerError::NotYourApp { app: id.clone() });
                        }
                        Some(a) if a.record.ended.is_some() => {
                            return Err(ManagerError::AppEnded {
                                app: id.clone(),
                                state: a.record.state.clone(),
                                reason: a
                                    .record
                                    .reason
                                    .clone()
                                    .unwrap_or_else(|| "no reason given".into()),
                            });
                        }
                        Some(_) => {}
                        None => return Err(ManagerError::UnknownApp { app: id.clone() }),
                    }
                }
                let id = match existing {
                    Some(id) => {
                        tracing::info!(app = %id, "application's driver is back");
                        self.awaiting_drivers.remove(&id);
                        self.away.remove(&id);
                        id
                    }
                    None => {
                        let number = self.journal.next_number("apps").map_err(journal)?;
                        let id = new_id("app", number, self.journal.cluster_id());
                        let record = AppRecord {
                            name: request.name.clone(),
                            request: (*request).clone(),
                            state: "WAITING".into(),
                            reason: None,
                            submission: submission.clone(),
                            started: timestamp(),
                            ended: None,
                            driver,
                            secret,
                            executors: Vec::new(),
                        };
                        self.journal.put_app(&id, &record).map_err(journal)?;
                        self.apps.insert(
                            id.clone(),
                            AppLink {
                                record,
                                client: None,
                                usage: Default::default(),
                                streams: Vec::new(),
                            },
                        );
                        if let Some(record) = submission.and_then(|s| self.drivers.get_mut(&s)) {
                            record.app = Some(id.clone());
                        }
                        tracing::info!(app = %id, name = %request.name, "application registered");
                        id
                    }
                };
                self.node
                    .monitor(&client, ctx.address().recipient::<PeerDown>());
                if let Some(app) = self.apps.get_mut(&id) {
                    app.client = Some((client, client_mailbox));
                }
                let driver = self.apps.get(&id).and_then(|a| a.record.submission.clone());
                self.step(
                    Event::AppRegistered {
                        app: id.clone(),
                        request: *request,
                        driver,
                    },
                    ctx,
                );
                Ok(id)
            }
            FromApp::Usage { app, executors } => {
                if let Some(link) = self.apps.get_mut(&app) {
                    link.usage.extend(executors);
                }
                Ok(app)
            }
            FromApp::Streams { app, streams } => {
                if let Some(link) = self.apps.get_mut(&app) {
                    link.streams = streams;
                }
                Ok(app)
            }
            FromApp::Finished { app, failure } => {
                self.step(
                    Event::AppEnded {
                        app: app.clone(),
                        why: failure,
                    },
                    ctx,
                );
                Ok(app)
            }
        }
    }
}

impl Handler<FromClient> for ClusterManager {
    type Result = ResponseFuture<Result<ClientReply, ManagerError>>;

    fn handle(&mut self, msg: FromClient, ctx: &mut Context<Self>) -> Self::Result {
        let reply = match msg {
            FromClient::Submit {
                job,
                request,
                upload,
                token,
            } => self.submit(job, request, upload, token, ctx),
            FromClient::UploadScript {
                upload,
                offset,
                part,
            } => self.upload_part(upload, offset, &part, ctx),
            FromClient::Kill { id } => self.kill(&id, ctx),
            FromClient::Status => Ok(ClientReply::Status(self.status())),
            FromClient::Logs { driver, max_bytes } => return self.logs(driver, max_bytes),
        };
        Box::pin(async move { reply })
    }
}

impl Handler<PeerDown> for ClusterManager {
    type Result = ();

    fn handle(&mut self, msg: PeerDown, ctx: &mut Context<Self>) {
        self.check_own_clock(ctx);
        let worker = self
            .workers
            .iter()
            .find(|(_, w)| w.address == msg.peer)
            .map(|(id, _)| id.clone());
        if let Some(worker) = worker {
            if msg.reason == ExitReason::Normal {
                tracing::info!(%worker, "worker stopped");
            } else {
                tracing::warn!(%worker, reason = %msg.reason, "worker lost");
            }
            self.workers.remove(&worker);
            self.step(
                Event::WorkerLost {
                    worker,
                    why: msg.reason.to_string(),
                },
                ctx,
            );
            return;
        }
        let app = self
            .apps
            .iter()
            .find(|(_, a)| a.client.as_ref().is_some_and(|(addr, _)| *addr == msg.peer))
            .map(|(id, _)| id.clone());
        if let Some(app) = app {
            if let Some(link) = self.apps.get_mut(&app) {
                link.client = None;
            }
            // Lost while this manager stood still: the driver most likely
            // runs on and registers again in a moment.
            if msg.reason != ExitReason::Normal && self.revalidating() {
                tracing::info!(%app, reason = %msg.reason, "application's driver dropped while the manager stood still; waiting for it to register again");
                self.away.insert(app);
                return;
            }
            let why = match &msg.reason {
                ExitReason::Normal => None,
                other => Some(format!("its driver is gone: {other}")),
            };
            tracing::info!(%app, reason = %msg.reason, "application's driver ended");
            self.step(Event::AppEnded { app, why }, ctx);
        }
    }
}

impl Handler<super::EndAway> for ClusterManager {
    type Result = ();

    fn handle(&mut self, _msg: super::EndAway, ctx: &mut Context<Self>) {
        if self.revalidating() {
            return;
        }
        for app in std::mem::take(&mut self.away) {
            let back = self.apps.get(&app).is_some_and(|a| a.client.is_some());
            if !back {
                tracing::warn!(%app, "its driver did not register again after the manager stood still");
                self.step(
                    Event::AppEnded {
                        app,
                        why: Some(
                            "its driver did not come back after the cluster manager stood still"
                                .into(),
                        ),
                    },
                    ctx,
                );
            }
        }
    }
}

/// How long an upload may stand still before it is dropped.
const UPLOAD_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a worker gets to take one part of a driver's script.
const SCRIPT_PART_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A self-addressed check on an upload: dropped if it still holds `bytes`,
/// its client having sent nothing since.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct ForgetUpload {
    name: String,
    bytes: u64,
}

impl Handler<ForgetUpload> for ClusterManager {
    type Result = ();

    fn handle(&mut self, msg: ForgetUpload, _ctx: &mut Context<Self>) {
        if self.uploads.bytes_of(&msg.name) == Some(msg.bytes) {
            tracing::info!(upload = %msg.name, bytes = msg.bytes, "dropping an upload its client stopped sending");
            self.uploads.forget(&msg.name);
        }
    }
}

/// A self-addressed wake-up (restart backoff, end of recovery).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Wake;

impl Handler<Wake> for ClusterManager {
    type Result = ();

    fn handle(&mut self, _msg: Wake, ctx: &mut Context<Self>) {
        self.step(Event::Tick, ctx);
        let now = self.now_ms();
        if !self.state.is_recovering(now) && !self.awaiting_drivers.is_empty() {
            for app in std::mem::take(&mut self.awaiting_drivers) {
                tracing::warn!(%app, "its driver did not return after the restart");
                self.step(
                    Event::AppEnded {
                        app,
                        why: Some(
                            "its driver did not return after the cluster manager restarted".into(),
                        ),
                    },
                    ctx,
                );
            }
        }
    }
}

impl ClusterManager {
    /// Loads the journal: unfinished submissions wait to be adopted by
    /// their returning workers, applications for their returning drivers.
    pub(super) fn recover(&mut self, ctx: &mut Context<Self>) -> Result<(), JournalError> {
        let drivers = self.journal.drivers()?;
        let apps = self.journal.apps()?;
        let pending = drivers.iter().any(|(_, d)| !d.is_final())
            || apps.iter().any(|(_, a)| a.ended.is_none());
        if pending {
            tracing::info!(grace = ?self.recovery_grace, "recovering: waiting for workers and drivers to return");
            self.step(
                Event::Recovering {
                    grace: self.recovery_grace,
                },
                ctx,
            );
        }
        for (id, record) in drivers {
            let live = !record.is_final();
            let request = record.request.clone();
            let restarts = record.restarts;
            // Journaled running (or unknown, its worker lost): it may still
            // run there.
            let running_on = match record.state.as_str() {
                "RUNNING" | "UNKNOWN" => record.worker.clone(),
                _ => None,
            };
            self.drivers.insert(id.clone(), record);
            if live {
                self.step(
                    Event::DriverRecovered {
                        driver: id,
                        request,
                        restarts,
                        running_on,
                    },
                    ctx,
                );
            }
        }
        for (id, record) in apps {
            // An application is journaled as ended only once FINISHED or FAILED.
            let live = record.ended.is_none();
            let request = record.request.clone();
            let driver = record.submission.clone();
            let past = record.executors.iter().map(recovered_executor).collect();
            self.apps.insert(
                id.clone(),
                AppLink {
                    record,
                    client: None,
                    usage: Default::default(),
                    streams: Vec::new(),
                },
            );
            if live {
                self.awaiting_drivers.insert(id.clone());
                self.step(
                    Event::AppRecovered {
                        app: id,
                        request,
                        driver,
                        past,
                    },
                    ctx,
                );
            }
        }
        Ok(())
    }

    /// Takes one part of a script `ember submit` sends ahead of its
    /// submission.
    fn upload_part(
        &mut self,
        upload: Option<String>,
        offset: u64,
        part: &str,
        ctx: &mut Context<Self>,
    ) -> Result<ClientReply, ManagerError> {
        let name = match (upload, offset) {
            (Some(name), _) => name,
            (None, 0) => {
                self.next_upload += 1;
                format!("upload-{}", self.next_upload)
            }
            (None, _) => return Err(ManagerError::UploadUnnamed),
        };
        let bytes = self
            .uploads
            .append(&name, offset, part)
            .map_err(ManagerError::Upload)?;
        // An upload its client gave up on is not held for ever.
        ctx.notify_later(
            ForgetUpload {
                name: name.clone(),
                bytes,
            },
            UPLOAD_IDLE,
        );
        Ok(ClientReply::Uploaded {
            upload: name,
            bytes,
        })
    }

    fn submit(
        &mut self,
        mut job: DriverJob,
        request: DriverRequest,
        upload: Option<ScriptUpload>,
        token: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Result<ClientReply, ManagerError> {
        // Sent again, its first answer lost: the submission it made.
        if let Some(token) = &token
            && let Some((id, _)) = self
                .drivers
                .iter()
                .find(|(_, d)| d.token.as_ref() == Some(token))
        {
            tracing::info!(driver = %id, "a submission sent again; answering with the one it made");
            return Ok(ClientReply::Submitted(id.clone()));
        }
        if let Some(upload) = upload {
            if !job.script.is_empty() {
                return Err(ManagerError::ScriptTwice);
            }
            job.script = self
                .uploads
                .take(&upload.name, upload.bytes)
                .map_err(ManagerError::Script)?;
        }
        self.check_binary(job.binary.as_ref())
            .and_then(|()| self.check_files(&job.files))
            .map_err(ManagerError::Binary)?;
        if job.script.len() > MAX_SCRIPT_BYTES {
            return Err(ManagerError::Script(UploadError::TooLarge {
                bytes: job.script.len() as u64,
                max: MAX_SCRIPT_BYTES,
            }));
        }
        let number = self.journal.next_number("drivers").map_err(journal)?;
        let id = new_id("driver", number, self.journal.cluster_id());
        let record = DriverRecord {
            job,
            request: request.clone(),
            state: "SUBMITTED".into(),
            reason: None,
            worker: None,
            restarts: 0,
            submitted: timestamp(),
            app: None,
            token,
        };
        // Journaled before it is acknowledged: an accepted submission is
        // never lost.
        self.journal.submit_driver(&id, &record).map_err(journal)?;
        tracing::info!(driver = %id, name = %record.job.name, "driver submitted");
        self.drivers.insert(id.clone(), record);
        self.step(
            Event::DriverSubmitted {
                driver: id.clone(),
                request,
            },
            ctx,
        );
        Ok(ClientReply::Submitted(id))
    }

    fn kill(&mut self, id: &str, ctx: &mut Context<Self>) -> Result<ClientReply, ManagerError> {
        if self.drivers.contains_key(id) {
            let app = self.drivers.get(id).and_then(|d| d.app.clone());
            self.step(Event::KillDriver { driver: id.into() }, ctx);
            if let Some(app) = app {
                self.kill_app(&app, ctx);
            }
            return Ok(ClientReply::Killed(format!("killed driver {id}")));
        }
        if self.apps.contains_key(id) {
            self.kill_app(id, ctx);
            return Ok(ClientReply::Killed(format!("killed application {id}")));
        }
        Err(ManagerError::UnknownId { id: id.into() })
    }

    fn kill_app(&mut self, app: &str, ctx: &mut Context<Self>) {
        if let Some((_, client)) = self.apps.get(app).and_then(|a| a.client.as_ref()) {
            let _ = client.tell(ToApp::Killed);
        }
        self.step(
            Event::AppEnded {
                app: app.into(),
                why: Some("killed by `ember kill`".into()),
            },
            ctx,
        );
    }

    fn logs(
        &mut self,
        driver: String,
        max_bytes: u64,
    ) -> ResponseFuture<Result<ClientReply, ManagerError>> {
        let found = match self.drivers.get(&driver) {
            None => Err(ManagerError::UnknownDriver {
                driver: driver.clone(),
            }),
            Some(record) => match &record.worker {
                None => Err(ManagerError::NotStarted {
                    driver: driver.clone(),
                    state: record.state.clone(),
                }),
                Some(worker) => self
                    .workers
                    .get(worker)
                    .map(|w| (worker.clone(), w.mailbox.clone()))
                    .ok_or_else(|| ManagerError::WorkerAway {
                        worker: worker.clone(),
                        driver: driver.clone(),
                    }),
            },
        };
        Box::pin(async move {
            let (worker, mailbox) = found?;
            let request = ToWorker::ReadLogs {
                driver: driver.clone(),
                max_bytes,
            };
            let logs = mailbox
                .ask(request, std::time::Duration::from_secs(10))
                .await
                .map_err(|e| ManagerError::WorkerSilent {
                    worker,
                    driver,
                    why: e.to_string(),
                })??;
            Ok(ClientReply::Logs(logs))
        })
    }

    fn status(&self) -> ClusterStatus {
        let workers = self
            .state
            .workers()
            .into_iter()
            .map(|w| WorkerStatus {
                host: self
                    .workers
                    .get(&w.id)
                    .map(|l| l.host.clone())
                    .unwrap_or_default(),
                state: if w.alive { "ALIVE" } else { "LOST" }.into(),
                cores: w.cores,
                cores_used: w.cores_used,
                memory_mb: w.memory_mb,
                memory_used_mb: w.memory_used,
                id: w.id,
            })
            .collect();
        let live: std::collections::BTreeMap<_, _> = self
            .state
            .apps()
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
        let apps = self
            .apps
            .iter()
            .map(|(id, link)| {
                let record = &link.record;
                let view = live.get(id);
                let (state, reason) = match view {
                    Some(v) => {
                        let (s, r) = app_state_words(&v.state);
                        (s.to_string(), r)
                    }
                    None => (record.state.clone(), record.reason.clone()),
                };
                let (executors, removed_executors) = view
                    .map(executor_history)
                    .unwrap_or_else(|| record.executors.clone())
                    .into_iter()
                    .map(|mut e| {
                        e.usage = link.usage.get(&e.executor).copied();
                        e
                    })
                    .partition(|e| e.state == ExecutorState::Running);
                AppStatus {
                    id: id.clone(),
                    name: record.name.clone(),
                    state,
                    reason,
                    submission: record.submission.clone(),
                    executor_cores: record.request.executor_cores,
                    executor_memory_mb: record.request.executor_memory_mb,
                    max_cores: record.request.max_cores,
                    executors,
                    removed_executors,
                    started: record.started.clone(),
                    ended: record.ended.clone(),
                    streams: link.streams.clone(),
                }
            })
            .collect();
        let drivers = self
            .drivers
            .iter()
            .map(|(id, record)| DriverStatus {
                id: id.clone(),
                name: record.job.name.clone(),
                state: record.state.clone(),
                reason: record.reason.clone(),
                worker: record.worker.clone(),
                supervise: record.request.supervise,
                restarts: record.restarts,
                submitted: record.submitted.clone(),
                app: record.app.clone(),
            })
            .collect();
        ClusterStatus {
            manager: self.node.id().to_string(),
            recovering: self.state.is_recovering(self.now_ms()),
            workers,
            apps,
            drivers,
        }
    }

    /// Feeds one event to the state machine, carries out its actions and
    /// journals every state that changed.
    pub(super) fn step(&mut self, event: Event, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        for action in self.state.on_event(now, event) {
            self.perform(action, ctx);
        }
        self.journal_changes();
    }

    fn perform(&mut self, action: Action, ctx: &mut Context<Self>) {
        match action {
            Action::LaunchExecutor {
                worker,
                app,
                executor,
                cores,
                memory_mb,
            } => {
                let Some(link) = self.apps.get(&app) else {
                    return;
                };
                let message = ToWorker::LaunchExecutor {
                    app: app.clone(),
                    executor,
                    cores,
                    memory_mb,
                    driver: link.record.driver.clone(),
                    secret: link.record.secret.clone(),
                    conf: link.record.request.conf.clone(),
                    binary: link.record.request.binary.clone(),
                    files: link.record.request.files.clone(),
                };
                tracing::info!(%app, executor, %worker, cores, "launching executor");
                self.tell_worker(&worker, message);
            }
            Action::KillExecutor {
                worker,
                app,
                executor,
            } => self.tell_worker(&worker, ToWorker::KillExecutor { app, executor }),
            Action::AppFailed { app, why } => {
                if let Some((_, client)) = self.apps.get(&app).and_then(|a| a.client.as_ref()) {
                    let _ = client.tell(ToApp::Failed { why });
                }
            }
            Action::ExecutorLost { app, executor, why } => {
                if let Some((_, client)) = self.apps.get(&app).and_then(|a| a.client.as_ref()) {
                    let _ = client.tell(ToApp::ExecutorLost { executor, why });
                }
            }
            Action::LaunchDriver {
                worker,
                driver,
                cores,
                memory_mb,
            } => {
                let Some(record) = self.drivers.get(&driver) else {
                    return;
                };
                tracing::info!(%driver, %worker, "launching driver");
                if record.job.script.len() > SCRIPT_PART_BYTES {
                    self.launch_in_parts(worker, driver, cores, memory_mb, ctx);
                    return;
                }
                let message = ToWorker::LaunchDriver {
                    driver: driver.clone(),
                    job: record.job.clone(),
                    cores,
                    memory_mb,
                    script_bytes: None,
                };
                self.tell_worker(&worker, message);
            }
            Action::KillDriver { worker, driver } => {
                self.tell_worker(&worker, ToWorker::KillDriver { driver })
            }
            Action::WakeAfter(delay) => {
                ctx.notify_later(Wake, delay);
            }
        }
    }

    /// Launches a driver whose script is too large for one message: the
    /// script goes to the worker a part at a time, each acknowledged before
    /// the next (the queue towards a worker stays small), then the launch.
    /// A launch superseded meanwhile (the driver was killed, or relaunched)
    /// is dropped; a worker that cannot take the script fails the launch
    /// as a driver that could not start.
    fn launch_in_parts(
        &mut self,
        worker: String,
        driver: String,
        cores: u32,
        memory_mb: u64,
        ctx: &mut Context<Self>,
    ) {
        let (Some(record), Some(link)) = (self.drivers.get(&driver), self.workers.get(&worker))
        else {
            tracing::warn!(%worker, %driver, "no link to worker");
            return;
        };
        self.next_launch += 1;
        let launch = self.next_launch;
        self.launches.insert(driver.clone(), launch);
        let mailbox = link.mailbox.clone();
        let mut job = record.job.clone();
        let script = std::mem::take(&mut job.script);
        let script_bytes = script.len() as u64;
        let to = driver.clone();
        let send = async move {
            let mut offset = 0u64;
            for part in split_script(&script, SCRIPT_PART_BYTES) {
                let message = ToWorker::ScriptPart {
                    driver: to.clone(),
                    offset,
                    part: part.to_string(),
                };
                mailbox
                    .ask(message, SCRIPT_PART_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e: WorkerError| e.to_string())?;
                offset += part.len() as u64;
            }
            Ok::<_, String>(mailbox)
        };
        ctx.spawn(send.into_actor(self).map(move |sent, act, ctx| {
            if act.launches.get(&driver) != Some(&launch) {
                return;
            }
            act.launches.remove(&driver);
            let still_ours = matches!(
                act.state.driver_state(&driver),
                Some(DriverState::Running { worker: w }) if *w == worker
            );
            match sent {
                Ok(mailbox) if still_ours => {
                    let message = ToWorker::LaunchDriver {
                        driver: driver.clone(),
                        job,
                        cores,
                        memory_mb,
                        script_bytes: Some(script_bytes),
                    };
                    if let Err(e) = mailbox.tell(message) {
                        // Its loss arrives through the monitor.
                        tracing::warn!(%worker, error = %e, "cannot reach worker");
                    }
                }
                Ok(_) => {}
                Err(why) if still_ours => {
                    let why = format!("its script could not be handed to worker {worker}: {why}");
                    tracing::warn!(%driver, %why, "driver not launched");
                    if let Some(record) = act.drivers.get_mut(&driver) {
                        record.reason = Some(why.clone());
                    }
                    act.step(
                        Event::DriverExited {
                            driver,
                            code: None,
                            why,
                            worker: Some(worker),
                        },
                        ctx,
                    );
                }
                Err(_) => {}
            }
        }));
    }

    fn tell_worker(&mut self, worker: &str, message: ToWorker) {
        match self.workers.get(worker) {
            Some(link) => {
                if let Err(e) = link.mailbox.tell(message) {
                    // Its loss arrives through the monitor.
                    tracing::warn!(%worker, error = %e, "cannot reach worker");
                }
            }
            None => tracing::warn!(%worker, "no link to worker"),
        }
    }

    fn journal_changes(&mut self) {
        for view in self.state.drivers() {
            let Some(record) = self.drivers.get_mut(&view.id) else {
                continue;
            };
            let (state, reason) = driver_state_words(&view.state);
            let worker = match &view.state {
                DriverState::Running { worker } => Some(worker.clone()),
                _ => record.worker.clone(),
            };
            // A reason from the worker (how it exited) outlives the state
            // machine's silence about it.
            let reason = reason.or_else(|| {
                if state == "RUNNING" {
                    None
                } else {
                    record.reason.clone()
                }
            });
            if record.state != state
                || record.reason != reason
                || record.worker != worker
                || record.restarts != view.restarts
            {
                record.state = state.to_string();
                record.reason = reason;
                record.worker = worker;
                record.restarts = view.restarts;
                if let Err(e) = self.journal.put_driver(&view.id, record) {
                    tracing::error!(driver = %view.id, error = %e, "cannot journal a driver's state");
                }
                // A submission that is over never runs again: its script,
                // up to 64 MiB, is not kept.
                if view.state.is_final() && !record.job.script.is_empty() {
                    record.job.script = String::new();
                    if let Err(e) = self.journal.forget_script(&view.id) {
                        tracing::warn!(driver = %view.id, error = %e, "cannot drop a finished submission's script from the journal");
                    }
                }
            }
        }
        for view in self.state.apps() {
            let Some(link) = self.apps.get_mut(&view.id) else {
                continue;
            };
            let (state, reason) = app_state_words(&view.state);
            let executors = executor_history(&view);
            let record = &mut link.record;
            if record.state != state || record.reason != reason || record.executors != executors {
                record.state = state.to_string();
                record.reason = reason;
                record.executors = executors;
                if matches!(view.state, AppState::Finished | AppState::Failed(_))
                    && record.ended.is_none()
                {
                    record.ended = Some(timestamp());
                }
                if let Err(e) = self.journal.put_app(&view.id, record) {
                    tracing::error!(app = %view.id, error = %e, "cannot journal an application's state");
                }
            }
        }
    }
}

/// Stops the manager (its journal closes with it); used by simulations to
/// restart one.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopManager;

impl Handler<StopManager> for ClusterManager {
    type Result = ();

    fn handle(&mut self, _msg: StopManager, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A request the manager cannot do because its journal failed.
fn journal(e: JournalError) -> ManagerError {
    ManagerError::Journal(e.to_string())
}

/// A registration the manager cannot answer: the registering actor's node
/// is no longer connected.
fn unreachable(e: ember_transport::SendError) -> ManagerError {
    ManagerError::Unreachable(e.to_string())
}
