//! Borrow/return throughput of one `SendStreamPool` under 100 concurrent tasks,
//! against a plain `tokio::sync::Mutex<Vec<_>>` of streams as the baseline measured in
//! the same run.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::BoxFuture;
use liquid_p2p_core::{ConnectionId, Error, PeerId, PoolConfig, SendStreamPool, StreamOpener};

const TASKS: usize = 100;
const ROUNDS: usize = 100;

struct Opener;

impl StreamOpener for Opener {
    type Stream = u64;
    fn open(&self) -> BoxFuture<'static, Result<u64, Error>> {
        Box::pin(async { Ok(0) })
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
    let mut group = c.benchmark_group("borrow_return_100_tasks");
    group.throughput(Throughput::Elements((TASKS * ROUNDS) as u64));
    group.bench_function("send_stream_pool", |b| {
        b.to_async(&rt).iter(|| {
            let pool = Arc::clone(&pool);
            async move {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let pool = Arc::clone(&pool);
                        tokio::spawn(async move {
                            for _ in 0..ROUNDS {
                                let mut s = pool.borrow().await.expect("borrow");
                                *s.get_mut() += 1;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            }
        })
    });
    let baseline = Arc::new(tokio::sync::Mutex::new((0..100u64).collect::<Vec<_>>()));
    group.bench_function("mutex_vec_baseline", |b| {
        b.to_async(&rt).iter(|| {
            let baseline = Arc::clone(&baseline);
            async move {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let baseline = Arc::clone(&baseline);
                        tokio::spawn(async move {
                            for _ in 0..ROUNDS {
                                let s = baseline.lock().await.pop();
                                if let Some(s) = s {
                                    baseline.lock().await.push(s + 1);
                                }
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, pool_borrow_return);
criterion_main!(benches);
