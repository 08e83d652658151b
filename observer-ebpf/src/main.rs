//! The probes: a BPF binary, built for the BPF target by `observer/build.rs`.
#![no_std]
#![no_main]

mod agent_tree;
mod go_tls;
mod rustls;
mod socket_io;
mod sound;

mod probes {
    use aya_ebpf::{
        EbpfContext as _,
        bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
        cty::c_void,
        helpers::{
            bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_loop, bpf_probe_read_user_buf,
        },
        macros::{map, tracepoint, uprobe, uretprobe},
        maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
        programs::{ProbeContext, RetProbeContext, TracePointContext},
    };
    use observer_common::{
        CHUNK_CAPACITY, COST_HITS_PER_WINDOW, COST_WINDOW_NS, ConnEndEvent, ConnId, CopyVerdict,
        DATA_EVENT_HEADER_LEN, DataEvent, EventHeader, ExecEvent, Followed, ForkEvent,
        MAX_CHUNKS_PER_CALL, StreamKey, config, copy_verdict, counter, direction, flags,
        followed_flags, kind,
    };

    use crate::sound::{Lookup, attach_cookie, now_ns, per_cpu, read_user, tracepoint_field};

    /// Wake the reader only once this much is waiting; below it, user space drains on a timer.
    const WAKEUP_THRESHOLD: u64 = 256 * 1024;
    const BPF_RB_AVAIL_DATA: u64 = 0;

    #[map]
    pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

    #[map]
    static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

    #[map]
    pub(crate) static CONFIG: Array<u32> = Array::with_max_entries(config::COUNT, 0);

    /// The processes user space follows (their probes are attached for them alone), with each
    /// one's probe hits in the current cost window.
    #[map]
    static FOLLOWED: HashMap<u32, Followed> = HashMap::with_max_entries(65536, 0);

    /// A TLS read or write in progress, by thread (pid_tgid). A plain hash (cheaper per call than
    /// an LRU one): a thread that ends inside a call has its entry removed by `process_exit`.
    #[map]
    pub(crate) static ACTIVE_CALLS: HashMap<u64, ActiveCall> = HashMap::with_max_entries(16384, 0);

    /// What not to copy of a connection, as judged by user space (not HTTP, server side, a
    /// response that is not an LLM call's) or by `syscalls` (accepted sockets). Removed when
    /// the connection ends, since a later session may reuse the address.
    #[map]
    pub(crate) static COPY_VERDICTS: LruHashMap<ConnId, CopyVerdict> =
        LruHashMap::with_max_entries(65536, 0);

    /// Bytes seen so far on each connection and direction.
    #[map]
    static STREAM_OFFSETS: LruHashMap<StreamKey, u64> = LruHashMap::with_max_entries(65536, 0);

