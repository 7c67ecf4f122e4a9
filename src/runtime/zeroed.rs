//! Zero-initialised storage for the executor's temporaries. Large buffers are anonymous
//! memory maps: the kernel hands out zeroed pages on first touch, so creating an executable
//! does not write (and fault in) its whole buffer plan up front — the first run touches the
//! pages it uses, once, instead of a `memset` followed by the same faults. (A `vec![0; n]`
//! only gets that from the allocator when the allocation happens to be mapped, which glibc
//! stops doing for sizes under its dynamic threshold after a large block was freed.)
//! Buffers of 2 MiB or more are aligned to 2 MiB and advised to use transparent huge pages.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// From this many bytes a buffer is mapped rather than allocated.
const MAP_FROM: usize = 1 << 18;

/// A transparent huge page (x86-64): mappings of at least this size are aligned to it and
/// advised to use huge pages.
const HUGE: usize = 1 << 21;

pub struct ZeroedBuf {
    ptr: NonNull<u32>,
    len: usize,
    /// The mapping (`mmap`'s address and length) the elements lie in, if mapped (else a
    /// zero-filled `Vec`'s allocation).
    mapped: Option<(NonNull<libc::c_void>, usize)>,
}

// SAFETY: the buffer owns its memory exclusively, like a `Vec<u32>`.
unsafe impl Send for ZeroedBuf {}
unsafe impl Sync for ZeroedBuf {}

impl ZeroedBuf {
    /// `len` zeroed 4-byte elements.
    pub fn new(len: usize) -> ZeroedBuf {
        let bytes = len * 4;
        if bytes >= MAP_FROM {
            // huge buffers start on a huge-page boundary (the slack mapped for that is never
            // touched, so it costs address space only)
            let huge = bytes >= HUGE;
            let total = if huge { bytes + HUGE } else { bytes };
            // SAFETY: a fresh private anonymous mapping; checked for failure below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    total,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED
                && let Some(base) = NonNull::new(p)
            {
                let skip = if huge { (HUGE - p as usize % HUGE) % HUGE } else { 0 };
                // SAFETY: `skip + bytes <= total`, inside the mapping.
                let start = unsafe { p.cast::<u8>().add(skip) };
                if huge {
                    // Streaming kernels read several arrays of hundreds of MiB; on 4 KiB pages
                    // every page of every array is a TLB miss, and the hardware prefetchers
                    // stop at each page boundary. Only advice: a kernel that refuses keeps
                    // small pages, and the same values.
                    // SAFETY: a range of the mapping just made.
                    unsafe { libc::madvise(start.cast(), bytes, libc::MADV_HUGEPAGE) };
                }
                let ptr = NonNull::new(start.cast::<u32>()).expect("inside a non-null mapping");
                return ZeroedBuf { ptr, len, mapped: Some((base, total)) };
            }
        }
        let v = vec![0u32; len].into_boxed_slice();
        let len = v.len();
        let ptr = NonNull::new(Box::into_raw(v).cast::<u32>()).expect("a box is never null");
        ZeroedBuf { ptr, len, mapped: None }
    }
}

impl Deref for ZeroedBuf {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        // SAFETY: `ptr` points to `len` initialised (zeroed or since written) elements.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for ZeroedBuf {
    fn deref_mut(&mut self) -> &mut [u32] {
        // SAFETY: as above, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for ZeroedBuf {
    fn drop(&mut self) {
        if let Some((base, total)) = self.mapped {
            // SAFETY: mapped in `new` at `base` with exactly this length.
            unsafe { libc::munmap(base.as_ptr(), total) };
        } else {
            // SAFETY: from `Box::into_raw` of a boxed slice of `len` elements.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_writable_and_huge_ones_aligned() {
        for len in [0, 1, 1000, MAP_FROM / 4, HUGE / 4 - 1, HUGE / 4, 3 * HUGE / 4 + 5] {
            let mut b = ZeroedBuf::new(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0), "{len}: zeroed");
            assert_eq!(b.mapped.is_some(), len * 4 >= MAP_FROM, "{len}: mapped");
            if len * 4 >= HUGE {
                assert_eq!(b.as_ptr() as usize % HUGE, 0, "{len}: on a huge-page boundary");
            }
            for (i, x) in b.iter_mut().enumerate() {
                *x = i as u32;
            }
            assert!(b.iter().enumerate().all(|(i, &x)| x == i as u32), "{len}: writable");
        }
    }
}
