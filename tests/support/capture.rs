//! A `tracing` layer for the diagnostics tests: sends the message of each
//! `weft::diagnostics` event down a channel. Include it with
//! `#[path = "support/capture.rs"] mod capture;`.

use std::sync::{Mutex, mpsc};

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// Sends the message of each `weft::diagnostics` event.
pub(crate) struct Capture(pub(crate) Mutex<mpsc::Sender<String>>);

struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == "weft::diagnostics" {
            let mut m = String::new();
            event.record(&mut Message(&mut m));
            let _ = self.0.lock().unwrap().send(m);
        }
    }
}
