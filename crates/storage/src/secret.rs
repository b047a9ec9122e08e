//! `Secret<N>`: a fixed-size key that is overwritten with zeros when dropped.
//!
//! Invariant: the bytes never appear in `Debug` output, and every copy (`Clone`) zeroes itself
//! on drop too. Zeroing goes through volatile writes so the compiler cannot drop it as a dead
//! store. (A tiny stand-in for the `zeroize` crate: this is all we need of it.)

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{compiler_fence, Ordering};

/// N secret bytes, zeroed on drop.
#[derive(Clone)]
pub struct Secret<const N: usize>([u8; N]);

impl<const N: usize> Secret<N> {
    /// All zeros, to be filled in place (so the key is never moved out of this wrapper).
    pub fn zeroed() -> Self {
        Secret([0u8; N])
    }

    /// N bytes from the kernel's random source.
    pub fn random() -> Self {
        let mut s = Self::zeroed();
        getrandom::fill(&mut s.0).expect("the kernel's random source is unavailable");
        s
    }

    /// Copies `bytes` in; `None` when the length is not N.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != N {
            return None;
        }
        let mut s = Self::zeroed();
        s.0.copy_from_slice(bytes);
        Some(s)
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> Deref for Secret<N> {
    type Target = [u8; N];
    fn deref(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> DerefMut for Secret<N> {
    fn deref_mut(&mut self) -> &mut [u8; N] {
        &mut self.0
    }
}

impl<const N: usize> Drop for Secret<N> {
    fn drop(&mut self) {
        wipe_bytes(&mut self.0);
    }
}

impl<const N: usize> std::fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret<{N}>(..)")
    }
}

impl<const N: usize> PartialEq for Secret<N> {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl<const N: usize> Eq for Secret<N> {}

/// Overwrites `buf` with zeros in a way the optimizer keeps.
pub fn wipe_bytes(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to one byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    compiler_fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_bytes_and_random_differs() {
        let a = Secret::<32>::random();
        let b = Secret::<32>::random();
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "Secret<32>(..)");
        assert!(Secret::<32>::from_slice(&[1; 31]).is_none());
        assert_eq!(Secret::<4>::from_slice(&[7; 4]).unwrap().expose(), &[7; 4]);
    }

    #[test]
    fn wipe_bytes_zeroes() {
        let mut v = vec![0xaau8; 100];
        wipe_bytes(&mut v);
        assert!(v.iter().all(|b| *b == 0));
    }
}
