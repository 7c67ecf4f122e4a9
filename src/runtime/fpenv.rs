//! The floating-point environment kernels run in: subnormal numbers flushed to zero.
//!
//! Arithmetic that produces or consumes a subnormal float takes a microcode assist on x86
//! (tens to hundreds of cycles per instruction instead of one). Training produces them as a
//! matter of course: Adam's first moment of a weight whose gradient is exactly zero (a dead
//! ReLU unit) decays by 0.9 a step and is subnormal after ~800 steps, and the whole update of
//! that weight tensor then runs several times slower. Like XLA on the CPU, the executor runs
//! its kernels with MXCSR's flush-to-zero and denormals-are-zero bits set: a subnormal result
//! becomes 0 and a subnormal input reads as 0. Results differ from IEEE arithmetic only where
//! a value below 2^-126 (1.2e-38) appears, and are the same on every run.
//!
//! The mode is set for the duration of a run on the calling thread (and restored after, so an
//! embedding program's own arithmetic is untouched) and once for good on the pool's workers.

/// MXCSR bits: flush-to-zero (15) and denormals-are-zero (6).
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

/// Sets flush-to-zero / denormals-are-zero on this thread until dropped.
pub struct FlushSubnormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushSubnormals {
    pub fn new() -> FlushSubnormals {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = read();
            write(saved | FTZ_DAZ);
            FlushSubnormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushSubnormals {}
    }
}

impl Default for FlushSubnormals {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FlushSubnormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        write(self.saved);
    }
}

/// Sets the mode on this thread for good (pool workers, which run nothing but kernels).
pub fn flush_subnormals_forever() {
    #[cfg(target_arch = "x86_64")]
    write(read() | FTZ_DAZ);
}

#[cfg(target_arch = "x86_64")]
fn read() -> u32 {
    let mut v: u32 = 0;
    // SAFETY: stmxcsr stores the 32-bit MXCSR register to the given address; nothing else.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
    v
}

#[cfg(target_arch = "x86_64")]
fn write(v: u32) {
    // SAFETY: ldmxcsr loads MXCSR from the given address; the values written only differ from
    // the current ones in the FTZ / DAZ bits (no exception unmasked, no reserved bit set).
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly, preserves_flags)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnormals_flush_inside_the_guard_only() {
        let tiny = std::hint::black_box(1.0e-30f32);
        let scale = std::hint::black_box(1.0e-10f32);
        assert!((tiny * scale) > 0.0, "IEEE: a subnormal product");
        {
            let _g = FlushSubnormals::new();
            let x = std::hint::black_box(tiny) * std::hint::black_box(scale);
            #[cfg(target_arch = "x86_64")]
            assert_eq!(x, 0.0, "flushed to zero");
            #[cfg(not(target_arch = "x86_64"))]
            let _ = x;
        }
        assert!((std::hint::black_box(tiny) * std::hint::black_box(scale)) > 0.0, "restored");
    }
}
