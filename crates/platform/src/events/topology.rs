//! The durable queues, declared by every service that talks to the broker (declaring is
//! idempotent), so an event published before its consumer first starts waits for it.
//! Each queue has a dead-letter queue `<name>.dlq`.

#[derive(Debug, Clone, Copy)]
pub struct QueueSpec {
    pub name: &'static str,
    pub bindings: &'static [&'static str],
    /// A PromptFlow service consumes it, so in process an event bound here is not
    /// delivered until that consumer runs and has handled it.
    pub consumed: bool,
    /// Queues kept for consumers outside PromptFlow (the seed's names) hold at most this
    /// many events, the oldest dropped first, so they cannot grow without bound when no one
    /// reads them.
    pub max_length: Option<u32>,
}

pub const QUEUES: &[QueueSpec] = &[
    QueueSpec {
        name: "user.registered.queue",
        bindings: &["user.registered"],
        consumed: true,
        max_length: None,
    },
    QueueSpec {
        name: "user.deleted.queue",
        bindings: &["user.deleted"],
        consumed: true,
        max_length: None,
    },
    QueueSpec {
        name: "user.saga.queue",
        bindings: &["library.*"],
        consumed: true,
        max_length: None,
    },
    QueueSpec {
        name: "prompt.created.queue",
        bindings: &["prompt.created"],
        consumed: false,
        max_length: Some(100_000),
    },
    QueueSpec {
        name: "data.sync.queue",
        bindings: &["data.sync"],
        consumed: false,
        max_length: Some(100_000),
    },
];

/// The exchange dead letters go to, routed by their queue's name.
pub fn dead_letter_exchange(exchange: &str) -> String {
    format!("{exchange}.dlx")
}

pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

pub fn spec(queue: &str) -> Option<&'static QueueSpec> {
    QUEUES.iter().find(|q| q.name == queue)
}
