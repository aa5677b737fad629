//! A consumer channel's acks, sent in as few frames as the order of completion allows.
//!
//! `basic.ack` with `multiple` set acks every delivery of the channel not yet acked, up to and
//! including its tag (AMQP 0-9-1, `basic.ack`: "If the multiple field is 1, and the delivery tag is
//! non-zero, this indicates acknowledgement of all outstanding messages up to and including the
//! tag"). RabbitMQ turns one such frame into one settle command of the quorum queue, whatever the
//! number of messages it covers. A delivery may be acked only once its handler is done (for the
//! worker: after the database commit), so one frame can cover a run of done deliveries only when
//! no delivery below that run is still being handled.
//!
//! Handlers finish out of order. A done delivery with a lower one still being handled **waits**;
//! when the lowest one finishes, one frame acks it and every waiting delivery below the next one
//! still being handled. At most `slack` deliveries wait: past that, the oldest waiting ones are
//! acked one by one. A waiting delivery holds a place of the channel's prefetch, so the consumer
//! sets `slack` to what its prefetch allows beyond its concurrency: the broker always has room to
//! send a free handler its next message.
//!
//! Nothing is acked early: a frame's tag never has a delivery below it that is being handled
//! (deliveries come in tag order, so every delivery not yet received has a higher tag), and a
//! requeue (`basic.nack`) is sent before any later frame could cover its tag. A waiting ack lost
//! with its channel is a redelivery, which the handlers' inbox makes harmless.

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Acker;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::Mutex;
use tracing::{debug, warn};

/// Longest wait for an ack or nack frame to be handed to the connection. An ack on a channel
/// whose connection is gone may never complete; the window is locked while it is sent, so an
/// unbounded wait would hold every later ack of the channel, and the consumer waiting for them.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One ack frame to send: `multiple` covers every delivery up to `tag` that is not acked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckFrame<T> {
    pub(crate) tag: u64,
    pub(crate) multiple: bool,
    /// What sends it (the delivery's acker; a placeholder in tests).
    pub(crate) sender: T,
}

/// Which deliveries are being handled and which wait for their ack; no I/O.
#[derive(Debug)]
pub(crate) struct Window<T> {
    handling: BTreeSet<u64>,
    waiting: BTreeMap<u64, T>,
    slack: usize,
}

impl<T> Window<T> {
    pub(crate) fn new(slack: usize) -> Self {
        Self {
            handling: BTreeSet::new(),
            waiting: BTreeMap::new(),
            slack,
        }
    }

    /// A delivery was handed to its handler.
    pub(crate) fn received(&mut self, tag: u64) {
        self.handling.insert(tag);
    }

    /// The handler of `tag` is done and the delivery may be acked: the frames to send now.
    pub(crate) fn done(&mut self, tag: u64, sender: T) -> Vec<AckFrame<T>> {
        self.handling.remove(&tag);
        self.waiting.insert(tag, sender);
        self.flush()
    }

    /// `tag` was settled otherwise (its `basic.nack` is sent): the frames it no longer holds back.
    pub(crate) fn settled(&mut self, tag: u64) -> Vec<AckFrame<T>> {
        self.handling.remove(&tag);
        self.flush()
    }

    /// Deliveries received and not acked or settled yet (handled or waiting).
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> usize {
        self.handling.len() + self.waiting.len()
    }

    fn flush(&mut self) -> Vec<AckFrame<T>> {
        let mut frames = Vec::new();
        // Every waiting delivery below the lowest one still being handled: one frame.
        let floor = self.handling.first().copied().unwrap_or(u64::MAX);
        let rest = self.waiting.split_off(&floor);
        let covered = std::mem::replace(&mut self.waiting, rest);
        let count = covered.len();
        if let Some((tag, sender)) = covered.into_iter().next_back() {
            frames.push(AckFrame {
                tag,
                multiple: count > 1,
                sender,
            });
        }
        // Too many waiting behind a slow handler: ack the oldest on their own.
        while self.waiting.len() > self.slack {
            let Some((tag, sender)) = self.waiting.pop_first() else {
                break;
            };
            frames.push(AckFrame {
                tag,
                multiple: false,
                sender,
            });
        }
        frames
    }
}

/// The window of one consumer channel, and the sending of its frames. Frames are sent while the
/// window is locked, so they leave in the order the window chose them.
#[derive(Debug)]
pub(crate) struct Acks {
    window: Mutex<Window<Acker>>,
    tally: std::sync::Mutex<Tally>,
}

