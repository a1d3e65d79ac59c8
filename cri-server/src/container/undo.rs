//! An undo stack for multi-step operations (CreateContainer): every step that changed
//! something registers how to take the change back; on failure the steps are undone in
//! reverse order, on success the stack is dismissed. Undo actions never fail the
//! operation: they log what they could not undo (recovery at the next start removes
//! leftovers that have no record).

use std::future::Future;
use std::pin::Pin;

type UndoAction = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Steps to take back, most recent last. Must be consumed with [`Undo::run`] or
/// [`Undo::dismiss`]; dropping it with actions left logs a warning (a bug: nothing is undone).
#[derive(Default)]
pub struct Undo {
    what: String,
    actions: Vec<(&'static str, UndoAction)>,
}

impl Undo {
    /// `what` names the operation in logs ("create container <id>").
    pub fn new(what: impl Into<String>) -> Self {
        Undo { what: what.into(), actions: Vec::new() }
    }

    /// Registers an undo action named `step`.
    pub fn push<F>(&mut self, step: &'static str, action: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.actions.push((step, Box::pin(action)));
    }

    /// Registers a blocking undo action (file system work), run on the blocking pool.
    pub fn push_blocking<F>(&mut self, step: &'static str, action: F)
    where
        F: FnOnce() + Send + 'static,
    {
        self.push(step, async move {
            if let Err(e) = tokio::task::spawn_blocking(action).await {
                tracing::error!(step, error = %e, "undo step panicked");
            }
        });
    }

    /// The operation failed: undo every registered step, newest first.
    pub async fn run(mut self) {
        let actions = std::mem::take(&mut self.actions);
        for (step, action) in actions.into_iter().rev() {
            tracing::debug!(operation = %self.what, step, "undoing");
            action.await;
        }
    }

    /// The operation succeeded: keep everything.
    pub fn dismiss(mut self) {
        self.actions.clear();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.actions.is_empty() {
            let steps: Vec<&str> = self.actions.iter().map(|(step, _)| *step).collect();
            tracing::warn!(operation = %self.what, ?steps, "undo stack dropped without running or dismissing it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn runs_newest_first_and_dismiss_keeps() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut undo = Undo::new("test");
        for i in 0..3 {
            let order = order.clone();
            undo.push("step", async move { order.lock().unwrap().push(i) });
        }
        let order2 = order.clone();
        undo.push_blocking("blocking", move || order2.lock().unwrap().push(9));
        undo.run().await;
        assert_eq!(*order.lock().unwrap(), vec![9, 2, 1, 0]);

        let order = Arc::new(Mutex::new(Vec::new()));
        let mut undo = Undo::new("test");
        let o = order.clone();
        undo.push("step", async move { o.lock().unwrap().push(1) });
        undo.dismiss();
        assert!(order.lock().unwrap().is_empty());
    }
}
