//! Zero-initialised storage for the executor's temporaries. Large buffers are anonymous
//! memory maps: the kernel hands out zeroed pages on first touch, so creating an executable
//! does not write (and fault in) its whole buffer plan up front — the first run touches the
//! pages it uses, once, instead of a `memset` followed by the same faults. (A `vec![0; n]`
//! only gets that from the allocator when the allocation happens to be mapped, which glibc
//! stops doing for sizes under its dynamic threshold after a large block was freed.)

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// From this many bytes a buffer is mapped rather than allocated.
const MAP_FROM: usize = 1 << 18;

pub struct ZeroedBuf {
    ptr: NonNull<u32>,
    len: usize,
    /// Mapped with `mmap` (else a zero-filled `Vec`'s allocation).
    mapped: bool,
}

// SAFETY: the buffer owns its memory exclusively, like a `Vec<u32>`.
unsafe impl Send for ZeroedBuf {}
unsafe impl Sync for ZeroedBuf {}

impl ZeroedBuf {
    /// `len` zeroed 4-byte elements.
    pub fn new(len: usize) -> ZeroedBuf {
        let bytes = len * 4;
        if bytes >= MAP_FROM {
            // SAFETY: a fresh private anonymous mapping; checked for failure below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED
                && let Some(ptr) = NonNull::new(p.cast::<u32>())
            {
                return ZeroedBuf { ptr, len, mapped: true };
            }
        }
        let v = vec![0u32; len].into_boxed_slice();
        let len = v.len();
        let ptr = NonNull::new(Box::into_raw(v).cast::<u32>()).expect("a box is never null");
        ZeroedBuf { ptr, len, mapped: false }
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
        if self.mapped {
            // SAFETY: mapped in `new` with exactly this length.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len * 4) };
        } else {
            // SAFETY: from `Box::into_raw` of a boxed slice of `len` elements.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ZeroedBuf;

    #[test]
    fn small_and_mapped_buffers_are_zero_and_writable() {
        for len in [0, 1, 1000, 1 << 16, (1 << 20) + 3] {
            let mut b = ZeroedBuf::new(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            for (i, x) in b.iter_mut().enumerate() {
                *x = i as u32;
            }
            assert!(b.iter().enumerate().all(|(i, &x)| x == i as u32));
        }
    }
}
