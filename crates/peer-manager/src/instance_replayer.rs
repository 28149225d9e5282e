//! The instance replayer (stock `InstanceReplayer`): the image replayer tasks this daemon
//! runs for one namespace of a pool and peer, started and stopped by the namespace replayer. Each task has a
//! child cancellation token and reports in the state registry; stopping one cancels it
//! (it commits its position) and hands back its join handle.

use std::collections::HashMap;
use std::sync::Arc;

use image_replayer::{ImageKey, PeerContext, Registry};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running image replayers of one namespace replayer.
#[derive(Debug)]
pub(crate) struct InstanceReplayer {
    ctx: Arc<PeerContext>,
    registry: Registry,
    /// Per image (global id): its replayer's cancellation token and task.
    images: HashMap<String, (CancellationToken, JoinHandle<()>)>,
}

impl InstanceReplayer {
    /// No image replayer yet, for the pool, namespace and peer of `ctx`.
    pub(crate) fn new(ctx: Arc<PeerContext>, registry: Registry) -> Self {
        InstanceReplayer { ctx, registry, images: HashMap::new() }
    }

    fn key(&self, global_id: &str) -> ImageKey {
        ImageKey::new(&self.ctx.pool, &self.ctx.namespace, global_id)
    }

    /// Whether image `global_id` has a replayer.
    pub(crate) fn contains(&self, global_id: &str) -> bool {
        self.images.contains_key(global_id)
    }

    /// The images with a replayer.
    pub(crate) fn global_ids(&self) -> impl Iterator<Item = &String> {
        self.images.keys()
    }

    /// How many images have a replayer.
    pub(crate) fn len(&self) -> usize {
        self.images.len()
    }

    /// Starts the replayer of image `global_id` (image id `remote_image_id` on the peer),
    /// cancelled with `parent`.
    pub(crate) fn start(&mut self, global_id: &str, remote_image_id: String, parent: &CancellationToken) {
        let token = parent.child_token();
        let image = self.registry.image(self.key(global_id));
        // The image's span is a child of the namespace replayer's (pool, peer, namespace).
        let task = image_replayer::spawn(self.ctx.clone(), remote_image_id, image, token.clone());
        self.images.insert(global_id.to_owned(), (token, task));
    }

    /// Stops the replayer of image `global_id` (it commits its position and returns) and
    /// forgets it; its task is handed back to be awaited.
    pub(crate) fn stop(&mut self, global_id: &str) -> Option<JoinHandle<()>> {
        let (token, task) = self.images.remove(global_id)?;
        token.cancel();
        self.registry.remove_image(&self.key(global_id));
        Some(task)
    }

    /// Waits for every replayer to stop (their tokens are children of the namespace
    /// replayer's, already cancelled at shutdown).
    pub(crate) async fn shut_down(self) {
        for (global_id, (_, task)) in self.images {
            let _ = task.await;
            self.registry.remove_image(&ImageKey::new(&self.ctx.pool, &self.ctx.namespace, &global_id));
        }
    }
}
