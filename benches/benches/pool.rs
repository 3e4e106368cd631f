//! Borrow/return throughput of one `SendStreamPool` from 1 task and from 100
//! concurrent tasks, against a plain `tokio::sync::Mutex<Vec<_>>` of streams as the
//! baseline measured in the same run.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::future::BoxFuture;
use liquid_p2p_core::{ConnectionId, Error, PeerId, PoolConfig, SendStreamPool, StreamOpener};

/// Borrow/return rounds per task in one iteration.
const ROUNDS: usize = 100;

struct Opener;

impl StreamOpener for Opener {
    type Stream = u64;
    fn open(&self) -> BoxFuture<'static, Result<u64, Error>> {
        Box::pin(async { Ok(0) })
    }
}

/// Runs `round` `ROUNDS` times in each of `tasks` spawned tasks.
async fn in_tasks<F, Fut>(tasks: usize, round: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let round = round.clone();
            tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    round().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
}

fn pool_borrow_return(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let pool = rt.block_on(async {
        let pool = SendStreamPool::new(
            PeerId::random(),
            ConnectionId::new_unchecked(1),
            Opener,
            PoolConfig::default(),
        );
        pool.init();
        // Fill the pool to its cap so the measurement sees steady state.
        let held: Vec<_> = futures::future::join_all((0..100).map(|_| pool.borrow())).await;
        drop(held);
        pool
    });
    let baseline = Arc::new(tokio::sync::Mutex::new((0..100u64).collect::<Vec<_>>()));
    let mut group = c.benchmark_group("borrow_return");
    for tasks in [1, 100] {
        group.throughput(Throughput::Elements((tasks * ROUNDS) as u64));
        let pool = Arc::clone(&pool);
        group.bench_with_input(
            BenchmarkId::new("send_stream_pool", tasks),
            &tasks,
            |b, &tasks| {
                b.to_async(&rt).iter(|| {
                    let pool = Arc::clone(&pool);
                    in_tasks(tasks, move || {
                        let pool = Arc::clone(&pool);
                        async move {
                            let mut s = pool.borrow().await.expect("borrow");
                            let mut write = s.begin_write();
                            *write.stream() += 1;
                            write.finish();
                        }
                    })
                })
            },
        );
        let baseline = Arc::clone(&baseline);
        group.bench_with_input(
            BenchmarkId::new("mutex_vec_baseline", tasks),
            &tasks,
            |b, &tasks| {
                b.to_async(&rt).iter(|| {
                    let baseline = Arc::clone(&baseline);
                    in_tasks(tasks, move || {
                        let baseline = Arc::clone(&baseline);
                        async move {
                            let s = baseline.lock().await.pop();
                            if let Some(s) = s {
                                baseline.lock().await.push(s + 1);
                            }
                        }
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, pool_borrow_return);
criterion_main!(benches);
