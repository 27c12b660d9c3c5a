//! The job queue against a real redis-server per test: lifecycle, retries, dead
//! letters, delays, several replicas sharing one Redis, crash recovery, the global
//! rate limit, concurrency, retention and shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use futures_util::future::BoxFuture;
use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vnc_control::infra::queue::{
    JobContext, JobError, JobHandler, JobRecord, JobState, Queue, QueueConfig,
};
use vnc_shared::schema::Keys;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;

/// Bound on every wait here.
const WAIT: Duration = Duration::from_secs(15);

/// Small durations so the whole file runs in seconds.
fn config(consumer: &str) -> QueueConfig {
    QueueConfig {
        consumer: consumer.to_owned(),
        concurrency: 5,
        max_attempts: 3,
        backoff_base: Duration::from_millis(50),
        completed_retention: Duration::from_secs(60),
        failed_retention: Duration::from_secs(60),
        reclaim_idle: Duration::from_millis(300),
        rate_limits: Vec::new(),
        drain_timeout: Duration::from_secs(5),
    }
}

/// A fresh client of its own, as a replica would have.
async fn client(redis: &RedisServer) -> Client {
    let c = Builder::from_config(Config::from_url(&redis.url()).unwrap())
        .build()
        .unwrap();
    c.init().await.unwrap();
    c
}

async fn queue(redis: &RedisServer, config: QueueConfig) -> Queue {
    Queue::new(client(redis).await, Keys::default(), config)
}

/// A running replica: its queue and its `run` task.
struct Replica {
    queue: Queue,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Replica {
    async fn start(redis: &RedisServer, config: QueueConfig, handler: Arc<dyn JobHandler>) -> Self {
        let queue = queue(redis, config).await;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (queue, shutdown) = (queue.clone(), shutdown.clone());
            async move { queue.run(handler, shutdown).await }
        });
        Replica {
            queue,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("run returns after shutdown")
            .unwrap();
    }
}

/// What a handler closure gets: the job, owned.
#[derive(Clone, Debug)]
struct Job {
    id: String,
    name: String,
    attempt: u32,
}

/// A handler from a closure over owned jobs.
struct Handler<F>(F);

impl<F, Fut> JobHandler for Handler<F>
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Json, JobError>> + Send + 'static,
{
    fn handle<'a>(&'a self, job: JobContext<'a>) -> BoxFuture<'a, Result<Json, JobError>> {
        let fut = (self.0)(Job {
            id: job.id.to_owned(),
            name: job.name.to_owned(),
            attempt: job.attempt,
        });
        Box::pin(fut)
    }
}

fn handler<F, Fut>(f: F) -> Arc<dyn JobHandler>
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Json, JobError>> + Send + 'static,
{
    Arc::new(Handler(f))
}

async fn wait_state(q: &Queue, id: &str, state: JobState) -> JobRecord {
    eventually(&format!("job {id} {}", state.as_str()), WAIT, || async {
        q.get(id).await.unwrap().filter(|r| r.state == state)
    })
    .await
}

async fn pttl(redis: &RedisServer, key: &str) -> i64 {
    redis.client.pttl(key).await.unwrap()
}

/// Dead letters as (job id, error).
async fn dead_letters(redis: &RedisServer) -> Vec<(String, String)> {
    let entries: Vec<(String, HashMap<String, String>)> = redis
        .client
        .xrange("vnc:{jobs}:dead", "-", "+", None)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(_, f)| (f["id"].clone(), f["error"].clone()))
        .collect()
}

/// A handler that reports progress and waits for the test's go.
struct Gated {
    go: tokio::sync::Semaphore,
}

impl JobHandler for Gated {
    fn handle<'a>(&'a self, job: JobContext<'a>) -> BoxFuture<'a, Result<Json, JobError>> {
        Box::pin(async move {
            job.progress(42).await;
            let _go = self.go.acquire().await.unwrap();
            Ok(json!({ "echo": job.data["n"], "attempt": job.attempt }))
        })
    }
}

