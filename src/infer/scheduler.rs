//! The batching inference scheduler: worker threads that own model sessions and serve requests
//! from every stream, plus [`Admission`], the count of streams the GPU has room for.
//!
//! ```text
//! codec thread (stream s1) ──submit──▶ ┌ mailbox s1 ┐                ┌▶ worker 0 (runner 0)
//! codec thread (stream s2) ──submit──▶ │ mailbox s2 │ ─ FIFO of  ──▶ ┤
//! codec thread (stream s3) ──submit──▶ └ mailbox s3 ┘   streams      └▶ worker 1 (runner 1)
//!        ▲                                                                 │
//!        └──────────── one reply per request (Ok, or an error: the frame is not swapped) ◀┘
//! ```
//!
//! - Each worker owns one [`BatchRunner`] (one ONNX session: `run` takes `&mut`). For models with
//!   a dynamic batch dimension a worker takes up to `max_batch` requests at once, waiting at most
//!   `max_wait` after the oldest one arrived. For models fixed at batch 1 (the public
//!   `inswapper_128.onnx`) the runner reports `max_batch() == 1` and `workers` instances run
//!   side by side instead.
//! - One slot per stream: a frame that is still waiting when its stream submits a newer one is
//!   answered [`ScheduleError::Superseded`] at once and the newer frame takes its place in line.
//!   Stale video is never queued; a request a worker has already taken runs
//!   to the end.
//! - Every error is per request and means "this frame could not be swapped" (the live stage then fails closed): a failing or panicking
//!   model run, a wrong number of outputs, a timeout, a full queue. The stream lives on.
//! - The queue lock is held only to move requests in and out, never while a model runs.
//!
//! Use: one `Arc<Scheduler<_>>` per model role, shared by every stream's processor. A codec
//! thread calls [`Scheduler::infer`] (submit and wait up to `timeout`) and treats any error as
//! a frame it could not swap. The mailbox holds one request per stream and scheduler, so a frame
//! with several faces sends them one after the other or bundles them into one input; a stage
//! that overlaps CPU work with inference uses [`Scheduler::submit`] and [`Ticket::wait`].

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::media::StreamId;
use crate::metrics::{Histogram, Registry};

/// What one worker thread owns: a model session (or a stand-in in tests) that runs batches.
pub trait BatchRunner: Send + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    type Error: std::fmt::Display;

    /// The largest batch this model takes: 1 for a model fixed at batch 1. The scheduler uses
    /// the smaller of this and `SchedulerSettings::max_batch`.
    fn max_batch(&self) -> usize;

    /// Runs `batch` (never empty, never longer than the effective max batch) and returns one
    /// output per input, in order. A different count is treated as a failed run.
    fn run(&mut self, batch: Vec<Self::Input>) -> Result<Vec<Self::Output>, Self::Error>;
}

/// Why a request got no output. Every variant means: this frame could not be swapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("replaced by a newer frame of the same stream before a worker took it")]
    Superseded,
    #[error("model run failed: {0}")]
    ModelFailed(String),
    #[error("no result within the inference timeout")]
    Timeout,
    #[error("inference queue full")]
    Busy,
    #[error("inference scheduler shut down")]
    Closed,
}

/// Why [`Scheduler::spawn`] failed: at start-up, loudly.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("invalid scheduler settings: {0}")]
    Settings(String),
    #[error("cannot build the model instance of worker {worker}: {message}")]
    Build { worker: usize, message: String },
    #[error("cannot start an inference worker thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Plain settings; the configuration layer fills them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// Worker threads, each with its own model instance.
    pub workers: usize,
    /// Most requests per model run (capped by the runner's own `max_batch`).
    pub max_batch: usize,
    /// How long a batch may wait for more requests after its oldest one arrived.
    pub max_wait: Duration,
    /// How long [`Scheduler::infer`] waits for a result, queueing included.
    pub timeout: Duration,
    /// Most requests waiting at once (at most one per stream); a new stream's request beyond
    /// it is refused with [`ScheduleError::Busy`].
    pub queue_depth: usize,
}

impl SchedulerSettings {
    /// Checks ranges; a configuration layer calls it at start-up, `spawn` does too.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 || self.workers > 64 {
            return Err("workers must be within 1..=64".into());
        }
        if self.max_batch == 0 || self.max_batch > 256 {
            return Err("max_batch must be within 1..=256".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be positive".into());
        }
        // A batch that may wait longer than its callers do would time every one of them out.
        if self.max_wait >= self.timeout {
            return Err("max_wait must be shorter than timeout".into());
        }
        if self.queue_depth == 0 {
            return Err("queue_depth must be at least 1".into());
        }
        Ok(())
    }
}