/// Messages acked and the frames that carried them, for the consumer's last log line.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) messages: u64,
    pub(crate) frames: u64,
}

impl Acks {
    pub(crate) fn new(slack: usize) -> Self {
        Self {
            window: Mutex::new(Window::new(slack)),
            tally: std::sync::Mutex::new(Tally::default()),
        }
    }

    /// A delivery was taken from the channel and handed to its handler.
    pub(crate) async fn received(&self, tag: u64) {
        self.window.lock().await.received(tag);
    }

    /// The delivery's handler is done and its outcome durable: ack it, now or with later ones.
    pub(crate) async fn ack(&self, tag: u64, acker: Acker, message_id: &str) {
        let mut window = self.window.lock().await;
        debug!(%message_id, tag, "done; acking");
        let frames = window.done(tag, acker);
        self.send(frames).await;
    }

    /// Puts the delivery back in its queue (`basic.nack` with requeue) at once.
    pub(crate) async fn requeue(&self, tag: u64, acker: Acker, message_id: &str) {
        let mut window = self.window.lock().await;
        let options = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        let sent = match tokio::time::timeout(SEND_TIMEOUT, acker.nack(options)).await {
            Ok(Ok(true)) => true,
            Ok(Ok(false)) => {
                warn!(%message_id, "nack not sent: the channel is closed; the broker will redeliver");
                false
            }
            Ok(Err(error)) => {
                warn!(%message_id, %error, "nack failed; the broker will redeliver");
                false
            }
            Err(_) => {
                warn!(%message_id, "nack not sent within {SEND_TIMEOUT:?}; the broker will redeliver");
                false
            }
        };
        // A nack that was not sent leaves its delivery outstanding on the channel: it stays in
        // the window as still being handled, so no later frame can cover (and ack) it.
        if sent {
            let frames = window.settled(tag);
            self.send(frames).await;
        }
    }

    /// Messages acked and frames sent so far.
    pub(crate) fn tally(&self) -> Tally {
        self.tally.lock().map(|t| *t).unwrap_or_default()
    }

    async fn send(&self, frames: Vec<AckFrame<Acker>>) {
        for frame in frames {
            let (tag, multiple) = (frame.tag, frame.multiple);
            let sent =
                tokio::time::timeout(SEND_TIMEOUT, frame.sender.ack(BasicAckOptions { multiple }))
                    .await;
            match sent {
                Err(_) => warn!(
                    tag,
                    multiple,
                    "ack not sent within {SEND_TIMEOUT:?}: the channel is stuck or gone; the broker will redeliver what it covered"
                ),
                Ok(Ok(true)) => {
                    debug!(tag, multiple, "acked");
                    if let Ok(mut tally) = self.tally.lock() {
                        tally.frames += 1;
                    }
                }
                // The channel is gone: the broker requeues what it had not been told, and the
                // inbox makes each redelivery harmless.
                Ok(Ok(false)) => warn!(
                    tag,
                    multiple,
                    "ack not sent: the channel is closed; the broker will redeliver what it covered"
                ),
                Ok(Err(error)) => warn!(
                    tag,
                    multiple,
                    %error,
                    "ack failed; the broker will redeliver what it covered"
                ),
            }
        }
    }

