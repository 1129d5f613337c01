//! Settings that change while services run: feature switches, and a signal that the
//! settings were read again (config-service announced a change), for services that apply
//! their own part live (the gateway's routes and limits).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

/// The feature switches PromptFlow's services read (`features:` in the settings).
pub mod features {
    /// user-service: new accounts may be registered (off: `POST /api/auth/register` is
    /// refused with a `registration-closed` problem; existing accounts are untouched).
    pub const REGISTRATION: &str = "registration";
}

/// Cheap to clone; every clone sees the same switches.
#[derive(Clone, Debug)]
pub struct Live {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    features: RwLock<BTreeMap<String, bool>>,
    /// How many times the settings were read again.
    generation: watch::Sender<u64>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                features: RwLock::default(),
                generation: watch::Sender::new(0),
            }),
        }
    }
}

impl Live {
    /// Is the switch `name` on? `default` when the settings do not name it.
    pub fn feature(&self, name: &str, default: bool) -> bool {
        self.inner
            .features
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .copied()
            .unwrap_or(default)
    }

    pub fn set_features(&self, features: BTreeMap<String, bool>) {
        *self
            .inner
            .features
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = features;
    }

    /// Tells every subscriber that the settings were read again.
    pub fn announce(&self) {
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// Wakes (`changed()`) after each [`Live::announce`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn switches_and_announcements_reach_every_clone() {
        let live = Live::default();
        let other = live.clone();
        let mut changes = other.subscribe();
        assert!(
            other.feature(features::REGISTRATION, true),
            "unnamed: the default"
        );
        live.set_features([(features::REGISTRATION.to_owned(), false)].into());
        assert!(!other.feature(features::REGISTRATION, true));
        live.announce();
        tokio::time::timeout(std::time::Duration::from_secs(1), changes.changed())
            .await
            .expect("announced")
            .expect("sender alive");
        assert_eq!(*changes.borrow(), 1);
    }
}