/// Counters and histograms of one scheduler (relaxed atomics), read at each scrape of
/// `/metrics` ([`SchedulerMetrics::register_all`]).
#[derive(Debug)]
pub struct SchedulerMetrics {
    /// Model runs started.
    pub batches: AtomicU64,
    /// Model runs by batch size: index `n - 1` counts batches of `n`.
    pub batch_sizes: Box<[AtomicU64]>,
    /// Requests answered with an output.
    pub completed: AtomicU64,
    /// Waiting requests replaced by a newer one of their stream.
    pub superseded: AtomicU64,
    /// Model runs that failed (error, panic or wrong output count).
    pub failed_batches: AtomicU64,
    /// Requests answered `ModelFailed`.
    pub failed_requests: AtomicU64,
    /// Model runs that panicked (also counted in `failed_batches`).
    pub panics: AtomicU64,
    /// Requests whose caller stopped waiting.
    pub timeouts: AtomicU64,
    /// Requests refused because the queue was full.
    pub busy: AtomicU64,
    /// Submit → taken by a worker.
    pub queue_wait: Histogram,
    /// One model run.
    pub run: Histogram,
}

impl SchedulerMetrics {
    fn new(max_batch: usize) -> Self {
        Self {
            batches: AtomicU64::new(0),
            batch_sizes: (0..max_batch).map(|_| AtomicU64::new(0)).collect(),
            completed: AtomicU64::new(0),
            superseded: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            failed_requests: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            queue_wait: Histogram::default(),
            run: Histogram::default(),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A plain copy of the counters.
    pub fn snapshot(&self) -> SchedulerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SchedulerStats {
            batches: get(&self.batches),
            batch_sizes: self.batch_sizes.iter().map(get).collect(),
            completed: get(&self.completed),
            superseded: get(&self.superseded),
            failed_batches: get(&self.failed_batches),
            failed_requests: get(&self.failed_requests),
            panics: get(&self.panics),
            timeouts: get(&self.timeouts),
            busy: get(&self.busy),
            queue_wait_count: self.queue_wait.count(),
        }
    }
}

impl SchedulerMetrics {
    /// Registers the metrics of several schedulers, one `model` label per role: model runs by
    /// batch size, requests by outcome, queue wait and run time.
    pub fn register_all(
        schedulers: &[(&'static str, &Arc<SchedulerMetrics>)],
        registry: &mut Registry,
    ) {
        if schedulers.is_empty() {
            return;
        }
        registry.register_collector(Box::new(SchedulerCollector(
            schedulers
                .iter()
                .map(|(m, s)| (*m, Arc::clone(s)))
                .collect(),
        )));
    }
}

/// Reads the schedulers' atomics at scrape time.
#[derive(Debug)]
struct SchedulerCollector(Vec<(&'static str, Arc<SchedulerMetrics>)>);

impl prometheus_client::collector::Collector for SchedulerCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::MetricType;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut family = encoder.encode_descriptor(
            "facerelay_infer_batches",
            "Model runs by batch size.",
            None,
            MetricType::Counter,
        )?;
        for (model, m) in &self.0 {
            for (i, n) in m.batch_sizes.iter().enumerate() {
                let size = (i + 1).to_string();
                let labels = [("model", *model), ("size", size.as_str())];
                ConstCounter::new(get(n)).encode(family.encode_family(&labels)?)?;
            }
        }
        type Pick = fn(&SchedulerMetrics) -> &AtomicU64;
        let outcomes: [(&str, Pick); 6] = [
            ("completed", |m| &m.completed),
            ("superseded", |m| &m.superseded),
            ("failed", |m| &m.failed_requests),
            ("timeout", |m| &m.timeouts),
            ("busy", |m| &m.busy),
            ("panicked_runs", |m| &m.panics),
        ];
        let mut family = encoder.encode_descriptor(
            "facerelay_infer_requests",
            "Inference requests by outcome (panicked_runs counts model runs).",
            None,
            MetricType::Counter,
        )?;
        for (model, m) in &self.0 {
            for (outcome, pick) in outcomes {
                let labels = [("model", *model), ("outcome", outcome)];
                ConstCounter::new(get(pick(m))).encode(family.encode_family(&labels)?)?;
            }
        }
        type PickHistogram = fn(&SchedulerMetrics) -> &Histogram;
        let histograms: [(&str, &str, PickHistogram); 2] = [
            (
                "facerelay_infer_queue_wait_seconds",
                "Inference request submitted to taken by a worker.",
                |m| &m.queue_wait,
            ),
            (
                "facerelay_infer_run_seconds",
                "One model run (a batch).",
                |m| &m.run,
            ),
        ];
        for (name, help, pick) in histograms {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (model, m) in &self.0 {
                pick(m).encode(family.encode_family(&[("model", *model)])?)?;
            }
        }
        Ok(())
    }
}

/// A snapshot of [`SchedulerMetrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerStats {
    pub batches: u64,
    /// Index `n - 1`: batches of `n`, for `n` in `1..=max_batch`.
    pub batch_sizes: Vec<u64>,
    pub completed: u64,
    pub superseded: u64,
    pub failed_batches: u64,
    pub failed_requests: u64,
    pub panics: u64,
    pub timeouts: u64,
    pub busy: u64,
    /// Requests that reached a worker.
    pub queue_wait_count: u64,
}

type Reply<O> = Result<O, ScheduleError>;

struct Request<I, O> {
    seq: u64,
    input: I,
    /// Capacity 1 and exactly one message per request, so `try_send` never blocks and never
    /// finds it full; a caller that gave up has dropped the receiver, which is fine.
    reply: SyncSender<Reply<O>>,
    submitted: Instant,
}

/// A stream's place in line: `since` stays when a newer frame replaces the request, so a
/// stream that keeps sending is not pushed to the back every frame.
struct Slot<I, O> {
    since: Instant,
    request: Request<I, O>,
}

struct Queue<I, O> {
    /// Streams with a waiting request, oldest first; exactly the keys of `waiting`.
    order: VecDeque<StreamId>,
    waiting: HashMap<StreamId, Slot<I, O>>,
    closed: bool,
    next_seq: u64,
}

struct Shared<I, O> {
    queue: Mutex<Queue<I, O>>,
    /// Signalled on every change workers care about: a request arrived, shutdown.
    changed: Condvar,
    settings: SchedulerSettings,
    metrics: Arc<SchedulerMetrics>,
}

impl<I, O> Shared<I, O> {
    fn lock(&self) -> MutexGuard<'_, Queue<I, O>> {
        // Nothing panics while holding it, but a poisoned queue must not take the server down.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes `stream`'s waiting request if it is still request `seq`.
    fn withdraw(&self, stream: StreamId, seq: u64) -> Option<Request<I, O>> {
        let mut q = self.lock();
        if q.waiting.get(&stream).map(|s| s.request.seq) != Some(seq) {
            return None;
        }
        q.order.retain(|s| *s != stream);
        q.waiting.remove(&stream).map(|s| s.request)
    }

