//! Files never seen before are analysed here, off the follower's thread, one user at a time.
//!
//! Reading a new executable takes up to the analysis bound (`untrusted`); done by the follower,
//! it would hold every other exec on the host meanwhile. So the follower serves what is known
//! at once and hands what is not to this thread, parking the request (an exec hold among them)
//! until the analysis is done. Work is queued per user (the uid of the process it is for) and
//! taken round-robin: someone starting a thousand never-seen programs waits behind their own
//! queue, and anyone else's new program waits for at most one of theirs. A queue holds at most
//! [`MAX_JOBS_PER_USER`]; past that, the follower goes on without the analysis (counted).
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Condvar, Mutex, PoisonError, mpsc::Sender},
    thread::JoinHandle,
};

use super::{
    analysis::AnalysisCache,
    discover::{self, MappedFile},
    follow::Request,
};

/// Jobs waiting per user; each may park an exec hold (and its open file) in the follower.
pub(super) const MAX_JOBS_PER_USER: usize = 16;

/// Files to analyse for one parked request.
pub(super) struct Job {
    /// Handed back in [`Request::Analysed`].
    pub id: u64,
    /// Whose process it is for: the queue it waits in.
    pub uid: u32,
    pub files: Vec<MappedFile>,
    /// A program about to run in this process: its libraries too.
    pub program: Option<(u32, MappedFile)>,
}

/// Round-robin over users, first in first out within each.
#[derive(Default)]
struct FairQueue {
    by_user: HashMap<u32, VecDeque<Job>>,
    turns: VecDeque<u32>,
    stopping: bool,
}

impl FairQueue {
    fn push(&mut self, job: Job) -> Result<(), Job> {
        let queue = self.by_user.entry(job.uid).or_default();
        if queue.len() >= MAX_JOBS_PER_USER {
            return Err(job);
        }
        if queue.is_empty() {
            self.turns.push_back(job.uid);
        }
        queue.push_back(job);
        Ok(())
    }

    fn pop(&mut self) -> Option<Job> {
        let uid = self.turns.pop_front()?;
        let queue = self.by_user.get_mut(&uid)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            self.by_user.remove(&uid);
        } else {
            self.turns.push_back(uid);
        }
        job
    }
}

type Shared = Arc<(Mutex<FairQueue>, Condvar)>;

/// The analysing thread and its queue. Dropping it stops the thread once its job is done.
pub(super) struct Analyst {
    shared: Shared,
    thread: Option<JoinHandle<()>>,
}

impl Analyst {
    /// Starts the thread: it analyses into `cache` and tells the follower on `done`.
    pub fn start(cache: Arc<AnalysisCache>, done: Sender<Request>) -> std::io::Result<Analyst> {
        let shared: Shared = Arc::default();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("capture-analyse".into())
                .spawn(move || work(&shared, &cache, &done))?
        };
        Ok(Analyst {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `job`; gives it back when its user's queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        let (queue, wake) = &*self.shared;
        queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(job)?;
        wake.notify_one();
        Ok(())
    }
}

impl Drop for Analyst {
    fn drop(&mut self) {
        let (queue, wake) = &*self.shared;
        queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stopping = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn work(shared: &Shared, cache: &AnalysisCache, done: &Sender<Request>) {
    let (queue, wake) = &**shared;
    loop {
        let job = {
            let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if queue.stopping {
                    return;
                }
                if let Some(job) = queue.pop() {
                    break job;
                }
                queue = wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let mut analysed = |file: &MappedFile| match cache.get(&file.host_path) {
            Ok(analysis) => Some(analysis),
            Err(error) => {
                log::debug!("reading {}: {error}", file.host_path.display());
                None
            }
        };
        job.files.iter().for_each(|file| {
            analysed(file);
        });
        if let Some((pid, program)) = &job.program {
            discover::closure(*pid, program, &mut analysed);
        }
        if done.send(Request::Analysed(job.id)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, uid: u32) -> Job {
        Job {
            id,
            uid,
            files: Vec::new(),
            program: None,
        }
    }

    #[test]
    fn users_take_turns_and_a_full_queue_refuses() {
        let mut queue = FairQueue::default();
        // A thousand programs from one user, then one from another.
        let mut refused = 0;
        for id in 0..1000 {
            refused += usize::from(queue.push(job(id, 1000)).is_err());
        }
        assert_eq!(refused, 1000 - MAX_JOBS_PER_USER);
        queue
            .push(job(5000, 1001))
            .ok()
            .expect("another user's queue has room");
        let order: Vec<u64> = std::iter::from_fn(|| queue.pop()).map(|j| j.id).collect();
        assert_eq!(
            order[..3],
            [0, 5000, 1],
            "the other user waits for one job only"
        );
        assert_eq!(order.len(), MAX_JOBS_PER_USER + 1);
        assert!(queue.by_user.is_empty() && queue.turns.is_empty());
    }
}
