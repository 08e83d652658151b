//! What the follower does on each capture event: exec holds, execs, loaded libraries, forks
//! and connects.
use super::*;

impl Follower {
    pub(super) fn on_hold(&mut self, hold: &Hold) {
        let pid = hold.pid;
        if !self.in_scope(pid) {
            return;
        }
        let held = PathBuf::from(format!("/proc/self/fd/{}", hold.file.as_raw_fd()));
        let Some(id) = FileId::of(&held) else {
            return;
        };
        // The file's own path when it reaches the same file from here (it outlives the hold);
        // else the held descriptor, good for as long as the hold.
        let host_path = fs::read_link(&held)
            .ok()
            .filter(|path| FileId::of(path) == Some(id))
            .unwrap_or(held);
        let file = MappedFile { id, host_path };
        match hold.kind {
            HoldKind::Exec => self.on_exec(pid, &file),
            HoldKind::Open => {
                // A process about to use a TLS library: followed from now on.
                let mut files = discover::executable_mappings(pid);
                files.push(file);
                if matches!(self.processes.get(&pid), Some(Tracked::Dropped(_))) {
                    self.stats_mut().readmitted += 1;
                }
                self.follow(pid, &files, Start::Running);
            }
        }
    }

    /// A process starts running `exe` (held at its exec, or just after it).
    pub(super) fn on_exec(&mut self, pid: u32, exe: &MappedFile) {
        if !self.in_scope(pid) {
            return;
        }
        if self.exec_seen.get(&pid) == Some(&exe.id) {
            return;
        }
        let Some(exe_analysis) = self.analysis(exe) else {
            self.decide_once_analysed(pid, exe);
            return;
        };
        if exe_analysis.interpreter.is_none()
            && exe_analysis.needed.is_empty()
            && !exe_analysis.loader.is_empty()
        {
            // The ELF interpreter's own exec hold, after the program's: already decided.
            return;
        }
        let files = self.closure(pid, exe);
        let analyses: Vec<_> = files.iter().filter_map(|f| self.analysis(f)).collect();
        if !self.unknown.is_empty() {
            self.decide_once_analysed(pid, exe);
            return;
        }
        self.exec_seen.insert(pid, exe.id);
        let networked = analyses.iter().any(|a| a.networked());
        let loads_code = analyses.iter().any(|a| a.imports_loader);
        // The new image decides (probes of the old image's files may stay on: they cost
        // nothing where nothing maps those files).
        if self.scoped || networked {
            self.follow(pid, &files, Start::Fresh);
            return;
        }
        self.forget(pid);
        if loads_code {
            self.watch_loader(pid, &files);
        }
    }

    /// A program that may load network code later (`dlopen`): only its loader's hook is probed
    /// (one trap per library load); what it loads decides whether it is followed.
    pub(super) fn watch_loader(&mut self, pid: u32, files: &[MappedFile]) {
        let mut loader = HashMap::new();
        for file in files {
            if let Some(analysis) = self.analysis(file) {
                self.enable(pid, file, analysis.loader.iter(), &mut loader);
            }
        }
        if !loader.is_empty() {
            self.seen.insert(
                pid,
                files.iter().map(|f| (f.id, f.host_path.clone())).collect(),
            );
            self.processes.insert(pid, Tracked::Watched(loader));
        }
    }

    /// Once a program runs, its environment can be read: TLS libraries in its
    /// `LD_LIBRARY_PATH` are the ones it will load (a private copy the gate does not hold
    /// opens of), so their probes go on now, before its first TLS call.
    pub(super) fn follow_private_tls_libraries(&mut self, pid: u32) {
        if !matches!(
            self.processes.get(&pid),
            Some(Tracked::Followed(_) | Tracked::Watched(_))
        ) {
            return;
        }
        let libraries: Vec<MappedFile> = discover::library_path_tls_libraries(pid)
            .into_iter()
            .filter_map(|path| {
                Some(MappedFile {
                    id: FileId::of(&path)?,
                    host_path: path,
                })
            })
            .filter(|file| self.analysis(file).is_some_and(|a| a.tls.is_some()))
            .collect();
        if !libraries.is_empty() {
            let mut files = libraries;
            files.extend(discover::executable_mappings(pid));
            self.follow(pid, &files, Start::Fresh);
        }
    }

    /// A process's loader loaded libraries: follow what is new in it, if worth it.
    pub(super) fn on_library_mapped(&mut self, pid: u32) {
        let seen = self.seen.get(&pid);
        let files: Vec<MappedFile> = discover::executable_mappings(pid)
            .into_iter()
            .filter(|file| seen.is_none_or(|seen| !seen.contains_key(&file.id)))
            .collect();
        if files.is_empty() {
            return;
        }
        match self.processes.get(&pid) {
            Some(Tracked::Followed(_)) => self.follow(pid, &files, Start::Running),
            // Followed from now on: for every file it maps, not only the new ones.
            Some(Tracked::Watched(_) | Tracked::Dropped(_)) => {
                let worth = files.iter().any(|file| {
                    self.analysis(file)
                        .is_some_and(|a| a.networked() && !a.capture.is_empty() || a.tls.is_some())
                });
                if worth {
                    if matches!(self.processes.get(&pid), Some(Tracked::Dropped(_))) {
                        self.stats_mut().readmitted += 1;
                    }
                    let mut all = files;
                    all.extend(discover::executable_mappings(pid));
                    self.follow(pid, &all, Start::Running);
                }
            }
            None => {}
        }
    }

    pub(super) fn on_fork(&mut self, parent: u32, child: u32) {
        if !is_process(child) {
            return;
        }
        if self.scoped {
            if self.in_scope(parent) {
                self.in_scope.insert(child);
                let files = discover::executable_mappings(child);
                self.follow(child, &files, Start::Fresh);
            }
            return;
        }
        let exe = process_file(parent, "exe").map(|f| f.id);
        self.later
            .push((Instant::now() + FORK_GRACE, child, LaterFork { exe }));
    }

    pub(super) fn look_again(&mut self, pid: u32, fork: LaterFork) {
        if self.processes.contains_key(&pid) {
            return;
        }
        let current = process_file(pid, "exe").map(|f| f.id);
        if current.is_some() && current == fork.exe {
            let files = discover::executable_mappings(pid);
            self.follow(pid, &files, Start::Running);
        }
    }

    pub(super) fn on_connect(&mut self, pid: u32) {
        let Some(Tracked::Dropped(dropped)) = self.processes.get(&pid) else {
            return;
        };
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << dropped.drops.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        if dropped.at.elapsed() < backoff {
            return;
        }
        log::info!(
            "following pid {pid} ({}) again: it connected to a new peer",
            comm(pid)
        );
        self.stats_mut().readmitted += 1;
        // The files it was followed for first (its TLS library among them: a handshake is all
        // that stands between this connect and its first request), then whatever it mapped since.
        let known: Vec<MappedFile> = self
            .seen
            .get(&pid)
            .map(|seen| {
                seen.iter()
                    .map(|(id, path)| MappedFile {
                        id: *id,
                        host_path: path.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.follow(pid, &known, Start::Running);
        self.on_library_mapped(pid);
    }
}