    /// Blocks until a batch is due, then takes it; `None` once the scheduler is closed.
    fn next_batch(&self, max_batch: usize) -> Option<Vec<Request<I, O>>> {
        let mut q = self.lock();
        loop {
            if q.closed {
                return None;
            }
            let Some(front) = q.order.front() else {
                q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            if q.order.len() >= max_batch {
                break;
            }
            // The deadline counts from when the oldest request arrived, not from when this
            // worker got free: time it already spent queued counts against max_wait.
            let since = q.waiting.get(front).map(|s| s.since);
            let deadline = since.and_then(|t| t.checked_add(self.settings.max_wait));
            let now = Instant::now();
            match deadline {
                Some(d) if d > now => {
                    q = self
                        .changed
                        .wait_timeout(q, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                _ => break,
            }
        }
        let n = q.order.len().min(max_batch);
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            if let Some(stream) = q.order.pop_front() {
                if let Some(slot) = q.waiting.remove(&stream) {
                    batch.push(slot.request);
                }
            }
        }
        Some(batch)
    }
}

/// A submitted request: wait on it for the output. Dropping it withdraws the request if no
/// worker has taken it yet.
pub struct Ticket<R: BatchRunner> {
    reply: Receiver<Reply<R::Output>>,
    stream: StreamId,
    seq: u64,
    /// Weak: a ticket outliving its scheduler must not keep the queue alive.
    shared: Weak<Shared<R::Input, R::Output>>,
    metrics: Arc<SchedulerMetrics>,
    answered: bool,
}

impl<R: BatchRunner> Ticket<R> {
    /// The reply if it has come, without waiting: `None` while the request is still queued or
    /// running (the ticket stays valid). For a stage that keeps working while a request runs.
    pub fn try_take(&mut self) -> Option<Result<R::Output, ScheduleError>> {
        let reply = match self.reply.try_recv() {
            Ok(reply) => reply,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Err(ScheduleError::Closed),
        };
        // Answered, one way or the other: nothing is left to withdraw on drop.
        self.answered = true;
        Some(reply)
    }

    /// Waits up to `timeout` for the output. On timeout a still-waiting request is withdrawn
    /// (a running one finishes and its output is discarded).
    pub fn wait(mut self, timeout: Duration) -> Result<R::Output, ScheduleError> {
        let result = match self.reply.recv_timeout(timeout) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => {
                SchedulerMetrics::add(&self.metrics.timeouts, 1);
                Err(ScheduleError::Timeout)
            }
            // Every request is answered before its sender is dropped, except when a worker
            // thread itself is gone: treat that as a closed scheduler, never as a hang.
            Err(RecvTimeoutError::Disconnected) => Err(ScheduleError::Closed),
        };
        self.answered = result.is_ok();
        result
    }
}

impl<R: BatchRunner> Drop for Ticket<R> {
    fn drop(&mut self) {
        if !self.answered {
            if let Some(shared) = self.shared.upgrade() {
                shared.withdraw(self.stream, self.seq);
            }
        }
    }
}

/// The handle codec threads share (behind an `Arc`). Dropping it shuts the workers down.
pub struct Scheduler<R: BatchRunner> {
    shared: Arc<Shared<R::Input, R::Output>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl<R: BatchRunner> Scheduler<R> {
    /// Builds `settings.workers` runners with `factory(worker_index)` on this thread (a model
    /// that does not load fails here, loudly) and starts one thread per runner, named
    /// `infer-{name}-{index}`.
    ///
    /// After a runner panics, its worker rebuilds it from `factory`, because a session that
    /// unwound mid-run may be in any state; if the rebuild fails the worker keeps the old
    /// runner (losing a worker would lose capacity for good) and logs the error.
    pub fn spawn<F, E>(
        name: &str,
        settings: SchedulerSettings,
        factory: F,
    ) -> Result<Self, SpawnError>
    where
        F: Fn(usize) -> Result<R, E> + Send + Sync + 'static,
        E: std::fmt::Display,
    {
        settings.validate().map_err(SpawnError::Settings)?;
        let mut runners = Vec::with_capacity(settings.workers);
        for worker in 0..settings.workers {
            let runner = factory(worker).map_err(|e| SpawnError::Build {
                worker,
                message: e.to_string(),
            })?;
            runners.push(runner);
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                order: VecDeque::new(),
                waiting: HashMap::new(),
                closed: false,
                next_seq: 0,
            }),
            changed: Condvar::new(),
            settings,
            metrics: Arc::new(SchedulerMetrics::new(settings.max_batch)),
        });
        let factory = Arc::new(factory);
        let scheduler = Self {
            shared: shared.clone(),
            workers: Mutex::new(Vec::with_capacity(settings.workers)),
        };
        for (index, runner) in runners.into_iter().enumerate() {
            let shared = shared.clone();
            let factory = factory.clone();
            let rebuild = move || factory(index).map_err(|e| e.to_string());
            let handle = std::thread::Builder::new()
                .name(format!("infer-{name}-{index}"))
                .spawn(move || worker_loop(&shared, runner, rebuild))?;
            // On an early return, dropping `scheduler` stops the threads already started.
            scheduler.join_handles().push(handle);
        }
        Ok(scheduler)
    }

