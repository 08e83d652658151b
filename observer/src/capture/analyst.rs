//! Files never seen before are analysed here, off the follower's thread, one user at a time.
//!
//! Reading a new executable takes up to the analysis bound (`untrusted`); done by the follower,
//! it would hold every other exec on the host meanwhile. So the follower serves what is known
//! at once and hands what is not to this thread, parking the request (an exec hold among them)
//! until the analysis is done. Work is queued per user (the uid of the process it is for) and
//! taken round-robin by [`THREADS`] threads, one job per user at a time: someone starting a
//! thousand never-seen programs (or programs crafted to take the whole analysis bound) keeps
//! one thread busy and waits behind their own queue, while anyone else's new program is read by
//! another. A queue holds at most [`MAX_JOBS_PER_USER`]; past that, the follower goes on without
//! the analysis (counted).
use std::{
    collections::{HashMap, HashSet, VecDeque},
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
/// Analysing threads: one user keeps at most one busy.
const THREADS: usize = 2;

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

/// Round-robin over users, first in first out within each, one job per user at a time.
#[derive(Default)]
struct FairQueue {
    by_user: HashMap<u32, VecDeque<Job>>,
    turns: VecDeque<u32>,
    /// Users with a job being analysed.
    busy: HashSet<u32>,
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

    /// The next job of the next user with none being analysed; that user is busy until
    /// [`FairQueue::done`].
    fn pop(&mut self) -> Option<Job> {
        let turn = self.turns.iter().position(|uid| !self.busy.contains(uid))?;
        let uid = self.turns.remove(turn)?;
        let queue = self.by_user.get_mut(&uid)?;
        let job = queue.pop_front()?;
        if queue.is_empty() {
            self.by_user.remove(&uid);
        } else {
            self.turns.push_back(uid);
        }
        self.busy.insert(uid);
        Some(job)
    }

    fn done(&mut self, uid: u32) {
        self.busy.remove(&uid);
    }
}

type Shared = Arc<(Mutex<FairQueue>, Condvar)>;

/// The analysing threads and their queue. Dropping it stops the threads once their jobs are
/// done.
pub(super) struct Analyst {
    shared: Shared,
    threads: Vec<JoinHandle<()>>,
}

impl Analyst {
    /// Starts the threads: they analyse into `cache` and tell the follower on `done`.
    pub fn start(cache: Arc<AnalysisCache>, done: Sender<Request>) -> std::io::Result<Analyst> {
        let mut analyst = Analyst {
            shared: Arc::default(),
            threads: Vec::new(),
        };
        for _ in 0..THREADS {
            let (shared, cache, done) = (analyst.shared.clone(), cache.clone(), done.clone());
            analyst.threads.push(
                std::thread::Builder::new()
                    .name("capture-analyse".into())
                    .spawn(move || work(&shared, &cache, &done))?,
            );
        }
        Ok(analyst)
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
        wake.notify_all();
        for thread in self.threads.drain(..) {
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
        queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .done(job.uid);
        // The user's next job may go to any thread now.
        wake.notify_all();
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

    /// Takes jobs as the threads would, each done before the next is taken.
    fn drain(queue: &mut FairQueue) -> Vec<u64> {
        std::iter::from_fn(|| {
            let job = queue.pop()?;
            queue.done(job.uid);
            Some(job.id)
        })
        .collect()
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
        assert!(
            queue.push(job(5000, 1001)).is_ok(),
            "another user's queue has room"
        );
        let order = drain(&mut queue);
        assert_eq!(
            order[..3],
            [0, 5000, 1],
            "the other user waits for one job only"
        );
        assert_eq!(order.len(), MAX_JOBS_PER_USER + 1);
        assert!(queue.by_user.is_empty() && queue.turns.is_empty());
    }

    #[test]
    fn a_user_keeps_one_thread_busy_at_most() {
        let mut queue = FairQueue::default();
        for id in 0..3 {
            assert!(queue.push(job(id, 1000)).is_ok());
        }
        let first = queue.pop().expect("a job");
        assert!(queue.pop().is_none(), "the same user's next job waits");
        assert!(queue.push(job(7, 0)).is_ok());
        assert_eq!(
            queue.pop().map(|j| j.id),
            Some(7),
            "another user's goes at once"
        );
        queue.done(first.uid);
        assert_eq!(queue.pop().map(|j| j.id), Some(1));
    }
}
