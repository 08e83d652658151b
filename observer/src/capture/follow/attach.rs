//! Switching a process's probes on and off: the files it maps, their analysis, the probes'
//! links, and the counters published for the metrics.
use super::*;

impl Follower {
    /// Switches on, for `pid`, the capture probes of `files` it does not have yet.
    pub(super) fn follow(&mut self, pid: u32, files: &[MappedFile], start: Start) {
        let (mut following, new) = match self.processes.remove(&pid) {
            Some(Tracked::Followed(following)) => (following, false),
            // The loader's hook stays on.
            Some(Tracked::Watched(loader)) => (
                Following {
                    enabled: loader,
                    ..Following::default()
                },
                true,
            ),
            Some(Tracked::Dropped(dropped)) => (
                Following {
                    drops: dropped.drops,
                    ..Following::default()
                },
                true,
            ),
            None => (Following::default(), true),
        };
        if new {
            let flags = if self.scoped { followed_flags::KEEP } else { 0 };
            let state = Followed {
                flags,
                ..Default::default()
            };
            if let Err(error) = lock(&self.maps).follow(pid, state) {
                log::debug!("pid {pid}: {error:#}");
            }
        }
        let started = Instant::now();
        // TLS first: a process followed late (a library just loaded, a new peer) may be about to
        // make its first TLS call, and reading the other files may take a while the first time.
        let mut files: Vec<&MappedFile> = files.iter().collect();
        files.sort_by_key(|file| !looks_like_tls(file));
        let mut rest = Vec::new();
        for file in files {
            let Some(analysis) = self.analysis(file) else {
                continue;
            };
            self.seen
                .entry(pid)
                .or_default()
                .insert(file.id, file.host_path.clone());
            if analysis.tls.is_none() {
                rest.push((file, analysis));
                continue;
            }
            self.hold_opens_if_tls(file);
            let probes = analysis.capture.iter().chain(&analysis.loader);
            self.enable(pid, file, probes, &mut following.enabled);
            if let Some(tls) = &analysis.tls
                && self.announced.insert(file.id)
            {
                log::info!("attached {tls} to {}", shown(file));
            }
        }
        log::debug!(
            "pid {pid}: TLS probes on after {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        for (file, analysis) in rest {
            let probes = analysis.capture.iter().chain(&analysis.loader);
            self.enable(pid, file, probes, &mut following.enabled);
        }
        if following.enabled.is_empty() {
            // Nothing to probe: the process is gone, or its programs make no socket calls.
            let _ = lock(&self.maps).unfollow(pid);
            return;
        }
        if new {
            let late = start == Start::Running && sockets::established_connections(pid) > 0;
            if late {
                log::debug!("pid {pid}: followed with TCP connections already open");
            }
            let mut stats = self.stats_mut();
            stats.followed_total += 1;
            stats.attached_late += u64::from(late);
        }
        log::debug!(
            "pid {pid}: {} probes on ({} links) after {:.1} ms",
            following.enabled.values().map(Link::sites).sum::<usize>(),
            following.enabled.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
        self.processes.insert(pid, Tracked::Followed(following));
    }

    /// No longer tracks `pid` at all (its probes off, sentinel included).
    pub(super) fn forget(&mut self, pid: u32) {
        self.seen.remove(&pid);
        if self.processes.remove(&pid).is_some() {
            let _ = lock(&self.maps).unfollow(pid);
        }
    }

    /// Stops following a costly process that makes no LLM call: only its `connect` stays probed.
    /// Whether `pid`, costly before any of its traffic was seen, is given another window (see
    /// [`GRACE_WINDOWS`]): only while its TLS connections are opening, and it was never dropped.
    pub(super) fn grace(&mut self, pid: u32) -> bool {
        let tls_opening = lock(&self.maps)
            .flags(pid)
            .is_some_and(|flags| flags & followed_flags::TLS_OPENING != 0);
        let Some(Tracked::Followed(following)) = self.processes.get_mut(&pid) else {
            return false;
        };
        if !tls_opening || following.drops > 0 || following.graced >= GRACE_WINDOWS {
            return false;
        }
        following.graced += 1;
        // The next window must show connections still opening to earn another.
        let _ = lock(&self.maps).update_flags(pid, 0, followed_flags::TLS_OPENING);
        true
    }

    pub(super) fn drop_costly(&mut self, pid: u32) {
        let Some(Tracked::Followed(following)) = self.processes.remove(&pid) else {
            return;
        };
        if following.llm_client {
            self.processes.insert(pid, Tracked::Followed(following));
            return;
        }
        let drops = following.drops + 1;
        drop(following);
        let _ = lock(&self.maps).unfollow(pid);
        let mut sentinel = HashMap::new();
        for file in discover::executable_mappings(pid) {
            if let Some(analysis) = self.analysis(&file) {
                let probes = analysis.sentinel.iter().chain(&analysis.loader);
                self.enable(pid, &file, probes, &mut sentinel);
            }
        }
        log::info!(
            "stopped following pid {pid} ({}): over {} probed calls in {} ms, none of them an LLM \
             call; it is followed again if it connects to a new peer or starts a new program",
            comm(pid),
            observer_common::COST_HITS_PER_WINDOW,
            observer_common::COST_WINDOW_NS / 1_000_000
        );
        self.stats_mut().dropped_costly += 1;
        self.processes.insert(
            pid,
            Tracked::Dropped(Dropped {
                sentinel,
                at: Instant::now(),
                drops,
            }),
        );
    }

    pub(super) fn enable<'a>(
        &mut self,
        pid: u32,
        file: &MappedFile,
        probes: impl Iterator<Item = &'a Probe>,
        enabled: &mut HashMap<ProbeKey, Link>,
    ) {
        // One link per program: its sites in this file, in one go.
        let mut by_program: Vec<(ProgramRef, Vec<Site>)> = Vec::new();
        for probe in probes {
            let Some(program) = self.probes.program_named(&probe.program) else {
                continue;
            };
            let key = ProbeKey {
                file: file.id,
                program: program.name,
            };
            if enabled.contains_key(&key) {
                continue;
            }
            let site = Site {
                offset: probe.offset,
                cookie: probe.library as u64 | probe.detail,
            };
            match by_program.iter_mut().find(|(p, _)| p.name == program.name) {
                Some((_, sites)) => {
                    if !sites.contains(&site) {
                        sites.push(site);
                    }
                }
                None => by_program.push((program, vec![site])),
            }
        }
        for (program, sites) in by_program {
            match self
                .probes
                .enable_for(pid, &file.host_path, program, &sites)
            {
                Ok(link) => {
                    self.stats_mut().links_opened += 1;
                    let key = ProbeKey {
                        file: file.id,
                        program: program.name,
                    };
                    enabled.insert(key, link);
                }
                Err(error) => {
                    self.stats_mut().attach_failures += 1;
                    log::debug!("pid {pid}: {} in {}: {error:#}", program.name, shown(file));
                }
            }
        }
    }

