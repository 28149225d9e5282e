//! Decoding of RBD journals (to be written).
#![forbid(unsafe_code)]
