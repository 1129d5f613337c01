//! What is made from one commit, by (commit, applications, profiles): assembled
//! environments, and the JSON answers made of them. A commit never changes, so an entry
//! never goes stale; labels are still resolved on every request. Bounded, the oldest entry
//! leaving first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

type Key = (String, Vec<String>, Vec<String>);
/// The entries, and their keys oldest first.
type Entries<V> = (HashMap<Key, V>, VecDeque<Key>);

pub struct Cache<V> {
    capacity: usize,
    entries: Mutex<Entries<V>>,
}

impl<V: Clone> Cache<V> {
    /// `capacity` 0: nothing is kept.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, commit: &str, applications: &[String], profiles: &[String]) -> Option<V> {
        if self.capacity == 0 {
            return None;
        }
        let key = (commit.to_owned(), applications.to_vec(), profiles.to_vec());
        self.lock().0.get(&key).cloned()
    }

    pub fn put(&self, commit: &str, applications: &[String], profiles: &[String], value: V) {
        if self.capacity == 0 {
            return;
        }
        let key = (commit.to_owned(), applications.to_vec(), profiles.to_vec());
        let mut guard = self.lock();
        let (map, order) = &mut *guard;
        if map.insert(key.clone(), value).is_none() {
            order.push_back(key);
        }
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::Environment;
    use std::sync::Arc;

    fn env(v: &str) -> Arc<Environment> {
        Arc::new(Environment {
            name: "a".into(),
            profiles: vec![],
            label: None,
            version: Some(v.into()),
            state: None,
            property_sources: vec![],
        })
    }

    #[test]
    fn the_oldest_entry_leaves_first() {
        let cache = Cache::new(2);
        let a = vec!["foo".to_owned()];
        cache.put("1", &a, &a, env("1"));
        cache.put("2", &a, &a, env("2"));
        cache.put("3", &a, &a, env("3"));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("1", &a, &a).is_none());
        assert!(cache.get("3", &a, &a).is_some());
        let off = Cache::<Arc<Environment>>::new(0);
        off.put("1", &a, &a, env("1"));
        assert!(off.get("1", &a, &a).is_none());
    }
}
