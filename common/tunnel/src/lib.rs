//! The sans-IO tunnel core. No IO.