    fn join_handles(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits `input` for `stream` and waits up to `settings.timeout` for its output; the
    /// call a codec thread makes per frame. Any error: the frame is not swapped.
    pub fn infer(&self, stream: StreamId, input: R::Input) -> Result<R::Output, ScheduleError> {
        self.submit(stream, input)?
            .wait(self.shared.settings.timeout)
    }

    /// Puts `input` in `stream`'s slot, answering a request still waiting there
    /// [`ScheduleError::Superseded`], and returns at once.
    pub fn submit(&self, stream: StreamId, input: R::Input) -> Result<Ticket<R>, ScheduleError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let now = Instant::now();
        let (seq, replaced) = {
            let mut q = self.shared.lock();
            if q.closed {
                return Err(ScheduleError::Closed);
            }
            let seq = q.next_seq;
            let request = Request {
                seq,
                input,
                reply: tx,
                submitted: now,
            };
            let full = q.order.len() >= self.shared.settings.queue_depth;
            let replaced = match q.waiting.get_mut(&stream) {
                Some(slot) => Some(std::mem::replace(&mut slot.request, request)),
                None if full => {
                    drop(q);
                    SchedulerMetrics::add(&self.shared.metrics.busy, 1);
                    return Err(ScheduleError::Busy);
                }
                None => {
                    q.waiting.insert(
                        stream,
                        Slot {
                            since: now,
                            request,
                        },
                    );
                    q.order.push_back(stream);
                    None
                }
            };
            q.next_seq += 1;
            (seq, replaced)
        };
        match replaced {
            // Same queue length, same oldest request: nothing a worker waits on has changed.
            Some(old) => {
                SchedulerMetrics::add(&self.shared.metrics.superseded, 1);
                let _ = old.reply.try_send(Err(ScheduleError::Superseded));
            }
            None => self.shared.changed.notify_all(),
        }
        Ok(Ticket {
            reply: rx,
            stream,
            seq,
            shared: Arc::downgrade(&self.shared),
            metrics: self.shared.metrics.clone(),
            answered: false,
        })
    }

    /// Requests waiting for a worker now.
    pub fn queued(&self) -> usize {
        self.shared.lock().order.len()
    }

    pub fn settings(&self) -> &SchedulerSettings {
        &self.shared.settings
    }

    /// The live counters, for `/metrics`.
    pub fn metrics(&self) -> &Arc<SchedulerMetrics> {
        &self.shared.metrics
    }

    pub fn stats(&self) -> SchedulerStats {
        self.shared.metrics.snapshot()
    }

