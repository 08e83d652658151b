//! Safe forms of the helper calls and map reads the probes make everywhere, each with the reason
//! it is sound, so that the probes themselves hold `unsafe` only where the reason is particular.
use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{bpf_get_attach_cookie, bpf_ktime_get_ns, bpf_probe_read_user},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};

/// Copies a `T` out of the traced process's memory at `address`.
pub fn read_user<T>(address: u64) -> Result<T, i32> {
    // SAFETY: the helper checks the address and returns an error on a fault; `T` is plain data
    // (integers and arrays of them), valid for any bytes.
    unsafe { bpf_probe_read_user(address as *const T) }
}

/// Nanoseconds since boot (CLOCK_MONOTONIC).
pub fn now_ns() -> u64 {
    // SAFETY: no arguments, no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The cookie user space attached this probe with.
pub fn attach_cookie(ctx: &impl EbpfContext) -> u64 {
    // SAFETY: `ctx` is the context the kernel handed to the running program.
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
}

/// The traced thread's registers, as saved by the uprobe or uretprobe that runs.
pub fn registers(regs: &*mut pt_regs) -> &pt_regs {
    // SAFETY: a probe's `regs` points at the saved registers for as long as the program runs.
    unsafe { &**regs }
}

/// A field of the tracepoint's record, at `offset` in its format.
pub fn tracepoint_field<T>(ctx: &TracePointContext, offset: usize) -> Result<T, i32> {
    // SAFETY: the read is bounds-checked by the helper; offsets come from the tracepoint's
    // format file, stable for the tracepoints used.
    unsafe { ctx.read_at::<T>(offset) }
}

/// This CPU's slot `index` of `array`, to use as scratch space or a counter.
#[allow(clippy::mut_from_ref)]
pub fn per_cpu<T>(array: &PerCpuArray<T>, index: u32) -> Option<&mut T> {
    let slot = array.get_ptr_mut(index)?;
    // SAFETY: only programs running on this CPU use its slot, and none of the probes runs
    // inside another (uprobes and the sched tracepoints fire in process context, one at a time
    // per CPU), so no other reference to the slot is live while this one is.
    Some(unsafe { &mut *slot })
}

/// Map lookups that copy the value out.
pub trait Lookup<K, V: Copy> {
    fn copied(&self, key: &K) -> Option<V>;
}

// SAFETY (both): the value is copied at once. Another CPU may update or delete the entry
// meanwhile; the values are plain integers, so the worst is a value from just before or after.
impl<K, V: Copy> Lookup<K, V> for HashMap<K, V> {
    fn copied(&self, key: &K) -> Option<V> {
        unsafe { self.get(key) }.copied()
    }
}

impl<K, V: Copy> Lookup<K, V> for LruHashMap<K, V> {
    fn copied(&self, key: &K) -> Option<V> {
        unsafe { self.get(key) }.copied()
    }
}

/// Copies a `T` out of kernel memory at `address`.
pub fn read_kernel<T>(address: u64) -> Result<T, i32> {
    // SAFETY: the helper checks the address and returns an error on a fault; `T` is plain data.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(address as *const T) }
}

/// The running task's `task_struct`, as an address to read fields from with [`read_kernel`].
pub fn current_task() -> u64 {
    // SAFETY: no arguments; the address is only ever read through the checked helper.
    unsafe { aya_ebpf::helpers::bpf_get_current_task() }
}
