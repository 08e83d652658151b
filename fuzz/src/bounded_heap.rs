//! The fuzzers' memory bound, as an allocator: one allocation over [`MAX_ALLOCATION`] or live
//! heap bytes past [`MAX_LIVE_BYTES`] fail the allocation, which aborts with "memory allocation
//! of N bytes failed" (libFuzzer saves the input as a crash). Independent of any sanitizer, and
//! counting what the observer holds, not what the process's RSS happens to include.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

/// The observer's own caps (16 MiB per body, 64 MiB held for reordering, the tokenizer's tables)
/// stay far below this whatever a 64 KiB input says.
const MAX_LIVE_BYTES: usize = 1 << 30;
/// A length taken from the input and allocated at once, most likely.
const MAX_ALLOCATION: usize = 512 << 20;

struct BoundedHeap {
    live: AtomicUsize,
}

#[global_allocator]
static HEAP: BoundedHeap = BoundedHeap {
    live: AtomicUsize::new(0),
};

impl BoundedHeap {
    fn reserve(&self, size: usize) -> bool {
        if size > MAX_ALLOCATION {
            return false;
        }
        let before = self.live.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > MAX_LIVE_BYTES {
            self.live.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged, or refused with null.
unsafe impl GlobalAlloc for BoundedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !self.reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, as given.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.live.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = new_size.saturating_sub(layout.size());
        if new_size > MAX_ALLOCATION || !self.reserve(grown) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if new.is_null() {
            self.live.fetch_sub(grown, Ordering::Relaxed);
        } else {
            self.live
                .fetch_sub(layout.size().saturating_sub(new_size), Ordering::Relaxed);
        }
        new
    }
}
