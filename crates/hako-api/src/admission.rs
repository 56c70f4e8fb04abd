//! Admission: at most `max_requests` admitted runs (queued + running), at most
//! `max_workers` running. Counters are released by drop guards, so a client that
//! disconnects while queued or running frees its place.

use metrics::Gauge;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("the worker queue is closed")]
    Closed,
}

pub struct Admission {
    max_requests: usize,
    admitted: AtomicUsize,
    running: AtomicUsize,
    workers: Arc<Semaphore>,
    queue_depth: Gauge,
    in_flight: Gauge,
}

impl Admission {
    pub fn new(
        max_workers: usize,
        max_requests: usize,
        queue_depth: Gauge,
        in_flight: Gauge,
    ) -> Self {
        Admission {
            max_requests,
            admitted: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            workers: Arc::new(Semaphore::new(max_workers)),
            queue_depth,
            in_flight,
        }
    }

    /// Admits a run unless `max_requests` runs are already admitted.
    pub(crate) fn try_admit(self: &Arc<Self>) -> Option<Ticket> {
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_requests).then_some(n + 1)
            })
            .ok()?;
        self.update_gauges();
        Some(Ticket {
            admission: Arc::clone(self),
        })
    }

    /// Queued plus running.
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    fn update_gauges(&self) {
        let running = self.running();
        self.in_flight.set(running as f64);
        self.queue_depth
            .set(self.admitted().saturating_sub(running) as f64);
    }
}

/// An admitted run, waiting for a worker. Dropping it gives the place back.
pub struct Ticket {
    admission: Arc<Admission>,
}

impl Ticket {
    /// Waits (without a timeout, as Dify Sandbox) for one of the `max_workers` slots.
    pub async fn start(self) -> Result<Running, AdmissionError> {
        let permit = Arc::clone(&self.admission.workers)
            .acquire_owned()
            .await
            .map_err(|_| AdmissionError::Closed)?;
        self.admission.running.fetch_add(1, Ordering::AcqRel);
        self.admission.update_gauges();
        Ok(Running {
            _permit: permit,
            ticket: self,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.admitted.fetch_sub(1, Ordering::AcqRel);
        self.admission.update_gauges();
    }
}

/// A run holding a worker slot.
pub struct Running {
    _permit: OwnedSemaphorePermit,
    ticket: Ticket,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Runs before the ticket and the permit are dropped.
        self.ticket.admission.running.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn admission(workers: usize, requests: usize) -> Arc<Admission> {
        Arc::new(Admission::new(
            workers,
            requests,
            Gauge::noop(),
            Gauge::noop(),
        ))
    }

    #[test]
    fn admits_up_to_max_requests_and_releases_on_drop() {
        let a = admission(1, 2);
        let first = a.try_admit().unwrap();
        let second = a.try_admit().unwrap();
        assert!(a.try_admit().is_none());
        assert_eq!(a.admitted(), 2);
        drop(first);
        let third = a.try_admit().unwrap();
        drop((second, third));
        assert_eq!(a.admitted(), 0);
    }

    #[tokio::test]
    async fn runs_at_most_max_workers_and_queues_the_rest() {
        let a = admission(1, 3);
        let running = a.try_admit().unwrap().start().await.unwrap();
        assert_eq!(a.running(), 1);
        let queued = a.try_admit().unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), queued.start()).await;
        assert!(
            waiting.is_err(),
            "a second run must wait for the only worker"
        );
        // The timed-out wait dropped its ticket.
        assert_eq!(a.admitted(), 1);
        let queued = a.try_admit().unwrap();
        let handle = tokio::spawn(queued.start());
        drop(running);
        let next = handle.await.unwrap().unwrap();
        assert_eq!((a.running(), a.admitted()), (1, 1));
        drop(next);
        assert_eq!((a.running(), a.admitted()), (0, 0));
    }
}