    /// Counts one message whose ack is now sent or waiting.
    pub(crate) fn count_message(&self) {
        if let Ok(mut tally) = self.tally.lock() {
            tally.messages += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(tag: u64, multiple: bool) -> AckFrame<()> {
        AckFrame {
            tag,
            multiple,
            sender: (),
        }
    }

    /// Applies frames as a channel would: the tags each one settles. Panics if a frame would
    /// settle a delivery still being handled, or ack a tag already settled (RabbitMQ closes the
    /// channel for an unknown delivery tag).
    fn settle(
        handling: &BTreeSet<u64>,
        received: u64,
        acked: &mut BTreeSet<u64>,
        frames: &[AckFrame<()>],
    ) {
        for f in frames {
            assert!(f.tag <= received, "frame {f:?} for a tag not received");
            assert!(!acked.contains(&f.tag), "frame {f:?} acks {} again", f.tag);
            let tags = if f.multiple { 1..=f.tag } else { f.tag..=f.tag };
            for tag in tags {
                assert!(
                    !handling.contains(&tag),
                    "frame {f:?} acks {tag}, still handled"
                );
                acked.insert(tag);
            }
        }
    }

    #[test]
    fn in_order_completions_are_acked_at_once_one_by_one() {
        let mut w = Window::new(8);
        w.received(1);
        w.received(2);
        assert_eq!(w.done(1, ()), vec![frame(1, false)]);
        assert_eq!(w.done(2, ()), vec![frame(2, false)]);
        assert_eq!(w.outstanding(), 0);
    }

    #[test]
    fn deliveries_done_above_a_slow_one_wait_then_go_in_one_frame() {
        let mut w = Window::new(8);
        for tag in 1..=5 {
            w.received(tag);
        }
        assert!(w.done(2, ()).is_empty());
        assert!(w.done(4, ()).is_empty());
        assert!(w.done(3, ()).is_empty());
        // 1 finishes: 1–4 in one frame; 5 is still handled, so the frame stops at 4.
        assert_eq!(w.done(1, ()), vec![frame(4, true)]);
        assert_eq!(w.done(5, ()), vec![frame(5, false)]);
        assert_eq!(w.outstanding(), 0);
    }

    #[test]
    fn past_the_slack_the_oldest_waiting_are_acked_on_their_own() {
        let mut w = Window::new(2);
        for tag in 1..=5 {
            w.received(tag);
        }
        assert!(w.done(2, ()).is_empty());
        assert!(w.done(3, ()).is_empty());
        assert_eq!(w.done(4, ()), vec![frame(2, false)]);
        assert_eq!(w.done(5, ()), vec![frame(3, false)]);
        assert_eq!(w.done(1, ()), vec![frame(5, true)]);
    }

    #[test]
    fn without_slack_each_done_delivery_is_acked_on_its_own() {
        let mut w = Window::new(0);
        for tag in 1..=3 {
            w.received(tag);
        }
        assert_eq!(w.done(3, ()), vec![frame(3, false)]);
        assert_eq!(w.done(1, ()), vec![frame(1, false)]);
        assert_eq!(w.done(2, ()), vec![frame(2, false)]);
    }

    #[test]
    fn a_requeued_delivery_releases_the_ones_waiting_above_it() {
        let mut w = Window::new(8);
        for tag in 1..=3 {
            w.received(tag);
        }
        assert!(w.done(2, ()).is_empty());
        assert!(w.done(3, ()).is_empty());
        // 1 is nacked (requeued) first, then 2–3 go in one frame that no longer covers 1.
        assert_eq!(w.settled(1), vec![frame(3, true)]);
    }

    proptest::proptest! {
        /// Whatever the order of receipts and completions and the slack: no frame acks a
        /// delivery still being handled or one already settled, every delivery is settled once
        /// all are done, and no more than `slack` wait.
        #[test]
        fn no_delivery_is_acked_before_it_is_done(
            steps in proptest::collection::vec(0usize..8, 1..200),
            slack in 0usize..10,
            requeue_every in 2u64..9,
        ) {
            let mut w = Window::new(slack);
            let mut handling = BTreeSet::new();
            let mut acked = BTreeSet::new();
            let mut received = 0u64;
            // Each step receives a delivery (0–3) or finishes one of those being handled,
            // picked by the step's value.
            let step = |choice: usize,
                            w: &mut Window<()>,
                            handling: &mut BTreeSet<u64>,
                            acked: &mut BTreeSet<u64>,
                            received: &mut u64| {
                if (choice < 4 && *received < 60) || handling.is_empty() {
                    *received += 1;
                    w.received(*received);
                    handling.insert(*received);
                    return;
                }
                let tag = *handling.iter().nth(choice % handling.len()).unwrap();
                handling.remove(&tag);
                let frames = if tag.is_multiple_of(requeue_every) {
                    acked.insert(tag); // its nack settled it
                    w.settled(tag)
                } else {
                    w.done(tag, ())
                };
                settle(handling, *received, acked, &frames);
            };
            for choice in steps {
                step(choice, &mut w, &mut handling, &mut acked, &mut received);
                prop_assert!(w.waiting.len() <= slack);
            }
            // Then every delivery still being handled finishes.
            while !handling.is_empty() {
                step(7, &mut w, &mut handling, &mut acked, &mut received);
            }
            prop_assert_eq!(acked, (1..=received).collect::<BTreeSet<_>>());
            prop_assert_eq!(w.outstanding(), 0);
        }
    }
}
