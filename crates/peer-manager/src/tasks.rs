//! A keyed set of replayer tasks: the pool replayers `mirror` runs (one per pool and peer)
//! and the namespace replayers a pool replayer runs (one per namespace). Each task has its
//! own cancellation token; a stopped task is cancelled and kept until it has finished, so
//! that the caller can hold back a new task of the same key (whose registry entries the old
//! one removes as it ends) until then. Shutting down cancels and awaits them all.

use std::collections::BTreeMap;
use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Running and stopping tasks, by key.
#[derive(Debug)]
pub(crate) struct Tasks<K> {
    running: BTreeMap<K, (CancellationToken, JoinHandle<()>)>,
    stopping: Vec<(K, JoinHandle<()>)>,
}

impl<K: Ord + Clone> Tasks<K> {
    /// No task.
    pub(crate) fn new() -> Self {
        Tasks { running: BTreeMap::new(), stopping: Vec::new() }
    }

    /// The keys of the running tasks.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.running.keys()
    }

    /// Whether a task of key `key` runs.
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.running.contains_key(key)
    }

    /// How many tasks run.
    pub(crate) fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether a stopped task whose key `matches` has not finished yet.
    pub(crate) fn is_stopping(&mut self, matches: impl Fn(&K) -> bool) -> bool {
        self.stopping.retain(|(_, task)| !task.is_finished());
        self.stopping.iter().any(|(k, _)| matches(k))
    }

    /// Spawns `task` under `key`; it is to stop when `token` is cancelled.
    pub(crate) fn start(
        &mut self,
        key: K,
        token: CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let handle = tokio::spawn(task);
        if let Some((old_token, old)) = self.running.insert(key.clone(), (token, handle)) {
            old_token.cancel();
            self.stopping.push((key, old));
        }
    }

    /// Cancels the task of `key`; it finishes on its own (see [`Tasks::is_stopping`]).
    pub(crate) fn stop(&mut self, key: &K) {
        if let Some((token, task)) = self.running.remove(key) {
            token.cancel();
            self.stopping.push((key.clone(), task));
        }
    }

    /// Cancels every task and waits for all of them (and those stopping) to finish.
    pub(crate) async fn shut_down(self) {
        for (token, _) in self.running.values() {
            token.cancel();
        }
        for (_, task) in self.running.into_values() {
            let _ = task.await;
        }
        for (_, task) in self.stopping {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stopped_task_is_stopping_until_it_has_finished() {
        let mut tasks = Tasks::new();
        let token = CancellationToken::new();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let t = token.clone();
        tasks.start("a", token, async move {
            t.cancelled().await;
            // Finishing takes a while (a replayer commits its position).
            let _ = done_rx.await;
        });
        assert!(tasks.contains(&"a"));
        tasks.stop(&"a");
        assert!(!tasks.contains(&"a"));
        assert!(tasks.is_stopping(|k| *k == "a"));
        done_tx.send(()).expect("task waits");
        tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.is_stopping(|k| *k == "a") {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the stopped task finishes");
        tasks.shut_down().await;
    }

    #[tokio::test]
    async fn shut_down_cancels_and_awaits_every_task() {
        let mut tasks = Tasks::new();
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for key in ["a", "b"] {
            let token = CancellationToken::new();
            let (t, f) = (token.clone(), finished.clone());
            tasks.start(key, token, async move {
                t.cancelled().await;
                f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        assert_eq!(tasks.len(), 2);
        tasks.shut_down().await;
        assert_eq!(finished.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
