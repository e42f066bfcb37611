//! The engine: one thread owns the weights (libtorch tensors are not shared across threads) and
//! serves requests in batches — whatever is waiting when a batch starts decodes together. A weight
//! swap is applied between batches: requests already decoding finish on the weights they started
//! with, and every later batch uses the new ones. None fails.

use std::sync::mpsc as std_mpsc;

use clawline_model::{Finish, Loaded, Request, generate_with};
use tokio::sync::{mpsc, oneshot};

/// What a request hears back, token by token.
#[derive(Debug)]
pub enum Event {
    /// Decoding started on this weight version.
    Started {
        version: String,
    },
    Token {
        id: u32,
        logprob: f32,
    },
    Done {
        finish: Finish,
    },
    Failed {
        message: String,
    },
}

pub struct Job {
    pub request: Request,
    pub events: mpsc::UnboundedSender<Event>,
}

enum Msg {
    Job(Job),
    Swap {
        model: Box<Loaded>,
        version: String,
        done: oneshot::Sender<String>,
    },
}

/// A handle to the engine thread (cheap to clone; the thread ends when every handle is gone).
#[derive(Clone)]
pub struct Engine {
    tx: std_mpsc::Sender<Msg>,
}

impl Engine {
    /// Starts the engine thread serving `model` as `version`, decoding up to `max_batch` requests
    /// together.
    pub fn start(model: Loaded, version: String, max_batch: usize) -> Self {
        let (tx, rx) = std_mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("clawline-policy-engine".into())
            .spawn(move || run(model, version, max_batch.max(1), rx))
            .expect("spawning the engine thread");
        Self { tx }
    }

    /// Queues a request; its events arrive on the returned receiver.
    pub fn submit(&self, request: Request) -> mpsc::UnboundedReceiver<Event> {
        let (events, rx) = mpsc::unbounded_channel();
        if self
            .tx
            .send(Msg::Job(Job {
                request,
                events: events.clone(),
            }))
            .is_err()
        {
            let _ = events.send(Event::Failed {
                message: "the engine has stopped".into(),
            });
        }
        rx
    }

    /// Replaces the weights after the batch decoding now; returns the version replaced.
    pub async fn swap(&self, model: Loaded, version: String) -> anyhow::Result<String> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Msg::Swap {
                model: Box::new(model),
                version,
                done,
            })
            .map_err(|_| anyhow::anyhow!("the engine has stopped"))?;
        Ok(rx.await?)
    }
}

fn run(mut model: Loaded, mut version: String, max_batch: usize, rx: std_mpsc::Receiver<Msg>) {
    let mut waiting: Vec<Job> = Vec::new();
    loop {
        // Block for the first message, then take whatever else is already there.
        if waiting.is_empty() {
            match rx.recv() {
                Ok(msg) => handle(msg, &mut waiting, &mut model, &mut version),
                Err(_) => return,
            }
        }
        while let Ok(msg) = rx.try_recv() {
            handle(msg, &mut waiting, &mut model, &mut version);
        }
        if waiting.is_empty() {
            continue;
        }
        let take = waiting.len().min(max_batch);
        let batch: Vec<Job> = waiting.drain(..take).collect();
        // A client that went away does not cost a decode.
        let batch: Vec<Job> = batch
            .into_iter()
            .filter(|j| !j.events.is_closed())
            .collect();
        if batch.is_empty() {
            continue;
        }
        for job in &batch {
            let _ = job.events.send(Event::Started {
                version: version.clone(),
            });
        }
        let requests: Vec<Request> = batch.iter().map(|j| j.request.clone()).collect();
        // A request whose answer is complete (a stop string) or whose client left stops decoding.
        let result = generate_with(&model.model, &requests, |i, id, logprob| {
            batch[i].events.send(Event::Token { id, logprob }).is_ok()
        });
        match result {
            Ok(outs) => {
                for (job, out) in batch.iter().zip(outs) {
                    let _ = job.events.send(Event::Done { finish: out.finish });
                }
            }
            Err(e) => {
                for job in &batch {
                    let _ = job.events.send(Event::Failed {
                        message: format!("{e:#}"),
                    });
                }
            }
        }
    }
}

fn handle(msg: Msg, waiting: &mut Vec<Job>, model: &mut Loaded, version: &mut String) {
    match msg {
        Msg::Job(job) => waiting.push(job),
        Msg::Swap {
            model: new,
            version: new_version,
            done,
        } => {
            *model = *new;
            let old = std::mem::replace(version, new_version);
            tracing::info!(from = %old, to = %version, "weights swapped");
            let _ = done.send(old);
        }
    }
}
