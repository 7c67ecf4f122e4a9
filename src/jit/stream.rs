//! Non-temporal stores for the outputs of very long elementwise kernels.
//!
//! A kernel that writes an array much larger than the caches pays for each output line twice:
//! the store first reads the line (read for ownership), then writes it back. Streaming stores
//! (`movntps`) write whole lines without reading them, as `memcpy` does for large copies: for
//! `max(a * b + c, 0)` that is 16 bytes of traffic per element instead of 20. Cranelift has no
//! non-temporal store, so the code generator computes such a kernel in chunks of [`CHUNK`]
//! elements into a stack array (in L1) and calls [`stream_copy`] per chunk and output, then
//! [`stream_fence`] once before returning, which orders the streamed data before whatever
//! signals the kernel's end to other threads.
//!
//! Only flat kernels of at least [`MIN_ELEMS`] elements take this path (their code is keyed
//! apart from shorter ones, `jit::code_key`): outputs that size are not read back from cache
//! anyway, while a shorter output is often the next kernel's input and should stay in cache.

/// Elements per chunk: 4 KiB per output array.
pub const CHUNK: usize = 1024;

/// Flat kernels this long (32 MiB per f32 array) or longer stream their outputs.
pub const MIN_ELEMS: usize = 1 << 23;

/// Copies `n` 4-byte elements from `src` to `dst` with streaming stores where `dst` is 16-byte
/// aligned (plain stores for the unaligned head and the tail). Bits are copied unchanged.
///
/// # Safety
/// `src` and `dst` point to `n` valid, non-overlapping 4-byte elements.
pub unsafe extern "C" fn stream_copy(dst: *mut u32, src: *const u32, n: i64) {
    let n = n.max(0) as usize;
    let mut i = 0;
    // SAFETY: every access is below `n` (the caller's contract); SSE is part of x86-64.
    unsafe {
        while i < n && !(dst.add(i) as usize).is_multiple_of(16) {
            *dst.add(i) = *src.add(i);
            i += 1;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
            while i + 4 <= n {
                _mm_stream_ps(dst.add(i) as *mut f32, _mm_loadu_ps(src.add(i) as *const f32));
                i += 4;
            }
        }
        while i < n {
            *dst.add(i) = *src.add(i);
            i += 1;
        }
    }
}

/// Orders every streaming store issued before it (`sfence`).
pub extern "C" fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` has no operands and is part of x86-64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

pub fn copy_fn() -> usize {
    stream_copy as unsafe extern "C" fn(*mut u32, *const u32, i64) as usize
}

pub fn fence_fn() -> usize {
    stream_fence as extern "C" fn() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every alignment of the destination and every length around the vector width copies the
    /// bits exactly (NaN payloads included) and touches nothing outside the range.
    #[test]
    fn stream_copy_copies_bits() {
        let src: Vec<u32> = (0..64u32).map(|i| 0x7fc0_0001 + i * 0x0101_0101).collect();
        for off in 0..4 {
            for n in 0..20 {
                let mut dst = vec![0xdead_beefu32; 64];
                // SAFETY: off + n <= 64 elements in both.
                unsafe { stream_copy(dst.as_mut_ptr().add(off), src.as_ptr(), n as i64) };
                stream_fence();
                for (i, &d) in dst.iter().enumerate() {
                    let want = if i >= off && i < off + n { src[i - off] } else { 0xdead_beef };
                    assert_eq!(d, want, "off {off} n {n} i {i}");
                }
            }
        }
    }
}
