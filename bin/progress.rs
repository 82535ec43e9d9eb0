//! Spark-style console progress: one line per running stage,
//! `[Stage 1:=====>        (3 + 2) / 8]`, drawn on stderr and cleared when
//! the stage completes.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use ember_actors::protocol::JobId;
use ember_actors::{JobListener, ProgressEvent};
use ember_engine::StageId;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

struct StageBar {
    bar: ProgressBar,
    total: usize,
    done: usize,
    running: usize,
}

impl StageBar {
    fn redraw(&self) {
        self.bar.set_position(self.done as u64);
        self.bar.set_message(format!(
            "({} + {}) / {}",
            self.done, self.running, self.total
        ));
    }
}

/// How often a running stage's bar is drawn again, news or not.
const STEADY_TICK: std::time::Duration = std::time::Duration::from_millis(200);

pub struct ConsoleProgress {
    multi: MultiProgress,
    style: ProgressStyle,
    stages: Mutex<BTreeMap<(JobId, StageId), StageBar>>,
}

impl ConsoleProgress {
    pub fn new() -> Self {
        let style = ProgressStyle::with_template("[Stage {prefix}:{bar:40} {msg}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            style,
            stages: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Default for ConsoleProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl JobListener for ConsoleProgress {
    fn on_event(&self, event: &ProgressEvent) {
        let mut stages = self.stages.lock().unwrap_or_else(PoisonError::into_inner);
        match *event {
            ProgressEvent::StageSubmitted { job, stage, tasks } => {
                let bar = self.multi.add(ProgressBar::new(tasks as u64));
                bar.set_style(self.style.clone());
                // Draws are rate-limited: one dropped while a stage's tasks
                // run long and report nothing would leave no bar at all.
                bar.enable_steady_tick(STEADY_TICK);
                bar.set_prefix(stage.to_string());
                let entry = StageBar {
                    bar,
                    total: tasks,
                    done: 0,
                    running: 0,
                };
                entry.redraw();
                stages.insert((job, stage), entry);
            }
            ProgressEvent::TaskStarted { job, stage } => {
                if let Some(s) = stages.get_mut(&(job, stage)) {
                    s.running += 1;
                    s.redraw();
                }
            }
            ProgressEvent::TaskEnded {
                job,
                stage,
                succeeded,
            } => {
                if let Some(s) = stages.get_mut(&(job, stage)) {
                    s.running = s.running.saturating_sub(1);
                    s.done += usize::from(succeeded);
                    s.redraw();
                }
            }
            ProgressEvent::StageCompleted { job, stage } => {
                if let Some(s) = stages.remove(&(job, stage)) {
                    s.bar.finish_and_clear();
                    self.multi.remove(&s.bar);
                }
            }
            ProgressEvent::JobEnded { job, .. } => {
                let ended: Vec<_> = stages.keys().filter(|(j, _)| *j == job).copied().collect();
                for key in ended {
                    if let Some(s) = stages.remove(&key) {
                        s.bar.finish_and_clear();
                        self.multi.remove(&s.bar);
                    }
                }
            }
        }
    }
}
