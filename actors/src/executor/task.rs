//! Running one task: a fresh copy of the stage's plan executed for one
//! partition, off the executor's mailbox, with panics and kills turned into
//! task failures instead of lost threads.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::execution::TaskContext;
use datafusion::physical_plan::common::collect;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use ember_engine::StageKind;
use ember_engine::memory::ExecutorMemory;
use ember_engine::shuffle::{
    DIRECT_RESULT_BYTES, MapStatus, ResultOutput, ShuffleEnv, finish_result,
};
use futures::FutureExt;
use futures::future::{AbortHandle, Abortable, LocalBoxFuture};

use ember_engine::EngineError;

use crate::faults::Faults;
use crate::protocol::{
    ExecutorId, FetchFailure, TaskDescription, TaskError, TaskFailureKind, TaskOutput,
};

/// Where task computation runs.
#[derive(Debug, Clone)]
pub enum TaskPool {
    /// On the executor's own thread (`local`: one thread does everything).
    ActorThread,
    /// On a runtime of task threads, so the actor's mailbox stays responsive.
    Runtime(tokio::runtime::Handle),
}

/// What a task runs with besides its context.
pub struct TaskEnv {
    pub faults: Arc<Faults>,
    /// To say what to raise when memory runs out.
    pub memory: Arc<ExecutorMemory>,
    /// The executor's count of spilled bytes.
    pub spilled: Arc<AtomicU64>,
}

/// Starts `task`; the returned future resolves to its outcome, and the
/// handle stops it at its next batch.
pub fn start(
    pool: &TaskPool,
    task: TaskDescription,
    context: Arc<TaskContext>,
    env: TaskEnv,
) -> (
    LocalBoxFuture<'static, Result<TaskOutput, TaskError>>,
    AbortHandle,
) {
    let (abort, registration) = AbortHandle::new_pair();
    let work = Abortable::new(
        AssertUnwindSafe(execute(task, context, env)).catch_unwind(),
        registration,
    );
    let outcome = match pool {
        TaskPool::ActorThread => work.map(settle).boxed_local(),
        TaskPool::Runtime(handle) => {
            let joined = handle.spawn(work);
            async move {
                match joined.await {
                    Ok(result) => settle(result),
                    Err(e) if e.is_panic() => Err(TaskError::new(
                        TaskFailureKind::Panic,
                        panic_message(e.into_panic().as_ref()),
                    )),
                    Err(_) => Err(TaskError::new(
                        TaskFailureKind::Killed,
                        "the task runtime shut down",
                    )),
                }
            }
            .boxed_local()
        }
    };
    (outcome, abort)
}

type Caught = Result<Result<TaskOutput, TaskError>, Box<dyn Any + Send>>;

fn settle(result: Result<Caught, futures::future::Aborted>) -> Result<TaskOutput, TaskError> {
    match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => Err(TaskError::new(
            TaskFailureKind::Panic,
            panic_message(panic.as_ref()),
        )),
        Err(_) => Err(TaskError::new(
            TaskFailureKind::Killed,
            "killed by the driver",
        )),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with no message".to_string()
    }
}

async fn execute(
    task: TaskDescription,
    context: Arc<TaskContext>,
    env: TaskEnv,
) -> Result<TaskOutput, TaskError> {
    let TaskEnv {
        faults,
        memory,
        spilled,
    } = env;
    let failed = |e: datafusion::error::DataFusionError| match EngineError::find_fetch_failure(&e) {
        Some((stage, maps, location)) => TaskError::fetch_failed(
            FetchFailure {
                stage,
                maps,
                executor: ExecutorId(location),
            },
            e.to_string(),
        ),
        None => TaskError::new(TaskFailureKind::Error, memory.explain(e).to_string()),
    };
    let id = task.id;
    let began = std::time::Instant::now();
    if let Some(delay) = faults.delay(&id) {
        tracing::warn!(task = %id, ?delay, "delaying this task (ember.faults.delayTask)");
        tokio::time::sleep(delay).await;
    }
    // Each attempt of a file sink writes into a directory of its own.
    let plan =
        ember_engine::isolate_attempt(task.plan, task.id.into()).map_err(|e| failed(e.into()))?;
    // Operators keep per-execution state (a join's build side, say): every
    // attempt gets its own copy, as it would in another process.
    let plan = reset_plan_states(plan).map_err(failed)?;
    // A bad row is found here, on an executor: its error says which file.
    let plan = ember_engine::name_files_in_errors(plan).map_err(failed)?;
    let stream = plan
        .execute(task.id.partition, Arc::clone(&context))
        .map_err(failed)?;
    let shuffle = context.session_config().get_extension::<ShuffleEnv>();
    let output = match (task.kind, shuffle) {
        (StageKind::Result, Some(env)) => finish_result(
            stream,
            &env,
            &context.runtime_env(),
            (task.id.stage, task.id.partition),
            DIRECT_RESULT_BYTES,
        )
        .await
        .map(TaskOutput::Result),
        (StageKind::Result, None) => collect(stream)
            .await
            .map(|batches| TaskOutput::Result(ResultOutput::Direct(batches))),
        (StageKind::ShuffleMap, _) => collect(stream)
            .await
            .map(|batches| TaskOutput::Map(MapStatus::from_batches(&batches))),
    };
    spilled.fetch_add(
        ember_engine::memory::spilled_bytes(&plan),
        Ordering::Relaxed,
    );
    tracing::debug!(task = %id, took_ms = began.elapsed().as_secs_f64() * 1e3, ok = output.is_ok(), "task ran");
    let output = output.map_err(failed)?;
    if faults.fails(&id) {
        return Err(TaskError::new(
            TaskFailureKind::Error,
            format!("injected failure of {id} (ember.faults.failTask)"),
        ));
    }
    Ok(output)
}