    /// The files `exe` will map (see [`discover::closure`]), as far as they are known.
    pub(super) fn closure(&mut self, pid: u32, exe: &MappedFile) -> Vec<MappedFile> {
        discover::closure(pid, exe, &mut |file| self.analysis(file))
    }

    /// Files `exe` needs are not known yet: the analyst reads its libraries too, then the exec
    /// is served again.
    pub(super) fn decide_once_analysed(&mut self, pid: u32, exe: &MappedFile) {
        if !self.unknown.is_empty() {
            self.unknown_program = Some((pid, exe.clone()));
        }
    }

    /// The analysis of `file`: at once when it is known; else read now, or, watching the whole
    /// host, noted for the analyst (see [`Follower::serve`]) and none for now.
    pub(super) fn analysis(&mut self, file: &MappedFile) -> Option<Arc<FileAnalysis>> {
        let found = if self.analyst.is_some() {
            self.analyses.cached(&file.host_path)
        } else {
            self.analyses.get(&file.host_path).map(Some)
        };
        match found {
            Ok(None) => {
                if !self.unknown.iter().any(|known| known.id == file.id) {
                    self.unknown.push(file.clone());
                }
                None
            }
            Ok(Some(analysis)) => {
                if let Some(refused) = &analysis.refused
                    && self.announced.insert(file.id)
                {
                    log::warn!("{}", refused.warning(&shown(file)));
                }
                Some(analysis)
            }
            Err(error) => {
                log::debug!("reading {}: {error}", shown(file));
                None
            }
        }
    }

    /// Has the gate hold every later open of `file` if it is a TLS library (a process opening it
    /// is about to use TLS, and is followed from then on).
    pub(super) fn hold_opens_if_tls(&mut self, file: &MappedFile) {
        if self.gate.is_none() || self.held_libraries.contains(&file.id) {
            return;
        }
        let is_library = file
            .host_path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".so"))
            || fs::read_link(&file.host_path).is_ok_and(|p| p.to_string_lossy().contains(".so"));
        if !is_library {
            return;
        }
        let Some(analysis) = self.analysis(file) else {
            return;
        };
        if analysis.tls.is_none() {
            return;
        }
        self.held_libraries.insert(file.id);
        let Some(gate) = &self.gate else {
            return;
        };
        match fs::File::open(&file.host_path).map_err(anyhow::Error::from) {
            Ok(opened) => {
                if let Err(error) = gate.hold_opens_of(&opened) {
                    log::debug!("holding opens of {}: {error:#}", shown(file));
                }
            }
            Err(error) => log::debug!("opening {}: {error:#}", shown(file)),
        }
    }

    pub(super) fn set_flags(&self, pid: u32, set: u32, clear: u32) {
        if let Err(error) = lock(&self.maps).update_flags(pid, set, clear) {
            log::debug!("pid {pid}: {error:#}");
        }
    }

    pub(super) fn stats_mut(&self) -> std::sync::MutexGuard<'_, FollowStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn publish(&self) {
        let sites =
            |links: &HashMap<ProbeKey, Link>| links.values().map(Link::sites).sum::<usize>();
        let (followed, probes) =
            self.processes
                .values()
                .fold((0, 0), |(f, p), tracked| match tracked {
                    Tracked::Watched(loader) => (f, p + sites(loader)),
                    Tracked::Followed(following) => (f + 1, p + sites(&following.enabled)),
                    Tracked::Dropped(dropped) => (f, p + sites(&dropped.sentinel)),
                });
        let mut stats = self.stats_mut();
        stats.followed_now = followed as u64;
        stats.process_probes = probes as u64;
        stats.files_with_tls = self.announced.len() as u64;
        stats.analyses = self.analyses.counts();
        drop(stats);
        if let Some(gate) = &self.gate {
            *self.gate_stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(gate.stats());
        }
    }
}