    /// Refuses new requests, answers every waiting one [`ScheduleError::Closed`], lets the
    /// batches already running finish (their callers get their outputs) and joins the workers.
    /// A model run that never returns blocks this; the process-level second signal forces.
    pub fn shutdown(&self) {
        let drained: Vec<_> = {
            let mut q = self.shared.lock();
            q.closed = true;
            q.order.clear();
            q.waiting.drain().map(|(_, slot)| slot.request).collect()
        };
        self.shared.changed.notify_all();
        for request in drained {
            let _ = request.reply.try_send(Err(ScheduleError::Closed));
        }
        let handles = std::mem::take(&mut *self.join_handles());
        for handle in handles {
            // Workers catch runner panics, so this fails only on a bug in the loop itself.
            if handle.join().is_err() {
                tracing::error!("an inference worker thread panicked");
            }
        }
    }
}

impl<R: BatchRunner> Drop for Scheduler<R> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker_loop<R: BatchRunner>(
    shared: &Shared<R::Input, R::Output>,
    mut runner: R,
    rebuild: impl Fn() -> Result<R, String>,
) {
    let m = &*shared.metrics;
    loop {
        let max_batch = runner.max_batch().clamp(1, shared.settings.max_batch);
        let Some(batch) = shared.next_batch(max_batch) else {
            return;
        };
        let n = batch.len();
        if n == 0 {
            continue;
        }
        let taken = Instant::now();
        let mut inputs = Vec::with_capacity(n);
        let mut replies = Vec::with_capacity(n);
        for request in batch {
            m.queue_wait
                .record(taken.saturating_duration_since(request.submitted));
            inputs.push(request.input);
            replies.push(request.reply);
        }
        SchedulerMetrics::add(&m.batches, 1);
        if let Some(size) = m.batch_sizes.get(n - 1) {
            SchedulerMetrics::add(size, 1);
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runner.run(inputs)));
        m.run.record(taken.elapsed());
        let failure = match outcome {
            Ok(Ok(outputs)) if outputs.len() == n => {
                SchedulerMetrics::add(&m.completed, n as u64);
                for (reply, output) in replies.iter().zip(outputs) {
                    let _ = reply.try_send(Ok(output));
                }
                continue;
            }
            Ok(Ok(outputs)) => format!("{} outputs for {n} inputs", outputs.len()),
            Ok(Err(e)) => e.to_string(),
            Err(panic) => {
                SchedulerMetrics::add(&m.panics, 1);
                let message = panic_text(panic.as_ref());
                tracing::error!(%message, "model run panicked; rebuilding the model instance");
                match rebuild() {
                    Ok(fresh) => runner = fresh,
                    Err(e) => {
                        tracing::error!(error = %e, "rebuild failed; keeping the old instance")
                    }
                }
                format!("panicked: {message}")
            }
        };
        // Per frame at 30 fps, so not a warning each time: the counters carry the rate.
        tracing::debug!(error = %failure, batch = n, "model run failed; its frames are not swapped");
        SchedulerMetrics::add(&m.failed_batches, 1);
        SchedulerMetrics::add(&m.failed_requests, n as u64);
        for reply in replies {
            let _ = reply.try_send(Err(ScheduleError::ModelFailed(failure.clone())));
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "a non-string panic payload".to_owned(),
    }
}

/// How many streams may use the face swap at once. A participant past capacity is told so
/// (and may join without swap) instead of slowing every stream down.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<AdmissionInner>,
}

#[derive(Debug)]
struct AdmissionInner {
    capacity: usize,
    in_use: AtomicUsize,
}

/// Refusal from [`Admission::try_admit`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("face swap capacity reached ({capacity} streams); join without swap or try later")]
    Full { capacity: usize },
}

impl AdmissionError {
    /// Stable code for the signalling edge's `error` message.
    pub fn code(&self) -> &'static str {
        match self {
            AdmissionError::Full { .. } => "swap_capacity",
        }
    }
}