async fn enqueued_job_runs_to_completed_with_result_and_progress(redis: RedisServer) {
    let gated = Arc::new(Gated {
        go: tokio::sync::Semaphore::new(0),
    });
    let r = Replica::start(&redis, config("a"), gated.clone()).await;

    let id = r
        .queue
        .enqueue("start", json!({ "n": 7 }), None)
        .await
        .unwrap();
    let active = eventually("progress 42 while active", WAIT, || async {
        r.queue
            .get(&id)
            .await
            .unwrap()
            .filter(|j| j.state == JobState::Active && j.progress == 42)
    })
    .await;
    assert_eq!(active.attempts, 1);
    assert_eq!(active.name, "start");
    assert_eq!(r.queue.depth().await.unwrap().active, 1);

    gated.go.add_permits(1);
    let done = wait_state(&r.queue, &id, JobState::Completed).await;
    assert_eq!(done.result, Some(json!({ "echo": 7, "attempt": 1 })));
    assert_eq!(done.progress, 100);
    assert_eq!((done.attempts, done.max_attempts), (1, 3));
    assert_eq!(done.error, None);
    assert!(done.finished_at.is_some_and(|f| f >= done.created_at));

    // Acked and deleted from the stream, nothing left anywhere.
    let depth = r.queue.depth().await.unwrap();
    assert_eq!(
        (depth.waiting, depth.active, depth.delayed, depth.failed),
        (0, 0, 0, 0)
    );
    let len: u64 = redis.client.xlen("vnc:{jobs}").await.unwrap();
    assert_eq!(len, 0);
    let locks: i64 = redis
        .client
        .exists(format!("vnc:{{jobs}}:lock:{id}"))
        .await
        .unwrap();
    assert_eq!(locks, 0, "lock released");
    assert!(r.queue.get("no-such-job").await.unwrap().is_none());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completed_job_hash_gets_the_retention_ttl_and_expires() {
    let redis = RedisServer::start().await.unwrap();
    let cfg = QueueConfig {
        completed_retention: Duration::from_millis(800),
        ..config("a")
    };
    let r = Replica::start(&redis, cfg, handler(|_| async { Ok(json!(1)) })).await;
    let id = r.queue.enqueue("stop", json!({}), None).await.unwrap();
    wait_state(&r.queue, &id, JobState::Completed).await;
    let ttl = pttl(&redis, &format!("vnc:{{jobs}}:job:{id}")).await;
    assert!(ttl > 0 && ttl <= 800, "completed job TTL {ttl} ms");
    eventually("completed job hash expires", WAIT, || async {
        r.queue.get(&id).await.unwrap().is_none().then_some(())
    })
    .await;
    r.stop().await;
}

async fn retry_twice_then_success_goes_through_delayed(redis: RedisServer) {
    let base = Duration::from_millis(150);
    let cfg = QueueConfig {
        backoff_base: base,
        ..config("a")
    };
    let starts = Arc::new(Mutex::new(Vec::new()));
    let h = handler({
        let starts = starts.clone();
        move |job: Job| {
            starts.lock().unwrap().push(Instant::now());
            async move {
                if job.attempt < 3 {
                    Err(JobError::Retry(format!("not yet {}", job.attempt)))
                } else {
                    Ok(json!("finally"))
                }
            }
        }
    });
    let r = Replica::start(&redis, cfg, h).await;
    let id = r.queue.enqueue("start", json!({}), None).await.unwrap();

    // Watch the states closely enough to see each backoff (>= 150 ms each).
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    let done = loop {
        assert!(
            Instant::now() < deadline,
            "job never completed; saw {seen:?}"
        );
        let rec = r.queue.get(&id).await.unwrap().unwrap();
        if seen.last() != Some(&(rec.state, rec.attempts)) {
            seen.push((rec.state, rec.attempts));
        }
        if rec.state == JobState::Completed {
            break rec;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(seen.contains(&(JobState::Delayed, 1)), "{seen:?}");
    assert!(seen.contains(&(JobState::Delayed, 2)), "{seen:?}");
    assert_eq!(done.attempts, 3);
    assert_eq!(done.result, Some(json!("finally")));
    assert_eq!(done.error, None, "a success clears the last error");

    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 3);
    // Redis keeps whole milliseconds: allow one or two of rounding.
    let ms = Duration::from_millis(2);
    assert!(
        starts[1] - starts[0] >= base - ms,
        "first backoff is the base"
    );
    assert!(
        starts[2] - starts[1] >= base * 2 - ms,
        "second backoff doubles"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn always_retry_ends_failed_and_dead_lettered() {
    let redis = RedisServer::start().await.unwrap();
    let cfg = QueueConfig {
        failed_retention: Duration::from_secs(30),
        ..config("a")
    };
    let runs = Arc::new(AtomicU32::new(0));
    let h = handler({
        let runs = runs.clone();
        move |job: Job| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move { Err(JobError::Retry(format!("nope {}", job.attempt))) }
        }
    });
    let r = Replica::start(&redis, cfg, h).await;
    let id = r.queue.enqueue("start", json!({}), None).await.unwrap();

    let failed = wait_state(&r.queue, &id, JobState::Failed).await;
    assert_eq!(failed.attempts, 3);
    assert_eq!(failed.error.as_deref(), Some("nope 3"));
    assert!(failed.finished_at.is_some());
    assert_eq!(
        dead_letters(&redis).await,
        vec![(id.clone(), "nope 3".to_owned())]
    );
    let ttl = pttl(&redis, &format!("vnc:{{jobs}}:job:{id}")).await;
    assert!(ttl > 0 && ttl <= 30_000, "failed job TTL {ttl} ms");
    let depth = r.queue.depth().await.unwrap();
    assert_eq!((depth.failed, depth.delayed, depth.waiting), (1, 0, 0));
    r.stop().await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "no run after the last attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fatal_error_fails_at_once() {
    let redis = RedisServer::start().await.unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let h = handler({
        let runs = runs.clone();
        move |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            async { Err(JobError::Fatal("image does not exist".into())) }
        }
    });
    let r = Replica::start(&redis, config("a"), h).await;
    let id = r.queue.enqueue("start", json!({}), None).await.unwrap();
    let failed = wait_state(&r.queue, &id, JobState::Failed).await;
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.error.as_deref(), Some("image does not exist"));
    assert_eq!(
        dead_letters(&redis).await,
        vec![(id, "image does not exist".to_owned())]
    );
    r.stop().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_handler_is_a_failed_run_not_a_dead_worker() {
    let redis = RedisServer::start().await.unwrap();
    let h = handler(|job: Job| async move {
        if job.attempt == 1 {
            panic!("handler bug");
        }
        Ok(json!("second time lucky"))
    });
    let r = Replica::start(&redis, config("a"), h).await;
    let id = r.queue.enqueue("stop", json!({}), None).await.unwrap();
    let done = wait_state(&r.queue, &id, JobState::Completed).await;
    assert_eq!(done.attempts, 2);
    assert_eq!(done.result, Some(json!("second time lucky")));
    // The replica still works.
    let next = r.queue.enqueue("stop", json!({}), None).await.unwrap();
    wait_state(&r.queue, &next, JobState::Completed).await;
    r.stop().await;
}

async fn delayed_enqueue_runs_only_after_its_delay(redis: RedisServer) {
    let started = Arc::new(Mutex::new(None));
    let h = handler({
        let started = started.clone();
        move |_| {
            started.lock().unwrap().get_or_insert(Instant::now());
            async { Ok(json!(null)) }
        }
    });
    let r = Replica::start(&redis, config("a"), h).await;
    let delay = Duration::from_millis(700);
    let before = Instant::now();
    let id = r
        .queue
        .enqueue("stop", json!({}), Some(delay))
        .await
        .unwrap();
    let rec = r.queue.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Delayed);
    assert_eq!(r.queue.depth().await.unwrap().delayed, 1);

    wait_state(&r.queue, &id, JobState::Completed).await;
    let ran_at = started.lock().unwrap().expect("handler ran");
    // Due time is taken by Redis after `before`, so the start can't precede it
    // (but for Redis' whole-millisecond rounding).
    assert!(
        ran_at - before >= delay - Duration::from_millis(2),
        "ran after {:?}, before its delay",
        ran_at - before
    );
    r.stop().await;
}

/// Per job id: (running now, most running at once, runs), and jobs per replica.
#[derive(Default)]
struct Overlap {
    jobs: Mutex<HashMap<String, (u32, u32, u32)>>,
    by_replica: Mutex<HashMap<String, u32>>,
}

impl Overlap {
    fn enter(&self, id: &str, replica: &str) {
        let mut jobs = self.jobs.lock().unwrap();
        let e = jobs.entry(id.to_owned()).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
        e.2 += 1;
        *self
            .by_replica
            .lock()
            .unwrap()
            .entry(replica.to_owned())
            .or_default() += 1;
    }

    fn leave(&self, id: &str) {
        self.jobs.lock().unwrap().get_mut(id).unwrap().0 -= 1;
    }
}

fn overlap_handler(o: Arc<Overlap>, replica: &'static str, work: Duration) -> Arc<dyn JobHandler> {
    handler(move |job: Job| {
        let o = o.clone();
        async move {
            o.enter(&job.id, replica);
            tokio::time::sleep(work).await;
            o.leave(&job.id);
            Ok(json!(replica))
        }
    })
}

async fn two_replicas_share_work_and_never_run_a_job_twice_at_once(redis: RedisServer) {
    let o = Arc::new(Overlap::default());
    let cfg = |c| QueueConfig {
        concurrency: 3,
        ..config(c)
    };
    let a = Replica::start(
        &redis,
        cfg("a"),
        overlap_handler(o.clone(), "a", Duration::from_millis(50)),
    )
    .await;
    let b = Replica::start(
        &redis,
        cfg("b"),
        overlap_handler(o.clone(), "b", Duration::from_millis(50)),
    )
    .await;

    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(
            a.queue
                .enqueue("stop", json!({ "n": n }), None)
                .await
                .unwrap(),
        );
    }
    // One job delivered four times (as after lost acks): only one run may happen.
    let slow = a.queue.enqueue("slow", json!({}), None).await.unwrap();
    for _ in 0..3 {
        let _: String = redis
            .client
            .xadd("vnc:{jobs}", false, None, "*", ("id", slow.as_str()))
            .await
            .unwrap();
    }
    ids.push(slow.clone());

    for id in &ids {
        wait_state(&a.queue, id, JobState::Completed).await;
    }
    eventually("every duplicate delivery acked", WAIT, || async {
        let len: u64 = redis.client.xlen("vnc:{jobs}").await.unwrap();
        let depth = a.queue.depth().await.unwrap();
        (len == 0 && depth.active == 0).then_some(())
    })
    .await;

    let jobs = o.jobs.lock().unwrap().clone();
    for id in &ids {
        let (now, most, runs) = jobs[id];
        assert_eq!((now, most, runs), (0, 1, 1), "job {id}");
    }
    let by_replica = o.by_replica.lock().unwrap().clone();
    assert!(
        by_replica.get("a").is_some_and(|n| *n > 0) && by_replica.get("b").is_some_and(|n| *n > 0),
        "both replicas worked: {by_replica:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// Same as `overlap_handler` but the "slow" job takes longer than `reclaim_idle`.
fn slow_aware(o: Arc<Overlap>, replica: &'static str) -> Arc<dyn JobHandler> {
    handler(move |job: Job| {
        let o = o.clone();
        async move {
            o.enter(&job.id, replica);
            let work = if job.name == "slow" { 900 } else { 20 };
            tokio::time::sleep(Duration::from_millis(work)).await;
            o.leave(&job.id);
            Ok(json!(replica))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_job_is_not_taken_over_while_its_worker_lives() {
    let redis = RedisServer::start().await.unwrap();
    let o = Arc::new(Overlap::default());
    let a = Replica::start(&redis, config("a"), slow_aware(o.clone(), "a")).await;
    let b = Replica::start(&redis, config("b"), slow_aware(o.clone(), "b")).await;
    // 900 ms of work is three times reclaim_idle: the heartbeat must keep it.
    let slow = a.queue.enqueue("slow", json!({}), None).await.unwrap();
    for _ in 0..2 {
        let _: String = redis
            .client
            .xadd("vnc:{jobs}", false, None, "*", ("id", slow.as_str()))
            .await
            .unwrap();
    }
    let done = wait_state(&a.queue, &slow, JobState::Completed).await;
    assert_eq!(done.attempts, 1, "never started twice");
    eventually("duplicates acked", WAIT, || async {
        let len: u64 = redis.client.xlen("vnc:{jobs}").await.unwrap();
        (len == 0).then_some(())
    })
    .await;
    assert_eq!(o.jobs.lock().unwrap()[&slow], (0, 1, 1));
    a.stop().await;
    b.stop().await;
}

/// The job is rate-limited (one start an hour): a reclaimed run of a dispatched job
/// needs no second slot.
async fn a_dead_replicas_job_is_reclaimed_and_completed_by_another(redis: RedisServer) {
    let config = |c| QueueConfig {
        rate_limits: vec![("start".to_owned(), 1, Duration::from_secs(3600))],
        ..config(c)
    };
    let started = Arc::new(tokio::sync::Notify::new());
    let stuck = handler({
        let started = started.clone();
        move |_| {
            started.notify_one();
            std::future::pending()
        }
    });
    let a = Replica::start(&redis, config("a"), stuck).await;
    let id = a
        .queue
        .enqueue_in("t1", "start", json!({}), None)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, started.notified())
        .await
        .expect("replica a started the job");

    // Replica a dies mid-job: no ack, no more heartbeats.
    a.task.abort();
    let _ = a.task.await;
    let rec = a.queue.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Active);

    let b = Replica::start(
        &redis,
        config("b"),
        handler(|job: Job| async move { Ok(json!({ "by": "b", "attempt": job.attempt })) }),
    )
    .await;
    let done = wait_state(&b.queue, &id, JobState::Completed).await;
    assert_eq!(done.result, Some(json!({ "by": "b", "attempt": 2 })));
    assert_eq!(done.attempts, 2, "the lost run counts");
    let len: u64 = redis.client.xlen("vnc:{jobs}").await.unwrap();
    assert_eq!(len, 0);
    b.stop().await;
}

async fn rate_limit_holds_across_replicas(redis: RedisServer) {
    let window = Duration::from_secs(1);
    let cfg = |c| QueueConfig {
        rate_limits: vec![("start".to_owned(), 3, window)],
        ..config(c)
    };
    let starts = Arc::new(Mutex::new(Vec::new()));
    let h = || {
        let starts = starts.clone();
        handler(move |job: Job| {
            if job.name == "start" {
                starts.lock().unwrap().push(Instant::now());
            }
            async { Ok(json!(null)) }
        })
    };
    let a = Replica::start(&redis, cfg("a"), h()).await;
    let b = Replica::start(&redis, cfg("b"), h()).await;

    let mut ids = Vec::new();
    for n in 0..9 {
        let q = if n % 2 == 0 { &a.queue } else { &b.queue };
        ids.push(q.enqueue("start", json!({ "n": n }), None).await.unwrap());
    }
    // Names without a limit are not held back.
    let free = a.queue.enqueue("stop", json!({}), None).await.unwrap();
    wait_state(&a.queue, &free, JobState::Completed).await;

    for id in &ids {
        let done = wait_state(&a.queue, id, JobState::Completed).await;
        assert_eq!(done.attempts, 1, "waiting for the limit costs no attempt");
    }
    let mut starts = starts.lock().unwrap().clone();
    starts.sort();
    assert_eq!(starts.len(), 9);
    // No window saw more than 3 starts. Admission happens in Redis a moment before
    // the handler starts, so allow a little jitter between the two.
    let slack = Duration::from_millis(200);
    for w in starts.windows(4) {
        assert!(
            w[3] - w[0] >= window - slack,
            "4 starts within {:?}",
            w[3] - w[0]
        );
    }
    assert!(starts[8] - starts[0] >= window * 2 - slack);
    a.stop().await;
    b.stop().await;
}

/// Jobs of a rate-limited name take its slots by group in turn, a group that just
/// joined before the one served last, whatever order they were queued in.
async fn groups_take_rate_slots_in_turn(redis: RedisServer) {
    let cfg = QueueConfig {
        rate_limits: vec![("start".to_owned(), 1, Duration::from_millis(150))],
        ..config("a")
    };
    let q = queue(&redis, cfg.clone()).await;
    let mut group_of = HashMap::new();
    for group in ["a", "a", "a", "a", "a", "a", "b", "b", "c"] {
        let id = q.enqueue_in(group, "start", json!({}), None).await.unwrap();
        group_of.insert(id, group);
    }
    let order = Arc::new(Mutex::new(Vec::new()));
    let h = {
        let order = order.clone();
        handler(move |job: Job| {
            order.lock().unwrap().push(job.id);
            async { Ok(json!(null)) }
        })
    };
    let r = Replica::start(&redis, cfg, h).await;
    for id in group_of.keys() {
        let done = wait_state(&r.queue, id, JobState::Completed).await;
        assert_eq!(done.attempts, 1);
    }
    let served: Vec<&str> = order
        .lock()
        .unwrap()
        .iter()
        .map(|id| group_of[id])
        .collect();
    assert_eq!(served, ["a", "b", "c", "a", "b", "a", "a", "a", "a"]);
    // Nothing keyed by group is left behind.
    let left: u64 = redis
        .client
        .exists(vec![
            "vnc:{jobs}:ring:start",
            "vnc:{jobs}:served:start",
            "vnc:{jobs}:group:start:a",
            "vnc:{jobs}:group:start:b",
            "vnc:{jobs}:group:start:c",
        ])
        .await
        .unwrap();
    assert_eq!(left, 0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_per_replica_is_never_exceeded() {
    let redis = RedisServer::start().await.unwrap();
    let running: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let most: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let h = |i: usize| {
        let (running, most) = (running.clone(), most.clone());
        handler(move |_| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running[i].fetch_add(1, Ordering::SeqCst) + 1;
                most[i].fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(60)).await;
                running[i].fetch_sub(1, Ordering::SeqCst);
                Ok(json!(null))
            }
        })
    };
    let cfg = |c| QueueConfig {
        concurrency: 2,
        ..config(c)
    };
    let a = Replica::start(&redis, cfg("a"), h(0)).await;
    let b = Replica::start(&redis, cfg("b"), h(1)).await;
    let mut ids = Vec::new();
    for n in 0..16 {
        ids.push(
            a.queue
                .enqueue("stop", json!({ "n": n }), None)
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        wait_state(&a.queue, id, JobState::Completed).await;
    }
    let (ma, mb) = (
        most[0].load(Ordering::SeqCst),
        most[1].load(Ordering::SeqCst),
    );
    assert!(ma <= 2 && mb <= 2, "most at once: a {ma}, b {mb}");
    assert!(ma == 2 || mb == 2, "the bound was reached: a {ma}, b {mb}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_waits_for_running_jobs() {
    let redis = RedisServer::start().await.unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let h = handler({
        let started = started.clone();
        move |_| {
            started.notify_one();
            async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok(json!("drained"))
            }
        }
    });
    let r = Replica::start(&redis, config("a"), h).await;
    let id = r.queue.enqueue("stop", json!({}), None).await.unwrap();
    tokio::time::timeout(WAIT, started.notified())
        .await
        .unwrap();
    let q = r.queue.clone();
    r.stop().await;
    // `run` returned only after the job finished.
    let rec = q.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Completed);
    assert_eq!(rec.result, Some(json!("drained")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_outliving_the_drain_deadline_is_put_back_for_another_replica() {
    let redis = RedisServer::start().await.unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let stuck = handler({
        let started = started.clone();
        move |_| {
            started.notify_one();
            std::future::pending()
        }
    });
    let cfg = QueueConfig {
        drain_timeout: Duration::from_millis(200),
        ..config("a")
    };
    let a = Replica::start(&redis, cfg, stuck).await;
    let id = a.queue.enqueue("stop", json!({}), None).await.unwrap();
    tokio::time::timeout(WAIT, started.notified())
        .await
        .unwrap();
    let t = Instant::now();
    let q = a.queue.clone();
    a.stop().await;
    assert!(t.elapsed() < Duration::from_secs(3), "bounded drain");
    let rec = q.get(&id).await.unwrap().unwrap();
    assert!(
        matches!(rec.state, JobState::Delayed | JobState::Waiting),
        "{rec:?}"
    );
    assert_eq!(
        rec.attempts, 0,
        "a run cut short by shutdown is not counted"
    );

    let b = Replica::start(&redis, config("b"), handler(|_| async { Ok(json!("b")) })).await;
    let done = wait_state(&b.queue, &id, JobState::Completed).await;
    assert_eq!((done.attempts, done.result), (1, Some(json!("b"))));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueue_fails_when_redis_is_gone() {
    let redis = RedisServer::start().await.unwrap();
    // Refuse while disconnected, and give up on a command quickly, so the test is
    // short; the queue bounds every call itself anyway.
    let mut cfg = Config::from_url(&redis.url()).unwrap();
    cfg.fail_fast = true;
    let c = Builder::from_config(cfg)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_millis(500))
        .build()
        .unwrap();
    c.init().await.unwrap();
    let q = Queue::new(c, Keys::default(), config("a"));
    q.enqueue("stop", json!({}), None).await.unwrap();
    drop(redis);
    let t = Instant::now();
    let r = q.enqueue("stop", json!({}), None).await;
    assert!(r.is_err(), "{r:?}");
    assert!(q.get("x").await.is_err());
    // Never longer than the queue's own command timeout, whatever the client does.
    assert!(t.elapsed() <= vnc_control::infra::queue::COMMAND_TIMEOUT * 2 + Duration::from_secs(1));
}

#[tokio::test]
async fn invalid_jobs_are_refused_before_redis() {
    let redis = RedisServer::start().await.unwrap();
    let q = queue(&redis, config("a")).await;
    assert!(q.enqueue("", json!({}), None).await.is_err());
    let big = "x".repeat(vnc_control::infra::queue::MAX_JOB_DATA_BYTES + 1);
    assert!(q.enqueue("start", json!(big), None).await.is_err());
    let len: u64 = redis.client.xlen("vnc:{jobs}").await.unwrap();
    assert_eq!(len, 0);
}

/// The queue behind Redis Sentinel, on control's own client
/// (`vnc_control::infra::redis::client`), across a failover: the primary is killed
/// while job `held` runs (after the replica has every write so far) and the
/// sentinels promote the replica. The run keeps its lock (it lives `reclaim_idle`,
/// longer than the failover) and completes once the new primary answers; a job that
/// completed before the failover is not run again; a job enqueued from the kill on,
/// retried until the queue acknowledges it (which only the new primary can), runs
/// exactly once. Nothing is left to run: the stream and the pending list are empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_run_once_across_a_sentinel_failover() {
    use vnc_tests::sentinel::{FAILOVER_WITHIN, Sentinel};

    let mut sentinel = Sentinel::start().await.unwrap();
    let client = vnc_control::infra::redis::client(&sentinel.url()).unwrap();
    vnc_shared::redis::keep_connecting(client.clone());
    tokio::time::timeout(WAIT, client.wait_for_connect())
        .await
        .expect("connected through the sentinels")
        .unwrap();
    let cfg = QueueConfig {
        // Control's default: a run keeps its lock through a failover of seconds.
        reclaim_idle: vnc_control::infra::queue::DEFAULT_RECLAIM_IDLE,
        ..config("a")
    };
    let queue = Queue::new(client, Keys::default(), cfg);
    let runs = Arc::new(Mutex::new(Vec::<(String, String, u32)>::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let h = handler({
        let (runs, gate) = (runs.clone(), gate.clone());
        move |job: Job| {
            runs.lock()
                .unwrap()
                .push((job.name.clone(), job.id.clone(), job.attempt));
            let gate = gate.clone();
            async move {
                if job.name == "held" {
                    let _go = gate.acquire().await.unwrap();
                }
                Ok(json!(job.name))
            }
        }
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (queue, shutdown) = (queue.clone(), shutdown.clone());
        async move { queue.run(h, shutdown).await }
    });

    let done_before = queue.enqueue("before", json!({}), None).await.unwrap();
    wait_state(&queue, &done_before, JobState::Completed).await;
    let held = queue.enqueue("held", json!({}), None).await.unwrap();
    wait_state(&queue, &held, JobState::Active).await;
    sentinel.sync_replica().await.unwrap();

    let old = sentinel.kill_primary().await.unwrap();
    let after = eventually(
        "an enqueue to be acknowledged",
        FAILOVER_WITHIN + WAIT,
        || async { queue.enqueue("after", json!({}), None).await.ok() },
    )
    .await;
    assert_ne!(sentinel.wait_failover(old).await, old);
    gate.add_permits(1);

    for (id, name) in [(&held, "held"), (&after, "after"), (&done_before, "before")] {
        let done = wait_state(&queue, id, JobState::Completed).await;
        assert_eq!(done.result, Some(json!(name)));
        assert_eq!(done.attempts, 1, "{name}: one attempt");
    }
    let depth = queue.depth().await.unwrap();
    assert_eq!(
        (depth.waiting, depth.active, depth.delayed, depth.failed),
        (0, 0, 0, 0)
    );
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let mut ran = runs.lock().unwrap().clone();
    ran.sort();
    let expected = {
        let mut e = vec![
            ("after".to_owned(), after.clone(), 1),
            ("before".to_owned(), done_before.clone(), 1),
            ("held".to_owned(), held.clone(), 1),
        ];
        e.sort();
        e
    };
    assert_eq!(ran, expected, "each job ran exactly once");
}

// The queue on one Redis server and again on a 6-node Redis Cluster (its keys share one
// hash slot).
vnc_tests::on_every_redis!(
    enqueued_job_runs_to_completed_with_result_and_progress,
    retry_twice_then_success_goes_through_delayed,
    delayed_enqueue_runs_only_after_its_delay,
    two_replicas_share_work_and_never_run_a_job_twice_at_once,
    a_dead_replicas_job_is_reclaimed_and_completed_by_another,
    rate_limit_holds_across_replicas,
    groups_take_rate_slots_in_turn,
);