    /// Where a data event is built before it is copied, sized to what it carries, into the ring.
    #[map]
    static SCRATCH: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);

    #[map]
    static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(crate) struct ActiveCall {
        pub(crate) conn: u64,
        pub(crate) buf: u64,
        /// `_ex` forms: where the library stores the byte count; 0 for the plain forms.
        pub(crate) count_ptr: u64,
        pub(crate) dir: u8,
        /// `tls_source`, from the attach cookie.
        pub(crate) source: u8,
        pub(crate) _pad: [u8; 6],
    }

    pub(crate) fn bump(index: u32, by: u64) {
        if let Some(slot) = per_cpu(&COUNTERS, index) {
            *slot += by;
        }
    }

    /// Counts a probed call against its process's budget; the call that uses the window's
    /// budget up reports the process to user space (once, until user space asks again).
    pub(crate) fn hit(pid_tgid: u64) {
        bump(counter::PROBE_HITS, 1);
        let Some(state) = FOLLOWED.get_ptr_mut(&((pid_tgid >> 32) as u32)) else {
            return;
        };
        // SAFETY: the entry stays allocated while the program runs (deleting it frees it after an
        // RCU grace period). Threads of one process race on these fields: the count is
        // approximate, which a budget tolerates.
        let state = unsafe { &mut *state };
        let now = now_ns();
        if now.wrapping_sub(state.window_start_ns) > COST_WINDOW_NS {
            state.window_start_ns = now;
            state.hits = 0;
        }
        state.hits += 1;
        if state.hits == COST_HITS_PER_WINDOW
            && state.flags & (followed_flags::KEEP | followed_flags::REPORTED) == 0
        {
            state.flags |= followed_flags::REPORTED;
            send::<EventHeader>(&header(kind::COSTLY, pid_tgid), BPF_RB_FORCE_WAKEUP as u64);
        }
    }

    /// A followed process wrote a TLS record outside a TLS call (see
    /// [`followed_flags::TLS_OPENING`]).
    pub(crate) fn mark_tls_opening(pid: u32) {
        if let Some(state) = FOLLOWED.get_ptr_mut(&pid) {
            // SAFETY: as in `hit`; a racing update of the flags by another thread can lose this
            // bit, which only judges the process sooner.
            unsafe { (*state).flags |= followed_flags::TLS_OPENING };
        }
    }

    pub(crate) fn followed(pid: u32) -> bool {
        FOLLOWED.copied(&pid).is_some()
    }

    pub(crate) fn header(kind: u32, pid_tgid: u64) -> EventHeader {
        EventHeader {
            kind,
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            _pad: 0,
            ts_ns: now_ns(),
        }
    }

    /// Puts `event` in the ring buffer, or counts it lost; whether it went in.
    pub(crate) fn send<T: ?Sized>(event: &T, flags: u64) -> bool {
        let sent = EVENTS.output::<T>(event, flags).is_ok();
        if !sent {
            bump(counter::EVENTS_LOST, 1);
        }
        sent
    }

    pub(crate) fn ring_flags() -> u64 {
        if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_THRESHOLD {
            0
        } else {
            BPF_RB_NO_WAKEUP as u64
        }
    }

    fn on_enter(ctx: &ProbeContext, dir: u8, has_count_ptr: bool) -> u32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        hit(pid_tgid);
        let (Some(conn), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
            return 0;
        };
        if !copy_wanted(pid_tgid, conn, dir) {
            return 0;
        }
        let count_ptr = if has_count_ptr {
            ctx.arg::<u64>(3).unwrap_or(0)
        } else {
            0
        };
        let call = ActiveCall {
            conn,
            buf,
            count_ptr,
            dir,
            // Which library this probe was attached to (see capture::probes).
            source: attach_cookie(ctx) as u8,
            _pad: [0; 6],
        };
        let _ = ACTIVE_CALLS.insert(&pid_tgid, &call, 0);
        0
    }

    fn on_return(ctx: &RetProbeContext) -> u32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let Some(call) = ACTIVE_CALLS.copied(&pid_tgid) else {
            return 0;
        };
        let _ = ACTIVE_CALLS.remove(&pid_tgid);
        let ret: i64 = ctx.ret::<i64>();
        let len = if call.count_ptr != 0 {
            // SSL_read_ex / SSL_write_ex (1 on success) and the internal functions they forward
            // to (> 0 on success): the count is behind the pointer.
            if ret as i32 <= 0 {
                return 0;
            }
            match read_user::<u64>(call.count_ptr) {
                Ok(n) => n,
                Err(_) => {
                    bump(counter::READ_FAULTS, 1);
                    return 0;
                }
            }
        } else {
            let ret = ret as i32;
            if ret <= 0 {
                return 0;
            }
            ret as u64
        };
        emit_data(pid_tgid, &call, len);
        0
    }

    /// Whether this call's bytes are to be copied, by the connection's verdict.
    pub(crate) fn copy_wanted(pid_tgid: u64, conn: u64, dir: u8) -> bool {
        let id: ConnId = [conn, pid_tgid >> 32];
        let Some(verdict) = COPY_VERDICTS.copied(&id) else {
            return true;
        };
        if verdict.mode == copy_verdict::SKIP {
            bump(counter::SKIPPED_CONNECTION, 1);
            return false;
        }
        // SKIP_RESPONSE: requests are always copied; a read is skipped until the next request.
        if dir == direction::EGRESS {
            return true;
        }
        let written = StreamKey {
            conn,
            pid: (pid_tgid >> 32) as u32,
            dir: direction::EGRESS as u32,
        };
        if STREAM_OFFSETS.copied(&written).unwrap_or(0) == verdict.request_end {
            bump(counter::SKIPPED_RESPONSE, 1);
            return false;
        }
        let _ = COPY_VERDICTS.remove(&id);
        true
    }

    /// Moves a connection's stream offset past bytes that were not copied: user space sees a gap.
    pub(crate) fn skip_bytes(pid_tgid: u64, conn: u64, dir: u8, len: u64) {
        let key = StreamKey {
            conn,
            pid: (pid_tgid >> 32) as u32,
            dir: dir as u32,
        };
        let start = STREAM_OFFSETS.copied(&key).unwrap_or(0);
        let _ = STREAM_OFFSETS.insert(&key, &(start + len), 0);
    }

    /// One TLS call being copied out, chunk by chunk, by [`emit_chunk`].
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Emission {
        buf: u64,
        /// Stream offset of the call's first byte.
        start: u64,
        /// Bytes to copy (the call's length, capped).
        copy_len: u64,
        truncated: u64,
    }

    #[map]
    static EMISSION: PerCpuArray<Emission> = PerCpuArray::with_max_entries(1, 0);

    pub(crate) fn emit_data(pid_tgid: u64, call: &ActiveCall, len: u64) {
        let key = StreamKey {
            conn: call.conn,
            pid: (pid_tgid >> 32) as u32,
            dir: call.dir as u32,
        };
        // Updated in place: an LRU insert per call costs more than the rest of the probe.
        let start = match STREAM_OFFSETS.get_ptr_mut(&key) {
            // SAFETY: as for FOLLOWED above; one thread writes a connection's direction at a
            // time (the TLS library serialises a session's reads, and its writes).
            Some(offset) => unsafe {
                let start = *offset;
                *offset = start + len;
                start
            },
            None => {
                let _ = STREAM_OFFSETS.insert(&key, &len, 0);
                0
            }
        };

        let (Some(event), Some(emission)) = (per_cpu(&SCRATCH, 0), per_cpu(&EMISSION, 0)) else {
            return;
        };
        event.head.header = header(kind::DATA, pid_tgid);
        event.head.conn = call.conn;
        event.head.dir = call.dir;
        event.head.source = call.source;
        event.head.comm = bpf_get_current_comm().unwrap_or([0; 16]);

        let capacity = MAX_CHUNKS_PER_CALL as u64 * CHUNK_CAPACITY as u64;
        let truncated = len > capacity;
        if truncated {
            bump(counter::CALLS_TRUNCATED, 1);
            bump(counter::BYTES_TRUNCATED, len - capacity);
        }
        *emission = Emission {
            buf: call.buf,
            start,
            copy_len: if truncated { capacity } else { len },
            truncated: truncated as u64,
        };
        let chunks = len
            .div_ceil(CHUNK_CAPACITY as u64)
            .min(MAX_CHUNKS_PER_CALL as u64) as u32;
        // bpf_loop: the verifier checks the callback once, not once per iteration.
        // SAFETY: `emit_chunk` has the callback's signature and takes no context.
        unsafe {
            bpf_loop(chunks, emit_chunk as *mut c_void, core::ptr::null_mut(), 0);
        }
    }

    /// Copies chunk `index` of the call described in `EMISSION` into the ring. 1 stops the loop.
    extern "C" fn emit_chunk(index: u64, _ctx: *mut c_void) -> i64 {
        let (Some(event), Some(emission)) = (per_cpu(&SCRATCH, 0), EMISSION.get(0)) else {
            return 1;
        };
        let done = index * CHUNK_CAPACITY as u64;
        if done >= emission.copy_len {
            return 1;
        }
        let remaining = emission.copy_len - done;
        let n = if remaining < CHUNK_CAPACITY as u64 {
            remaining as usize
        } else {
            CHUNK_CAPACITY
        };
        event.head.offset = emission.start + done;
        event.head.len = n as u32;
        let last = remaining <= CHUNK_CAPACITY as u64;
        event.head.flags = if emission.truncated != 0 && last {
            flags::CALL_TRUNCATED
        } else {
            0
        };
        let src = (emission.buf + done) as *const u8;
        // SAFETY: the helper checks the source address and fails on a fault.
        if unsafe { bpf_probe_read_user_buf(src, &mut (&mut event.data)[..n]) }.is_err() {
            bump(counter::READ_FAULTS, 1);
            return 1;
        }
        // SAFETY: the head and the first `n` data bytes of a repr(C) struct of integers and
        // byte arrays, all initialised.
        let record = unsafe {
            core::slice::from_raw_parts(
                (event as *const DataEvent).cast::<u8>(),
                DATA_EVENT_HEADER_LEN + n,
            )
        };
        if !send::<[u8]>(record, ring_flags()) {
            bump(counter::BYTES_LOST, n as u64);
        }
        0
    }

    #[uprobe]
    pub fn ssl_write(ctx: ProbeContext) -> u32 {
        on_enter(&ctx, direction::EGRESS, false)
    }

    #[uprobe]
    pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
        on_enter(&ctx, direction::EGRESS, true)
    }

    #[uprobe]
    pub fn ssl_read(ctx: ProbeContext) -> u32 {
        on_enter(&ctx, direction::INGRESS, false)
    }

    #[uprobe]
    pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
        on_enter(&ctx, direction::INGRESS, true)
    }

    /// Shared by the four read/write functions: the entry probe saved what the call was.
    #[uretprobe]
    pub fn ssl_return(ctx: RetProbeContext) -> u32 {
        on_return(&ctx)
    }

    #[uprobe]
    pub fn ssl_free(ctx: ProbeContext) -> u32 {
        if let Some(conn) = ctx.arg::<u64>(0) {
            end_connection(bpf_get_current_pid_tgid(), conn);
        }
        0
    }

    /// Forgets a connection's stream offsets and tells user space it is over.
    pub(crate) fn end_connection(pid_tgid: u64, conn: u64) {
        let pid = (pid_tgid >> 32) as u32;
        for dir in [direction::EGRESS, direction::INGRESS] {
            let _ = STREAM_OFFSETS.remove(&StreamKey {
                conn,
                pid,
                dir: dir as u32,
            });
        }
        let _ = COPY_VERDICTS.remove(&[conn, pid as u64]);
        let event = ConnEndEvent {
            header: header(kind::CONN_END, pid_tgid),
            conn,
        };
        send::<ConnEndEvent>(&event, ring_flags());
    }

    // sched/sched_process_fork: parent_pid @12, child_pid @20 (the parent is `current`).
    #[tracepoint]
    pub fn process_fork(ctx: TracePointContext) -> u32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let parent = (pid_tgid >> 32) as u32;
        let Ok(child) = tracepoint_field::<i32>(&ctx, 20) else {
            return 0;
        };
        crate::agent_tree::forked(parent, child as u32);
        if !followed(parent) {
            return 0;
        }
        let event = ForkEvent {
            header: header(kind::FORK, pid_tgid),
            child: child as u32,
            _pad: 0,
        };
        send::<ForkEvent>(&event, ring_flags());
        0
    }

    // sched/sched_process_exec: __data_loc filename @8.
    #[tracepoint]
    pub fn process_exec(ctx: TracePointContext) -> u32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        crate::agent_tree::executed(&ctx, pid_tgid);
        if CONFIG.get(config::EXEC_EVENTS_ALL) != Some(&1) && !followed((pid_tgid >> 32) as u32) {
            return 0;
        }
        let Some(event) = per_cpu(&EXEC_SCRATCH, 0) else {
            return 0;
        };
        event.header = header(kind::EXEC, pid_tgid);
        event.comm = bpf_get_current_comm().unwrap_or([0; 16]);
        event.path_len = 0;
        if let Ok(loc) = tracepoint_field::<u32>(&ctx, 8) {
            let offset = (loc & 0xffff) as usize;
            // SAFETY: `__data_loc` offsets point inside the tracepoint's record; the helper
            // checks the read and stops at the buffer's end.
            let src = unsafe { (ctx.as_ptr() as *const u8).add(offset) };
            if let Ok(path) =
                unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(src, &mut event.path) }
            {
                event.path_len = path.len() as u32;
            }
        }
        // At once: a program that was not held at exec races discovery to its first TLS call.
        send::<ExecEvent>(&*event, BPF_RB_FORCE_WAKEUP as u64);
        0
    }

    // sched/sched_process_exit: group_dead @32. Fires for every thread.
    #[tracepoint]
    pub fn process_exit(ctx: TracePointContext) -> u32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let pid = (pid_tgid >> 32) as u32;
        let group_dead = matches!(tracepoint_field::<u8>(&ctx, 32), Ok(1));
        crate::agent_tree::exited(pid_tgid, group_dead);
        if !followed(pid) {
            return 0;
        }
        // A thread that ends inside a call never returns from it.
        let _ = ACTIVE_CALLS.remove(&pid_tgid);
        crate::socket_io::thread_exited(pid_tgid);
        if !group_dead {
            return 0;
        }
        let _ = FOLLOWED.remove(&pid);
        send::<EventHeader>(&header(kind::EXIT, pid_tgid), ring_flags());
        0
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}