/// One admitted stream's slot; released on drop.
#[derive(Debug)]
pub struct AdmissionGuard {
    inner: Arc<AdmissionInner>,
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        self.inner.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// `capacity` 0 disables the swap: every request is refused.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(AdmissionInner {
                capacity,
                in_use: AtomicUsize::new(0),
            }),
        }
    }

    pub fn try_admit(&self) -> Result<AdmissionGuard, AdmissionError> {
        let capacity = self.inner.capacity;
        self.inner
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .map_err(|_| AdmissionError::Full { capacity })?;
        Ok(AdmissionGuard {
            inner: self.inner.clone(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    pub fn in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    /// Inputs that make the probe misbehave; any other input `x` comes back as `x + 1`.
    const BLOCK: u32 = 1_000;
    const FAIL: u32 = 1_001;
    const PANIC: u32 = 1_002;
    const SHORT: u32 = 1_003;
    /// Long enough never to be reached by a passing test on a loaded machine.
    const LONG: Duration = Duration::from_secs(60);

    /// What the test sees of its runners.
    struct Harness {
        /// Inputs of every batch run, in order.
        log: Mutex<Vec<Vec<u32>>>,
        /// A batch holding `BLOCK` waits here twice: once to say it is running, once to be let go.
        gate: Barrier,
        builds: AtomicUsize,
        /// Builds after this many fail (rebuild after a panic).
        max_builds: usize,
        dropped: AtomicUsize,
    }

    impl Harness {
        fn sizes(&self) -> Vec<usize> {
            self.log.lock().unwrap().iter().map(Vec::len).collect()
        }
    }

    struct Probe {
        max_batch: usize,
        h: Arc<Harness>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.h.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl BatchRunner for Probe {
        type Input = u32;
        type Output = u32;
        type Error = String;

        fn max_batch(&self) -> usize {
            self.max_batch
        }

        fn run(&mut self, batch: Vec<u32>) -> Result<Vec<u32>, String> {
            self.h.log.lock().unwrap().push(batch.clone());
            if batch.contains(&BLOCK) {
                self.h.gate.wait();
                self.h.gate.wait();
            }
            if batch.contains(&FAIL) {
                return Err("bad input".into());
            }
            if batch.contains(&PANIC) {
                panic!("runner bug");
            }
            if batch.contains(&SHORT) {
                return Ok(Vec::new());
            }
            Ok(batch.iter().map(|x| x + 1).collect())
        }
    }

    fn settings(workers: usize, max_batch: usize, max_wait: Duration) -> SchedulerSettings {
        SchedulerSettings {
            workers,
            max_batch,
            max_wait,
            timeout: LONG * 2,
            queue_depth: 64,
        }
    }

    fn start_with(
        settings: SchedulerSettings,
        runner_max_batch: usize,
        max_builds: usize,
    ) -> (Scheduler<Probe>, Arc<Harness>) {
        let h = Arc::new(Harness {
            log: Mutex::new(Vec::new()),
            gate: Barrier::new(2),
            builds: AtomicUsize::new(0),
            max_builds,
            dropped: AtomicUsize::new(0),
        });
        let h2 = h.clone();
        let scheduler = Scheduler::spawn("test", settings, move |_| {
            if h2.builds.fetch_add(1, Ordering::SeqCst) >= h2.max_builds {
                return Err("no GPU left");
            }
            Ok(Probe {
                max_batch: runner_max_batch,
                h: h2.clone(),
            })
        })
        .unwrap();
        (scheduler, h)
    }

    fn start(settings: SchedulerSettings) -> (Scheduler<Probe>, Arc<Harness>) {
        let max_batch = settings.max_batch;
        start_with(settings, max_batch, usize::MAX)
    }

    /// Occupies the (single) worker with a `BLOCK` request of stream 0 until `gate` is passed
    /// a second time.
    fn occupy(s: &Scheduler<Probe>, h: &Harness) -> Ticket<Probe> {
        let ticket = s.submit(StreamId(0), BLOCK).unwrap();
        h.gate.wait();
        ticket
    }

    #[test]
    fn batches_form_up_to_max_batch_in_arrival_order() {
        let (s, h) = start(settings(1, 4, Duration::ZERO));
        let first = occupy(&s, &h);
        let tickets: Vec<_> = (1..10u32)
            .map(|i| s.submit(StreamId(i.into()), i).unwrap())
            .collect();
        assert_eq!(s.queued(), 9);
        h.gate.wait();
        assert_eq!(first.wait(LONG), Ok(BLOCK + 1));
        for (i, t) in (1..10u32).zip(tickets) {
            assert_eq!(t.wait(LONG), Ok(i + 1));
        }
        assert_eq!(h.sizes(), [1, 4, 4, 1]);
        assert_eq!(h.log.lock().unwrap()[1], [1, 2, 3, 4]);
        let stats = s.stats();
        assert_eq!(stats.batches, 4);
        assert_eq!(stats.batch_sizes, [2, 0, 0, 2]);
        assert_eq!(stats.completed, 10);
        assert_eq!(stats.queue_wait_count, 10);
    }

    #[test]
    fn the_runners_own_max_batch_caps_the_setting() {
        let (s, h) = start_with(settings(1, 4, Duration::ZERO), 2, usize::MAX);
        let first = occupy(&s, &h);
        let tickets: Vec<_> = (1..4u32)
            .map(|i| s.submit(StreamId(i.into()), i).unwrap())
            .collect();
        h.gate.wait();
        assert!(first.wait(LONG).is_ok());
        assert!(tickets.into_iter().all(|t| t.wait(LONG).is_ok()));
        assert_eq!(h.sizes(), [1, 2, 1]);
    }

    #[test]
    fn a_lone_request_runs_after_max_wait() {
        let max_wait = Duration::from_millis(200);
        let (s, h) = start(settings(1, 4, max_wait));
        let started = Instant::now();
        assert_eq!(s.infer(StreamId(1), 5), Ok(6));
        assert!(started.elapsed() >= max_wait, "{:?}", started.elapsed());
        assert_eq!(h.sizes(), [1]);
    }

    #[test]
    fn a_full_batch_runs_without_waiting_for_max_wait() {
        // Were the batch to wait for max_wait, every wait below would time out first.
        let mut settings = settings(1, 4, LONG * 2);
        settings.timeout = LONG * 3;
        let (s, h) = start(settings);
        let tickets: Vec<_> = (1..=4u32)
            .map(|i| s.submit(StreamId(i.into()), i).unwrap())
            .collect();
        for (i, t) in (1..=4u32).zip(tickets) {
            assert_eq!(t.wait(LONG), Ok(i + 1));
        }
        assert_eq!(h.sizes(), [4]);
    }

    #[test]
    fn batch_1_models_run_on_several_workers_at_once() {
        let (s, h) = start(settings(2, 1, Duration::ZERO));
        let blocked = occupy(&s, &h);
        // One worker is stuck in the gate; the other serves stream 2.
        assert_eq!(s.infer(StreamId(2), 1), Ok(2));
        h.gate.wait();
        assert_eq!(blocked.wait(LONG), Ok(BLOCK + 1));
        assert_eq!(h.builds.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_newer_frame_replaces_a_waiting_one_and_keeps_its_place() {
        let (s, h) = start(settings(1, 1, Duration::ZERO));
        let running = occupy(&s, &h);
        let old = s.submit(StreamId(2), 1).unwrap();
        // Stream 0's request is running: a newer one queues behind it, it is not replaced.
        let next = s.submit(StreamId(0), 7).unwrap();
        let new = s.submit(StreamId(2), 2).unwrap();
        assert_eq!(old.wait(LONG), Err(ScheduleError::Superseded));
        assert_eq!(s.queued(), 2);
        h.gate.wait();
        assert_eq!(running.wait(LONG), Ok(BLOCK + 1));
        assert_eq!(new.wait(LONG), Ok(3));
        assert_eq!(next.wait(LONG), Ok(8));
        assert_eq!(*h.log.lock().unwrap(), [vec![BLOCK], vec![2], vec![7]]);
        assert_eq!(s.stats().superseded, 1);
    }

    #[test]
    fn a_failing_run_fails_its_batch_only_and_is_counted() {
        let (s, h) = start(settings(1, 4, Duration::ZERO));
        let e = s.infer(StreamId(1), FAIL).unwrap_err();
        assert_eq!(e, ScheduleError::ModelFailed("bad input".into()));
        assert_eq!(s.infer(StreamId(1), 3), Ok(4));

        // Every request of a failing batch gets the error.
        let first = occupy(&s, &h);
        let a = s.submit(StreamId(2), FAIL).unwrap();
        let b = s.submit(StreamId(3), 5).unwrap();
        h.gate.wait();
        assert!(first.wait(LONG).is_ok());
        assert!(matches!(a.wait(LONG), Err(ScheduleError::ModelFailed(_))));
        assert!(matches!(b.wait(LONG), Err(ScheduleError::ModelFailed(_))));
        assert_eq!(s.infer(StreamId(2), 5), Ok(6));

        let stats = s.stats();
        assert_eq!(stats.failed_batches, 2);
        assert_eq!(stats.failed_requests, 3);
        assert_eq!(stats.completed, 3);
        assert_eq!(stats.panics, 0);
    }

    #[test]
    fn a_panicking_run_fails_its_batch_and_the_runner_is_rebuilt() {
        let (s, h) = start(settings(1, 4, Duration::ZERO));
        let e = s.infer(StreamId(1), PANIC).unwrap_err();
        assert_eq!(e, ScheduleError::ModelFailed("panicked: runner bug".into()));
        assert_eq!(s.infer(StreamId(1), 3), Ok(4));
        assert_eq!(h.builds.load(Ordering::SeqCst), 2);
        assert_eq!(h.dropped.load(Ordering::SeqCst), 1);
        let stats = s.stats();
        assert_eq!((stats.panics, stats.failed_batches), (1, 1));
    }

    #[test]
    fn a_failed_rebuild_keeps_the_old_runner_serving() {
        let (s, h) = start_with(settings(1, 4, Duration::ZERO), 4, 1);
        assert!(matches!(
            s.infer(StreamId(1), PANIC),
            Err(ScheduleError::ModelFailed(_))
        ));
        assert_eq!(s.infer(StreamId(1), 3), Ok(4));
        assert_eq!(h.builds.load(Ordering::SeqCst), 2);
        assert_eq!(h.dropped.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_wrong_output_count_is_an_error_not_a_panic() {
        let (s, _h) = start(settings(1, 4, Duration::ZERO));
        let e = s.infer(StreamId(1), SHORT).unwrap_err();
        assert_eq!(
            e,
            ScheduleError::ModelFailed("0 outputs for 1 inputs".into())
        );
        assert_eq!(s.infer(StreamId(1), 3), Ok(4));
        assert_eq!(s.stats().failed_batches, 1);
    }

    #[test]
    fn a_stuck_model_times_out_its_callers_and_withdraws_waiting_requests() {
        let mut settings = settings(1, 1, Duration::ZERO);
        settings.timeout = Duration::from_millis(100);
        let (s, h) = start(settings);
        let running = occupy(&s, &h);
        assert_eq!(s.infer(StreamId(2), 1), Err(ScheduleError::Timeout));
        // The timed-out request does not linger for the worker to run later.
        assert_eq!(s.queued(), 0);
        assert_eq!(
            running.wait(Duration::from_millis(1)),
            Err(ScheduleError::Timeout)
        );
        h.gate.wait();
        assert_eq!(s.submit(StreamId(0), 2).unwrap().wait(LONG), Ok(3));
        assert_eq!(*h.log.lock().unwrap(), [vec![BLOCK], vec![2]]);
        assert_eq!(s.stats().timeouts, 2);
    }

    #[test]
    fn a_full_queue_refuses_new_streams_but_not_newer_frames() {
        let mut settings = settings(1, 1, Duration::ZERO);
        settings.queue_depth = 1;
        let (s, h) = start(settings);
        let running = occupy(&s, &h);
        let waiting = s.submit(StreamId(1), 1).unwrap();
        assert!(matches!(s.submit(StreamId(2), 1), Err(ScheduleError::Busy)));
        let newer = s.submit(StreamId(1), 2).unwrap();
        assert_eq!(waiting.wait(LONG), Err(ScheduleError::Superseded));
        h.gate.wait();
        assert!(running.wait(LONG).is_ok());
        assert_eq!(newer.wait(LONG), Ok(3));
        assert_eq!(s.stats().busy, 1);
    }

    #[test]
    fn shutdown_closes_waiting_requests_finishes_running_ones_and_joins() {
        let (s, h) = start(settings(1, 1, Duration::ZERO));
        let s = Arc::new(s);
        let running = occupy(&s, &h);
        let waiting = s.submit(StreamId(1), 1).unwrap();
        let stopper = {
            let s = s.clone();
            std::thread::spawn(move || s.shutdown())
        };
        assert_eq!(waiting.wait(LONG), Err(ScheduleError::Closed));
        h.gate.wait();
        assert_eq!(running.wait(LONG), Ok(BLOCK + 1));
        stopper.join().unwrap();
        // The worker has returned: its runner is gone.
        assert_eq!(h.dropped.load(Ordering::SeqCst), 1);
        assert!(matches!(
            s.submit(StreamId(2), 1),
            Err(ScheduleError::Closed)
        ));
        assert_eq!(*h.log.lock().unwrap(), [vec![BLOCK]]);
    }

    #[test]
    fn dropping_the_scheduler_stops_idle_workers() {
        let (s, h) = start(settings(3, 4, LONG));
        drop(s);
        assert_eq!(h.dropped.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn spawn_fails_loudly_on_bad_settings_or_a_model_that_does_not_build() {
        let bad = SchedulerSettings {
            workers: 0,
            ..settings(1, 1, Duration::ZERO)
        };
        let e = Scheduler::<Probe>::spawn("t", bad, |_| Err("unused"))
            .err()
            .unwrap();
        assert!(matches!(e, SpawnError::Settings(_)), "{e}");
        let mut slow = settings(1, 1, LONG);
        slow.timeout = LONG;
        assert!(slow.validate().is_err());
        let e = Scheduler::<Probe>::spawn("t", settings(2, 1, Duration::ZERO), |_| {
            Err("model missing")
        })
        .err()
        .unwrap();
        assert!(
            matches!(&e, SpawnError::Build { worker: 0, message } if message == "model missing"),
            "{e}"
        );
    }

    #[test]
    fn handles_can_be_shared_by_codec_threads() {
        fn shareable<T: Send + Sync>() {}
        fn sendable<T: Send>() {}
        shareable::<Scheduler<Probe>>();
        sendable::<Ticket<Probe>>();
        shareable::<Admission>();
        sendable::<AdmissionGuard>();
    }

    #[test]
    fn try_take_polls_without_consuming_the_ticket() {
        let (s, h) = start(settings(1, 1, Duration::ZERO));
        let running = occupy(&s, &h);
        let mut queued = s.submit(StreamId(2), 7).unwrap();
        assert!(queued.try_take().is_none(), "still waiting behind BLOCK");
        h.gate.wait();
        assert_eq!(running.wait(LONG), Ok(BLOCK + 1));
        let deadline = Instant::now() + LONG;
        let got = loop {
            if let Some(reply) = queued.try_take() {
                break reply;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(got, Ok(8));
    }

    #[test]
    fn a_ticket_outliving_its_scheduler_reports_closed() {
        let (s, h) = start(settings(1, 1, Duration::ZERO));
        let running = occupy(&s, &h);
        let waiting = s.submit(StreamId(1), 1).unwrap();
        let stopper = std::thread::spawn(move || drop(s));
        assert_eq!(waiting.wait(LONG), Err(ScheduleError::Closed));
        h.gate.wait();
        stopper.join().unwrap();
        assert_eq!(running.wait(LONG), Ok(BLOCK + 1));
    }

    #[test]
    fn admission_refuses_past_capacity_and_frees_on_drop() {
        let a = Admission::new(2);
        let g1 = a.try_admit().unwrap();
        let _g2 = a.clone().try_admit().unwrap();
        let e = a.try_admit().unwrap_err();
        assert_eq!(e, AdmissionError::Full { capacity: 2 });
        assert_eq!(e.code(), "swap_capacity");
        assert_eq!(a.in_use(), 2);
        drop(g1);
        assert_eq!(a.in_use(), 1);
        assert!(a.try_admit().is_ok());
        assert_eq!(a.in_use(), 1);

        let off = Admission::new(0);
        assert_eq!(
            off.try_admit().unwrap_err(),
            AdmissionError::Full { capacity: 0 }
        );
        assert_eq!(off.in_use(), 0);
    }
}
