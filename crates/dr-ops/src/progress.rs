//! What a DR command tells its caller while it runs: how many images it works on, each
//! image's steps (an action, a wait starting, a wait going on) and when an image is finished
//! with. The binary prints them (plain lines; on a terminal, a bar and the waits on one status
//! line); the library only reports. A closure `Fn(image, message)` is a [`Progress`] that
//! hears the steps only.

use std::future::Future;

use futures::stream::{self, StreamExt};

/// The listener of a DR command's progress.
pub trait Progress: Sync {
    /// The command works on `count` images (again for each phase: `failback` switches the
    /// resynced ones back as a `failover` of its own).
    fn images(&self, count: usize) {
        let _ = count;
    }
    /// A step of `image`: `waiting ...` starts a wait, `waiting (N s): ...` reports one going
    /// on, anything else is an action (and ends a wait).
    fn step(&self, image: &str, message: &str);
    /// `image` is finished with, whatever its outcome.
    fn finished(&self, image: &str) {
        let _ = image;
    }
}

impl<F: Fn(&str, &str) + Sync> Progress for F {
    fn step(&self, image: &str, message: &str) {
        self(image, message)
    }
}

/// Runs `one` on each of `items` (named by `name`), `concurrency` at once, telling `progress`
/// how many there are and when each is finished; the results in the order they finished.
pub(crate) async fn each<I, T, Fut>(
    items: Vec<I>,
    concurrency: usize,
    progress: &dyn Progress,
    name: impl Fn(&I) -> String,
    one: impl Fn(I) -> Fut,
) -> Vec<T>
where
    Fut: Future<Output = T>,
{
    progress.images(items.len());
    stream::iter(items)
        .map(|item| {
            let image = name(&item);
            let work = one(item);
            async move {
                let out = work.await;
                progress.finished(&image);
                out
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl Progress for Seen {
        fn images(&self, count: usize) {
            self.0.lock().unwrap().push(format!("images {count}"));
        }
        fn step(&self, image: &str, message: &str) {
            self.0.lock().unwrap().push(format!("{image}: {message}"));
        }
        fn finished(&self, image: &str) {
            self.0.lock().unwrap().push(format!("{image} finished"));
        }
    }

    #[tokio::test]
    async fn each_tells_the_count_and_every_image_finished() {
        let seen = Seen::default();
        let out = each(
            vec![1, 2, 3],
            2,
            &seen,
            |i| format!("img{i}"),
            |i| {
                let seen = &seen;
                async move {
                    seen.step(&format!("img{i}"), "working");
                    i * 10
                }
            },
        )
        .await;
        let mut out = out;
        out.sort_unstable();
        assert_eq!(out, [10, 20, 30]);
        let seen = seen.0.into_inner().unwrap();
        assert_eq!(seen[0], "images 3");
        for i in 1..=3 {
            let step = seen.iter().position(|s| *s == format!("img{i}: working")).unwrap();
            let done = seen.iter().position(|s| *s == format!("img{i} finished")).unwrap();
            assert!(step < done, "{seen:?}");
        }
    }

    #[test]
    fn a_closure_hears_the_steps() {
        let lines = Mutex::new(Vec::new());
        let p = |image: &str, message: &str| lines.lock().unwrap().push(format!("{image}: {message}"));
        let progress: &dyn Progress = &p;
        progress.images(2);
        progress.step("a", "promoting here");
        progress.finished("a");
        assert_eq!(lines.into_inner().unwrap(), ["a: promoting here"]);
    }
}
