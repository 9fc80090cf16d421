//! mimalloc set up for a server that holds many idle connections: the
//! options ([`tune_mimalloc`]: no transparent huge pages) and a global
//! allocator ([`MiAlloc`]) that keeps small allocations in their own size
//! class. With both, an idle connection costs no more than with glibc;
//! without them, mimalloc v3 costs hundreds of bytes more per connection.
//! The measurements and the two causes (huge pages faulted in a whole
//! arena at a time; aligned small allocations drifting into a larger size
//! class) are in docs/benchmarks.md, section 3. The gateway and the load
//! generator both use this file.

use std::alloc::{GlobalAlloc, Layout};

use libmimalloc_sys as ffi;

/// `mi_option_allow_thp` in mimalloc v3 (libmimalloc-sys exports no
/// constant for it): number 43 in `c_src/mimalloc/v3/include/mimalloc.h`.
const MI_OPTION_ALLOW_THP: ffi::mi_option_t = 43;

// That number is mimalloc v3's, whose option table has 47 entries; a build
// with the `v2` feature, or a mimalloc that renumbers, stops here.
const _: () = assert!(ffi::_mi_option_last == 47);

/// Alignment every `mi_malloc` block has (`MI_MAX_ALIGN_SIZE`: mimalloc
/// rounds blocks of more than 8 bytes to multiples of 16 on 64-bit).
const MI_MIN_ALIGN: usize = 16;

/// Turns transparent huge pages off for mimalloc and for the process. Call
/// first thing in `main`, before threads start.
pub fn tune_mimalloc() {
    // SAFETY: `mi_option_set` stores a value in mimalloc's option table; any
    // option number below `_mi_option_last` is valid, at any time.
    unsafe { ffi::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
    // The first arena was mapped (and advised MADV_HUGEPAGE) when mimalloc
    // initialised, before main: this stops further huge-page faults in it.
    // Failure (an old kernel) only means huge pages stay possible.
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and no pointers.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// mimalloc as the global allocator, calling the unaligned entry points
/// when the alignment asked for is one they always give.
///
/// Use as `#[global_allocator] static GLOBAL: MiAlloc = MiAlloc;` in place
/// of `mimalloc::MiMalloc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MiAlloc;

impl MiAlloc {
    /// Whether `mi_malloc(size)` is already aligned enough for `align`.
    #[inline]
    fn plain(align: usize, size: usize) -> bool {
        align <= MI_MIN_ALIGN && align <= size
    }
}

// SAFETY: every method forwards to mimalloc, which returns blocks of at
// least the requested size or null. The plain (unaligned) calls are used
// only when `align <= 16` and `align <= size`: mimalloc aligns every block
// of more than 8 bytes to 16, and a block of 8 bytes or fewer to 8, which
// then covers `align` since `align <= size` and both are powers of two.
// Blocks from either family are freed by `mi_free`.
unsafe impl GlobalAlloc for MiAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: plain FFI allocation calls; see the impl's comment.
        unsafe {
            if Self::plain(align, size) {
                ffi::mi_malloc(size).cast()
            } else {
                ffi::mi_malloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: plain FFI allocation calls; see the impl's comment.
        unsafe {
            if Self::plain(align, size) {
                ffi::mi_zalloc(size).cast()
            } else {
                ffi::mi_zalloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned.
        unsafe { ffi::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: the caller passes a block this allocator returned and a
        // non-zero `new_size`; see the impl's comment for the alignment.
        unsafe {
            if Self::plain(align, new_size) {
                ffi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                ffi::mi_realloc_aligned(ptr.cast(), new_size, align).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_blocks_have_the_alignment_claimed() {
        let mut blocks = Vec::new();
        for size in 1..=4096usize {
            for _ in 0..4 {
                // SAFETY: a plain allocation, freed below.
                let p = unsafe { ffi::mi_malloc(size) } as usize;
                assert_ne!(p, 0);
                let want = if size > 8 { MI_MIN_ALIGN } else { 8 };
                assert_eq!(p % want, 0, "mi_malloc({size}) at {p:#x}");
                blocks.push(p);
            }
        }
        for p in blocks {
            // SAFETY: each block came from mi_malloc above.
            unsafe { ffi::mi_free(p as *mut _) };
        }
    }

    #[test]
    fn bundled_mimalloc_still_over_allocates_small_aligned_blocks() {
        // The reason MiAlloc exists. When this fails after a mimalloc
        // upgrade, the upstream fix has landed and `mimalloc::MiMalloc`
        // is as good as MiAlloc (re-measure with docs/benchmarks.md).
        let mut blocks = Vec::new();
        let mut drifted = 0;
        for _ in 0..2000 {
            // SAFETY: a plain allocation, freed below.
            let p = unsafe { ffi::mi_malloc_aligned(320, 8) };
            assert!(!p.is_null());
            // SAFETY: `p` is a live mimalloc block.
            if unsafe { ffi::mi_usable_size(p) } > 320 {
                drifted += 1;
            }
            blocks.push(p);
        }
        for p in blocks {
            // SAFETY: each block came from mi_malloc_aligned above.
            unsafe { ffi::mi_free(p) };
        }
        assert!(
            drifted > 1000,
            "only {drifted} of 2000 blocks over-allocated"
        );
    }

    #[test]
    fn small_aligned_layouts_keep_their_size_class() {
        // mi_malloc_aligned(320, 8) drifts to the 384-byte class; MiAlloc
        // must not. Allocate enough to fill several pages.
        let layout = Layout::from_size_align(320, 8).expect("layout");
        let mut blocks = Vec::new();
        for _ in 0..2000 {
            // SAFETY: a valid non-zero layout; freed below.
            let p = unsafe { MiAlloc.alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: `p` is a live mimalloc block.
            assert_eq!(unsafe { ffi::mi_usable_size(p.cast()) }, 320);
            blocks.push(p);
        }
        for p in blocks {
            // SAFETY: each block came from MiAlloc.alloc with `layout`.
            unsafe { MiAlloc.dealloc(p, layout) };
        }
    }
}
